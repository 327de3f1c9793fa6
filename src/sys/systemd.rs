//! systemd's manager over D-Bus (zbus, blocking): reload, enable and
//! disable unit files (persistent links, never runtime ones), start and
//! stop units and wait for the job's result, read a unit's state. No
//! policy: the `units` step decides what to ask for.
//!
//! A job is only known to be over when systemd says so in `JobRemoved`;
//! the signal is subscribed to before the job is queued, so it cannot be
//! missed, and every wait is bounded.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use zbus::zvariant::{ObjectPath, OwnedObjectPath};

use crate::error::{Error, Result};

const DEST: &str = "org.freedesktop.systemd1";
/// Longest wait for one D-Bus reply (systemd answers at once; a reload of
/// a big host may take a few seconds).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// (type, link, target) per link systemd made or removed.
type Changes = Vec<(String, String, String)>;

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_async = false,
    blocking_name = "ManagerProxy"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn reload(&self) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, zbus::zvariant::Value<'_>)],
        aux: &[(&str, &[(&str, zbus::zvariant::Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;
    fn enable_unit_files(&self, files: &[&str], runtime: bool, force: bool) -> zbus::Result<(bool, Changes)>;
    fn disable_unit_files(&self, files: &[&str], runtime: bool) -> zbus::Result<Changes>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: ObjectPath<'_>, unit: &str, result: &str) -> zbus::Result<()>;
}

/// The fix for every "cannot reach systemd" error.
pub const NO_SYSTEMD_FIX: &str =
    "run it on a host booted with systemd (with dbus running), or pass --no-systemd to only write the unit files";

/// What a unit is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    pub load: String,
    pub active: String,
    pub sub: String,
    /// A service's `Result` (`success`, `exit-code`, …); empty otherwise.
    pub result: String,
}

impl UnitState {
    pub fn is_active(&self) -> bool {
        self.active == "active"
    }
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}", self.active, self.sub)?;
        if !self.result.is_empty() && self.result != "success" {
            write!(f, ", result {}", self.result)?;
        }
        if self.load != "loaded" {
            write!(f, ", {}", self.load)?;
        }
        write!(f, ")")
    }
}

/// A link `EnableUnitFiles` or `DisableUnitFiles` made or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChange {
    /// `symlink` or `unlink`.
    pub kind: String,
    pub link: PathBuf,
    pub target: PathBuf,
}

pub struct Systemd {
    conn: zbus::blocking::Connection,
    manager: ManagerProxy<'static>,
    /// Every `JobRemoved` since we subscribed: (job path, result).
    jobs: Receiver<(String, String)>,
    /// Jobs removed that nobody waited for yet.
    seen: Vec<(String, String)>,
}

/// Whether this host was booted with systemd (`sd_booted()`).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

impl Systemd {
    /// Connect to the system bus and subscribe to job results.
    pub fn connect() -> Result<Systemd> {
        if !booted() {
            return Err(unreachable(
                "/run/systemd/system does not exist: this host (or container) was not booted with systemd",
            ));
        }
        let conn = zbus::blocking::connection::Builder::system()
            .and_then(|b| b.method_timeout(CALL_TIMEOUT).build())
            .map_err(|e| unreachable(format!("cannot connect to the D-Bus system bus: {e}")))?;
        let manager = ManagerProxy::new(&conn).map_err(|e| unreachable(e.to_string()))?;
        manager
            .version()
            .map_err(|e| unreachable(format!("the manager does not answer on the system bus: {e}")))?;
        // Ask for the signal before systemd is asked to emit it.
        let signals = manager
            .receive_job_removed()
            .map_err(|e| unreachable(format!("cannot subscribe to JobRemoved: {e}")))?;
        manager
            .subscribe()
            .map_err(|e| unreachable(format!("Subscribe: {}", describe(&e))))?;
        let (tx, jobs) = mpsc::channel();
        // The iterator blocks; it lives on its own thread and ends with the
        // connection (or the process).
        std::thread::Builder::new()
            .name("systemd-jobs".into())
            .spawn(move || {
                for s in signals {
                    if let Ok(a) = s.args() {
                        if tx.send((a.job().to_string(), a.result().to_string())).is_err() {
                            break;
                        }
                    }
                }
            })
            .map_err(|e| Error::io("spawn thread", "systemd-jobs", e))?;
        Ok(Systemd {
            conn,
            manager,
            jobs,
            seen: Vec::new(),
        })
    }

