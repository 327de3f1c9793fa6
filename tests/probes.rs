//! The escape suite: `sandbox-probe` runs inside a provisioned sandbox's
//! namespace, as the sandbox user (setpriv: its uid and gid, no groups, no
//! capabilities, no new privileges), and tries every way out. Only the
//! sidecar, listed DNS (not under strict) and, under permissive, public web
//! get through; everything else must fail within a second.
//!
//! Then the operator's view: every refusal shows in `firewall::denials()`
//! (destination, protocol, port, how often) from the netns table, and what
//! slips past a flushed netns table shows from the host table.
//!
//! The fake host is not the initial network namespace, so the kernel drops
//! the `log` lines of both tables here (only `nf_log_all_netns` in the real
//! host's namespace would let them through, and the tests never touch the
//! real host). What is checked instead: the log statements are installed
//! with the right prefix, and the `nflog` step leaves a namespace without
//! the key alone.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use clap::Parser;
use common::*;
use sandbox::firewall::{self, Denial, Where};

const PROBE: &str = env!("CARGO_BIN_EXE_sandbox-probe");
const GATEWAY_PORT: u16 = 18970;
const GUARDRAIL_PORT: u16 = 4000;
const OPENCLAW_PORT: u16 = 18789;
/// A host service on 0.0.0.0 (sshd, a database...).
const WILDCARD_PORT: u16 = 2222;
/// A host service on 127.0.0.1 only.
const LOOPBACK_PORT: u16 = 5432;
/// A host service on the host's other address (the uplink) only.
const UPLINK_PORT: u16 = 8443;
/// A UDP host service on 0.0.0.0.
const UDP_PORT: u16 = 5353;
/// A UDP service in the fake internet.
const INTERNET_UDP_PORT: u16 = 9999;
const ULA_HOST: &str = "fd00:5a:1::1";
const ULA_SANDBOX: &str = "fd00:5a:1::2";

/// The world every preset is probed in: host services everywhere, the
/// sidecar on the host IP, IPv6 on the veth (link-local and a ULA).
fn world(policy: &str) -> Option<FakeHost> {
    let host = FakeHost::new()?;
    host.listen_tcp(Ns::Host, (Ipv4Addr::UNSPECIFIED, WILDCARD_PORT).into());
    host.listen_udp(Ns::Host, (Ipv4Addr::UNSPECIFIED, UDP_PORT).into());
    host.listen_tcp(Ns::Host, (Ipv4Addr::LOCALHOST, LOOPBACK_PORT).into());
    host.listen_tcp(Ns::Host, (UPLINK_IP, UPLINK_PORT).into());
    host.listen_udp(Ns::Internet, (WEB, INTERNET_UDP_PORT).into());
    host.setup_ok(&["--policy", policy, "--dns", DNS_A]);
    for port in [GATEWAY_PORT, GUARDRAIL_PORT] {
        host.listen_tcp(Ns::Host, (HOST_IP, port).into());
    }

    host.ip(Ns::Host, &["addr", "add", &format!("{ULA_HOST}/64"), "dev", HOST_IF]);
    host.ip(
        Ns::Sandbox,
        &["addr", "add", &format!("{ULA_SANDBOX}/64"), "dev", PEER_IF],
    );
    host.wait_for_dad(Ns::Sandbox, PEER_IF);
    host.wait_for_dad(Ns::Host, HOST_IF);
    let ula: Ipv6Addr = ULA_HOST.parse().expect("ula");
    host.listen_tcp(Ns::Host, SocketAddr::V6(SocketAddrV6::new(ula, GATEWAY_PORT, 0, 0)));
    let ll = host.link_local(Ns::Host, HOST_IF);
    let index = host.ifindex(Ns::Host, HOST_IF);
    host.listen_tcp(Ns::Host, SocketAddr::V6(SocketAddrV6::new(ll, GATEWAY_PORT, 0, index)));

    // The services are up: the host reaches each of them itself.
    for to in [
        SocketAddr::from((HOST_IP, GATEWAY_PORT)),
        (HOST_IP, WILDCARD_PORT).into(),
        (Ipv4Addr::LOCALHOST, LOOPBACK_PORT).into(),
        (UPLINK_IP, UPLINK_PORT).into(),
        SocketAddr::V6(SocketAddrV6::new(ula, GATEWAY_PORT, 0, 0)),
    ] {
        host.tcp(Ns::Host, to).assert_connected();
    }
    host.udp(Ns::Host, (HOST_IP, UDP_PORT)).assert_connected();
    host.udp(Ns::Host, (WEB, INTERNET_UDP_PORT)).assert_connected();
    Some(host)
}

