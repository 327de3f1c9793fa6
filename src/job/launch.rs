//! Start a job's command without systemd (`--no-systemd`, containers):
//! fork, and in the child, before exec, enter the job's network namespace,
//! take a private mount namespace with the sandbox's DNS files bound over
//! /etc and a tmpfs over /home holding only the job's home, set the
//! rlimits, drop every capability (bounding, ambient, inheritable, and
//! with the uid change permitted and effective), set no_new_privs, switch
//! to the job's uid and gid with no supplementary groups, and exec.
//!
//! Everything the child needs (paths, argv, environment, the namespace's
//! file descriptor) is prepared before the fork: after it, the child makes
//! plain system calls only.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the job sees its home (a tmpfs over /home holds only it).
pub const HOME_IN_JOB: &str = "/home/job";

/// What the child does between fork and exec, all decided beforehand.
pub struct Launch {
    pub uid: u32,
    pub netns: PathBuf,
    /// The sandbox's resolv.conf and nsswitch.conf.
    pub resolv_conf: PathBuf,
    pub nsswitch_conf: PathBuf,
    /// The job's home under the state tree.
    pub home: PathBuf,
    pub program: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// RLIMIT_NPROC (processes and threads of the uid).
    pub tasks_max: Option<u64>,
    /// RLIMIT_AS (address space) in bytes.
    pub memory_max: Option<u64>,
}

fn cstr(what: &str, bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::input(what, "contains a NUL byte", "remove it"))
}

fn cpath(p: &Path) -> Result<CString> {
    cstr(&p.display().to_string(), p.as_os_str().as_bytes())
}

/// Prepared C strings and descriptors: nothing is allocated after fork.
struct Prepared {
    netns: OwnedFd,
    resolv_src: CString,
    resolv_dst: CString,
    nsswitch: Option<(CString, CString)>,
    home_src: CString,
    home_parent: CString,
    home_dst: CString,
    tmpfs: CString,
    tmpfs_opts: CString,
    program: CString,
    // Owned here: `argv_ptrs` and `env_ptrs` point into them.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const nix::libc::c_char>,
    _env: Vec<CString>,
    env_ptrs: Vec<*const nix::libc::c_char>,
    last_cap: u32,
    uid: u32,
    tasks_max: Option<u64>,
    memory_max: Option<u64>,
}

// SAFETY: the raw pointers point into the CStrings owned by the same
// value, which moves into the pre_exec closure as a whole.
unsafe impl Send for Prepared {}
unsafe impl Sync for Prepared {}

fn prepare(l: &Launch) -> Result<Prepared> {
    let netns: OwnedFd = std::fs::File::open(&l.netns)
        .map_err(|e| Error::io("open network namespace", &l.netns, e))?
        .into();
    for needed in [Path::new("/etc/resolv.conf"), Path::new("/home")] {
        if !needed.exists() {
            return Err(Error::host(
                needed.display().to_string(),
                "does not exist on this host: the job's private mount namespace mounts over it",
                "create it (touch /etc/resolv.conf; mkdir -m 755 /home), then run the job again",
            ));
        }
    }
    let nsswitch = if Path::new("/etc/nsswitch.conf").exists() && l.nsswitch_conf.exists() {
        Some((
            cpath(&l.nsswitch_conf)?,
            cstr("/etc/nsswitch.conf", b"/etc/nsswitch.conf")?,
        ))
    } else {
        None
    };
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    let argv: Vec<CString> = l
        .argv
        .iter()
        .map(|a| cstr("an argument of the command", a.as_bytes()))
        .collect::<Result<_>>()?;
    let env: Vec<CString> = l
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("--env {k}"), format!("{k}={v}").as_bytes()))
        .collect::<Result<_>>()?;
    let mut argv_ptrs: Vec<_> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<_> = env.iter().map(|c| c.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    Ok(Prepared {
        netns,
        resolv_src: cpath(&l.resolv_conf)?,
        resolv_dst: cstr("/etc/resolv.conf", b"/etc/resolv.conf")?,
        nsswitch,
        home_src: cpath(&l.home)?,
        home_parent: cstr("/home", b"/home")?,
        home_dst: cstr(HOME_IN_JOB, HOME_IN_JOB.as_bytes())?,
        tmpfs: cstr("tmpfs", b"tmpfs")?,
        tmpfs_opts: cstr("tmpfs options", b"mode=0755,size=64k")?,
        program: cpath(&l.program)?,
        _argv: argv,
        argv_ptrs,
        _env: env,
        env_ptrs,
        last_cap,
        uid: l.uid,
        tasks_max: l.tasks_max,
        memory_max: l.memory_max,
    })
}