    pub fn reload(&self) -> Result<()> {
        self.manager
            .reload()
            .map_err(|e| failed("Reload", "the manager", &e, "see `journalctl -b -u init.scope`"))
    }

    /// Persistent links (in /etc, surviving reboots) per the units' [Install].
    pub fn enable(&self, units: &[&str]) -> Result<Vec<LinkChange>> {
        let (_, changes) = self.manager.enable_unit_files(units, false, false).map_err(|e| {
            failed(
                "EnableUnitFiles",
                &units.join(" "),
                &e,
                "a link of that name that is not ours is in the way: look at `systemctl status` of the unit and remove the stale link",
            )
        })?;
        Ok(changes.into_iter().map(link_change).collect())
    }

    pub fn disable(&self, units: &[&str]) -> Result<Vec<LinkChange>> {
        let changes = self
            .manager
            .disable_unit_files(units, false)
            .map_err(|e| failed("DisableUnitFiles", &units.join(" "), &e, "remove the links by hand"))?;
        Ok(changes.into_iter().map(link_change).collect())
    }

    /// `enabled`, `disabled`, `static`, … of a unit file.
    pub fn file_state(&self, unit: &str) -> Result<Option<String>> {
        match self.manager.get_unit_file_state(unit) {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_not_installed(&e) => Ok(None),
            Err(e) => Err(failed("GetUnitFileState", unit, &e, "check `systemctl status`")),
        }
    }

    pub fn state(&self, unit: &str) -> Result<UnitState> {
        let path = self
            .manager
            .load_unit(unit)
            .map_err(|e| failed("LoadUnit", unit, &e, "check `systemctl status`"))?;
        let prop = |iface: &str, name: &str| -> Result<String> {
            let p = zbus::blocking::Proxy::new(&self.conn, DEST, path.as_str(), iface.to_string())
                .map_err(|e| failed("Get", unit, &e, "check `systemctl status`"))?;
            p.get_property::<String>(name)
                .map_err(|e| failed("Get", unit, &e, "check `systemctl status`"))
        };
        let unit_iface = "org.freedesktop.systemd1.Unit";
        Ok(UnitState {
            load: prop(unit_iface, "LoadState")?,
            active: prop(unit_iface, "ActiveState")?,
            sub: prop(unit_iface, "SubState")?,
            result: if unit.ends_with(".service") {
                prop("org.freedesktop.systemd1.Service", "Result").unwrap_or_default()
            } else {
                String::new()
            },
        })
    }

    /// A service's main process (0: none).
    pub fn main_pid(&self, unit: &str) -> Result<u32> {
        let path = self
            .manager
            .load_unit(unit)
            .map_err(|e| failed("LoadUnit", unit, &e, "check `systemctl status`"))?;
        let p = zbus::blocking::Proxy::new(&self.conn, DEST, path.as_str(), "org.freedesktop.systemd1.Service")
            .map_err(|e| failed("Get", unit, &e, "check `systemctl status`"))?;
        p.get_property::<u32>("MainPID")
            .map_err(|e| failed("Get", unit, &e, "check `systemctl status`"))
    }

