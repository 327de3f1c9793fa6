//! Drift: what is ours changed or removed behind our back. `setup` repairs
//! what is ours, `--disable` still cleans up, and nothing that is not ours
//! is touched (the fake host's operator table, uplink and files are in
//! every snapshot compared here).

mod common;

use common::*;

const FLAGS: &[&str] = &["--policy", "default", "--dns", DNS_A];

/// A fake host with a clean setup in place; returns (host, before, clean).
fn installed(flags: &[&str]) -> Option<(FakeHost, Snapshot, Snapshot)> {
    let host = FakeHost::new()?;
    let before = host.snapshot();
    host.setup_ok(flags);
    let clean = host.snapshot().comparable();
    Some((host, before, clean))
}

/// Everything restored but the sandbox user's home: the identity steps'
/// files there (patched openclaw.json, scripts) only the record could tell
/// from the operator's, so a sweep keeps them.
#[track_caller]
fn assert_restored_but_home(before: &Snapshot, after: &Snapshot, what: &str) {
    let strip = |s: &Snapshot| {
        let mut s = s.without_kept();
        if let Some(tree) = s.sections.get_mut("root tree") {
            tree.retain(|l| !l.starts_with("home/sandbox"));
        }
        s
    };
    strip(before).assert_same(&strip(after), what);
}

#[track_caller]
fn assert_repaired(host: &FakeHost, clean: &Snapshot, what: &str) {
    let run = host.setup_ok(FLAGS);
    assert!(
        !run.stdout.contains("nothing changed"),
        "{what}: setup saw no drift:\n{run}"
    );
    clean.assert_same(&host.snapshot().comparable(), &format!("setup after {what}"));
    let again = host.setup_ok(FLAGS);
    assert!(
        again.stdout.contains("nothing changed"),
        "{what}: not converged:\n{again}"
    );
}

#[test]
fn a_deleted_veth_is_made_again() {
    let Some((host, before, clean)) = installed(FLAGS) else {
        return;
    };
    host.ip(Ns::Host, &["link", "del", HOST_IF]);
    assert_repaired(&host, &clean, "the veth was deleted");
    host.disable_ok();
    before.assert_restored(&host.snapshot(), "--disable after the veth was repaired");
}

#[test]
fn an_edited_or_deleted_unit_file_is_written_again() {
    let Some((host, before, clean)) = installed(FLAGS) else {
        return;
    };
    let agent = host.root().join("etc/systemd/system/openshell-sandbox.service");
    let ours = std::fs::read_to_string(&agent).expect("setup wrote the agent unit");
    // Someone loosens the agent's unit behind our back.
    std::fs::write(&agent, ours.replace("NoNewPrivileges=yes", "NoNewPrivileges=no")).expect("edit");
    assert_repaired(&host, &clean, "the agent unit was edited");
    assert_eq!(
        std::fs::read_to_string(&agent).expect("read"),
        ours,
        "our unit is back as generated"
    );
    let target = host.root().join("etc/systemd/system/defenseclaw-sandbox.target");
    std::fs::remove_file(&target).expect("rm target");
    assert_repaired(&host, &clean, "the target unit was deleted");
    host.disable_ok();
    before.assert_restored(&host.snapshot(), "--disable after the units were repaired");
}

#[test]
fn flushed_or_loosened_tables_are_put_back() {
    let Some((host, before, clean)) = installed(FLAGS) else {
        return;
    };
    host.nft(Ns::Host, &["flush", "table", "inet", TABLE]);
    assert_repaired(&host, &clean, "the host table was flushed");
    host.in_ns(Ns::Sandbox, || {
        let out = std::process::Command::new("nft")
            .args(["flush", "table", "inet", TABLE])
            .output()
            .expect("nft");
        assert!(out.status.success(), "{out:?}");
    });
    assert_repaired(&host, &clean, "the sandbox's table was flushed");
    // A chain's policy loosened, rules intact.
    host.in_ns(Ns::Sandbox, || {
        let out = std::process::Command::new("nft")
            .args([
                "add",
                "chain",
                "inet",
                TABLE,
                "output",
                "{ type filter hook output priority 0; policy accept; }",
            ])
            .output()
            .expect("nft");
        assert!(out.status.success(), "{out:?}");
    });
    assert_repaired(&host, &clean, "the sandbox's output policy was set to accept");
    host.disable_ok();
    before.assert_restored(&host.snapshot(), "--disable after the tables were repaired");
}

/// The record removed: `--disable` sweeps what is named after the sandbox
/// and carries our mark; the network is restored exactly. Under `strict`
/// nothing touches sysctls, so everything but the home is compared.
#[test]
fn disable_without_a_record_sweeps_what_is_ours() {
    let Some((host, before, _)) = installed(&["--policy", "strict"]) else {
        return;
    };
    std::fs::remove_file(host.state_file("sandbox")).expect("remove the record");
    let run = host.disable_ok();
    for said in [
        "deleted network namespace sandbox0",
        "deleted veth sandbox0",
        "deleted host table",
    ] {
        assert!(run.stdout.contains(said), "{said:?} missing:\n{run}");
    }
    assert!(run.stdout.contains("kept: the user"), "{run}");
    assert_restored_but_home(&before, &host.snapshot(), "--disable without a record");
    // Setup converges again from there.
    host.setup_ok(&["--policy", "strict"]);
    host.disable_ok();
}

