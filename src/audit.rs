//! The local, append-only audit log: one JSON line per change applied or
//! reverted (time, sandbox, who, action, step, what changed). It lives in
//! `/var/log/sandbox/audit.log`, outside the state directory, so
//! `--disable` keeps it: it is the trail of what was done to the host.
//!
//! Every `setup` run that reaches the host (as root, not a dry run) also
//! leaves a start record and an outcome record (`ok`, `failed` or
//! `refused`, with the exit code, the error, the command line and the
//! admin behind sudo), refused and failed runs included. Where journald
//! runs (its socket exists, and `--root` is `/`), every record also goes
//! to the journal with structured fields and [`MESSAGE_ID`] (README,
//! "Fleets"), written in journald's native protocol.

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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub time: String,
    pub sandbox: String,
    /// The admin behind sudo, else the uid.
    pub by: String,
    /// apply | revert | sweep | boot
    pub action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub change: String,
    /// `start` or `outcome`; absent for one change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// With `outcome`: ok | failed | refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The command line of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Ties a run's start, changes and outcome together: `<pid>-<start>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// journald's MESSAGE_ID of every record this tool sends (fixed forever:
/// `journalctl MESSAGE_ID=...` finds them all).
pub const MESSAGE_ID: &str = "4f0c8a3e1d6b4e7a9c2f5b8d0e3a6c91";
/// Where journald listens for native-protocol datagrams.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// This process's run id.
pub fn run_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        format!("{}-{secs}", std::process::id())
    })
    .clone()
}

/// The admin behind sudo, else the uid.
pub fn by() -> String {
    std::env::var("SUDO_USER").unwrap_or_else(|_| format!("uid {}", nix::unistd::getuid()))
}

/// The journal socket to send to: only for the real host (`--root /`),
/// and only where journald runs.
fn journal_for(root: &Root) -> Option<PathBuf> {
    let socket = PathBuf::from(JOURNAL_SOCKET);
    (root.0 == std::path::Path::new("/") && socket.exists()).then_some(socket)
}

pub fn path(root: &Root) -> PathBuf {
    root.path("/var/log/sandbox/audit.log")
}

pub struct AuditLog {
    file: File,
    path: PathBuf,
    sandbox: String,
    by: String,
    journal: Option<PathBuf>,
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
        Ok(AuditLog {
            file,
            path,
            sandbox: sandbox.into(),
            by: by(),
            journal: journal_for(root),
        })
    }

    /// A record (no changes) of this run: its start or its outcome.
    pub fn append(&mut self, e: &Entry) -> Result<()> {
        self.write(e)?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("fsync audit log", &self.path, e))
    }

    fn write(&mut self, e: &Entry) -> Result<()> {
        let mut line = serde_json::to_vec(e).map_err(|err| Error::io("encode audit entry", &self.path, err.into()))?;
        line.push(b'\n');
        // One write per line with O_APPEND: concurrent writers never interleave.
        self.file
            .write_all(&line)
            .map_err(|err| Error::io("append to audit log", &self.path, err))?;
        if let Some(socket) = &self.journal {
            // The file is the record; the journal a copy for forwarding,
            // and a journald that went away fails nothing.
            let _ = journal::send(socket, &journal::fields(e));
        }
        Ok(())
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
                run: Some(run_id()),
                ..Entry::default()
            };
            self.write(&e)?;
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

/// The start record of a run; [`RunRecord::finish`] adds its outcome.
pub struct RunRecord {
    log: AuditLog,
    action: String,
    command: String,
}

impl RunRecord {
    /// Writes the start record. None when the log cannot be written (not
    /// root: such a run is refused before it reaches the host anyway).
    pub fn start(root: &Root, sandbox: &str, action: &str, command: String) -> Option<RunRecord> {
        let mut log = AuditLog::open(root, sandbox).ok()?;
        let e = Entry {
            time: now_utc(),
            sandbox: sandbox.into(),
            by: log.by.clone(),
            action: action.into(),
            record: Some("start".into()),
            command: Some(command.clone()),
            run: Some(run_id()),
            ..Entry::default()
        };
        // Not synced on its own: a run that changes the host makes it
        // durable with its first record (group commit), and one that
        // changes nothing has nothing it must outlive.
        log.write(&e).ok()?;
        Some(RunRecord {
            log,
            action: action.into(),
            command,
        })
    }

    /// The outcome: `ok` (exit 0), `refused` (nothing was changed: bad
    /// input, an unfit host, the lock held: exit 2, 3, 4) or `failed`.
    pub fn finish(mut self, exit_code: i32, error: Option<&Error>) -> Result<()> {
        let outcome = match error.map(Error::exit_code) {
            None => "ok",
            Some(2..=4) => "refused",
            Some(_) => "failed",
        };
        let e = Entry {
            time: now_utc(),
            sandbox: self.log.sandbox.clone(),
            by: self.log.by.clone(),
            action: self.action.clone(),
            record: Some("outcome".into()),
            outcome: Some(outcome.into()),
            exit_code: Some(exit_code),
            error: error.map(|e| e.to_string()),
            command: Some(self.command.clone()),
            run: Some(run_id()),
            ..Entry::default()
        };
        // Synced when the run failed or was refused, or made anything
        // durable; a successful run that changed nothing syncs nothing.
        if error.is_some() || files::sync_count() > 0 {
            self.log.append(&e)
        } else {
            self.log.write(&e)
        }
    }
}