    /// Start a transient unit made of `properties` and wait for the start
    /// job's result (`done` once the service's process runs).
    pub fn start_transient(
        &mut self,
        unit: &str,
        properties: &[(&str, zbus::zvariant::Value<'_>)],
        timeout: Duration,
    ) -> Result<String> {
        let job = self
            .manager
            .start_transient_unit(unit, "fail", properties, &[])
            .map_err(|e| failed("StartTransientUnit", unit, &e, &journal_hint(unit)))?;
        self.wait(job.as_str(), "StartTransientUnit", unit, timeout)
    }

    /// Send `signal` to a unit's main process (`main`) or all of them (`all`).
    pub fn kill(&self, unit: &str, whom: &str, signal: i32) -> Result<()> {
        match self.manager.kill_unit(unit, whom, signal) {
            Ok(()) => Ok(()),
            Err(e) if is_no_such_unit(&e) => Ok(()),
            Err(e) => Err(failed("KillUnit", unit, &e, &journal_hint(unit))),
        }
    }

    /// A service's (ActiveState, ExecMainCode, ExecMainStatus): the code is
    /// CLD_EXITED (1), CLD_KILLED (2) or CLD_DUMPED (3), as waitid says it.
    pub fn exec_main(&self, unit: &str) -> Result<(String, i32, i32)> {
        let path = self
            .manager
            .load_unit(unit)
            .map_err(|e| failed("LoadUnit", unit, &e, "check `systemctl status`"))?;
        let proxy = |iface: &'static str| {
            zbus::blocking::Proxy::new(&self.conn, DEST, path.as_str(), iface)
                .map_err(|e| failed("Get", unit, &e, "check `systemctl status`"))
        };
        let get = |e: zbus::Error| failed("Get", unit, &e, "check `systemctl status`");
        let u = proxy("org.freedesktop.systemd1.Unit")?;
        let s = proxy("org.freedesktop.systemd1.Service")?;
        Ok((
            u.get_property::<String>("ActiveState").map_err(get)?,
            s.get_property::<i32>("ExecMainCode").map_err(get)?,
            s.get_property::<i32>("ExecMainStatus").map_err(get)?,
        ))
    }

    /// Queue a start job and wait for its result (`done`, `failed`,
    /// `dependency`, `timeout`, `canceled`, `skipped`).
    pub fn start(&mut self, unit: &str, timeout: Duration) -> Result<String> {
        let job = self
            .manager
            .start_unit(unit, "replace")
            .map_err(|e| failed("StartUnit", unit, &e, &journal_hint(unit)))?;
        self.wait(job.as_str(), "StartUnit", unit, timeout)
    }

    pub fn restart(&mut self, unit: &str, timeout: Duration) -> Result<String> {
        let job = self
            .manager
            .restart_unit(unit, "replace")
            .map_err(|e| failed("RestartUnit", unit, &e, &journal_hint(unit)))?;
        self.wait(job.as_str(), "RestartUnit", unit, timeout)
    }

    /// Stop a unit and wait; a unit systemd does not know is stopped.
    pub fn stop(&mut self, unit: &str, timeout: Duration) -> Result<Option<String>> {
        let job = match self.manager.stop_unit(unit, "replace") {
            Ok(j) => j,
            Err(e) if is_no_such_unit(&e) => return Ok(None),
            Err(e) => return Err(failed("StopUnit", unit, &e, &journal_hint(unit))),
        };
        self.wait(job.as_str(), "StopUnit", unit, timeout).map(Some)
    }

    /// Forget a failed unit's state (so nothing of it lingers once its
    /// file is gone).
    pub fn reset_failed(&self, unit: &str) {
        // Refused for units that are not failed or not loaded: fine.
        let _ = self.manager.reset_failed_unit(unit);
    }

    fn wait(&mut self, job: &str, op: &'static str, unit: &str, timeout: Duration) -> Result<String> {
        if let Some(i) = self.seen.iter().position(|(j, _)| j == job) {
            return Ok(self.seen.swap_remove(i).1);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.jobs.recv_timeout(left) {
                Ok((j, result)) if j == job => return Ok(result),
                Ok(other) => self.seen.push(other),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Error::Systemd {
                        op,
                        unit: unit.to_string(),
                        cause: format!("job {job} did not finish within {} s", timeout.as_secs()),
                        fix: format!("{}; `systemctl list-jobs` shows what it waits for", journal_hint(unit)),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Systemd {
                        op,
                        unit: unit.to_string(),
                        cause: "the connection to the system bus closed while waiting for the job".into(),
                        fix: journal_hint(unit),
                    })
                }
            }
        }
    }
}

