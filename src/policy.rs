//! The egress policy file: a small, human-readable TOML document from which
//! every firewall rule is generated. Presets live in `policies/<preset>/`
//! and are compiled into the binary so an air-gapped host needs nothing else.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const PRESETS: &[(&str, &str)] = &[
    ("default", include_str!("../policies/default/policy.toml")),
    ("strict", include_str!("../policies/strict/policy.toml")),
    ("permissive", include_str!("../policies/permissive/policy.toml")),
];

/// Ranges that "public" never includes: private, shared, loopback,
/// link-local (cloud metadata lives at 169.254.169.254), benchmarking,
/// multicast and reserved space.
pub const NOT_PUBLIC: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// One line for humans; shown in plans.
    pub description: String,
    #[serde(default)]
    pub sidecar: Sidecar,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default, rename = "destination")]
    pub destinations: Vec<Destination>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// DefenseClaw gateway API on the host IP.
    #[serde(default = "default_gateway_port")]
    pub gateway_port: Port,
    /// DefenseClaw guardrail proxy on the host IP.
    #[serde(default = "default_guardrail_port")]
    pub guardrail_port: Port,
}

impl Default for Sidecar {
    fn default() -> Self {
        Sidecar {
            gateway_port: default_gateway_port(),
            guardrail_port: default_guardrail_port(),
        }
    }
}

fn default_gateway_port() -> Port {
    Port(18970)
}

fn default_guardrail_port() -> Port {
    Port(4000)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// DNS (UDP and TCP 53) to the `--dns` resolvers, and nowhere else.
    /// A policy that names hosts gets DNS through our resolver on the host
    /// IP instead, whatever this says (see `crate::resolver`).
    #[serde(default)]
    pub allow: bool,
    /// The shortest time, in seconds, an address our resolver answered
    /// stays allowed, whatever the record's TTL (clients cache answers a
    /// little longer than they should).
    #[serde(default = "default_ttl_floor")]
    pub ttl_floor: u32,
    /// The longest time, in seconds, an answered address stays allowed
    /// without being asked for again.
    #[serde(default = "default_ttl_cap")]
    pub ttl_cap: u32,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            allow: false,
            ttl_floor: default_ttl_floor(),
            ttl_cap: default_ttl_cap(),
        }
    }
}

/// Defaults of [`Dns::ttl_floor`] and [`Dns::ttl_cap`].
pub const TTL_FLOOR_S: u32 = 30;
pub const TTL_CAP_S: u32 = 3600;
/// The most either may be set to: one day.
pub const TTL_MAX_S: u32 = 86_400;

fn default_ttl_floor() -> u32 {
    TTL_FLOOR_S
}

