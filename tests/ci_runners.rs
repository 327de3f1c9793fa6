//! The runner integrations under contrib/, driven the way the runners
//! drive them, against the real binary in a throwaway host (`--root`,
//! `--no-systemd`, through each driver's SANDBOX_HOST_ARGS; as root, so no
//! sudo):
//! - GitLab's custom executor: `config`, `prepare`, `run SCRIPT STAGE` per
//!   stage, `cleanup`, with CUSTOM_ENV_CI_JOB_ID, BUILD_FAILURE_EXIT_CODE,
//!   SYSTEM_FAILURE_EXIT_CODE and BUILD_EXIT_CODE_FILE in the environment.
//! - GitHub Actions: the job-started hook, steps through `sandbox-step {0}`,
//!   the job-completed hook, with RUNNER_NAME in the environment.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Jobs of two fake hosts would share uids (each leases from its own
/// `--root`): one test at a time (as tests/job.rs).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const BUILD_FAILURE: &str = "17";
const SYSTEM_FAILURE: &str = "23";

fn contrib(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib").join(rel)
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run `program args` in the fake host with the runner's environment.
fn drive(host: &FakeHost, program: PathBuf, args: &[&str], env: &[(&str, String)]) -> Ran {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let bin_dir = Path::new(BIN).parent().expect("bin dir").to_path_buf();
    env.push(("SANDBOX_BIN".into(), BIN.into()));
    env.push(("SANDBOX_SUDO".into(), String::new()));
    env.push((
        "SANDBOX_HOST_ARGS".into(),
        format!("--root {} --no-systemd", host.root_str()),
    ));
    env.push(("SANDBOX_DNS".into(), DNS_A.into()));
    env.push((
        "PATH".into(),
        format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default()),
    ));
    host.in_ns(Ns::Host, move || {
        let o = Command::new(&program)
            .args(&args)
            .envs(env)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    })
}

fn no_jobs_left(host: &FakeHost) {
    let state = host.root().join("var/lib/sandbox");
    let left: Vec<_> = std::fs::read_dir(&state)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "state left: {left:?}");
    let links = host.ip(Ns::Host, &["-o", "link", "show"]);
    assert!(!links.contains("sandbox:g"), "links left:\n{links}");
    assert!(!host.ruleset(Ns::Host).contains("sandbox_g"), "tables left");
}

