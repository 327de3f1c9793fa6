//! The policy, turned into two tables: one inside the sandbox's namespace
//! (egress allowlist, default drop) and one on the host (what arrives from
//! the veth is held to the same allowlist; forwarding and masquerade only
//! for DNS and policy destinations). Both close IPv6.

use ipnet::Ipv4Net;

use super::{Chain, Cond, Hook, Rule, Table, Verdict};
use crate::policy::{Protocol, Target, NOT_PUBLIC};
use crate::spec::Spec;

/// One way out of the sandbox, after the policy and flags are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub to: Vec<Ipv4Net>,
    pub except: Vec<Ipv4Net>,
    pub protocol: Protocol,
    pub ports: Vec<u16>,
    pub why: String,
    /// Leaves the host (needs forwarding and masquerade), or ends on it.
    pub forwarded: bool,
    /// A host-name destination: inside the namespace the rule matches this
    /// set, which our resolver fills with the addresses it answered; on the
    /// host (`to`/`except`) it stands for any public address.
    pub set: Option<String>,
    /// The host name (or wildcard) of such a rule.
    pub name: Option<String>,
}

/// The nft set (in the namespace's table) of host-name destination `i`
/// (0-based index in the policy's destinations; the name counts from 1,
/// as plans and errors do).
pub fn host_set(i: usize) -> String {
    format!("host_{}", i + 1)
}

/// Where DNS from the sandbox goes when our resolver answers it.
pub const RESOLVER_PORT: u16 = 53;

/// Every way out, in the order the rules list them.
pub fn allowlist(spec: &Spec) -> Vec<Allow> {
    let host = vec![Ipv4Net::from(spec.net.host_ip)];
    let side = spec.policy.sidecar;
    let mut ports = vec![side.gateway_port.0];
    if spec.guardrail {
        ports.push(side.guardrail_port.0);
    }
    let mut out = Vec::new();
    // A CI job has no sidecar: the host IP is closed to it.
    if !spec.is_job() {
        out.push(Allow {
            to: host.clone(),
            except: vec![],
            protocol: Protocol::Tcp,
            ports,
            why: "the sidecar on the host IP".into(),
            forwarded: false,
            set: None,
            name: None,
        });
    }
    if spec.uses_resolver() {
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            out.push(Allow {
                to: host.clone(),
                except: vec![],
                protocol,
                ports: vec![RESOLVER_PORT],
                why: "DNS to our resolver on the host IP (it answers only allowed names)".into(),
                forwarded: false,
                set: None,
                name: None,
            });
        }
    } else if spec.policy.dns.allow && !spec.dns.is_empty() {
        let resolvers: Vec<Ipv4Net> = spec.dns.iter().map(|ip| Ipv4Net::from(*ip)).collect();
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            out.push(Allow {
                to: resolvers.clone(),
                except: vec![],
                protocol,
                ports: vec![53],
                why: "DNS to the listed resolvers".into(),
                forwarded: true,
                set: None,
                name: None,
            });
        }
    }
    for (i, d) in spec.policy.destinations.iter().enumerate() {
        let (to, except, set) = match &d.to {
            Target::Public => (vec![], not_public(), None),
            Target::Net(n) => (vec![*n], vec![], None),
            Target::Host(h) => (vec![], not_public(), Some((host_set(i), h))),
        };
        let why = match &set {
            Some((_, h)) => format!("{h}: {}", d.why),
            None => d.why.clone(),
        };
        let name = set.as_ref().map(|(_, h)| h.to_string());
        out.push(Allow {
            to,
            except,
            protocol: d.protocol,
            ports: d.ports.iter().map(|p| p.0).collect(),
            why,
            forwarded: true,
            set: set.map(|(s, _)| s),
            name,
        });
    }
    if spec.audit {
        out.push(Allow {
            to: vec![],
            except: not_public(),
            protocol: Protocol::Tcp,
            ports: vec![80, 443],
            why: "audit mode: web to public addresses, every new connection recorded".into(),
            forwarded: true,
            set: None,
            name: None,
        });
    }
    out
}

