//! Root integration tests for the air-gapped delivery (issue 14):
//! `sandbox doctor` in a throwaway host, and proof that no command phones
//! home: every socket `setup`, `status`, `plan`, `doctor` and `--disable`
//! open (the `nft` they run included) is netlink, unix, or TCP to the
//! sandbox's own host and sandbox IPs, and nothing looks up a name.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

fn program(root: &Path, path: &str, body: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write program");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn line<'a>(run: &'a Run, check: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(&format!("{check} "))))
        .unwrap_or_else(|| panic!("no `{check}` line:\n{run}"))
}

#[test]
fn doctor_reports_what_a_setup_would_miss_each_with_its_fix() {
    let Some(host) = FakeHost::new() else { return };
    let root = host.root_str();
    // No nft on PATH, no OpenClaw, no DefenseClaw gateway.
    let run = host.sandbox_with(
        &[],
        &[("PATH", "/nonexistent")],
        &["doctor", "--root", root, "--no-systemd"],
    );
    assert_eq!(run.code, 3, "{run}");
    for check in ["nft", "openclaw", "defenseclaw"] {
        let l = line(&run, check);
        assert!(l.starts_with("FAIL  "), "{l}");
        assert!(l.contains("; fix: "), "{l}");
    }
    assert!(line(&run, "nft").contains("apt-get install nftables"), "{run}");
    assert!(line(&run, "sandbox").contains(env!("CARGO_PKG_VERSION")), "{run}");
    assert!(run.stderr.contains(" check(s) a setup needs failed"), "{run}");

    // Everything present: the programs answer --version, and after setup
    // the record is read (never written: the audit log keeps its size).
    program(host.root(), "/usr/local/bin/openclaw", "echo 'OpenClaw 2026.9.6'");
    program(
        host.root(),
        "/usr/local/bin/defenseclaw-gateway",
        "echo 'defenseclaw-gateway 0.4.1'",
    );
    host.setup_ok(&["--policy", "strict", "--dns", DNS_A]);
    let audit = host.root().join("var/log/sandbox/audit.log");
    let before = std::fs::metadata(&audit).expect("audit log").len();
    let run = host.sandbox(&["doctor", "--root", root, "--no-systemd"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(line(&run, "openclaw").contains("OpenClaw 2026.9.6"), "{run}");
    assert!(line(&run, "defenseclaw").contains("defenseclaw-gateway 0.4.1"), "{run}");
    assert!(
        line(&run, "nft").starts_with("ok    nft              nftables v"),
        "{run}"
    );
    assert!(line(&run, "state").contains("sandbox ("), "{run}");
    assert!(line(&run, "audit").starts_with("ok"), "{run}");
    assert_eq!(
        std::fs::metadata(&audit).expect("audit log").len(),
        before,
        "doctor wrote to the audit log"
    );
    assert!(run.stdout.lines().all(|l| l.starts_with("ok    ")), "{run}");
    host.disable_ok();
}

/// One syscall strace saw, as text: `socket(AF_INET, ...)`.
fn calls<'a>(trace: &'a str, name: &str) -> Vec<&'a str> {
    trace
        .lines()
        .filter_map(|l| l.find(&format!("{name}(")).map(|i| &l[i..]))
        .collect()
}

#[test]
fn no_command_phones_home() {
    let Some(host) = FakeHost::new() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = host.root_str().to_string();
    let flags = ["--root", &root, "--policy", "strict", "--dns", DNS_A, "--no-systemd"];
    let commands: Vec<(&str, Vec<&str>)> = vec![
        ("plan", [&["plan"][..], &flags].concat()),
        ("setup", [&["setup", "--non-interactive"][..], &flags].concat()),
        ("status", vec!["status", "--root", &root, "--no-systemd"]),
        ("doctor", vec!["doctor", "--root", &root, "--no-systemd"]),
        (
            "disable",
            vec!["setup", "--disable", "--non-interactive", "--root", &root],
        ),
    ];
    let allowed = [HOST_IP.to_string(), SANDBOX_IP.to_string()];
    let mut netlink = 0;
    for (what, args) in commands {
        let log = tmp.path().join(format!("{what}.strace"));
        let log_s = log.to_str().expect("utf-8");
        let prefix = [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=socket,connect,open,openat",
            "-o",
            log_s,
        ];
        let run = host.sandbox_with(&prefix, &[], &args);
        if what == "setup" || what == "disable" || what == "plan" {
            assert_eq!(run.code, 0, "{run}");
        }
        let trace = std::fs::read_to_string(&log).expect("strace output");
        let sockets = calls(&trace, "socket");
        assert!(
            !sockets.is_empty() || what == "plan",
            "{what}: strace saw no socket at all:\n{trace}"
        );
        netlink += sockets.iter().filter(|s| s.starts_with("socket(AF_NETLINK")).count();
        for s in &sockets {
            let ok = s.starts_with("socket(AF_NETLINK")
                || s.starts_with("socket(AF_UNIX")
                || s.starts_with("socket(AF_INET, SOCK_STREAM");
            assert!(ok, "{what}: a socket that is not netlink, unix or TCP/IPv4: {s}");
        }
        for c in calls(&trace, "connect") {
            if c.contains("sa_family=AF_UNIX") || c.contains("sa_family=AF_NETLINK") {
                continue;
            }
            assert!(
                c.contains("sa_family=AF_INET,"),
                "{what}: connect that is not IPv4 TCP: {c}"
            );
            assert!(!c.contains("htons(53)"), "{what}: a DNS query: {c}");
            assert!(
                allowed.iter().any(|ip| c.contains(&format!("inet_addr(\"{ip}\")"))),
                "{what}: connect to an address other than the sandbox's own host and sandbox IPs: {c}"
            );
        }
        for o in calls(&trace, "open").into_iter().chain(calls(&trace, "openat")) {
            for file in ["\"/etc/resolv.conf\"", "\"/etc/gai.conf\"", "\"/etc/hosts\""] {
                assert!(!o.contains(file), "{what}: a name lookup read the host's {file}: {o}");
            }
        }
    }
    assert!(
        netlink > 0,
        "strace saw no netlink socket: it did not trace the commands"
    );
}
