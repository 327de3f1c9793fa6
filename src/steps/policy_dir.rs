//! The sidecar's policy for this sandbox: `~sandbox/.defenseclaw/policy/`
//! seeded from `policies/<preset>/` (compiled into the binary): the policy
//! file, a Rego module (`defenseclaw.egress`) that says what the nftables
//! rules say, the `data.json` it reads (host IP, sidecar ports, resolvers,
//! the allowlist; generated from the spec), guardrail rule packs, and an
//! admission bundle `manifest.json` with the SHA-256 of every file.
//!
//! A file the operator edited is never overwritten: re-running keeps it and
//! says so, and the manifest then seals what is on disk. Switching preset
//! updates only unedited files. `--disable` keeps the directory.
//! What we wrote is also kept in `.sandbox-written.json` in the directory,
//! so edits are still told apart after a `--disable` and a new setup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::home::{self, Seeded};
use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::firewall::generate::allowlist;
use crate::inventory::Inventory;
use crate::policy::{NOT_PUBLIC, PRESETS};
use crate::spec::Spec;
use crate::sys::agent_home::{AgentHome, CONFIG_CAP};
use crate::sys::files;

pub struct PolicyDir;

pub const DIR_MODE: u32 = 0o750;
pub const FILE_MODE: u32 = 0o640;
const WRITTEN: &str = ".sandbox-written.json";
const MANIFEST: &str = "manifest.json";

const REGO: &[(&str, &str)] = &[("strict", include_str!("../../policies/strict/egress.rego"))];
const REGO_CUSTOM: &str = include_str!("../../policies/custom/egress.rego");
const RULE_PACKS: &[(&str, &str)] = &[
    (
        "guardrail/prompt-injection.json",
        include_str!("../../policies/guardrail/prompt-injection.json"),
    ),
    (
        "guardrail/secrets.json",
        include_str!("../../policies/guardrail/secrets.json"),
    ),
];

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    dir: PathBuf,
    /// Path relative to `dir` -> SHA-256 of what we last wrote there.
    written: BTreeMap<String, String>,
}

pub fn dir(spec: &Spec) -> PathBuf {
    home::dir(spec).join(".defenseclaw/policy")
}

/// The Rego module for this spec: the preset's own, or the generic one
/// that walks the allowlist for a custom policy file.
pub fn rego(spec: &Spec) -> &'static str {
    REGO.iter()
        .find(|(n, _)| *n == spec.policy_name)
        .map_or(REGO_CUSTOM, |(_, r)| r)
}

/// `data.json`: everything the Rego needs, from the same generator as the
/// firewall rules.
pub fn data_json(spec: &Spec) -> Value {
    let side = spec.policy.sidecar;
    let mut sidecar_ports = vec![side.gateway_port.0];
    if spec.guardrail {
        sidecar_ports.push(side.guardrail_port.0);
    }
    let resolvers: Vec<String> = if spec.policy.dns.allow {
        spec.dns.iter().map(|ip| ip.to_string()).collect()
    } else {
        Vec::new()
    };
    let rules: Vec<Value> = allowlist(spec)
        .iter()
        .map(|a| {
            json!({
                "to": a.to.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "except": a.except.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "protocol": a.protocol.as_str(),
                "ports": a.ports,
                "why": a.why,
            })
        })
        .collect();
    json!({
        "sandbox": {
            "name": spec.name,
            "preset": spec.policy_name,
            "host_ip": spec.net.host_ip.to_string(),
            "sidecar_ports": sidecar_ports,
            "resolvers": resolvers,
            "not_public": NOT_PUBLIC,
            "allowlist": rules,
        }
    })
}

fn policy_toml(spec: &Spec) -> String {
    if let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == spec.policy_name) {
        return text.to_string();
    }
    let body = toml::to_string(&spec.policy).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
    format!("# from {}\n{body}", spec.policy_name)
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// Every file of the bundle but the manifest: relative path -> content.
pub fn bundle(spec: &Spec) -> Vec<(String, String)> {
    let mut v = vec![
        ("policy.toml".to_string(), policy_toml(spec)),
        ("egress.rego".to_string(), rego(spec).to_string()),
        ("data.json".to_string(), pretty(&data_json(spec))),
    ];
    for (p, t) in RULE_PACKS {
        v.push((p.to_string(), t.to_string()));
    }
    v
}

