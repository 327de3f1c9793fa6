//! A full disk and a read-only /etc: setup fails with a clear error (the
//! object, the cause, the fix), leaves no partially written file anywhere,
//! and `--disable` afterwards restores the host. The filesystems are a
//! small tmpfs and a read-only bind mount under `--root`, inside the fake
//! host's mount namespace.

mod common;

use common::*;

const FLAGS: &[&str] = &["--policy", DNS_ONLY, "--dns", DNS_A];

#[track_caller]
fn assert_clean_failure(host: &FakeHost, run: &Run, cause: &str, fix: &str) {
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains(cause), "cause {cause:?} not named:\n{run}");
    assert!(run.stderr.contains(fix), "fix {fix:?} not named:\n{run}");
    assert!(
        temp_files(host.root()).is_empty(),
        "temp files left: {:?}",
        temp_files(host.root())
    );
    if let Ok(bytes) = std::fs::read(host.state_file("sandbox")) {
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("the record is valid JSON");
    }
    // Every DNS file there is whole: our header, and the resolver line.
    let dir = host.root().join("etc/netns/sandbox0");
    for f in ["resolv.conf", "nsswitch.conf"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(f)) {
            assert!(
                text.starts_with("# Written by `sandbox setup") && text.ends_with('\n'),
                "{f}: {text:?}"
            );
            if f == "resolv.conf" {
                assert!(text.contains("nameserver 203.0.113.53\n"), "{f} truncated: {text:?}");
            }
        }
    }
}

/// A 64 KiB tmpfs at `rel`, filled to the last block.
fn full_tmpfs(host: &FakeHost, rel: &str) {
    let dir = host.root().join(rel);
    let d = dir.display();
    host.sh_ok(&format!(
        "mkdir -p {d} && mount -t tmpfs -o size=64k,mode=0755 sandbox-test-full {d} && \
         (dd if=/dev/zero of={d}/.filler bs=4k 2>/dev/null || true)"
    ));
}

#[test]
fn a_full_etc_netns_fails_cleanly() {
    let Some(host) = FakeHost::new() else { return };
    full_tmpfs(&host, "etc/netns");
    let before = host.snapshot();
    let run = host.setup(FLAGS);
    assert_clean_failure(&host, &run, "No space left on device", "fix: free space");
    assert!(run.stderr.contains("step dns"), "{run}");
    host.disable_ok();
    before.assert_restored(&host.snapshot(), "--disable after setup hit a full /etc/netns");
}

#[test]
fn a_full_state_directory_fails_before_any_change() {
    let Some(host) = FakeHost::new() else { return };
    full_tmpfs(&host, "var/lib/sandbox");
    let before = host.snapshot();
    let run = host.setup(FLAGS);
    assert_clean_failure(&host, &run, "No space left on device", "fix: free space");
    // Nothing of the network was made: the record could not be written ahead.
    let now = host.snapshot();
    for s in ["links", "nft", "sysctl", "mounts"] {
        assert_eq!(before.section(s), now.section(s), "section {s}");
    }
    host.disable_ok();
    before.assert_restored(&host.snapshot(), "--disable after setup hit a full state directory");
}

#[test]
fn a_read_only_etc_fails_cleanly() {
    let Some(host) = FakeHost::new() else { return };
    let etc = host.root().join("etc");
    let e = etc.display();
    host.sh_ok(&format!("mount --bind {e} {e} && mount -o remount,bind,ro {e}"));
    let before = host.snapshot();
    let run = host.setup(FLAGS);
    assert_clean_failure(&host, &run, "Read-only file system", "fix: remount");
    host.disable_ok();
    before.assert_restored(&host.snapshot(), "--disable after setup met a read-only /etc");
    // Writable again, setup completes and --disable restores.
    host.sh_ok(&format!("umount {e}"));
    let before = host.snapshot();
    host.setup_ok(FLAGS);
    host.disable_ok();
    before.assert_restored(&host.snapshot(), "setup and --disable once /etc is writable");
}

/// The calls that make writes durable, and the ones that write a file's
/// name, made by one `sandbox` run (strace, in the fake host).
fn durable_calls(host: &FakeHost, args: &[&str]) -> (Run, usize, usize) {
    let log = std::env::temp_dir().join(format!("sandbox-disk-strace-{}-{}", std::process::id(), args.len()));
    let log_s = log.to_str().expect("utf8").to_string();
    let trace = "trace=fsync,fdatasync,syncfs,sync,sync_file_range,rename,renameat,renameat2,linkat";
    let run = host.sandbox_with(&["strace", "-f", "-o", &log_s, "-e", trace], &[], args);
    let text =
        std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("strace log {log_s}: {e} (is strace installed?)"));
    let _ = std::fs::remove_file(&log);
    let calls = |names: &[&str]| {
        text.lines()
            .filter(|l| {
                names.iter().any(|n| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|c| c.starts_with(&format!("{n}(")))
                })
            })
            .filter(|l| !l.contains("= -1"))
            .count()
    };
    let syncs = calls(&["fsync", "fdatasync", "syncfs", "sync", "sync_file_range"]);
    let names = calls(&["rename", "renameat", "renameat2", "linkat"]);
    (run, syncs, names)
}

/// Issue 12: a full setup makes its changes durable with a handful of sync
/// calls (it made 112), and a re-run that has nothing to change writes
/// nothing but its own start and outcome records (issue 16): no record
/// rewrite, no line per step, no rename, no sync.
#[test]
fn a_setup_syncs_a_few_times_and_a_rerun_with_nothing_to_do_writes_nothing() {
    let Some(host) = FakeHost::new() else { return };
    let mut args = vec!["setup", "--root", host.root_str(), "--non-interactive", "--no-systemd"];
    args.extend_from_slice(FLAGS);
    let (run, syncs, _) = durable_calls(&host, &args);
    assert_eq!(run.code, 0, "{run}");
    assert!((1..=8).contains(&syncs), "a full setup made {syncs} sync calls:\n{run}");

    let record = host.state_file("sandbox");
    let audit = host.root().join("var/log/sandbox/audit.log");
    let before = (
        std::fs::read(&record).expect("record"),
        std::fs::read(&audit).expect("audit log"),
    );
    let (run, syncs, names) = durable_calls(&host, &args);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("nothing changed"), "{run}");
    assert_eq!(
        (syncs, names),
        (0, 0),
        "a re-run with nothing to do wrote or synced:\n{run}"
    );
    assert!(
        std::fs::read(&record).expect("record") == before.0,
        "the record was rewritten"
    );
    // The audit log gains only the run's own start and outcome (issue 16:
    // every run that reaches the host leaves both), not a line per step.
    let after = std::fs::read(&audit).expect("audit log");
    assert!(after.starts_with(&before.1), "the audit log was rewritten");
    let added: Vec<serde_json::Value> = String::from_utf8_lossy(&after[before.1.len()..])
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit entry"))
        .collect();
    let kinds: Vec<(&str, &str)> = added
        .iter()
        .map(|e| {
            (
                e["record"].as_str().unwrap_or("change"),
                e["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(kinds, [("start", ""), ("outcome", "ok")], "{added:?}");

    let (run, syncs, _) = durable_calls(
        &host,
        &["setup", "--root", host.root_str(), "--disable", "--non-interactive"],
    );
    assert_eq!(run.code, 0, "{run}");
    assert!(syncs <= 4, "--disable made {syncs} sync calls:\n{run}");
}
