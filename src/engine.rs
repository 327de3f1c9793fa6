//! Runs the steps: apply in order, revert in reverse, plan without
//! changing anything. The state record is written before a step changes
//! anything (so a crash mid-step is still undoable) and after it finishes.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::spec::{Root, Spec};
use crate::state::{State, Store};

/// One provisioning step with its inverse. Apply and revert of a step sit
/// side by side in one file under `steps/`.
pub trait Step {
    /// Short id, used in the state record and in progress lines.
    fn id(&self) -> &'static str;
    /// Whether everything the step makes lives in kernel memory (links,
    /// rules, sysctls) and so vanishes at power loss: its write-ahead record
    /// then needs an atomic rename but no fsync.
    fn volatile(&self) -> bool {
        false
    }
    /// Whether work an earlier step left running in the background must be
    /// finished before this step starts (the veth: no link before its
    /// rules are in).
    fn waits_for_background(&self) -> bool {
        false
    }
    /// Whether this spec wants the step at all; an unwanted step that was
    /// applied by an earlier run is reverted (converge on changed flags).
    fn wanted(&self, _spec: &Spec) -> bool {
        true
    }
    /// Whether a CI job's sandbox (`sandbox job`) has this step at all:
    /// only what a job needs does (network, firewall, DNS, an identity).
    fn in_jobs(&self) -> bool {
        false
    }
    /// What `apply` would change right now, one line each; empty when the
    /// step is in place. Changes nothing.
    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>>;
    /// Make the step true. Records what undo needs through `rec` *before*
    /// changing anything. Returns what changed (empty: nothing did).
    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>>;
    /// What would stop `apply`, found before any step changes anything.
    /// Reads only.
    fn preflight(&self, _spec: &Spec) -> Vec<Error> {
        vec![]
    }
    /// Every object the step puts on the host for this spec, with its
    /// inverse, for the change-control report. Reads nothing on the host.
    fn inventory(&self, _spec: &Spec, _inv: &mut Inventory) {}
    /// Undo from the record alone (flags may differ at --disable time).
    /// Idempotent: whatever is already gone is skipped.
    fn revert(&self, undo: &Undo, data: &Value) -> Result<Vec<String>>;
    /// `--disable` without a state record (it was removed or lost): remove
    /// what this step makes that carries our mark and a name derived from
    /// `name`, from nothing else. Says what it removed, and what it had to
    /// leave and why. Default: nothing (the step's objects cannot be told
    /// apart from the operator's without the record).
    fn sweep(&self, _undo: &Undo, _name: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// What a revert may know beyond its own record.
#[derive(Debug, Clone)]
pub struct Undo {
    pub root: Root,
    /// The sandbox: the holder of what it shares with others (`host`).
    pub name: String,
    /// `--disable --purge`: also remove what setup created that holds the
    /// operator's data (user, group, home).
    pub purge: bool,
}

/// A step's handle on its own record: write-ahead of every change.
pub struct Recorder<'a> {
    id: &'static str,
    durable: bool,
    state: &'a mut State,
    store: &'a Store,
    background: Option<Background>,
}

/// The rest of a step, left running on a thread: it returns what changed.
type Background = std::thread::JoinHandle<Result<Vec<String>>>;

impl Recorder<'_> {
    /// Whether an earlier run left a record for this step. Without one,
    /// nothing of the step can be in place yet (records are written ahead).
    pub fn has_record(&self) -> bool {
        self.state.get(self.id).is_some()
    }

