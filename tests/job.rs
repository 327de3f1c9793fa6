//! `sandbox job` in a throwaway host (`--root`, `--no-systemd`): exit
//! codes and output pass through exactly, jobs run side by side, a killed
//! job is reaped by `job gc` with nothing left, jobs cannot reach each
//! other or the host, and SIGTERM to `sandbox job run` tears it down.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Jobs' uids start here (src/job/lease.rs).
const UID_BASE: u32 = 2_000_000_000;

/// Every fake host leases from its own `--root`, but all of them share the
/// machine's uids: two tests at once would give two jobs one uid (and one
/// job's teardown would kill the other's processes). One test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn job_args(host: &FakeHost, sub: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec!["job", sub, "--root", host.root_str(), "--no-systemd"];
    if matches!(sub, "run" | "create") {
        v.extend(["--dns", DNS_A]);
        // What these tests were written for: direct DNS and public web
        // (the presets now name hosts, through our resolver: tests/egress_names.rs).
        if !extra.contains(&"--policy") {
            v.extend(["--policy", WEB_POLICY]);
        }
    }
    v.extend_from_slice(extra);
    v.into_iter().map(String::from).collect()
}

/// Exit code, stdout and stderr as bytes, with `input` on stdin.
struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn spawn(args: Vec<String>) -> Child {
    Command::new(BIN)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sandbox")
}

fn finish(mut c: Child, input: &[u8]) -> Out {
    if let Some(mut stdin) = c.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let o = c.wait_with_output().expect("wait");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: o.stdout,
        stderr: o.stderr,
    }
}

fn job(host: &FakeHost, sub: &str, extra: &[&str], input: &[u8]) -> Out {
    let args = job_args(host, sub, extra);
    let input = input.to_vec();
    host.in_ns(Ns::Host, move || finish(spawn(args), &input))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Nothing of any job is left: no namespace, link, table, state, lease,
/// DNS file or process of a job uid.
fn assert_no_residue(host: &FakeHost, context: &str) {
    let root = host.root().to_path_buf();
    let netns: Vec<_> = std::fs::read_dir(root.join("run/netns"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(netns.is_empty(), "{context}: namespaces left: {netns:?}");
    let links = host.ip(Ns::Host, &["-o", "link", "show"]);
    assert!(
        !links.lines().any(|l| l.contains("sandbox:j")),
        "{context}: job links left:\n{links}"
    );
    let ruleset = host.ruleset(Ns::Host);
    assert!(!ruleset.contains("sandbox_j"), "{context}: job tables left:\n{ruleset}");
    let state = root.join("var/lib/sandbox");
    let left: Vec<_> = std::fs::read_dir(&state)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "{context}: state left in {}: {left:?}",
        state.display()
    );
    let dns: Vec<_> = std::fs::read_dir(root.join("etc/netns"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(dns.is_empty(), "{context}: DNS files left: {dns:?}");
    let procs = job_processes();
    assert!(procs.is_empty(), "{context}: processes of job uids left: {procs:?}");
}

/// (pid, uid) of every live process with a job's uid.
fn job_processes() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        if status.lines().any(|l| l.starts_with("State:") && l.contains('Z')) {
            continue;
        }
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok())
            .unwrap_or(0);
        if uid >= UID_BASE {
            out.push((pid, uid));
        }
    }
    out
}

#[test]
fn exit_codes_and_output_pass_through_exactly() {
    let _one = serial();
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    // Output byte for byte (no newline at the end, a NUL), stdin passed in.
    let o = job(
        &host,
        "run",
        &["--", "sh", "-c", "printf 'out\\000put'; cat; printf 'err' >&2; exit 3"],
        b"from stdin\n",
    );
    assert_eq!(o.code, 3, "{}", text(&o.stderr));
    assert_eq!(o.stdout, b"out\0putfrom stdin\n");
    assert_eq!(o.stderr, b"err");
    let cases: &[(&[&str], i32)] = &[
        (&["--", "true"], 0),
        (&["--", "sh", "-c", "exit 127"], 127),
        (&["--", "no-such-program"], 127),
        (&["--", "sh", "-c", "kill -TERM $$"], 128 + 15),
        (&["--", "sh", "-c", "kill -KILL $$"], 128 + 9),
        (&["--timeout", "1s", "--", "sleep", "30"], 124),
        (&["--policy", "/nonexistent/policy.toml", "--", "true"], 125),
        (&["--memory-max", "lots", "--", "true"], 125),
    ];
    for (args, want) in cases {
        let t = Instant::now();
        let o = job(&host, "run", args, b"");
        assert_eq!(o.code, *want, "{args:?}: stderr {}", text(&o.stderr));
        assert!(
            o.stdout.is_empty(),
            "{args:?}: sandbox wrote to stdout: {}",
            text(&o.stdout)
        );
        if *want == 124 {
            assert!(t.elapsed() < Duration::from_secs(20), "the timeout did not stop it");
        }
    }
    // Who the command runs as, and where.
    let o = job(
        &host,
        "run",
        &[
            "--env",
            "CI=yes",
            "--",
            "sh",
            "-c",
            "id -u; id -G; pwd; echo $HOME $CI; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; \
             grep nameserver /etc/resolv.conf; touch ./made && echo wrote",
        ],
        b"",
    );
    assert_eq!(o.code, 0, "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    let uid: u32 = lines[0].parse().expect("uid");
    assert!(uid >= UID_BASE, "{out}");
    assert_eq!(lines[1], lines[0], "its only group is its own: {out}");
    assert_eq!(lines[2], "/home/job");
    assert_eq!(lines[3], "/home/job yes");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains(&format!("nameserver {DNS_A}")), "{out}");
    assert!(out.ends_with("wrote\n"), "{out}");
    assert_no_residue(&host, "after the runs");
    before.assert_same(&host.snapshot(), "after every job run");
}

#[test]
fn twenty_parallel_jobs_each_exit_with_their_own_code() {
    let _one = serial();
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    let all: Vec<Vec<String>> = (0..20)
        .map(|i| {
            let script = format!("echo job{i}; exit {i}");
            job_args(&host, "run", &["--", "sh", "-c", &script])
        })
        .collect();
    let outs = host.in_ns(Ns::Host, move || {
        let children: Vec<Child> = all.into_iter().map(spawn).collect();
        children.into_iter().map(|c| finish(c, b"")).collect::<Vec<_>>()
    });
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(
            (o.code, text(&o.stdout)),
            (i as i32, format!("job{i}\n")),
            "job {i}: stderr {}",
            text(&o.stderr)
        );
    }
    assert_no_residue(&host, "after 20 parallel jobs");
    before.assert_same(&host.snapshot(), "after 20 parallel jobs");
}