/// The sandbox user's uid and gid, from the root's passwd.
fn sandbox_ids(host: &FakeHost) -> (String, String) {
    let passwd = std::fs::read_to_string(host.root().join("etc/passwd")).expect("read passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("sandbox:"))
        .expect("the sandbox user exists");
    let f: Vec<&str> = line.split(':').collect();
    (f[2].to_string(), f[3].to_string())
}

struct ProbeRun {
    code: i32,
    stdout: String,
    stderr: String,
}

impl ProbeRun {
    /// The line of the attempt called `name` (its second column onwards).
    #[track_caller]
    fn line(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(name))
            .unwrap_or_else(|| panic!("no attempt {name}:\n{}", self.stdout))
    }

    #[track_caller]
    fn assert_line(&self, name: &str, verdict: &str, expect: &str, outcome: &str) {
        let l = self.line(name);
        let w: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(
            (w[0], w[1], w[3]),
            (verdict, expect, outcome),
            "{name}: {l}\n{}",
            self.stdout
        );
    }
}

/// `sandbox-probe` inside the sandbox's netns, as the sandbox user.
fn probe(host: &FakeHost, policy: &str, extra: &[String]) -> ProbeRun {
    let (uid, gid) = sandbox_ids(host);
    let ll = host.link_local(Ns::Host, HOST_IF);
    let mut argv: Vec<String> = vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
        "--inh-caps=-all".into(),
        "--bounding-set=-all".into(),
        "--no-new-privs".into(),
        "--".into(),
        PROBE.into(),
        "--host-ip".into(),
        HOST_IP.to_string(),
        "--sidecar-port".into(),
        GATEWAY_PORT.to_string(),
        "--sidecar-port".into(),
        GUARDRAIL_PORT.to_string(),
        "--policy".into(),
        probe_kind(policy).into(),
        "--resolver".into(),
        DNS_A.into(),
        "--other-resolver".into(),
        DNS_B.into(),
        "--host-port".into(),
        WILDCARD_PORT.to_string(),
        "--host-port".into(),
        LOOPBACK_PORT.to_string(),
        "--host-port".into(),
        UPLINK_PORT.to_string(),
        "--host-addr".into(),
        UPLINK_IP.to_string(),
        "--deny".into(),
        format!("udp:{HOST_IP}:{UDP_PORT}"),
        "--deny".into(),
        format!("tcp:{WEB}:8080"),
        "--deny".into(),
        format!("udp:{WEB}:{INTERNET_UDP_PORT}"),
        "--deny".into(),
        format!("tcp:{LAN_BOX}:80"),
        "--deny".into(),
        format!("tcp:{GATEWAY_IP}:80"),
        "--ipv6".into(),
        format!("{ll}%{PEER_IF}"),
        "--ipv6".into(),
        ULA_HOST.into(),
        "--unix-vm-only".into(),
    ];
    argv.extend(extra.iter().cloned());
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = host.cmd(Ns::Sandbox, &refs, None);
    let run = ProbeRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("--- sandbox-probe ({policy})\n{}{}", run.stdout, run.stderr);
    run
}

