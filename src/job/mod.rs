//! `sandbox job`: CI jobs in sandboxes of their own. A job's sandbox is
//! made by the same steps as an agent's, through the engine, with a spec
//! whose `job` part says so: then only the steps a job needs run
//! (namespace, firewall, forwarding, DNS files, veth, and `job_home`: the
//! job's own uid and home). Its command runs as that uid, in that
//! namespace, with the agent's hardening: as a transient systemd unit, or
//! (`--no-systemd`) forked and exec'd by `launch`.
//!
//! `job run` holds the job's lock from creation to destruction, so `gc`
//! and `destroy` leave a running job alone; SIGINT, SIGTERM, SIGHUP and
//! SIGQUIT are blocked in this process and forwarded to the command, and
//! the sandbox is destroyed whatever happens. Only SIGKILL of `sandbox`
//! itself leaves a job behind, for `job gc` (its creator is dead).

pub mod launch;
pub mod reap;
pub mod transient;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::cli::{Command, JobCmdArgs, JobCommand, JobCreateArgs, JobHostArgs, JobSandboxArgs};
use crate::engine::{self, Undo};
use crate::error::{Error, Result};
use crate::spec::{self, Creator, JobSpec, NetSpec, Root, Spec, PEER_NAME};
use crate::state::{State, Store};
use crate::steps;

/// `job run` and `job exec`: the sandbox itself failed (not the command).
pub const EXIT_SANDBOX_FAILED: i32 = 125;
/// `job run` and `job exec`: `--timeout` hit.
pub const EXIT_TIMEOUT: i32 = 124;
/// The job's PATH.
const JOB_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// After a forwarded signal, how long the command may take to exit before
/// every process of the job is killed.
const GRACE: Duration = Duration::from_secs(5);
/// Signals forwarded to the command (and then the sandbox torn down).
const FORWARDED: [nix::sys::signal::Signal; 4] = [
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGHUP,
    nix::sys::signal::Signal::SIGQUIT,
];

/// Whether `command` exits with the job's own status (every error then
/// exits [`EXIT_SANDBOX_FAILED`]).
pub fn passes_status(command: &Command) -> bool {
    matches!(
        command,
        Command::Job(crate::cli::JobArgs {
            command: JobCommand::Run(_) | JobCommand::Exec(_)
        })
    )
}

/// How a job's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    /// The program was not found on the job's PATH.
    NotFound,
}

impl Finished {
    /// As a shell says it.
    pub fn exit_code(self) -> i32 {
        match self {
            Finished::Exited(c) => c,
            Finished::Signaled(n) => 128 + n,
            Finished::TimedOut => EXIT_TIMEOUT,
            Finished::NotFound => 127,
        }
    }
}

pub fn dispatch(cmd: &JobCommand) -> Result<i32> {
    match cmd {
        JobCommand::Run(a) => run(&a.host, &a.sandbox, &a.cmd),
        JobCommand::Create(a) => create(a).map(|()| 0),
        JobCommand::Exec(a) => exec(&a.host, &a.name, &a.cmd),
        JobCommand::Destroy(a) => destroy_cmd(&a.host, &a.name).map(|()| 0),
        JobCommand::List(a) => list(&a.host, a.json).map(|()| 0),
        JobCommand::Gc(a) => gc_cmd(a).map(|()| 0),
    }
}

// ---- parsing ------------------------------------------------------------

/// `90`, `90s`, `1500ms`, `10m`, `2h`, `1d`.
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad_duration(flag, s))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86400)),
        _ => return Err(bad_duration(flag, s)),
    };
    if d.is_zero() {
        return Err(bad_duration(flag, s));
    }
    Ok(d)
}

fn bad_duration(flag: &str, s: &str) -> Error {
    Error::input(
        format!("{flag} {s:?}"),
        "not a duration",
        format!("give a positive number with a unit: ms, s, m, h or d (e.g. {flag} 90s)"),
    )
}

/// `1048576`, `512K`, `512M`, `2G`, `1T` (powers of 1024).
pub fn parse_size(flag: &str, s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Error::input(
            format!("{flag} {s:?}"),
            "not a size",
            format!("give bytes, or a number with K, M, G or T (e.g. {flag} 2G)"),
        )
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).filter(|v| *v > 0).ok_or_else(bad)
}

