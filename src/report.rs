//! The change-control report of `sandbox plan` / `setup --dry-run`: what
//! changes now, every object with its inverse, the firewall in plain words
//! and as nft text, and the network flows. Text for a terminal, Markdown to
//! attach to a change ticket as it is, JSON for tools.

use serde::Serialize;

use crate::config_file::SettingRow;
use crate::engine::Outcome;
use crate::firewall::generate;
use crate::inventory::Inventory;
use crate::policy::{Protocol, NOT_PUBLIC};
use crate::spec::Spec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sandbox: String,
    pub policy: String,
    pub policy_description: String,
    pub root: String,
    /// The config file read, if any.
    pub config_file: Option<String>,
    /// Every setting, its value and where it came from (flag, file, default).
    pub settings: Vec<SettingRow>,
    pub changes: Vec<Outcome>,
    pub flows: Vec<Flow>,
    pub inventory: Inventory,
    pub preflight: Vec<String>,
    /// Host-name rules, with the addresses open for each now (an existing
    /// sandbox), and the names our resolver refused.
    pub names: Vec<crate::resolver::NameStatus>,
    pub dns_denials: std::collections::BTreeMap<String, u64>,
}

/// The names part of a plan for `spec`: the sets as they are now (empty
/// before the first setup) and the resolver's refusals.
pub fn names(
    spec: &Spec,
) -> (
    Vec<crate::resolver::NameStatus>,
    std::collections::BTreeMap<String, u64>,
) {
    let names = crate::resolver::names(spec).unwrap_or_default();
    let stats =
        crate::resolver::stats::Stats::read(&crate::resolver::file(&spec.root, &spec.name, crate::resolver::STATS));
    (names, stats.denied)
}

fn names_text(r: &Report) -> String {
    if r.names.is_empty() {
        return String::new();
    }
    let mut s = String::from("\nNames (through our resolver; addresses open now):\n");
    for n in &r.names {
        let ports: Vec<String> = n.ports.iter().map(u16::to_string).collect();
        let addrs: Vec<String> = n.addresses.iter().map(|a| a.address.to_string()).collect();
        let addrs = if addrs.is_empty() {
            "none".to_string()
        } else {
            addrs.join(", ")
        };
        s += &format!(
            "  {} {}/{} (set {}): {addrs}\n",
            n.name,
            n.protocol,
            ports.join(","),
            n.set
        );
    }
    if !r.dns_denials.is_empty() {
        s += "Names refused (NXDOMAIN):\n";
        for (name, count) in &r.dns_denials {
            s += &format!("  {name} x{count}\n");
        }
    }
    s
}

/// One permitted (or the refused) way across the sandbox's boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub from: String,
    pub to: String,
    pub protocol: String,
    pub why: String,
}