/// What the probe expects, by the behaviour it knows: the example files
/// allow what the `default` and `permissive` presets allowed before they
/// became DefenseClaw's name lists.
fn probe_kind(policy: &str) -> &str {
    match policy {
        DNS_ONLY => "default",
        WEB_POLICY => "permissive",
        other => other,
    }
}

fn web(policy: &str) -> Vec<String> {
    let verb = if policy == WEB_POLICY { "--allow" } else { "--deny" };
    [80, 443]
        .iter()
        .flat_map(|p| [verb.to_string(), format!("tcp:{WEB}:{p}")])
        .collect()
}

/// The spec `setup` was given, for the `denials()` API.
fn spec(host: &FakeHost, policy: &str) -> sandbox::spec::Spec {
    let cli = sandbox::cli::Cli::try_parse_from([
        "sandbox",
        "setup",
        "--root",
        host.root_str(),
        "--policy",
        policy,
        "--dns",
        DNS_A,
        "--no-systemd",
    ])
    .expect("parse");
    #[allow(unreachable_patterns)] // while `setup` is the only command
    let args = match cli.command {
        sandbox::cli::Command::Setup(args) => args,
        _ => panic!("setup args"),
    };
    sandbox::spec::Spec::from_args(&args).expect("spec")
}

fn denials(host: &FakeHost, policy: &str) -> Vec<Denial> {
    let spec = spec(host, policy);
    host.in_ns(Ns::Host, move || firewall::denials(&spec).expect("denials()"))
}

#[track_caller]
fn assert_denied(list: &[Denial], dst: impl Into<IpAddr>, proto: &str, port: u16, layer: Where) {
    let dst = dst.into();
    let d = list
        .iter()
        .find(|d| d.dst == dst && d.proto == proto && d.port == port && d.layer == layer)
        .unwrap_or_else(|| panic!("no denial {dst} {proto} {port} at {layer:?} in {list:#?}"));
    assert!(d.count >= 1, "{d:?}");
}

