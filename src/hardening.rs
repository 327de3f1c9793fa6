//! The agent's hardening as data: one list of (key, value) settings,
//! rendered into the agent's unit file (`units/openshell-sandbox.service`,
//! placeholder `{{hardening}}`) and turned into the properties of a CI
//! job's transient unit (`job::transient`). One list, so the two cannot
//! drift: what `systemd-analyze security` scores on the unit file is what
//! a job gets.
//!
//! Per-sandbox settings (the namespace path, the DNS binds, the home) are
//! not here: each renders its own.

use crate::error::{Error, Result};

/// One setting, with why it is there (a comment line above it in the unit file).
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub value: &'static str,
    pub why: &'static str,
}

const fn s(key: &'static str, value: &'static str, why: &'static str) -> Setting {
    Setting { key, value, why }
}

/// The agent's (and every job's) hardening, in unit-file order.
pub const AGENT: &[Setting] = &[
    s(
        "TemporaryFileSystem",
        "/run:ro",
        "Unix sockets lead out of any network namespace: the host's resolvers (systemd-resolved, nscd), \
         the D-Bus system bus, the journal and every other daemon socket live under /run, which is \
         replaced by an empty read-only tmpfs. /tmp and /var/tmp are private.",
    ),
    s("PrivateTmp", "yes", ""),
    s("PrivateMounts", "yes", ""),
    s(
        "ProtectHome",
        "tmpfs",
        "Only its own home is visible (and writable) below /home.",
    ),
    s("NoNewPrivileges", "yes", "No privileges, and no way to gain any."),
    s("CapabilityBoundingSet", "", ""),
    s("AmbientCapabilities", "", ""),
    s("PrivateUsers", "yes", ""),
    s("RestrictSUIDSGID", "yes", ""),
    s("ProtectSystem", "strict", "A read-only system."),
    s("PrivateDevices", "yes", ""),
    s("DevicePolicy", "closed", ""),
    s("ProtectKernelTunables", "yes", ""),
    s("ProtectKernelModules", "yes", ""),
    s("ProtectKernelLogs", "yes", ""),
    s("ProtectControlGroups", "yes", ""),
    s("ProtectClock", "yes", ""),
    s("ProtectHostname", "yes", ""),
    s("ProtectProc", "invisible", ""),
    s("ProcSubset", "pid", ""),
    s("PrivateIPC", "yes", ""),
    s("KeyringMode", "private", ""),
    s("RemoveIPC", "yes", ""),
    s("RestrictNamespaces", "yes", ""),
    s("RestrictRealtime", "yes", ""),
    s("LockPersonality", "yes", ""),
    s("UMask", "0077", ""),
    s(
        "SystemCallArchitectures",
        "native",
        "A system-call filter; denied calls fail with EPERM rather than kill.",
    ),
    s("SystemCallFilter", "@system-service", ""),
    s("SystemCallFilter", "~@privileged @resources", ""),
    s("SystemCallErrorNumber", "EPERM", ""),
    s(
        "RestrictAddressFamilies",
        "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "AF_NETLINK: Node lists the interfaces (os.networkInterfaces) to bind gateway.customBindHost; \
         the namespace holds only lo and eth0.",
    ),
];

/// The settings as unit-file lines, each after its reason.
pub fn unit_lines(settings: &[Setting]) -> String {
    let mut out = String::new();
    for st in settings {
        if !st.why.is_empty() {
            for line in wrap(st.why, 76) {
                out.push_str("# ");
                out.push_str(&line);
                out.push('\n');
            }
        }
        out.push_str(&format!("{}={}\n", st.key, st.value));
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let cur = lines.last_mut().expect("one line at least");
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
    }
    lines
}

/// A transient unit's property value, typed as systemd's D-Bus API wants
/// it (systemctl and systemd-run convert unit-file syntax the same way,
/// client-side; the manager takes only typed values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prop {
    /// `b`
    Bool(bool),
    /// `s`
    Str(String),
    /// `t`
    U64(u64),
    /// `u`
    U32(u32),
    /// `i`
    I32(i32),
    /// `as`
    Strs(Vec<String>),
    /// `(bas)`: allow-list (true) or deny-list, and its items.
    Filter(bool, Vec<String>),
    /// `a(ss)`: path and mount options.
    PathOpts(Vec<(String, String)>),
}

fn yes(key: &str, v: &str) -> Result<bool> {
    match v {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(bad(key, v)),
    }
}

fn bad(key: &str, v: &str) -> Error {
    Error::input(
        format!("hardening setting {key}={v}"),
        "has no D-Bus form known to sandbox",
        "report this as a bug (src/hardening.rs lists the settings)",
    )
}

