//! CLI flags + policy file -> one validated `Spec`. Everything the steps
//! need is decided here, before anything on the host changes; every object
//! name derives from `--name` so several sandboxes can share a host.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::cli::SetupArgs;
use crate::config_file::{ConfigFile, Settings, SetupInput};
use crate::error::{Error, Result};
use crate::host::Addressing;
use crate::policy::Policy;

/// Longest `--name`: the host veth is `<name>0` and Linux caps interface
/// names at 15 bytes (IFNAMSIZ - 1).
pub const MAX_NAME: usize = 14;
/// Largest subnet we put on the veth pair: anything wider is a typo and
/// would shadow routes the host may need.
pub const WIDEST_PREFIX: u8 = 24;
/// Name of the veth peer inside the sandbox's namespace.
pub const PEER_NAME: &str = "eth0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    pub root: Root,
    pub net: NetSpec,
    /// Whether `net`'s addresses are the operator's or leased from the
    /// host record (then `net` holds them once `host::lease` ran).
    #[serde(default = "fixed")]
    pub addressing: Addressing,
    pub policy_name: String,
    pub policy: Policy,
    pub dns: Vec<Ipv4Addr>,
    pub dns_from_host: bool,
    pub sandbox_home: PathBuf,
    pub openclaw_port: u16,
    pub auto_pair: bool,
    pub host_networking: bool,
    pub guardrail: bool,
    pub systemd: bool,
    /// `--mode audit`: the sandbox may also reach public web addresses and
    /// any name, and every name, address, protocol and port it uses is
    /// recorded (see `crate::resolver` and `sandbox policy suggest`).
    #[serde(default)]
    pub audit: bool,
    /// OpenClaw, started by the agent unit.
    pub agent_bin: PathBuf,
    /// The DefenseClaw gateway, started by the sidecar unit.
    pub sidecar_bin: PathBuf,
    /// Who runs the sidecar (`--sidecar-user`, default `SUDO_USER`); None:
    /// a dynamic user.
    pub sidecar_user: Option<String>,
    /// A CI job's sandbox (`sandbox job`): only the steps a job needs
    /// (network, firewall, DNS, an identity) want it. None: an agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSpec>,
}

/// What a job sandbox is beyond its network: its own uid (no account in
/// /etc/passwd; no other live job has it), its home, and when `job gc`
/// may take it away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Leased from the host record (`host::JOB_UIDS`), with its /30.
    pub uid: u32,
    /// The home under the state tree, as seen under `--root`.
    pub home: PathBuf,
    /// Seconds since the epoch after which `job gc` destroys it.
    pub expires: Option<u64>,
    /// The process whose death makes the job garbage (pid and its start
    /// time in clock ticks since boot, so a reused pid is not taken for it).
    pub creator: Option<Creator>,
    /// When it was made (seconds since the epoch).
    pub created: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creator {
    pub pid: u32,
    pub start: u64,
}

/// The network objects' names and addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSpec {
    pub netns: String,
    pub host_if: String,
    pub peer_if: String,
    pub host_ip: Ipv4Addr,
    pub sandbox_ip: Ipv4Addr,
    pub prefix: u8,
    /// nft table name, the same inside the netns and on the host.
    pub table: String,
}

impl NetSpec {
    pub fn subnet(&self) -> Ipv4Net {
        Ipv4Net::new(self.host_ip, self.prefix)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| Ipv4Net::from(self.host_ip))
    }
}

/// `--root`: every file path the tool touches is taken under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root(pub PathBuf);

impl Root {
    /// `/etc/x` -> `<root>/etc/x`.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let rel = abs.as_ref().strip_prefix("/").unwrap_or(abs.as_ref());
        self.0.join(rel)
    }

    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.path(format!("/var/lib/sandbox/{name}"))
    }

    pub fn netns_dir(&self) -> PathBuf {
        self.path("/run/netns")
    }

    pub fn netns_path(&self, netns: &str) -> PathBuf {
        self.netns_dir().join(netns)
    }
}

