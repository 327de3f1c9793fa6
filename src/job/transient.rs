//! A job's command as a transient systemd service (StartTransientUnit
//! over D-Bus), carrying the agent unit's hardening from
//! `crate::hardening::AGENT` plus the job's own settings: its uid (as a
//! dynamic user of that number: it has no passwd entry), its
//! namespace, its DNS files, its home, its limits, and the caller's
//! standard input, output and error.
//!
//! `RemainAfterExit=yes` keeps the finished service loaded, so its exit
//! status can be read; it is then stopped and forgotten.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use zbus::zvariant::{Fd, Value};

use super::launch::HOME_IN_JOB;
use crate::error::{Error, Result};
use crate::hardening::{self, Prop};
use crate::sys::systemd::Systemd;

/// What the job's unit is made of, besides the hardening.
pub struct Unit<'a> {
    pub name: String,
    pub launch: &'a super::launch::Launch,
}

/// The unit's properties as (key, typed value), hardening first: what a
/// unit test compares with the data, and what goes on the bus.
pub fn properties(u: &Unit<'_>) -> Result<Vec<(String, Prop)>> {
    let l = u.launch;
    let mut out = hardening::properties(hardening::AGENT)?;
    let s = |v: &str| Prop::Str(v.to_string());
    out.push(("Type".into(), s("exec")));
    out.push(("RemainAfterExit".into(), Prop::Bool(true)));
    // The leased uid has no passwd entry, and systemd refuses a plain
    // `User=` it cannot look up (217/USER). As a dynamic user a numeric
    // name is taken as the uid itself: systemd locks it for the unit's
    // life (no two live units share it) and needs no user database.
    out.push(("DynamicUser".into(), Prop::Bool(true)));
    out.push(("User".into(), s(&l.uid.to_string())));
    out.push(("Group".into(), s(&l.uid.to_string())));
    out.push(("WorkingDirectory".into(), s(HOME_IN_JOB)));
    out.push(("NetworkNamespacePath".into(), s(&l.netns.to_string_lossy())));
    out.push((
        "Environment".into(),
        Prop::Strs(l.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
    ));
    if let Some(n) = l.tasks_max {
        out.push(("TasksMax".into(), Prop::U64(n)));
    }
    if let Some(n) = l.memory_max {
        out.push(("MemoryMax".into(), Prop::U64(n)));
    }
    Ok(out)
}

/// The job's unit as a unit file: what `systemd-analyze security` scores
/// (the exposure test), made of the same settings as the properties.
pub fn unit_file(u: &Unit<'_>) -> String {
    let l = u.launch;
    let mut out = format!(
        "# The transient unit `sandbox job` starts for job {name} (as properties over D-Bus).\n\
         [Unit]\nDescription=CI job {name}\n\n[Service]\nType=exec\nRemainAfterExit=yes\n\
         DynamicUser=yes\nUser={uid}\nGroup={uid}\nWorkingDirectory={home}\nNetworkNamespacePath={netns}\n\
         BindReadOnlyPaths={resolv}:/etc/resolv.conf {nss}:/etc/nsswitch.conf\nBindPaths={state_home}:{home}\n\
         ExecStart={program}\n",
        name = u.name,
        uid = l.uid,
        home = HOME_IN_JOB,
        netns = l.netns.display(),
        resolv = l.resolv_conf.display(),
        nss = l.nsswitch_conf.display(),
        state_home = l.home.display(),
        program = l.program.display(),
    );
    out.push_str(&hardening::unit_lines(hardening::AGENT));
    out
}

/// The command's arguments as systemd must get them: it expands `$VAR`
/// and `${VAR}` in ExecStart's arguments (transient units too), so a `$`
/// the caller wrote (`sh -c 'kill $$'`) goes as `$$`, systemd's literal `$`.
fn exec_argv(argv: &[String]) -> Vec<String> {
    argv.iter().map(|a| a.replace('$', "$$")).collect()
}

fn value(p: Prop) -> Value<'static> {
    match p {
        Prop::Bool(b) => Value::from(b),
        Prop::Str(s) => Value::from(s),
        Prop::U64(n) => Value::from(n),
        Prop::U32(n) => Value::from(n),
        Prop::I32(n) => Value::from(n),
        Prop::Strs(v) => Value::from(v),
        Prop::Filter(allow, v) => Value::from((allow, v)),
        Prop::PathOpts(v) => Value::from(v),
    }
}

