//! Our resolver: the sandbox's only DNS when its policy names hosts (or in
//! audit mode). It listens on the host IP, port 53 (UDP and TCP), answers
//! only names the policy allows by asking the `--dns` upstreams, and before
//! it returns an answer puts every address in it into the nft set of each
//! rule the name matches (in the sandbox's namespace table), each for the
//! answer's TTL clamped to the policy's `[dns] ttl_floor`/`ttl_cap`.
//!
//! - any other name: NXDOMAIN, counted and logged as a denial;
//! - AAAA and every other type but A: an empty answer (the sandbox has no
//!   IPv6, and only addresses the resolver has seen may be reached);
//! - an answer pointing into a private, loopback, link-local, CGNAT or
//!   metadata range ([`crate::policy::NOT_PUBLIC`]) is refused (REFUSED,
//!   counted as a rebinding) unless the policy names a range holding it.
//!
//! It runs as `sandbox resolver --name N --root DIR` (hidden), reads only
//! [`CONFIG`] in the sandbox's root-owned state directory, and writes its
//! counts to [`STATS`] beside it (see [`stats`]).

pub mod answer;
pub mod serve;
pub mod stats;
pub mod suggest;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::{HostPattern, Target, NOT_PUBLIC};
use crate::spec::{Root, Spec};

/// What the resolver reads at start, in the state directory.
pub const CONFIG: &str = "resolver.json";
/// Its counts, rewritten as they change.
pub const STATS: &str = "resolver-stats.json";
/// Its log under `--no-systemd` (under systemd: the journal).
pub const LOG: &str = "resolver.log";

/// One host-name rule: a name (or wildcard) and the set its answers fill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRule {
    pub pattern: String,
    pub set: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub name: String,
    pub listen: Ipv4Addr,
    pub port: u16,
    pub upstreams: Vec<Ipv4Addr>,
    /// The sandbox's namespace file, where its table and sets live.
    pub netns: PathBuf,
    pub table: String,
    pub rules: Vec<NameRule>,
    /// Ranges in [`NOT_PUBLIC`] the policy names explicitly: answers into
    /// them are not a rebinding.
    pub private_ok: Vec<Ipv4Net>,
    pub ttl_floor: u32,
    pub ttl_cap: u32,
    /// Audit mode: every name is answered (none is added to a set unless a
    /// rule names it) and recorded.
    pub audit: bool,
}

impl Config {
    pub fn of(spec: &Spec) -> Config {
        let rules = spec
            .policy
            .host_rules()
            .map(|(i, h, _)| NameRule {
                pattern: h.to_string(),
                set: crate::firewall::generate::host_set(i),
            })
            .collect();
        let private_ok = spec
            .policy
            .destinations
            .iter()
            .filter_map(|d| match d.to {
                Target::Net(n) if !is_public_net(&n) => Some(n),
                _ => None,
            })
            .collect();
        Config {
            name: spec.name.clone(),
            listen: spec.net.host_ip,
            port: crate::firewall::generate::RESOLVER_PORT,
            upstreams: spec.dns.clone(),
            netns: spec.root.netns_path(&spec.net.netns),
            table: spec.net.table.clone(),
            rules,
            private_ok,
            ttl_floor: spec.policy.dns.ttl_floor,
            ttl_cap: spec.policy.dns.ttl_cap,
            audit: spec.audit,
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The parsed patterns, in rule order.
    pub fn patterns(&self) -> Vec<(HostPattern, String)> {
        self.rules
            .iter()
            .filter_map(|r| HostPattern::parse(&r.pattern).ok().map(|p| (p, r.set.clone())))
            .collect()
    }

    /// Read the config from the state directory: a regular file owned by
    /// root and writable by nobody else, or the resolver does not start.
    pub fn load(root: &Root, name: &str) -> Result<Config> {
        let path = root.state_dir(name).join(CONFIG);
        let fix = "run `sandbox setup` for this sandbox again (it writes the file)";
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io("read the resolver config", &path, e))?;
        use std::os::unix::fs::MetadataExt;
        if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(Error::host(
                path.display().to_string(),
                "is not a regular file owned by root and writable only by root",
                fix,
            ));
        }
        let bytes = crate::sys::bounded::read_regular(&path, 1 << 20)
            .map_err(|e| Error::host(path.display().to_string(), e.to_string(), fix))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::host(path.display().to_string(), format!("unreadable: {e}"), fix))
    }
}