/// journald's native protocol (systemd's `sd_journal_sendv`, without
/// libsystemd): one datagram of `KEY=value` lines; a value with a newline
/// is sent as `KEY`, newline, its length (64-bit little-endian), the
/// value, newline.
pub mod journal {
    use std::os::unix::net::UnixDatagram;
    use std::path::Path;

    use super::{Entry, MESSAGE_ID};

    /// The structured fields of a record (README, "Fleets").
    pub fn fields(e: &Entry) -> Vec<(&'static str, String)> {
        let message = match (e.record.as_deref(), e.outcome.as_deref()) {
            (Some("start"), _) => format!("sandbox {}: {} started by {}", e.sandbox, e.action, e.by),
            (Some("outcome"), Some(o)) => format!(
                "sandbox {}: {} {o} (exit {})",
                e.sandbox,
                e.action,
                e.exit_code.unwrap_or_default()
            ),
            _ => format!("sandbox {}: {} {}: {}", e.sandbox, e.action, e.step, e.change),
        };
        let priority = match e.outcome.as_deref() {
            Some("failed") => "3",
            Some("refused") => "4",
            _ => "6",
        };
        let mut f = vec![
            ("MESSAGE", message),
            ("MESSAGE_ID", MESSAGE_ID.to_string()),
            ("PRIORITY", priority.to_string()),
            ("SYSLOG_IDENTIFIER", "sandbox".to_string()),
            ("SANDBOX_NAME", e.sandbox.clone()),
            ("SANDBOX_RECORD", e.record.clone().unwrap_or_else(|| "change".into())),
            ("SANDBOX_ACTION", e.action.clone()),
            ("SANDBOX_BY", e.by.clone()),
        ];
        let opt = [
            ("SANDBOX_STEP", Some(e.step.clone()).filter(|s| !s.is_empty())),
            ("SANDBOX_CHANGE", Some(e.change.clone()).filter(|s| !s.is_empty())),
            ("SANDBOX_OUTCOME", e.outcome.clone()),
            ("SANDBOX_EXIT_CODE", e.exit_code.map(|c| c.to_string())),
            ("SANDBOX_ERROR", e.error.clone()),
            ("SANDBOX_COMMAND", e.command.clone()),
            ("SANDBOX_RUN", e.run.clone()),
        ];
        f.extend(opt.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        f
    }

    /// The datagram for `fields`. Values are cut at 48 KiB, well inside
    /// a datagram journald accepts.
    pub fn encode(fields: &[(&str, String)]) -> Vec<u8> {
        const MAX: usize = 48 * 1024;
        let mut out = Vec::new();
        for (k, v) in fields {
            let mut v = v.as_bytes();
            if v.len() > MAX {
                v = &v[..MAX];
            }
            out.extend_from_slice(k.as_bytes());
            if v.contains(&b'\n') {
                out.push(b'\n');
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            } else {
                out.push(b'=');
            }
            out.extend_from_slice(v);
            out.push(b'\n');
        }
        out
    }

    pub fn send(socket: &Path, fields: &[(&str, String)]) -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        sock.send_to(&encode(fields), socket).map(|_| ())
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
    fn a_run_leaves_a_start_and_an_outcome() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = Root(d.path().into());
        let r = RunRecord::start(&root, "a", "apply", "sandbox setup --name a".into()).expect("start");
        let refused = Error::input("--host-ip x", "not an IPv4 address", "give one");
        r.finish(2, Some(&refused)).expect("finish");
        let r = RunRecord::start(&root, "a", "apply", "sandbox setup".into()).expect("start");
        r.finish(0, None).expect("finish");
        let all = read(&root, Some("a")).expect("read");
        let kinds: Vec<_> = all
            .iter()
            .map(|e| (e.record.as_deref(), e.outcome.as_deref(), e.exit_code))
            .collect();
        assert_eq!(
            kinds,
            [
                (Some("start"), None, None),
                (Some("outcome"), Some("refused"), Some(2)),
                (Some("start"), None, None),
                (Some("outcome"), Some("ok"), Some(0)),
            ]
        );
        assert!(all[1].error.as_deref().is_some_and(|e| e.contains("not an IPv4")));
        assert_eq!(all[0].command.as_deref(), Some("sandbox setup --name a"));
        assert_eq!(all[0].run, all[1].run);
    }

    #[test]
    fn journal_records_speak_the_native_protocol() {
        let e = Entry {
            sandbox: "a".into(),
            action: "apply".into(),
            record: Some("outcome".into()),
            outcome: Some("failed".into()),
            exit_code: Some(1),
            error: Some("step veth: boom\n  fix: this".into()),
            ..Entry::default()
        };
        let f = journal::fields(&e);
        let bytes = journal::encode(&f);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(&format!("MESSAGE_ID={MESSAGE_ID}\n")), "{text}");
        assert!(text.contains("PRIORITY=3\nSYSLOG_IDENTIFIER=sandbox\n"), "{text}");
        assert!(text.contains("SANDBOX_OUTCOME=failed\nSANDBOX_EXIT_CODE=1\n"), "{text}");
        // A value with a newline: name, newline, little-endian length, value.
        let v = b"step veth: boom\n  fix: this";
        let mut want = b"SANDBOX_ERROR\n".to_vec();
        want.extend_from_slice(&(v.len() as u64).to_le_bytes());
        want.extend_from_slice(v);
        want.push(b'\n');
        assert!(bytes.windows(want.len()).any(|w| w == want.as_slice()));

        // Sent as one datagram to the socket.
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("socket");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        journal::send(&path, &f).expect("send");
        let mut buf = vec![0; 65536];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], bytes.as_slice());
        // Never the real journal under a test root.
        assert_eq!(journal_for(&Root(d.path().into())), None);
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
