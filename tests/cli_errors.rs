//! Root integration tests: what the real binary says and does when it must
//! refuse. Every refusal exits with the documented code (2 bad input, 3 host
//! not fit, 4 locked), names the problem and its fix on stderr, and leaves
//! the fake host exactly as it was.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;

use common::*;

/// `sandbox setup --root <root> --non-interactive --no-systemd <flags>`, with
/// `--policy default --dns 203.0.113.53` unless the flags set them.
fn setup_args<'a>(host: &'a FakeHost, flags: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["setup", "--root", host.root_str(), "--non-interactive", "--no-systemd"];
    if !flags.contains(&"--policy") {
        args.extend(["--policy", "default"]);
    }
    if !flags.contains(&"--dns") {
        args.extend(["--dns", DNS_A]);
    }
    args.extend_from_slice(flags);
    args
}

/// The run exited with `code`, said every needle and a fix on stderr, and
/// the fake host still matches `before`.
#[track_caller]
fn assert_refused(host: &FakeHost, before: &Snapshot, run: &Run, code: i32, needles: &[&str]) {
    assert_eq!(run.code, code, "wrong exit code:\n{run}");
    for n in needles {
        assert!(run.stderr.contains(n), "stderr does not say {n:?}:\n{run}");
    }
    assert!(run.stderr.contains("fix:"), "no fix on stderr:\n{run}");
    before.assert_same(&host.snapshot(), &format!("after `{}`", run.argv.join(" ")));
}

#[test]
fn bad_flags_exit_2_and_change_nothing() {
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--sandbox-ip", "10.200.0.300"],
            &["--sandbox-ip", "10.200.0.300", "not an IPv4 address"],
        ),
        (&["--host-ip", "fe80::1"], &["--host-ip", "IPv6"]),
        (&["--host-ip", "127.0.0.1", "--sandbox-ip", "127.0.0.2"], &["loopback"]),
        (
            &["--host-ip", "169.254.0.1", "--sandbox-ip", "169.254.0.2"],
            &["link-local"],
        ),
        (&["--host-ip", "224.0.0.1"], &["224.0.0.1", "multicast"]),
        (
            &["--host-ip", "10.200.0.2", "--sandbox-ip", "10.200.0.2"],
            &["10.200.0.2", "different addresses"],
        ),
        (
            &["--host-ip", "10.200.1.1", "--sandbox-ip", "10.200.0.2"],
            &["10.200.1.1", "one subnet"],
        ),
        (
            &["--host-ip", "10.200.0.0", "--sandbox-ip", "10.200.0.2"],
            &["10.200.0.0", "one subnet"],
        ),
        (
            &["--host-ip", "10.200.0.1"],
            &["--sandbox-ip auto", "one address given", "--subnet"],
        ),
        (
            &["--subnet", "10.200.0.0/16"],
            &["--subnet 10.200.0.0/16", "/24 to /30"],
        ),
        (&["--openclaw-port", "0"], &["--openclaw-port", "not a port"]),
        (&["--openclaw-port", "65536"], &["65536", "not a port"]),
        (&["--openclaw-port", "http"], &["http", "not a port"]),
        (&["--dns", "203.0.113.53,,203.0.113.54"], &["--dns", "not an IP"]),
        (&["--dns", "dns.example"], &["dns.example", "not an IP"]),
        (&["--dns", "2001:db8::53"], &["2001:db8::53", "IPv6"]),
        (&["--dns", "127.0.0.53"], &["127.0.0.53", "cannot be reached"]),
        (&["--dns", "203.0.113.53,203.0.113.53"], &["listed twice"]),
        // The fake host's resolv.conf names only a loopback stub.
        (&["--dns", "host"], &["--dns host", "no non-loopback"]),
        (&["--name", "averyveryverylongname"], &["--name", "15-character"]),
        (&["--name", "Bad.Name"], &["Bad.Name", "not a valid"]),
        (&["--policy", "paranoid"], &["paranoid", "unknown preset"]),
        (
            &["--policy", "/nonexistent/policy.toml"],
            &["/nonexistent/policy.toml", "cannot read"],
        ),
    ];
    for (flags, needles) in cases {
        let run = host.sandbox(&setup_args(&host, flags));
        assert_refused(&host, &before, &run, 2, needles);
    }
}

