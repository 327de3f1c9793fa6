//! Which subnet and uid a job gets. One slot number gives both, so a job
//! holds exactly one lease: slot N is the /30 N of [`POOL`] and the uid
//! [`UID_BASE`] + N. A slot is taken by creating its file exclusively
//! (`O_EXCL`, atomic across processes) and holds the job's name; the
//! `job_home` step gives it back when the job is destroyed.
//!
//! TODO(host scope): the lead's host record (`src/host.rs`) leases subnets
//! from its pool and uids from its range under the host lock. When it
//! lands, [`take`] and [`release`] become calls to it; nothing else in
//! `job` knows how a lease is made.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::spec::Root;

/// Jobs' addresses: /30s out of this /16 (agents' default is 10.200.0.0/30).
pub const POOL: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 0);
/// /30s in a /16.
pub const SLOTS: u32 = 1 << 14;
/// Jobs' uids: far above any account's (people's start at 1000, systemd's
/// dynamic users end at 65519, subordinate ranges usually start at 100000
/// and take 65536 per user).
pub const UID_BASE: u32 = 2_000_000_000;
/// A lease file whose job has no state directory is an orphan (its creator
/// died between taking it and writing its record) once it is this old.
const ORPHAN_AFTER: Duration = Duration::from_secs(10);

/// What a lease gives a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub slot: u32,
    pub uid: u32,
    pub host_ip: Ipv4Addr,
    pub sandbox_ip: Ipv4Addr,
}

impl Lease {
    pub fn of(slot: u32) -> Lease {
        let base = u32::from(POOL) + slot * 4;
        Lease {
            slot,
            uid: UID_BASE + slot,
            host_ip: Ipv4Addr::from(base + 1),
            sandbox_ip: Ipv4Addr::from(base + 2),
        }
    }
}

pub fn dir(root: &Root) -> PathBuf {
    root.path("/var/lib/sandbox/.job-leases")
}

/// Take the lowest free slot for the job `name`.
pub fn take(root: &Root, name: &str) -> Result<Lease> {
    let d = dir(root);
    crate::sys::files::create_dirs(&d, 0o700)?;
    for slot in 0..SLOTS {
        let path = d.join(slot.to_string());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path);
        match file {
            Ok(mut f) => {
                f.write_all(name.as_bytes()).map_err(|e| Error::io("write", &path, e))?;
                return Ok(Lease::of(slot));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create", &path, e)),
        }
    }
    Err(Error::host(
        format!("job leases in {}", d.display()),
        format!("all {SLOTS} are taken"),
        "destroy finished jobs (sandbox job gc), then retry",
    ))
}

/// Give slot `slot` back if it is `name`'s. Removes the lease directory
/// when it was the last. True when a lease was given back.
pub fn release(root: &Root, slot: u32, name: &str) -> Result<bool> {
    let d = dir(root);
    let path = d.join(slot.to_string());
    match std::fs::read_to_string(&path) {
        Ok(holder) if holder == name => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("read", &path, e)),
    }
    std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
    // Fails while another job holds a lease: fine.
    let _ = std::fs::remove_dir(&d);
    Ok(true)
}

/// Every lease: (slot, holder).
pub fn all(root: &Root) -> Result<Vec<(u32, String)>> {
    let d = dir(root);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io("list", &d, e)),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(slot) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let holder = std::fs::read_to_string(e.path()).unwrap_or_default();
        out.push((slot, holder));
    }
    out.sort();
    Ok(out)
}

/// Leases whose job never got a state directory (its creator died right
/// after taking one), old enough not to be a job being made right now:
/// given back. Says which.
pub fn reap_orphans(root: &Root) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (slot, holder) in all(root)? {
        let path = dir(root).join(slot.to_string());
        let old = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > ORPHAN_AFTER);
        let named = !holder.is_empty() && crate::spec::check_name(&holder).is_ok();
        if old && (!named || !root.state_dir(&holder).exists()) {
            std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            out.push(format!(
                "gave back orphaned lease {slot} (job {holder:?} never got a record)"
            ));
        }
    }
    let _ = std::fs::remove_dir(dir(root));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_gives_one_30_and_one_uid() {
        let l = Lease::of(0);
        assert_eq!(
            (l.host_ip, l.sandbox_ip, l.uid),
            (
                "10.201.0.1".parse().expect("ip"),
                "10.201.0.2".parse().expect("ip"),
                UID_BASE
            )
        );
        let l = Lease::of(65);
        assert_eq!(l.host_ip.to_string(), "10.201.1.5");
        assert_eq!(l.sandbox_ip.to_string(), "10.201.1.6");
        let last = Lease::of(SLOTS - 1);
        assert_eq!(last.sandbox_ip.to_string(), "10.201.255.254");
    }

    #[test]
    fn slots_are_exclusive_and_given_back_only_by_their_holder() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = Root(d.path().to_path_buf());
        let a = take(&root, "ja").expect("a");
        let b = take(&root, "jb").expect("b");
        assert_ne!(a.slot, b.slot);
        assert!(!release(&root, a.slot, "jb").expect("not b's"));
        assert!(release(&root, a.slot, "ja").expect("a's"));
        assert_eq!(take(&root, "jc").expect("c").slot, a.slot, "the freed slot is reused");
        assert_eq!(all(&root).expect("all").len(), 2);
    }
}