/// The parts of the spec that `--disable` needs: it must work with nothing
/// but `--name` and `--root`, whatever flags setup was given.
/// With `--config FILE` and no `--name`, the name is the file's (the
/// rest of the file is not needed, and `--disable` keeps it).
pub fn disable_target(args: &SetupArgs) -> Result<(String, Root)> {
    let given = args.given.iter().any(|g| g == "name");
    let name = match &args.config {
        Some(file) if !given => ConfigFile::read(file)?.input.name.unwrap_or_else(|| args.name.clone()),
        _ => args.name.clone(),
    };
    target(&name, &args.root)
}

/// A validated `--name` and `--root`, for commands that need no more.
pub fn target(name: &str, root: &Path) -> Result<(String, Root)> {
    Ok((check_name(name)?, check_root(root)?))
}

impl Spec {
    /// The flags, over the config file (`--config`, or
    /// `/etc/sandbox/<name>.toml` under `--root`), over the defaults.
    pub fn from_args(args: &SetupArgs) -> Result<Spec> {
        Spec::from_settings(&Settings::resolve(args)?, &args.root)
    }

    /// Validate merged settings; a bad value from the config file is
    /// refused with its file, line and column.
    pub fn from_settings(settings: &Settings, root: &Path) -> Result<Spec> {
        Spec::from_input(&settings.input, root).map_err(|e| settings.locate(e))
    }

    fn from_input(input: &SetupInput, root: &Path) -> Result<Spec> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let path = |v: &Option<PathBuf>| v.clone().unwrap_or_default();
        let name = check_name(&text(&input.name))?;
        let root = check_root(root)?;
        let (addressing, host_ip, sandbox_ip, prefix) = addressing(input)?;
        let openclaw_port = match input.openclaw_port {
            Some(p) if p > 0 => p,
            _ => parse_port("--openclaw-port", "0")?,
        };
        let (policy_name, policy) = Policy::load(&text(&input.policy))?;
        let (dns, dns_from_host) = parse_dns(&text(&input.dns), &root)?;
        // Each name its own home: two sandboxes never share one by default.
        let home = input
            .sandbox_home
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/home/{name}")));
        let sandbox_home = check_home(&home)?;
        let agent_bin = check_program("--agent-bin", &path(&input.agent_bin))?;
        let sidecar_bin = check_program("--sidecar-bin", &path(&input.sidecar_bin))?;
        let sidecar_user = check_sidecar_user(input.sidecar_user.as_deref())?;
        refuse_privilege(&name, &sandbox_home, sidecar_user.as_deref())?;
        let net = NetSpec {
            netns: format!("{name}0"),
            host_if: format!("{name}0"),
            peer_if: PEER_NAME.to_string(),
            host_ip,
            sandbox_ip,
            prefix,
            table: format!("sandbox_{name}"),
        };
        Ok(Spec {
            name,
            root,
            net,
            addressing,
            policy_name,
            policy,
            dns,
            dns_from_host,
            sandbox_home,
            openclaw_port,
            auto_pair: !input.no_auto_pair.unwrap_or(false),
            host_networking: !input.no_host_networking.unwrap_or(false),
            guardrail: !input.no_guardrail.unwrap_or(false),
            systemd: !input.no_systemd.unwrap_or(false),
            audit: parse_mode(input.mode.as_deref())?,
            agent_bin,
            sidecar_bin,
            sidecar_user,
            job: None,
        })
    }

    /// Whether this is a CI job's sandbox (`sandbox job`).
    pub fn is_job(&self) -> bool {
        self.job.is_some()
    }

    /// Whether anything leaves the host through it (DNS or policy
    /// destinations): only then does the host forward for the sandbox.
    pub fn forwards(&self) -> bool {
        (self.policy.dns.allow && !self.dns.is_empty()) || !self.policy.destinations.is_empty() || self.audit
    }

    /// Whether the sandbox's DNS goes to our resolver on the host IP: the
    /// policy names hosts, or audit mode records the names.
    pub fn uses_resolver(&self) -> bool {
        self.policy.names_hosts() || self.audit
    }
}

/// `--mode`: `enforce` (the default) or `audit`; true for audit.
pub(crate) fn parse_mode(mode: Option<&str>) -> Result<bool> {
    match mode.unwrap_or("enforce") {
        "enforce" => Ok(false),
        "audit" => Ok(true),
        other => Err(Error::input(
            format!("--mode {other}"),
            "unknown mode",
            "use --mode enforce (the policy only) or --mode audit (the policy plus public web, every use recorded)",
        )),
    }
}

