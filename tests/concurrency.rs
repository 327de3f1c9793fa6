//! Two runs at once. On one name, one run proceeds and the other is told
//! another run holds the lock (exit 4), or finds the work done; the state
//! record is valid JSON afterwards and the result equals a clean setup.
//! Different names do not block each other.

mod common;

use common::*;

const FLAGS: &[&str] = &["--policy", "default", "--dns", DNS_A];

/// Both runs spawned from one thread of the fake host, so they start at
/// the same instant and race for the lock.
fn race(host: &FakeHost, a: Vec<String>, b: Vec<String>) -> [(i32, String); 2] {
    host.in_ns(Ns::Host, move || {
        let spawn = |args: &[String]| {
            std::process::Command::new(BIN)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn sandbox")
        };
        let (ca, cb) = (spawn(&a), spawn(&b));
        let out = |c: std::process::Child| {
            let o = c.wait_with_output().expect("wait");
            (
                o.status.code().unwrap_or(-1),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            )
        };
        [out(ca), out(cb)]
    })
}

fn args(host: &FakeHost, extra: &[&str]) -> Vec<String> {
    let mut v = vec!["setup", "--root", host.root_str(), "--non-interactive", "--no-systemd"];
    v.extend_from_slice(extra);
    v.into_iter().map(String::from).collect()
}

#[test]
fn two_setups_on_one_name_never_interleave() {
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    // The first setup makes the device key, which every later one reuses.
    host.setup_ok(FLAGS);
    host.disable_ok();
    host.setup_ok(FLAGS);
    let clean = host.snapshot().comparable();
    host.disable_ok();
    let mut locked = 0;
    for round in 0..5 {
        let [a, b] = race(&host, args(&host, FLAGS), args(&host, FLAGS));
        for (code, out) in [&a, &b] {
            assert!(
                *code == 0 || (*code == 4 && out.contains("another `sandbox` run holds")),
                "round {round}: exit {code}:\n{out}"
            );
        }
        assert!(
            a.0 == 0 || b.0 == 0,
            "round {round}: neither run proceeded:\n{}\n{}",
            a.1,
            b.1
        );
        locked += [&a, &b].iter().filter(|r| r.0 == 4).count();
        let record = std::fs::read(host.state_file("sandbox")).expect("record");
        serde_json::from_slice::<serde_json::Value>(&record).expect("the record is valid JSON");
        assert!(temp_files(host.root()).is_empty(), "temp files left");
        clean.assert_same(&host.snapshot().comparable(), &format!("round {round}: after the race"));
        // --disable racing a setup: whatever the order, one more --disable
        // leaves the host as it was.
        let dis: Vec<String> = ["setup", "--root", host.root_str(), "--disable", "--non-interactive"]
            .into_iter()
            .map(String::from)
            .collect();
        let [c, d] = race(&host, dis, args(&host, FLAGS));
        for (code, out) in [&c, &d] {
            assert!(
                *code == 0 || (*code == 4 && out.contains("another `sandbox` run holds")),
                "round {round}: --disable vs setup, exit {code}:\n{out}"
            );
        }
        host.disable_ok();
        before.assert_restored(&host.snapshot(), &format!("round {round}: after the last --disable"));
    }
    eprintln!("5 rounds: {locked} setup(s) were told another run holds the lock");
}

#[test]
fn different_names_do_not_block_each_other() {
    let Some(host) = FakeHost::new() else { return };
    for (name, id) in [("alpha", 991), ("beta", 992)] {
        host.add_agent_user(name, id);
    }
    let before = host.snapshot();
    let a = args(
        &host,
        &[
            "--name",
            "alpha",
            "--sandbox-home",
            "/home/alpha",
            "--policy",
            "strict",
            "--host-ip",
            "10.201.0.1",
            "--sandbox-ip",
            "10.201.0.2",
        ],
    );
    let b = args(
        &host,
        &[
            "--name",
            "beta",
            "--sandbox-home",
            "/home/beta",
            "--policy",
            "strict",
            "--host-ip",
            "10.202.0.1",
            "--sandbox-ip",
            "10.202.0.2",
        ],
    );
    let [ra, rb] = race(&host, a, b);
    assert_eq!(ra.0, 0, "alpha:\n{}", ra.1);
    assert_eq!(rb.0, 0, "beta:\n{}", rb.1);
    for name in ["alpha", "beta"] {
        let r = host.disable_env(&[], &["--name", name]);
        assert_eq!(r.code, 0, "{r}");
    }
    // Kept by design for these users too: policy directory, key, token.
    for name in ["alpha", "beta"] {
        host.sh_ok(&format!(
            "rm -rf {r}/home/{name}/.defenseclaw {r}/home/{name}/.env",
            r = host.root_str()
        ));
    }
    // Shared by both (the host record's): /run/netns, its mount,
    // /etc/netns and the unit directory go with the last of them, in
    // whatever order they go.
    let strip = |s: &Snapshot| s.without_kept();
    strip(&before).assert_same(&strip(&host.snapshot()), "two names set up at once, then both disabled");
}