fn link_change((kind, link, target): (String, String, String)) -> LinkChange {
    LinkChange {
        kind,
        link: link.into(),
        target: target.into(),
    }
}

pub fn journal_hint(unit: &str) -> String {
    format!("see `systemctl status {unit}` and `journalctl -b -u {unit}`")
}

fn unreachable(cause: impl Into<String>) -> Error {
    Error::Systemd {
        op: "connect",
        unit: "org.freedesktop.systemd1".into(),
        cause: cause.into(),
        fix: NO_SYSTEMD_FIX.into(),
    }
}

fn failed(op: &'static str, unit: &str, e: &zbus::Error, fix: &str) -> Error {
    Error::Systemd {
        op,
        unit: unit.to_string(),
        cause: describe(e),
        fix: fix.to_string(),
    }
}

/// A D-Bus error as systemd phrased it.
fn describe(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, Some(msg), _) => format!("{msg} ({name})"),
        zbus::Error::MethodError(name, None, _) => name.to_string(),
        other => other.to_string(),
    }
}

fn is_no_such_unit(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _)
        if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit")
}

/// `GetUnitFileState` of a unit whose file is not there: systemd (252,
/// at least) answers `org.freedesktop.DBus.Error.FileNotFound` ("No such
/// file or directory"), not `NoSuchUnit`. On a fresh host that is every
/// unit of ours: not installed yet, not a host that cannot be inspected.
fn is_not_installed(e: &zbus::Error) -> bool {
    is_no_such_unit(e)
        || matches!(e, zbus::Error::MethodError(name, _, _)
            if name.as_str() == "org.freedesktop.DBus.Error.FileNotFound")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error reply as systemd sends it.
    fn reply(name: &str, msg: &str) -> zbus::Error {
        let call = zbus::Message::method_call("/org/freedesktop/systemd1", "GetUnitFileState")
            .and_then(|b| b.build(&()))
            .expect("a method call");
        let name = zbus::names::OwnedErrorName::try_from(name).expect("an error name");
        zbus::Error::MethodError(name, Some(msg.into()), call)
    }

    #[test]
    fn a_unit_file_not_there_is_not_installed() {
        // What systemd 252 answers for a unit not installed yet.
        let missing = reply("org.freedesktop.DBus.Error.FileNotFound", "No such file or directory");
        assert!(is_not_installed(&missing));
        assert!(is_not_installed(&reply(
            "org.freedesktop.systemd1.NoSuchUnit",
            "Unit x not loaded."
        )));
        // Anything else still fails, with what systemd said.
        let denied = reply("org.freedesktop.DBus.Error.AccessDenied", "Access denied");
        assert!(!is_not_installed(&denied));
        assert!(describe(&denied).contains("AccessDenied"), "{}", describe(&denied));
    }

    #[test]
    fn states_read_as_systemctl_says_them() {
        let s = UnitState {
            load: "loaded".into(),
            active: "failed".into(),
            sub: "failed".into(),
            result: "exit-code".into(),
        };
        assert_eq!(s.to_string(), "failed (failed, result exit-code)");
        assert!(!s.is_active());
        let ok = UnitState {
            load: "loaded".into(),
            active: "active".into(),
            sub: "running".into(),
            result: "success".into(),
        };
        assert_eq!(ok.to_string(), "active (running)");
    }

    #[test]
    fn without_systemd_the_error_suggests_no_systemd() {
        if booted() {
            return; // a real systemd host: nothing to check here
        }
        let e = Systemd::connect().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("--no-systemd"), "{e}");
        assert!(e.contains("/run/systemd/system"), "{e}");
    }
}
