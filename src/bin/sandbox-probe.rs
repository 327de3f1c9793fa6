//! `sandbox-probe`: tries every way out of a sandbox, from the inside, as
//! the sandbox user, and says which attempts got through.
//!
//! One line per attempt on stdout:
//!
//! ```text
//! PASS  deny   tcp:10.200.0.1:22            denied     0.2ms  Connection refused (os error 111)
//! FAIL  allow  tcp:10.200.0.1:18970         timeout  1000.4ms  ...
//! SKIP  deny   unix:/run/nscd/socket        vm-only    0.0ms  ...
//! ```
//!
//! Exit status: 0 when every attempt met its expectation within
//! `--deadline-ms` (1 s), 1 when any did not, 2 on bad arguments or when
//! run as root or with capabilities (the probe proves nothing then).
//!
//! The expectations come from the arguments, so the same binary serves the
//! root integration tests (inside the netns, under setpriv) and the
//! vm-tests (inside the agent unit's own sandbox).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitCode, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Policy {
    Strict,
    Default,
    Permissive,
}

/// `tcp:IP:PORT` or `udp:IP:PORT` (IPv6 as `tcp:[fe80::1%eth0]:22`).
#[derive(Debug, Clone)]
struct Target {
    proto: Proto,
    addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        let (proto, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected tcp:IP:PORT or udp:IP:PORT"))?;
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            p => return Err(format!("{s:?}: protocol {p:?} is not tcp or udp")),
        };
        Ok(Target {
            proto,
            addr: parse_addr(rest)?,
        })
    }
}

/// `IP:PORT`, `[IPV6]:PORT` or `[IPV6%IFNAME]:PORT`.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("{s:?}: expected [IPV6]:PORT"))?;
        let port: u16 = port.parse().map_err(|e| format!("{s:?}: port: {e}"))?;
        let (ip, scope) = match inner.split_once('%') {
            Some((ip, ifname)) => (ip, scope_id(ifname)?),
            None => (inner, 0),
        };
        let ip: Ipv6Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        return Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope)));
    }
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

fn scope_id(ifname: &str) -> Result<u32, String> {
    if let Ok(n) = ifname.parse() {
        return Ok(n);
    }
    nix::net::if_::if_nametoindex(ifname).map_err(|e| format!("interface {ifname}: {e}"))
}

/// The unix sockets through which a process reaches host daemons without
/// any network: the resolver (systemd-resolved, nscd) and the system bus.
const HOST_UNIX_SOCKETS: &[&str] = &[
    "/run/systemd/resolve/io.systemd.Resolve",
    "/run/nscd/socket",
    "/run/dbus/system_bus_socket",
    "/var/run/dbus/system_bus_socket",
];

