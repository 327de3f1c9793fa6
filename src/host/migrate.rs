//! Records written before the host scope: each sandbox kept, in its own
//! record, the host's values it found before its first change. When the
//! host record is first made, every such sandbox is entered as a holder of
//! what it touched, with the truest original any of them saw, and its
//! addresses as its lease. Their records stay as they are; their steps
//! release through the host record from then on.

use ipnet::Ipv4Net;
use serde_json::Value;

use super::{Held, Host, Lease, Resource};
use crate::error::Result;

/// Enter every existing sandbox into a fresh host record.
pub(super) fn adopt_all(host: &mut Host) -> Result<()> {
    let dir = host.root.path("/var/lib/sandbox");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        // A record that cannot be read is not adopted: its own --disable
        // still restores from it (the steps fall back to their record when
        // the host record has no such resource).
        let Ok(Some(state)) = crate::state::Store::peek(&host.root, &name) else {
            continue;
        };
        adopt(host, &name, &state);
    }
    Ok(())
}

fn adopt(host: &mut Host, name: &str, state: &crate::state::State) {
    if let Some(subnet) = recorded_subnet(state.spec.as_ref()) {
        host.record.leases.entry(name.into()).or_insert(Lease {
            subnet,
            auto: false,
            uid: None,
        });
    }
    for (step, res) in [("forwarding", Resource::Forwarding), ("nflog", Resource::NfLog)] {
        if let Some(old) = state.get(step).and_then(|r| r.data.get("old")).filter(|o| !o.is_null()) {
            take(host, res, name, old.clone(), sysctl_truer);
        }
    }
    if let Some(r) = state.get("netns") {
        let original = serde_json::json!({
            "dir_changes": r.data.get("dir_changes").cloned().unwrap_or(Value::Null),
            "created_dirs": r.data.get("created_dirs").cloned().unwrap_or(Value::Null),
        });
        take(host, Resource::NetnsDir, name, original, merge_dir_changes);
    }
    if let Some(r) = state.get("dns") {
        // /etc/netns and its parents, as this sandbox made them (its own
        // /etc/netns/<name>0 stays its own).
        let own = format!("/etc/netns/{name}0");
        let shared: Vec<Value> = r
            .data
            .get("created_dirs")
            .and_then(Value::as_array)
            .map(|dirs| {
                dirs.iter()
                    .filter(|d| d.as_str().is_some_and(|d| !d.ends_with(&own)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        take(host, Resource::EtcNetns, name, Value::from(shared), merge_dirs);
    }
    if let Some(r) = state.get("sidecar") {
        // `/var/lib/private` and its parents, where this sandbox made them
        // for its sidecar's state directory (which stays its own).
        let base = host.root.path("/var/lib/private");
        let shared: Vec<Value> = r
            .data
            .get("created_dirs")
            .and_then(Value::as_array)
            .map(|dirs| {
                dirs.iter()
                    .filter(|d| d.as_str().is_some_and(|d| base.starts_with(d)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let state_dir = r.data.get("dir").and_then(|d| d.get("State")).is_some();
        if state_dir {
            take(host, Resource::PrivateStateDir, name, Value::from(shared), merge_dirs);
        }
    }
    if let Some(r) = state.get("units") {
        let shared: Vec<Value> = r
            .data
            .get("files")
            .and_then(Value::as_array)
            .map(|fs| {
                fs.iter()
                    .filter(|f| f.get("shared").and_then(Value::as_bool) == Some(true))
                    .map(|f| serde_json::json!({"path": f["path"], "previous": f["previous"]}))
                    .collect()
            })
            .unwrap_or_default();
        if !shared.is_empty() {
            // The unit directory and its parents, where this sandbox made them.
            let unit_dir = host.root.path("/etc/systemd/system");
            let dirs: Vec<Value> = r
                .data
                .get("created_dirs")
                .and_then(Value::as_array)
                .map(|ds| {
                    ds.iter()
                        .filter(|d| d.as_str().is_some_and(|d| unit_dir.starts_with(d)))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let original = serde_json::json!({"files": shared, "created_dirs": dirs});
            take(host, Resource::UnitTemplates, name, original, |a, b| {
                let dirs = merge_dirs(a["created_dirs"].clone(), b["created_dirs"].clone());
                serde_json::json!({"files": a["files"], "created_dirs": dirs})
            });
        }
    }
}

/// Enter `name` as a holder of `res`; `merge` picks between the original
/// already adopted and this sandbox's.
fn take(host: &mut Host, res: Resource, name: &str, original: Value, merge: fn(Value, Value) -> Value) {
    let held = host.record.resources.entry(res.id().into()).or_insert_with(|| Held {
        holders: Default::default(),
        original: original.clone(),
    });
    if !held.holders.is_empty() {
        held.original = merge(std::mem::take(&mut held.original), original);
    }
    held.holders.insert(name.into());
}

/// Sysctl snapshots `[[key, value], …]`: the sandbox made first saw the
/// host's own value; those made after it saw "1", its change. Per key, a
/// value other than "1" is the truer original.
fn sysctl_truer(a: Value, b: Value) -> Value {
    let (Some(a_list), Some(b_list)) = (a.as_array(), b.as_array()) else {
        return a;
    };
    let mut out = a_list.clone();
    for pair in b_list {
        let (Some(k), Some(v)) = (pair.get(0), pair.get(1)) else {
            continue;
        };
        match out.iter_mut().find(|p| p.get(0) == Some(k)) {
            Some(p) if p.get(1).and_then(Value::as_str) == Some("1") && v.as_str() != Some("1") => *p = pair.clone(),
            Some(_) => {}
            None => out.push(pair.clone()),
        }
    }
    Value::from(out)
}

/// Whichever sandbox made `/run/netns` (or its mount) did it once.
fn merge_dir_changes(a: Value, b: Value) -> Value {
    let flag = |v: &Value, k: &str| v["dir_changes"][k].as_bool().unwrap_or(false);
    let dirs = merge_dirs(a["created_dirs"].clone(), b["created_dirs"].clone());
    serde_json::json!({
        "dir_changes": {
            "created_dir": flag(&a, "created_dir") || flag(&b, "created_dir"),
            "made_mountpoint": flag(&a, "made_mountpoint") || flag(&b, "made_mountpoint"),
        },
        "created_dirs": dirs,
    })
}

fn merge_dirs(a: Value, b: Value) -> Value {
    let mut out: Vec<Value> = a.as_array().cloned().unwrap_or_default();
    for d in b.as_array().cloned().unwrap_or_default() {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Value::from(out)
}

/// The subnet an old record's spec put on the veth.
fn recorded_subnet(spec: Option<&Value>) -> Option<Ipv4Net> {
    let net = spec?.get("net")?;
    let ip: std::net::Ipv4Addr = net.get("host_ip")?.as_str()?.parse().ok()?;
    let prefix = u8::try_from(net.get("prefix")?.as_u64()?).ok()?;
    Ipv4Net::new(ip, prefix).ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_value_before_any_sandbox_wins_whichever_record_is_read_first() {
        let first = json!([["net/ipv4/ip_forward", "0"], ["net/ipv4/conf/all/forwarding", "0"]]);
        let later = json!([["net/ipv4/ip_forward", "1"], ["net/ipv4/conf/all/forwarding", "1"]]);
        assert_eq!(sysctl_truer(later.clone(), first.clone()), first);
        assert_eq!(sysctl_truer(first.clone(), later), first);
    }

    #[test]
    fn an_old_spec_gives_its_subnet() {
        let spec = json!({"net": {"host_ip": "10.200.0.1", "prefix": 30}});
        assert_eq!(recorded_subnet(Some(&spec)), "10.200.0.0/30".parse().ok());
        assert_eq!(recorded_subnet(None), None);
    }
}
