//! Our resolver for the sandbox (see `crate::resolver`), wanted when the
//! policy names hosts or in audit mode: its config, `resolver.json` in the
//! sandbox's root-owned state directory, and the process.
//!
//! Under systemd the process is `sandbox-resolver@<name>.service` (the
//! units step installs and starts it; this step restarts it when its config
//! changed). Under `--no-systemd` this step starts `sandbox resolver --name
//! N --root DIR` itself, in its own process group, and records its pid and
//! start time; revert stops exactly that process (a reused pid is left).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::resolver::{self, Config};
use crate::spec::Spec;
use crate::sys::files;

pub struct Resolver;

/// How long a started resolver gets to listen.
const READY_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// The state directory holding our files.
    dir: PathBuf,
    /// Under `--no-systemd`: the process we started.
    process: Option<Process>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Process {
    pid: u32,
    /// Field 22 of /proc/<pid>/stat: tells our process from a reused pid.
    start: u64,
    /// The namespace it entered (device, inode): one made anew since
    /// needs a new resolver.
    #[serde(default)]
    netns: Option<(u64, u64)>,
}

/// The start time of a live process, None when it is gone (or a zombie).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn alive(p: &Process) -> bool {
    start_time(p.pid) == Some(p.start)
}

/// Running, and in the namespace at `spec`'s path now.
fn current(p: &Process, spec: &Spec) -> bool {
    alive(p) && p.netns == crate::resolver::serve::namespace_id(&spec.root.netns_path(&spec.net.netns))
}

fn config_path(spec: &Spec) -> PathBuf {
    resolver::file(&spec.root, &spec.name, resolver::CONFIG)
}

/// Whether the resolver runs as its unit: under systemd, but for a CI
/// job, which has no units (its resolver is a process the record tracks).
fn as_unit(spec: &Spec) -> bool {
    crate::steps::units::talks_to_systemd(spec) && !spec.is_job()
}

/// The resolver's unit under systemd.
pub fn unit(name: &str) -> String {
    format!("sandbox-resolver@{name}.service")
}

impl Step for Resolver {
    fn id(&self) -> &'static str {
        "resolver"
    }

    fn wanted(&self, spec: &Spec) -> bool {
        spec.uses_resolver()
    }

    /// A job whose policy names hosts needs it too.
    fn in_jobs(&self) -> bool {
        true
    }

    /// Port 53 on the host IP must be free for the resolver: a DNS server
    /// of the host's bound to every address (dnsmasq's default) or to the
    /// host IP would make it fail at start, after other steps changed the
    /// host. Our own resolver of this sandbox (a re-run) is no conflict.
    fn preflight(&self, spec: &Spec) -> Vec<Error> {
        let port = crate::firewall::generate::RESOLVER_PORT;
        let host_ip = spec.net.host_ip;
        crate::sys::ports::bound_v4(port)
            .into_iter()
            .filter(|b| b.addr.is_unspecified() || b.addr == host_ip)
            .filter_map(|b| {
                let owner = crate::sys::ports::owner(b.inode);
                let ours = owner.as_ref().is_some_and(|(_, args)| {
                    args.len() >= 4 && args[0].ends_with("sandbox") && args[1..4] == ["resolver", "--name", &spec.name]
                });
                if ours {
                    return None;
                }
                let who = match &owner {
                    Some((pid, args)) => format!("{} (pid {pid})", args.join(" ")),
                    None => format!("a process this run cannot see (socket inode {})", b.inode),
                };
                Some(Error::host(
                    format!("{} port {port} on {}", b.proto, b.addr),
                    format!(
                        "is taken by {who}: the policy names hosts, so the sandbox's resolver must listen on {host_ip}:{port}"
                    ),
                    "bind that DNS server to its own addresses only (dnsmasq: bind-interfaces with \
                     listen-address; unbound: interface:), or give this sandbox a policy that lists \
                     resolvers instead of names; then re-run",
                ))
            })
            .collect()
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        let body = Config::of(spec).to_json();
        inv.file(
            self.id(),
            &config_path(spec),
            "root",
            0o600,
            body.as_bytes(),
            "removed with its counts and log",
        );
    }

    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let path = config_path(spec);
        let body = Config::of(spec).to_json();
        if files::hash_of(&path)?.as_deref() != Some(&files::sha256_hex(body.as_bytes())) {
            out.push(format!("write {} (names: {})", path.display(), names(spec)));
        }
        if !as_unit(spec) {
            let running = rec
                .and_then(|v| data::<Record>(self.id(), v).ok())
                .and_then(|r| r.process)
                .is_some_and(|p| current(&p, spec));
            if !running || !out.is_empty() {
                out.push(format!(
                    "start the resolver (`sandbox resolver --name {}`) on {}:53, UDP and TCP",
                    spec.name, spec.net.host_ip
                ));
            }
        }
        Ok(out)
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let mut r = rec.get::<Record>().unwrap_or_default();
        r.dir = rec.state_dir();
        rec.put(&r)?;
        let path = config_path(spec);
        let body = Config::of(spec).to_json();
        let changed = files::hash_of(&path)?.as_deref() != Some(&files::sha256_hex(body.as_bytes()));
        let mut out = Vec::new();
        if changed {
            files::write_atomic(&path, body.as_bytes(), 0o600)?;
            out.push(format!("wrote {} (names: {})", path.display(), names(spec)));
        }
        if as_unit(spec) {
            if changed {
                restart_unit_if_active(&spec.name, &mut out)?;
            }
            return Ok(out);
        }
        let running = r.process.filter(alive);
        if running.is_some_and(|p| current(&p, spec)) && !changed {
            return Ok(out);
        }
        if let Some(p) = running {
            stop(&p)?;
            let why = if changed {
                "to take the new config"
            } else {
                "its namespace was made anew"
            };
            out.push(format!("stopped the resolver (pid {}): {why}", p.pid));
        }
        let p = start(spec, &r.dir)?;
        r.process = Some(p);
        rec.put(&r)?;
        out.push(format!(
            "started the resolver on {}:53 (pid {}, log {})",
            spec.net.host_ip,
            p.pid,
            r.dir.join(resolver::LOG).display()
        ));
        Ok(out)
    }

    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        let mut out = Vec::new();
        if let Some(p) = r.process {
            if alive(&p) {
                stop(&p)?;
                out.push(format!("stopped the resolver (pid {})", p.pid));
            }
        }
        if r.dir.as_os_str().is_empty() {
            return Ok(out);
        }
        let dir = crate::originals::confined(&undo.root, &r.dir)?;
        for f in [resolver::CONFIG, resolver::STATS, resolver::LOG] {
            let path = dir.join(f);
            match std::fs::remove_file(&path) {
                Ok(()) => out.push(format!("removed {}", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
            files::remove_temp(&path)?;
        }
        Ok(out)
    }

    /// Without a record: a resolver of this sandbox still running (found by
    /// its command line) is stopped, and its files in the state directory
    /// go.
    fn sweep(&self, undo: &Undo, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for p in orphans(name, &undo.root.0) {
            stop(&p)?;
            out.push(format!(
                "stopped the resolver of sandbox {name} (pid {}, found by its command line)",
                p.pid
            ));
        }
        let dir = undo.root.state_dir(name);
        for f in [resolver::CONFIG, resolver::STATS, resolver::LOG] {
            let path = dir.join(f);
            if std::fs::remove_file(&path).is_ok() {
                out.push(format!("removed {}", path.display()));
            }
        }
        Ok(out)
    }
}

/// `sandbox resolver --name <name> --root <root>` processes: ours by their
/// command line (the program is this one, or one of its name).
fn orphans(name: &str, root: &Path) -> Vec<Process> {
    let want: Vec<String> = vec![
        "resolver".into(),
        "--name".into(),
        name.into(),
        "--root".into(),
        root.display().to_string(),
    ];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let ours = args.len() == 6 && args[0].ends_with("sandbox") && args[1..] == want[..];
            ours.then(|| {
                start_time(pid).map(|start| Process {
                    pid,
                    start,
                    netns: None,
                })
            })?
        })
        .collect()
}