    /// The sandbox's state directory: root's, out of the agent's reach.
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.store.dir().to_path_buf()
    }

    pub fn get<T: DeserializeOwned>(&self) -> Option<T> {
        let rec = self.state.get(self.id)?;
        serde_json::from_value(rec.data.clone()).ok()
    }

    /// Save the step's undo data now (the step is not done yet).
    pub fn put<T: Serialize>(&mut self, data: &T) -> Result<()> {
        let value = serde_json::to_value(data).map_err(|e| Error::State {
            path: self.store.file(),
            cause: format!("cannot encode the {} record: {e}", self.id),
            fix: "report this as a bug".into(),
        })?;
        // Nothing new to say ahead (a re-run re-puts what it found): the
        // record stays as it is, done included, and nothing is written.
        if self.state.get(self.id).is_none_or(|r| r.data != value) {
            self.state.put(self.id, false, value);
            self.store.save_with(self.state, self.durable)?;
        }
        crate::fault::after_put(self.id)
    }

    /// Finish the step on a thread while the steps after it run, for work
    /// that mostly waits (an `nft` run is mostly process start-up). The
    /// engine collects it, and only then marks the step done and reports
    /// it, before any step that `waits_for_background` and before the run
    /// ends. The record must already hold what undo needs; `work` cannot
    /// write it.
    pub fn finish_in_background(&mut self, work: impl FnOnce() -> Result<Vec<String>> + Send + 'static) -> Result<()> {
        let handle = std::thread::Builder::new()
            .name(self.id.into())
            .spawn(work)
            .map_err(|e| {
                Error::host(
                    format!("step {}", self.id),
                    format!("cannot start a thread: {e}"),
                    "the host is out of threads or memory; free some, then re-run",
                )
            })?;
        self.background = Some(handle);
        Ok(())
    }
}

/// Outcomes in step order: one whose step still runs in the background
/// holds back the ones after it, so progress, `--json` and the audit log
/// read in the order the steps are listed.
#[derive(Default)]
struct InOrder {
    queue: Vec<Pending>,
}

enum Pending {
    Done(Outcome),
    Running {
        step: &'static str,
        changes: Vec<String>,
        work: Background,
    },
}

impl InOrder {
    fn push(&mut self, p: Pending, out: &mut Vec<Outcome>, report: &mut dyn FnMut(&Outcome)) {
        self.queue.push(p);
        self.flush(out, report);
    }

    fn flush(&mut self, out: &mut Vec<Outcome>, report: &mut dyn FnMut(&Outcome)) {
        while matches!(self.queue.first(), Some(Pending::Done(_))) {
            if let Pending::Done(o) = self.queue.remove(0) {
                report(&o);
                out.push(o);
            }
        }
    }

    /// Wait for everything still running, mark it done, report all in
    /// order. A failed one is not done; every other one is still collected
    /// and reported (their changes happened), then the first failure is
    /// returned.
    fn collect(&mut self, state: &mut State, out: &mut Vec<Outcome>, report: &mut dyn FnMut(&Outcome)) -> Result<()> {
        let mut first_err = None;
        for p in std::mem::take(&mut self.queue) {
            let done = match p {
                Pending::Done(o) => o,
                Pending::Running {
                    step,
                    mut changes,
                    work,
                } => {
                    match work.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)) {
                        Ok(more) => {
                            mark_done(state, step);
                            changes.extend(more);
                        }
                        Err(e) => {
                            first_err.get_or_insert(in_step(step, "apply", e));
                        }
                    }
                    Outcome { step, changes }
                }
            };
            self.queue.push(Pending::Done(done));
        }
        self.flush(out, report);
        first_err.map_or(Ok(()), Err)
    }
}

/// Marked done in memory only: the next write-ahead (or the final save)
/// carries it. A crash before then leaves it "under way", which re-run and
/// --disable treat the same way.
fn mark_done(state: &mut State, id: &str) {
    if let Some(r) = state.get(id) {
        let data = r.data.clone();
        state.put(id, true, data);
    }
}

/// Whether `spec` wants `step`: a job's sandbox only the steps made for
/// jobs, and each step by its own `wanted`.
pub fn wants(step: &dyn Step, spec: &Spec) -> bool {
    (!spec.is_job() || step.in_jobs()) && step.wanted(spec)
}

/// Decode a step's record.
pub fn data<T: DeserializeOwned>(id: &str, v: &Value) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| Error::State {
        path: format!("state.json (step {id})").into(),
        cause: e.to_string(),
        fix: "the record was edited or written by another version; remove the step's objects by hand".into(),
    })
}