#[test]
fn malformed_policy_file_names_the_line_and_changes_nothing() {
    let Some(host) = FakeHost::new() else { return };
    let dir = tempfile::tempdir().expect("tempdir for policy files");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bad_port = dir.path().join("bad-port.toml");
    std::fs::write(
        &bad_port,
        "description = \"mirror\"\n\n[dns]\nallow = true\n\n[[destination]]\nto = \"203.0.113.0/24\"\nprotocol = \"tcp\"\nports = [70000]\nwhy = \"mirror\"\n",
    )
    .expect("write policy");
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "description = \"x\"\nbogus = 1\n").expect("write policy");
    let before = host.snapshot();

    let p = bad_port.to_str().expect("utf8");
    let run = host.sandbox(&setup_args(&host, &["--policy", p]));
    assert_refused(&host, &before, &run, 2, &[p, "line 9", "70000"]);

    let p = unknown.to_str().expect("utf8");
    let run = host.sandbox(&setup_args(&host, &["--policy", p]));
    assert_refused(&host, &before, &run, 2, &[p, "line 2", "bogus"]);
}

#[test]
fn subnet_overlapping_a_host_address_exits_3() {
    let Some(host) = FakeHost::new() else { return };
    host.ip(
        Ns::Host,
        &["link", "add", "lan0", "type", "veth", "peer", "name", "lan1"],
    );
    host.ip(Ns::Host, &["addr", "add", "10.200.0.5/24", "dev", "lan0"]);
    host.ip(Ns::Host, &["link", "set", "lan0", "up"]);
    let before = host.snapshot();
    let fixed = ["--host-ip", "10.200.0.1", "--sandbox-ip", "10.200.0.2"];
    let run = host.sandbox(&setup_args(&host, &fixed));
    assert_refused(
        &host,
        &before,
        &run,
        3,
        &["overlaps", "10.200.0.5/24", "lan0", "--subnet auto"],
    );
    // Left to choose, sandbox steps around the host's network.
    let run = host.sandbox(&setup_args(&host, &["--dry-run"]));
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout.contains("10.200.1.1"),
        "the first /30 past 10.200.0.0/24:\n{run}"
    );
}

#[test]
fn subnet_overlapping_a_route_exits_3() {
    let Some(host) = FakeHost::new() else { return };
    host.ip(Ns::Host, &["route", "add", "10.200.0.0/16", "via", "198.51.100.2"]);
    let before = host.snapshot();
    let fixed = ["--host-ip", "10.200.0.1", "--sandbox-ip", "10.200.0.2"];
    let run = host.sandbox(&setup_args(&host, &fixed));
    assert_refused(&host, &before, &run, 3, &["overlaps route 10.200.0.0/16"]);
    // The whole pool is the host's: said so, with the fix.
    let run = host.sandbox(&setup_args(&host, &[]));
    assert_refused(&host, &before, &run, 3, &["pool 10.200.0.0/16", "--subnet-pool"]);

    // Another pair of addresses is fine on the same host.
    host.setup_ok(&[
        "--policy",
        "strict",
        "--dns",
        DNS_A,
        "--host-ip",
        "10.231.0.1",
        "--sandbox-ip",
        "10.231.0.2",
    ]);
    host.disable_ok();
    before.assert_restored(&host.snapshot(), "setup on a free range, then --disable");
}

#[test]
fn a_foreign_interface_with_our_name_exits_3_before_any_change() {
    let Some(host) = FakeHost::new() else { return };
    // Someone else's link, named like ours and without our alias.
    host.ip(
        Ns::Host,
        &["link", "add", HOST_IF, "type", "veth", "peer", "name", "other1"],
    );
    let before = host.snapshot();
    let run = host.sandbox(&setup_args(&host, &[]));
    assert_refused(&host, &before, &run, 3, &[HOST_IF, "not ours"]);
}

#[test]
fn not_root_exits_3() {
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    let run = host.sandbox_with(&nobody, &[], &setup_args(&host, &[]));
    assert_refused(&host, &before, &run, 3, &["not root", "sudo"]);
}