/// Run the job's command as a transient unit; its exit status as the
/// shell would say it (128+N for signal N). `stop` is polled: when it
/// returns a signal, that signal goes to the unit's processes.
pub fn run(
    sd: &mut Systemd,
    u: &Unit<'_>,
    deadline: Option<Instant>,
    mut stop: impl FnMut(Duration) -> Option<i32>,
) -> Result<super::Finished> {
    let l = u.launch;
    let unit = format!("sandbox-job-{}.service", u.name);
    let mut props: Vec<(String, Value<'static>)> = properties(u)?.into_iter().map(|(k, p)| (k, value(p))).collect();
    let bind = |src: &std::path::Path, dst: &str| {
        Value::from(vec![(src.to_string_lossy().into_owned(), dst.to_string(), false, 0u64)])
    };
    props.push(("BindReadOnlyPaths".into(), bind(&l.resolv_conf, "/etc/resolv.conf")));
    props.push(("BindReadOnlyPaths".into(), bind(&l.nsswitch_conf, "/etc/nsswitch.conf")));
    props.push(("BindPaths".into(), bind(&l.home, HOME_IN_JOB)));
    props.push((
        "ExecStart".into(),
        Value::from(vec![(
            l.program.to_string_lossy().into_owned(),
            exec_argv(&l.argv),
            false,
        )]),
    ));
    // SAFETY (of the borrow, no unsafe code): 0, 1 and 2 stay open for the
    // life of this process; D-Bus passes duplicates to systemd.
    for (key, fd) in [
        ("StandardInputFileDescriptor", 0),
        ("StandardOutputFileDescriptor", 1),
        ("StandardErrorFileDescriptor", 2),
    ] {
        // SAFETY: the descriptor is open (standard streams) for the whole
        // call; the borrow ends before this function returns.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        props.push((
            key.into(),
            Value::Fd(Fd::from(b)).try_to_owned().map(Value::from).map_err(|e| {
                Error::io(
                    "pass standard streams",
                    "the job's unit",
                    std::io::Error::other(e.to_string()),
                )
            })?,
        ));
    }
    let refs: Vec<(&str, Value<'_>)> = props.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let result = sd.start_transient(&unit, &refs, Duration::from_secs(30))?;
    if result != "done" {
        let _ = sd.stop(&unit, Duration::from_secs(10));
        sd.reset_failed(&unit);
        return Err(Error::Systemd {
            op: "StartTransientUnit",
            unit: unit.clone(),
            cause: format!("the start job ended with {result}"),
            fix: crate::sys::systemd::journal_hint(&unit),
        });
    }
    let mut timed_out = false;
    let outcome = loop {
        let (active, code, status) = sd.exec_main(&unit)?;
        if active != "active" && active != "activating" && active != "reloading" || code != 0 {
            break (code, status);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            timed_out = true;
            sd.kill(&unit, "all", nix::libc::SIGKILL)?;
        }
        if let Some(sig) = stop(Duration::from_millis(20)) {
            sd.kill(&unit, "all", sig)?;
        }
    };
    let _ = sd.stop(&unit, Duration::from_secs(30));
    sd.reset_failed(&unit);
    Ok(match outcome {
        _ if timed_out => super::Finished::TimedOut,
        (1, status) => super::Finished::Exited(status),
        (_, sig) => super::Finished::Signaled(sig),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job's launch as the tests use it: `true`, no limits, no environment.
    fn launch() -> super::super::launch::Launch {
        super::super::launch::Launch {
            uid: 2_000_000_007,
            netns: "/run/netns/j10".into(),
            resolv_conf: "/etc/netns/j10/resolv.conf".into(),
            nsswitch_conf: "/etc/netns/j10/nsswitch.conf".into(),
            home: "/var/lib/sandbox/j1/home".into(),
            program: "/bin/true".into(),
            argv: vec!["true".into()],
            env: vec![],
            tasks_max: None,
            memory_max: None,
        }
    }

    #[test]
    fn the_transient_unit_carries_the_agent_hardening_from_the_same_data() {
        let l = super::super::launch::Launch {
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            tasks_max: Some(64),
            memory_max: Some(1 << 30),
            ..launch()
        };
        let props = properties(&Unit {
            name: "j1".into(),
            launch: &l,
        })
        .expect("properties");
        let from_data = hardening::properties(hardening::AGENT).expect("data");
        assert_eq!(
            &props[..from_data.len()],
            &from_data[..],
            "the hardening, in the data's order"
        );
        // Every setting of the data, and the unit file rendered from it, agree.
        let unit_file = hardening::unit_lines(hardening::AGENT);
        for st in hardening::AGENT {
            assert!(unit_file.contains(&format!("{}={}\n", st.key, st.value)), "{}", st.key);
            assert!(
                props.iter().any(|(k, _)| k == st.key),
                "{} missing from the transient unit",
                st.key
            );
        }
        let get = |k: &str| props.iter().find(|(key, _)| key == k).map(|(_, p)| p.clone());
        assert_eq!(get("User"), Some(Prop::Str("2000000007".into())));
        // A plain User= of a uid without a passwd entry does not start
        // (217/USER): the uid goes in as a dynamic user's.
        assert_eq!(get("DynamicUser"), Some(Prop::Bool(true)));
        assert_eq!(get("NetworkNamespacePath"), Some(Prop::Str("/run/netns/j10".into())));
        assert_eq!(get("TasksMax"), Some(Prop::U64(64)));
        assert_eq!(get("MemoryMax"), Some(Prop::U64(1 << 30)));
        // Every value has the D-Bus signature systemd's parser expects.
        let sig = |k: &str| value(get(k).expect(k)).value_signature().to_string();
        assert_eq!(sig("NoNewPrivileges"), "b");
        assert_eq!(sig("CapabilityBoundingSet"), "t");
        assert_eq!(sig("UMask"), "u");
        assert_eq!(sig("SystemCallFilter"), "(bas)");
        assert_eq!(sig("RestrictAddressFamilies"), "(bas)");
        assert_eq!(sig("TemporaryFileSystem"), "a(ss)");
        assert_eq!(sig("SystemCallArchitectures"), "as");
        assert_eq!(sig("SystemCallErrorNumber"), "i");
    }

    #[test]
    fn dollars_reach_the_command_as_written() {
        let argv = ["sh", "-c", "kill -TERM $$; echo ${HOME} $1"].map(String::from);
        assert_eq!(
            exec_argv(&argv),
            ["sh", "-c", "kill -TERM $$$$; echo $${HOME} $$1"].map(String::from)
        );
    }

    /// The job's unit, as a file of the same settings, scores as the
    /// agent's (at most 1.1) in `systemd-analyze security`.
    #[test]
    fn job_unit_exposure_is_at_most_1_1() {
        let l = launch();
        let text = unit_file(&Unit {
            name: "j1".into(),
            launch: &l,
        });
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("sandbox-job-j1.service"), &text).expect("write");
        let out = std::process::Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--man=no", "./sandbox-job-j1.service"])
            .current_dir(d.path())
            .output()
            .unwrap_or_else(|e| panic!("systemd-analyze is needed ({e}): apt-get install systemd"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let level: f64 = stdout
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure line:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
        eprintln!("job unit exposure {level}");
        assert!(level <= 1.1, "job unit exposure {level}:\n{stdout}");
    }
}
