//! `sandbox doctor`: an offline check of the host, before or after setup.
//! One line per check, each with its fix; a non-zero exit when something
//! a setup needs is missing. It changes nothing: kernel features are read
//! from /proc, /sys and the module lists (a veth is only ever tried in a
//! throwaway network namespace that dies with its thread), programs are
//! asked for `--version` under a timeout, the state records are read
//! without their lock and the audit log is opened for appending but never
//! written.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::DoctorArgs;
use crate::error::{Error, Result};
use crate::spec::Root;

/// Longest wait for a program's `--version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Worth knowing; setup works anyway.
    Warn,
    /// Setup (or the sandbox it makes) needs this.
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub level: Level,
    pub name: &'static str,
    pub detail: String,
    /// Empty when there is nothing to do.
    pub fix: String,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            level: Level::Ok,
            name,
            detail: detail.into(),
            fix: String::new(),
        }
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            level: Level::Warn,
            name,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            level: Level::Fail,
            name,
            detail: detail.into(),
            fix: fix.into(),
        }
    }

    /// `ok    nft            nftables v1.0.6` or `FAIL  nft  <why>; fix: <what>`.
    pub fn line(&self) -> String {
        let tag = match self.level {
            Level::Ok => "ok",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        let mut s = format!("{tag:<5} {:<16} {}", self.name, self.detail);
        if !self.fix.is_empty() {
            s.push_str("; fix: ");
            s.push_str(&self.fix);
        }
        s
    }
}

/// `sandbox doctor`.
pub fn run(args: &DoctorArgs) -> Result<()> {
    let (name, root) = crate::spec::target(&args.name, &args.root)?;
    let checks = collect(args, &root, &name);
    for c in &checks {
        crate::outln!("{}", c.line());
    }
    let failed = checks.iter().filter(|c| c.level == Level::Fail).count();
    if failed == 0 {
        return Ok(());
    }
    Err(Error::host(
        "this host",
        format!("{failed} check(s) a setup needs failed (the FAIL lines above)"),
        "apply each FAIL line's fix, then run `sandbox doctor` again",
    ))
}

pub fn collect(args: &DoctorArgs, root: &Root, name: &str) -> Vec<Check> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let modules = KernelModules::read(Path::new("/lib/modules"), &release);
    let mut out = vec![
        Check::ok(
            "sandbox",
            format!(
                "version {} (commit {})",
                env!("CARGO_PKG_VERSION"),
                env!("SANDBOX_COMMIT")
            ),
        ),
        privileges(nix::unistd::geteuid().is_root()),
        netns(Path::new("/proc/self/ns/net").exists()),
        nf_tables(Path::new("/sys/module/nf_tables").exists(), &modules, nft_probe),
        veth(Path::new("/sys/module/veth").exists(), &modules, &release),
        nft(),
    ];
    out.push(if args.no_systemd {
        Check::ok("systemd", "not asked (--no-systemd): setup needs --no-systemd too")
    } else {
        match crate::sys::systemd::Systemd::connect() {
            Ok(_) => Check::ok("systemd", "the manager answers on the D-Bus system bus"),
            Err(e) => Check::fail(
                "systemd",
                first_line(&e.to_string()),
                crate::sys::systemd::NO_SYSTEMD_FIX,
            ),
        }
    });
    out.push(program(
        "openclaw",
        "--agent-bin",
        &args.agent_bin,
        &root.path(&args.agent_bin),
        "install OpenClaw there (README, \"Install\"), or pass --agent-bin PATH",
    ));
    out.push(program(
        "defenseclaw",
        "--sidecar-bin",
        &args.sidecar_bin,
        &root.path(&args.sidecar_bin),
        "install the DefenseClaw gateway there, or pass --sidecar-bin PATH",
    ));
    out.push(state_records(root, name));
    out.push(audit_log(&crate::audit::path(root)));
    out
}

fn privileges(root: bool) -> Check {
    if root {
        Check::ok("privileges", "running as root")
    } else {
        Check::fail(
            "privileges",
            format!(
                "running as uid {}: setup needs root, and some checks below cannot see everything",
                nix::unistd::geteuid()
            ),
            "run it with sudo: sudo sandbox doctor",
        )
    }
}

fn netns(present: bool) -> Check {
    if present {
        Check::ok("kernel netns", "network namespaces (/proc/self/ns/net)")
    } else {
        Check::fail(
            "kernel netns",
            "/proc/self/ns/net is missing: the kernel has no network namespaces",
            "boot a kernel built with CONFIG_NET_NS (Debian's is)",
        )
    }
}

/// What `/lib/modules/<release>/` says about a module: built in, or
/// loadable.
#[derive(Debug, Default, Clone)]
pub struct KernelModules {
    builtin: String,
    dep: String,
}