/// The admission bundle's manifest over (relative path, sha256) pairs.
pub fn manifest(spec: &Spec, hashes: &[(String, String)]) -> String {
    let mut files: Vec<&(String, String)> = hashes.iter().collect();
    files.sort();
    pretty(&json!({
        "bundle": format!("sandbox-{}", spec.name),
        "preset": spec.policy_name,
        "entrypoints": ["defenseclaw/egress/allow", "defenseclaw/egress/deny"],
        "files": files.iter().map(|(p, h)| json!({"path": p, "sha256": h})).collect::<Vec<_>>(),
    }))
}

/// The policy directory relative to the home.
const REL: &str = ".defenseclaw/policy";

/// Decide for one file of the bundle. Unlike the shell files, a file that
/// was there and never written by us is the operator's policy: kept.
fn decide(h: Option<&AgentHome>, rel: &Path, wanted: &str, ours: Option<&str>) -> Seeded {
    let now = match h {
        Some(h) => h.hash(rel, CONFIG_CAP).map_err(|e| match e {
            Error::Host { why, .. } => why,
            e => e.to_string(),
        }),
        None => Ok(None),
    };
    match home::decide(now.as_ref().map(Option::as_deref).map_err(Clone::clone), wanted, ours) {
        Seeded::Replaced => Seeded::Kept("not written by sandbox (the operator's policy)".into()),
        d => d,
    }
}

