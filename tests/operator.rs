//! Root integration tests for what an operator on a change-controlled host
//! uses around `setup`: the change-control plan, JSON progress, `status`,
//! the audit log, `--version`, man page and completions.

mod common;

use std::net::SocketAddr;

use common::*;

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[test]
fn plan_is_a_change_ticket_in_three_formats_and_changes_nothing() {
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    let flags = [
        "--root",
        host.root_str(),
        "--policy",
        DNS_ONLY,
        "--dns",
        DNS_A,
        "--no-systemd",
    ];

    let mut md = vec!["plan", "--format", "markdown"];
    md.extend_from_slice(&flags);
    let run = host.sandbox(&md);
    assert_eq!(run.code, 0, "{run}");
    for needle in [
        "# Change plan: sandbox `sandbox`",
        "## Network flows",
        "| sandbox 10.200.0.2 | 203.0.113.53 | udp/53 |",
        "| host 10.200.0.1 | sandbox 10.200.0.2 | tcp/18789 |",
        "/etc/netns/sandbox0/resolv.conf",
        "## Sysctls",
        "net.ipv4.ip_forward",
        "```nft",
        "table inet sandbox_sandbox",
        "table inet sandbox_host",
    ] {
        assert!(run.stdout.contains(needle), "markdown lacks {needle:?}:\n{run}");
    }

    let mut js = vec!["setup", "--dry-run", "--format", "json"];
    js.extend_from_slice(&flags);
    let run = host.sandbox(&js);
    assert_eq!(run.code, 0, "{run}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("plan is one JSON document");
    let files = v["inventory"]["files"].as_array().expect("files");
    let resolv = files
        .iter()
        .find(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/etc/netns/sandbox0/resolv.conf"))
        })
        .expect("resolv.conf in the plan");
    assert_eq!(
        (resolv["owner"].as_str(), resolv["mode"].as_str()),
        (Some("root"), Some("0644"))
    );
    assert_eq!(resolv["sha256"].as_str().map(str::len), Some(64));
    assert!(v["changes"].as_array().is_some_and(|c| !c.is_empty()));

    before.assert_same(&host.snapshot(), "after the plans");

    // --format only shapes a plan: without --dry-run it is refused.
    let run = host.sandbox(&[
        "setup",
        "--root",
        host.root_str(),
        "--format",
        "json",
        "--non-interactive",
    ]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("--dry-run"), "{run}");
    before.assert_same(&host.snapshot(), "after --format without --dry-run");
}

#[test]
fn json_progress_is_one_event_per_step_with_changed() {
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    let first = host.setup_ok(&["--policy", "strict", "--dns", DNS_A, "--json"]);
    let events = json_lines(&first.stdout);
    let steps: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "step").collect();
    assert!(steps.len() >= 10, "{first}");
    assert!(
        steps.iter().any(|e| e["step"] == "veth" && e["changed"] == true),
        "{first}"
    );
    assert_eq!(
        events.last().map(|e| e["event"].clone()),
        Some("done".into()),
        "{first}"
    );
    assert_eq!(events.last().map(|e| e["changed"].clone()), Some(true.into()));

    let again = host.setup_ok(&["--policy", "strict", "--dns", DNS_A, "--json"]);
    let events = json_lines(&again.stdout);
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "step")
            .all(|e| e["changed"] == false),
        "{again}"
    );
    assert_eq!(
        events.last().map(|e| e["changed"].clone()),
        Some(false.into()),
        "{again}"
    );

    let undo = host.sandbox(&[
        "setup",
        "--root",
        host.root_str(),
        "--disable",
        "--non-interactive",
        "--json",
    ]);
    assert_eq!(undo.code, 0, "{undo}");
    let events = json_lines(&undo.stdout);
    assert!(
        events.iter().any(|e| e["action"] == "revert" && e["step"] == "veth"),
        "{undo}"
    );
    before.assert_restored(&host.snapshot(), "after --json setup and --disable");
}

#[test]
fn status_is_healthy_then_names_drift_with_exit_6() {
    let Some(host) = FakeHost::new() else { return };
    let run = host.sandbox(&["status", "--root", host.root_str(), "--no-systemd"]);
    assert_eq!(run.code, 3, "not set up yet: {run}");
    assert!(run.stderr.contains("not set up"), "{run}");

    host.setup_ok(&["--policy", "strict", "--dns", DNS_A]);
    let status = ["status", "--root", host.root_str(), "--no-systemd"];
    // Without the sidecar: unhealthy, and it says which ports are silent.
    let run = host.sandbox(&status);
    assert_eq!(run.code, 6, "{run}");
    assert!(
        run.stdout.contains("FAIL  sidecar") && run.stdout.contains("not answering on 10.200.0.1:18970"),
        "{run}"
    );
    // The sidecar and OpenClaw's gateway, standing in: /health on the host
    // IP, and on the sandbox IP inside the namespace.
    for port in [18970, 4000] {
        host.listen_http(Ns::Host, SocketAddr::from((HOST_IP, port)));
    }
    let run = host.sandbox(&status);
    assert_eq!(run.code, 6, "no agent yet: {run}");
    assert!(
        run.stdout.contains("FAIL  agent") && run.stdout.contains("does not answer /health on 10.200.0.2:18789"),
        "{run}"
    );
    host.listen_http(Ns::Sandbox, SocketAddr::from((SANDBOX_IP, 18789)));
    let run = host.sandbox(&status);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("healthy") && !run.stdout.contains("FAIL"), "{run}");
    assert!(
        run.stdout
            .contains("/health answers on 10.200.0.1:18970, 10.200.0.1:4000")
            && run
                .stdout
                .contains("OpenClaw's gateway answers /health on 10.200.0.2:18789"),
        "{run}"
    );

    // A refused connection from inside shows with its destination and count.
    host.tcp(Ns::Sandbox, SocketAddr::from((HOST_IP, 2222)))
        .assert_refused_promptly();
    let mut js = status.to_vec();
    js.push("--json");
    let run = host.sandbox(&js);
    assert_eq!(run.code, 0, "{run}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("status JSON");
    assert_eq!(v["healthy"], true);
    let d = &v["denials"][0];
    assert_eq!(
        (d["dst"].as_str(), d["port"].as_u64(), d["layer"].as_str()),
        (Some("10.200.0.1"), Some(2222), Some("netns"))
    );
    assert!(d["count"].as_u64().is_some_and(|c| c >= 1), "{d}");

    // Behind our back: the veth goes.
    host.ip(Ns::Host, &["link", "del", HOST_IF]);
    let run = host.sandbox(&status);
    assert_eq!(run.code, 6, "{run}");
    assert!(run.stdout.contains("UNHEALTHY"), "{run}");
    assert!(run.stdout.contains("FAIL  veth"), "{run}");
    assert!(run.stdout.contains("FAIL  reach host"), "{run}");
    assert!(run.stdout.contains("fix:"), "{run}");

    // setup repairs what is ours; status is healthy again.
    host.setup_ok(&["--policy", "strict", "--dns", DNS_A]);
    let run = host.sandbox(&status);
    assert_eq!(run.code, 0, "{run}");
    host.disable_ok();
}

