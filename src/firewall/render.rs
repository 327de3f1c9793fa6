//! Two renderings of one table: nft JSON for the kernel (what `apply`
//! feeds to `nft -j -f -` through the `nftables` crate) and nft text for
//! people (plans, README, `nft list table` look-alike).

use std::borrow::Cow;

use ipnet::Ipv4Net;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, SetItem, CT};
use nftables::schema::{self, NfCmd, NfListObject, NfObject, Nftables};
use nftables::schema::{SetFlag, SetType, SetTypeValue};
use nftables::stmt::{Counter, Limit, Log, LogLevel, Match, Operator, Reject, RejectType, SetOp, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook, RejectCode};

use super::{Chain, Cond, Hook, Rule, Table, Verdict};
use super::{DENIED4, DENIED6, DENIED_SIZE, DENIED_TIMEOUT_S, LOG_BURST, LOG_PER_MINUTE, SEEN4, SEEN_TIMEOUT_S};

/// The batch that (re)creates `t` atomically: "add table; delete table"
/// first, so a stale or drifted copy of our table goes, and nothing else in
/// the ruleset is touched.
///
/// With `fresh`, the batch instead *creates* the table, failing if one of
/// that name exists: a first install then skips the delete, whose RCU grace
/// period is most of an nft run's cost.
pub fn to_nft_json(t: &Table, fresh: bool) -> Nftables<'static> {
    let mut objs: Vec<NfObject<'static>> = if fresh {
        vec![NfObject::CmdObject(NfCmd::Create(NfListObject::Table(table(&t.name))))]
    } else {
        let mut v = delete_table_cmds(&t.name);
        v.push(add(NfListObject::Table(table(&t.name))));
        v
    };
    objs.push(add(NfListObject::Chain(regular_chain(&t.name, &t.marker_chain()))));
    objs.extend(denied_sets(t));
    objs.extend(resolver_sets(t));
    for c in &t.chains {
        objs.push(add(NfListObject::Chain(base_chain(&t.name, c))));
        objs.extend(chain_rules(t, c));
    }
    Nftables { objects: objs.into() }
}

/// `add set` of the table's two refusal-count sets.
pub fn denied_sets(t: &Table) -> Vec<NfObject<'static>> {
    let (v4, v6) = t.denied_sets();
    [(v4, SetType::Ipv4Addr), (v6, SetType::Ipv6Addr)]
        .into_iter()
        .map(|(name, addr)| {
            add(NfListObject::Set(Box::new(schema::Set {
                family: NfFamily::INet,
                table: t.name.clone().into(),
                name: name.into(),
                set_type: SetTypeValue::Concatenated(vec![addr, SetType::InetProto, SetType::InetService].into()),
                // nft 1.0.6 refuses "dynamic" in JSON; it sets the flag itself
                // for a set that a rule updates from the packet path.
                flags: Some([SetFlag::Timeout].into_iter().collect()),
                timeout: Some(DENIED_TIMEOUT_S),
                size: Some(DENIED_SIZE),
                ..Default::default()
            })))
        })
        .collect()
}

/// Audit mode's `seen4` (every new connection, counted) and the resolver's
/// sets of addresses per host-name rule (no default timeout: each element
/// brings its own, the answer's TTL clamped).
pub fn resolver_sets(t: &Table) -> Vec<NfObject<'static>> {
    let mut v = Vec::new();
    if t.observe {
        v.push(add(NfListObject::Set(Box::new(schema::Set {
            family: NfFamily::INet,
            table: t.name.clone().into(),
            name: SEEN4.into(),
            set_type: SetTypeValue::Concatenated(
                vec![SetType::Ipv4Addr, SetType::InetProto, SetType::InetService].into(),
            ),
            flags: Some([SetFlag::Timeout].into_iter().collect()),
            timeout: Some(SEEN_TIMEOUT_S),
            size: Some(DENIED_SIZE),
            ..Default::default()
        }))));
    }
    for name in &t.name_sets {
        v.push(add(NfListObject::Set(Box::new(schema::Set {
            family: NfFamily::INet,
            table: t.name.clone().into(),
            name: name.clone().into(),
            set_type: SetTypeValue::Single(SetType::Ipv4Addr),
            flags: Some([SetFlag::Timeout].into_iter().collect()),
            ..Default::default()
        }))));
    }
    v
}

/// A chain without a hook, reached only by a jump (or never: a marker).
pub fn regular_chain(table: &str, name: &str) -> schema::Chain<'static> {
    schema::Chain {
        family: NfFamily::INet,
        table: table.to_string().into(),
        name: name.to_string().into(),
        ..Default::default()
    }
}