impl Step for PolicyDir {
    fn id(&self) -> &'static str {
        "policy"
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        let d = dir(spec);
        let bundle = bundle(spec);
        let hashes: Vec<(String, String)> = bundle
            .iter()
            .map(|(p, t)| (p.clone(), files::sha256_hex(t.as_bytes())))
            .collect();
        let kept = "kept; an edited file is never overwritten";
        for (p, t) in &bundle {
            inv.file(self.id(), &d.join(p), &spec.name, FILE_MODE, t.as_bytes(), kept);
        }
        let m = manifest(spec, &hashes);
        inv.file(self.id(), &d.join(MANIFEST), &spec.name, FILE_MODE, m.as_bytes(), kept);
    }

    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
        let h = match home::owner(spec) {
            Ok(who) if home::dir(spec).exists() => Some(AgentHome::open(&home::dir(spec), who)?),
            _ => None,
        };
        let ours = rec
            .and_then(|v| serde_json::from_value::<Record>(v.clone()).ok())
            .map(|r| r.written)
            .unwrap_or_default();
        let mut out = Vec::new();
        for (rel, body) in bundle(spec) {
            let p = Path::new(REL).join(&rel);
            let shown = home::dir(spec).join(&p).display().to_string();
            let wanted = files::sha256_hex(body.as_bytes());
            match decide(h.as_ref(), &p, &wanted, ours.get(&rel).map(String::as_str)) {
                Seeded::Wrote | Seeded::Replaced => out.push(format!("write {shown}")),
                Seeded::Same => {}
                Seeded::Kept(why) => out.push(home::kept_line(&shown, &why)),
            }
        }
        Ok(out)
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let h = home::open(spec)?;
        let d = dir(spec);
        let mut r = rec.get::<Record>().unwrap_or_default();
        r.dir = d.clone();
        // What we wrote: the state record only (a note in the home is
        // output for the operator, never read back).
        let mut ours = r.written.clone();
        let mut out = Vec::new();
        h.make_dirs(&Path::new(REL).join("guardrail"), DIR_MODE)?;

        let seal = |rel: &str, body: &str, ours: &mut BTreeMap<String, String>, out: &mut Vec<String>| {
            let p = Path::new(REL).join(rel);
            let shown = h.show(&p);
            let wanted = files::sha256_hex(body.as_bytes());
            match decide(Some(&h), &p, &wanted, ours.get(rel).map(String::as_str)) {
                Seeded::Wrote | Seeded::Replaced => {
                    h.write(&p, body.as_bytes(), FILE_MODE)?;
                    ours.insert(rel.to_string(), wanted.clone());
                    out.push(format!("wrote {shown}"));
                    Ok(wanted)
                }
                Seeded::Same => {
                    ours.insert(rel.to_string(), wanted.clone());
                    Ok(wanted)
                }
                Seeded::Kept(why) => {
                    out.push(home::kept_line(&shown, &why));
                    Ok(h.hash(&p, CONFIG_CAP).ok().flatten().unwrap_or_default())
                }
            }
        };
        let mut hashes = Vec::new();
        for (rel, body) in bundle(spec) {
            let sha = seal(&rel, &body, &mut ours, &mut out)?;
            hashes.push((rel, sha));
        }
        let mf = manifest(spec, &hashes);
        let before = out.len();
        seal(MANIFEST, &mf, &mut ours, &mut out)?;
        if out.len() > before && out[before].starts_with("wrote") {
            out[before] = format!("{} (admission bundle, {} files)", out[before], hashes.len());
        }
        r.written = ours.clone();
        rec.put(&r)?;
        // For the operator only: what sandbox wrote here, by hash.
        let note = pretty(
            &serde_json::to_value(&ours)
                .map_err(|e| Error::host("policy record", e.to_string(), "report this as a bug"))?,
        );
        let note_rel = Path::new(REL).join(WRITTEN);
        if h.hash(&note_rel, CONFIG_CAP).ok().flatten().as_deref() != Some(files::sha256_hex(note.as_bytes()).as_str())
        {
            h.write(&note_rel, note.as_bytes(), FILE_MODE)?;
        }
        Ok(out)
    }

    fn revert(&self, _undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        Ok(vec![format!(
            "kept {} (the sidecar's policy; --disable keeps it, --purge removes it with the home)",
            r.dir.display()
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::generate::Allow;
    use crate::policy::Protocol;
    use std::net::Ipv4Addr;

    fn spec(extra: &[&str]) -> Spec {
        crate::testutil::spec(extra)
    }

    /// What the firewall generator says about one destination.
    fn firewall_allows(list: &[Allow], ip: Ipv4Addr, proto: Protocol, port: u16) -> bool {
        list.iter().any(|a| {
            a.protocol == proto
                && a.ports.contains(&port)
                && (a.to.is_empty() || a.to.iter().any(|n| n.contains(&ip)))
                && !a.except.iter().any(|n| n.contains(&ip))
        })
    }

    fn rego_allows(engine: &mut regorus::Engine, ip: Ipv4Addr, proto: Protocol, port: u16) -> bool {
        let input = json!({"destination": {"ip": ip.to_string(), "protocol": proto.as_str(), "port": port}});
        engine.set_input_json(&input.to_string()).expect("input");
        let v = engine
            .eval_rule("data.defenseclaw.egress.allow".into())
            .expect("eval allow");
        v == regorus::Value::from(true)
    }

    fn engine(rego: &str, data: &Value) -> regorus::Engine {
        let mut e = regorus::Engine::new();
        e.add_policy("egress.rego".into(), rego.into()).expect("rego parses");
        e.add_data_json(&data.to_string()).expect("data");
        e
    }

    const PROBES: &[(&str, Protocol, u16)] = &[
        ("10.200.0.1", Protocol::Tcp, 18970),
        ("10.200.0.1", Protocol::Tcp, 4000),
        ("10.200.0.1", Protocol::Tcp, 22),
        ("10.200.0.1", Protocol::Udp, 53),
        ("10.200.0.2", Protocol::Tcp, 18970),
        ("8.8.8.8", Protocol::Udp, 53),
        ("8.8.8.8", Protocol::Tcp, 53),
        ("1.1.1.1", Protocol::Udp, 53),
        ("9.9.9.9", Protocol::Udp, 53),
        ("8.8.8.8", Protocol::Tcp, 443),
        ("203.0.113.7", Protocol::Tcp, 443),
        ("93.184.216.34", Protocol::Tcp, 80),
        ("93.184.216.34", Protocol::Tcp, 8080),
        ("93.184.216.34", Protocol::Udp, 443),
        ("169.254.169.254", Protocol::Tcp, 80),
        ("10.1.2.3", Protocol::Tcp, 443),
        ("192.168.1.1", Protocol::Tcp, 443),
        ("172.16.5.5", Protocol::Tcp, 80),
        ("127.0.0.1", Protocol::Tcp, 443),
        ("100.64.0.1", Protocol::Tcp, 443),
        ("224.0.0.1", Protocol::Tcp, 443),
    ];

    #[test]
    fn seeded_rego_agrees_with_the_firewall_for_every_preset() {
        let cases: &[&[&str]] = &[
            &["--policy", "strict"],
            &["--policy", "default"],
            &["--policy", "permissive"],
            &["--policy", "permissive", "--no-guardrail"],
            &["--policy", "default", "--dns", "9.9.9.9"],
        ];
        for flags in cases {
            let s = spec(flags);
            let list = allowlist(&s);
            let d = data_json(&s);
            let mut preset = engine(rego(&s), &d);
            let mut generic = engine(REGO_CUSTOM, &d);
            let mut allowed = 0;
            for (ip, proto, port) in PROBES {
                let ip: Ipv4Addr = ip.parse().expect("ip");
                let want = firewall_allows(&list, ip, *proto, *port);
                allowed += usize::from(want);
                assert_eq!(
                    rego_allows(&mut preset, ip, *proto, *port),
                    want,
                    "{flags:?} preset rego, {ip} {proto:?} {port}"
                );
                assert_eq!(
                    rego_allows(&mut generic, ip, *proto, *port),
                    want,
                    "{flags:?} generic rego, {ip} {proto:?} {port}"
                );
            }
            assert!(allowed > 0, "{flags:?}: the sidecar at least");
        }
    }

    #[test]
    fn deny_names_the_destination() {
        let s = spec(&["--policy", "strict"]);
        let mut e = engine(rego(&s), &data_json(&s));
        e.set_input_json(r#"{"destination": {"ip": "8.8.8.8", "protocol": "udp", "port": 53}}"#)
            .expect("input");
        let v = e.eval_rule("data.defenseclaw.egress.deny".into()).expect("deny");
        let text = v.to_json_str().expect("json");
        assert!(text.contains("udp 8.8.8.8:53") && text.contains("strict"), "{text}");
    }

    #[test]
    fn manifest_lists_every_file_with_its_hash() {
        let s = spec(&["--policy", "default"]);
        let b = bundle(&s);
        let hashes: Vec<(String, String)> = b
            .iter()
            .map(|(p, t)| (p.clone(), files::sha256_hex(t.as_bytes())))
            .collect();
        let m: Value = serde_json::from_str(&manifest(&s, &hashes)).expect("json");
        let listed = m["files"].as_array().expect("files");
        assert_eq!(listed.len(), b.len());
        for (p, h) in &hashes {
            assert!(listed.iter().any(|f| f["path"] == *p && f["sha256"] == *h), "{p}");
        }
        assert_eq!(m["preset"], "default");
    }

    #[test]
    fn rule_packs_are_well_formed() {
        for (path, text) in RULE_PACKS {
            let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{path}: {e}"));
            let rules = v["rules"].as_array().unwrap_or_else(|| panic!("{path}: rules"));
            let mut ids: Vec<&str> = rules.iter().filter_map(|r| r["id"].as_str()).collect();
            assert_eq!(ids.len(), rules.len(), "{path}: every rule has an id");
            ids.dedup();
            assert_eq!(ids.len(), rules.len(), "{path}: ids are unique");
            assert!(
                rules
                    .iter()
                    .all(|r| r["pattern"].is_string() && r["action"].is_string()),
                "{path}"
            );
        }
    }

    #[test]
    fn switching_preset_changes_rego_and_data() {
        let a = bundle(&spec(&["--policy", "strict"]));
        let b = bundle(&spec(&["--policy", "permissive"]));
        let get = |v: &[(String, String)], k: &str| v.iter().find(|(p, _)| p == k).map(|(_, t)| t.clone());
        assert_ne!(get(&a, "egress.rego"), get(&b, "egress.rego"));
        assert_ne!(get(&a, "data.json"), get(&b, "data.json"));
        assert_eq!(get(&a, "guardrail/secrets.json"), get(&b, "guardrail/secrets.json"));
    }
}
