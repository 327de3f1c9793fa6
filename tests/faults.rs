//! Crash and fault safety, from the inside: with the `fault-injection`
//! feature, `SANDBOX_FAULT` makes `setup` die (as if killed) or fail at a
//! chosen point of every step (src/fault.rs). For every step and mode:
//!
//! - the fault fires and is reported (a failure names the step; an abort
//!   leaves the process killed by a signal), and the state record on disk
//!   is valid JSON with no temp file left beside any file;
//! - `--disable` from that state restores the fake host exactly;
//! - the same fault again, then a plain `setup`, completes and equals a
//!   clean setup; `--disable` from there restores the host too.
//!
//! Run with `cargo test --features fault-injection --test faults`.

#![cfg(feature = "fault-injection")]

mod common;

use common::*;

/// Flags under which every network step is wanted (forwarding included).
/// The default policy names hosts: every step a setup can run is in the
/// matrix, the resolver (a process under --no-systemd) included.
const FLAGS: &[&str] = &["--policy", "default", "--dns", DNS_A];

/// The steps in apply order, from the binary's own list.
fn step_ids() -> Vec<&'static str> {
    sandbox::steps::all().iter().map(|s| s.id()).collect()
}

struct Bench {
    host: FakeHost,
    before: Snapshot,
    clean: Snapshot,
    clean_record: String,
}

impl Bench {
    /// A fake host, its state before setup, and the state a clean setup
    /// leaves (kept-by-design files are then in place, as for every later run).
    fn new() -> Option<Bench> {
        let host = FakeHost::new()?;
        let before = host.snapshot();
        // The first setup makes the device key and token, which --disable
        // keeps; every later setup reuses them. The reference is a later one.
        host.setup_ok(FLAGS);
        host.disable_ok();
        host.setup_ok(FLAGS);
        let clean = host.snapshot().comparable();
        let clean_record = std::fs::read_to_string(host.state_file("sandbox")).unwrap_or_default();
        host.disable_ok();
        before.assert_restored(&host.snapshot(), "clean setup, then --disable");
        Some(Bench {
            host,
            before,
            clean,
            clean_record,
        })
    }

    /// One fault; returns Ok(false) if it never fired (the point is past
    /// the step's last write-ahead record), Err with what went wrong.
    fn case(&self, fault: &str, rerun_first: bool) -> Result<bool, String> {
        let h = &self.host;
        let run = h.setup_env(&[("SANDBOX_FAULT", fault)], FLAGS);
        if !run.stderr.contains("fault injected") {
            if run.code != 0 {
                return Err(format!("{fault}: never fired, yet setup failed:\n{run}"));
            }
            let d = h.disable();
            if d.code != 0 {
                return Err(format!("{fault}: --disable after a clean setup failed:\n{d}"));
            }
            return Ok(false);
        }
        let aborted = fault.starts_with("abort");
        if aborted && run.code != -1 {
            return Err(format!("{fault}: expected death by signal:\n{run}"));
        }
        if !aborted && (run.code != 1 || !run.stderr.contains("step ")) {
            return Err(format!("{fault}: expected exit 1 naming the step:\n{run}"));
        }
        self.check_leftovers(fault)?;
        if rerun_first {
            let again = h.setup(FLAGS);
            if again.code != 0 {
                return Err(format!("{fault}: re-run of setup failed:\n{again}"));
            }
            let now = h.snapshot().comparable();
            if now != self.clean {
                return Err(format!(
                    "{fault}: re-run differs from a clean setup (- clean, + re-run):\n{}\nclean record:\n{}\nre-run record:\n{}",
                    self.clean.diff(&now),
                    self.clean_record,
                    std::fs::read_to_string(h.state_file("sandbox")).unwrap_or_default()
                ));
            }
        }
        let d = h.disable();
        if d.code != 0 {
            return Err(format!("{fault}: --disable failed:\n{d}"));
        }
        let after = h.snapshot();
        if self.before.without_kept() != after.without_kept() {
            return Err(format!(
                "{fault}: --disable{} left the host changed (- before, + after):\n{}",
                if rerun_first { " after the re-run" } else { "" },
                self.before.without_kept().diff(&after.without_kept())
            ));
        }
        Ok(true)
    }

    fn check_leftovers(&self, fault: &str) -> Result<(), String> {
        let tmp = temp_files(self.host.root());
        if !tmp.is_empty() {
            return Err(format!("{fault}: temp files left: {tmp:?}"));
        }
        let path = self.host.state_file("sandbox");
        if let Ok(bytes) = std::fs::read(&path) {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| format!("{fault}: state record is not valid JSON ({e})"))?;
        }
        Ok(())
    }
}

/// Every step under `mode`, both ways (--disable straight away; re-run,
/// then --disable). For the `*-at-put` modes, every write-ahead record of
/// the step in turn, until the step has no more.
fn matrix(mode: &str) {
    let Some(bench) = Bench::new() else { return };
    let at_put = mode.ends_with("-at-put");
    let mut failures = Vec::new();
    let mut tried = 0;
    let mut rows = Vec::new();
    for id in step_ids() {
        let mut fired_points = 0;
        for n in 1..=if at_put { 8 } else { 1 } {
            let fault = if at_put {
                format!("{mode}:{id}:{n}")
            } else {
                format!("{mode}:{id}")
            };
            let mut fired = false;
            for rerun_first in [false, true] {
                tried += 1;
                match bench.case(&fault, rerun_first) {
                    Ok(false) => break,
                    Ok(true) => fired = true,
                    Err(e) => {
                        fired = true;
                        failures.push(e);
                        // Start the next case from a clean host if we can.
                        let _ = bench.host.disable();
                    }
                }
            }
            if !fired {
                break;
            }
            fired_points += 1;
        }
        rows.push(format!("  {id:<14} {fired_points} point(s)"));
    }
    eprintln!(
        "fault matrix {mode}: {tried} runs, {} failure(s)\n{}",
        failures.len(),
        rows.join("\n")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn abort_after_each_step() {
    matrix("abort-after");
}

#[test]
fn fail_at_the_start_of_each_step() {
    matrix("fail");
}

#[test]
fn abort_at_each_write_ahead_record() {
    matrix("abort-at-put");
}

#[test]
fn fail_at_each_write_ahead_record() {
    matrix("fail-at-put");
}

/// `--disable` killed after each revert, then `--disable` again: the host
/// is restored.
#[test]
fn abort_after_each_revert() {
    let Some(bench) = Bench::new() else { return };
    let h = &bench.host;
    let mut failures = Vec::new();
    for id in step_ids() {
        h.setup_ok(FLAGS);
        let fault = format!("abort-after-revert:{id}");
        let run = h.disable_env(&[("SANDBOX_FAULT", &fault)], &[]);
        let fired = run.stderr.contains("fault injected");
        if fired && run.code != -1 {
            failures.push(format!("{fault}: expected death by signal:\n{run}"));
        }
        if let Err(e) = bench.check_leftovers(&fault) {
            failures.push(e);
        }
        if fired {
            let d = h.disable();
            if d.code != 0 {
                failures.push(format!("{fault}: second --disable failed:\n{d}"));
            }
        }
        let after = h.snapshot();
        if bench.before.without_kept() != after.without_kept() {
            failures.push(format!(
                "{fault}: host changed (- before, + after):\n{}",
                bench.before.without_kept().diff(&after.without_kept())
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
