//! Which destinations the sandbox was refused, and how often: read back
//! from the per-element counters of the `denied4`/`denied6` sets that the
//! refusal path of both our tables feeds (see [`super::Verdict::Record`]).
//!
//! Parsing is pure; [`denials`] is the one function here that reads the
//! kernel (through `nft`, inside the sandbox's namespace and on the host).

use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use super::DENIED_TIMEOUT_S;
use crate::error::Result;
use crate::spec::Spec;
use crate::sys::{netns, nft};

/// Which firewall layer refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Where {
    /// The table inside the sandbox's namespace: every refusal lands here.
    Netns,
    /// The host's table: only what got past the sandbox's own rules (its
    /// table flushed or gone), so any entry here is worth a look.
    Host,
}

/// One refused (destination, protocol, port) and how many packets were
/// refused for it (a refused TCP connect is one SYN; a UDP query one
/// datagram), over the last day of attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    pub dst: IpAddr,
    /// `tcp` or `udp` (a number for anything else).
    pub proto: String,
    pub port: u16,
    pub count: u64,
    pub bytes: u64,
    /// Seconds until the entry expires unless refused again.
    pub expires_s: Option<u64>,
    pub layer: Where,
    /// When it was last refused (UTC, RFC 3339): each refusal restarts the
    /// entry's timeout, so this is now minus the time the entry has run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

impl Denial {
    /// Seconds since the last refusal, when the kernel said when it expires.
    pub fn last_s_ago(&self) -> Option<u64> {
        self.expires_s.map(|e| u64::from(DENIED_TIMEOUT_S).saturating_sub(e))
    }

    /// `203.0.113.80 tcp/22 x3`.
    pub fn short(&self) -> String {
        format!("{} {}/{} x{}", self.dst, self.proto, self.port, self.count)
    }
}

/// How many refusals, to what, and the time of the last one, in one line:
/// `3 (10.200.0.1 tcp/2222 x2, ...), the last at 2025-01-01T00:00:00Z`.
pub fn summary(ds: &[Denial]) -> String {
    let total: u64 = ds.iter().map(|d| d.count).sum();
    let list: Vec<String> = ds.iter().map(Denial::short).collect();
    let last = ds
        .iter()
        .filter_map(|d| d.last.clone().zip(d.last_s_ago()))
        .min_by_key(|(_, ago)| *ago)
        .map(|(at, _)| format!(", the last at {at}"))
        .unwrap_or_default();
    format!("{total} ({}){last}", list.join(", "))
}

/// Every denial of this sandbox, most frequent first: the namespace's
/// table, then the host's (absent tables and namespaces give nothing).
pub fn denials(spec: &Spec) -> Result<Vec<Denial>> {
    let path = spec.root.netns_path(&spec.net.netns);
    let mut out = Vec::new();
    if netns::exists(&spec.root.netns_dir(), &spec.net.netns) {
        let table = spec.net.table.clone();
        out.extend(netns::run_in(&path, move || read_table(&table, Where::Netns))?);
    }
    if spec.host_networking {
        // Only this sandbox's two sets of the shared host table.
        let sets = super::host_table::list_sets(&spec.name)?;
        out.extend(from_listing(sets.as_ref(), Where::Host));
    }
    sort(&mut out);
    Ok(out)
}

/// The denials recorded in table `inet <table>` of the calling thread's
/// network namespace.
pub fn read_table(table: &str, layer: Where) -> Result<Vec<Denial>> {
    // One `nft` run for both sets: the whole (small) table.
    Ok(from_listing(nft::list_table(table)?.as_ref(), layer))
}

/// The refusals a table listing (`nft::list_table`) shows, newest times
/// filled in, most first.
pub fn from_listing(listed: Option<&Value>, layer: Where) -> Vec<Denial> {
    let mut out = match listed {
        Some(doc) => parse(doc, layer),
        None => Vec::new(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for d in &mut out {
        d.last = d.last_s_ago().map(|ago| crate::audit::rfc3339(now.saturating_sub(ago)));
    }
    sort(&mut out);
    out
}

fn sort(v: &mut [Denial]) {
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.layer.cmp(&b.layer))
            .then(a.dst.cmp(&b.dst))
            .then(a.proto.cmp(&b.proto))
            .then(a.port.cmp(&b.port))
    });
}