fn default_ttl_cap() -> u32 {
    TTL_CAP_S
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// An IPv4 CIDR, `public` for every address outside [`NOT_PUBLIC`], or
    /// a host name (`registry.npmjs.org`, `*.pkg.dev`).
    pub to: Target,
    pub protocol: Protocol,
    pub ports: Vec<Port>,
    /// Why this way out exists; shown in plans and nft comments.
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(Port(p)),
            _ => Err(serde::de::Error::custom(format!(
                "port {n} is out of range: use 1-65535"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Public,
    Net(Ipv4Net),
    /// Whatever addresses our resolver answers for this name (or these
    /// names), for as long as the answer's TTL (clamped) says.
    Host(HostPattern),
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Target::Public => s.serialize_str("public"),
            Target::Net(n) => s.serialize_str(&n.to_string()),
            Target::Host(h) => s.serialize_str(&h.to_string()),
        }
    }
}

/// A host name, or `*.` and a suffix of at least two labels: the wildcard
/// stands for one or more whole labels on the left, so `*.pkg.dev` takes
/// `a.pkg.dev` and `a.b.pkg.dev`, never `pkg.dev` nor `evilpkg.dev`.
/// Kept lowercase, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPattern {
    pub wildcard: bool,
    /// The name, or for a wildcard the suffix after `*.`.
    pub name: String,
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

impl HostPattern {
    /// Parse a name as written in a policy file; the error says what is wrong.
    pub fn parse(s: &str) -> std::result::Result<HostPattern, String> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower.clone()),
        };
        if name.contains('*') {
            return Err(format!(
                "{s:?}: a wildcard may only be the whole leftmost label, like \"*.pkg.dev\""
            ));
        }
        if name.len() > 253 {
            return Err(format!("{s:?} is longer than a DNS name may be (253 characters)"));
        }
        let labels: Vec<&str> = name.split('.').collect();
        for l in &labels {
            let ok_chars = l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if l.is_empty() || l.len() > 63 || !ok_chars || l.starts_with('-') || l.ends_with('-') {
                return Err(format!(
                    "{s:?} is not a host name: each dot-separated label is 1-63 letters, digits, '-' or '_' (not starting or ending with '-')"
                ));
            }
        }
        if wildcard && labels.len() < 2 {
            return Err(format!(
                "{s:?} would allow a whole top-level domain: give at least two labels after \"*.\", like \"*.pkg.dev\""
            ));
        }
        if labels.last().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit())) {
            return Err(format!(
                "{s:?} is neither an IPv4 address nor a host name (a name's last label is not all digits)"
            ));
        }
        Ok(HostPattern { wildcard, name })
    }

    /// Whether `query` (any case, trailing dot or not) is this name, or for
    /// a wildcard one or more labels under its suffix.
    pub fn matches(&self, query: &str) -> bool {
        let q = query.trim_end_matches('.').to_ascii_lowercase();
        if !self.wildcard {
            return q == self.name;
        }
        q.len() > self.name.len() + 1 && q.ends_with(&self.name) && q.as_bytes()[q.len() - self.name.len() - 1] == b'.'
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "public" {
            return Ok(Target::Public);
        }
        let net = match s.parse::<Ipv4Net>() {
            Ok(n) => n,
            Err(_) => match s.parse::<Ipv4Addr>() {
                Ok(a) => Ipv4Net::from(a),
                Err(_) if s.contains(':') => {
                    return Err(serde::de::Error::custom(format!(
                        "{s:?} is not an IPv4 CIDR (like 203.0.113.0/24), a host name or `public`; IPv6 is closed in the sandbox"
                    )))
                }
                Err(_) if s.contains('/') => {
                    return Err(serde::de::Error::custom(format!(
                        "{s:?} is not an IPv4 CIDR (like 203.0.113.0/24)"
                    )))
                }
                Err(_) => return HostPattern::parse(&s).map(Target::Host).map_err(serde::de::Error::custom),
            },
        };
        if net.network() != net.addr() {
            return Err(serde::de::Error::custom(format!(
                "{s} has host bits set: did you mean {}?",
                net.trunc()
            )));
        }
        Ok(Target::Net(net))
    }
}

/// The largest policy file read (a real one is a few KiB).
pub const MAX_POLICY_BYTES: u64 = 1 << 20;

impl Policy {
    /// Resolve `--policy`: a preset name, or a path to a policy file.
    pub fn load(arg: &str) -> Result<(String, Policy)> {
        if let Some((name, text)) = PRESETS.iter().find(|(n, _)| *n == arg) {
            return Ok((name.to_string(), Policy::parse(text, &format!("preset {name}"))?));
        }
        let looks_like_path = arg.contains('/') || arg.ends_with(".toml");
        if !looks_like_path {
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            return Err(Error::input(
                format!("--policy {arg}"),
                "unknown preset",
                format!(
                    "use one of {} or a path to a policy file (e.g. ./my-policy.toml)",
                    names.join(", ")
                ),
            ));
        }
        let path = Path::new(arg);
        // A regular file of bounded size only: a FIFO or /dev/zero given
        // here must not hang the run or exhaust memory.
        let bytes = crate::sys::bounded::read_regular(path, MAX_POLICY_BYTES).map_err(|e| {
            Error::input(
                format!("--policy {arg}"),
                format!("cannot read the policy file: {e}"),
                format!(
                    "give a readable regular file of at most {} KiB (not a link, FIFO or device), or a preset: default, strict, permissive",
                    MAX_POLICY_BYTES / 1024
                ),
            )
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::input(
                format!("--policy {arg}"),
                format!("not UTF-8 text: {e}"),
                "give a TOML policy file (see README, Policies)",
            )
        })?;
        Ok((arg.to_string(), Policy::parse(&text, arg)?))
    }