fn parse_env(items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
                Ok((k.to_string(), v.to_string()))
            }
            _ => Err(Error::input(
                format!("--env {kv:?}"),
                "not K=V with a non-empty K",
                "e.g. --env CI=true",
            )),
        })
        .collect()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn made_up_name() -> Result<String> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(|e| {
        Error::host(
            "random job name",
            format!("getrandom failed: {e}"),
            "check that getrandom(2) works on this host, or pass --name",
        )
    })?;
    Ok(format!("j{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3]))
}

// ---- making and destroying ----------------------------------------------

/// A job sandbox made and still locked by this process.
struct Made {
    spec: Spec,
    store: Store,
    state: State,
}

fn job_spec(
    root: &Root,
    name: &str,
    sandbox: &JobSandboxArgs,
    systemd: bool,
    expires: Option<u64>,
    creator: Option<Creator>,
) -> Result<Spec> {
    let (policy_name, policy) = crate::policy::Policy::load(&sandbox.policy)?;
    let audit = spec::parse_mode(Some(&sandbox.mode))?;
    let (dns, dns_from_host) = spec::parse_dns(&sandbox.dns, root)?;
    // The pool's first /30 until the host record's lease says which.
    let pool: ipnet::Ipv4Net = crate::host::DEFAULT_POOL
        .parse()
        .map_err(|_| Error::input("the job address pool", "is not an IPv4 CIDR", "report this as a bug"))?;
    let first = pool.subnets(30).ok().and_then(|mut s| s.next()).unwrap_or(pool);
    let (host_ip, sandbox_ip) = crate::host::addresses(first);
    Ok(Spec {
        name: name.to_string(),
        root: root.clone(),
        net: NetSpec {
            netns: format!("{name}0"),
            host_if: format!("{name}0"),
            peer_if: PEER_NAME.to_string(),
            host_ip,
            sandbox_ip,
            prefix: 30,
            table: format!("sandbox_{name}"),
        },
        // A /30 of the host record's pool, leased under the host lock.
        addressing: crate::host::Addressing::Auto { pool },
        policy_name,
        policy,
        audit,
        dns,
        dns_from_host,
        // Nothing of a job lives there; the field is an agent's.
        sandbox_home: PathBuf::from(launch::HOME_IN_JOB),
        openclaw_port: 18789,
        auto_pair: false,
        host_networking: true,
        guardrail: false,
        systemd,
        agent_bin: PathBuf::from("/bin/false"),
        sidecar_bin: PathBuf::from("/bin/false"),
        sidecar_user: None,
        job: Some(JobSpec {
            // Leased with the addresses (see `lease`).
            uid: 0,
            home: root.state_dir(name).join("home"),
            expires,
            creator,
            created: now_s(),
        }),
    })
}

/// Make a job sandbox named `name` and keep its lock. On failure,
/// whatever was made is taken away again.
fn make(
    host: &JobHostArgs,
    sandbox: &JobSandboxArgs,
    name: &str,
    expires: Option<u64>,
    creator: Option<Creator>,
) -> Result<Made> {
    let (name, root) = spec::target(name, &host.root)?;
    if root.state_dir(&name).join("state.json").exists() {
        return Err(Error::input(
            format!("job {name}"),
            "exists already",
            format!("pick another --name, or destroy it first (sandbox job destroy {name})"),
        ));
    }
    // One durable intent and one commit once it is made, as setup does
    // (sys::files, "group commit"): not a sync per record.
    crate::sys::files::group_commit(true);
    let (store, mut state) = Store::open(&root, &name)?;
    let spec = job_spec(&root, &name, sandbox, !host.no_systemd, expires, creator).and_then(|mut spec| {
        lease(&mut spec)?;
        Ok(spec)
    });
    let spec = match spec {
        Ok(s) => s,
        Err(e) => {
            let _ = crate::host::with(&root, |h| h.release_lease(&name));
            let _ = store.remove(&state);
            return Err(e);
        }
    };
    state.spec = serde_json::to_value(&spec).ok();
    let problems = crate::preflight::for_job(&spec);
    let applied = if problems.is_empty() {
        engine::apply_all(&steps::all(), &spec, &store, &mut state, &mut |_| {})
    } else {
        Err(Error::Preflight { problems })
    };
    let applied = applied.and_then(|_| crate::sys::files::commit());
    let mut made = Made { spec, store, state };
    if let Err(e) = applied {
        return Err(
            match teardown(&mut made).and_then(|()| made.store.remove(&made.state)) {
                Ok(()) => e,
                Err(undo) => Error::host(
                    format!("job {name}"),
                    format!("{e}\nand taking it away again failed too: {undo}"),
                    format!("run `sandbox job destroy {name}` (or `sandbox job gc`)"),
                ),
            },
        );
    }
    Ok(made)
}

/// The job's /30 and uid, from the host record, under the host lock,
/// taken briefly while the job's own lock is held (as setup does).
fn lease(spec: &mut Spec) -> Result<()> {
    crate::host::lease_for(spec, None, true)?;
    let passwd = std::fs::read_to_string(spec.root.path("/etc/passwd")).unwrap_or_default();
    let accounts = crate::sys::users::parse_passwd(&passwd);
    let taken = |u: u32| accounts.iter().any(|a| a.uid == u || a.gid == u);
    let uid = crate::host::with(&spec.root, |h| h.lease_uid(&spec.name, &taken))?;
    if let Some(j) = spec.job.as_mut() {
        j.uid = uid;
    }
    Ok(())
}

/// Kill every process of the job, revert its steps, give its lease back,
/// remove its record. Idempotent.
fn teardown(m: &mut Made) -> Result<()> {
    destroy_locked(
        &m.spec.root,
        &m.spec.name,
        m.spec.job.as_ref(),
        m.spec.systemd,
        &m.store,
        &mut m.state,
    )
}

fn destroy_locked(
    root: &Root,
    name: &str,
    job: Option<&JobSpec>,
    systemd: bool,
    store: &Store,
    state: &mut State,
) -> Result<()> {
    if systemd && crate::sys::systemd::booted() {
        if let Ok(mut sd) = crate::sys::systemd::Systemd::connect() {
            let unit = unit_name(name);
            let _ = sd.stop(&unit, Duration::from_secs(30));
            sd.reset_failed(&unit);
        }
    }
    if let Some(j) = job {
        reap::kill_all(j.uid)?;
    }
    let undo = Undo {
        root: root.clone(),
        name: name.to_string(),
        purge: false,
    };
    engine::revert_all(&steps::all(), &undo, store, state, &mut |_| {})?;
    crate::host::with(root, |h| h.release_lease(name))
}

fn unit_name(name: &str) -> String {
    format!("sandbox-job-{name}.service")
}

fn job_of(state: &State) -> Option<Spec> {
    state
        .spec
        .as_ref()
        .and_then(|v| serde_json::from_value::<Spec>(v.clone()).ok())
        .filter(Spec::is_job)
}

// ---- commands -------------------------------------------------------------

fn run(host: &JobHostArgs, sandbox: &JobSandboxArgs, cmd: &JobCmdArgs) -> Result<i32> {
    crate::run::refuse_unprivileged("job run")?;
    let opts = CmdOpts::parse(cmd)?;
    // Before any thread exists: every thread inherits the mask, so the
    // signals wait for us in `pending`.
    block_signals()?;
    let me = std::process::id();
    let name = made_up_name()?;
    let mut made = make(host, sandbox, &name, None, reap::creator(me))?;
    let result = match pending(Duration::ZERO) {
        // Signalled while the sandbox was being made: the command never starts.
        Some(sig) => Ok(Finished::Signaled(sig)),
        None => run_in(&made.spec, &opts),
    };
    // Torn down and its record removed whatever the command did: a
    // command that could not even start (125) leaves nothing either.
    let torn = teardown(&mut made);
    let Made { store, state, .. } = made;
    let removed = torn.and_then(|()| store.remove(&state));
    let finished = result?;
    removed?;
    Ok(finished.exit_code())
}

fn create(a: &JobCreateArgs) -> Result<()> {
    crate::run::refuse_unprivileged("job create")?;
    let ttl = parse_duration("--ttl", &a.ttl)?;
    let creator = match a.creator.as_str() {
        "none" => None,
        "parent" => Some(nix::unistd::getppid().as_raw() as u32),
        pid => Some(pid.parse::<u32>().map_err(|_| {
            Error::input(
                format!("--creator {pid:?}"),
                "not a pid, `parent` or `none`",
                "e.g. --creator none (only the TTL counts)",
            )
        })?),
    };
    let creator = match creator {
        Some(pid) => Some(reap::creator(pid).ok_or_else(|| {
            Error::input(
                format!("--creator {pid}"),
                "no such process",
                "give a running process, or --creator none",
            )
        })?),
        None => None,
    };
    let name = match &a.name {
        Some(n) => n.clone(),
        None => made_up_name()?,
    };
    let made = make(&a.host, &a.sandbox, &name, Some(now_s() + ttl.as_secs()), creator)?;
    crate::outln!("{}", made.spec.name);
    Ok(())
}

fn exec(host: &JobHostArgs, name: &str, cmd: &JobCmdArgs) -> Result<i32> {
    crate::run::refuse_unprivileged("job exec")?;
    let opts = CmdOpts::parse(cmd)?;
    let (name, root) = spec::target(name, &host.root)?;
    let Some(mut spec) = Store::peek(&root, &name)?.as_ref().and_then(job_of) else {
        return Err(Error::input(
            format!("job {name}"),
            "no such job sandbox",
            "make one with `sandbox job create` (it prints the name); `sandbox job list` shows them",
        ));
    };
    spec.root = root;
    spec.systemd = !host.no_systemd;
    block_signals()?;
    Ok(run_in(&spec, &opts)?.exit_code())
}

fn destroy_cmd(host: &JobHostArgs, name: &str) -> Result<()> {
    crate::run::refuse_unprivileged("job destroy")?;
    let (name, root) = spec::target(name, &host.root)?;
    if !root.state_dir(&name).exists() {
        // Nothing there: done already (a lease without a record is gc's).
        return Ok(());
    }
    let (store, mut state) = lock_waiting(&root, &name)?;
    let spec = job_of(&state);
    if spec.is_none() && !state.steps.is_empty() {
        return Err(Error::input(
            format!("job {name}"),
            "is an agent's sandbox, not a job's",
            format!("use `sandbox setup --disable --name {name}` for it"),
        ));
    }
    destroy_locked(
        &root,
        &name,
        spec.as_ref().and_then(|s| s.job.as_ref()),
        !host.no_systemd,
        &store,
        &mut state,
    )?;
    store.remove(&state)
}

fn lock_waiting(root: &Root, name: &str) -> Result<(Store, State)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Store::open(root, name) {
            Err(Error::Locked { .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => return other,
        }
    }
}

/// One job, as `job list` shows it.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    uid: u32,
    sandbox_ip: String,
    policy: String,
    created: u64,
    expires: Option<u64>,
    creator_pid: Option<u32>,
    creator_alive: Option<bool>,
    /// Someone (a `job run`, a `job create` under way) holds its lock.
    in_use: bool,
}