fn not_public() -> Vec<Ipv4Net> {
    NOT_PUBLIC.iter().filter_map(|s| s.parse().ok()).collect()
}

/// `inside`: for the namespace's table, where a host-name rule matches
/// its set of answered addresses.
fn allow_conds(a: &Allow, inside: bool) -> Vec<Cond> {
    let mut c = Vec::new();
    if let (true, Some(set)) = (inside, &a.set) {
        c.push(Cond::DstSet(set.clone()));
        c.push(Cond::Port(a.protocol, a.ports.clone()));
        return c;
    }
    if !a.to.is_empty() {
        c.push(Cond::DstIp(a.to.clone()));
    }
    if !a.except.is_empty() {
        c.push(Cond::NotDstIp(a.except.clone()));
    }
    c.push(Cond::Port(a.protocol, a.ports.clone()));
    c
}

/// The comment of every [`Verdict::Record`] rule.
pub const RECORD: &str = "refusals are counted per destination and logged";
/// The comment of the [`Verdict::Observe`] rule (audit mode).
pub const OBSERVE: &str = "audit mode: every new connection is recorded per destination";

fn rule(when: Vec<Cond>, then: Verdict, why: impl Into<String>) -> Rule {
    Rule {
        when,
        then,
        why: why.into(),
    }
}

/// Inside the netns: loopback and replies pass, the allowlist passes, the
/// host may reach the OpenClaw port, everything else is refused at once.
pub fn netns_table(spec: &Spec) -> Table {
    let mut output = vec![rule(
        vec![Cond::OutIf("lo".into())],
        Verdict::Accept,
        "loopback inside the sandbox",
    )];
    // Before the conntrack rule: every echo request of one ping run after
    // the first counts as established, which would lift the rate limit.
    output.extend(ping_rules(vec![], spec));
    output.extend([
        rule(
            vec![Cond::Established],
            Verdict::Accept,
            "replies to allowed connections",
        ),
        rule(vec![Cond::Ipv6], Verdict::Record, RECORD),
        rule(vec![Cond::Ipv6], Verdict::Reject, "IPv6 is closed"),
    ]);
    if spec.audit {
        output.push(rule(vec![], Verdict::Observe, OBSERVE));
    }
    let allows = allowlist(spec);
    let name_sets = allows.iter().filter_map(|a| a.set.clone()).collect();
    for a in allows {
        output.push(rule(allow_conds(&a, true), Verdict::Accept, a.why));
    }
    output.push(rule(vec![], Verdict::Record, RECORD));
    output.push(rule(vec![], Verdict::Reject, "anything else is refused"));

    let mut input = vec![
        rule(
            vec![Cond::InIf("lo".into())],
            Verdict::Accept,
            "loopback inside the sandbox",
        ),
        rule(
            vec![Cond::Established],
            Verdict::Accept,
            "replies to the sandbox's connections",
        ),
        rule(vec![Cond::Ipv6], Verdict::Reject, "IPv6 is closed"),
    ];
    // A CI job runs no OpenClaw gateway: nothing may connect in.
    if !spec.is_job() {
        input.push(rule(
            vec![
                Cond::SrcIp(Ipv4Net::from(spec.net.host_ip)),
                Cond::Port(Protocol::Tcp, vec![spec.openclaw_port]),
            ],
            Verdict::Accept,
            "the host reaches the OpenClaw gateway port",
        ));
    }
    input.push(rule(vec![], Verdict::Reject, "nothing else may connect in"));
    Table {
        name: spec.net.table.clone(),
        log_prefix: format!("sandbox {} deny: ", spec.name),
        prefix: String::new(),
        dispatch: None,
        chains: vec![
            chain("input".into(), Hook::Input, true, input),
            chain("output".into(), Hook::Output, true, output),
        ],
        name_sets,
        observe: spec.audit,
    }
}

