//! `sandbox setup` and `sandbox setup --disable`, start to end: validate,
//! preflight, confirm, lock, run the steps, report.

use std::io::{BufRead, IsTerminal, Write};

use crate::audit::{self, AuditLog};
use crate::cli::{LogArgs, SetupArgs, StatusArgs};
use crate::engine::{self, Outcome};
use crate::error::{Error, Result};
use crate::preflight;
use crate::report::{self, Format, Report};
use crate::spec::{self, Spec};
use crate::state::{StepRecord, Store};
use crate::status;
use crate::steps;

pub fn setup(args: &SetupArgs) -> Result<()> {
    if args.format.is_some() && !args.dry_run {
        return Err(Error::input(
            "--format",
            "only shapes the plan of --dry-run",
            "add --dry-run (or use `sandbox plan`); for progress as JSON use --json",
        ));
    }
    if args.disable {
        return disable(args);
    }
    let spec = Spec::from_args(args)?;
    let steps = steps::all();
    // Before reading the record: it is root's, and "permission denied" on
    // it would hide the real problem. A plan too: without root it can read
    // neither the record nor the tables, and would plan wrongly.
    refuse_unprivileged(if args.dry_run { "plan" } else { "setup" })?;
    let previous = Store::peek(&spec.root, &spec.name)?;
    if args.dry_run {
        return dry_run(&spec, &steps, previous.as_ref(), args.format.unwrap_or(Format::Text));
    }
    let problems = preflight::for_setup(&spec, previous.as_ref());
    if !problems.is_empty() {
        return Err(Error::Preflight { problems });
    }
    warn(&spec);
    if !args.non_interactive {
        let plan = engine::plan_all(&steps, &spec, previous.as_ref());
        print_plan(&spec, &plan);
        if plan.iter().all(|o| !o.changed()) {
            crate::outln!("nothing to change: sandbox {} is in place", spec.name);
            return Ok(());
        }
        confirm("Apply these changes?")?;
    }
    let (store, mut state) = Store::open(&spec.root, &spec.name)?;
    // After the lock: a run refused for it must leave no trace.
    let mut report = Reporter::new(AuditLog::open(&spec.root, &spec.name)?, "apply", args.json);
    state.spec = serde_json::to_value(&spec).ok();
    report.say(&format!(
        "sandbox {}: setup (policy {}, root {})",
        spec.name,
        spec.policy_name,
        spec.root.0.display()
    ));
    let before = state.steps.clone();
    let mut said = Vec::new();
    // One durable intent, barriers where a change must follow an earlier
    // one to disk, one commit at the end (sys::files, "group commit").
    crate::sys::files::group_commit(true);
    let done = engine::apply_all(&steps, &spec, &store, &mut state, &mut |o| {
        if o.changed() {
            said.push(o.step.to_string());
        }
        report.step(o)
    });
    let done = done.map_err(|e| e.after_changes(&touched(&said, &before, &state.steps)));
    let finished = report.finish(done.as_ref().err());
    crate::sys::files::commit()?;
    finished?;
    let done = done?;
    let changed = done.iter().filter(|o| o.changed()).count();
    if changed == 0 {
        report.say(&format!(
            "nothing changed: all {} steps were already in place",
            done.len()
        ));
    } else {
        report.say(&format!("done: {changed} of {} steps changed", done.len()));
    }
    report.done(changed);
    Ok(())
}

fn disable(args: &SetupArgs) -> Result<()> {
    let (name, root) = spec::disable_target(args)?;
    let steps = steps::all();
    refuse_unprivileged("setup --disable")?;
    // No record, or one from a run that never reached its first step:
    // sweep what is named after this sandbox and carries our mark.
    let Some(previous) = Store::peek(&root, &name)?.filter(|p| !p.steps.is_empty()) else {
        return sweep(args, &name, &root, &steps);
    };
    if args.dry_run {
        crate::outln!("sandbox {name}: --disable would revert, in this order:");
        for step in steps.iter().rev().filter(|s| previous.get(s.id()).is_some()) {
            crate::outln!("  {:<14} revert", step.id());
        }
        return Ok(());
    }
    if !args.non_interactive {
        let ids: Vec<&str> = steps
            .iter()
            .rev()
            .map(|s| s.id())
            .filter(|id| previous.get(id).is_some())
            .collect();
        crate::outln!("sandbox {name}: --disable reverts {}", ids.join(", "));
        confirm("Take the sandbox away?")?;
    }
    let (store, mut state) = Store::open(&root, &name)?;
    let mut report = Reporter::new(AuditLog::open(&root, &name)?, "revert", args.json);
    report.say(&format!("sandbox {name}: disable (root {})", root.0.display()));
    let undo = engine::Undo {
        root: root.clone(),
        purge: args.purge,
    };
    let mut said = Vec::new();
    crate::sys::files::group_commit(true);
    let done = engine::revert_all(&steps, &undo, &store, &mut state, &mut |o| {
        if o.changed() {
            said.push(o.step.to_string());
        }
        report.step(o)
    });
    let done = done.map_err(|e| e.after_changes(&said));
    let finished = report.finish(done.as_ref().err());
    crate::sys::files::commit()?;
    finished?;
    // Steps that failed to revert stay in the saved record (every other
    // step was reverted): keep it, so a re-run reverts only them.
    let done = done?;
    store.remove(&state)?;
    crate::sys::files::commit()?;
    report.say(&format!(
        "done: {} steps reverted; nothing of sandbox {name} is left",
        done.len()
    ));
    report.done(done.iter().filter(|o| o.changed()).count());
    Ok(())
}