fn fixed() -> Addressing {
    Addressing::Fixed
}

/// `--subnet`, `--host-ip`, `--sandbox-ip` and `--subnet-pool` -> how the
/// addresses are chosen, and the addresses (for `auto`, the pool's first
/// /30 until the lease says which).
fn addressing(input: &SetupInput) -> Result<(Addressing, Ipv4Addr, Ipv4Addr, u8)> {
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "auto".into());
    let pool_text = input
        .subnet_pool
        .clone()
        .unwrap_or_else(|| crate::host::DEFAULT_POOL.into());
    let pool: Ipv4Net = pool_text.trim().parse().map_err(|_| {
        Error::input(
            format!("--subnet-pool {pool_text:?}"),
            "is not an IPv4 CIDR",
            format!("e.g. --subnet-pool {}", crate::host::DEFAULT_POOL),
        )
    })?;
    let (host, sandbox) = (text(&input.host_ip), text(&input.sandbox_ip));
    let auto_ips = host == "auto" && sandbox == "auto";
    let auto = || -> Result<(Addressing, Ipv4Addr, Ipv4Addr, u8)> {
        let first = pool.subnets(30).ok().and_then(|mut s| s.next()).ok_or_else(|| {
            Error::input(
                format!("--subnet-pool {pool}"),
                "is narrower than one /30",
                "give a pool of /30 or wider, e.g. 10.200.0.0/16",
            )
        })?;
        let (h, s) = crate::host::addresses(first);
        Ok((Addressing::Auto { pool: pool.trunc() }, h, s, 30))
    };
    match input.subnet.as_deref().map(str::trim) {
        Some(cidr) if !auto_ips => Err(Error::input(
            format!("--subnet {cidr}"),
            "and --host-ip/--sandbox-ip both choose the addresses",
            "give either --subnet, or --host-ip with --sandbox-ip",
        )),
        Some("auto") => auto(),
        Some(cidr) => {
            let net: Ipv4Net = cidr.parse().map_err(|_| {
                Error::input(
                    format!("--subnet {cidr:?}"),
                    "is neither `auto` nor an IPv4 CIDR",
                    "e.g. --subnet 10.231.0.0/30, or --subnet auto",
                )
            })?;
            if !(WIDEST_PREFIX..=30).contains(&net.prefix_len()) {
                return Err(Error::input(
                    format!("--subnet {cidr}"),
                    format!("must be a /{WIDEST_PREFIX} to /30"),
                    "e.g. --subnet 10.231.0.0/30",
                ));
            }
            let (h, s) = crate::host::addresses(net.trunc());
            Ok((Addressing::Fixed, h, s, net.prefix_len()))
        }
        None if auto_ips => auto(),
        None if host == "auto" || sandbox == "auto" => {
            // The one given is checked first: its own mistake is the news.
            if host != "auto" {
                parse_ip("--host-ip", &host)?;
            } else {
                parse_ip("--sandbox-ip", &sandbox)?;
            }
            Err(Error::input(
                format!("--host-ip {host} --sandbox-ip {sandbox}"),
                "one address given, the other left to choose",
                "give both --host-ip and --sandbox-ip, or neither (a free /30 is leased), or --subnet CIDR",
            ))
        }
        None => {
            let host_ip = parse_ip("--host-ip", &host)?;
            let sandbox_ip = parse_ip("--sandbox-ip", &sandbox)?;
            let prefix = shared_prefix(host_ip, sandbox_ip)?;
            Ok((Addressing::Fixed, host_ip, sandbox_ip, prefix))
        }
    }
}

pub(crate) fn check_name(name: &str) -> Result<String> {
    let fix = "use 1-14 characters: lowercase letters, digits, '-' or '_', starting with a letter (e.g. --name ci3)";
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::input(
            format!("--name {name:?}"),
            format!(
                "{} characters: the host interface `{name}0` must fit the kernel's 15-character limit",
                name.len()
            ),
            fix,
        ));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        return Err(Error::input(
            format!("--name {name:?}"),
            "not a valid user, interface and table name",
            fix,
        ));
    }
    Ok(name.to_string())
}