/// A chain on a hook, with its priority and policy.
pub fn base_chain(table: &str, c: &Chain) -> schema::Chain<'static> {
    schema::Chain {
        _type: Some(if c.nat { NfChainType::NAT } else { NfChainType::Filter }),
        hook: Some(hook(c.hook)),
        prio: Some(c.priority),
        policy: Some(if c.policy_drop {
            NfChainPolicy::Drop
        } else {
            NfChainPolicy::Accept
        }),
        ..regular_chain(table, &c.name)
    }
}

/// `add rule` of every kernel rule of `c`, in order.
pub fn chain_rules(t: &Table, c: &Chain) -> Vec<NfObject<'static>> {
    let (v4, v6) = t.denied_sets();
    let mut objs = Vec::new();
    for r in &c.rules {
        for expr in rule_exprs(r, &t.log_prefix, (&v4, &v6)) {
            objs.push(add(NfListObject::Rule(schema::Rule {
                family: NfFamily::INet,
                table: t.name.clone().into(),
                chain: c.name.clone().into(),
                expr: expr.into(),
                handle: None,
                index: None,
                comment: Some(r.why.clone().into()),
            })));
        }
    }
    objs
}

/// [`to_nft_json`] as the JSON `nft -j -f -` reads, with what the
/// `nftables` crate cannot say yet: a counter on every element of the
/// denial sets (`"stmt": [{"counter": null}]` on the set).
pub fn to_nft_value(t: &Table, fresh: bool) -> serde_json::Result<serde_json::Value> {
    with_set_counters(&to_nft_json(t, fresh))
}

/// A batch as JSON, every `add set` in it given per-element counters.
pub fn with_set_counters(batch: &Nftables<'_>) -> serde_json::Result<serde_json::Value> {
    let mut v = serde_json::to_value(batch)?;
    for obj in v["nftables"].as_array_mut().into_iter().flatten() {
        if let Some(set) = obj.pointer_mut("/add/set").and_then(|s| s.as_object_mut()) {
            let counted = set
                .get("name")
                .and_then(|n| n.as_str())
                // `denied4`, or a sandbox's `<name>_denied4` in the shared
                // host table; not the resolver's address sets.
                .is_some_and(|n| n.ends_with(DENIED4) || n.ends_with(DENIED6) || n == SEEN4);
            if !counted {
                continue;
            }
            set.insert("stmt".into(), serde_json::json!([{ "counter": null }]));
        }
    }
    Ok(v)
}

/// "add table; delete table": deleting is then idempotent in one batch.
pub fn delete_table_cmds(name: &str) -> Vec<NfObject<'static>> {
    vec![
        add(NfListObject::Table(table(name))),
        NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(table(name)))),
    ]
}

pub fn table(name: &str) -> schema::Table<'static> {
    schema::Table {
        family: NfFamily::INet,
        name: name.to_string().into(),
        handle: None,
    }
}

pub fn add(o: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(o))
}

pub fn hook(h: Hook) -> NfHook {
    match h {
        Hook::Input => NfHook::Input,
        Hook::Output => NfHook::Output,
        Hook::Forward => NfHook::Forward,
        Hook::Postrouting => NfHook::Postrouting,
    }
}

/// How many kernel rules `r` becomes.
pub fn kernel_rules(r: &Rule) -> usize {
    rule_exprs(r, "", ("", "")).len()
}