/// Where the resolver's files of sandbox `name` live.
pub fn file(root: &Root, name: &str, which: &str) -> PathBuf {
    root.state_dir(name).join(which)
}

/// Whether `n` lies outside every [`NOT_PUBLIC`] range.
fn is_public_net(n: &Ipv4Net) -> bool {
    !not_public().iter().any(|p| p.contains(n) || n.contains(p))
}

pub fn not_public() -> Vec<Ipv4Net> {
    NOT_PUBLIC.iter().filter_map(|s| s.parse().ok()).collect()
}

/// `sandbox resolver`: serve until killed.
pub fn run(name: &str, root: &Path) -> Result<()> {
    // A signal mask is inherited across exec: `sandbox job` blocks SIGTERM
    // (to forward it to the job), and a resolver it starts would otherwise
    // ignore the SIGTERM that stops it and hold the namespace for the 2 s
    // until SIGKILL.
    nix::sys::signal::SigSet::all()
        .thread_unblock()
        .map_err(|e| Error::io("unblock signals", "sandbox resolver", e.into()))?;
    let root = Root(root.to_path_buf());
    let cfg = Config::load(&root, name)?;
    serve::serve(cfg, file(&root, name, STATS))
}

/// One host-name rule as `status` and `plan` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameStatus {
    /// The name or wildcard, as the policy writes it.
    pub name: String,
    pub protocol: String,
    pub ports: Vec<u16>,
    /// The nft set in the sandbox's table.
    pub set: String,
    /// What the set holds now.
    pub addresses: Vec<Allowed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allowed {
    pub address: Ipv4Addr,
    /// Seconds left before it closes, unless answered again.
    pub expires_s: Option<u64>,
}

/// Every host-name rule of `spec`, with the addresses its set holds now
/// (none when the namespace or the table is not there).
pub fn names(spec: &Spec) -> Result<Vec<NameStatus>> {
    let rules: Vec<NameStatus> = spec
        .policy
        .host_rules()
        .map(|(i, h, d)| NameStatus {
            name: h.to_string(),
            protocol: d.protocol.as_str().into(),
            ports: d.ports.iter().map(|p| p.0).collect(),
            set: crate::firewall::generate::host_set(i),
            addresses: vec![],
        })
        .collect();
    if rules.is_empty() || !crate::sys::netns::exists(&spec.root.netns_dir(), &spec.net.netns) {
        return Ok(rules);
    }
    let path = spec.root.netns_path(&spec.net.netns);
    let table = spec.net.table.clone();
    let doc = crate::sys::netns::run_in(&path, move || crate::sys::nft::list_table(&table))?;
    let Some(doc) = doc else { return Ok(rules) };
    Ok(rules
        .into_iter()
        .map(|mut r| {
            r.addresses = set_elements(&doc, &r.set);
            r
        })
        .collect())
}

/// The addresses of set `name` in a table listing.
fn set_elements(doc: &serde_json::Value, name: &str) -> Vec<Allowed> {
    let mut out = Vec::new();
    for obj in doc["nftables"].as_array().into_iter().flatten() {
        if obj.pointer("/set/name").and_then(|n| n.as_str()) != Some(name) {
            continue;
        }
        for e in obj
            .pointer("/set/elem")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            let (val, meta) = match e.get("elem") {
                Some(w) => (&w["val"], w),
                None => (e, &serde_json::Value::Null),
            };
            if let Some(address) = val.as_str().and_then(|s| s.parse().ok()) {
                out.push(Allowed {
                    address,
                    expires_s: meta.get("expires").and_then(|x| x.as_u64()),
                });
            }
        }
    }
    out
}