/// Once a sandbox exists, its state record is root's alone (0700 dirs):
/// forgetting sudo must still be told "not root", not fail reading it.
#[test]
fn not_root_exits_3_when_a_sandbox_exists() {
    let Some(host) = FakeHost::new() else { return };
    host.setup_ok(&["--policy", "strict", "--dns", DNS_A]);
    let installed = host.snapshot();
    let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];

    let run = host.sandbox_with(&nobody, &[], &setup_args(&host, &["--policy", "strict"]));
    assert_refused(&host, &installed, &run, 3, &["not root", "sudo"]);

    let disable = ["setup", "--root", host.root_str(), "--disable", "--non-interactive"];
    let run = host.sandbox_with(&nobody, &[], &disable);
    assert_refused(&host, &installed, &run, 3, &["not root", "sudo"]);

    // Every command that needs root says so, with the command to re-run
    // (a plan used to exit 0 with a plan made blind, and `log` to fail
    // reading its file).
    let root = host.root_str();
    let commands: &[(&[&str], &str)] = &[
        (&["status", "--root", root], "sudo sandbox status"),
        (&["log", "--root", root], "sudo sandbox log"),
        (&["plan", "--root", root, "--policy", "strict"], "sudo sandbox plan"),
        (&["setup", "--root", root, "--dry-run"], "sudo sandbox plan"),
        (
            &["setup", "--root", root, "--disable", "--dry-run"],
            "sudo sandbox setup --disable",
        ),
        (&["setup", "--root", root, "--boot"], "sudo sandbox setup --boot"),
    ];
    for (args, says) in commands {
        let run = host.sandbox_with(&nobody, &[], args);
        assert_refused(&host, &installed, &run, 3, &["not root", "run it with sudo", says]);
        assert!(
            !run.stderr.contains("preflight found"),
            "one problem, said as it is:\n{run}"
        );
    }
}

/// A warning (a program the units need is missing) is said once, with
/// one "warning:", on standard error; it is not a change.
#[test]
fn each_warning_is_said_once() {
    let Some(host) = FakeHost::new() else { return };
    let missing = "/opt/nowhere/openclaw";
    let run = host.setup_ok(&["--policy", "strict", "--dns", DNS_A, "--agent-bin", missing]);
    assert!(!run.stderr.contains("warning: warning:"), "{run}");
    let said = format!("warning: the agent program {missing} is missing");
    assert_eq!(run.stderr.matches(&said).count(), 1, "{run}");
    assert!(
        !run.stdout.contains(missing),
        "not a progress line (nor an audit entry):\n{run}"
    );
    let args = [
        "plan",
        "--root",
        host.root_str(),
        "--no-systemd",
        "--policy",
        "default",
        "--dns",
        DNS_A,
        "--agent-bin",
        missing,
    ];
    let plan = host.sandbox(&args);
    assert_eq!(plan.code, 0, "{plan}");
    assert_eq!(plan.stderr.matches(&said).count(), 1, "{plan}");
    assert!(!plan.stderr.contains("warning: warning:"), "{plan}");
}

#[test]
fn missing_cap_net_admin_exits_3() {
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    let drop_cap = ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"];
    let run = host.sandbox_with(&drop_cap, &[], &setup_args(&host, &[]));
    assert_refused(&host, &before, &run, 3, &["CAP_NET_ADMIN"]);
}

#[test]
fn missing_nft_exits_3_with_the_install_command() {
    let Some(host) = FakeHost::new() else { return };
    let empty = tempfile::tempdir().expect("an empty PATH directory");
    let path = empty.path().to_str().expect("utf8").to_string();
    let before = host.snapshot();
    let run = host.sandbox_with(&[], &[("PATH", &path)], &setup_args(&host, &[]));
    assert_refused(&host, &before, &run, 3, &["nft", "apt-get install nftables"]);
}

#[test]
fn stdin_not_a_terminal_without_non_interactive_exits_2() {
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    let run = host.sandbox(&[
        "setup",
        "--root",
        host.root_str(),
        "--no-systemd",
        "--policy",
        "default",
        "--dns",
        DNS_A,
    ]);
    assert_refused(&host, &before, &run, 2, &["--non-interactive", "not a terminal"]);

    // The same holds for --disable of an existing sandbox.
    host.setup_ok(&["--policy", "default", "--dns", DNS_A]);
    let installed = host.snapshot();
    let run = host.sandbox(&["setup", "--root", host.root_str(), "--disable"]);
    assert_refused(&host, &installed, &run, 2, &["--non-interactive"]);
    host.disable_ok();
    before.assert_restored(&host.snapshot(), "--disable --non-interactive after the refusal");
}

#[test]
fn lock_held_by_another_process_exits_4() {
    let Some(host) = FakeHost::new() else { return };
    let state_dir = host.root().join("var/lib/sandbox/sandbox");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    let lock_path = state_dir.join("lock");
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .expect("open the lock file");
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .expect("take the lock");
    let before = host.snapshot();

    let run = host.sandbox(&setup_args(&host, &[]));
    assert_refused(&host, &before, &run, 4, &["another `sandbox` run holds", "lock"]);
    drop(lock);
}

#[test]
fn disable_while_locked_exits_4_and_keeps_the_sandbox() {
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    host.setup_ok(&["--policy", "default", "--dns", DNS_A]);
    let installed = host.snapshot();
    let lock_file = OpenOptions::new()
        .write(true)
        .open(host.root().join("var/lib/sandbox/sandbox/lock"))
        .expect("open the lock file setup left");
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .expect("take the lock");

    let run = host.disable();
    assert_refused(&host, &installed, &run, 4, &["another `sandbox` run holds"]);
    drop(lock);
    host.disable_ok();
    before.assert_restored(&host.snapshot(), "--disable once the lock was free");
}

