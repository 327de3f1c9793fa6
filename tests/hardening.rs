//! The agent, or whoever can write where root reads, against `--disable`,
//! validation and the state record (issue 15, items 6-8), in a fake host:
//!
//! - a home step whose revert fails does not keep the network in place:
//!   `--disable` exits 1 naming the failure, and the namespace, veth, host
//!   table, DNS files and `ip_forward` are gone anyway; a re-run finishes;
//! - a record altered to name `<root>/etc/passwd` never gets it removed;
//! - a FIFO as the policy file or as the record returns promptly;
//! - a world-writable state directory is refused and left as it was;
//! - flags and accounts that would hand the agent privileges are refused,
//!   and nothing changes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;

/// Flags under which every network step is wanted (forwarding included).
const FLAGS: &[&str] = &["--policy", DNS_ONLY, "--dns", DNS_A];

/// A command that waits on a FIFO is hung; one that refuses it is prompt.
const PROMPT_RUN: Duration = Duration::from_secs(10);

/// The network objects of the default sandbox, each `true` while present.
fn network_left(host: &FakeHost) -> Vec<String> {
    let mut left = Vec::new();
    if host.sandbox_netns().exists() {
        left.push(format!("namespace {}", host.sandbox_netns().display()));
    }
    if host
        .ip(Ns::Host, &["-o", "link", "show"])
        .contains(&format!(" {HOST_IF}"))
    {
        left.push(format!("link {HOST_IF}"));
    }
    if host.nft(Ns::Host, &["list", "tables"]).contains(HOST_TABLE) {
        left.push(format!("host table {HOST_TABLE}"));
    }
    for f in ["resolv.conf", "nsswitch.conf"] {
        let p = host.root().join("etc/netns/sandbox0").join(f);
        if p.exists() {
            left.push(p.display().to_string());
        }
    }
    left
}

fn timed(f: impl FnOnce() -> Run) -> Run {
    let started = Instant::now();
    let run = f();
    assert!(
        started.elapsed() < PROMPT_RUN,
        "took {:?}, more than {PROMPT_RUN:?}:\n{run}",
        started.elapsed()
    );
    run
}

#[test]
#[cfg(feature = "fault-injection")]
fn disable_takes_the_network_away_even_when_a_home_step_cannot_revert() {
    let Some(host) = FakeHost::new() else { return };
    let forward_before = host.sysctl(Ns::Host, "net/ipv4/ip_forward");
    let before = host.snapshot();
    host.setup_ok(FLAGS);
    assert_eq!(host.sysctl(Ns::Host, "net/ipv4/ip_forward"), "1");
    assert_eq!(network_left(&host).len(), 5, "the network is in place");

    // The agent swaps a directory setup made for a file: the home-access
    // layer keeps what it cannot vouch for and reports it, so sabotage
    // alone no longer fails a revert. A step that does fail (here by the
    // test build's fault hook) must not keep the network in place.
    let skill = host.root().join("home/sandbox/.openclaw/skills/codeguard");
    std::fs::remove_dir_all(&skill).expect("remove the skill directory");
    std::fs::write(&skill, "sabotage").expect("a file in its place");

    let run = host.disable_env(&[("SANDBOX_FAULT", "fail-revert:extras")], &[]);
    assert_eq!(run.code, 1, "one step failed:\n{run}");
    for needle in [
        "could not revert 1 step",
        "step extras (revert)",
        "fail-revert:extras",
        "--disable` again",
    ] {
        assert!(run.stderr.contains(needle), "stderr does not say {needle:?}:\n{run}");
    }
    assert!(
        run.stdout.contains("veth") && run.stdout.contains("netns"),
        "the others reverted:\n{run}"
    );
    assert_eq!(
        network_left(&host),
        Vec::<String>::new(),
        "nothing of the network is left:\n{run}"
    );
    assert_eq!(host.sysctl(Ns::Host, "net/ipv4/ip_forward"), forward_before);
    let record = std::fs::read_to_string(host.state_file("sandbox")).expect("the record is kept");
    let record: serde_json::Value = serde_json::from_str(&record).expect("valid JSON");
    let ids: Vec<&str> = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, ["extras"], "only the failed step stays recorded");

    // The operator removes the cause; a re-run finishes the rest.
    std::fs::remove_file(&skill).expect("remove the sabotage");
    let again = host.disable_ok();
    assert!(again.stdout.contains("extras"), "{again}");
    assert!(!host.state_file("sandbox").exists(), "record gone:\n{again}");
    before.assert_restored(&host.snapshot(), "--disable, sabotaged, then again");
}

