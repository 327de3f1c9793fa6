//! Who is alive: a job's creator (pid and start time, so a reused pid is
//! not taken for it) and the processes running as a job's uid, which are
//! all killed before its sandbox goes.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::spec::Creator;

/// Start time of `pid` in clock ticks since boot (field 22 of
/// /proc/PID/stat), or None when there is no such process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields after it start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state); field 22 is the 20th from here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn creator(pid: u32) -> Option<Creator> {
    start_time(pid).map(|start| Creator { pid, start })
}

/// Whether the creator still runs (same pid, same start time).
pub fn alive(c: &Creator) -> bool {
    start_time(c.pid) == Some(c.start)
}

/// Pids whose real, effective or saved uid is `uid`, zombies left out
/// (dead already: they hold nothing but their pid until their parent, or
/// init, reaps them).
pub fn processes_of(uid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let zombie = status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|st| st.trim_start().starts_with('Z'));
        if zombie {
            continue;
        }
        let uids = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|l| {
                l.split_whitespace()
                    .take(3)
                    .filter_map(|u| u.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if uids.contains(&uid) {
            out.push(pid);
        }
    }
    out
}

/// Kill every process of `uid` and wait until none is left. The kill is
/// `kill(-1, SIGKILL)` sent *as* that uid from a child made for it: the
/// kernel delivers it to every process of the uid in one pass under its
/// task list lock, so a job forking as fast as it can is caught too. A
/// process that changed uid away (it cannot: no capabilities, no new
/// privileges) would be missed.
pub fn kill_all(uid: u32) -> Result<usize> {
    if uid == 0 {
        return Err(Error::host("job uid 0", "is root's", "report this as a bug"));
    }
    let mut rounds = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_of(uid);
        if left.is_empty() {
            return Ok(rounds);
        }
        if Instant::now() > deadline {
            return Err(Error::host(
                format!("processes of job uid {uid}"),
                format!("{} still running after 10 s of SIGKILL: {left:?}", left.len()),
                "they are stuck in the kernel (D state?); look at /proc/PID/stack, then run `sandbox job gc` again",
            ));
        }
        kill_as(uid)?;
        rounds += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill_as(uid: u32) -> Result<()> {
    // SAFETY: fork() in a process that may have other threads: the child
    // calls only async-signal-safe functions (setresgid, setresuid, kill,
    // _exit: plain system calls, no allocation, no locks) and never
    // returns into Rust code. The parent only waits for it.
    let pid = unsafe { nix::libc::fork() };
    match pid {
        -1 => Err(Error::io(
            "fork",
            "the killer of a job's processes",
            std::io::Error::last_os_error(),
        )),
        0 => {
            // SAFETY: see above; every call is a raw system call.
            unsafe {
                if nix::libc::setresgid(uid, uid, uid) != 0 || nix::libc::setresuid(uid, uid, uid) != 0 {
                    nix::libc::_exit(1);
                }
                // As the uid, -1 reaches exactly its processes (and this one,
                // which SIGKILL ends too).
                nix::libc::kill(-1, nix::libc::SIGKILL);
                nix::libc::_exit(0);
            }
        }
        child => {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_start_time_is_read_and_stable() {
        let me = std::process::id();
        let a = start_time(me).expect("our own stat");
        assert_eq!(start_time(me), Some(a));
        assert!(alive(&Creator { pid: me, start: a }));
        assert!(
            !alive(&Creator { pid: me, start: a + 1 }),
            "a reused pid is not the creator"
        );
        assert_eq!(start_time(u32::MAX), None);
    }
}
