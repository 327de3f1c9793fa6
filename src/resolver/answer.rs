//! What the resolver does with one question and one upstream answer, as
//! pure functions over DNS messages (hickory-proto): no sockets here.

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use ipnet::Ipv4Net;

use crate::policy::HostPattern;

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The name is not allowed: NXDOMAIN, counted as a denial.
    Deny,
    /// Allowed name, a type we never answer (AAAA, HTTPS, TXT, ...): an
    /// empty answer, so clients go on with the A answer.
    Empty,
    /// Ask upstream; put the answer's addresses in these sets.
    Forward { sets: Vec<String> },
}

/// The question's name: lowercase, without the trailing dot.
pub fn qname(q: &hickory_proto::op::Query) -> String {
    q.name().to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

pub fn decide(rules: &[(HostPattern, String)], audit: bool, name: &str, qtype: RecordType) -> Decision {
    let sets: Vec<String> = rules
        .iter()
        .filter(|(p, _)| p.matches(name))
        .map(|(_, s)| s.clone())
        .collect();
    if sets.is_empty() && !audit {
        return Decision::Deny;
    }
    if qtype != RecordType::A {
        return Decision::Empty;
    }
    Decision::Forward { sets }
}

/// A reply to `req` with `code` and no records.
pub fn reply(req: &Message, code: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    m.add_queries(req.queries().iter().cloned());
    m
}

/// What an upstream answer allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// These addresses, for this many seconds (TTL clamped).
    Addresses { addrs: Vec<Ipv4Addr>, ttl: u32 },
    /// An address in a range the policy does not name: refused.
    Rebinding(Ipv4Addr),
    /// No addresses (NXDOMAIN, NODATA, SERVFAIL): passed on as it is.
    Nothing,
}

/// Read the A records of `resp`, refusing a rebinding: an address in one of
/// `forbidden` not inside one of `private_ok`.
pub fn inspect(resp: &Message, forbidden: &[Ipv4Net], private_ok: &[Ipv4Net], floor: u32, cap: u32) -> Upstream {
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for r in resp.answers() {
        if let RData::A(a) = r.data() {
            let ip = a.0;
            let private = forbidden.iter().any(|n| n.contains(&ip));
            if private && !private_ok.iter().any(|n| n.contains(&ip)) {
                return Upstream::Rebinding(ip);
            }
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
            ttl = ttl.min(r.ttl());
        }
    }
    if addrs.is_empty() {
        return Upstream::Nothing;
    }
    Upstream::Addresses {
        addrs,
        ttl: ttl.clamp(floor, cap),
    }
}

/// The upstream answer as we return it: the client's id and flags, and no
/// record's TTL longer than the addresses stay allowed (a client that
/// cached it longer would find them closed).
pub fn relay(req: &Message, mut resp: Message, allowed_for: u32) -> Message {
    resp.set_id(req.id());
    resp.set_recursion_desired(req.recursion_desired());
    for section in [resp.answers_mut()] {
        for r in section.iter_mut() {
            let t = r.ttl().min(allowed_for);
            r.set_ttl(t);
        }
    }
    // Authority and additional records carry nothing the sandbox may use;
    // dropping them keeps the answer small (no truncation to TCP).
    resp.take_name_servers();
    resp.take_additionals();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::{rdata::A, Name, Record};
    use std::str::FromStr;

    fn rules() -> Vec<(HostPattern, String)> {
        vec![
            (HostPattern::parse("registry.npmjs.org").expect("p"), "host_1".into()),
            (HostPattern::parse("*.pkg.dev").expect("p"), "host_2".into()),
        ]
    }

    #[test]
    fn names_are_allowed_exactly_or_under_a_wildcard() {
        let r = rules();
        let fwd = |s: &str| Decision::Forward { sets: vec![s.into()] };
        assert_eq!(decide(&r, false, "registry.npmjs.org", RecordType::A), fwd("host_1"));
        assert_eq!(decide(&r, false, "a.pkg.dev", RecordType::A), fwd("host_2"));
        assert_eq!(decide(&r, false, "a.b.pkg.dev", RecordType::A), fwd("host_2"));
        for no in [
            "pkg.dev",
            "evilpkg.dev",
            "npmjs.org",
            "x.registry.npmjs.org",
            "pkg.dev.evil.com",
        ] {
            assert_eq!(decide(&r, false, no, RecordType::A), Decision::Deny, "{no}");
        }
        assert_eq!(decide(&r, false, "a.pkg.dev", RecordType::AAAA), Decision::Empty);
        assert_eq!(decide(&r, false, "evil.com", RecordType::AAAA), Decision::Deny);
        assert_eq!(
            decide(&r, true, "evil.com", RecordType::A),
            Decision::Forward { sets: vec![] },
            "audit mode answers every name"
        );
    }

    fn answer(ips: &[(&str, u32)]) -> Message {
        let mut m = Message::new();
        let name = Name::from_str("a.pkg.dev.").expect("name");
        m.add_query(Query::query(name.clone(), RecordType::A));
        for (ip, ttl) in ips {
            m.add_answer(Record::from_rdata(
                name.clone(),
                *ttl,
                RData::A(A::from_str(ip).expect("ip")),
            ));
        }
        m
    }

    #[test]
    fn rebinding_is_refused_unless_the_policy_names_the_range() {
        let forbidden = crate::resolver::not_public();
        let ok = |ips: &[(&str, u32)], private_ok: &[Ipv4Net]| inspect(&answer(ips), &forbidden, private_ok, 30, 3600);
        assert_eq!(
            ok(&[("203.0.113.7", 5), ("203.0.113.8", 100)], &[]),
            Upstream::Addresses {
                addrs: vec!["203.0.113.7".parse().expect("ip"), "203.0.113.8".parse().expect("ip")],
                ttl: 30
            }
        );
        assert_eq!(
            ok(&[("203.0.113.7", 90_000)], &[]),
            Upstream::Addresses {
                addrs: vec!["203.0.113.7".parse().expect("ip")],
                ttl: 3600
            }
        );
        for bad in ["169.254.169.254", "10.1.2.3", "127.0.0.1", "100.64.0.1", "192.168.1.1"] {
            assert_eq!(
                ok(&[("203.0.113.7", 60), (bad, 60)], &[]),
                Upstream::Rebinding(bad.parse().expect("ip"))
            );
        }
        let lan: Ipv4Net = "10.0.0.0/8".parse().expect("net");
        assert!(matches!(ok(&[("10.1.2.3", 60)], &[lan]), Upstream::Addresses { .. }));
        assert_eq!(ok(&[], &[]), Upstream::Nothing);
    }

    #[test]
    fn relayed_ttls_never_outlast_the_set_element() {
        let req = answer(&[]);
        let out = relay(&req, answer(&[("203.0.113.7", 90_000), ("203.0.113.8", 10)]), 3600);
        let ttls: Vec<u32> = out.answers().iter().map(|r| r.ttl()).collect();
        assert_eq!(ttls, vec![3600, 10]);
    }
}