/// A `Reject` becomes two kernel rules: TCP gets a reset (ECONNREFUSED at
/// once), everything else ICMP admin-prohibited; IPv6 from a link of the
/// host gets ICMPv6 alone (one rule; see [`tcp_reset`]). A `Record` becomes two as
/// well: the count (TCP and UDP, the only traffic an unprivileged process
/// can send) and the rate-limited log line (everything).
fn rule_exprs(r: &Rule, log_prefix: &str, sets: (&str, &str)) -> Vec<Vec<Statement<'static>>> {
    let conds: Vec<Statement<'static>> = r.when.iter().map(cond).collect();
    let with = |extra: Option<Statement<'static>>, verdict: Vec<Statement<'static>>| {
        let mut v = conds.clone();
        v.extend(extra);
        v.extend(verdict);
        v
    };
    match r.then {
        Verdict::Accept => vec![with(None, vec![Statement::Accept(None)])],
        Verdict::Drop => vec![with(None, vec![Statement::Drop(None)])],
        Verdict::Masquerade => vec![with(None, vec![Statement::Masquerade(None)])],
        Verdict::Observe => {
            let mut count = conds.clone();
            count.push(meta_eq(MetaKey::Nfproto, "ipv4"));
            count.push(l4_tcp_udp());
            count.push(Statement::Set(nftables::stmt::Set {
                op: SetOp::Update,
                elem: Expression::Named(NamedExpression::Concat(vec![
                    payload("ip", "daddr"),
                    Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::L4proto })),
                    payload("th", "dport"),
                ])),
                set: format!("@{SEEN4}").into(),
            }));
            vec![count]
        }
        Verdict::Record => {
            let v6 = r.when.contains(&Cond::Ipv6);
            let (family, set, addr) = if v6 {
                ("ipv6", sets.1, payload("ip6", "daddr"))
            } else {
                ("ipv4", sets.0, payload("ip", "daddr"))
            };
            let mut count = conds.clone();
            if !v6 {
                count.push(meta_eq(MetaKey::Nfproto, family));
            }
            count.push(matches(
                Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::L4proto })),
                Operator::EQ,
                Expression::Named(NamedExpression::Set(vec![
                    SetItem::Element(Expression::String("tcp".into())),
                    SetItem::Element(Expression::String("udp".into())),
                ])),
            ));
            count.push(Statement::Set(nftables::stmt::Set {
                op: SetOp::Update,
                elem: Expression::Named(NamedExpression::Concat(vec![
                    addr,
                    Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::L4proto })),
                    payload("th", "dport"),
                ])),
                set: format!("@{set}").into(),
            }));
            let mut log = conds.clone();
            log.push(Statement::Limit(Limit {
                rate: LOG_PER_MINUTE,
                rate_unit: None,
                per: Some("minute".into()),
                burst: Some(LOG_BURST),
                burst_unit: None,
                inv: None,
            }));
            let mut l = Log::new(None);
            l.prefix = Some(log_prefix.to_string().into());
            l.level = Some(LogLevel::Info);
            log.push(Statement::Log(Some(l)));
            vec![count, log]
        }
        Verdict::Reject => {
            let icmp = with(
                None,
                vec![
                    counter(),
                    Statement::Reject(Some(Reject::new(
                        Some(RejectType::ICMPX),
                        Some(RejectCode::AdminProhibited),
                    ))),
                ],
            );
            if !tcp_reset(r) {
                return vec![icmp];
            }
            let reset = with(
                Some(meta_eq(MetaKey::L4proto, "tcp")),
                vec![
                    counter(),
                    Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None))),
                ],
            );
            vec![reset, icmp]
        }
    }
}

/// Whether a refusal answers TCP with a reset. Not for IPv6 that came in
/// through a link of the host (the host table's veth rules): the kernel
/// routes an IPv6 reset without the interface the SYN came in on, so to a
/// link-local source (the sandbox's only IPv6 address) it left by
/// another link and the connection hung until it timed out. An ICMPv6
/// error goes back the way the packet came, and fails the connect at once
/// all the same. (Inside the namespace, with one link, the reset is kept.)
fn tcp_reset(r: &Rule) -> bool {
    let from_a_link = r.when.iter().any(|c| matches!(c, Cond::InIf(_)));
    !(from_a_link && r.when.contains(&Cond::Ipv6))
}

fn l4_tcp_udp() -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::L4proto })),
        Operator::EQ,
        Expression::Named(NamedExpression::Set(vec![
            SetItem::Element(Expression::String("tcp".into())),
            SetItem::Element(Expression::String("udp".into())),
        ])),
    )
}

fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(None))
}

fn matches(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn meta_eq(key: MetaKey, value: &str) -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::Meta(Meta { key })),
        Operator::EQ,
        Expression::String(value.to_string().into()),
    )
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: Cow::Borrowed(protocol),
        field: Cow::Borrowed(field),
    })))
}

fn net(n: &Ipv4Net) -> Expression<'static> {
    let addr = Expression::String(n.addr().to_string().into());
    if n.prefix_len() == 32 {
        addr
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(addr),
            len: u32::from(n.prefix_len()),
        }))
    }
}

fn nets(ns: &[Ipv4Net]) -> Expression<'static> {
    match ns {
        [one] => net(one),
        _ => Expression::Named(NamedExpression::Set(
            ns.iter().map(|n| SetItem::Element(net(n))).collect(),
        )),
    }
}

fn ports(ps: &[u16]) -> Expression<'static> {
    match ps {
        [one] => Expression::Number(u32::from(*one)),
        _ => Expression::Named(NamedExpression::Set(
            ps.iter()
                .map(|p| SetItem::Element(Expression::Number(u32::from(*p))))
                .collect(),
        )),
    }
}

