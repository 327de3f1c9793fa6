//! OpenClaw's own pairing store. From 2026.9.6 on, the gateway imports
//! `~/.openclaw/devices/paired.json` at its start into
//! `~/.openclaw/state/openclaw.sqlite` (table `device_pairing_paired`,
//! keyed by `device_id`) and archives the file. The device the `pairing`
//! step pre-paired then lives there, and `--disable` must take it out
//! there: one row, ours by its device id (the hash of our key).
//!
//! The database is in the agent's home, which the agent owns and may
//! change while we work: root never opens it. A child process of ours
//! does, as the sandbox user (no groups, no capabilities, an empty
//! environment), so nothing in that home can turn the write against the
//! host; the file itself is opened without following a link.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};

/// The store, relative to the sandbox user's home.
pub const DB: &str = ".openclaw/state/openclaw.sqlite";

/// What the unpairing found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpaired {
    Removed,
    /// No such row (or no store at all).
    Absent,
}

/// Remove `device_id` from OpenClaw's pairing store under `home`, in a
/// child process running as `uid`/`gid`.
pub fn unpair_as(home: &Path, uid: u32, gid: u32, device_id: &str) -> Result<Unpaired> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| Error::io("find own program", "/proc/self/exe", e))?;
    let db = home.join(DB);
    // std drops every supplementary group when root sets a uid.
    let out = Command::new(exe)
        .arg("openclaw-unpair")
        .arg("--db")
        .arg(&db)
        .args(["--device", device_id])
        .uid(uid)
        .gid(gid)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("run the unpairing as the sandbox user", &db, e))?;
    let said = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), said.trim()) {
        (true, "removed") => Ok(Unpaired::Removed),
        (true, "absent") => Ok(Unpaired::Absent),
        _ => Err(Error::host(
            db.display().to_string(),
            format!(
                "could not remove the sidecar's device from OpenClaw's pairing store: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            format!(
                "with the gateway stopped, run `openclaw devices remove {device_id}` as the sandbox user, or leave it"
            ),
        )),
    }
}

/// The child's half (`sandbox openclaw-unpair`, hidden): never as root.
pub fn unpair(db: &Path, device_id: &str) -> Result<Unpaired> {
    if nix::unistd::geteuid().is_root() {
        return Err(Error::input(
            "sandbox openclaw-unpair",
            "runs only as the sandbox user (setup --disable starts it so)",
            "do not run it by hand",
        ));
    }
    remove_row(db, device_id)
}

fn remove_row(db: &Path, device_id: &str) -> Result<Unpaired> {
    use rusqlite::OpenFlags;
    if !db.exists() {
        return Ok(Unpaired::Absent);
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NOFOLLOW | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let fail = |e: rusqlite::Error| {
        Error::host(
            db.display().to_string(),
            e.to_string(),
            "see OpenClaw's `openclaw doctor`",
        )
    };
    let conn = rusqlite::Connection::open_with_flags(db, flags).map_err(fail)?;
    conn.busy_timeout(Duration::from_secs(2)).map_err(fail)?;
    let known: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'device_pairing_paired'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(fail)?
        > 0;
    if !known {
        return Ok(Unpaired::Absent);
    }
    let n = conn
        .execute("DELETE FROM device_pairing_paired WHERE device_id = ?1", [device_id])
        .map_err(fail)?;
    Ok(if n > 0 { Unpaired::Removed } else { Unpaired::Absent })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_row_goes_and_a_missing_store_is_absent() {
        if nix::unistd::geteuid().is_root() {
            let d = tempfile::tempdir().expect("tempdir");
            assert!(unpair(&d.path().join("x.sqlite"), "ab").is_err(), "never as root");
        }
        let d = tempfile::tempdir().expect("tempdir");
        let db = d.path().join("openclaw.sqlite");
        assert_eq!(remove_row(&db, "ours").expect("no store"), Unpaired::Absent);
        let c = rusqlite::Connection::open(&db).expect("create");
        c.execute_batch(
            "CREATE TABLE device_pairing_paired (device_id TEXT NOT NULL PRIMARY KEY, public_key TEXT NOT NULL);
             INSERT INTO device_pairing_paired VALUES ('ours', 'k1'), ('theirs', 'k2');",
        )
        .expect("schema");
        drop(c);
        assert_eq!(remove_row(&db, "ours").expect("unpair"), Unpaired::Removed);
        assert_eq!(remove_row(&db, "ours").expect("again"), Unpaired::Absent);
        let c = rusqlite::Connection::open(&db).expect("open");
        let left: Vec<String> = c
            .prepare("SELECT device_id FROM device_pairing_paired")
            .expect("query")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<std::result::Result<_, _>>()
            .expect("ids");
        assert_eq!(left, ["theirs"]);
    }
}
