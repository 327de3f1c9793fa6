//! Runs the steps: apply in order, revert in reverse, plan without
//! changing anything. The state record is written before a step changes
//! anything (so a crash mid-step is still undoable) and after it finishes.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::spec::{Root, Spec};
use crate::state::{State, Store};

/// One provisioning step with its inverse. Apply and revert of a step sit
/// side by side in one file under `steps/`.
pub trait Step {
    /// Short id, used in the state record and in progress lines.
    fn id(&self) -> &'static str;
    /// Whether this spec wants the step at all; an unwanted step that was
    /// applied by an earlier run is reverted (converge on changed flags).
    fn wanted(&self, _spec: &Spec) -> bool {
        true
    }
    /// What `apply` would change right now, one line each; empty when the
    /// step is in place. Changes nothing.
    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>>;
    /// Make the step true. Records what undo needs through `rec` *before*
    /// changing anything. Returns what changed (empty: nothing did).
    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>>;
    /// Undo from the record alone (flags may differ at --disable time).
    /// Idempotent: whatever is already gone is skipped.
    fn revert(&self, undo: &Undo, data: &Value) -> Result<Vec<String>>;
}

/// What a revert may know beyond its own record.
#[derive(Debug, Clone)]
pub struct Undo {
    pub root: Root,
    /// `--disable --purge`: also remove what setup created that holds the
    /// operator's data (user, group, home).
    pub purge: bool,
}

/// A step's handle on its own record: write-ahead of every change.
pub struct Recorder<'a> {
    id: &'static str,
    state: &'a mut State,
    store: &'a Store,
}

impl Recorder<'_> {
    /// Whether an earlier run left a record for this step. Without one,
    /// nothing of the step can be in place yet (records are written ahead).
    pub fn has_record(&self) -> bool {
        self.state.get(self.id).is_some()
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
        self.state.put(self.id, false, value);
        self.store.save(self.state)
    }
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
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }
}

pub fn apply_all(
    steps: &[Box<dyn Step>],
    spec: &Spec,
    store: &Store,
    state: &mut State,
    report: &mut dyn FnMut(&Outcome),
) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for step in steps {
        let id = step.id();
        let changes = if step.wanted(spec) {
            let mut rec = Recorder { id, state, store };
            let changes = step.apply(spec, &mut rec).map_err(|e| in_step(id, "apply", e))?;
            // Marked done in memory only: the next write-ahead (or the final
            // save) carries it. A crash before then leaves it "under way",
            // which re-run and --disable treat the same way.
            if let Some(r) = state.get(id) {
                let data = r.data.clone();
                state.put(id, true, data);
            }
            changes
        } else if let Some(r) = state.get(id) {
            let data = r.data.clone();
            let undo = Undo {
                root: spec.root.clone(),
                purge: false,
            };
            let changes = step.revert(&undo, &data).map_err(|e| in_step(id, "revert", e))?;
            state.remove(id);
            store.save(state)?;
            changes
        } else {
            Vec::new()
        };
        let o = Outcome { step: id, changes };
        report(&o);
        out.push(o);
    }
    store.save(state)?;
    Ok(out)
}

/// Revert every recorded step, last applied first.
pub fn revert_all(
    steps: &[Box<dyn Step>],
    undo: &Undo,
    store: &Store,
    state: &mut State,
    report: &mut dyn FnMut(&Outcome),
) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for step in steps.iter().rev() {
        let id = step.id();
        let Some(r) = state.get(id) else { continue };
        let data = r.data.clone();
        let changes = step.revert(undo, &data).map_err(|e| in_step(id, "revert", e))?;
        state.remove(id);
        store.save(state)?;
        let o = Outcome { step: id, changes };
        report(&o);
        out.push(o);
    }
    Ok(out)
}

/// Every change `apply_all` would make, step by step. A step that cannot
/// inspect the host (not root, say) says so instead of guessing.
pub fn plan_all(steps: &[Box<dyn Step>], spec: &Spec, state: Option<&State>) -> Vec<Outcome> {
    steps
        .iter()
        .map(|step| {
            let id = step.id();
            let rec = state.and_then(|s| s.get(id)).map(|r| &r.data);
            let changes = if step.wanted(spec) {
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

fn in_step(step: &'static str, op: &'static str, e: Error) -> Error {
    Error::Step {
        step,
        op,
        source: Box::new(e),
    }
}