fn cond(c: &Cond) -> Statement<'static> {
    let meta = |key| Expression::Named(NamedExpression::Meta(Meta { key }));
    let s = |v: &str| Expression::String(v.to_string().into());
    match c {
        Cond::InIf(n) => matches(meta(MetaKey::Iifname), Operator::EQ, s(n)),
        Cond::OutIf(n) => matches(meta(MetaKey::Oifname), Operator::EQ, s(n)),
        Cond::NotOutIf(n) => matches(meta(MetaKey::Oifname), Operator::NEQ, s(n)),
        Cond::SrcIp(n) => matches(payload("ip", "saddr"), Operator::EQ, net(n)),
        Cond::DstIp(ns) => matches(payload("ip", "daddr"), Operator::EQ, nets(ns)),
        Cond::NotDstIp(ns) => matches(payload("ip", "daddr"), Operator::NEQ, nets(ns)),
        Cond::DstSet(set) => matches(payload("ip", "daddr"), Operator::EQ, s(&format!("@{set}"))),
        Cond::Port(proto, ps) => matches(payload(proto.as_str(), "dport"), Operator::EQ, ports(ps)),
        Cond::Established => matches(
            Expression::Named(NamedExpression::CT(CT {
                key: "state".into(),
                family: None,
                dir: None,
            })),
            Operator::IN,
            Expression::List(vec![s("established"), s("related")]),
        ),
        Cond::Ipv6 => meta_eq(MetaKey::Nfproto, "ipv6"),
        Cond::NeighbourDiscovery => matches(
            payload("icmpv6", "type"),
            Operator::EQ,
            Expression::Named(NamedExpression::Set(vec![
                SetItem::Element(s("nd-neighbor-solicit")),
                SetItem::Element(s("nd-neighbor-advert")),
            ])),
        ),
        Cond::IcmpEcho => matches(payload("icmp", "type"), Operator::EQ, s("echo-request")),
        Cond::PerSecond(n) => Statement::Limit(Limit {
            rate: *n,
            rate_unit: None,
            per: Some("second".into()),
            burst: Some(*n),
            burst_unit: None,
            inv: None,
        }),
    }
}

/// nft syntax, as `nft list table` would print it (modulo handles).
pub fn to_nft_text(t: &Table) -> String {
    if t.dispatch.is_some() {
        return super::host_table::to_text(t);
    }
    let mut out = format!("table inet {} {{\n\tchain {} {{\n\t}}\n", t.name, t.marker_chain());
    out.push_str(&sets_text(t));
    for c in &t.chains {
        out.push_str(&chain_text(t, c));
    }
    out.push_str("}\n");
    out
}

/// The two refusal-count sets, as `nft list` prints them.
pub fn sets_text(t: &Table) -> String {
    let (v4, v6) = t.denied_sets();
    let mut out = String::new();
    let mut counted = vec![(v4, "ipv4_addr", DENIED_TIMEOUT_S), (v6, "ipv6_addr", DENIED_TIMEOUT_S)];
    if t.observe {
        counted.push((SEEN4.to_string(), "ipv4_addr", SEEN_TIMEOUT_S));
    }
    for (name, addr, timeout) in counted {
        out.push_str(&format!(
            "\tset {name} {{\n\t\ttype {addr} . inet_proto . inet_service\n\t\tsize {DENIED_SIZE}\n\t\tflags dynamic,timeout\n\t\tcounter\n\t\ttimeout {}h\n\t}}\n",
            timeout / 3600
        ));
    }
    for name in &t.name_sets {
        out.push_str(&format!(
            "\tset {name} {{\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t}}\n"
        ));
    }
    out
}

/// One chain as `nft list` prints it: a base chain with its hook line, a
/// regular chain (the shared table's) without.
pub fn chain_text(t: &Table, c: &Chain) -> String {
    let kind = if c.nat { "nat" } else { "filter" };
    let hook = match c.hook {
        Hook::Input => "input",
        Hook::Output => "output",
        Hook::Forward => "forward",
        Hook::Postrouting => "postrouting",
    };
    let policy = if c.policy_drop { "drop" } else { "accept" };
    let mut out = format!("\tchain {} {{\n", c.name);
    if t.dispatch.is_none() {
        out.push_str(&format!(
            "\t\ttype {kind} hook {hook} priority {}; policy {policy};\n",
            c.priority
        ));
    }
    let sets = t.denied_sets();
    for r in &c.rules {
        for line in rule_text(r, &t.log_prefix, (&sets.0, &sets.1)) {
            out.push_str(&format!("\t\t{line}\n"));
        }
    }
    out.push_str("\t}\n");
    out
}