#[test]
fn the_audit_log_records_every_change_and_survives_disable() {
    let Some(host) = FakeHost::new() else { return };
    host.setup_ok(&["--policy", "strict", "--dns", DNS_A]);
    host.setup_ok(&["--policy", "strict", "--dns", DNS_A]);
    host.disable_ok();
    let run = host.sandbox(&["log", "--root", host.root_str(), "--json"]);
    assert_eq!(run.code, 0, "{run}");
    // Changes only: each run also leaves a start and an outcome record.
    let entries: Vec<_> = json_lines(&run.stdout)
        .into_iter()
        .filter(|e| e["record"].is_null())
        .collect();
    let applied = entries.iter().filter(|e| e["action"] == "apply").count();
    let reverted = entries.iter().filter(|e| e["action"] == "revert").count();
    assert!(applied >= 10 && reverted >= 5, "{run}");
    assert!(entries
        .iter()
        .any(|e| e["step"] == "veth" && e["change"].as_str().is_some_and(|c| c.contains("created veth"))));
    assert!(entries
        .iter()
        .all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z'))));
    // The unchanged re-run added nothing.
    let first_revert = entries.iter().position(|e| e["action"] == "revert").expect("reverts");
    assert_eq!(first_revert, applied, "entries of the no-op re-run:\n{run}");

    let run = host.sandbox(&["log", "--root", host.root_str(), "--name", "other"]);
    assert!(run.stdout.contains("no entries"), "{run}");
    let run = host.sandbox(&["log", "--root", host.root_str()]);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("sandbox") && l.contains("revert")),
        "{run}"
    );
}

#[test]
fn version_man_page_and_completions_come_from_the_cli() {
    let Some(host) = FakeHost::new() else { return };
    let run = host.sandbox(&["--version"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout.starts_with("sandbox ") && run.stdout.contains("(commit "),
        "{run}"
    );
    let run = host.sandbox(&["man"]);
    assert!(
        run.code == 0 && run.stdout.contains(".TH sandbox") && run.stdout.contains("status"),
        "{run}"
    );
    let run = host.sandbox(&["completions", "bash"]);
    assert!(run.code == 0 && run.stdout.contains("--sandbox-ip"), "{run}");
}

/// Issue 11: the sidecar user recorded at the first setup (from SUDO_USER)
/// stays when setup runs again from a root shell without SUDO_USER: the
/// sidecar and its data do not move to a dynamic user.
#[test]
fn a_rerun_from_a_root_shell_keeps_the_recorded_sidecar_user() {
    let Some(host) = FakeHost::new() else { return };
    let r = host.root();
    let add = |file: &str, line: &str| {
        let p = r.join(file);
        let mut text = std::fs::read_to_string(&p).expect("read");
        text.push_str(line);
        std::fs::write(&p, text).expect("write");
    };
    add("etc/passwd", "admin:x:1000:1000:Admin:/home/admin:/bin/bash\n");
    add("etc/group", "admin:x:1000:\n");
    std::fs::create_dir(r.join("home/admin")).expect("admin home");
    std::os::unix::fs::chown(r.join("home/admin"), Some(1000), Some(1000)).expect("chown");
    let flags = ["--policy", "strict"];
    let first = host.setup_env(&[("SUDO_USER", "admin")], &flags);
    assert_eq!(first.code, 0, "{first}");
    let config = r.join("home/admin/.defenseclaw/config.yaml");
    assert!(config.is_file(), "the admin's DefenseClaw config:\n{first}");
    let again = host.setup_env(&[("SUDO_USER", "")], &flags);
    assert_eq!(again.code, 0, "{again}");
    assert!(
        again.stdout.contains("nothing changed"),
        "the sidecar user flipped:\n{again}"
    );
    assert!(config.is_file());
    assert!(
        !r.join("var/lib/private/defenseclaw-sandbox").exists(),
        "no dynamic user's data"
    );
    host.disable_ok();
    assert!(!config.exists(), "--disable took the config it made");
}