    /// Parse and check a policy document. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Policy> {
        let policy: Policy = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            Error::input(
                format!("policy {origin}, line {line}, column {col}"),
                e.message().to_string(),
                "fix that field (see policies/default/policy.toml for the format)",
            )
        })?;
        policy.check(origin)?;
        Ok(policy)
    }

    /// Every host-name destination, with its index in `destinations`.
    pub fn host_rules(&self) -> impl Iterator<Item = (usize, &HostPattern, &Destination)> {
        self.destinations.iter().enumerate().filter_map(|(i, d)| match &d.to {
            Target::Host(h) => Some((i, h, d)),
            _ => None,
        })
    }

    /// Whether the sandbox's DNS goes to our resolver (the policy names hosts).
    pub fn names_hosts(&self) -> bool {
        self.host_rules().next().is_some()
    }

    fn check(&self, origin: &str) -> Result<()> {
        let d = &self.dns;
        if d.ttl_floor == 0 || d.ttl_floor > d.ttl_cap || d.ttl_cap > TTL_MAX_S {
            return Err(Error::input(
                format!("policy {origin}: [dns]"),
                format!("ttl_floor = {} and ttl_cap = {}", d.ttl_floor, d.ttl_cap),
                format!(
                    "give 1 <= ttl_floor <= ttl_cap <= {TTL_MAX_S} (seconds; defaults {TTL_FLOOR_S} and {TTL_CAP_S})"
                ),
            ));
        }
        if self.sidecar.gateway_port == self.sidecar.guardrail_port {
            return Err(Error::input(
                format!("policy {origin}: [sidecar]"),
                format!(
                    "gateway_port and guardrail_port are both {}",
                    self.sidecar.gateway_port.0
                ),
                "give the gateway API and the guardrail proxy different ports",
            ));
        }
        for (i, d) in self.destinations.iter().enumerate() {
            let what = format!("policy {origin}: destination #{}", i + 1);
            if d.ports.is_empty() {
                return Err(Error::input(
                    what,
                    "ports is empty",
                    "list at least one port, e.g. ports = [443]",
                ));
            }
            if d.why.trim().is_empty() {
                return Err(Error::input(
                    what,
                    "why is empty",
                    "say why this way out is needed; it shows in plans and rules",
                ));
            }
        }
        Ok(())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |p| before.len() - p - 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_nest() {
        let (_, strict) = Policy::load("strict").expect("strict");
        let (_, default) = Policy::load("default").expect("default");
        let (_, permissive) = Policy::load("permissive").expect("permissive");
        assert!(!strict.dns.allow && strict.destinations.is_empty());
        // DefenseClaw's lists, by name; permissive is default plus the LLM APIs.
        let names = |p: &Policy| -> Vec<String> { p.host_rules().map(|(_, h, _)| h.to_string()).collect() };
        let d = names(&default);
        for n in [
            "*.telegram.org",
            "*.slack.com",
            "hooks.slack.com",
            "*.discord.com",
            "gateway.discord.gg",
            "registry.npmjs.org",
            "openclaw.ai",
            "*.openclaw.ai",
        ] {
            assert!(d.contains(&n.to_string()), "default lacks {n}: {d:?}");
        }
        assert!(!d.iter().any(|n| n.contains("anthropic")), "{d:?}");
        let p = names(&permissive);
        for n in d
            .iter()
            .chain(&["api.anthropic.com".to_string(), "api.openai.com".to_string()])
        {
            assert!(p.contains(n), "permissive lacks {n}");
        }
        assert_eq!(p.len(), d.len() + 8);
        assert_eq!(default.destinations.len(), d.len(), "only names");
        for p in [&default, &permissive] {
            assert!(p
                .destinations
                .iter()
                .all(|d| d.ports == vec![Port(443)] && d.protocol == Protocol::Tcp));
        }
        for p in [&strict, &default, &permissive] {
            assert_eq!(p.sidecar, Sidecar::default());
        }
    }

    #[test]
    fn host_names_and_wildcards_parse_and_match_whole_labels() {
        let p = |s: &str| HostPattern::parse(s);
        let w = p("*.pkg.dev").expect("wildcard");
        assert!(w.matches("a.pkg.dev") && w.matches("a.b.pkg.dev") && w.matches("A.PKG.DEV."));
        assert!(!w.matches("pkg.dev") && !w.matches("evilpkg.dev") && !w.matches("pkg.dev.evil.com"));
        let e = p("Registry.NPMjs.org.").expect("name");
        assert_eq!(e.to_string(), "registry.npmjs.org");
        assert!(e.matches("registry.npmjs.org") && !e.matches("x.registry.npmjs.org"));
        for (bad, why) in [
            ("a.*.dev", "leftmost"),
            ("*foo.dev", "leftmost"),
            ("**.dev", "leftmost"),
            ("*.dev", "top-level"),
            ("-a.dev", "not a host name"),
            ("a..dev", "not a host name"),
            ("a b.dev", "not a host name"),
            ("1.2.3.999", "neither an IPv4"),
        ] {
            let e = p(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_names_and_ttls_in_a_file_say_where_and_what() {
        let file = |to: &str| {
            format!(
                "description = \"x\"\n[[destination]]\nto = \"{to}\"\nprotocol = \"tcp\"\nports = [443]\nwhy = \"y\"\n"
            )
        };
        let msg = Policy::parse(&file("a.*.pkg.dev"), "f.toml")
            .expect_err("wildcard")
            .to_string();
        assert!(
            msg.contains("f.toml, line 3") && msg.contains("leftmost label"),
            "{msg}"
        );
        assert!(Policy::parse(&file("*.pkg.dev"), "f").expect("ok").names_hosts());
        let ttl = "description = \"x\"\n[dns]\nttl_floor = 600\nttl_cap = 60\n";
        let msg = Policy::parse(ttl, "f").expect_err("floor above cap").to_string();
        assert!(msg.contains("ttl_floor") && msg.contains("fix"), "{msg}");
    }

    #[test]
    fn unknown_preset_names_the_choices() {
        let e = Policy::load("paranoid").expect_err("unknown preset");
        let msg = e.to_string();
        assert!(msg.contains("unknown preset") && msg.contains("strict"), "{msg}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn malformed_file_names_line_and_field() {
        let text = "description = \"x\"\n\n[[destination]]\nto = \"10.0.0.0/8\"\nprotocol = \"tcp\"\nports = [70000]\nwhy = \"y\"\n";
        let msg = Policy::parse(text, "f.toml").expect_err("bad port").to_string();
        assert!(msg.contains("f.toml, line 6"), "{msg}");
        assert!(msg.contains("70000"), "{msg}");
    }

    #[test]
    fn bad_fields_are_refused() {
        let cases = [
            ("description = \"x\"\nbogus = 1\n", "bogus"),
            ("description = \"x\"\n[[destination]]\nto = \"10.1.2.3/8\"\nprotocol = \"tcp\"\nports = [1]\nwhy = \"y\"\n", "host bits"),
            ("description = \"x\"\n[[destination]]\nto = \"fe80::/10\"\nprotocol = \"tcp\"\nports = [1]\nwhy = \"y\"\n", "IPv6"),
            ("description = \"x\"\n[[destination]]\nto = \"public\"\nprotocol = \"icmp\"\nports = [1]\nwhy = \"y\"\n", "icmp"),
            ("description = \"x\"\n[[destination]]\nto = \"public\"\nprotocol = \"tcp\"\nports = []\nwhy = \"y\"\n", "ports is empty"),
            ("description = \"x\"\n[sidecar]\ngateway_port = 4000\n", "both 4000"),
            ("description = \"x\"\n[sidecar]\ngateway_port = 0\n", "out of range"),
            ("[dns]\nallow = true\n", "description"),
        ];
        for (text, needle) in cases {
            let msg = Policy::parse(text, "t").expect_err(needle).to_string();
            assert!(msg.contains(needle), "{needle}: {msg}");
        }
    }

    #[test]
    fn custom_file_adds_destinations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mine.toml");
        std::fs::write(
            &path,
            "description = \"mirror\"\n[dns]\nallow = true\n[[destination]]\nto = \"198.51.100.7\"\nprotocol = \"udp\"\nports = [123]\nwhy = \"ntp\"\n",
        )
        .expect("write");
        let (name, p) = Policy::load(path.to_str().expect("utf8")).expect("load");
        assert!(name.ends_with("mine.toml"));
        assert_eq!(
            p.destinations[0].to,
            Target::Net("198.51.100.7/32".parse().expect("net"))
        );
        assert_eq!(p.destinations[0].protocol, Protocol::Udp);
    }
}