#[test]
fn gitlab_custom_executor_stages_map_exit_codes() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(host) = FakeHost::new() else { return };
    let driver = contrib("gitlab-runner/sandbox-executor");
    let scratch = tempfile::tempdir().expect("tempdir");
    let exit_file = scratch.path().join("exit-code");
    let env = |job: &str| {
        vec![
            ("CUSTOM_ENV_CI_JOB_ID", job.to_string()),
            ("BUILD_FAILURE_EXIT_CODE", BUILD_FAILURE.to_string()),
            ("SYSTEM_FAILURE_EXIT_CODE", SYSTEM_FAILURE.to_string()),
            ("BUILD_EXIT_CODE_FILE", exit_file.display().to_string()),
        ]
    };
    // config: JSON the runner reads.
    let r = drive(&host, driver.clone(), &["config"], &env("4242"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("config prints JSON");
    assert_eq!(v["builds_dir"], "/home/job/builds");
    assert_eq!(v["builds_dir_is_shared"], false);
    // prepare, then the stages the runner runs, each a script file.
    let r = drive(&host, driver.clone(), &["prepare"], &env("4242"));
    assert_eq!(r.code, 0, "prepare: {}", r.stderr);
    assert!(host.root().join("var/lib/sandbox/gl4242").exists());
    let script = |name: &str, body: &str| {
        let p = scratch.path().join(name);
        std::fs::write(&p, body).expect("script");
        p.display().to_string()
    };
    let s = script(
        "get_sources",
        "set -e\nmkdir -p /home/job/builds && cd /home/job/builds && echo src > file\n",
    );
    let r = drive(&host, driver.clone(), &["run", &s, "get_sources"], &env("4242"));
    assert_eq!(r.code, 0, "get_sources: {}", r.stderr);
    // The build script sees what get_sources left, and fails with 3.
    let s = script("build_script", "cat /home/job/builds/file\nid -u\nexit 3\n");
    let r = drive(&host, driver.clone(), &["run", &s, "build_script"], &env("4242"));
    assert_eq!(r.code, 17, "a build failure is BUILD_FAILURE_EXIT_CODE: {}", r.stderr);
    assert!(r.stdout.starts_with("src\n"), "{}", r.stdout);
    let uid: u32 = r.stdout.lines().nth(1).and_then(|l| l.parse().ok()).expect("uid");
    assert!(uid >= 2_000_000_000, "the build ran as the job's uid, not {uid}");
    assert_eq!(std::fs::read_to_string(&exit_file).expect("exit code file").trim(), "3");
    let s = script("after_script", "echo fine\n");
    let r = drive(&host, driver.clone(), &["run", &s, "after_script"], &env("4242"));
    assert_eq!((r.code, r.stdout.as_str()), (0, "fine\n"), "{}", r.stderr);
    let r = drive(&host, driver.clone(), &["cleanup"], &env("4242"));
    assert_eq!(r.code, 0, "cleanup: {}", r.stderr);
    no_jobs_left(&host);
    // A sandbox that is not there (prepare failed, or it was destroyed
    // behind the runner's back) is a system failure, not a build failure.
    let r = drive(&host, driver.clone(), &["run", &s, "build_script"], &env("4242"));
    assert_eq!(r.code, 23, "{}", r.stderr);
    // A prepare that cannot make the sandbox (a bad policy) is a system failure.
    let mut bad = env("4243");
    bad.push(("SANDBOX_POLICY", "/nonexistent/policy.toml".into()));
    let r = drive(&host, driver.clone(), &["prepare"], &bad);
    assert_eq!(r.code, 23, "{}", r.stderr);
    // No job id: a system failure, said.
    let r = drive(&host, driver, &["prepare"], &env("not-a-number"));
    assert_eq!(r.code, 23, "{}", r.stderr);
    assert!(r.stderr.contains("CUSTOM_ENV_CI_JOB_ID"), "{}", r.stderr);
    no_jobs_left(&host);
}

#[test]
fn github_actions_hooks_and_steps() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(host) = FakeHost::new() else { return };
    let scratch = tempfile::tempdir().expect("tempdir");
    let env = vec![("RUNNER_NAME", "ci-runner-1".to_string())];
    let r = drive(&host, contrib("github-actions/job-started.sh"), &[], &env);
    assert_eq!(r.code, 0, "job started: {}", r.stderr);
    let step = |body: &str| {
        let p = scratch.path().join("step.sh");
        std::fs::write(&p, body).expect("step");
        drive(
            &host,
            contrib("github-actions/sandbox-step"),
            &[&p.display().to_string()],
            &env,
        )
    };
    let r = step("echo kept > state\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    // bash -e: the first failing command ends the step with its status.
    let r = step("cat state\nfalse\necho not reached\n");
    assert_eq!((r.code, r.stdout.as_str()), (1, "kept\n"), "{}", r.stderr);
    let r = step("echo $CI $GITHUB_ACTIONS; exit 9\n");
    assert_eq!((r.code, r.stdout.as_str()), (9, "true true\n"), "{}", r.stderr);
    let r = drive(&host, contrib("github-actions/job-completed.sh"), &[], &env);
    assert_eq!(r.code, 0, "job completed: {}", r.stderr);
    no_jobs_left(&host);
    // A step after the sandbox is gone: 125, the sandbox's failure.
    let r = step("true\n");
    assert_eq!(r.code, 125, "{}", r.stderr);
}