/// `--disable` without a record (removed or lost behind our back): each
/// step removes what carries our mark and a name derived from `name`
/// (namespace, veth with our alias, our nft table, DNS files with our
/// header), under the lock. What only the record could undo is said.
fn sweep(args: &SetupArgs, name: &str, root: &spec::Root, steps: &[Box<dyn engine::Step>]) -> Result<()> {
    let dir = root.state_dir(name);
    if args.dry_run {
        crate::outln!(
            "sandbox {name}: no state record under {}: --disable would remove what is named after it \
             and carries our mark (namespace, veth, nft table, DNS files)",
            dir.display()
        );
        return Ok(());
    }
    if !args.non_interactive {
        crate::outln!("sandbox {name}: no state record; --disable removes what is named after it and carries our mark");
        confirm("Sweep?")?;
    }
    let (store, _state) = Store::open(root, name)?;
    let undo = engine::Undo {
        root: root.clone(),
        purge: false,
    };
    let mut found = Vec::new();
    let done = engine::sweep_all(steps, &undo, name, &mut |o| {
        progress(o);
        found.push(o.clone());
    });
    if !found.is_empty() {
        let mut audit = AuditLog::open(root, name)?;
        for o in &found {
            audit.record("sweep", o)?;
        }
    }
    let said: Vec<String> = found
        .iter()
        .filter(|o| o.changed())
        .map(|o| o.step.to_string())
        .collect();
    done.map_err(|e| e.after_changes(&said))?;
    store.remove_all()?;
    if found.is_empty() {
        crate::outln!(
            "sandbox {name}: no state record under {}: nothing to disable",
            dir.display()
        );
    } else {
        crate::outln!(
            "done: no state record, so what carries our mark was swept; kept: the user and the files \
             in its home (their hashes were in the record, so they cannot be told from your edits)"
        );
    }
    Ok(())
}

/// The steps that changed the host in a run: those that said so, and any
/// whose record the run wrote or rewrote. Records are written ahead of a
/// change, so a step that failed halfway is among them. A failure after
/// any of these exits 1, never 2 or 3 ("nothing was changed").
pub(crate) fn touched(said: &[String], before: &[StepRecord], after: &[StepRecord]) -> Vec<String> {
    let mut out = said.to_vec();
    for r in after {
        let kept = before.iter().any(|b| b.id == r.id && b.data == r.data);
        if !kept && !out.contains(&r.id) {
            out.push(r.id.clone());
        }
    }
    out
}

/// Not root (or capabilities missing): exit 3, saying to run `command`
/// with sudo. One problem is said as it is, not as a preflight list.
pub(crate) fn refuse_unprivileged(command: &str) -> Result<()> {
    let mut problems = preflight::privileges(command);
    match problems.len() {
        0 => Ok(()),
        1 => Err(problems.remove(0)),
        _ => Err(Error::Preflight { problems }),
    }
}

/// What will keep the units from running (a missing program, say),
/// once per run, on standard error.
fn warn(spec: &Spec) {
    for w in crate::steps::units::warnings(spec) {
        crate::errln!("warning: {w}");
    }
}

fn dry_run(
    spec: &Spec,
    steps: &[Box<dyn engine::Step>],
    previous: Option<&crate::state::State>,
    format: Format,
) -> Result<()> {
    warn(spec);
    let changes = engine::plan_all(steps, spec, previous);
    let unchanged = changes.iter().all(|o| !o.changed());
    let r = Report {
        sandbox: spec.name.clone(),
        policy: spec.policy_name.clone(),
        policy_description: spec.policy.description.clone(),
        root: spec.root.0.display().to_string(),
        changes,
        flows: report::flows(spec),
        inventory: engine::inventory_all(steps, spec),
        // Say now what would stop the real run, without failing the plan.
        preflight: preflight::for_setup(spec, previous)
            .iter()
            .map(|p| p.to_string())
            .collect(),
    };
    crate::out!("{}", report::render(&r, format));
    if format == Format::Text {
        if unchanged {
            crate::outln!("\nnothing to change");
        }
        crate::outln!("(dry run: nothing was changed)");
    }
    Ok(())
}

fn print_plan(spec: &Spec, plan: &[Outcome]) {
    crate::outln!(
        "sandbox {}: plan (policy {}: {}; root {})",
        spec.name,
        spec.policy_name,
        spec.policy.description,
        spec.root.0.display()
    );
    for o in plan {
        if o.changes.is_empty() {
            crate::outln!("  {:<14} in place", o.step);
        }
        for c in &o.changes {
            crate::outln!("  {:<14} {c}", o.step);
        }
    }
}