pub(crate) fn check_root(root: &Path) -> Result<Root> {
    if !root.is_absolute() {
        return Err(Error::input(
            format!("--root {}", root.display()),
            "not an absolute path",
            "give an absolute directory, e.g. --root /tmp/tree",
        ));
    }
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(Root(root.to_path_buf())),
        _ => Err(Error::input(
            format!("--root {}", root.display()),
            "not an existing directory",
            "create it first, or leave --root out to work on /",
        )),
    }
}

fn check_home(home: &Path) -> Result<PathBuf> {
    let bad = !home.is_absolute()
        || home == Path::new("/")
        || home.components().any(|c| matches!(c, std::path::Component::ParentDir));
    if bad {
        return Err(Error::input(
            format!("--sandbox-home {}", home.display()),
            "must be an absolute path below / without `..`",
            "e.g. --sandbox-home /home/sandbox",
        ));
    }
    Ok(home.to_path_buf())
}

/// Directories no sandbox home may be, contain, or (for the first few)
/// lie inside: the agent owns its home, so making one of these its home
/// would hand it the system.
const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/snap",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/local",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/lib/sandbox",
    "/var/log",
    "/var/mail",
    "/var/spool",
    "/var/tmp",
];

/// Trees a home may not lie inside at all.
const SYSTEM_TREES: &[&str] = &[
    "/boot",
    "/dev",
    "/etc",
    "/proc",
    "/run",
    "/sys",
    "/usr",
    "/var/lib/sandbox",
];

/// Why `home` (as seen on the host, not under `--root`) cannot be a
/// sandbox home, if it cannot: a system directory, one that holds one, or
/// a place inside a system tree. Shared with the `user` step's revert,
/// which refuses such a home from an altered record.
pub fn system_dir(home: &Path) -> Option<String> {
    let first = home
        .components()
        .nth(1)
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    if first.as_deref().is_some_and(|f| f.starts_with("lib")) && home.components().count() == 2 {
        return Some(format!("{} is a system directory", home.display()));
    }
    for d in SYSTEM_DIRS.iter().map(Path::new) {
        if home == d {
            return Some(format!("{} is a system directory", home.display()));
        }
        if d.starts_with(home) {
            return Some(format!("{} holds the system directory {}", home.display(), d.display()));
        }
    }
    SYSTEM_TREES
        .iter()
        .map(Path::new)
        .find(|t| home.starts_with(t))
        .map(|t| format!("{} lies inside the system tree {}", home.display(), t.display()))
}

/// Flags that would hand the agent privileges: the root account as the
/// sandbox user, a system directory as its home, or the sidecar's own
/// account. (The accounts database is checked in preflight.)
fn refuse_privilege(name: &str, home: &Path, sidecar_user: Option<&str>) -> Result<()> {
    if name == "root" {
        return Err(Error::input(
            "--name root",
            "the sandbox user would be root, and the agent runs as the sandbox user",
            "pick a name of its own, e.g. --name sandbox",
        ));
    }
    if let Some(why) = system_dir(home) {
        return Err(Error::input(
            format!("--sandbox-home {}", home.display()),
            format!("{why}; the agent owns its home and everything in it"),
            format!("give a directory of its own, e.g. --sandbox-home /home/{name}"),
        ));
    }
    if sidecar_user == Some(name) {
        return Err(Error::input(
            format!("--sidecar-user {name} (or SUDO_USER)"),
            "is the sandbox user: the agent would run its own guardrail",
            "run the sidecar as the admin account (--sidecar-user admin), or as root for a dynamic user",
        ));
    }
    Ok(())
}

/// A program path a unit file can carry as is: absolute, no `..`, and
/// none of the characters systemd would expand or split on.
fn check_program(flag: &str, p: &Path) -> Result<PathBuf> {
    let s = p.to_string_lossy();
    let plain = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | '@'));
    let dotdot = p.components().any(|c| matches!(c, std::path::Component::ParentDir));
    if !p.is_absolute() || dotdot || !plain || s.ends_with('/') {
        return Err(Error::input(
            format!("{flag} {s:?}"),
            "must be an absolute path without `..`, spaces or shell and unit-file specials",
            format!("give the installed program, e.g. {flag} /usr/local/bin/program"),
        ));
    }
    Ok(p.to_path_buf())
}

