//! A full disk and a read-only /etc: setup fails with a clear error (the
//! object, the cause, the fix), leaves no partially written file anywhere,
//! and `--disable` afterwards restores the host. The filesystems are a
//! small tmpfs and a read-only bind mount under `--root`, inside the fake
//! host's mount namespace.

mod common;

use common::*;

const FLAGS: &[&str] = &["--policy", "default", "--dns", DNS_A];

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