/// What happened to one step, for progress output.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub step: &'static str,
    pub changes: Vec<String>,
}

impl Outcome {
    /// Notes ("kept …": an edited file left alone on purpose) change
    /// nothing; a re-run that only repeats them changed nothing.
    pub fn changed(&self) -> bool {
        self.changes.iter().any(|c| !is_note(c))
    }
}

/// A progress line that reports a deliberate non-change.
pub fn is_note(line: &str) -> bool {
    line.starts_with("kept ")
}

pub fn apply_all(
    steps: &[Box<dyn Step>],
    spec: &Spec,
    store: &Store,
    state: &mut State,
    report: &mut dyn FnMut(&Outcome),
) -> Result<Vec<Outcome>> {
    // Write-ahead for the state directory itself: a run that fails (or is
    // killed) before its first step still leaves a record naming it. Not
    // fsynced: after a power cut an empty record reads as none, and
    // `--disable` sweeps by name.
    if !store.file().exists() {
        store.save_with(state, false)?;
    }
    let mut out = Vec::new();
    let mut in_order = InOrder::default();
    let applied = apply_each(steps, spec, store, state, &mut in_order, &mut out, report);
    // Nothing is left running, whatever happened.
    let collected = in_order.collect(state, &mut out, report);
    applied?;
    collected?;
    store.save(state)?;
    Ok(out)
}

fn apply_each(
    steps: &[Box<dyn Step>],
    spec: &Spec,
    store: &Store,
    state: &mut State,
    in_order: &mut InOrder,
    out: &mut Vec<Outcome>,
    report: &mut dyn FnMut(&Outcome),
) -> Result<()> {
    for step in steps {
        let id = step.id();
        if step.waits_for_background() {
            in_order.collect(state, out, report)?;
        }
        let pending = if wants(step.as_ref(), spec) {
            let mut rec = Recorder {
                id,
                durable: !step.volatile(),
                state,
                store,
                background: None,
            };
            crate::fault::before_apply(id).map_err(|e| in_step(id, "apply", e))?;
            let changes = step.apply(spec, &mut rec).map_err(|e| in_step(id, "apply", e))?;
            let background = rec.background.take();
            crate::fault::after_apply(id);
            match background {
                Some(work) => Pending::Running {
                    step: id,
                    changes,
                    work,
                },
                None => {
                    mark_done(state, id);
                    Pending::Done(Outcome { step: id, changes })
                }
            }
        } else if let Some(r) = state.get(id) {
            let data = r.data.clone();
            let undo = Undo {
                root: spec.root.clone(),
                name: spec.name.clone(),
                purge: false,
            };
            let changes = step.revert(&undo, &data).map_err(|e| in_step(id, "revert", e))?;
            state.remove(id);
            store.save(state)?;
            Pending::Done(Outcome { step: id, changes })
        } else {
            Pending::Done(Outcome {
                step: id,
                changes: Vec::new(),
            })
        };
        in_order.push(pending, out, report);
    }
    Ok(())
}

/// Revert every recorded step, last applied first. A step that fails to
/// revert does not stop the others (the network and the sysctls must go
/// even when the agent sabotaged its home): its record stays, the record
/// is saved, and every failure comes back at the end in one
/// [`Error::Reverts`], so a re-run reverts only what is left.
pub fn revert_all(
    steps: &[Box<dyn Step>],
    undo: &Undo,
    store: &Store,
    state: &mut State,
    report: &mut dyn FnMut(&Outcome),
) -> Result<Vec<Outcome>> {
    // Saved once at the end (or after a failure), not after every step: a
    // revert is idempotent, so a run cut short just reverts again.
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for step in steps.iter().rev() {
        let id = step.id();
        let Some(r) = state.get(id) else { continue };
        let data = r.data.clone();
        match crate::fault::before_revert(id).and_then(|()| step.revert(undo, &data)) {
            Ok(changes) => {
                crate::fault::after_revert(id);
                state.remove(id);
                let o = Outcome { step: id, changes };
                report(&o);
                out.push(o);
            }
            Err(e) => failures.push(in_step(id, "revert", e)),
        }
    }
    if failures.is_empty() {
        return Ok(out);
    }
    if let Err(e) = store.save(state) {
        failures.push(e);
    }
    Err(Error::Reverts { failures })
}