impl KernelModules {
    pub fn read(base: &Path, release: &str) -> KernelModules {
        let dir = base.join(release);
        let read = |f: &str| {
            crate::sys::bounded::read_regular(&dir.join(f), 64 << 20)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        KernelModules {
            builtin: read("modules.builtin"),
            dep: read("modules.dep"),
        }
    }

    pub fn from_text(builtin: &str, dep: &str) -> KernelModules {
        KernelModules {
            builtin: builtin.into(),
            dep: dep.into(),
        }
    }

    fn lists(text: &str, module: &str) -> bool {
        let file = format!("/{module}.ko");
        text.lines().any(|l| {
            let path = l.split(':').next().unwrap_or("");
            // modules.dep may name the compressed file (veth.ko.xz).
            path.ends_with(&file) || path.contains(&format!("{file}.")) || path == &file[1..]
        })
    }

    pub fn builtin(&self, module: &str) -> bool {
        Self::lists(&self.builtin, module)
    }

    pub fn loadable(&self, module: &str) -> bool {
        Self::lists(&self.dep, module)
    }
}

fn nf_tables(loaded: bool, modules: &KernelModules, probe: impl FnOnce() -> std::result::Result<(), String>) -> Check {
    let name = "kernel nftables";
    if loaded {
        Check::ok(name, "nf_tables is loaded")
    } else if modules.builtin("nf_tables") {
        Check::ok(name, "nf_tables is built in")
    } else if modules.loadable("nf_tables") {
        Check::ok(name, "nf_tables is a module (loaded on first use)")
    } else if let Err(why) = probe() {
        if why.contains("not on PATH") {
            // The nft line fails already; without nft this cannot be told.
            return Check::warn(
                name,
                format!("not found in /sys/module or /lib/modules, and {why}"),
                "install nftables, then run `sandbox doctor` again",
            );
        }
        Check::fail(
            name,
            format!("nf_tables is neither loaded, built in nor in /lib/modules, and {why}"),
            "boot a kernel with CONFIG_NF_TABLES (Debian's has it), or install its modules package",
        )
    } else {
        Check::ok(name, "nf_tables works (tried in a throwaway namespace)")
    }
}

/// `nft list tables` in a network namespace of its own (a thread that
/// then ends): it fails when the kernel has no nf_tables. Nothing on the
/// host is listed or changed.
fn nft_probe() -> std::result::Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root, so not tried".into());
    }
    crate::sys::nft::available()?;
    let t = std::thread::Builder::new()
        .name("doctor-nft".into())
        .spawn(|| -> std::result::Result<(), String> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
            // A child forked from this thread starts in its namespace.
            let out = Command::new("nft")
                .args(["list", "tables"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run nft: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "`nft list tables` failed: {}",
                    first_line(&String::from_utf8_lossy(&out.stderr))
                ))
            }
        })
        .map_err(|e| format!("spawn: {e}"))?;
    t.join().map_err(|_| "the probe thread panicked".to_string())?
}

fn veth(loaded: bool, modules: &KernelModules, release: &str) -> Check {
    let name = "kernel veth";
    if loaded {
        return Check::ok(name, "veth is loaded");
    }
    if modules.builtin("veth") {
        return Check::ok(name, "veth is built in");
    }
    if modules.loadable("veth") {
        return Check::ok(name, "veth is a module (loaded on first use)");
    }
    // Nothing on disk says: try one in a throwaway namespace (root only).
    match veth_probe() {
        Ok(()) => Check::ok(name, "a veth pair can be made (tried in a throwaway namespace)"),
        Err(why) => Check::fail(
            name,
            format!("no veth module for kernel {release} and none could be made: {why}"),
            "boot a kernel with CONFIG_VETH (Debian's has it), or install its modules package",
        ),
    }
}

/// Make a veth pair in a network namespace of its own, on a thread that
/// then ends: the namespace and the pair die with it.
fn veth_probe() -> std::result::Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root, so not tried".into());
    }
    let t = std::thread::Builder::new()
        .name("doctor-veth".into())
        .spawn(|| -> std::result::Result<(), String> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
            let nl = crate::sys::netlink::Netlink::host().map_err(|e| e.to_string())?;
            nl.create_veth(
                "doctor0",
                "doctor1",
                Path::new("/proc/thread-self/ns/net"),
                "sandbox doctor",
            )
            .map_err(|e| e.to_string())
        })
        .map_err(|e| format!("spawn: {e}"))?;
    t.join().map_err(|_| "the probe thread panicked".to_string())?
}

