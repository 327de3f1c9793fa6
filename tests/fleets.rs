//! Issue 16 (fleets), end to end: the config file, plan's detailed exit
//! codes, outcome records in the audit log, and the Ansible collection
//! run by the real `ansible-playbook` (ansible-core from PyPI, cached by
//! contrib/ansible/tests/install.sh) inside a throwaway host.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{FakeHost, Ns, BIN, DNS_A};

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn plan_exit_codes_and_the_config_file() {
    let Some(host) = FakeHost::new() else { return };
    let root = host.root_str().to_string();
    std::fs::create_dir_all(host.root().join("etc/sandbox")).expect("mkdir");
    std::fs::write(
        host.root().join("etc/sandbox/sandbox.toml"),
        format!("policy = \"strict\"\ndns = [\"{DNS_A}\"]\nno_systemd = true\n"),
    )
    .expect("write config");
    let plan = host.sandbox(&["plan", "--root", &root, "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "changes pending:\n{plan}");
    assert!(
        plan.stdout.contains("sandbox/sandbox.toml:1:10)"),
        "where policy came from:\n{plan}"
    );
    let run = host.sandbox(&["setup", "--root", &root, "--non-interactive", "--json"]);
    assert_eq!(run.code, 0, "{run}");
    let plan = host.sandbox(&["plan", "--root", &root, "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "nothing to do:\n{plan}");
    // A flag overrides the file: a plan with it has changes again.
    let plan = host.sandbox(&[
        "plan",
        "--root",
        &root,
        "--detailed-exitcode",
        "--policy",
        common::DNS_ONLY,
    ]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(plan.stdout.contains("(flag --policy)"), "{plan}");

    // An error exits 1 with --detailed-exitcode, as JSON with --format json.
    let plan = host.sandbox(&[
        "plan",
        "--root",
        &root,
        "--detailed-exitcode",
        "--format",
        "json",
        "--host-ip",
        "10.200.0.300",
    ]);
    assert_eq!(plan.code, 1, "{plan}");
    let ev = json_lines(&plan.stdout).pop().expect("a JSON error");
    assert_eq!(
        (ev["event"].as_str(), ev["exit_code"].as_i64()),
        (Some("error"), Some(1)),
        "{plan}"
    );
    assert!(
        ev["cause"].as_str().is_some_and(|c| c.contains("not an IPv4")),
        "{plan}"
    );

    // A refused run leaves an outcome record; so does a good one.
    let bad = host.sandbox(&["setup", "--root", &root, "--non-interactive", "--openclaw-port", "0"]);
    assert_eq!(bad.code, 2, "{bad}");
    host.disable_ok();
    // --disable keeps the file; with nothing left, --disable --json is JSON.
    assert!(host.root().join("etc/sandbox/sandbox.toml").exists());
    let again = host.sandbox(&["setup", "--root", &root, "--disable", "--non-interactive", "--json"]);
    assert_eq!(again.code, 0, "{again}");
    let evs = json_lines(&again.stdout);
    assert!(
        !evs.is_empty() && evs.len() == again.stdout.lines().count(),
        "only JSON:\n{again}"
    );
    assert_eq!(evs.last().map(|e| e["changed"].clone()), Some(serde_json::json!(false)));

    let log = host.sandbox(&["log", "--root", &root, "--json"]);
    let entries = json_lines(&log.stdout);
    let outcomes: Vec<_> = entries
        .iter()
        .filter(|e| e["record"] == "outcome")
        .map(|e| (e["action"].as_str().unwrap_or(""), e["outcome"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("apply", "ok"),
            ("apply", "refused"),
            ("revert", "ok"),
            ("revert", "ok")
        ],
        "{log}"
    );
    let starts = entries.iter().filter(|e| e["record"] == "start").count();
    assert_eq!(starts, 4, "{log}");
    let refused = entries.iter().find(|e| e["outcome"] == "refused").expect("refused");
    assert!(
        refused["error"].as_str().is_some_and(|e| e.contains("not a port")),
        "{refused}"
    );
    assert!(
        refused["command"]
            .as_str()
            .is_some_and(|c| c.contains("--openclaw-port 0")),
        "{refused}"
    );
    let text = host.sandbox(&["log", "--root", &root]);
    assert!(
        text.stdout.contains("REFUSED") && text.stdout.contains("(exit 2)"),
        "{text}"
    );
}

/// The venv with the real ansible-core (installed once, cached).
fn ansible_venv() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ansible/tests/install.sh");
    let out = Command::new(&script).output().expect("run install.sh");
    assert!(
        out.status.success(),
        "installing ansible-core failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn the_ansible_collection_converges_rechecks_and_removes() {
    let Some(host) = FakeHost::new() else { return };
    let venv = ansible_venv();
    let work = tempfile::tempdir().expect("tempdir");
    let coll = work.path().join("ansible_collections/sandbox/sandbox");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ansible");
    std::fs::create_dir_all(&coll).expect("mkdir");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(&coll)
        .status()
        .expect("cp");
    assert!(cp.success());
    let sha = {
        use sha2::{Digest, Sha256};
        let bytes = std::fs::read(BIN).expect("read the binary");
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let playbook = coll.join("tests/integration/playbook.yml");
    let extra = serde_json::json!({
        "root": host.root_str(),
        "package": BIN,
        "package_sha256": sha,
        "dns": DNS_A,
    })
    .to_string();
    let env = [
        format!("HOME={}", home.display()),
        format!("ANSIBLE_HOME={}", home.join(".ansible").display()),
        format!("ANSIBLE_LOCAL_TEMP={}", home.join("tmp").display()),
        format!("ANSIBLE_REMOTE_TEMP={}", home.join("rtmp").display()),
        format!("ANSIBLE_COLLECTIONS_PATH={}", work.path().display()),
        "ANSIBLE_NOCOLOR=1".to_string(),
        "ANSIBLE_LOCALHOST_WARNING=0".to_string(),
        "ANSIBLE_INVENTORY_UNPARSED_WARNING=0".to_string(),
        format!("ANSIBLE_PYTHON_INTERPRETER={}/bin/python", venv.display()),
        format!("PATH={}/bin:/usr/sbin:/usr/bin:/sbin:/bin", venv.display()),
    ];
    let playbook_bin = venv.join("bin/ansible-playbook");
    let mut argv: Vec<String> = vec!["env".into(), "-i".into()];
    argv.extend(env.iter().cloned());
    argv.extend([
        playbook_bin.display().to_string(),
        "-i".into(),
        "localhost,".into(),
        "-e".into(),
        extra,
        playbook.display().to_string(),
    ]);
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let out = host.cmd(Ns::Host, &args, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("ansible-playbook took {:?}", started.elapsed());
    assert!(out.status.success(), "ansible-playbook failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("failed=0"), "{stdout}");
    // Diff mode printed the plan (check mode) and the changes (the apply).
    assert!(
        stdout.contains("firewall       install table"),
        "the plan as diff:\n{stdout}"
    );
    assert!(
        stdout.contains("firewall       installed table"),
        "the changes as diff:\n{stdout}"
    );
    // The sandbox is gone: nothing of it is left in the fake host.
    assert!(!host.sandbox_netns().exists(), "{stdout}");
}