/// Fork and start the job; the child is the returned pid. A failure
/// before exec (the sandbox's fault) is an error here; a program that
/// cannot be executed makes the child exit 127 (not found) or 126, as a
/// shell would.
pub fn spawn(l: &Launch) -> Result<u32> {
    let p = prepare(l)?;
    let mut cmd = std::process::Command::new(&l.program);
    // SAFETY: the closure runs in the forked child of a process that may
    // have other threads. It makes only async-signal-safe calls (raw
    // system calls through libc: sigprocmask, setns, unshare, mount,
    // mkdir, setrlimit, prctl, capset, setgroups, setres[ug]id, chdir,
    // execve, _exit), allocates nothing and takes no lock: every string,
    // pointer array and descriptor was made before the fork and is only
    // read. `p` outlives the call (it is owned by the closure, which the
    // Command keeps until spawn returns). On success execve replaces the
    // process; on a failure before it, the errno goes back to spawn.
    unsafe {
        cmd.pre_exec(move || child(&p));
    }
    let child = cmd.spawn().map_err(|e| {
        Error::host(
            "the job's process",
            format!("could not be set up before exec: {e}"),
            "run `sandbox doctor`; a container needs CAP_SYS_ADMIN and CAP_SETUID/CAP_SETGID for jobs",
        )
    })?;
    Ok(child.id())
}

fn check(r: nix::libc::c_int) -> std::io::Result<()> {
    if r == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The child's half; see the SAFETY note in [`spawn`].
fn child(p: &Prepared) -> std::io::Result<()> {
    use nix::libc;
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: plain system calls on values prepared before the fork.
    unsafe {
        // Signals the parent blocks (to forward them) are the job's to take.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        check(libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()))?;
        check(libc::setns(p.netns.as_raw_fd(), libc::CLONE_NEWNET))?;
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        let bind_ro = |src: &CString, dst: &CString| -> std::io::Result<()> {
            check(libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                null,
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                null,
                dst.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                std::ptr::null(),
            ))
        };
        bind_ro(&p.resolv_src, &p.resolv_dst)?;
        if let Some((src, dst)) = &p.nsswitch {
            bind_ro(src, dst)?;
        }
        // Only the job's home below /home, as the agent unit's ProtectHome=tmpfs.
        check(libc::mount(
            p.tmpfs.as_ptr(),
            p.home_parent.as_ptr(),
            p.tmpfs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            p.tmpfs_opts.as_ptr().cast(),
        ))?;
        check(libc::mkdir(p.home_dst.as_ptr(), 0o755))?;
        check(libc::mount(
            p.home_src.as_ptr(),
            p.home_dst.as_ptr(),
            null,
            libc::MS_BIND,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            null,
            p.home_dst.as_ptr(),
            null,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        ))?;
        if let Some(n) = p.tasks_max {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            check(libc::setrlimit(libc::RLIMIT_NPROC, &lim))?;
        }
        if let Some(n) = p.memory_max {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            check(libc::setrlimit(libc::RLIMIT_AS, &lim))?;
        }
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        for cap in 0..=p.last_cap {
            // EINVAL past the kernel's last capability: nothing to drop.
            let _ = libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
        }
        check(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ))?;
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(p.uid, p.uid, p.uid))?;
        // From root to another uid without SECBIT_KEEP_CAPS: the kernel
        // clears the permitted and effective sets.
        check(libc::setresuid(p.uid, p.uid, p.uid))?;
        // And the inheritable set (lowering it needs no privilege).
        let header = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [CapData::default(); 2];
        check(libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as libc::c_int)?;
        check(libc::chdir(p.home_dst.as_ptr()))?;
        libc::execve(p.program.as_ptr(), p.argv_ptrs.as_ptr(), p.env_ptrs.as_ptr());
        // Not executable: as a shell says it (127 not found, 126 otherwise).
        let code = if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
            127
        } else {
            126
        };
        libc::_exit(code);
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The program as the job will exec it: a name without `/` is looked up
/// in `path` (the job's PATH), as execvp would.
pub fn resolve(program: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path.split(':').filter(|d| !d.is_empty()).find_map(|d| {
        let p = Path::new(d).join(program);
        std::fs::metadata(&p)
            .ok()
            .filter(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .map(|_| p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_jobs_path_as_execvp_would() {
        assert_eq!(resolve("/bin/true", ""), Some(PathBuf::from("/bin/true")));
        assert_eq!(resolve("./x", "/bin"), Some(PathBuf::from("./x")));
        let sh = resolve("sh", "/nonexistent:/usr/bin:/bin").expect("sh on PATH");
        assert!(sh.ends_with("sh"));
        assert_eq!(resolve("no-such-program-here", "/usr/bin:/bin"), None);
    }
}
