//! `sandbox setup --boot --name NAME`: after a reboot the namespace, the
//! veth pair, the nftables tables and the forwarding sysctl are gone (they
//! live in memory), while the state record, the files and the units are
//! not. `sandbox-net@NAME.service`, a oneshot ordered before the gateway
//! and the agent, runs this to converge the in-memory steps again from the
//! spec the last `setup` saved in its record: the same step code, so a
//! reboot brings back exactly what `setup` made, and `--disable` still
//! finds everything in the record.
//!
//! A CI job's sandbox (`sandbox job`) is never re-created: boot runs
//! `job gc` for it instead (after a reboot every job's creator is gone).
//!
//! When nothing is missing it changes nothing and takes no lock: during
//! `setup` itself the target's start runs this oneshot while `setup` holds
//! the lock, and the network is already in place then.

use std::time::{Duration, Instant};

use crate::audit::AuditLog;
use crate::cli::SetupArgs;
use crate::engine::{self, Outcome, Step};
use crate::error::{Error, Result};
use crate::preflight;
use crate::spec;
use crate::state::Store;
use crate::steps;

/// The steps whose objects a reboot takes away (kernel state), in setup's
/// order: the ones `--boot` converges.
pub const IN_MEMORY: &[&str] = &["netns", "firewall", "forwarding", "nflog", "veth"];
/// The steps whose objects survive a reboot (files, accounts, units).
pub const PERSISTENT: &[&str] = &[
    "user", "dns", "resolver", "policy", "openclaw", "scripts", "sidecar", "pairing", "extras", "units", "job_home",
];
/// How long to wait for another run (an operator's `setup`) to let go of
/// the lock.
const LOCK_WAIT: Duration = Duration::from_secs(60);

pub fn run(args: &SetupArgs) -> Result<()> {
    let (name, root) = spec::disable_target(args)?;
    crate::run::refuse_unprivileged("setup --boot")?;
    let Some(previous) = Store::peek(&root, &name)? else {
        crate::outln!(
            "sandbox {name}: no state record under {}: nothing to re-create",
            root.state_dir(&name).display()
        );
        return Ok(());
    };
    // A CI job's sandbox is never re-created: its command died with the
    // boot, so it is garbage; every job's is taken away instead.
    let is_job = previous
        .spec
        .as_ref()
        .is_some_and(|v| v.get("job").is_some_and(|j| !j.is_null()));
    if is_job {
        crate::outln!("sandbox {name}: a CI job's sandbox: not re-created; destroying stale jobs");
        for line in crate::job::gc(&root, false)? {
            crate::outln!("  {line}");
        }
        return Ok(());
    }
    let Some(mut spec) = steps::units::saved_spec(&previous)? else {
        return Err(Error::State {
            path: root.state_dir(&name).join("state.json"),
            cause: "holds no spec (the units step never ran: setup did not finish)".into(),
            fix: format!("run `sudo sandbox setup --name {name} ...` with your flags again"),
        });
    };
    // The tree this runs on, and no systemd calls from inside a unit.
    spec.root = root;
    spec.systemd = false;
    let steps: Vec<Box<dyn Step>> = steps::all()
        .into_iter()
        .filter(|s| IN_MEMORY.contains(&s.id()))
        .collect();
    let plan = engine::plan_all(&steps, &spec, Some(&previous));
    if plan.iter().all(|o| !o.changed()) {
        crate::outln!("sandbox {name}: network in place (namespace {})", spec.net.netns);
        return Ok(());
    }
    if args.dry_run {
        for o in &plan {
            for c in &o.changes {
                crate::outln!("  {:<14} {c}", o.step);
            }
        }
        crate::outln!("(dry run: nothing was changed)");
        return Ok(());
    }
    let problems = preflight::for_setup(&spec, Some(&previous));
    if !problems.is_empty() {
        return Err(Error::Preflight { problems });
    }
    let (store, mut state) = lock(&spec.root, &name)?;
    // Every change goes to the audit log (`sandbox log`), as setup's do.
    let mut audit = AuditLog::open(&spec.root, &name)?;
    let mut audit_failed = None;
    crate::outln!("sandbox {name}: re-creating the network (policy {})", spec.policy_name);
    let before = state.steps.clone();
    let mut said = Vec::new();
    let done = engine::apply_all(&steps, &spec, &store, &mut state, &mut |o| {
        if o.changed() {
            said.push(o.step.to_string());
        }
        progress(o);
        if let Err(e) = audit.record("boot", o) {
            audit_failed.get_or_insert(e);
        }
    })
    .map_err(|e| e.after_changes(&crate::run::touched(&said, &before, &state.steps)))?;
    if let Some(e) = audit_failed {
        return Err(e);
    }
    let changed = done.iter().filter(|o| o.changed()).count();
    crate::outln!("done: {changed} of {} network steps changed", done.len());
    Ok(())
}

fn lock(root: &spec::Root, name: &str) -> Result<(Store, crate::state::State)> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match Store::open(root, name) {
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

fn progress(o: &Outcome) {
    for c in &o.changes {
        crate::outln!("  {:<14} {c}", o.step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new step must say whether a reboot takes its objects away:
    /// otherwise the sandbox would come back without it.
    #[test]
    fn every_step_is_either_in_memory_or_persistent() {
        for step in steps::all() {
            let id = step.id();
            let n = usize::from(IN_MEMORY.contains(&id)) + usize::from(PERSISTENT.contains(&id));
            assert_eq!(n, 1, "step {id}: list it in boot::IN_MEMORY or boot::PERSISTENT");
        }
    }

    #[test]
    fn in_memory_steps_exist_and_keep_setups_order() {
        let ids: Vec<&str> = steps::all().iter().map(|s| s.id()).collect();
        let mut last = 0;
        for id in IN_MEMORY {
            let i = ids
                .iter()
                .position(|x| x == id)
                .unwrap_or_else(|| panic!("{id} is not a step"));
            assert!(i >= last, "{id} out of order");
            last = i;
        }
    }
}