#[test]
fn jobs_killed_at_random_moments_are_reaped_by_gc() {
    let _one = serial();
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let delays: Vec<u64> = (0..12).map(|_| random(600)).collect();
    eprintln!("kill delays (ms): {delays:?}");
    let args: Vec<Vec<String>> = (0..delays.len())
        .map(|i| {
            // Half of them leave a child of their own behind too.
            let script = if i % 2 == 0 { "sleep 60" } else { "sleep 60 & sleep 60" };
            job_args(&host, "run", &["--", "sh", "-c", script])
        })
        .collect();
    host.in_ns(Ns::Host, move || {
        let children: Vec<(Child, u64)> = args.into_iter().map(spawn).zip(delays).collect();
        let start = Instant::now();
        let mut children: Vec<(Child, u64)> = children;
        children.sort_by_key(|(_, d)| *d);
        for (mut c, d) in children {
            let at = start + Duration::from_millis(d);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            c.kill().expect("SIGKILL");
            let _ = c.wait();
        }
    });
    // One made with `job create` whose creator (--creator PID) is gone.
    let mut sleeper = host.in_ns(Ns::Host, || Command::new("sleep").arg("60").spawn().expect("sleep"));
    let pid = sleeper.id().to_string();
    let o = job(&host, "create", &["--creator", &pid], b"");
    assert_eq!(o.code, 0, "{}", text(&o.stderr));
    let created = text(&o.stdout).trim().to_string();
    // Alive: gc leaves it.
    let o = job(&host, "gc", &[], b"");
    assert_eq!(o.code, 0, "{}", text(&o.stderr));
    assert!(
        host.root().join("var/lib/sandbox").join(&created).exists(),
        "gc took a job whose creator runs"
    );
    sleeper.kill().expect("kill");
    let _ = sleeper.wait();
    let o = job(&host, "gc", &[], b"");
    assert_eq!(o.code, 0, "gc: {}", text(&o.stderr));
    let said = text(&o.stdout);
    assert!(
        said.contains(&format!("destroyed job {created}: its creator")),
        "{said}"
    );
    assert_no_residue(&host, "after gc");
    // A second gc finds nothing.
    let o = job(&host, "gc", &[], b"");
    assert_eq!((o.code, text(&o.stdout)), (0, String::new()), "{}", text(&o.stderr));
    before.assert_same(&host.snapshot(), "after the killed jobs were reaped");
}

