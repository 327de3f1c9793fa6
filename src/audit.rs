//! The local, append-only audit log: one JSON line per change applied or
//! reverted (time, sandbox, who, action, step, what changed). It lives in
//! `/var/log/sandbox/audit.log`, outside the state directory, so
//! `--disable` keeps it: it is the trail of what was done to the host.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::engine::Outcome;
use crate::error::{Error, Result};
use crate::spec::Root;
use crate::sys::files;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub time: String,
    pub sandbox: String,
    /// The admin behind sudo, else the uid.
    pub by: String,
    /// apply | revert
    pub action: String,
    pub step: String,
    pub change: String,
}

pub fn path(root: &Root) -> PathBuf {
    root.path("/var/log/sandbox/audit.log")
}

pub struct AuditLog {
    file: File,
    path: PathBuf,
    sandbox: String,
    by: String,
}

impl AuditLog {
    /// Opened before the first change, so a host where it cannot be written
    /// fails before anything is done.
    pub fn open(root: &Root, sandbox: &str) -> Result<AuditLog> {
        let path = path(root);
        if let Some(dir) = path.parent() {
            files::create_dirs(dir, 0o750)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io("open audit log", &path, e))?;
        let by = std::env::var("SUDO_USER").unwrap_or_else(|_| format!("uid {}", nix::unistd::getuid()));
        Ok(AuditLog {
            file,
            path,
            sandbox: sandbox.into(),
            by,
        })
    }

    pub fn record(&mut self, action: &str, o: &Outcome) -> Result<()> {
        // A step that changed nothing writes nothing (and syncs nothing).
        if o.changes.is_empty() {
            return Ok(());
        }
        for change in &o.changes {
            let e = Entry {
                time: now_utc(),
                sandbox: self.sandbox.clone(),
                by: self.by.clone(),
                action: action.into(),
                step: o.step.into(),
                change: change.clone(),
            };
            let mut line = serde_json::to_vec(&e).map_err(|e| Error::io("encode audit entry", &self.path, e.into()))?;
            line.push(b'\n');
            // One write per line with O_APPEND: concurrent writers never interleave.
            self.file
                .write_all(&line)
                .map_err(|e| Error::io("append to audit log", &self.path, e))?;
        }
        // Under group commit the run's commit makes the lines durable.
        if self.path.parent().is_some_and(files::defer) {
            return Ok(());
        }
        files::count_sync();
        self.file
            .sync_data()
            .map_err(|e| Error::io("fsync audit log", &self.path, e))
    }
}

/// Every entry, oldest first, optionally only one sandbox's.
pub fn read(root: &Root, sandbox: Option<&str>) -> Result<Vec<Entry>> {
    let path = path(root);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io("open audit log", &path, e)),
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io("read audit log", &path, e))?;
        let e: Entry = serde_json::from_str(&line).map_err(|err| Error::State {
            path: path.clone(),
            cause: format!("line {} is not an audit entry: {err}", i + 1),
            fix: "the log was edited; keep a copy for the record and move it away".into(),
        })?;
        if sandbox.is_none_or(|s| s == e.sandbox) {
            out.push(e);
        }
    }
    Ok(out)
}

fn now_utc() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_305_600 + 3_723), "2026-11-22T01:02:03Z");
    }

    #[test]
    fn entries_append_and_read_back_per_sandbox() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = Root(d.path().into());
        let o = Outcome {
            step: "veth",
            changes: vec!["created veth a0".into(), "set a0 up".into()],
        };
        AuditLog::open(&root, "a")
            .expect("open")
            .record("apply", &o)
            .expect("record");
        let o = Outcome {
            step: "veth",
            changes: vec!["deleted veth b0".into()],
        };
        AuditLog::open(&root, "b")
            .expect("open")
            .record("revert", &o)
            .expect("record");
        let all = read(&root, None).expect("read");
        assert_eq!(all.len(), 3);
        let b = read(&root, Some("b")).expect("read b");
        assert_eq!(
            (b[0].action.as_str(), b[0].change.as_str()),
            ("revert", "deleted veth b0")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(&root)).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
