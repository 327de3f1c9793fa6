//! Kernel parameters under /proc/sys. They are per network namespace for
//! `net.*`, which is what lets the root tests run against a fake host.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Keys are written with slashes (`net/ipv4/ip_forward`) because
/// interface names may contain dots (`eth0.100`).
fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key)
}

/// The dotted form people know from `sysctl`.
pub fn display(key: &str) -> String {
    key.replace('.', "!").replace('/', ".").replace('!', "/")
}

pub fn read(key: &str) -> Result<String> {
    let p = path(key);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io("read sysctl", p, e))
}

pub fn write(key: &str, value: &str) -> Result<()> {
    let p = path(key);
    std::fs::write(&p, value).map_err(|e| Error::io("write sysctl", p, e))
}

/// `net.ipv4.conf.*.forwarding` for every interface present now, `all` and
/// `default` first. Writing `net.ipv4.ip_forward` rewrites all of them, so
/// restoring only the global value would lose a per-interface setting.
pub fn ipv4_forwarding_keys() -> Result<Vec<String>> {
    let dir = PathBuf::from("/proc/sys/net/ipv4/conf");
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list", dir.clone(), e))?;
    let mut keys: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|ifname| format!("net/ipv4/conf/{ifname}/forwarding"))
        .collect();
    let rank = |k: &String| match k.as_str() {
        "net/ipv4/conf/all/forwarding" => 0,
        "net/ipv4/conf/default/forwarding" => 1,
        _ => 2,
    };
    keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    Ok(keys)
}

/// The current values of `keys`: what a step records once, before its
/// first write, so that a re-run never takes our own value for the host's.
pub fn snapshot(keys: &[String]) -> Result<Vec<(String, String)>> {
    keys.iter().map(|k| Ok((k.clone(), read(k)?))).collect()
}

/// Set `key` to `value`; a line saying so when it was not already.
pub fn ensure(key: &str, value: &str) -> Result<Option<String>> {
    let now = read(key)?;
    if now == value {
        return Ok(None);
    }
    write(key, value)?;
    Ok(Some(format!("set {} {now} -> {value}", display(key))))
}

/// Write back every recorded value that differs now, in order; a key that
/// went away (its interface deleted) took its setting with it.
pub fn restore(old: &[(String, String)]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (key, value) in old {
        let Ok(now) = read(key) else { continue };
        if &now != value {
            write(key, value)?;
            out.push(format!("restored {} {now} -> {value}", display(key)));
        }
    }
    Ok(out)
}