/// The rest of the bad-input matrix: more flags, policy files, file
/// contents and host states. With `bad_flags_exit_2_and_change_nothing` and
/// the tests above it covers more than 30 distinct bad inputs, each with its
/// documented exit code (README, "Exit codes") and the host unchanged.
#[test]
fn more_bad_flags_and_policy_files_exit_2() {
    let Some(host) = FakeHost::new() else { return };
    let dir = tempfile::tempdir().expect("tempdir for policy files");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let policy = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write policy");
        p.to_str().expect("utf8").to_string()
    };
    let v6 = policy(
        "v6.toml",
        "description = \"x\"\n[[destination]]\nto = \"2001:db8::/32\"\nprotocol = \"tcp\"\nports = [443]\nwhy = \"v6\"\n",
    );
    let same_ports = policy("same.toml", "description = \"x\"\n[sidecar]\ngateway_port = 4000\n");
    let no_ports = policy(
        "noports.toml",
        "description = \"x\"\n[[destination]]\nto = \"public\"\nprotocol = \"tcp\"\nports = []\nwhy = \"web\"\n",
    );
    let garbage = policy("garbage.toml", "\u{1}\u{2} this is { not toml\n");
    let host_bits = policy(
        "hostbits.toml",
        "description = \"x\"\n[[destination]]\nto = \"10.1.2.3/8\"\nprotocol = \"tcp\"\nports = [1]\nwhy = \"y\"\n",
    );
    let a_dir = dir.path().to_str().expect("utf8").to_string() + "/";
    let file_root = dir.path().join("not-a-dir");
    std::fs::write(&file_root, "").expect("write");
    let file_root = file_root.to_str().expect("utf8").to_string();
    let before = host.snapshot();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--sandbox-home", "home/sandbox"],
            vec!["--sandbox-home", "absolute"],
        ),
        (
            vec!["--sandbox-home", "/"],
            vec!["--sandbox-home", "absolute path below"],
        ),
        (vec!["--sandbox-home", "/home/../etc"], vec!["--sandbox-home", ".."]),
        (vec!["--name", "9lives"], vec!["9lives", "not a valid"]),
        (vec!["--dns", ""], vec!["--dns", "not an IP"]),
        (vec!["--policy", ""], vec!["unknown preset"]),
        (vec!["--policy", &v6], vec![&v6, "IPv6"]),
        (vec!["--policy", &same_ports], vec![&same_ports, "both 4000"]),
        (vec!["--policy", &no_ports], vec![&no_ports, "ports is empty"]),
        (vec!["--policy", &garbage], vec![&garbage, "line 1"]),
        (vec!["--policy", &host_bits], vec![&host_bits, "host bits"]),
        (vec!["--policy", &a_dir], vec!["cannot read the policy file"]),
    ];
    for (flags, needles) in &cases {
        let run = host.sandbox(&setup_args(&host, flags));
        assert_refused(&host, &before, &run, 2, needles);
    }
    // --root is taken before the other flags: a plain file is refused too.
    let run = host.sandbox(&["setup", "--root", &file_root, "--non-interactive", "--dns", DNS_A]);
    assert_refused(&host, &before, &run, 2, &["--root", "not an existing directory"]);

    // Usage errors come from the argument parser: exit 2 and a pointer to --help.
    for argv in [
        vec!["setup", "--root", host.root_str(), "--polcy", "strict"],
        vec!["setup", "--root", host.root_str(), "--purge"],
        vec!["setup", "--root", host.root_str(), "--openclaw-port"],
    ] {
        let run = host.sandbox(&argv);
        assert_eq!(run.code, 2, "usage error must exit 2:\n{run}");
        assert!(run.stderr.contains("--help"), "no pointer to --help:\n{run}");
        before.assert_same(&host.snapshot(), &format!("after `{}`", argv.join(" ")));
    }
}