#[derive(Debug, Parser)]
#[command(
    name = "sandbox-probe",
    about = "Try every way out of a sandbox, as the sandbox user, from the inside"
)]
struct Args {
    /// The host's end of the veth (where the sidecar listens).
    #[arg(long)]
    host_ip: Ipv4Addr,
    /// Sidecar ports on the host IP (allowed).
    #[arg(long = "sidecar-port", required = true)]
    sidecar_ports: Vec<u16>,
    /// The policy the sandbox was set up with.
    #[arg(long, value_enum)]
    policy: Policy,
    /// Resolvers the sandbox was given (`--dns`): DNS to them is allowed
    /// under default and permissive, refused under strict.
    #[arg(long = "resolver")]
    resolvers: Vec<Ipv4Addr>,
    /// Resolvers that were not listed: DNS to them is always refused.
    #[arg(long = "other-resolver")]
    other_resolvers: Vec<Ipv4Addr>,
    /// Other TCP ports with a service on the host (on the host IP, on
    /// 0.0.0.0, or on 127.0.0.1): refused on the host IP, on every
    /// `--host-addr` and on 127.0.0.1 as seen from inside.
    #[arg(long = "host-port")]
    host_ports: Vec<u16>,
    /// The host's other addresses (uplink, ...): refused on every port.
    #[arg(long = "host-addr")]
    host_addrs: Vec<IpAddr>,
    /// More attempts that must be refused (`tcp:IP:PORT`, `udp:IP:PORT`).
    #[arg(long = "deny")]
    deny: Vec<Target>,
    /// More attempts that must get through.
    #[arg(long = "allow")]
    allow: Vec<Target>,
    /// IPv6 addresses to try (e.g. the host end's link-local `fe80::1%eth0`,
    /// a ULA, a global address); TCP on the first sidecar port and UDP 53.
    /// 2001:db8::1 and the all-nodes group ff02::1 are always tried.
    #[arg(long = "ipv6")]
    ipv6: Vec<String>,
    /// The cloud metadata address (TCP 80 and UDP 53 are tried).
    #[arg(long, default_value = "169.254.169.254")]
    metadata: Ipv4Addr,
    /// Host unix sockets that must not be reachable (default: resolved,
    /// nscd and the D-Bus system bus).
    #[arg(long = "unix")]
    unix: Vec<String>,
    /// Report the unix-socket attempts as SKIP: network namespaces do not
    /// hide files, only the agent unit does (the netns test tier).
    #[arg(long)]
    unix_vm_only: bool,
    /// The nft binary to try changing the ruleset with.
    #[arg(long, default_value = "nft")]
    nft: String,
    /// Every attempt must end within this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    deadline_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Got through: connected, answered, created, changed.
    Allowed,
    /// Refused, unreachable, not permitted, absent.
    Denied,
    /// Nothing came back before the deadline.
    Timeout,
    /// An error that proves neither (reported as a failure).
    Error,
    Skipped,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
            Outcome::Skipped => "vm-only",
        }
    }
}

struct Report {
    deadline: Duration,
    failures: usize,
}

impl Report {
    fn line(
        &mut self,
        name: &str,
        expect: Expect,
        attempt: impl FnOnce(Duration) -> (Outcome, String),
        deadline: Duration,
    ) {
        let start = Instant::now();
        let (outcome, detail) = attempt(deadline);
        let elapsed = start.elapsed();
        let want = match expect {
            Expect::Allow => Outcome::Allowed,
            Expect::Deny => Outcome::Denied,
        };
        let verdict = if outcome == Outcome::Skipped {
            "SKIP"
        } else if outcome == want && elapsed < self.deadline {
            "PASS"
        } else {
            self.failures += 1;
            "FAIL"
        };
        let expect = match expect {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
        };
        let ms = elapsed.as_secs_f64() * 1000.0;
        println!(
            "{verdict:<5} {expect:<6} {name:<40} {:<8} {ms:>8.1}ms  {}",
            outcome.word(),
            detail.replace('\n', " ")
        );
    }