/// With a policy that forwards, a sweep still restores ip_forward from
/// the host record; with that lost too, it cannot know the old value and
/// says so, changing no sysctl.
#[test]
fn disable_without_a_record_says_what_it_cannot_restore() {
    let Some((host, _, _)) = installed(FLAGS) else { return };
    std::fs::remove_file(host.state_file("sandbox")).expect("remove the record");
    host.disable_ok();
    assert_eq!(
        host.sysctl(Ns::Host, "net/ipv4/ip_forward"),
        "0",
        "the host record knew it"
    );
    host.setup_ok(FLAGS);
    std::fs::remove_file(host.state_file("sandbox")).expect("remove the record");
    std::fs::remove_file(host.root().join("var/lib/sandbox/host.json")).expect("and the host record");
    let run = host.disable_ok();
    assert!(run.stdout.contains("left net.ipv4.ip_forward = 1"), "{run}");
    assert_eq!(host.sysctl(Ns::Host, "net/ipv4/ip_forward"), "1");
    host.set_sysctl(Ns::Host, "net/ipv4/ip_forward", "0");
}

/// Without a record, setup refuses the namespace (it cannot tell it from
/// someone else's) and names `--disable` as the way out.
#[test]
fn setup_without_a_record_points_at_disable() {
    let Some((host, before, _)) = installed(&["--policy", "strict"]) else {
        return;
    };
    std::fs::remove_file(host.state_file("sandbox")).expect("remove the record");
    let run = host.setup(&["--policy", "strict"]);
    assert_eq!(run.code, 3, "{run}");
    assert!(run.stderr.contains("sandbox setup --disable"), "{run}");
    host.disable_ok();
    host.setup_ok(&["--policy", "strict"]);
    host.disable_ok();
    assert_restored_but_home(
        &before,
        &host.snapshot(),
        "setup, lost record, --disable, setup, --disable",
    );
}

/// What carries our name but not our mark is left, and said to be left.
#[test]
fn the_sweep_leaves_what_is_not_ours() {
    let Some(host) = FakeHost::new() else { return };
    host.ip(
        Ns::Host,
        &["link", "add", HOST_IF, "type", "veth", "peer", "name", "other0"],
    );
    let dir = host.root().join("etc/netns/sandbox0");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("resolv.conf"), "nameserver 192.0.2.1\n").expect("write");
    host.nft(Ns::Host, &["add", "table", "inet", "sandbox_other"]);
    let before = host.snapshot();
    let run = host.disable_ok();
    assert!(run.stdout.contains("left interface sandbox0: not ours"), "{run}");
    assert!(run.stdout.contains("lacks our header line"), "{run}");
    before.assert_restored(&host.snapshot(), "a sweep with nothing of ours");
}

/// The host table counted refusals (the sandbox's own table was gone):
/// `status` fails. The `setup` it prescribes repairs the table and clears
/// the count, saying what it cleared (output and audit log), so `status`
/// passes again; a refusal after that setup fails it again. It used to
/// keep failing for 24 h whatever the operator did.
#[test]
fn host_refusals_count_from_the_last_setup() {
    let Some((host, _before, _clean)) = installed(&["--policy", "strict"]) else {
        return;
    };
    let status = |host: &FakeHost| {
        let run = host.sandbox(&["status", "--root", host.root_str(), "--no-systemd", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}:\n{run}"));
        let check = v["checks"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["check"] == "host refusals").cloned())
            .unwrap_or_else(|| panic!("no host refusals check:\n{run}"));
        let text = host.sandbox(&["status", "--root", host.root_str(), "--no-systemd"]);
        (check, text)
    };
    host.listen_tcp(Ns::Host, (HOST_IP, 2222).into());
    host.nft(Ns::Sandbox, &["delete", "table", "inet", TABLE]);
    host.tcp(Ns::Sandbox, (HOST_IP, 2222)).assert_refused_promptly();

    let (check, text) = status(&host);
    assert_eq!(check["ok"], false, "{check}\n{text}");
    let detail = check["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("since the last setup the host table refused 1 (10.200.0.1 tcp/2222 x1), the last at 20"),
        "{detail}"
    );
    assert!(text.stdout.contains("host   10.200.0.1"), "{text}");
    assert!(
        check["fix"].as_str().unwrap_or_default().contains("clears this count"),
        "{check}"
    );
    let plan = host.sandbox(&["plan", "--root", host.root_str(), "--no-systemd", "--policy", "strict"]);
    assert!(
        plan.stdout
            .contains("clear the host table's refusals: 1 (10.200.0.1 tcp/2222 x1)"),
        "{plan}"
    );

    let run = host.setup_ok(&["--policy", "strict"]);
    assert!(
        run.stdout
            .contains("cleared the host table's refusals: 1 (10.200.0.1 tcp/2222 x1), the last at "),
        "{run}"
    );
    let (check, text) = status(&host);
    assert_eq!(check["ok"], true, "{check}\n{text}");
    assert!(!text.stdout.contains("host   10.200.0.1"), "{text}");
    let log = host.sandbox(&["log", "--root", host.root_str()]);
    assert!(log.stdout.contains("cleared the host table's refusals"), "{log}");
    // Nothing left to clear: a re-run changes nothing.
    let again = host.setup_ok(&["--policy", "strict"]);
    assert!(again.stdout.contains("nothing changed"), "{again}");

    // A refusal after the setup fails status again.
    host.nft(Ns::Sandbox, &["delete", "table", "inet", TABLE]);
    host.tcp(Ns::Sandbox, (HOST_IP, 2222)).assert_refused_promptly();
    let (check, _) = status(&host);
    assert_eq!(check["ok"], false, "{check}");
    host.disable_ok();
}