fn escape_suite(policy: &str) {
    let Some(host) = world(policy) else { return };
    let run = probe(&host, policy, &web(policy));
    assert_eq!(run.code, 0, "the probe failed:\n{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);

    // The allowed paths, spelled out (the exit code covers the rest).
    let gw = format!("tcp:{HOST_IP}:{GATEWAY_PORT}");
    run.assert_line(&gw, "PASS", "allow", "allowed");
    run.assert_line(&format!("tcp:{HOST_IP}:{GUARDRAIL_PORT}"), "PASS", "allow", "allowed");
    let dns = if policy == "strict" {
        ("deny", "denied")
    } else {
        ("allow", "allowed")
    };
    for name in [format!("udp:{DNS_A}:53"), format!("tcp:{DNS_A}:53")] {
        run.assert_line(&name, "PASS", dns.0, dns.1);
    }
    let web = if policy == WEB_POLICY {
        ("allow", "allowed")
    } else {
        ("deny", "denied")
    };
    run.assert_line(&format!("tcp:{WEB}:443"), "PASS", web.0, web.1);
    // And a sample of the refusals, one per kind of door.
    for name in [
        format!("tcp:{HOST_IP}:{WILDCARD_PORT}"),
        format!("tcp:127.0.0.1:{LOOPBACK_PORT}"),
        format!("tcp:{HOST_IP}:{LOOPBACK_PORT}"),
        format!("tcp:{UPLINK_IP}:{UPLINK_PORT}"),
        format!("tcp:{UPLINK_IP}:{GATEWAY_PORT}"),
        format!("udp:{HOST_IP}:{UDP_PORT}"),
        format!("udp:{DNS_B}:53"),
        format!("tcp:{DNS_B}:53"),
        format!("tcp:{WEB}:8080"),
        format!("udp:{WEB}:{INTERNET_UDP_PORT}"),
        format!("tcp:{LAN_BOX}:80"),
        format!("tcp:{METADATA}:80"),
        format!("tcp:[{ULA_HOST}]:{GATEWAY_PORT}"),
        "raw:inet-icmp".into(),
        "packet:all".into(),
        "netlink:add-address".into(),
        "netlink:add-route".into(),
        "netlink:add-rule".into(),
        "nfnetlink:add-table".into(),
        "nft:add-table".into(),
    ] {
        run.assert_line(&name, "PASS", "deny", "denied");
    }
    let ll = run
        .stdout
        .lines()
        .find(|l| l.contains("tcp:[fe80::"))
        .unwrap_or_else(|| panic!("no link-local attempt:\n{}", run.stdout));
    assert!(ll.starts_with("PASS  deny"), "{ll}");
    for l in run.stdout.lines().filter(|l| l.contains("unix:")) {
        assert!(l.starts_with("SKIP"), "unix sockets are the agent unit's job: {l}");
    }
    // Nothing the probe tried changed the sandbox.
    assert!(!host.ruleset(Ns::Sandbox).contains("sandbox_probe"));
    assert!(!host.ip(Ns::Sandbox, &["addr"]).contains("192.0.2.254"));

    // Inbound: the host reaches the OpenClaw port, the internet does not.
    host.listen_tcp(Ns::Sandbox, (SANDBOX_IP, OPENCLAW_PORT).into());
    host.listen_tcp(Ns::Sandbox, (SANDBOX_IP, WILDCARD_PORT).into());
    host.tcp(Ns::Host, (SANDBOX_IP, OPENCLAW_PORT))
        .assert_connected()
        .assert_seen_from(HOST_IP);
    host.tcp(Ns::Host, (SANDBOX_IP, WILDCARD_PORT))
        .assert_refused_promptly();
    host.tcp(Ns::Internet, (SANDBOX_IP, OPENCLAW_PORT)).assert_blocked();

    // The operator sees which destination and port was refused, from the
    // netns table; the host table saw nothing get past it.
    let d = denials(&host, policy);
    eprintln!("denials: {d:#?}");
    assert_denied(&d, HOST_IP, "tcp", WILDCARD_PORT, Where::Netns);
    assert_denied(&d, UPLINK_IP, "tcp", UPLINK_PORT, Where::Netns);
    assert_denied(&d, HOST_IP, "udp", UDP_PORT, Where::Netns);
    assert_denied(&d, RESOLVER_B, "udp", 53, Where::Netns);
    assert_denied(&d, WEB, "tcp", 8080, Where::Netns);
    assert_denied(&d, WEB, "udp", INTERNET_UDP_PORT, Where::Netns);
    assert_denied(&d, METADATA, "tcp", 80, Where::Netns);
    let ula: Ipv6Addr = ULA_HOST.parse().expect("ula");
    assert_denied(&d, ula, "tcp", GATEWAY_PORT, Where::Netns);
    assert!(
        !d.iter()
            .any(|x| x.dst == IpAddr::from(HOST_IP) && x.port == GATEWAY_PORT),
        "an allowed path is not a denial: {d:#?}"
    );
    assert!(!d.iter().any(|x| x.layer == Where::Host), "{d:#?}");
    // 127.0.0.1 inside is the sandbox's own loopback: refused by no one.
    assert!(!d.iter().any(|x| x.dst == IpAddr::from(Ipv4Addr::LOCALHOST)), "{d:#?}");
}

#[test]
fn strict_escape_suite() {
    escape_suite("strict");
}

#[test]
fn default_escape_suite() {
    escape_suite(DNS_ONLY);
}

#[test]
fn permissive_escape_suite() {
    escape_suite(WEB_POLICY);
}

/// Counting is per destination: three refused connects to one port count
/// three, and each log line carries the sandbox's name.
#[test]
fn denials_count_how_often_and_the_log_rules_carry_the_prefix() {
    let Some(host) = world("strict") else { return };
    for _ in 0..3 {
        host.tcp(Ns::Sandbox, (WEB, 8080)).assert_refused_promptly();
    }
    let d = denials(&host, "strict");
    let web = d
        .iter()
        .find(|x| x.dst == IpAddr::from(WEB) && x.port == 8080)
        .unwrap_or_else(|| panic!("{d:#?}"));
    assert_eq!((web.count, web.proto.as_str(), web.layer), (3, "tcp", Where::Netns));
    assert!(web.expires_s.is_some_and(|s| s > 3600), "{web:?}");

    let inside = host.nft(Ns::Sandbox, &["list", "table", "inet", TABLE]);
    assert!(
        inside.contains("log prefix \"sandbox sandbox deny: \" level info"),
        "{inside}"
    );
    assert!(inside.contains("limit rate 10/minute burst 20 packets"), "{inside}");
    let outside = host.nft(Ns::Host, &["list", "chain", "inet", HOST_TABLE, "sandbox_input"]);
    assert!(
        outside.contains("log prefix \"sandbox sandbox host deny: \" level info"),
        "{outside}"
    );
    // The fake host is not the initial namespace: no nf_log_all_netns here,
    // and setup left it alone (no plan line, no record).
    let exists = host.in_ns(Ns::Host, || {
        std::path::Path::new("/proc/sys/net/netfilter/nf_log_all_netns").exists()
    });
    assert!(!exists);
    let state = std::fs::read_to_string(host.root().join("var/lib/sandbox/sandbox/state.json")).expect("state");
    assert!(!state.contains("nf_log_all_netns"), "{state}");
}

/// When the sandbox's own table is gone, the host table still refuses,
/// and its counters say so: any host-layer denial is worth a look. (Under
/// `default`, so that forwarding is on and the forward chain sees the web
/// attempt; under `strict` the host does not route it at all.)
#[test]
fn the_host_table_counts_what_gets_past_a_deleted_netns_table() {
    let Some(host) = world(DNS_ONLY) else { return };
    host.nft(Ns::Sandbox, &["delete", "table", "inet", TABLE]);
    host.tcp(Ns::Sandbox, (HOST_IP, WILDCARD_PORT))
        .assert_refused_promptly();
    host.tcp(Ns::Sandbox, (WEB, 443)).assert_refused_promptly();
    host.tcp(Ns::Sandbox, (HOST_IP, GATEWAY_PORT)).assert_connected();
    let d = denials(&host, DNS_ONLY);
    assert_denied(&d, HOST_IP, "tcp", WILDCARD_PORT, Where::Host);
    assert_denied(&d, WEB, "tcp", 443, Where::Host);
    assert!(!d.iter().any(|x| x.port == GATEWAY_PORT), "{d:#?}");
    // A re-run repairs the netns table and clears the host's counts,
    // saying what it cleared (its output, the audit log): from then on
    // they count from that setup, so `status` can pass again.
    let run = host.setup_ok(&["--policy", DNS_ONLY, "--dns", DNS_A]);
    assert!(
        run.stdout.contains("cleared the host table's refusals") && run.stdout.contains("203.0.113.80 tcp/443 x1"),
        "{run}"
    );
    let d = denials(&host, DNS_ONLY);
    assert!(!d.iter().any(|x| x.layer == Where::Host), "{d:#?}");
    host.nft(Ns::Sandbox, &["delete", "table", "inet", TABLE]);
    host.tcp(Ns::Sandbox, (WEB, 443)).assert_refused_promptly();
    assert_denied(&denials(&host, DNS_ONLY), WEB, "tcp", 443, Where::Host);
}

/// The probe refuses to vouch for anything when it runs with privilege.
#[test]
fn the_probe_refuses_to_run_as_root() {
    if !root_or_skip() {
        return;
    }
    let out = std::process::Command::new(PROBE)
        .args([
            "--host-ip",
            "10.200.0.1",
            "--sidecar-port",
            "18970",
            "--policy",
            "strict",
        ])
        .output()
        .expect("run the probe");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("running as root"));
}
