//! Firewall rules as data: generated from the spec (`generate`), rendered
//! as nft JSON for the kernel (through the `nftables` crate) and as nft text
//! and plain words for people. Nothing here touches the host.

pub mod generate;
pub mod render;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::policy::Protocol;

pub use render::{to_nft_json, to_nft_text};

/// One table of ours, `inet` family so one table covers IPv4 and IPv6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    pub name: String,
    pub chains: Vec<Chain>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    pub name: &'static str,
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
    /// `tcp dport {..}` / `udp dport {..}`.
    Port(Protocol, Vec<u16>),
    Established,
    Ipv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Accept,
    Drop,
    /// TCP gets a reset, everything else ICMP admin-prohibited: a denied
    /// connection fails at once instead of timing out.
    Reject,
    Masquerade,
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

    pub fn marker_chain(&self) -> String {
        format!("gen_{}", self.fingerprint())
    }

    /// The shape `nft list table` must show for this table to count as in
    /// place: every chain with its policy and its rules' comments, in
    /// order. A flushed chain, a deleted or added rule, or a policy turned
    /// to accept all show here, without parsing rule expressions back
    /// (their JSON differs between nft versions).
    pub fn shape(&self) -> Vec<ChainShape> {
        let mut out = vec![ChainShape {
            name: self.marker_chain(),
            policy: None,
            rules: vec![],
        }];
        for c in &self.chains {
            let rules = c
                .rules
                .iter()
                .flat_map(|r| std::iter::repeat_n(r.why.clone(), render::kernel_rules(r)))
                .collect();
            let policy = Some(if c.policy_drop { "drop" } else { "accept" }.to_string());
            out.push(ChainShape {
                name: c.name.to_string(),
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