pub fn rule_text(r: &Rule, log_prefix: &str, sets: (&str, &str)) -> Vec<String> {
    let conds: Vec<String> = r.when.iter().map(cond_text).collect();
    let line = |mut parts: Vec<String>, verdict: &str| {
        parts.retain(|p| !p.is_empty());
        parts.push(verdict.to_string());
        parts.push(format!("comment {:?}", r.why));
        parts.join(" ")
    };
    match r.then {
        Verdict::Accept => vec![line(conds, "accept")],
        Verdict::Drop => vec![line(conds, "drop")],
        Verdict::Masquerade => vec![line(conds, "masquerade")],
        Verdict::Observe => {
            let mut count = conds;
            count.push("meta nfproto ipv4 meta l4proto { tcp, udp }".into());
            vec![line(
                count,
                &format!("update @{SEEN4} {{ ip daddr . meta l4proto . th dport }}"),
            )]
        }
        Verdict::Record => {
            let v6 = r.when.contains(&Cond::Ipv6);
            let (set, addr) = if v6 { (sets.1, "ip6") } else { (sets.0, "ip") };
            let mut count = conds.clone();
            if !v6 {
                count.push("meta nfproto ipv4".into());
            }
            count.push("meta l4proto { tcp, udp }".into());
            vec![
                line(count, &format!("update @{set} {{ {addr} daddr . meta l4proto . th dport }}")),
                line(
                    conds,
                    &format!(
                        "limit rate {LOG_PER_MINUTE}/minute burst {LOG_BURST} packets log prefix {log_prefix:?} level info"
                    ),
                ),
            ]
        }
        Verdict::Reject => {
            let icmp = line(conds.clone(), "counter reject with icmpx admin-prohibited");
            if !tcp_reset(r) {
                return vec![icmp];
            }
            let mut tcp = conds;
            tcp.push("meta l4proto tcp".into());
            vec![line(tcp, "counter reject with tcp reset"), icmp]
        }
    }
}

fn nets_text(ns: &[Ipv4Net]) -> String {
    let one = |n: &Ipv4Net| {
        if n.prefix_len() == 32 {
            n.addr().to_string()
        } else {
            n.to_string()
        }
    };
    match ns {
        [n] => one(n),
        _ => format!("{{ {} }}", ns.iter().map(one).collect::<Vec<_>>().join(", ")),
    }
}

fn cond_text(c: &Cond) -> String {
    match c {
        Cond::InIf(n) => format!("iifname {n:?}"),
        Cond::OutIf(n) => format!("oifname {n:?}"),
        Cond::NotOutIf(n) => format!("oifname != {n:?}"),
        Cond::SrcIp(n) => format!("ip saddr {}", nets_text(std::slice::from_ref(n))),
        Cond::DstIp(ns) => format!("ip daddr {}", nets_text(ns)),
        Cond::NotDstIp(ns) => format!("ip daddr != {}", nets_text(ns)),
        Cond::DstSet(set) => format!("ip daddr @{set}"),
        Cond::Port(proto, ps) => {
            let list = match ps.as_slice() {
                [p] => p.to_string(),
                _ => format!("{{ {} }}", ps.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")),
            };
            format!("{} dport {list}", proto.as_str())
        }
        Cond::Established => "ct state established,related".into(),
        Cond::Ipv6 => "meta nfproto ipv6".into(),
        Cond::NeighbourDiscovery => "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert }".into(),
        Cond::IcmpEcho => "icmp type echo-request".into(),
        Cond::PerSecond(n) => format!("limit rate {n}/second burst {n} packets"),
    }
}

#[cfg(test)]
mod fresh_tests {
    use super::*;

    #[test]
    fn a_fresh_install_creates_and_never_deletes() {
        let t = crate::firewall::generate::netns_table(&crate::testutil::spec(&["--policy", "strict"]));
        let fresh = serde_json::to_string(&to_nft_json(&t, true)).expect("json");
        assert!(fresh.starts_with(r#"{"nftables":[{"create":{"table""#), "{fresh}");
        assert!(!fresh.contains(r#""delete""#), "{fresh}");
        let replace = serde_json::to_string(&to_nft_json(&t, false)).expect("json");
        assert!(replace.contains(r#"{"delete":{"table""#), "{replace}");
    }
}