/// `--sidecar-user` (or `SUDO_USER`): root means nobody in particular (the
/// sidecar then gets a dynamic user, never root).
fn check_sidecar_user(user: Option<&str>) -> Result<Option<String>> {
    let Some(u) = user.map(str::trim).filter(|u| !u.is_empty() && *u != "root") else {
        return Ok(None);
    };
    let ok = u.len() <= 64
        && !u.starts_with('-')
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !ok {
        return Err(Error::input(
            format!("--sidecar-user {u:?} (or SUDO_USER)"),
            "not a user name a unit file can carry",
            "pass the admin account the sidecar should run as, e.g. --sidecar-user admin",
        ));
    }
    Ok(Some(u.to_string()))
}

fn parse_ip(flag: &str, s: &str) -> Result<Ipv4Addr> {
    let ip: IpAddr = s.trim().parse().map_err(|_| {
        Error::input(
            format!("{flag} {s:?}"),
            "not an IPv4 address",
            format!("e.g. {flag} 10.200.0.1"),
        )
    })?;
    let IpAddr::V4(ip) = ip else {
        return Err(Error::input(
            format!("{flag} {s}"),
            "IPv6 is closed in the sandbox",
            "give an IPv4 address",
        ));
    };
    let why = if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_multicast() || ip.is_broadcast() || ip.octets()[0] >= 240 {
        Some("a multicast or reserved address")
    } else if ip.is_link_local() {
        Some("a link-local address (cloud metadata lives there)")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::input(
            format!("{flag} {ip}"),
            format!("{why} cannot be used on the veth pair"),
            "pick two addresses in a free private range, e.g. 10.200.0.1 and 10.200.0.2",
        )),
        None => Ok(ip),
    }
}

/// The narrowest subnet (/30 at most, /24 at least) in which both addresses
/// are usable host addresses.
pub(crate) fn shared_prefix(host: Ipv4Addr, sandbox: Ipv4Addr) -> Result<u8> {
    if host == sandbox {
        return Err(Error::input(
            format!("--host-ip {host} --sandbox-ip {sandbox}"),
            "the two ends of the veth pair need different addresses",
            "e.g. --host-ip 10.200.0.1 --sandbox-ip 10.200.0.2",
        ));
    }
    for prefix in (WIDEST_PREFIX..=30).rev() {
        let Ok(net) = Ipv4Net::new(host, prefix) else { continue };
        let usable = |ip: Ipv4Addr| net.contains(&ip) && ip != net.network() && ip != net.broadcast();
        if usable(host) && usable(sandbox) {
            return Ok(prefix);
        }
    }
    Err(Error::input(
        format!("--host-ip {host} --sandbox-ip {sandbox}"),
        format!("not usable host addresses of one subnet of /{WIDEST_PREFIX} or smaller"),
        "pick two neighbours such as 10.200.0.1 and 10.200.0.2",
    ))
}

pub(crate) fn parse_port(flag: &str, s: &str) -> Result<u16> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Error::input(
            format!("{flag} {s:?}"),
            "not a port number",
            "use 1-65535",
        )),
    }
}

pub(crate) fn parse_dns(s: &str, root: &Root) -> Result<(Vec<Ipv4Addr>, bool)> {
    if s.trim() == "host" {
        return host_resolvers(root).map(|v| (v, true));
    }
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        let fix = "give IPv4 resolvers separated by commas (e.g. --dns 9.9.9.9,1.1.1.1), or --dns host";
        let ip: IpAddr = item
            .parse()
            .map_err(|_| Error::input(format!("--dns {s:?}"), format!("{item:?} is not an IP address"), fix))?;
        let IpAddr::V4(ip) = ip else {
            return Err(Error::input(
                format!("--dns {s}"),
                format!("{item} is IPv6, and IPv6 is closed in the sandbox"),
                fix,
            ));
        };
        if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return Err(Error::input(
                format!("--dns {s}"),
                format!("{ip} cannot be reached from the sandbox's namespace"),
                fix,
            ));
        }
        if out.contains(&ip) {
            return Err(Error::input(format!("--dns {s}"), format!("{ip} is listed twice"), fix));
        }
        out.push(ip);
    }
    Ok((out, false))
}