    fn run(&mut self, name: &str, expect: Expect, attempt: impl FnOnce(Duration) -> (Outcome, String)) {
        let d = self.deadline;
        self.line(name, expect, attempt, d);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(why) = unprivileged() {
        eprintln!("sandbox-probe: {why}: run it as the sandbox user, without capabilities");
        return ExitCode::from(2);
    }
    let mut r = Report {
        deadline: Duration::from_millis(args.deadline_ms),
        failures: 0,
    };
    let host = IpAddr::V4(args.host_ip);
    let dns_allowed = args.policy != Policy::Strict;

    // The sidecar: the one way out that is always open.
    for &p in &args.sidecar_ports {
        let t = Target {
            proto: Proto::Tcp,
            addr: (host, p).into(),
        };
        r.run(&t.name(), Expect::Allow, |d| t.attempt(d));
    }
    // Every other service of the host, on the host IP and elsewhere.
    let mut denied: Vec<Target> = Vec::new();
    for &p in &args.host_ports {
        denied.push(Target::tcp(host, p));
        denied.push(Target::tcp(Ipv4Addr::LOCALHOST.into(), p));
    }
    for &a in &args.host_addrs {
        for &p in args.sidecar_ports.iter().chain(&args.host_ports) {
            denied.push(Target::tcp(a, p));
        }
        denied.push(Target::udp(a, 53));
    }
    denied.push(Target::udp(host, 53));
    denied.push(Target::tcp(host, 22));
    // DNS.
    let mut allowed: Vec<Target> = Vec::new();
    for &res in &args.resolvers {
        for t in [Target::udp(res.into(), 53), Target::tcp(res.into(), 53)] {
            if dns_allowed {
                allowed.push(t);
            } else {
                denied.push(t);
            }
        }
        // A listed resolver is a resolver, not a general destination.
        denied.push(Target::tcp(res.into(), 80));
        denied.push(Target::udp(res.into(), 123));
    }
    for &res in &args.other_resolvers {
        denied.push(Target::udp(res.into(), 53));
        denied.push(Target::tcp(res.into(), 53));
    }
    // The cloud metadata service.
    denied.push(Target::tcp(args.metadata.into(), 80));
    denied.push(Target::udp(args.metadata.into(), 53));
    // IPv6, whatever the address.
    let mut v6: Vec<SocketAddr> = Vec::new();
    let first = args.sidecar_ports.first().copied().unwrap_or(18970);
    for s in &args.ipv6 {
        match parse_addr(&format!("[{s}]:{first}")) {
            Ok(a) => v6.push(a),
            Err(e) => {
                eprintln!("sandbox-probe: --ipv6 {e}");
                return ExitCode::from(2);
            }
        }
    }
    // Always: a global address, and all nodes on the link (when eth0 exists).
    v6.extend(
        ["[2001:db8::1]", "[ff02::1%eth0]"]
            .iter()
            .filter_map(|s| parse_addr(&format!("{s}:{first}")).ok()),
    );
    for a in v6 {
        denied.push(Target {
            proto: Proto::Tcp,
            addr: a,
        });
        let mut u = a;
        u.set_port(53);
        denied.push(Target {
            proto: Proto::Udp,
            addr: u,
        });
    }
    allowed.extend(args.allow.iter().cloned());
    denied.extend(args.deny.iter().cloned());

    for t in &allowed {
        r.run(&t.name(), Expect::Allow, |d| t.attempt(d));
    }
    for t in &denied {
        r.run(&t.name(), Expect::Deny, |d| t.attempt(d));
    }

    // Below IP: raw and packet sockets need CAP_NET_RAW.
    r.run("raw:inet-icmp", Expect::Deny, |_| {
        make_socket(AddressFamily::Inet, SockType::Raw, SockProtocol::Icmp)
    });
    r.run("raw:inet6-icmpv6", Expect::Deny, |_| {
        make_socket(AddressFamily::Inet6, SockType::Raw, SockProtocol::IcmpV6)
    });
    r.run("raw:inet-raw", Expect::Deny, |_| {
        make_socket(AddressFamily::Inet, SockType::Raw, SockProtocol::Raw)
    });
    r.run("packet:all", Expect::Deny, |_| {
        make_socket(AddressFamily::Packet, SockType::Raw, SockProtocol::EthAll)
    });
    r.run("ping:metadata", Expect::Deny, |d| ping(args.metadata, d));

    // The namespace's own network configuration and firewall.
    r.run("netlink:add-address", Expect::Deny, |d| {
        rtnl(RTM_NEWADDR, &new_addr(), d)
    });
    r.run("netlink:add-route", Expect::Deny, |d| {
        rtnl(RTM_NEWROUTE, &new_route(), d)
    });
    r.run("netlink:add-rule", Expect::Deny, |d| rtnl(RTM_NEWRULE, &new_rule(), d));
    r.run("netlink:link-down", Expect::Deny, |d| {
        rtnl(RTM_NEWLINK, &link_down(), d)
    });
    r.run("nfnetlink:add-table", Expect::Deny, nfnl_new_table);
    r.run("nft:add-table", Expect::Deny, |d| nft_add_table(&args.nft, d));

    // Host daemons over unix sockets.
    let unix: Vec<String> = if args.unix.is_empty() {
        HOST_UNIX_SOCKETS.iter().map(|s| s.to_string()).collect()
    } else {
        args.unix.clone()
    };
    for path in &unix {
        r.run(&format!("unix:{path}"), Expect::Deny, |_| {
            if args.unix_vm_only {
                (
                    Outcome::Skipped,
                    "network namespaces do not hide files; the agent unit does".into(),
                )
            } else {
                unix_connect(path)
            }
        });
    }

    println!("{} attempt(s) failed their expectation", r.failures);
    if r.failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Refuse to run with any privilege: every "denied" would prove nothing.
fn unprivileged() -> Result<(), String> {
    if nix::unistd::geteuid().is_root() || nix::unistd::getuid().is_root() {
        return Err("running as root".into());
    }
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("read /proc/self/status: {e}"))?;
    for key in ["CapEff:", "CapPrm:", "CapAmb:"] {
        let v = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or("");
        if u64::from_str_radix(v, 16) != Ok(0) {
            return Err(format!("capabilities held ({key} {v})"));
        }
    }
    Ok(())
}

impl Target {
    fn tcp(ip: IpAddr, port: u16) -> Target {
        Target {
            proto: Proto::Tcp,
            addr: (ip, port).into(),
        }
    }