#[test]
fn create_exec_destroy_list_and_ttl() {
    let _one = serial();
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    let o = job(
        &host,
        "create",
        &["--name", "ci7", "--creator", "none", "--ttl", "1s"],
        b"",
    );
    assert_eq!((o.code, text(&o.stdout)), (0, "ci7\n".into()), "{}", text(&o.stderr));
    let o = job(&host, "create", &["--name", "ci7"], b"");
    assert_eq!(o.code, 2, "the name is taken: {}", text(&o.stderr));
    // Steps share the home.
    let o = job(&host, "exec", &["ci7", "--", "sh", "-c", "echo kept > f"], b"");
    assert_eq!(o.code, 0, "{}", text(&o.stderr));
    let o = job(&host, "exec", &["ci7", "--", "sh", "-c", "cat f; exit 5"], b"");
    assert_eq!((o.code, text(&o.stdout)), (5, "kept\n".into()), "{}", text(&o.stderr));
    let o = job(&host, "list", &["--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("list --json");
    assert_eq!(v[0]["name"], "ci7", "{v}");
    assert!(v[0]["uid"].as_u64().is_some_and(|u| u >= u64::from(UID_BASE)), "{v}");
    let o = job(&host, "exec", &["nosuch", "--", "true"], b"");
    assert_eq!(o.code, 125, "{}", text(&o.stderr));
    std::thread::sleep(Duration::from_millis(1100));
    let o = job(&host, "gc", &[], b"");
    assert!(
        text(&o.stdout).contains("destroyed job ci7: its TTL has passed"),
        "{}",
        text(&o.stdout)
    );
    // Destroy is idempotent.
    for _ in 0..2 {
        let o = job(&host, "destroy", &["ci7"], b"");
        assert_eq!(o.code, 0, "{}", text(&o.stderr));
    }
    assert_no_residue(&host, "after destroy");
    before.assert_same(&host.snapshot(), "after create, exec, gc, destroy");
}

/// The job's network namespace, opened where its mount is visible.
fn netns_of(host: &FakeHost, name: &str) -> Arc<File> {
    let path = host.root().join("run/netns").join(format!("{name}0"));
    Arc::new(host.in_ns(Ns::Host, move || File::open(&path).expect("open the job's netns")))
}

/// Connect from inside the network namespace `netns`.
fn connect_from(netns: Arc<File>, to: SocketAddr) -> std::io::Result<()> {
    std::thread::spawn(move || {
        nix::sched::setns(&*netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        TcpStream::connect_timeout(&to, Duration::from_secs(2)).map(|_| ())
    })
    .join()
    .expect("probe thread")
}

fn listen_in(netns: Arc<File>, at: SocketAddr) -> TcpListener {
    std::thread::spawn(move || {
        nix::sched::setns(&*netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        TcpListener::bind(at).expect("bind")
    })
    .join()
    .expect("listener thread")
}

fn sandbox_ip(host: &FakeHost, name: &str) -> Ipv4Addr {
    let o = job(host, "list", &["--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("list --json");
    v.as_array()
        .into_iter()
        .flatten()
        .find(|j| j["name"] == name)
        .and_then(|j| j["sandbox_ip"].as_str())
        .and_then(|s| s.parse().ok())
        .expect("the job's address")
}

#[test]
fn a_job_cannot_reach_another_job_or_the_host_nor_be_reached() {
    let _one = serial();
    let Some(host) = FakeHost::new() else { return };
    for n in ["ja", "jb"] {
        let o = job(&host, "create", &["--name", n, "--creator", "none"], b"");
        assert_eq!(o.code, 0, "{}", text(&o.stderr));
    }
    let ns = |n: &str| netns_of(&host, n);
    let (a_ip, b_ip) = (sandbox_ip(&host, "ja"), sandbox_ip(&host, "jb"));
    // Listeners in each job, and on the host on each job's host IP and the uplink.
    let _la = listen_in(ns("ja"), SocketAddr::from((a_ip, 8080)));
    let _lb = listen_in(ns("jb"), SocketAddr::from((b_ip, 8080)));
    let a_host = Ipv4Addr::from(u32::from(a_ip) - 1);
    let b_host = Ipv4Addr::from(u32::from(b_ip) - 1);
    let host_listeners: Vec<TcpListener> = host.in_ns(Ns::Host, move || {
        [a_host, b_host, UPLINK_IP]
            .iter()
            .map(|ip| TcpListener::bind(SocketAddr::from((*ip, 8080))).expect("bind on the host"))
            .collect()
    });
    // Positive control: inside a job, its own listener answers.
    connect_from(ns("ja"), SocketAddr::from((a_ip, 8080))).expect("a job reaches itself");
    for (from, to, what) in [
        ("ja", b_ip, "job a -> job b"),
        ("jb", a_ip, "job b -> job a"),
        ("ja", a_host, "job a -> its host IP"),
        ("ja", b_host, "job a -> job b's host IP"),
        ("jb", b_host, "job b -> its host IP"),
        ("ja", UPLINK_IP, "job a -> the host's uplink address"),
    ] {
        let r = connect_from(ns(from), SocketAddr::from((to, 8080)));
        assert!(r.is_err(), "{what} ({to}:8080) connected");
    }
    // The host cannot connect into a job either.
    for ip in [a_ip, b_ip] {
        let r = host.in_ns(Ns::Host, move || {
            TcpStream::connect_timeout(&SocketAddr::from((ip, 8080)), Duration::from_secs(2)).map(|_| ())
        });
        assert!(r.is_err(), "host -> job {ip}:8080 connected");
    }
    drop(host_listeners);
    for n in ["ja", "jb"] {
        let o = job(&host, "destroy", &[n], b"");
        assert_eq!(o.code, 0, "{}", text(&o.stderr));
    }
    assert_no_residue(&host, "after destroying both");
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn netns_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("run/netns")).map_or(0, |d| d.count())
}

#[test]
fn sigterm_to_job_run_is_forwarded_then_everything_torn_down() {
    let _one = serial();
    let Some(host) = FakeHost::new() else { return };
    let before = host.snapshot();
    let root = host.root().to_path_buf();
    let cases: [(&str, i32); 2] = [
        // The command handles TERM and exits with its own status.
        ("trap 'echo got-term; exit 7' TERM; echo ready; sleep 60 & wait", 7),
        // It ignores TERM: after the grace period every process of the job is killed.
        ("trap '' TERM; echo ready; sleep 60", 128 + 9),
    ];
    for (script, want) in cases {
        let args = job_args(&host, "run", &["--", "sh", "-c", script]);
        let inside = root.clone();
        let (code, out) = host.in_ns(Ns::Host, move || {
            let mut c = spawn(args);
            let mut stdout = c.stdout.take().expect("stdout");
            let mut first = [0u8; 6];
            stdout.read_exact(&mut first).expect("the command started");
            assert_eq!(&first, b"ready\n");
            assert_eq!(netns_count(&inside), 1);
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .expect("SIGTERM");
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            let status = c.wait().expect("wait");
            (status.code().unwrap_or(-1), rest)
        });
        assert_eq!(code, want, "{script}: {out}");
        if want == 7 {
            assert_eq!(out, "got-term\n");
        }
        wait_for("no namespace", || netns_count(&root) == 0);
        assert_no_residue(&host, script);
    }
    before.assert_same(&host.snapshot(), "after the signalled runs");
}

#[test]
fn boot_never_recreates_a_job_and_reaps_it_once_its_creator_is_gone() {
    let _one = serial();
    let Some(host) = FakeHost::new() else { return };
    let mut sleeper = host.in_ns(Ns::Host, || Command::new("sleep").arg("60").spawn().expect("sleep"));
    let pid = sleeper.id().to_string();
    let o = job(&host, "create", &["--name", "jboot", "--creator", &pid], b"");
    assert_eq!(o.code, 0, "{}", text(&o.stderr));
    // What a reboot takes: the namespace (and the veth with it).
    let ns = host.root().join("run/netns/jboot0");
    let gone = ns.clone();
    host.in_ns(Ns::Host, move || {
        nix::mount::umount2(&gone, nix::mount::MntFlags::MNT_DETACH).expect("umount");
        std::fs::remove_file(&gone).expect("rm");
    });
    let boot = |host: &FakeHost| {
        host.sandbox(&[
            "setup",
            "--boot",
            "--name",
            "jboot",
            "--root",
            host.root_str(),
            "--no-systemd",
        ])
    };
    let run = boot(&host);
    assert_eq!(run.code, 0, "{run}");
    assert!(!ns.exists(), "boot re-created a job's namespace:\n{run}");
    assert!(run.stdout.contains("not re-created"), "{run}");
    sleeper.kill().expect("kill");
    let _ = sleeper.wait();
    let run = boot(&host);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("destroyed job jboot: its creator"), "{run}");
    assert_no_residue(&host, "after boot reaped the job");
}