/// One setting as a transient unit's property.
pub fn property(key: &str, v: &str) -> Result<Prop> {
    Ok(match key {
        "PrivateTmp"
        | "PrivateMounts"
        | "NoNewPrivileges"
        | "PrivateUsers"
        | "RestrictSUIDSGID"
        | "PrivateDevices"
        | "ProtectKernelTunables"
        | "ProtectKernelModules"
        | "ProtectKernelLogs"
        | "ProtectControlGroups"
        | "ProtectClock"
        | "ProtectHostname"
        | "PrivateIPC"
        | "RemoveIPC"
        | "RestrictRealtime"
        | "LockPersonality" => Prop::Bool(yes(key, v)?),
        "ProtectHome" | "ProtectSystem" | "DevicePolicy" | "ProtectProc" | "ProcSubset" | "KeyringMode" => {
            Prop::Str(v.to_string())
        }
        // An empty set: no capability at all.
        "CapabilityBoundingSet" | "AmbientCapabilities" if v.is_empty() => Prop::U64(0),
        // The flags of the namespaces still allowed: none.
        "RestrictNamespaces" if yes(key, v)? => Prop::U64(0),
        "UMask" => Prop::U32(u32::from_str_radix(v, 8).map_err(|_| bad(key, v))?),
        "SystemCallArchitectures" => Prop::Strs(v.split_whitespace().map(String::from).collect()),
        "SystemCallFilter" | "RestrictAddressFamilies" => {
            let (allow, list) = match v.strip_prefix('~') {
                Some(rest) => (false, rest),
                None => (true, v),
            };
            Prop::Filter(allow, list.split_whitespace().map(String::from).collect())
        }
        "SystemCallErrorNumber" => match v {
            "EPERM" => Prop::I32(nix::libc::EPERM),
            _ => return Err(bad(key, v)),
        },
        "TemporaryFileSystem" => Prop::PathOpts(
            v.split_whitespace()
                .map(|item| match item.split_once(':') {
                    Some((p, o)) => (p.to_string(), o.to_string()),
                    None => (item.to_string(), String::new()),
                })
                .collect(),
        ),
        _ => return Err(bad(key, v)),
    })
}

/// Every setting of `settings` as a property, in order.
pub fn properties(settings: &[Setting]) -> Result<Vec<(String, Prop)>> {
    settings
        .iter()
        .map(|st| property(st.key, st.value).map(|p| (st.key.to_string(), p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_property_in_the_same_order() {
        let props = properties(AGENT).expect("every setting converts");
        let keys: Vec<&str> = props.iter().map(|(k, _)| k.as_str()).collect();
        let want: Vec<&str> = AGENT.iter().map(|s| s.key).collect();
        assert_eq!(keys, want);
    }

    #[test]
    fn values_take_systemds_bus_types() {
        let get = |k: &str| property(k, AGENT.iter().find(|s| s.key == k).expect(k).value).expect(k);
        assert_eq!(get("NoNewPrivileges"), Prop::Bool(true));
        assert_eq!(get("CapabilityBoundingSet"), Prop::U64(0));
        assert_eq!(get("RestrictNamespaces"), Prop::U64(0));
        assert_eq!(get("UMask"), Prop::U32(0o077));
        assert_eq!(get("ProtectSystem"), Prop::Str("strict".into()));
        assert_eq!(get("SystemCallErrorNumber"), Prop::I32(1));
        assert_eq!(
            get("TemporaryFileSystem"),
            Prop::PathOpts(vec![("/run".into(), "ro".into())])
        );
        assert_eq!(
            property("SystemCallFilter", "~@privileged @resources").expect("deny list"),
            Prop::Filter(false, vec!["@privileged".into(), "@resources".into()])
        );
        assert!(property("NoNewPrivileges", "maybe").is_err());
        assert!(
            property("ExecStartPre", "/bin/true").is_err(),
            "unknown keys are refused, not guessed"
        );
    }

    #[test]
    fn unit_lines_carry_every_setting_and_its_reason() {
        let text = unit_lines(AGENT);
        for st in AGENT {
            assert!(
                text.contains(&format!("\n{}={}\n", st.key, st.value))
                    || text.starts_with(&format!("{}={}\n", st.key, st.value))
                    || text.contains(&format!("{}={}\n", st.key, st.value)),
                "{}",
                st.key
            );
        }
        assert!(text.contains("# No privileges, and no way to gain any.\nNoNewPrivileges=yes\n"));
        assert!(text.lines().all(|l| l.len() <= 80), "{text}");
    }
}