    fn udp(ip: IpAddr, port: u16) -> Target {
        Target {
            proto: Proto::Udp,
            addr: (ip, port).into(),
        }
    }

    fn name(&self) -> String {
        let p = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        match self.addr {
            SocketAddr::V6(a) if a.scope_id() != 0 => format!("{p}:[{}%{}]:{}", a.ip(), a.scope_id(), a.port()),
            a => format!("{p}:{a}"),
        }
    }

    fn attempt(&self, deadline: Duration) -> (Outcome, String) {
        match self.proto {
            Proto::Tcp => tcp(self.addr, deadline),
            Proto::Udp => udp_dns(self.addr, deadline),
        }
    }
}

fn classify(e: &std::io::Error) -> Outcome {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::Timeout,
        _ => match e.raw_os_error().map(Errno::from_raw) {
            Some(
                Errno::ECONNREFUSED
                | Errno::EHOSTUNREACH
                | Errno::ENETUNREACH
                | Errno::EACCES
                | Errno::EPERM
                | Errno::EADDRNOTAVAIL
                | Errno::EAFNOSUPPORT
                | Errno::ECONNRESET,
            ) => Outcome::Denied,
            _ => Outcome::Error,
        },
    }
}

/// Non-blocking connect, then poll for the deadline (std does both).
fn tcp(addr: SocketAddr, deadline: Duration) -> (Outcome, String) {
    match TcpStream::connect_timeout(&addr, deadline) {
        Ok(mut s) => {
            // A greeting, if the far end sends one, helps whoever reads the log.
            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
            let mut buf = [0u8; 128];
            let n = s.read(&mut buf).unwrap_or(0);
            let greeting = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            (Outcome::Allowed, format!("connected {greeting}"))
        }
        Err(e) => (classify(&e), e.to_string()),
    }
}

/// A DNS-shaped query (`example.com A`) on a connected UDP socket: a reply
/// is "allowed"; an ICMP error comes back as an error on the socket.
fn udp_dns(addr: SocketAddr, deadline: Duration) -> (Outcome, String) {
    let result = (|| {
        let any: SocketAddr = match addr {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let s = UdpSocket::bind(any)?;
        s.connect(addr)?;
        s.set_read_timeout(Some(deadline))?;
        s.send(&dns_query())?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf)?;
        Ok::<usize, std::io::Error>(n)
    })();
    match result {
        Ok(n) => (Outcome::Allowed, format!("answered ({n} bytes)")),
        Err(e) => (classify(&e), e.to_string()),
    }
}

