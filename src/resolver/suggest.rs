//! `sandbox policy suggest`: after `setup --mode audit`, a policy file that
//! allows exactly what the sandbox used. Two records meet here:
//!
//! - the namespace table's `seen4` set: every (address, protocol, port)
//!   the sandbox opened a connection to, with a count;
//! - the resolver's counts: every name it answered, with the addresses.
//!
//! A destination whose address some name resolved to is allowed by that
//! name (every such name); any other by its address (`/32`). What went to
//! the host IP (the sidecar, our resolver) is left out: every policy has it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use super::stats::{Stats, OTHER};
use crate::error::{Error, Result};
use crate::firewall::{denials, Denial, Where, DENIED4, SEEN4};
use crate::policy::Policy;
use crate::spec::{Root, Spec};
use crate::state::Store;
use crate::sys::{netns, nft};

/// What the sandbox tried to connect to (the `seen4` set), and what of
/// that was refused (`denied4`: the same key is refused every time).
pub fn seen(spec: &Spec) -> Result<(Vec<Denial>, Vec<Denial>)> {
    let path = spec.root.netns_path(&spec.net.netns);
    if !netns::exists(&spec.root.netns_dir(), &spec.net.netns) {
        return Ok((vec![], vec![]));
    }
    let table = spec.net.table.clone();
    let doc = netns::run_in(&path, move || nft::list_table(&table))?;
    Ok(doc
        .map(|d| {
            (
                denials::parse_sets(&d, Where::Netns, &[SEEN4]),
                denials::parse_sets(&d, Where::Netns, &[DENIED4]),
            )
        })
        .unwrap_or_default())
}

/// The recorded spec of sandbox `name`, which must be in audit mode.
fn audited_spec(root: &Root, name: &str) -> Result<Spec> {
    let Some(state) = Store::peek(root, name)? else {
        return Err(Error::host(
            format!("sandbox {name}"),
            format!("not set up: no state record under {}", root.state_dir(name).display()),
            format!("run `sudo sandbox setup --name {name} --mode audit`, run the workload, then ask again"),
        ));
    };
    let spec = crate::status::recorded_spec(&state, root, name)?;
    if !spec.audit {
        return Err(Error::input(
            format!("sandbox {name}"),
            "was not set up in audit mode: nothing was recorded to suggest from",
            format!("run `sudo sandbox setup --name {name} --mode audit` (with your other flags), run the workload, then ask again"),
        ));
    }
    Ok(spec)
}

/// The policy file `policy suggest` prints for sandbox `name` (also what
/// `job run --mode audit` needs).
pub fn suggest_file(root: &Root, name: &str) -> Result<String> {
    let spec = audited_spec(root, name)?;
    let stats = Stats::read(&super::file(root, name, super::STATS));
    let (seen, refused) = seen(&spec)?;
    let text = suggest(&spec, &seen, &refused, &stats);
    // What we print must load as a policy, or it is our bug.
    Policy::parse(&text, "suggested").map_err(|e| {
        Error::host(
            "the suggested policy",
            format!("does not parse: {e}"),
            "report this as a bug, with the output of `sandbox status --json`",
        )
    })?;
    Ok(text)
}