/// The names under the state tree that may be sandboxes'.
fn names_in(root: &Root) -> Result<Vec<String>> {
    let dir = root.path("/var/lib/sandbox");
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| spec::check_name(n).is_ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    names.sort();
    Ok(names)
}

fn jobs(root: &Root) -> Result<Vec<(String, Option<Spec>)>> {
    let mut out = Vec::new();
    for n in names_in(root)? {
        let spec = Store::peek(root, &n).ok().flatten().as_ref().and_then(job_of);
        if spec.is_some() {
            out.push((n, spec));
        }
    }
    Ok(out)
}

/// Whether someone holds the job's lock (a `job run`, a `job create`
/// under way), read from /proc/locks: trying the lock ourselves, even
/// shared, could make that holder's own attempt fail.
fn in_use(root: &Root, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(root.state_dir(name).join("lock")) else {
        return false;
    };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return false;
    };
    let dev = meta.dev();
    let want = format!(
        "{:02x}:{:02x}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev),
        meta.ino()
    );
    locks
        .lines()
        .any(|l| l.contains("FLOCK") && l.split_whitespace().any(|w| w == want))
}

fn list(host: &JobHostArgs, json: bool) -> Result<()> {
    crate::run::refuse_unprivileged("job list")?;
    let root = spec::check_root(&host.root)?;
    let mut rows = Vec::new();
    for (name, spec) in jobs(&root)? {
        let Some(s) = spec else { continue };
        let Some(j) = &s.job else { continue };
        rows.push(Listed {
            in_use: in_use(&root, &name),
            name,
            uid: j.uid,
            sandbox_ip: s.net.sandbox_ip.to_string(),
            policy: s.policy_name.clone(),
            created: j.created,
            expires: j.expires,
            creator_pid: j.creator.map(|c| c.pid),
            creator_alive: j.creator.map(|c| reap::alive(&c)),
        });
    }
    if json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| Error::io("encode", "stdout", e.into()))?;
        crate::outln!("{text}");
        return Ok(());
    }
    if rows.is_empty() {
        crate::outln!("no jobs");
        return Ok(());
    }
    crate::outln!(
        "{:<14} {:<11} {:<15} {:<11} {:<12} creator",
        "NAME",
        "UID",
        "IP",
        "POLICY",
        "EXPIRES IN"
    );
    let now = now_s();
    for r in rows {
        let expires = r
            .expires
            .map_or("-".to_string(), |e| format!("{}s", e.saturating_sub(now)));
        let creator = match (r.creator_pid, r.creator_alive) {
            (Some(p), Some(true)) => format!("{p} (running)"),
            (Some(p), _) => format!("{p} (gone)"),
            _ => "-".into(),
        };
        let name = if r.in_use { format!("{} *", r.name) } else { r.name };
        crate::outln!(
            "{:<14} {:<11} {:<15} {:<11} {:<12} {creator}",
            name,
            r.uid,
            r.sandbox_ip,
            r.policy,
            expires
        );
    }
    Ok(())
}