/// `--disable` without a state record: every step sweeps what carries our
/// mark and a name derived from `name`, last step first. A step that fails
/// does not stop the others; the first error is returned at the end.
pub fn sweep_all(
    steps: &[Box<dyn Step>],
    undo: &Undo,
    name: &str,
    report: &mut dyn FnMut(&Outcome),
) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    let mut first_err = None;
    for step in steps.iter().rev() {
        let id = step.id();
        match step.sweep(undo, name) {
            Ok(changes) if changes.is_empty() => {}
            Ok(changes) => {
                let o = Outcome { step: id, changes };
                report(&o);
                out.push(o);
            }
            Err(e) => {
                first_err.get_or_insert(in_step(id, "sweep", e));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Every change `apply_all` would make, step by step. A step that cannot
/// inspect the host (not root, say) says so instead of guessing.
pub fn plan_all(steps: &[Box<dyn Step>], spec: &Spec, state: Option<&State>) -> Vec<Outcome> {
    steps
        .iter()
        .map(|step| {
            let id = step.id();
            let rec = state.and_then(|s| s.get(id)).map(|r| &r.data);
            let changes = if wants(step.as_ref(), spec) {
                step.plan(spec, rec)
                    .unwrap_or_else(|e| vec![format!("cannot inspect the host ({e}); would apply")])
            } else if rec.is_some() {
                vec!["would revert: no longer wanted with these flags".into()]
            } else {
                Vec::new()
            };
            Outcome { step: id, changes }
        })
        .collect()
}

/// Every wanted step's preflight problems, in step order.
pub fn preflight_all(steps: &[Box<dyn Step>], spec: &Spec) -> Vec<Error> {
    steps
        .iter()
        .filter(|s| wants(s.as_ref(), spec))
        .flat_map(|s| s.preflight(spec))
        .collect()
}

/// Every object the wanted steps put on the host, for this spec.
pub fn inventory_all(steps: &[Box<dyn Step>], spec: &Spec) -> Inventory {
    let mut inv = Inventory::default();
    for step in steps.iter().filter(|s| wants(s.as_ref(), spec)) {
        step.inventory(spec, &mut inv);
    }
    inv
}

fn in_step(step: &'static str, op: &'static str, e: Error) -> Error {
    Error::Step {
        step,
        op,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// A step that records its calls in a shared log, so order and the
    /// write-ahead discipline can be checked without touching the host.
    struct Fake {
        id: &'static str,
        log: Rc<RefCell<Vec<String>>>,
        fail_apply: bool,
        wanted: bool,
    }

    impl Step for Fake {
        fn id(&self) -> &'static str {
            self.id
        }
        fn wanted(&self, _spec: &Spec) -> bool {
            self.wanted
        }
        fn plan(&self, _spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
            Ok(if rec.is_some() {
                vec![]
            } else {
                vec![format!("create {}", self.id)]
            })
        }
        fn apply(&self, _spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
            let again = rec.has_record();
            rec.put(&serde_json::json!({ "made": self.id }))?;
            self.log.borrow_mut().push(format!("apply {}", self.id));
            if self.fail_apply {
                return Err(Error::host(self.id, "failed on purpose", "none"));
            }
            Ok(if again {
                vec![]
            } else {
                vec![format!("created {}", self.id)]
            })
        }
        fn revert(&self, _undo: &Undo, data: &Value) -> Result<Vec<String>> {
            self.log
                .borrow_mut()
                .push(format!("revert {} {}", self.id, data["made"]));
            Ok(vec![format!("removed {}", self.id)])
        }
    }

    fn spec(root: &std::path::Path) -> Spec {
        crate::testutil::spec(&["--root", root.to_str().expect("utf8")])
    }

    fn steps(log: &Rc<RefCell<Vec<String>>>, fail: Option<&str>, unwanted: Option<&str>) -> Vec<Box<dyn Step>> {
        ["a", "b", "c"]
            .into_iter()
            .map(|id| {
                Box::new(Fake {
                    id,
                    log: log.clone(),
                    fail_apply: fail == Some(id),
                    wanted: unwanted != Some(id),
                }) as Box<dyn Step>
            })
            .collect()
    }

    #[test]
    fn a_kept_file_is_a_note_not_a_change() {
        let kept = Outcome {
            step: "user",
            changes: vec!["kept /home/s/.bashrc: edited, not overwritten".into()],
        };
        assert!(!kept.changed());
        let both = Outcome {
            step: "user",
            changes: vec![kept.changes[0].clone(), "wrote /home/s/.bash_profile".into()],
        };
        assert!(both.changed());
    }

    #[test]
    fn apply_in_order_then_nothing_changes_then_revert_in_reverse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(dir.path());
        let log = Rc::new(RefCell::new(Vec::new()));
        let (store, mut state) = Store::open(&spec.root, "sandbox").expect("open");
        let all = steps(&log, None, None);
        let first = apply_all(&all, &spec, &store, &mut state, &mut |_| {}).expect("apply");
        assert!(first.iter().all(Outcome::changed));
        let again = apply_all(&all, &spec, &store, &mut state, &mut |_| {}).expect("again");
        assert!(again.iter().all(|o| !o.changed()), "a re-run changes nothing");
        assert!(plan_all(&all, &spec, Some(&state)).iter().all(|o| !o.changed()));
        assert!(state.steps.iter().all(|r| r.done));
        log.borrow_mut().clear();
        let undo = Undo {
            root: spec.root.clone(),
            name: spec.name.clone(),
            purge: false,
        };
        revert_all(&all, &undo, &store, &mut state, &mut |_| {}).expect("revert");
        assert_eq!(*log.borrow(), ["revert c \"c\"", "revert b \"b\"", "revert a \"a\""]);
        assert!(state.steps.is_empty());
        store.remove(&state).expect("remove");
        assert!(!spec.root.state_dir("sandbox").exists(), "record and its dirs are gone");
    }

    #[test]
    fn a_failing_step_leaves_a_record_that_disable_reverts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(dir.path());
        let log = Rc::new(RefCell::new(Vec::new()));
        {
            let (store, mut state) = Store::open(&spec.root, "sandbox").expect("open");
            let e =
                apply_all(&steps(&log, Some("b"), None), &spec, &store, &mut state, &mut |_| {}).expect_err("b fails");
            assert!(e.to_string().contains("step b (apply)"), "{e}");
        }
        // A fresh process reads what was written ahead: b is recorded, not done; c never started.
        let on_disk = Store::peek(&spec.root, "sandbox").expect("peek").expect("record");
        assert_eq!(on_disk.get("a").map(|r| r.done), Some(true));
        assert_eq!(on_disk.get("b").map(|r| r.done), Some(false));
        assert!(on_disk.get("c").is_none());
        log.borrow_mut().clear();
        let (store, mut state) = Store::open(&spec.root, "sandbox").expect("reopen");
        let undo = Undo {
            root: spec.root.clone(),
            name: spec.name.clone(),
            purge: false,
        };
        revert_all(&steps(&log, None, None), &undo, &store, &mut state, &mut |_| {}).expect("revert");
        assert_eq!(*log.borrow(), ["revert b \"b\"", "revert a \"a\""]);
    }

    /// Reverts like `Fake`, but the step `fail_revert` names fails.
    struct FailingRevert {
        inner: Fake,
        fail_revert: bool,
    }

    impl Step for FailingRevert {
        fn id(&self) -> &'static str {
            self.inner.id
        }
        fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
            self.inner.plan(spec, rec)
        }
        fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
            self.inner.apply(spec, rec)
        }
        fn revert(&self, undo: &Undo, data: &Value) -> Result<Vec<String>> {
            if self.fail_revert {
                self.inner
                    .log
                    .borrow_mut()
                    .push(format!("revert {} failed", self.inner.id));
                return Err(Error::host(
                    format!("{} object", self.inner.id),
                    "sabotaged",
                    "remove the sabotage",
                ));
            }
            self.inner.revert(undo, data)
        }
    }

    fn failing_revert_steps(log: &Rc<RefCell<Vec<String>>>, fail: &[&str]) -> Vec<Box<dyn Step>> {
        ["a", "b", "c", "d"]
            .into_iter()
            .map(|id| {
                Box::new(FailingRevert {
                    inner: Fake {
                        id,
                        log: log.clone(),
                        fail_apply: false,
                        wanted: true,
                    },
                    fail_revert: fail.contains(&id),
                }) as Box<dyn Step>
            })
            .collect()
    }

    #[test]
    fn a_failed_revert_does_not_stop_the_others_and_stays_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(dir.path());
        let log = Rc::new(RefCell::new(Vec::new()));
        let undo = Undo {
            root: spec.root.clone(),
            name: spec.name.clone(),
            purge: false,
        };
        {
            let (store, mut state) = Store::open(&spec.root, "sandbox").expect("open");
            apply_all(&failing_revert_steps(&log, &[]), &spec, &store, &mut state, &mut |_| {}).expect("apply");
            log.borrow_mut().clear();
            let mut reported = Vec::new();
            let e = revert_all(
                &failing_revert_steps(&log, &["d", "b"]),
                &undo,
                &store,
                &mut state,
                &mut |o| reported.push(o.step),
            )
            .expect_err("b and d fail");
            assert_eq!(
                *log.borrow(),
                ["revert d failed", "revert c \"c\"", "revert b failed", "revert a \"a\""],
                "every step was tried, last first"
            );
            assert_eq!(reported, ["c", "a"]);
            assert_eq!(e.exit_code(), 1, "{e}");
            let text = e.to_string();
            for needle in [
                "2 step(s)",
                "step d (revert): d object: sabotaged",
                "step b (revert): b object",
                "fix: remove the sabotage",
                "--disable` again",
            ] {
                assert!(text.contains(needle), "{needle:?} in {text}");
            }
        }
        // What is on disk keeps the failed steps, and only them.
        let on_disk = Store::peek(&spec.root, "sandbox").expect("peek").expect("record");
        let ids: Vec<&str> = on_disk.steps.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["b", "d"]);
        // Once the cause is gone, a re-run reverts only what is left.
        log.borrow_mut().clear();
        let (store, mut state) = Store::open(&spec.root, "sandbox").expect("reopen");
        revert_all(&failing_revert_steps(&log, &[]), &undo, &store, &mut state, &mut |_| {}).expect("re-run");
        assert_eq!(*log.borrow(), ["revert d \"d\"", "revert b \"b\""]);
        assert!(state.steps.is_empty());
    }

    #[test]
    fn a_step_no_longer_wanted_is_reverted_on_converge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(dir.path());
        let log = Rc::new(RefCell::new(Vec::new()));
        let (store, mut state) = Store::open(&spec.root, "sandbox").expect("open");
        apply_all(&steps(&log, None, None), &spec, &store, &mut state, &mut |_| {}).expect("apply");
        let plan = plan_all(&steps(&log, None, Some("b")), &spec, Some(&state));
        assert!(plan[1].changes[0].contains("would revert"), "{plan:?}");
        log.borrow_mut().clear();
        let out = apply_all(&steps(&log, None, Some("b")), &spec, &store, &mut state, &mut |_| {}).expect("converge");
        assert_eq!(*log.borrow(), ["apply a", "revert b \"b\"", "apply c"]);
        assert!(out[1].changed() && state.get("b").is_none());
    }

    /// Finishes in the background: `a` waits for `b` to have run, so the
    /// test hangs (and then fails) unless the engine went on meanwhile.
    struct Overlapping {
        id: &'static str,
        go: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
        tell: Option<std::sync::mpsc::Sender<()>>,
        finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
        waits: bool,
        fail: bool,
        log: Rc<RefCell<Vec<String>>>,
    }

    impl Step for Overlapping {
        fn id(&self) -> &'static str {
            self.id
        }
        fn waits_for_background(&self) -> bool {
            self.waits
        }
        fn plan(&self, _spec: &Spec, _rec: Option<&Value>) -> Result<Vec<String>> {
            Ok(vec![])
        }
        fn apply(&self, _spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
            rec.put(&serde_json::json!({ "made": self.id }))?;
            let finished = self.finished.load(std::sync::atomic::Ordering::SeqCst);
            self.log
                .borrow_mut()
                .push(format!("apply {} (a finished: {finished})", self.id));
            if let Some(tx) = &self.tell {
                tx.send(()).expect("a listens");
            }
            let go = self.go.lock().expect("lock").take();
            if let Some(go) = go {
                let (finished, fail) = (self.finished.clone(), self.fail);
                rec.finish_in_background(move || {
                    go.recv_timeout(std::time::Duration::from_secs(5))
                        .map_err(|_| Error::host("a", "b never ran while a was finishing", "none"))?;
                    if fail {
                        return Err(Error::host("a", "failed on purpose", "none"));
                    }
                    finished.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok(vec!["finished a".into()])
                })?;
                return Ok(vec!["started a".into()]);
            }
            Ok(vec![format!("did {}", self.id)])
        }
        fn revert(&self, _undo: &Undo, _data: &Value) -> Result<Vec<String>> {
            Ok(vec![])
        }
    }

    fn background_steps(log: &Rc<RefCell<Vec<String>>>, fail: bool) -> Vec<Box<dyn Step>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let step = |id, go, tell, waits| {
            Box::new(Overlapping {
                id,
                go: std::sync::Mutex::new(go),
                tell,
                finished: finished.clone(),
                waits,
                fail,
                log: log.clone(),
            }) as Box<dyn Step>
        };
        vec![
            step("a", Some(rx), None, false),
            step("b", None, Some(tx), false),
            step("c", None, None, true),
        ]
    }

    #[test]
    fn background_work_overlaps_the_next_steps_and_is_reported_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(dir.path());
        let log = Rc::new(RefCell::new(Vec::new()));
        let (store, mut state) = Store::open(&spec.root, "sandbox").expect("open");
        let mut reported = Vec::new();
        let out = apply_all(&background_steps(&log, false), &spec, &store, &mut state, &mut |o| {
            reported.push(format!("{}: {}", o.step, o.changes.join(", ")))
        })
        .expect("apply");
        assert_eq!(
            *log.borrow(),
            [
                "apply a (a finished: false)",
                "apply b (a finished: false)",
                "apply c (a finished: true)"
            ],
            "b ran while a finished; c waited for it"
        );
        assert_eq!(reported, ["a: started a, finished a", "b: did b", "c: did c"]);
        assert_eq!(out.len(), 3);
        assert!(state.steps.iter().all(|r| r.done));
    }

    #[test]
    fn failed_background_work_fails_the_run_and_leaves_its_step_under_way() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(dir.path());
        let log = Rc::new(RefCell::new(Vec::new()));
        let (store, mut state) = Store::open(&spec.root, "sandbox").expect("open");
        let mut reported = Vec::new();
        let e = apply_all(&background_steps(&log, true), &spec, &store, &mut state, &mut |o| {
            reported.push(o.step)
        })
        .expect_err("a fails");
        assert!(e.to_string().contains("step a (apply)"), "{e}");
        assert_eq!(reported, ["a", "b"], "b's change happened and is reported");
        assert_eq!(state.get("a").map(|r| r.done), Some(false));
        assert_eq!(state.get("b").map(|r| r.done), Some(true));
        assert!(state.get("c").is_none(), "c waits for a and never started");
    }
}