pub fn flows(spec: &Spec) -> Vec<Flow> {
    let sandbox = format!("sandbox {}", spec.net.sandbox_ip);
    let mut out: Vec<Flow> = generate::allowlist(spec)
        .into_iter()
        .map(|a| {
            let to = if let Some(name) = &a.name {
                format!(
                    "{name} (the addresses our resolver answers, set {})",
                    a.set.clone().unwrap_or_default()
                )
            } else if a.to.is_empty() {
                format!("public IPv4 (not {})", NOT_PUBLIC.join(", "))
            } else {
                a.to.iter()
                    .map(|n| n.to_string().trim_end_matches("/32").to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let ports = a.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
            let proto = match a.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            let via = if a.forwarded { " (forwarded, masqueraded)" } else { "" };
            Flow {
                from: sandbox.clone(),
                to,
                protocol: format!("{proto}/{ports}"),
                why: format!("{}{via}", a.why),
            }
        })
        .collect();
    out.push(Flow {
        from: format!("host {}", spec.net.host_ip),
        to: sandbox.clone(),
        protocol: format!("tcp/{}", spec.openclaw_port),
        why: "the host reaches the OpenClaw gateway".into(),
    });
    out.push(Flow {
        from: sandbox,
        to: "anything else, IPv6 included".into(),
        protocol: "any".into(),
        why: "refused at once (TCP reset, ICMP admin-prohibited)".into(),
    });
    out
}

pub fn render(r: &Report, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")),
        Format::Markdown => markdown(r),
        Format::Text => text(r),
    }
}

fn text(r: &Report) -> String {
    let mut s = format!(
        "sandbox {}: plan (policy {}: {}; root {})\n\nChanges now:\n",
        r.sandbox, r.policy, r.policy_description, r.root
    );
    for o in &r.changes {
        if o.changes.is_empty() {
            s += &format!("  {:<14} in place\n", o.step);
        }
        for c in &o.changes {
            s += &format!("  {:<14} {c}\n", o.step);
        }
    }
    s += "\nSettings (from):\n";
    for row in &r.settings {
        s += &format!("  {:<19} {:<28} ({})\n", row.key, row.value, row.source);
    }
    s += "\nNetwork flows:\n";
    for f in &r.flows {
        s += &format!("  {} -> {}  {}  ({})\n", f.from, f.to, f.protocol, f.why);
    }
    s += &names_text(r);
    s += "\nObjects:\n";
    for o in &r.inventory.objects {
        s += &format!(
            "  {:<9} {}: {}\n            undo: {}\n",
            o.kind, o.name, o.detail, o.inverse
        );
    }
    s += "\nFiles:\n";
    for f in &r.inventory.files {
        s += &format!(
            "  {} ({}, {}, sha256 {})\n      undo: {}\n",
            f.path, f.owner, f.mode, f.sha256, f.inverse
        );
    }
    s += "\nSysctls:\n";
    for c in &r.inventory.sysctls {
        s += &format!("  {} = {}\n      undo: {}\n", c.key, c.value, c.inverse);
    }
    s += "\nFirewall rules:\n";
    for t in &r.inventory.tables {
        s += &format!("  table {} ({}), undo: {}\n", t.table, t.place, t.inverse);
        for rule in r
            .inventory
            .rules
            .iter()
            .filter(|x| x.table == t.table && x.place == t.place)
        {
            s += &format!("    {:<11} {:<10} {}\n", rule.chain, rule.verdict, rule.words);
        }
        for line in t.nft.lines() {
            s += &format!("    | {line}\n");
        }
    }
    for p in &r.preflight {
        s += &format!("\npreflight: {}\n", p.replace('\n', "\n  "));
    }
    s
}

/// Pipes and newlines would break a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# Change plan: sandbox `{}`\n\n- Policy: `{}` ({})\n- Root: `{}`\n- Undo: `sudo sandbox setup --disable --name {}`\n\n",
        r.sandbox,
        r.policy,
        cell(&r.policy_description),
        r.root,
        r.sandbox
    );
    s += "## Changes this run makes\n\n| step | change |\n|---|---|\n";
    for o in &r.changes {
        if o.changes.is_empty() {
            s += &format!("| {} | in place, no change |\n", o.step);
        }
        for c in &o.changes {
            s += &format!("| {} | {} |\n", o.step, cell(c));
        }
    }
    s += "\n## Settings\n\n| key | value | from |\n|---|---|---|\n";
    for row in &r.settings {
        s += &format!(
            "| {} | {} | {} |\n",
            row.key,
            cell(&row.value),
            cell(&row.source.to_string())
        );
    }
    s += "\n## Network flows\n\n| from | to | protocol/port | why |\n|---|---|---|---|\n";
    for f in &r.flows {
        s += &format!(
            "| {} | {} | {} | {} |\n",
            cell(&f.from),
            cell(&f.to),
            f.protocol,
            cell(&f.why)
        );
    }
    s += "\n## Objects\n\n| step | kind | name | detail | inverse |\n|---|---|---|---|---|\n";
    for o in &r.inventory.objects {
        s += &format!(
            "| {} | {} | `{}` | {} | {} |\n",
            o.step,
            o.kind,
            o.name,
            cell(&o.detail),
            cell(&o.inverse)
        );
    }
    s += "\n## Files\n\n| step | path | owner | mode | SHA-256 | inverse |\n|---|---|---|---|---|---|\n";
    for f in &r.inventory.files {
        s += &format!(
            "| {} | `{}` | {} | {} | {} | {} |\n",
            f.step,
            f.path,
            f.owner,
            f.mode,
            cell(&f.sha256),
            cell(&f.inverse)
        );
    }
    s += "\n## Sysctls\n\n| key | value | inverse |\n|---|---|---|\n";
    for c in &r.inventory.sysctls {
        s += &format!("| `{}` | {} | {} |\n", c.key, c.value, cell(&c.inverse));
    }
    s += "\n## Firewall\n";
    for t in &r.inventory.tables {
        s += &format!(
            "\n### table `{}` ({})\n\nInverse: {}\n\n| chain | verdict | rule |\n|---|---|---|\n",
            t.table,
            t.place,
            cell(&t.inverse)
        );
        for rule in r
            .inventory
            .rules
            .iter()
            .filter(|x| x.table == t.table && x.place == t.place)
        {
            s += &format!("| {} | {} | {} |\n", rule.chain, rule.verdict, cell(&rule.words));
        }
        s += &format!("\n```nft\n{}```\n", t.nft);
    }
    if !r.preflight.is_empty() {
        s += "\n## Preflight problems (the real run would stop here)\n\n";
        for p in &r.preflight {
            s += &format!("- {}\n", cell(p));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine;

    fn spec(extra: &[&str]) -> Spec {
        crate::testutil::spec(extra)
    }

    fn report(s: &Spec) -> Report {
        Report {
            sandbox: s.name.clone(),
            policy: s.policy_name.clone(),
            policy_description: s.policy.description.clone(),
            root: s.root.0.display().to_string(),
            config_file: None,
            settings: crate::config_file::Settings::resolve(&crate::testutil::args(&[]))
                .map(|x| x.rows())
                .unwrap_or_default(),
            changes: vec![],
            flows: flows(s),
            inventory: engine::inventory_all(&crate::steps::all(), s),
            preflight: vec![],
            names: vec![],
            dns_denials: Default::default(),
        }
    }

    #[test]
    fn strict_flows_are_the_sidecar_the_inbound_port_and_nothing_else() {
        let f = flows(&spec(&["--policy", "strict"]));
        assert_eq!(f.len(), 3, "{f:?}");
        assert_eq!(
            (f[0].to.as_str(), f[0].protocol.as_str()),
            ("10.200.0.1", "tcp/18970,4000")
        );
        assert_eq!(f[1].protocol, "tcp/18789");
        assert!(f[2].why.contains("refused"));
    }

    #[test]
    fn inventory_names_every_kind_of_object_with_an_inverse() {
        let r = report(&spec(&["--policy", "default", "--dns", "192.0.2.53"]));
        let inv = &r.inventory;
        for kind in ["user", "namespace", "link", "route"] {
            assert!(inv.objects.iter().any(|o| o.kind == kind), "{kind} missing");
        }
        assert!(inv
            .files
            .iter()
            .any(|f| f.path.ends_with("/etc/netns/sandbox0/resolv.conf") && f.owner == "root"));
        assert!(inv
            .files
            .iter()
            .any(|f| f.path.ends_with("run-sandbox.sh") && f.mode == "0750"));
        assert!(inv.files.iter().all(|f| !f.inverse.is_empty() && !f.sha256.is_empty()));
        assert!(inv.objects.iter().all(|o| !o.inverse.is_empty()));
        assert_eq!(inv.tables.len(), 2, "netns and host tables");
        assert!(inv.sysctls.iter().any(|c| c.key == "net.ipv4.ip_forward"));
    }

    #[test]
    fn strict_changes_no_sysctl_but_the_denial_log() {
        // Strict never forwards; the only host-wide value it sets is the one
        // that lets the sandbox's refusals reach the kernel log.
        let r = report(&spec(&["--policy", "strict"]));
        let keys: Vec<&str> = r.inventory.sysctls.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["net.netfilter.nf_log_all_netns"]);
    }

    #[test]
    fn markdown_is_a_ticket_attachment() {
        let md = render(&report(&spec(&["--policy", "strict"])), Format::Markdown);
        for heading in ["# Change plan", "## Network flows", "## Files", "## Firewall", "```nft"] {
            assert!(md.contains(heading), "{heading} missing");
        }
        // Every table row has as many cells as its header.
        let mut cols = None;
        for line in md.lines() {
            if !line.starts_with('|') {
                cols = None;
                continue;
            }
            let n = line.replace("\\|", "").matches('|').count();
            match cols {
                None => cols = Some(n),
                Some(c) => assert_eq!(n, c, "ragged row: {line}"),
            }
        }
    }

    #[test]
    fn json_round_trips() {
        let j = render(&report(&spec(&[])), Format::Json);
        let v: serde_json::Value = serde_json::from_str(&j).expect("json");
        assert!(v["inventory"]["files"].as_array().is_some_and(|a| !a.is_empty()));
        assert!(v["flows"].as_array().is_some_and(|a| a.len() >= 3));
    }
}