/// The host's upstream resolvers. A loopback stub (systemd-resolved's
/// 127.0.0.53, dnsmasq on 127.0.0.1) is unreachable from the sandbox, so
/// look behind it at resolved's upstream list.
fn host_resolvers(root: &Root) -> Result<Vec<Ipv4Addr>> {
    let candidates = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"];
    for file in candidates {
        let Ok(text) = std::fs::read_to_string(root.path(file)) else {
            continue;
        };
        let found: Vec<Ipv4Addr> = nameservers(&text)
            .into_iter()
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Err(Error::input(
        "--dns host",
        format!("no non-loopback IPv4 nameserver in {}", candidates.join(" or ")),
        "list the resolvers explicitly, e.g. --dns 10.0.0.53",
    ))
}

fn nameservers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        if let Some(Ok(ip)) = words.next().map(str::parse::<Ipv4Addr>) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> SetupArgs {
        crate::testutil::args(extra)
    }

    fn err(extra: &[&str]) -> String {
        let e = Spec::from_args(&args(extra)).expect_err("should be refused");
        assert_eq!(e.exit_code(), 2, "input errors exit 2: {e}");
        e.to_string()
    }

    #[test]
    fn defaults_make_a_valid_spec() {
        let s = Spec::from_args(&args(&[])).expect("defaults");
        assert_eq!(s.net.netns, "sandbox0");
        assert_eq!(s.net.host_if, "sandbox0");
        assert_eq!(s.net.table, "sandbox_sandbox");
        assert_eq!(s.net.prefix, 30);
        assert_eq!(s.net.subnet().to_string(), "10.200.0.0/30");
        assert_eq!(s.dns, vec![Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(1, 1, 1, 1)]);
        assert_eq!(s.policy_name, "permissive");
        assert_eq!(s.openclaw_port, 18789);
        assert!(s.auto_pair && s.host_networking && s.guardrail && s.systemd);
        assert!(s.forwards());
    }

    #[test]
    fn names_derive_from_name() {
        let s = Spec::from_args(&args(&["--name", "ci3"])).expect("ci3");
        assert_eq!((s.net.netns.as_str(), s.net.table.as_str()), ("ci30", "sandbox_ci3"));
        assert_eq!(s.root.state_dir("ci3"), PathBuf::from("/var/lib/sandbox/ci3"));
    }

    #[test]
    fn strict_does_not_forward() {
        let s = Spec::from_args(&args(&["--policy", "strict"])).expect("strict");
        assert!(!s.forwards());
    }

    #[test]
    fn bad_inputs_are_refused_with_a_fix() {
        let cases: &[(&[&str], &str)] = &[
            (&["--sandbox-ip", "10.200.0.300"], "not an IPv4 address"),
            (&["--host-ip", "fe80::1"], "IPv6"),
            (
                &["--host-ip", "10.200.0.2", "--sandbox-ip", "10.200.0.2"],
                "different addresses",
            ),
            (&["--host-ip", "10.201.0.1", "--sandbox-ip", "10.200.0.2"], "one subnet"),
            (&["--host-ip", "10.200.0.0", "--sandbox-ip", "10.200.0.2"], "one subnet"),
            (&["--host-ip", "10.200.0.1"], "one address given"),
            (&["--subnet", "10.200.0.0/30", "--host-ip", "10.200.0.1"], "both choose"),
            (&["--subnet", "10.200.0.0/16"], "/24 to /30"),
            (&["--subnet", "ten"], "neither `auto` nor"),
            (&["--subnet-pool", "10.1.0.0/31"], "narrower than one /30"),
            (&["--subnet-pool", "x"], "not an IPv4 CIDR"),
            (&["--host-ip", "127.0.0.1", "--sandbox-ip", "127.0.0.2"], "loopback"),
            (
                &["--host-ip", "169.254.0.1", "--sandbox-ip", "169.254.0.2"],
                "link-local",
            ),
            (&["--host-ip", "224.0.0.1"], "multicast"),
            (&["--openclaw-port", "0"], "not a port"),
            (&["--openclaw-port", "65536"], "not a port"),
            (&["--openclaw-port", "http"], "not a port"),
            (&["--dns", "8.8.8.8,,1.1.1.1"], "not an IP"),
            (&["--dns", "dns.google"], "not an IP"),
            (&["--dns", "2001:4860:4860::8888"], "IPv6"),
            (&["--dns", "127.0.0.53"], "cannot be reached"),
            (&["--dns", "1.1.1.1,1.1.1.1"], "twice"),
            (&["--name", "averyveryverylongname"], "15-character"),
            (&["--name", "Bad.Name"], "not a valid"),
            (&["--name", ""], "15-character"),
            (&["--policy", "paranoid"], "unknown preset"),
            (&["--policy", "/nonexistent/p.toml"], "cannot read"),
            (&["--sandbox-home", "relative/home"], "absolute"),
            (&["--sandbox-home", "/"], "absolute path below"),
            (&["--root", "/nonexistent-root"], "not an existing directory"),
            (&["--root", "relative"], "absolute"),
            (&["--agent-bin", "openclaw"], "absolute"),
            (&["--agent-bin", "/opt/open claw/bin/openclaw"], "absolute"),
            (&["--sidecar-bin", "/usr/local/bin/../gw"], "absolute"),
            (&["--sidecar-bin", "/usr/local/bin/gw%i"], "absolute"),
            (&["--sidecar-user", "bad user"], "not a user name"),
            (&["--sidecar-user=-x"], "not a user name"),
            (&["--name", "root", "--sandbox-home", "/root"], "would be root"),
            (&["--sandbox-home", "/root"], "system directory"),
            (&["--sandbox-home", "/etc"], "system directory"),
            (&["--sandbox-home", "/etc/sb"], "inside the system tree /etc"),
            (&["--sandbox-home", "/tmp"], "system directory"),
            (&["--sandbox-home", "/var/tmp/"], "system directory"),
            (&["--sandbox-home", "/home"], "system directory"),
            (&["--sandbox-home", "/usr/local/sb"], "inside the system tree /usr"),
            (&["--sandbox-home", "/lib64"], "system directory"),
            (&["--sandbox-home", "/libfoo"], "system directory"),
            (&["--sandbox-home", "/var/lib/sandbox/x"], "inside the system tree"),
            (&["--sandbox-home", "/proc/self"], "inside the system tree /proc"),
            (&["--name", "sb", "--sidecar-user", "sb"], "is the sandbox user"),
        ];
        for (flags, needle) in cases {
            let msg = err(flags);
            assert!(msg.contains(needle), "{flags:?}: expected {needle:?} in {msg}");
            assert!(msg.contains("fix:"), "{flags:?}: no fix in {msg}");
        }
    }

    #[test]
    fn ordinary_homes_are_accepted() {
        for home in [
            "/home/sandbox",
            "/srv/sandbox",
            "/var/lib/sandbox-home",
            "/opt/agents/sb",
            "/data/sb",
        ] {
            assert_eq!(system_dir(Path::new(home)), None, "{home}");
            Spec::from_args(&args(&["--sandbox-home", home])).unwrap_or_else(|e| panic!("{home}: {e}"));
        }
    }

    #[test]
    fn dns_host_skips_the_loopback_stub() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root(dir.path().to_path_buf());
        std::fs::create_dir_all(root.path("/etc")).expect("etc");
        std::fs::create_dir_all(root.path("/run/systemd/resolve")).expect("run");
        std::fs::write(root.path("/etc/resolv.conf"), "nameserver 127.0.0.53\noptions edns0\n").expect("w");
        std::fs::write(
            root.path("/run/systemd/resolve/resolv.conf"),
            "# upstream\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver 192.0.2.54\n",
        )
        .expect("w");
        let got = host_resolvers(&root).expect("found");
        assert_eq!(got, vec![Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(192, 0, 2, 54)]);

        std::fs::remove_file(root.path("/run/systemd/resolve/resolv.conf")).expect("rm");
        let msg = host_resolvers(&root).expect_err("only a stub").to_string();
        assert!(msg.contains("--dns"), "{msg}");
    }
}