fn dns_query() -> Vec<u8> {
    let mut q = vec![0x5a, 0x17, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["example", "com"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn make_socket(family: AddressFamily, ty: SockType, proto: SockProtocol) -> (Outcome, String) {
    match socket::socket(family, ty, SockFlag::SOCK_CLOEXEC, proto) {
        Ok(_fd) => (Outcome::Allowed, "socket created".into()),
        Err(e) => (Outcome::Denied, e.desc().to_string()),
    }
}

/// An ICMP echo over an unprivileged ping socket (allowed by the kernel
/// only for groups in net.ipv4.ping_group_range); the firewall must refuse
/// it anyway.
fn ping(to: Ipv4Addr, deadline: Duration) -> (Outcome, String) {
    let fd = match socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    ) {
        Ok(fd) => fd,
        Err(e) => return (Outcome::Denied, format!("no ping socket: {}", e.desc())),
    };
    let s = UdpSocket::from(fd);
    let result = (|| {
        s.connect((to, 0))?;
        s.set_read_timeout(Some(deadline))?;
        s.send(&[8, 0, 0, 0, 0, 1, 0, 1])?;
        let mut buf = [0u8; 64];
        s.recv(&mut buf)
    })();
    match result {
        Ok(_) => (Outcome::Allowed, "echo reply".into()),
        Err(e) => (classify(&e), e.to_string()),
    }
}

// ---- netlink -------------------------------------------------------------

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWRULE: u16 = 32;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
/// A documentation address: harmless even if a change got through.
const TEST_NET: [u8; 4] = [192, 0, 2, 254];

fn attr(kind: u16, data: &[u8]) -> Vec<u8> {
    let len = 4 + data.len();
    let mut v = Vec::with_capacity(len.next_multiple_of(4));
    v.extend_from_slice(&(len as u16).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(data);
    v.resize(len.next_multiple_of(4), 0);
    v
}

fn lo_index() -> u32 {
    nix::net::if_::if_nametoindex("lo").unwrap_or(1)
}

/// ifaddrmsg: 192.0.2.254/32 on lo.
fn new_addr() -> Vec<u8> {
    let mut m = vec![libc_af_inet(), 32, 0, 0];
    m.extend_from_slice(&lo_index().to_ne_bytes());
    m.extend(attr(2, &TEST_NET)); // IFA_LOCAL
    m.extend(attr(1, &TEST_NET)); // IFA_ADDRESS
    m
}

/// rtmsg: 192.0.2.254/32 dev lo in the main table.
fn new_route() -> Vec<u8> {
    let mut m = vec![libc_af_inet(), 32, 0, 0, 254, 3, 253, 1];
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend(attr(1, &TEST_NET)); // RTA_DST
    m.extend(attr(4, &lo_index().to_ne_bytes())); // RTA_OIF
    m
}

/// fib_rule_hdr: from 192.0.2.254 lookup main.
fn new_rule() -> Vec<u8> {
    let mut m = vec![libc_af_inet(), 0, 32, 0, 254, 0, 0, 1];
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend(attr(2, &TEST_NET)); // FRA_SRC
    m
}

/// ifinfomsg: lo down (IFF_UP cleared through the change mask).
fn link_down() -> Vec<u8> {
    let mut m = vec![0u8, 0];
    m.extend_from_slice(&0u16.to_ne_bytes()); // type
    m.extend_from_slice(&(lo_index() as i32).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // flags
    m.extend_from_slice(&1u32.to_ne_bytes()); // change: IFF_UP
    m
}

fn libc_af_inet() -> u8 {
    AddressFamily::Inet as i32 as u8
}

/// One request on a NETLINK_ROUTE socket; "denied" is the kernel's EPERM.
fn rtnl(kind: u16, body: &[u8], deadline: Duration) -> (Outcome, String) {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    netlink_request(SockProtocol::NetlinkRoute, kind, flags, body, deadline)
}

/// NFT_MSG_NEWTABLE on NETLINK_NETFILTER: the nf_tables API without `nft`.
fn nfnl_new_table(deadline: Duration) -> (Outcome, String) {
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_NEWTABLE: u16 = 0;
    const NFPROTO_INET: u8 = 1;
    let mut body = vec![NFPROTO_INET, 0, 0, 0];
    body.extend(attr(1, b"sandbox_probe\0")); // NFTA_TABLE_NAME
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE;
    netlink_request(
        SockProtocol::NetlinkNetFilter,
        kind,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        &body,
        deadline,
    )
}

fn netlink_request(proto: SockProtocol, kind: u16, flags: u16, body: &[u8], deadline: Duration) -> (Outcome, String) {
    let fd: OwnedFd = match socket::socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, proto) {
        Ok(fd) => fd,
        Err(e) => return (Outcome::Denied, format!("no netlink socket: {}", e.desc())),
    };
    let tv = nix::sys::time::TimeVal::new(deadline.as_secs() as i64, i64::from(deadline.subsec_micros()));
    if let Err(e) = socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &tv) {
        return (Outcome::Error, format!("SO_RCVTIMEO: {}", e.desc()));
    }
    let len = 16 + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it
    msg.extend_from_slice(body);
    if let Err(e) = socket::sendto(fd.as_raw_fd(), &msg, &NetlinkAddr::new(0, 0), MsgFlags::empty()) {
        return (Outcome::Denied, format!("send: {}", e.desc()));
    }
    let mut buf = [0u8; 1024];
    let n = match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        Ok(n) => n,
        Err(Errno::EAGAIN) => return (Outcome::Timeout, "no answer from the kernel".into()),
        Err(e) => return (Outcome::Error, format!("recv: {}", e.desc())),
    };
    // nlmsghdr (16) + nlmsgerr.error (i32).
    if n < 20 || u16::from_ne_bytes([buf[4], buf[5]]) != NLMSG_ERROR {
        return (Outcome::Error, format!("unexpected answer ({n} bytes)"));
    }
    let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    match Errno::from_raw(-code) {
        _ if code == 0 => (Outcome::Allowed, "the kernel accepted the change".into()),
        e @ (Errno::EPERM | Errno::EACCES) => (Outcome::Denied, e.desc().to_string()),
        e => (
            Outcome::Error,
            format!("refused, but not for lack of permission: {}", e.desc()),
        ),
    }
}

/// `nft add table inet sandbox_probe` must fail (and never linger).
fn nft_add_table(nft: &str, deadline: Duration) -> (Outcome, String) {
    let child = Command::new(nft)
        .args(["add", "table", "inet", "sandbox_probe"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return (
                Outcome::Denied,
                format!("{nft}: not found (nfnetlink:add-table covers the API)"),
            )
        }
        Err(e) => return (Outcome::Denied, format!("{nft}: {e}")),
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut err);
                }
                let err = err.lines().next().unwrap_or("").to_string();
                return if status.success() {
                    (Outcome::Allowed, "nft changed the ruleset".into())
                } else {
                    (Outcome::Denied, format!("{status}: {err}"))
                };
            }
            Ok(None) if start.elapsed() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return (Outcome::Timeout, format!("{nft} did not finish"));
            }
            Err(e) => return (Outcome::Error, format!("wait for {nft}: {e}")),
        }
    }
}

fn unix_connect(path: &str) -> (Outcome, String) {
    match UnixStream::connect(path) {
        Ok(mut s) => {
            let _ = s.write_all(b"\0");
            (Outcome::Allowed, "connected".into())
        }
        Err(e) => {
            let outcome = match e.raw_os_error().map(Errno::from_raw) {
                Some(
                    Errno::ENOENT
                    | Errno::ECONNREFUSED
                    | Errno::EACCES
                    | Errno::EPERM
                    | Errno::ENOTDIR
                    | Errno::EAFNOSUPPORT,
                ) => Outcome::Denied,
                _ => Outcome::Error,
            };
            (outcome, e.to_string())
        }
    }
}