#[test]
fn bad_file_contents_on_the_host_exit_3_or_5_and_change_nothing() {
    let Some(host) = FakeHost::new() else { return };
    let json = host.root().join("home/sandbox/.openclaw/openclaw.json");
    let original = std::fs::read(&json).expect("seeded openclaw.json");
    let cases: &[(&[u8], &[&str])] = &[
        (b"{\"gateway\": {},\n  oops\n}\n", &["malformed JSON5", "line 3"]),
        (b"[1]\n", &["is not a JSON object", "openclaw setup --baseline"]),
        (b"", &["malformed JSON"]),
    ];
    for (body, needles) in cases {
        std::fs::write(&json, body).expect("write openclaw.json");
        let before = host.snapshot();
        let run = host.sandbox(&setup_args(&host, &[]));
        assert_refused(&host, &before, &run, 3, needles);
    }
    // A link planted where openclaw.json should be.
    std::fs::remove_file(&json).expect("rm");
    std::os::unix::fs::symlink(host.root().join("etc/passwd"), &json).expect("symlink");
    let before = host.snapshot();
    let run = host.sandbox(&setup_args(&host, &[]));
    assert_refused(&host, &before, &run, 3, &["symbolic link"]);
    std::fs::remove_file(&json).expect("rm link");
    std::fs::write(&json, &original).expect("restore");

    // A corrupt state record: exit 5, for setup and --disable alike.
    let state_dir = host.root().join("var/lib/sandbox/sandbox");
    std::fs::create_dir_all(&state_dir).expect("mkdir");
    std::fs::write(state_dir.join("state.json"), "{\"version\": 1, \"steps\": [tru").expect("write");
    let before = host.snapshot();
    let run = host.sandbox(&setup_args(&host, &[]));
    assert_refused(&host, &before, &run, 5, &["state.json", "unreadable"]);
    let run = host.sandbox(&["setup", "--root", host.root_str(), "--disable", "--non-interactive"]);
    assert_refused(&host, &before, &run, 5, &["state.json", "unreadable"]);
}

#[test]
fn a_foreign_namespace_with_our_name_exits_3() {
    let Some(host) = FakeHost::new() else { return };
    let ns = host.sandbox_netns();
    std::fs::create_dir_all(ns.parent().expect("parent")).expect("mkdir");
    std::fs::write(&ns, "").expect("touch");
    let path = ns.to_str().expect("utf8").to_string();
    host.must(Ns::Host, &["unshare", &format!("--net={path}"), "true"]);
    let before = host.snapshot();
    let run = host.sandbox(&setup_args(&host, &[]));
    assert_refused(
        &host,
        &before,
        &run,
        3,
        &["network namespace sandbox0", "no state record"],
    );
    host.must(Ns::Host, &["umount", &path]);
}

/// `sandbox plan | head`: a reader that goes away is not a crash (it was
/// a panic, exit 101), for every command that prints. Each command exits
/// as it would have with the whole output read; `head -c0` leaves before
/// the first line, `head -n1` after it.
#[test]
fn a_reader_that_goes_away_is_not_a_crash() {
    let Some(host) = FakeHost::new() else { return };
    host.setup_ok(&["--policy", "strict", "--dns", DNS_A]);
    let root = host.root_str();
    let commands: &[&[&str]] = &[
        &[
            "plan",
            "--root",
            root,
            "--no-systemd",
            "--policy",
            "default",
            "--dns",
            DNS_A,
        ],
        &[
            "plan",
            "--root",
            root,
            "--no-systemd",
            "--policy",
            "strict",
            "--format",
            "markdown",
        ],
        &["setup", "--root", root, "--disable", "--dry-run"],
        &["status", "--root", root, "--no-systemd"],
        &["status", "--root", root, "--no-systemd", "--json"],
        &["log", "--root", root],
        &["man"],
        &["completions", "bash"],
    ];
    for reader in ["head -n1", "head -c0"] {
        let pipe = format!("set -o pipefail; \"$0\" \"$@\" | {reader}");
        for args in commands {
            let whole = host.sandbox(args);
            let run = host.sandbox_with(&["bash", "-c", &pipe], &[], args);
            assert!(
                !run.stderr.contains("panicked") && !run.stderr.contains("Broken pipe"),
                "| {reader}:\n{run}"
            );
            assert_ne!(run.code, 101, "| {reader}:\n{run}");
            assert_eq!(
                run.code, whole.code,
                "| {reader}: not the exit code of a whole read\n{run}\n{whole}"
            );
        }
    }
    // A setup whose reader left still finishes: stopping halfway would
    // leave the host half-changed.
    let args = [
        "setup",
        "--root",
        root,
        "--no-systemd",
        "--non-interactive",
        "--policy",
        "default",
        "--dns",
        DNS_A,
    ];
    let run = host.sandbox_with(&["bash", "-c", "set -o pipefail; \"$0\" \"$@\" | head -c0"], &[], &args);
    assert_eq!(run.code, 0, "{run}");
    let again = host.setup_ok(&["--policy", "default", "--dns", DNS_A]);
    assert!(
        again.stdout.contains("nothing changed"),
        "the piped setup converged:\n{again}"
    );
}