/// The elements of the refusal sets in an `nft -j list` document.
pub fn parse(doc: &Value, layer: Where) -> Vec<Denial> {
    parse_sets(doc, layer, &[super::DENIED4, super::DENIED6])
}

/// The (address, protocol, port) elements of the sets named `sets`.
pub fn parse_sets(doc: &Value, layer: Where, sets: &[&str]) -> Vec<Denial> {
    let mut out = Vec::new();
    for obj in doc["nftables"].as_array().into_iter().flatten() {
        // Only the refusal sets (a table also holds the resolver's sets
        // and, in audit mode, the connections it saw).
        // A sandbox's sets in the shared host table carry its prefix
        // (`<name>_denied4`).
        let name = obj.pointer("/set/name").and_then(Value::as_str);
        if name.is_some_and(|n| !sets.iter().any(|s| n == *s || n.ends_with(&format!("_{s}")))) {
            continue;
        }
        let Some(elems) = obj.pointer("/set/elem").and_then(Value::as_array) else {
            continue;
        };
        for e in elems {
            // With a counter or a timeout, an element is wrapped in {"elem": {"val": ..}}.
            let (val, meta) = match e.get("elem") {
                Some(w) => (&w["val"], w),
                None => (e, &Value::Null),
            };
            let Some([dst, proto, port]) = val["concat"].as_array().map(Vec::as_slice) else {
                continue;
            };
            let Some(dst) = dst.as_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let proto = match proto {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let port = match port {
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            let Some(port) = port else { continue };
            out.push(Denial {
                dst,
                proto,
                port,
                count: meta.pointer("/counter/packets").and_then(Value::as_u64).unwrap_or(0),
                bytes: meta.pointer("/counter/bytes").and_then(Value::as_u64).unwrap_or(0),
                expires_s: meta.get("expires").and_then(Value::as_u64),
                layer,
                last: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_nft_1_0_6_lists() {
        // Verbatim from `nft -j list set` (nft 1.0.6) after two refused TCP
        // connects and one refused UDP datagram.
        let doc: Value = serde_json::from_str(
            r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "denied4", "table": "t", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 2, "size": 4096, "flags": ["timeout"], "timeout": 604800, "elem": [{"elem": {"val": {"concat": ["10.1.0.9", "udp", 53]}, "expires": 604799, "counter": {"packets": 1, "bytes": 29}}}, {"elem": {"val": {"concat": ["10.1.0.9", "tcp", 80]}, "expires": 604799, "counter": {"packets": 2, "bytes": 120}}}], "stmt": [{"counter": null}]}}]}"#,
        )
        .expect("json");
        let mut d = parse(&doc, Where::Netns);
        sort(&mut d);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].dst, "10.1.0.9".parse::<IpAddr>().expect("ip"));
        assert_eq!((d[0].proto.as_str(), d[0].port, d[0].count), ("tcp", 80, 2));
        assert_eq!((d[1].proto.as_str(), d[1].port, d[1].count), ("udp", 53, 1));
        assert_eq!(d[1].expires_s, Some(604799));
        assert_eq!(d[1].layer, Where::Netns);
    }

    #[test]
    fn an_empty_set_or_odd_elements_give_nothing() {
        let doc = serde_json::json!({"nftables": [
            {"set": {"name": "denied6", "type": ["ipv6_addr", "inet_proto", "inet_service"]}},
            {"set": {"name": "denied6", "elem": [{"concat": ["fd00::1", "tcp", 22]}, {"concat": ["x", "tcp", 1]}, 7]}}
        ]});
        let d = parse(&doc, Where::Host);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].port, d[0].count, d[0].layer), (22, 0, Where::Host));
    }
}