/// The policy text for what was `seen` and not `refused`, named through
/// `stats`.
pub fn suggest(spec: &Spec, seen: &[Denial], refused: &[Denial], stats: &Stats) -> String {
    let was_refused = |s: &Denial| {
        refused
            .iter()
            .any(|r| (r.dst, &r.proto, r.port) == (s.dst, &s.proto, s.port))
    };
    let mut by_addr: BTreeMap<Ipv4Addr, Vec<&str>> = BTreeMap::new();
    for (name, a) in &stats.answered {
        if name == OTHER {
            continue;
        }
        for ip in &a.addresses {
            by_addr.entry(*ip).or_default().push(name);
        }
    }
    // (target, protocol) -> (ports, connections)
    let mut rules: BTreeMap<(String, String), (BTreeSet<u16>, u64)> = BTreeMap::new();
    let mut not_suggested = Vec::new();
    for s in seen {
        let IpAddr::V4(ip) = s.dst else { continue };
        if ip == spec.net.host_ip || !(s.proto == "tcp" || s.proto == "udp") {
            continue;
        }
        if was_refused(s) {
            not_suggested.push(format!("{} {}/{}", s.dst, s.proto, s.port));
            continue;
        }
        let targets: Vec<String> = match by_addr.get(&ip) {
            Some(names) => names.iter().map(|n| n.to_string()).collect(),
            None => vec![ip.to_string()],
        };
        for t in targets {
            let e = rules.entry((t, s.proto.clone())).or_default();
            e.0.insert(s.port);
            e.1 += s.count;
        }
    }
    let side = spec.policy.sidecar;
    let mut out = format!(
        "# Suggested by `sandbox policy suggest --name {}` from what the sandbox used in\n\
         # audit mode (policy {}). Review it, then: sandbox setup --policy ./this-file.toml\n\
         description = \"what sandbox {} used in audit mode\"\n\n\
         [sidecar]\ngateway_port = {}\nguardrail_port = {}\n\n\
         [dns]\nallow = false\nttl_floor = {}\nttl_cap = {}\n",
        spec.name,
        spec.policy_name,
        spec.name,
        side.gateway_port.0,
        side.guardrail_port.0,
        spec.policy.dns.ttl_floor,
        spec.policy.dns.ttl_cap,
    );
    not_suggested.sort();
    for n in not_suggested {
        out.push_str(&format!("# refused in audit mode, not suggested: {n}\n"));
    }
    for ((target, proto), (ports, count)) in &rules {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let how = if target.parse::<Ipv4Addr>().is_ok() {
            "by address: no name resolved to it"
        } else {
            "by name"
        };
        out.push_str(&format!(
            "\n[[destination]]\nto = \"{target}\"\nprotocol = \"{proto}\"\nports = [{}]\nwhy = \"seen in audit mode ({count} connection(s)); {how}\"\n",
            ports.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(ip: &str, proto: &str, port: u16) -> Denial {
        Denial {
            dst: ip.parse().expect("ip"),
            proto: proto.into(),
            port,
            count: 1,
            bytes: 0,
            expires_s: None,
            layer: Where::Netns,
            last: None,
        }
    }

    #[test]
    fn names_where_resolved_addresses_otherwise_and_never_the_host() {
        let spec = crate::testutil::spec(&["--mode", "audit"]);
        let mut stats = Stats::default();
        stats.answer("registry.npmjs.org", &["203.0.113.7".parse().expect("ip")]);
        let seen = [
            used("203.0.113.7", "tcp", 443),
            used("203.0.113.7", "tcp", 80),
            used("198.51.100.9", "udp", 123),
            used("10.200.0.1", "udp", 53),
            used("10.200.0.1", "tcp", 18970),
        ];
        let refused = [used("10.10.10.10", "tcp", 80)];
        let seen = [&seen[..], &refused[..]].concat();
        let text = suggest(&spec, &seen, &refused, &stats);
        assert!(
            text.contains("# refused in audit mode, not suggested: 10.10.10.10 tcp/80"),
            "{text}"
        );
        let p = Policy::parse(&text, "t").expect("parses");
        assert_eq!(p.destinations.len(), 2, "{text}");
        assert_eq!(
            serde_json::to_value(&p.destinations[0].to).expect("json"),
            "198.51.100.9/32"
        );
        assert_eq!(
            serde_json::to_value(&p.destinations[1].to).expect("json"),
            "registry.npmjs.org"
        );
        assert_eq!(
            p.destinations[1].ports.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![80, 443]
        );
        assert!(!text.contains("10.200.0.1"), "{text}");
    }
}