fn names(spec: &Spec) -> String {
    let list: Vec<String> = spec.policy.host_rules().map(|(_, h, _)| h.to_string()).collect();
    match (list.is_empty(), spec.audit) {
        (true, true) => "any (audit mode)".into(),
        (true, false) => "none".into(),
        (false, true) => format!("{}, and any other (audit mode)", list.join(", ")),
        (false, false) => list.join(", "),
    }
}

/// Start `sandbox resolver` in its own process group (setup's end does not
/// end it), its log appended to the state directory, and wait until it
/// says it listens ("ready" on its standard output, a pipe to us).
fn start(spec: &Spec, dir: &Path) -> Result<Process> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| Error::io("find own program", "/proc/self/exe", e))?;
    let log_path = dir.join(resolver::LOG);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io("open the resolver log", &log_path, e))?;
    let mut child = Command::new(exe)
        .args(["resolver", "--name", &spec.name, "--root"])
        .arg(&spec.root.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("start the resolver", &log_path, e))?;
    let pid = child.id();
    let failed = |why: String| {
        let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
        let last: Vec<&str> = tail.lines().rev().take(3).collect();
        let last: Vec<&str> = last.into_iter().rev().collect();
        Error::host(
            format!("the resolver of sandbox {} (pid {pid})", spec.name),
            format!("{why}: {}", last.join(" / ")),
            format!("see {}; then re-run setup", log_path.display()),
        )
    };
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
    }
    match rx.recv_timeout(READY_WITHIN) {
        Ok(line) if line.trim() == "ready" => {}
        Ok(_) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(failed(format!("exited at start ({status})")));
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "not listening after {}s (stopped)",
                READY_WITHIN.as_secs()
            )));
        }
    }
    let start = start_time(pid).ok_or_else(|| failed("vanished right after it started".into()))?;
    // Reaped by init once setup exits; the record names it by pid and start.
    drop(child);
    let netns = crate::resolver::serve::namespace_id(&spec.root.netns_path(&spec.net.netns));
    Ok(Process { pid, start, netns })
}

/// SIGTERM, then SIGKILL after two seconds; only the process we started.
fn stop(p: &Process) -> Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(i32::try_from(p.pid).unwrap_or(i32::MAX));
    for (sig, wait) in [
        (Signal::SIGTERM, Duration::from_secs(2)),
        (Signal::SIGKILL, Duration::from_secs(2)),
    ] {
        if !alive(p) {
            return Ok(());
        }
        let _ = kill(pid, sig);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            // Our own child (started by this very run) must be reaped.
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            if !alive(p) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Err(Error::host(
        format!("the resolver (pid {})", p.pid),
        "did not stop on SIGTERM nor SIGKILL",
        format!("look at /proc/{}/status; stop it by hand, then re-run", p.pid),
    ))
}

fn restart_unit_if_active(name: &str, out: &mut Vec<String>) -> Result<()> {
    let mut sd = crate::sys::systemd::Systemd::connect()?;
    let unit = unit(name);
    if sd.state(&unit).is_ok_and(|s| s.is_active()) {
        sd.restart(&unit, Duration::from_secs(30))?;
        out.push(format!("restarted {unit} to take the new config"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_reads_our_own_process_and_not_a_dead_one() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert_eq!(start_time(u32::MAX), None);
    }
}