/// Why `gc` takes a job away, if it does.
fn garbage(j: &JobSpec, now: u64) -> Option<String> {
    if j.expires.is_some_and(|e| now >= e) {
        return Some("its TTL has passed".into());
    }
    match &j.creator {
        Some(c) if !reap::alive(c) => Some(format!("its creator (pid {}) is gone", c.pid)),
        _ => None,
    }
}

fn gc_cmd(a: &JobHostArgs) -> Result<()> {
    crate::run::refuse_unprivileged("job gc")?;
    let root = spec::check_root(&a.root)?;
    for line in gc(&root, !a.no_systemd)? {
        crate::outln!("{line}");
    }
    Ok(())
}

/// Destroy every job past its TTL or whose creator died, and leases left
/// without a job. A job whose lock is held (running, being made) is left
/// alone. Says what it did; used by `job gc` and at boot.
pub fn gc(root: &Root, systemd: bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut first_err = None;
    let now = now_s();
    for (name, _) in jobs(root)? {
        let (store, mut state) = match Store::open(root, &name) {
            Ok(s) => s,
            Err(Error::Locked { .. }) => continue,
            Err(e) => {
                first_err.get_or_insert(e);
                continue;
            }
        };
        let Some(spec) = job_of(&state) else { continue };
        let Some(j) = spec.job.as_ref() else { continue };
        let Some(why) = garbage(j, now) else { continue };
        let done =
            destroy_locked(root, &name, Some(j), systemd, &store, &mut state).and_then(|()| store.remove(&state));
        match done {
            Ok(()) => out.push(format!("destroyed job {name}: {why}")),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    // A job whose creator died before its first record: a state directory
    // holding nothing but its lock file, whose lock nobody holds (the
    // creator holds it from before the lease until the job is gone), and
    // maybe a lease. Nobody else leaves such a directory.
    for name in names_in(root)? {
        let dir = root.state_dir(&name);
        let only_lock = std::fs::read_dir(&dir)
            .map(|d| d.flatten().all(|e| e.file_name() == "lock"))
            .unwrap_or(false);
        if !only_lock || in_use(root, &name) {
            continue;
        }
        let done = match Store::open(root, &name) {
            Ok((store, mut state)) if state.steps.is_empty() && state.spec.is_none() => {
                destroy_locked(root, &name, None, false, &store, &mut state).and_then(|()| store.remove(&state))
            }
            _ => continue,
        };
        match done {
            Ok(()) => out.push(format!("destroyed job {name}: its creator died before its first step")),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

// ---- running a command ------------------------------------------------------

struct CmdOpts {
    timeout: Option<Duration>,
    memory_max: Option<u64>,
    tasks_max: Option<u64>,
    env: Vec<(String, String)>,
    cmd: Vec<String>,
}

impl CmdOpts {
    fn parse(a: &JobCmdArgs) -> Result<CmdOpts> {
        Ok(CmdOpts {
            timeout: a
                .timeout
                .as_deref()
                .map(|t| parse_duration("--timeout", t))
                .transpose()?,
            memory_max: a
                .memory_max
                .as_deref()
                .map(|m| parse_size("--memory-max", m))
                .transpose()?,
            tasks_max: match a.tasks_max {
                Some(0) => {
                    return Err(Error::input(
                        "--tasks-max 0",
                        "would not even start the command",
                        "give 1 or more",
                    ))
                }
                n => n,
            },
            env: parse_env(&a.env)?,
            cmd: a.cmd.clone(),
        })
    }
}

fn job_env(opts: &CmdOpts) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), JOB_PATH.to_string()),
        ("HOME".to_string(), launch::HOME_IN_JOB.to_string()),
    ];
    for k in ["LANG", "TERM"] {
        if let Ok(v) = std::env::var(k) {
            env.push((k.to_string(), v));
        }
    }
    for (k, v) in &opts.env {
        env.retain(|(old, _)| old != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// Run the command in the job `spec` describes and wait for it.
fn run_in(spec: &Spec, opts: &CmdOpts) -> Result<Finished> {
    let Some(j) = &spec.job else {
        return Err(Error::input(
            format!("sandbox {}", spec.name),
            "is not a job's",
            "use a job",
        ));
    };
    let env = job_env(opts);
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(JOB_PATH, |(_, v)| v.as_str());
    let program = &opts.cmd[0];
    let Some(resolved) = launch::resolve(program, path) else {
        crate::errln!("sandbox: {program}: command not found (on the job's PATH {path})");
        return Ok(Finished::NotFound);
    };
    let dns_dir = spec.root.path(format!("/etc/netns/{}", spec.net.netns));
    let l = launch::Launch {
        uid: j.uid,
        netns: spec.root.netns_path(&spec.net.netns),
        resolv_conf: dns_dir.join("resolv.conf"),
        nsswitch_conf: dns_dir.join("nsswitch.conf"),
        home: j.home.clone(),
        program: resolved,
        argv: opts.cmd.clone(),
        env,
        tasks_max: opts.tasks_max,
        memory_max: opts.memory_max,
    };
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    if spec.systemd {
        let mut sd = crate::sys::systemd::Systemd::connect()?;
        let unit = transient::Unit {
            name: spec.name.clone(),
            launch: &l,
        };
        return transient::run(&mut sd, &unit, deadline, pending);
    }
    let pid = launch::spawn(&l)?;
    wait_child(pid, j.uid, deadline)
}

fn block_signals() -> Result<()> {
    let mut set = nix::sys::signal::SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(nix::sys::signal::Signal::SIGCHLD);
    set.thread_block()
        .map_err(|e| Error::io("block signals", "sandbox job", e.into()))
}

/// A forwarded signal that arrived (waiting up to `wait` for one).
fn pending(wait: Duration) -> Option<i32> {
    use nix::libc;
    // SAFETY: sigemptyset/sigaddset fill a zeroed set we own;
    // sigtimedwait only reads the set and the timeout, and writes nothing
    // (info is null).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s as libc::c_int);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        let sig = libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
        (sig > 0 && sig != libc::SIGCHLD).then_some(sig)
    }
}

/// Wait for the command; forward signals to it; kill the whole job at the
/// deadline or when the command outstays a forwarded signal's grace.
fn wait_child(pid: u32, uid: u32, deadline: Option<Instant>) -> Result<Finished> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let child = nix::unistd::Pid::from_raw(pid as i32);
    let mut forwarded_at: Option<Instant> = None;
    let mut timed_out = false;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) if timed_out => {
                let _ = code;
                return Ok(Finished::TimedOut);
            }
            Ok(WaitStatus::Signaled(..)) if timed_out => return Ok(Finished::TimedOut),
            Ok(WaitStatus::Exited(_, code)) => return Ok(Finished::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Finished::Signaled(sig as i32)),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::io("wait for", "the job's command", e.into())),
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) && !timed_out {
            timed_out = true;
            reap::kill_all(uid)?;
            continue;
        }
        if forwarded_at.is_some_and(|t| now >= t + GRACE) {
            reap::kill_all(uid)?;
        }
        let mut wait = Duration::from_millis(200);
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(now));
        }
        if let Some(sig) = pending(wait) {
            // SAFETY: kill(2) on our own child's pid, which is not reaped
            // yet (so not reused).
            unsafe {
                nix::libc::kill(pid as i32, sig);
            }
            forwarded_at.get_or_insert(Instant::now());
        }
    }
}

