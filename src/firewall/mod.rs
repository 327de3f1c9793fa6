//! Firewall rules as data: generated from the spec (`generate`), rendered
//! as nft JSON for the kernel (through the `nftables` crate) and as nft text
//! and plain words for people. Nothing here touches the host, but the
//! runners of [`host_table`], the one table all sandboxes share.

pub mod denials;
pub mod generate;
pub mod host_table;
pub mod render;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::policy::Protocol;

pub use denials::{denials, Denial, Where};
pub use render::{to_nft_json, to_nft_text};

/// The dynamic sets every table of ours carries: one element per refused
/// (destination, protocol, port), each with its own counter, fed from the
/// refusal path by [`Verdict::Record`] rules.
pub const DENIED4: &str = "denied4";
pub const DENIED6: &str = "denied6";
/// Audit mode's set: one element per (destination, protocol, port) the
/// sandbox opened a connection to, with a counter, fed by
/// [`Verdict::Observe`].
pub const SEEN4: &str = "seen4";
/// Audit mode records a destination for a week after its last use.
pub const SEEN_TIMEOUT_S: u32 = 7 * 24 * 3600;
/// An element lives this long after its last refusal (`update` refreshes it).
pub const DENIED_TIMEOUT_S: u32 = 24 * 3600;
/// At most this many distinct destinations per set; past it, new ones are
/// still refused and logged, just not counted until old entries expire.
pub const DENIED_SIZE: u32 = 4096;
/// The log rule's rate: a burst big enough to show one scan whole, a steady
/// rate that cannot fill the journal (at most 14 400 lines a day per rule).
pub const LOG_PER_MINUTE: u32 = 10;
pub const LOG_BURST: u32 = 20;

/// One table of ours, `inet` family so one table covers IPv4 and IPv6; or
/// (with `dispatch`) one sandbox's part of the shared host table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    pub name: String,
    /// Prefix of the kernel log lines of refusals (`sandbox <name> deny: `).
    pub log_prefix: String,
    /// Prefix of every object name of ours in the table: empty in a table
    /// of our own, `<name>_` in the shared host table.
    pub prefix: String,
    /// In the shared host table: the veth whose packets its maps send to
    /// these (regular) chains. None: a table of our own, base chains.
    pub dispatch: Option<String>,
    pub chains: Vec<Chain>,
    /// Sets of addresses (`ipv4_addr`, `flags timeout`, each element with
    /// its own timeout) that our resolver fills: one per host-name rule.
    pub name_sets: Vec<String>,
    /// Audit mode: the [`SEEN4`] set exists.
    pub observe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    pub name: String,
    pub hook: Hook,
    pub nat: bool,
    pub priority: i32,
    /// Drop inside the sandbox (default deny); accept on the host, where we
    /// judge only what comes from our veth and must not touch other traffic.
    pub policy_drop: bool,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Hook {
    Input,
    Output,
    Forward,
    Postrouting,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub when: Vec<Cond>,
    pub then: Verdict,
    /// Plain words; also the rule's nft comment.
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Cond {
    InIf(String),
    OutIf(String),
    NotOutIf(String),
    SrcIp(Ipv4Net),
    DstIp(Vec<Ipv4Net>),
    NotDstIp(Vec<Ipv4Net>),
    /// `ip daddr @<set>`: one of the addresses in that set of the table.
    DstSet(String),
    /// `tcp dport {..}` / `udp dport {..}`.
    Port(Protocol, Vec<u16>),
    Established,
    Ipv6,
    /// IPv6 neighbour discovery (solicitations and advertisements): the
    /// IPv6 counterpart of ARP, which no inet table sees.
    NeighbourDiscovery,
    /// An ICMP echo request (ping).
    IcmpEcho,
    /// At most this many packets a second (burst as many): a flood past it
    /// falls through to the rules after.
    PerSecond(u32),
}

/// Pings from the sandbox to its host IP (the DefenseClaw page's check
/// `ping -c 1 $(cat ~sandbox/.defenseclaw/.host-ip)`): this many a second.
pub const PING_PER_SECOND: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Accept,
    Drop,
    /// TCP gets a reset, everything else ICMP admin-prohibited: a denied
    /// connection fails at once instead of timing out.
    Reject,
    Masquerade,
    /// Not a verdict: count the packet in [`DENIED4`] (or [`DENIED6`] when
    /// the rule matches `Cond::Ipv6`) by destination, protocol and port, and
    /// log it, rate-limited, with the table's prefix; evaluation goes on to
    /// the refusal that follows. Counting sits in its own kernel rule, so a
    /// full set can never change the verdict.
    Record,
    /// Not a verdict: count the packet in [`SEEN4`] by destination,
    /// protocol and port (audit mode); evaluation goes on.
    Observe,
}

impl Table {
    /// Content hash, stored as the name of an empty marker chain so `check`
    /// can tell "our table, as generated now" without parsing rules back.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&json);
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Where the fingerprint sits in a table of our own: an empty chain
    /// named after it. (In the shared table it is the comment of a last,
    /// never reached rule of the sandbox's first chain: a fixed place one
    /// transaction can flush and refill without knowing the old one.)
    pub fn marker_chain(&self) -> String {
        format!("gen_{}", self.fingerprint())
    }

    /// The refusal-count sets (IPv4, IPv6).
    pub fn denied_sets(&self) -> (String, String) {
        (format!("{}{DENIED4}", self.prefix), format!("{}{DENIED6}", self.prefix))
    }

    /// The shape `nft list table` must show for this table to count as in
    /// place: every chain with its policy and its rules' comments, in
    /// order. A flushed chain, a deleted or added rule, or a policy turned
    /// to accept all show here, without parsing rule expressions back
    /// (their JSON differs between nft versions).
    pub fn shape(&self) -> Vec<ChainShape> {
        let mut out = Vec::new();
        if self.dispatch.is_none() {
            out.push(ChainShape {
                name: self.marker_chain(),
                policy: None,
                rules: vec![],
            });
        }
        for (i, c) in self.chains.iter().enumerate() {
            let mut rules: Vec<String> = c
                .rules
                .iter()
                .flat_map(|r| std::iter::repeat_n(r.why.clone(), render::kernel_rules(r)))
                .collect();
            if i == 0 && self.dispatch.is_some() {
                rules.push(self.fingerprint());
            }
            // A regular chain (the shared table's) has no policy.
            let policy = self
                .dispatch
                .is_none()
                .then(|| if c.policy_drop { "drop" } else { "accept" }.to_string());
            out.push(ChainShape {
                name: c.name.clone(),
                policy,
                rules,
            });
        }
        out
    }
}

/// One chain as seen by [`Table::shape`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainShape {
    pub name: String,
    pub policy: Option<String>,
    /// Rule comments, in order.
    pub rules: Vec<String>,
}