fn nft() -> Check {
    let name = "nft";
    let fix = "install nftables: apt-get install nftables";
    if let Err(why) = crate::sys::nft::available() {
        return Check::fail(name, why, fix);
    }
    match version_of(Path::new("nft")) {
        Ok(v) => Check::ok(name, v),
        Err(why) => Check::fail(name, format!("`nft --version`: {why}"), fix),
    }
}

fn program(name: &'static str, flag: &str, shown: &Path, path: &Path, fix: &str) -> Check {
    if !is_executable(path) {
        return Check::fail(
            name,
            format!("{} ({flag}) is missing or not executable", shown.display()),
            fix,
        );
    }
    match version_of(path) {
        Ok(v) => Check::ok(name, format!("{}: {v}", shown.display())),
        Err(why) => Check::warn(
            name,
            format!("{}: `--version` {why}", shown.display()),
            "check that it is the right program and that it runs as root",
        ),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first line `PROGRAM --version` prints, within VERSION_TIMEOUT.
fn version_of(program: &Path) -> std::result::Result<String, String> {
    version_with_timeout(program, VERSION_TIMEOUT)
}

pub fn version_with_timeout(program: &Path, timeout: Duration) -> std::result::Result<String, String> {
    let mut child = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    // Read on the side: a chatty program must not block on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stdout).take(64 << 10).read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not answer within {} s", timeout.as_secs()));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    // A grandchild holding the pipe open would keep the reader waiting:
    // give it no longer than the program had.
    let buf = join_within(
        reader,
        deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(100),
    )
    .unwrap_or_default();
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    let text = String::from_utf8_lossy(&buf);
    let line = first_line(&text);
    if line.is_empty() {
        Err("printed nothing".into())
    } else {
        Ok(line)
    }
}

fn join_within(h: std::thread::JoinHandle<Vec<u8>>, wait: Duration) -> Option<Vec<u8>> {
    let until = Instant::now() + wait;
    while !h.is_finished() {
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    h.join().ok()
}

/// The first non-empty line, trimmed and at most 120 characters.
pub fn first_line(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    line.chars().take(120).collect()
}

/// Every record under `<root>/var/lib/sandbox/`, read without its lock.
fn state_records(root: &Root, name: &str) -> Check {
    let check = "state records";
    let dir = root.path("/var/lib/sandbox");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::ok(check, format!("none yet ({} does not exist)", dir.display()))
        }
        Err(e) => {
            return Check::fail(
                check,
                format!("cannot list {}: {e}", dir.display()),
                "run it as root (sudo sandbox doctor)",
            )
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    names.sort();
    let mut read = Vec::new();
    for n in &names {
        match crate::state::Store::peek(root, n) {
            Ok(Some(s)) => read.push(format!("{n} ({} steps)", s.steps.len())),
            Ok(None) => read.push(format!("{n} (no record)")),
            Err(e) => {
                return Check::fail(
                    check,
                    format!("sandbox {n}: {}", first_line(&e.to_string())),
                    format!(
                    "the record must be root's and readable; see `sudo sandbox status --name {n}` and README \"State\""
                ),
                )
            }
        }
    }
    if read.is_empty() {
        return Check::ok(check, format!("none yet under {}", dir.display()));
    }
    let mine = if names.iter().any(|n| n == name) {
        String::new()
    } else {
        format!("; none for --name {name}")
    };
    Check::ok(check, format!("readable: {}{mine}", read.join(", ")))
}

/// The audit log can be appended to: opened for appending (no write), or
/// the nearest existing directory above it is writable.
pub fn audit_log(path: &Path) -> Check {
    let check = "audit log";
    let fix = format!(
        "make {} a regular file root can append to (or remove it; setup creates it)",
        path.display()
    );
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => {
            return Check::fail(check, format!("{} is not a regular file", path.display()), fix)
        }
        Ok(_) => {
            use std::os::unix::fs::OpenOptionsExt;
            return match std::fs::OpenOptions::new()
                .append(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(path)
            {
                Ok(_) => Check::ok(check, format!("{} can be appended to", path.display())),
                Err(e) => Check::fail(check, format!("{}: {e}", path.display()), fix),
            };
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Check::fail(check, format!("{}: {e}", path.display()), fix)
        }
        Err(_) => {}
    }
    let mut dir: PathBuf = path.to_path_buf();
    while let Some(parent) = dir.parent() {
        dir = parent.to_path_buf();
        if dir.exists() {
            break;
        }
    }
    match nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK) {
        Ok(()) => Check::ok(
            check,
            format!(
                "{} does not exist yet; setup can create it in {}",
                path.display(),
                dir.display()
            ),
        ),
        Err(e) => Check::fail(
            check,
            format!(
                "{} does not exist and {} is not writable: {e}",
                path.display(),
                dir.display()
            ),
            "run it as root, on a writable /var/log",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_found_in_either_list_compressed_or_not() {
        let m = KernelModules::from_text(
            "kernel/net/netfilter/nf_tables.ko\n",
            "kernel/drivers/net/veth.ko.xz:\nkernel/drivers/net/vethx.ko: kernel/a.ko\n",
        );
        assert!(m.builtin("nf_tables"));
        assert!(!m.loadable("nf_tables"));
        assert!(m.loadable("veth"));
        assert!(!m.builtin("veth"));
        assert!(!m.loadable("eth"), "a suffix of another module's name is not it");
    }

    #[test]
    fn a_kernel_without_nf_tables_fails_with_its_fix() {
        let none = KernelModules::default();
        let c = nf_tables(false, &none, || Err("`nft list tables` failed".into()));
        assert_eq!(c.level, Level::Fail);
        assert!(
            c.line().contains("fix: boot a kernel with CONFIG_NF_TABLES"),
            "{}",
            c.line()
        );
        assert_eq!(nf_tables(false, &none, || Ok(())).level, Level::Ok);
        let never = || -> std::result::Result<(), String> { panic!("probed although the module is loaded") };
        assert_eq!(nf_tables(true, &none, never).level, Level::Ok);
        let module = KernelModules::from_text("", "kernel/net/netfilter/nf_tables.ko: x\n");
        assert_eq!(nf_tables(false, &module, never).level, Level::Ok);
    }

    #[test]
    fn lines_carry_the_fix_only_when_there_is_one() {
        assert_eq!(Check::ok("nft", "v1").line(), "ok    nft              v1");
        let f = Check::fail("nft", "missing", "install it").line();
        assert!(f.starts_with("FAIL  nft "), "{f}");
        assert!(f.ends_with("missing; fix: install it"), "{f}");
        assert_eq!(f.lines().count(), 1);
    }

    #[test]
    fn first_line_skips_blank_lines_and_bounds_the_length() {
        assert_eq!(
            first_line("\n  nftables v1.0.6 (Lester Gooch #5)\nmore"),
            "nftables v1.0.6 (Lester Gooch #5)"
        );
        assert_eq!(first_line(&"x".repeat(500)).len(), 120);
        assert_eq!(first_line(""), "");
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
        p
    }

    #[test]
    fn programs_are_asked_for_their_version_under_a_timeout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let good = script(tmp.path(), "good", "echo 'OpenClaw 2026.9.6'");
        let hangs = script(tmp.path(), "hangs", "exec sleep 30");
        let fails = script(tmp.path(), "fails", "exit 4");
        assert_eq!(
            version_with_timeout(&good, VERSION_TIMEOUT).as_deref(),
            Ok("OpenClaw 2026.9.6")
        );
        let t = Instant::now();
        let e = version_with_timeout(&hangs, Duration::from_millis(300)).expect_err("a hung program");
        assert!(e.contains("did not answer"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "waited {:?}", t.elapsed());
        assert!(version_with_timeout(&fails, VERSION_TIMEOUT).is_err());

        let missing = tmp.path().join("nope");
        let c = program("openclaw", "--agent-bin", &missing, &missing, "install it");
        assert_eq!(c.level, Level::Fail);
        assert!(c.detail.contains("--agent-bin"), "{}", c.detail);
        assert_eq!(program("openclaw", "--agent-bin", &good, &good, "x").level, Level::Ok);
        assert_eq!(
            program("openclaw", "--agent-bin", &fails, &fails, "x").level,
            Level::Warn
        );
    }

    #[test]
    fn the_audit_log_is_checked_without_being_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("var/log/sandbox/audit.log");
        assert_eq!(audit_log(&log).level, Level::Ok, "{}", audit_log(&log).line());
        assert!(
            !log.exists() && !tmp.path().join("var").exists(),
            "doctor made something"
        );
        std::fs::create_dir_all(log.parent().expect("parent")).expect("mkdir");
        std::fs::write(&log, "line\n").expect("seed");
        assert_eq!(audit_log(&log).level, Level::Ok);
        assert_eq!(std::fs::read_to_string(&log).expect("read"), "line\n");
        std::fs::remove_file(&log).expect("rm");
        std::fs::create_dir(&log).expect("a directory in its place");
        assert_eq!(audit_log(&log).level, Level::Fail);
    }

    #[test]
    fn unreadable_state_records_fail_and_none_is_fine() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = Root(tmp.path().to_path_buf());
        assert_eq!(state_records(&root, "sandbox").level, Level::Ok);
        let dir = root.state_dir("sandbox");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("state.json"), "{not json").expect("seed");
        let c = state_records(&root, "sandbox");
        assert_eq!(c.level, Level::Fail, "{}", c.line());
    }
}