/// On the host: this sandbox's part of the shared host table (see
/// [`super::host_table`]). Its chains are reached only through the
/// table's interface maps, so only what comes in through (or, forwarded,
/// goes out to) our veth is judged; other traffic passes untouched
/// (the base chains' policy is accept).
pub fn host_table(spec: &Spec) -> Table {
    let names = super::host_table::Names::of(&spec.name);
    let veth = spec.net.host_if.clone();
    let from_sandbox = || {
        vec![
            Cond::InIf(veth.clone()),
            Cond::SrcIp(Ipv4Net::from(spec.net.sandbox_ip)),
        ]
    };
    let allows = allowlist(spec);

    let mut input = ping_rules(from_sandbox(), spec);
    input.extend([
        rule(
            vec![Cond::InIf(veth.clone()), Cond::Established],
            Verdict::Accept,
            "replies to the host's connections",
        ),
        // Without it, IPv6 to the host (its link-local address) dies in
        // neighbour discovery after 3 s instead of at the refusal below,
        // once the sandbox's own table is gone. ARP passes the same way.
        rule(
            vec![Cond::InIf(veth.clone()), Cond::NeighbourDiscovery],
            Verdict::Accept,
            "IPv6 neighbour discovery, so IPv6 is refused at once, not left to time out",
        ),
        rule(vec![Cond::InIf(veth.clone()), Cond::Ipv6], Verdict::Record, RECORD),
        rule(
            vec![Cond::InIf(veth.clone()), Cond::Ipv6],
            Verdict::Reject,
            "IPv6 from the sandbox is closed",
        ),
    ]);
    let mut forward = vec![
        rule(
            vec![Cond::OutIf(veth.clone()), Cond::Established],
            Verdict::Accept,
            "replies to the sandbox's allowed connections",
        ),
        rule(
            vec![Cond::OutIf(veth.clone())],
            Verdict::Drop,
            "nothing else is forwarded into the sandbox",
        ),
        rule(vec![Cond::InIf(veth.clone()), Cond::Ipv6], Verdict::Record, RECORD),
        rule(
            vec![Cond::InIf(veth.clone()), Cond::Ipv6],
            Verdict::Reject,
            "IPv6 from the sandbox is closed",
        ),
    ];
    for a in &allows {
        let mut when = from_sandbox();
        when.extend(allow_conds(a, false));
        let target = if a.forwarded { &mut forward } else { &mut input };
        target.push(rule(when, Verdict::Accept, a.why.clone()));
    }
    input.push(rule(vec![Cond::InIf(veth.clone())], Verdict::Record, RECORD));
    input.push(rule(
        vec![Cond::InIf(veth.clone())],
        Verdict::Reject,
        "no other host service for the sandbox",
    ));
    forward.push(rule(vec![Cond::InIf(veth.clone())], Verdict::Record, RECORD));
    forward.push(rule(
        vec![Cond::InIf(veth.clone())],
        Verdict::Reject,
        "nothing else leaves the sandbox",
    ));

    // The forward chain stays even when nothing is forwarded for us: a host
    // that forwards for others must still not route the sandbox anywhere.
    let mut chains = vec![
        chain(names.input.clone(), Hook::Input, false, input),
        chain(names.forward.clone(), Hook::Forward, false, forward),
    ];
    if allows.iter().any(|a| a.forwarded) {
        chains.push(Chain {
            name: names.post.clone(),
            hook: Hook::Postrouting,
            nat: true,
            priority: 100,
            policy_drop: false,
            rules: vec![rule(
                vec![
                    Cond::SrcIp(Ipv4Net::from(spec.net.sandbox_ip)),
                    Cond::NotOutIf(veth.clone()),
                ],
                Verdict::Masquerade,
                "allowed traffic leaves with the host's address",
            )],
        });
    }
    Table {
        name: super::host_table::TABLE.into(),
        log_prefix: format!("sandbox {} host deny: ", spec.name),
        prefix: names.prefix.clone(),
        dispatch: Some(veth),
        chains,
        name_sets: vec![],
        observe: false,
    }
}