#[test]
fn an_altered_record_cannot_make_disable_touch_etc_passwd() {
    let Some(host) = FakeHost::new() else { return };
    host.setup_ok(FLAGS);
    let passwd = host.root().join("etc/passwd");
    let original = std::fs::read(&passwd).expect("passwd");
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&original)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    // The dns step's record now says setup wrote <root>/etc/passwd with
    // exactly its content, over nothing: its undo would remove it.
    let file = host.state_file("sandbox");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("record")).expect("JSON");
    let dns = record["steps"]
        .as_array_mut()
        .expect("steps")
        .iter_mut()
        .find(|s| s["id"] == "dns")
        .expect("dns recorded");
    dns["data"]["files"][0]["path"] = passwd.display().to_string().into();
    dns["data"]["files"][0]["sha256"] = sha.into();
    dns["data"]["files"][0]["previous"] = serde_json::Value::Null;
    std::fs::write(&file, serde_json::to_vec_pretty(&record).expect("encode")).expect("tamper");

    let run = host.disable();
    assert_eq!(run.code, 1, "{run}");
    for needle in [
        "step dns (revert)",
        "etc/passwd (named in the state record)",
        "record was altered",
        "fix:",
    ] {
        assert!(run.stderr.contains(needle), "stderr does not say {needle:?}:\n{run}");
    }
    assert_eq!(std::fs::read(&passwd).expect("passwd is still there"), original);
    let left = network_left(&host);
    assert!(
        left.iter().all(|l| l.contains("etc/netns")),
        "only the refused step's files are left: {left:?}\n{run}"
    );
}

#[test]
fn a_fifo_as_policy_file_or_state_record_returns_promptly() {
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    let fifo = host.root().join("policy.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    let policy = fifo.display().to_string();
    let run = timed(|| host.setup(&["--policy", &policy, "--dns", DNS_A]));
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("is a FIFO") && run.stderr.contains("fix:"), "{run}");
    std::fs::remove_file(&fifo).expect("rm fifo");
    before.assert_same(&host.snapshot(), "a FIFO as the policy file");

    let dir = host.root().join("var/lib/sandbox/sandbox");
    std::fs::create_dir_all(&dir).expect("state dir");
    for d in [dir.parent().expect("parent"), dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    nix::unistd::mkfifo(
        &host.state_file("sandbox"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    let root = host.root_str().to_string();
    let runs = [
        timed(|| host.setup(FLAGS)),
        timed(|| host.disable()),
        timed(|| host.sandbox(&["status", "--root", &root, "--no-systemd"])),
    ];
    for run in runs {
        assert_eq!(run.code, 5, "{run}");
        assert!(
            run.stderr.contains("state.json") && run.stderr.contains("is a FIFO"),
            "{run}"
        );
    }
    assert!(!host.sandbox_netns().exists(), "nothing was built");
}

#[test]
fn a_state_directory_others_may_write_is_refused_and_left_alone() {
    let Some(host) = FakeHost::new() else { return };
    let top = host.root().join("var/lib/sandbox");
    std::fs::create_dir(&top).expect("mkdir");
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    let before = host.snapshot();
    for run in [host.setup(FLAGS), host.disable()] {
        assert_eq!(run.code, 3, "{run}");
        for needle in ["state directory", "writable by group or others", "chmod go-w"] {
            assert!(run.stderr.contains(needle), "stderr does not say {needle:?}:\n{run}");
        }
        before.assert_same(&host.snapshot(), &format!("after `{}`", run.argv.join(" ")));
    }
    let mode = std::fs::metadata(&top).expect("still there").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777, "refused, not silently tightened");
}

#[test]
fn flags_and_accounts_that_hand_over_privilege_are_refused() {
    let Some(host) = FakeHost::new() else { return };
    let r = host.root().display().to_string();
    // A person (uid 1000, a password) and a service account with a home.
    host.sh_ok(&format!(
        "echo 'alice:x:1000:1000:Alice:/home/alice:/bin/bash' >> {r}/etc/passwd
         echo 'alice:$y$j9T$salt$hash:19000::::::' >> {r}/etc/shadow
         echo 'svc:x:980:980::/srv/svc:/usr/sbin/nologin' >> {r}/etc/passwd
         mkdir -p {r}/home/alice {r}/srv/svc"
    ));
    let before = host.snapshot();
    let cases: &[(&[&str], i32, &[&str])] = &[
        (
            &["--name", "root", "--sandbox-home", "/root"],
            2,
            &["--name root", "would be root"],
        ),
        (
            &["--sandbox-home", "/etc"],
            2,
            &["--sandbox-home /etc", "system directory"],
        ),
        (
            &["--sandbox-home", "/tmp"],
            2,
            &["--sandbox-home /tmp", "system directory"],
        ),
        (
            &["--sidecar-user", "sandbox"],
            2,
            &["--sidecar-user sandbox", "is the sandbox user"],
        ),
        (
            &["--name", "alice", "--sandbox-home", "/srv/alice"],
            3,
            &["sandbox user alice", "uid 1000"],
        ),
        (
            &["--sandbox-home", "/home/alice"],
            3,
            &["--sandbox-home /home/alice", "home of account alice"],
        ),
        (&["--sandbox-home", "/srv/svc"], 3, &["home of account svc"]),
    ];
    for (flags, code, needles) in cases {
        let mut all = FLAGS.to_vec();
        all.extend_from_slice(flags);
        let run = host.setup(&all);
        assert_eq!(run.code, *code, "{flags:?}:\n{run}");
        for n in *needles {
            assert!(run.stderr.contains(n), "{flags:?}: stderr does not say {n:?}:\n{run}");
        }
        assert!(run.stderr.contains("fix:"), "{run}");
        before.assert_same(&host.snapshot(), &format!("after `{}`", run.argv.join(" ")));
    }
}