/// The job's home as `--root` sees it (for tests and `job list`).
pub fn home_of(root: &Path, name: &str) -> PathBuf {
    Root(root.to_path_buf()).state_dir(name).join("home")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_as_documented() {
        assert_eq!(parse_duration("--timeout", "90").expect("90"), Duration::from_secs(90));
        assert_eq!(
            parse_duration("--timeout", "1500ms").expect("ms"),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("--ttl", "3h").expect("h"), Duration::from_secs(3 * 3600));
        for bad in ["", "0", "5x", "-3s", "s"] {
            let e = parse_duration("--timeout", bad).expect_err(bad).to_string();
            assert!(e.contains("fix:"), "{e}");
        }
        assert_eq!(parse_size("--memory-max", "512M").expect("M"), 512 << 20);
        assert_eq!(parse_size("--memory-max", "2G").expect("G"), 2 << 30);
        assert_eq!(parse_size("--memory-max", "4096").expect("bytes"), 4096);
        assert!(parse_size("--memory-max", "2GB").is_err());
        assert!(parse_size("--memory-max", "0").is_err());
    }

    #[test]
    fn exit_codes_are_a_shells() {
        assert_eq!(Finished::Exited(3).exit_code(), 3);
        assert_eq!(Finished::Signaled(9).exit_code(), 137);
        assert_eq!(Finished::TimedOut.exit_code(), 124);
        assert_eq!(Finished::NotFound.exit_code(), 127);
    }

    #[test]
    fn env_is_k_equals_v_and_later_wins() {
        assert!(parse_env(&["=x".into()]).is_err());
        assert!(parse_env(&["NOEQUALS".into()]).is_err());
        let opts = CmdOpts {
            timeout: None,
            memory_max: None,
            tasks_max: None,
            env: parse_env(&["CI=true".into(), "PATH=/bin".into()]).expect("env"),
            cmd: vec!["true".into()],
        };
        let env = job_env(&opts);
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
        assert!(env.contains(&("PATH".into(), "/bin".into())));
        assert!(env.contains(&("HOME".into(), launch::HOME_IN_JOB.into())));
    }

    #[test]
    fn a_job_is_garbage_past_its_ttl_or_without_its_creator() {
        let me = reap::creator(std::process::id()).expect("me");
        let mut j = JobSpec {
            uid: crate::host::JOB_UIDS.start,
            home: "/x".into(),
            expires: Some(100),
            creator: Some(me),
            created: 0,
        };
        assert_eq!(garbage(&j, 99), None);
        assert!(garbage(&j, 100).is_some_and(|w| w.contains("TTL")));
        j.expires = None;
        j.creator = Some(Creator {
            pid: me.pid,
            start: me.start + 1,
        });
        assert!(garbage(&j, 0).is_some_and(|w| w.contains("creator")));
    }
}