/// Echo requests (ping) to the host IP, at most a few a second, and no
/// other echo request: the DefenseClaw page's check `ping -c 1 $(cat
/// ~sandbox/.defenseclaw/.host-ip)`. They go before the conntrack rule,
/// which would otherwise pass every echo of a run after the first.
fn ping_rules(from: Vec<Cond>, spec: &Spec) -> Vec<Rule> {
    let mut ok = from.clone();
    ok.extend([
        Cond::DstIp(vec![Ipv4Net::from(spec.net.host_ip)]),
        Cond::IcmpEcho,
        Cond::PerSecond(super::PING_PER_SECOND),
    ]);
    let mut other = from;
    other.push(Cond::IcmpEcho);
    vec![
        rule(
            ok,
            Verdict::Accept,
            "ping to the host IP, rate-limited (the DefenseClaw page's check)",
        ),
        rule(other.clone(), Verdict::Record, RECORD),
        rule(other, Verdict::Reject, "no other ping, and no flood"),
    ]
}

fn chain(name: String, hook: Hook, policy_drop: bool, rules: Vec<Rule>) -> Chain {
    Chain {
        name,
        hook,
        nat: false,
        priority: 0,
        policy_drop,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn spec(extra: &[&str]) -> Spec {
        crate::testutil::spec(extra)
    }

    fn text(t: &Table) -> String {
        crate::firewall::to_nft_text(t)
    }

    #[test]
    fn strict_allows_only_the_sidecar() {
        let s = spec(&["--policy", "strict"]);
        let a = allowlist(&s);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].ports, vec![18970, 4000]);
        let ns = text(&netns_table(&s));
        assert!(
            ns.contains("ip daddr 10.200.0.1 tcp dport { 18970, 4000 } accept"),
            "{ns}"
        );
        assert!(!ns.contains("dport 53"), "{ns}");
        let host = text(&host_table(&s));
        assert!(!host.contains("masquerade"), "strict forwards nothing: {host}");
        assert!(
            host.contains(
                "iifname \"sandbox0\" ip saddr 10.200.0.2 ip daddr 10.200.0.1 tcp dport { 18970, 4000 } accept"
            ),
            "{host}"
        );
    }

    #[test]
    fn no_guardrail_closes_the_proxy_port() {
        let s = spec(&["--policy", "strict", "--no-guardrail"]);
        assert_eq!(allowlist(&s)[0].ports, vec![18970]);
        assert!(!text(&netns_table(&s)).contains("4000"));
        assert!(!text(&host_table(&s)).contains("4000"));
    }

    #[test]
    fn default_adds_dns_to_listed_resolvers_only() {
        let s = spec(&["--policy", crate::testutil::DNS_ONLY_POLICY, "--dns", "192.0.2.53"]);
        let ns = text(&netns_table(&s));
        assert!(ns.contains("ip daddr 192.0.2.53 udp dport 53 accept"), "{ns}");
        assert!(ns.contains("ip daddr 192.0.2.53 tcp dport 53 accept"), "{ns}");
        let host = text(&host_table(&s));
        assert!(
            host.contains("ip saddr 10.200.0.2 oifname != \"sandbox0\" masquerade"),
            "{host}"
        );
        assert!(
            host.contains("iifname \"sandbox0\" ip saddr 10.200.0.2 ip daddr 192.0.2.53 udp dport 53 accept"),
            "{host}"
        );
    }

    #[test]
    fn permissive_web_never_reaches_private_or_metadata_ranges() {
        let s = spec(&["--policy", crate::testutil::WEB_POLICY]);
        let ns = text(&netns_table(&s));
        let web = ns.lines().find(|l| l.contains("dport { 80, 443 }")).expect("web rule");
        for r in [
            "10.0.0.0/8",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
        ] {
            assert!(web.contains(r), "{r} missing from {web}");
        }
        assert!(web.contains("ip daddr != {"), "{web}");
    }

    #[test]
    fn a_host_name_rule_matches_its_set_inside_and_public_addresses_on_the_host() {
        let s = spec(&["--policy", "default", "--dns", "192.0.2.53"]);
        let t = netns_table(&s);
        assert_eq!(t.name_sets.len(), s.policy.destinations.len());
        let ns = text(&t);
        assert!(
            ns.contains("set host_1 {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t}"),
            "{ns}"
        );
        assert!(
            ns.contains("ip daddr @host_1 tcp dport 443 accept comment \"*.telegram.org: Telegram"),
            "{ns}"
        );
        // DNS goes to our resolver on the host IP, never to the upstreams.
        assert!(ns.contains("ip daddr 10.200.0.1 udp dport 53 accept"), "{ns}");
        assert!(!ns.contains("192.0.2.53"), "{ns}");
        let host = text(&host_table(&s));
        assert!(
            !host.contains("@host_"),
            "the host table holds no resolver sets: {host}"
        );
        assert!(!host.contains("192.0.2.53"), "{host}");
        let fwd = host
            .lines()
            .find(|l| l.contains("*.telegram.org"))
            .expect("forward rule");
        assert!(fwd.contains("ip daddr != {") && fwd.contains("169.254.0.0/16"), "{fwd}");
        // The JSON the kernel gets has the set and the rule's lookup.
        let json = serde_json::to_string(&crate::firewall::render::to_nft_value(&t, false).expect("json")).expect("s");
        assert!(
            json.contains(r#""name":"host_1","type":"ipv4_addr","flags":["timeout"]"#),
            "{json}"
        );
        assert!(json.contains(r#""right":"@host_1""#), "{json}");
    }

    #[test]
    fn audit_mode_records_every_new_connection_and_opens_public_web() {
        let s = spec(&["--policy", "strict", "--mode", "audit"]);
        let ns = text(&netns_table(&s));
        let observe = ns
            .find("update @seen4 { ip daddr . meta l4proto . th dport }")
            .expect("observe rule");
        let first_accept = ns.find("ip daddr 10.200.0.1 tcp dport").expect("sidecar rule");
        assert!(observe < first_accept, "recorded before any accept:\n{ns}");
        assert!(ns.contains("set seen4 {"), "{ns}");
        assert!(
            ns.lines()
                .any(|l| l.contains("dport { 80, 443 } accept") && l.contains("ip daddr != {")),
            "{ns}"
        );
        assert!(!text(&netns_table(&spec(&["--policy", "strict"]))).contains("seen4"));
    }

    #[test]
    fn every_chain_ends_in_a_refusal_and_closes_ipv6() {
        for p in ["strict", "default", "permissive"] {
            let s = spec(&["--policy", p]);
            for t in [netns_table(&s), host_table(&s)] {
                for c in t.chains.iter().filter(|c| !c.nat) {
                    let last = c.rules.last().expect("rules");
                    assert!(matches!(last.then, Verdict::Reject), "{p} {}: {:?}", c.name, last);
                    assert!(
                        c.rules
                            .iter()
                            .any(|r| r.when.contains(&Cond::Ipv6) && r.then == Verdict::Reject),
                        "{p} {}",
                        c.name
                    );
                }
            }
        }
    }

    #[test]
    fn only_the_host_reaches_the_openclaw_port() {
        let s = spec(&["--openclaw-port", "18800"]);
        let ns = text(&netns_table(&s));
        assert!(ns.contains("ip saddr 10.200.0.1 tcp dport 18800 accept"), "{ns}");
    }

    #[test]
    fn refusals_are_counted_and_logged_before_every_egress_refusal() {
        for p in ["strict", "default", "permissive"] {
            let s = spec(&["--policy", p, "--name", "box1"]);
            let ns = netns_table(&s);
            let host = host_table(&s);
            assert_eq!(ns.log_prefix, "sandbox box1 deny: ");
            assert_eq!(host.log_prefix, "sandbox box1 host deny: ");
            for (t, chain) in [(&ns, "output"), (&host, "box1_input"), (&host, "box1_forward")] {
                let c = t.chains.iter().find(|c| c.name == chain).expect("chain");
                for (i, r) in c.rules.iter().enumerate() {
                    if r.then == Verdict::Reject && !r.when.contains(&Cond::OutIf(s.net.host_if.clone())) {
                        let before = &c.rules[i - 1];
                        assert_eq!(before.then, Verdict::Record, "{p} {chain}: {r:?}");
                        assert_eq!(before.when, r.when, "{p} {chain}");
                        assert_eq!(before.why, RECORD);
                    }
                }
            }
            // Inbound refusals are not destinations the sandbox tried.
            let input = ns.chains.iter().find(|c| c.name == "input").expect("input");
            assert!(input.rules.iter().all(|r| r.then != Verdict::Record));
        }
        let s = spec(&["--policy", "strict"]);
        let ns = text(&netns_table(&s));
        for want in [
            "set denied4 {\n\t\ttype ipv4_addr . inet_proto . inet_service",
            "set denied6 {\n\t\ttype ipv6_addr . inet_proto . inet_service",
            "meta nfproto ipv4 meta l4proto { tcp, udp } update @denied4 { ip daddr . meta l4proto . th dport }",
            "meta nfproto ipv6 meta l4proto { tcp, udp } update @denied6 { ip6 daddr . meta l4proto . th dport }",
            "limit rate 10/minute burst 20 packets log prefix \"sandbox sandbox deny: \" level info",
        ] {
            assert!(ns.contains(want), "{want} missing:\n{ns}");
        }
    }

    #[test]
    fn host_table_lets_neighbour_discovery_in_and_refuses_ipv6_by_icmp() {
        let t = host_table(&spec(&["--policy", "strict"]));
        let text = crate::firewall::render::to_nft_text(&t);
        let input: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("chain sandbox_input {"))
            .take_while(|l| !l.contains("chain sandbox_forward {"))
            .collect();
        let nd = input
            .iter()
            .position(|l| l.contains("nd-neighbor-solicit"))
            .expect("nd");
        let v6 = input.iter().position(|l| l.contains("meta nfproto ipv6")).expect("v6");
        assert!(nd < v6, "neighbour discovery passes before IPv6 is refused:\n{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.contains("meta nfproto ipv6") && l.contains("tcp reset")),
            "no TCP reset for IPv6 from the veth:\n{text}"
        );
    }

    #[test]
    fn shape_counts_two_kernel_rules_per_record() {
        let t = netns_table(&spec(&["--policy", "strict"]));
        let output = t.shape().into_iter().find(|c| c.name == "output").expect("output");
        let records = output.rules.iter().filter(|w| *w == RECORD).count();
        assert_eq!(
            records, 6,
            "three refusals, each counted (two kernel rules each): {output:?}"
        );
        let json = crate::firewall::render::to_nft_value(&t, false).expect("json");
        let sets: Vec<&serde_json::Value> = json["nftables"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|o| o.pointer("/add/set"))
            .collect();
        assert_eq!(sets.len(), 2);
        for set in sets {
            assert_eq!(set["stmt"], serde_json::json!([{ "counter": null }]), "{set}");
            assert_eq!(set["flags"], serde_json::json!(["timeout"]), "{set}");
        }
    }

    #[test]
    fn fingerprint_follows_content() {
        let dns_only = crate::testutil::DNS_ONLY_POLICY;
        let a = netns_table(&spec(&["--policy", dns_only]));
        let b = netns_table(&spec(&["--policy", dns_only, "--dns", "9.9.9.9"]));
        assert_eq!(
            a.fingerprint(),
            netns_table(&spec(&["--policy", dns_only])).fingerprint()
        );
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(a.marker_chain().starts_with("gen_"));
    }
}