/// Progress for the operator (lines, or JSON events with `--json`) and
/// the audit log, one step at a time.
struct Reporter {
    audit: AuditLog,
    action: &'static str,
    json: bool,
    /// The first audit write that failed; reported after the run, since a
    /// step that changed the host must still finish its record.
    audit_failed: Option<Error>,
}

impl Reporter {
    fn new(audit: AuditLog, action: &'static str, json: bool) -> Reporter {
        Reporter {
            audit,
            action,
            json,
            audit_failed: None,
        }
    }

    /// A line for people; JSON mode keeps standard output to events.
    fn say(&self, line: &str) {
        if !self.json {
            crate::outln!("{line}");
        }
    }

    fn step(&mut self, o: &Outcome) {
        if self.json {
            let event = serde_json::json!({
                "event": "step",
                "action": self.action,
                "step": o.step,
                "changed": o.changed(),
                "changes": o.changes,
            });
            crate::outln!("{event}");
        } else {
            progress(o);
        }
        if let Err(e) = self.audit.record(self.action, o) {
            self.audit_failed.get_or_insert(e);
        }
    }

    fn done(&self, changed_steps: usize) {
        if self.json {
            let event = serde_json::json!({
                "event": "done",
                "action": self.action,
                "changed": changed_steps > 0,
                "changed_steps": changed_steps,
            });
            crate::outln!("{event}");
        }
    }

    /// A step's own failure outranks a failed audit write.
    fn finish(&mut self, run_failed: Option<&Error>) -> Result<()> {
        match (run_failed, self.audit_failed.take()) {
            (None, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

fn progress(o: &Outcome) {
    if o.changes.is_empty() {
        crate::outln!("  {:<14} unchanged", o.step);
    }
    for c in &o.changes {
        crate::outln!("  {:<14} {c}", o.step);
    }
}

/// `sandbox plan`: `setup --dry-run` under its own name.
pub fn plan(args: &SetupArgs) -> Result<()> {
    if args.boot || args.disable {
        return Err(Error::input(
            "sandbox plan",
            "plans a setup; --boot and --disable are not plans",
            "use `sandbox setup --disable --dry-run` to see what --disable would revert",
        ));
    }
    let mut a = args.clone();
    a.dry_run = true;
    setup(&a)
}

/// `sandbox status`: a table (or JSON); unhealthy is exit code 6.
pub fn status(args: &StatusArgs) -> Result<()> {
    let (name, root) = spec::target(&args.name, &args.root)?;
    refuse_unprivileged("status")?;
    let s = status::collect(&root, &name, !args.no_systemd)?;
    if args.json {
        let text = serde_json::to_string_pretty(&s).map_err(|e| Error::io("encode status", "stdout", e.into()))?;
        crate::outln!("{text}");
    } else {
        status::print_table(&s);
    }
    if s.healthy {
        Ok(())
    } else {
        Err(Error::Unhealthy { name })
    }
}

/// `sandbox log`: the audit trail, oldest first.
pub fn log(args: &LogArgs) -> Result<()> {
    let root = spec::target("sandbox", &args.root)?.1;
    // The audit log is root's alone (0600).
    refuse_unprivileged("log")?;
    let entries = audit::read(&root, args.name.as_deref())?;
    for e in &entries {
        if args.json {
            let line = serde_json::to_string(e).map_err(|err| Error::io("encode entry", "stdout", err.into()))?;
            crate::outln!("{line}");
        } else {
            crate::outln!(
                "{}  {:<12} {:<10} {:<7} {:<14} {}",
                e.time,
                e.sandbox,
                e.by,
                e.action,
                e.step,
                e.change
            );
        }
    }
    if entries.is_empty() && !args.json {
        crate::outln!("no entries in {}", audit::path(&root).display());
    }
    Ok(())
}

fn confirm(question: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::input(
            "confirmation",
            "standard input is not a terminal, so nobody can answer",
            "pass --non-interactive to run without asking",
        ));
    }
    crate::out!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::io("read answer", "stdin", e))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Error::input(
            "confirmation",
            "not confirmed",
            "answer y to proceed, or pass --non-interactive",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, data: serde_json::Value) -> StepRecord {
        StepRecord {
            id: id.into(),
            done: true,
            data,
        }
    }

    #[test]
    fn a_step_is_touched_when_it_said_so_or_its_record_was_written() {
        let before = vec![rec("user", serde_json::json!({"created": true}))];
        // A re-run that rewrote nothing and said nothing touched nothing.
        assert!(touched(&[], &before, &before.clone()).is_empty());
        // A step under way wrote its record ahead of a change, then failed.
        let after = vec![
            before[0].clone(),
            rec("netns", serde_json::json!({"made": "/run/netns"})),
        ];
        assert_eq!(touched(&[], &before, &after), ["netns"]);
        let rewritten = vec![rec("user", serde_json::json!({"created": false}))];
        assert_eq!(touched(&["dns".into()], &before, &rewritten), ["dns", "user"]);
    }
}
