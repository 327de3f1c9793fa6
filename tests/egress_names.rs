//! Root integration tests of egress by host name (issue 17): the real
//! binary, its real resolver process (`--no-systemd`) and real nft sets in
//! a fake host, with a fake upstream DNS server in the fake internet.
//! Nothing leaves the namespaces the tests made.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::dns::{ask, ask_tcp, resolve, zone, FakeDns};
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// The fake upstream the sandbox's resolver forwards to (`--dns`).
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 55);
const UPSTREAM_FLAG: &str = "203.0.113.55";
/// Three addresses of one name, answered one per query, in turn.
const ROTATING: [Ipv4Addr; 3] = [
    Ipv4Addr::new(203, 0, 113, 101),
    Ipv4Addr::new(203, 0, 113, 102),
    Ipv4Addr::new(203, 0, 113, 103),
];
const PKG_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 111);
const PKG_AB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 112);
const LOOKALIKE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 113);
const SHORT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 121);
const NEVER_RESOLVED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 131);

fn upstream(host: &FakeHost) -> FakeDns {
    let mut addrs: Vec<Ipv4Addr> = ROTATING.to_vec();
    addrs.extend([PKG_A, PKG_AB, LOOKALIKE, SHORT, NEVER_RESOLVED]);
    for a in addrs {
        host.ip(Ns::Internet, &["addr", "add", &format!("{a}/32"), "dev", "lo"]);
        host.listen_tcp(Ns::Internet, (a, 443).into());
    }
    // Stand-ins for a public resolver's DoT and DoH ports.
    host.listen_tcp(Ns::Internet, (RESOLVER_A, 853).into());
    host.listen_tcp(Ns::Internet, (RESOLVER_A, 443).into());
    FakeDns::start(
        host,
        UPSTREAM,
        vec![
            zone("rotate.test", &ROTATING, 300, true),
            zone("a.pkg.test", &[PKG_A], 300, false),
            zone("a.b.pkg.test", &[PKG_AB], 300, false),
            zone("pkg.test", &[LOOKALIKE], 300, false),
            zone("evilpkg.test", &[LOOKALIKE], 300, false),
            zone("short.test", &[SHORT], 1, false),
            zone("direct.test", &[NEVER_RESOLVED], 300, false),
            zone("meta.test", &[METADATA], 300, false),
            zone("lan.test", &[LAN_BOX], 300, false),
            zone("unlisted.test", &[WEB], 300, false),
        ],
    )
}

const POLICY: &str = r#"description = "egress by name (test)"

[dns]
ttl_floor = 2
ttl_cap = 3600

[[destination]]
to = "rotate.test"
protocol = "tcp"
ports = [443]
why = "rotating addresses"

[[destination]]
to = "*.pkg.test"
protocol = "tcp"
ports = [443]
why = "a wildcard"

[[destination]]
to = "short.test"
protocol = "tcp"
ports = [443]
why = "a TTL of one second"

[[destination]]
to = "direct.test"
protocol = "tcp"
ports = [443]
why = "never resolved in the test"

[[destination]]
to = "meta.test"
protocol = "tcp"
ports = [80]
why = "answers with the metadata address"

[[destination]]
to = "lan.test"
protocol = "tcp"
ports = [80]
why = "answers with a private address"
"#;

fn write_policy(host: &FakeHost, text: &str) -> String {
    let path = host.root().join("names-policy.toml");
    std::fs::write(&path, text).expect("write the policy");
    path.to_str().expect("utf8").to_string()
}

fn stats(host: &FakeHost) -> serde_json::Value {
    let path = host.root().join("var/lib/sandbox/sandbox/resolver-stats.json");
    // The resolver writes its counts within 250 ms of a change.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(v) = serde_json::from_str(&text) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "no resolver counts at {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_named_host_is_reachable_through_rotating_addresses_and_nothing_else() {
    let Some(host) = FakeHost::new() else { return };
    let dns = upstream(&host);
    let policy = write_policy(&host, POLICY);
    let before = host.snapshot();
    let run = host.setup_ok(&["--policy", &policy, "--dns", UPSTREAM_FLAG]);
    assert!(run.stdout.contains("started the resolver"), "{run}");
    let conf = host.sandbox_resolv_conf().expect("resolv.conf");
    assert!(
        conf.contains("nameserver 10.200.0.1\n") && !conf.contains(UPSTREAM_FLAG),
        "{conf}"
    );

    // Rotating addresses: each lookup answers another; every one answered
    // is reachable, each only once it was answered.
    for (i, want) in ROTATING.iter().enumerate() {
        host.tcp(Ns::Sandbox, (*want, 443)).assert_refused_promptly();
        let got = resolve(&host, "rotate.test");
        assert_eq!(got, vec![*want], "lookup {i}");
        host.tcp(Ns::Sandbox, (*want, 443)).assert_connected();
    }
    for a in ROTATING {
        host.tcp(Ns::Sandbox, (a, 443)).assert_connected();
        // Only on the rule's ports.
        host.tcp(Ns::Sandbox, (a, 80)).assert_refused_promptly();
    }
    let set = host.nft(Ns::Sandbox, &["list", "set", "inet", TABLE, "host_1"]);
    for a in ROTATING {
        assert!(set.contains(&a.to_string()), "{a} not in the set:\n{set}");
    }

    // Wildcards: subdomains at any depth, never the bare suffix or a look-alike.
    assert_eq!(resolve(&host, "a.pkg.test"), vec![PKG_A]);
    assert_eq!(resolve(&host, "A.B.PKG.TEST"), vec![PKG_AB]);
    host.tcp(Ns::Sandbox, (PKG_A, 443)).assert_connected();
    host.tcp(Ns::Sandbox, (PKG_AB, 443)).assert_connected();
    for lookalike in ["pkg.test", "evilpkg.test"] {
        let a = ask(&host, Ns::Sandbox, HOST_IP, lookalike, RecordType::A).expect("an answer");
        assert_eq!(a.code, ResponseCode::NXDomain, "{lookalike}: {a:?}");
    }
    host.tcp(Ns::Sandbox, (LOOKALIKE, 443)).assert_refused_promptly();

    // An allowed name's address, never resolved: refused.
    host.tcp(Ns::Sandbox, (NEVER_RESOLVED, 443)).assert_refused_promptly();

    // AAAA: empty (no IPv6 in the sandbox); TCP works like UDP.
    let aaaa = ask(&host, Ns::Sandbox, HOST_IP, "rotate.test", RecordType::AAAA).expect("answer");
    assert_eq!((aaaa.code, aaaa.addrs.len()), (ResponseCode::NoError, 0));
    let over_tcp = ask_tcp(&host, Ns::Sandbox, HOST_IP, "a.pkg.test").expect("answer over tcp");
    assert_eq!(over_tcp.addrs, vec![PKG_A]);

    // Rebinding: answers into the metadata or a private range are refused,
    // and the address stays closed.
    for (name, ip) in [("meta.test", METADATA), ("lan.test", LAN_BOX)] {
        let a = ask(&host, Ns::Sandbox, HOST_IP, name, RecordType::A).expect("an answer");
        assert_eq!(a.code, ResponseCode::Refused, "{name}: {a:?}");
        assert!(a.addrs.is_empty());
        host.tcp(Ns::Sandbox, (ip, 80)).assert_refused_promptly();
    }

    // A name not in the policy: NXDOMAIN, never asked upstream, counted.
    for _ in 0..3 {
        let a = ask(&host, Ns::Sandbox, HOST_IP, "unlisted.test", RecordType::A).expect("answer");
        assert_eq!(a.code, ResponseCode::NXDomain);
    }
    assert_eq!(dns.asked("unlisted.test"), 0, "a denied name went upstream");
    host.tcp(Ns::Sandbox, (WEB, 443)).assert_refused_promptly();
    let s = wait_for("the denial counts", || {
        let s = stats(&host);
        (s["denied"]["unlisted.test"] == 3).then_some(s)
    });
    assert_eq!(s["rebinding"]["meta.test"], 1, "{s}");
    assert_eq!(s["rebinding"]["lan.test"], 1, "{s}");

    // DNS anywhere but our resolver, DoT and DoH: refused.
    for (ip, port) in [(UPSTREAM, 53), (RESOLVER_A, 53), (RESOLVER_A, 853), (RESOLVER_A, 443)] {
        host.tcp(Ns::Sandbox, (ip, port)).assert_refused_promptly();
    }
    host.udp(Ns::Sandbox, (UPSTREAM, 53)).assert_refused_promptly();
    assert!(ask(&host, Ns::Sandbox, UPSTREAM, "rotate.test", RecordType::A).is_err());

    // TTL expiry (1 s, floor 2 s): access goes with the set element.
    assert_eq!(resolve(&host, "short.test"), vec![SHORT]);
    host.tcp(Ns::Sandbox, (SHORT, 443)).assert_connected();
    std::thread::sleep(Duration::from_millis(2600));
    host.tcp(Ns::Sandbox, (SHORT, 443)).assert_refused_promptly();

    // status shows names, their addresses and the denials by name.
    let st = host.sandbox(&["status", "--root", host.root_str(), "--no-systemd", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap_or_else(|e| panic!("{e}: {st}"));
    let names = v["names"].as_array().unwrap_or_else(|| panic!("no names: {st}"));
    let rotate = names.iter().find(|n| n["name"] == "rotate.test").expect("rotate.test");
    assert_eq!(rotate["addresses"].as_array().map(Vec::len), Some(3), "{rotate}");
    assert_eq!(v["dns_denials"]["unlisted.test"], 3, "{st}");
    let text = host.sandbox(&["status", "--root", host.root_str(), "--no-systemd"]);
    assert!(text.stdout.contains("refused names (NXDOMAIN):"), "{text}");
    // plan shows them too: names, the addresses open now, refused names.
    let plan = host.sandbox(&[
        "plan",
        "--root",
        host.root_str(),
        "--policy",
        &policy,
        "--dns",
        UPSTREAM_FLAG,
    ]);
    assert!(
        plan.stdout
            .contains("Names (through our resolver; addresses open now):"),
        "{plan}"
    );
    assert!(
        plan.stdout.contains("rotate.test tcp/443 (set host_1): 203.0.113.10"),
        "{plan}"
    );
    assert!(plan.stdout.contains("unlisted.test x3"), "{plan}");

    // Re-running setup changes nothing; --disable stops the resolver and
    // leaves the host as it was.
    let again = host.setup_ok(&["--policy", &policy, "--dns", UPSTREAM_FLAG]);
    assert!(
        again.stdout.contains("nothing changed"),
        "a re-run changed something:\n{again}"
    );
    let pid_file = host.root().join("var/lib/sandbox/sandbox/state.json");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&pid_file).expect("state")).expect("json");
    let pid = state.to_string();
    let pid = pid
        .split("\"pid\":")
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .expect("the resolver's pid in the record");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    host.disable_ok();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")),
        "the resolver (pid {pid}) still runs after --disable"
    );
    before.assert_restored(&host.snapshot(), "setup with names, then --disable");
}

#[test]
fn audit_then_suggest_then_enforce_passes_the_same_workload_and_nothing_else() {
    let Some(host) = FakeHost::new() else { return };
    let _dns = upstream(&host);
    host.listen_tcp(Ns::Internet, (ROTATING[0], 80).into());
    host.listen_tcp(Ns::Internet, (PKG_A, 80).into());
    let workload = |host: &FakeHost| {
        for _ in 0..3 {
            for a in resolve(host, "rotate.test") {
                host.tcp(Ns::Sandbox, (a, 443)).assert_connected();
            }
        }
        assert_eq!(resolve(host, "a.pkg.test"), vec![PKG_A]);
        host.tcp(Ns::Sandbox, (PKG_A, 443)).assert_connected();
        // By address, no name.
        host.tcp(Ns::Sandbox, (WEB, 80)).assert_connected();
    };

    host.setup_ok(&["--policy", "strict", "--mode", "audit", "--dns", UPSTREAM_FLAG]);
    workload(&host);
    // Audit mode does not open private ranges.
    host.tcp(Ns::Sandbox, (LAN_BOX, 80)).assert_refused_promptly();
    std::thread::sleep(Duration::from_millis(600)); // the counts file
    let out = host.sandbox(&["policy", "suggest", "--root", host.root_str()]);
    assert_eq!(out.code, 0, "{out}");
    let suggested = out.stdout.clone();
    for want in [
        "to = \"rotate.test\"",
        "to = \"a.pkg.test\"",
        "to = \"203.0.113.80\"",
        "ports = [443]",
        "ports = [80]",
    ] {
        assert!(suggested.contains(want), "{want} missing:\n{suggested}");
    }
    assert!(!suggested.contains("10.200.0.1"), "{suggested}");
    // Refused in audit mode: named in a comment, never allowed.
    assert!(!suggested.contains("to = \"10.10.10.10\""), "{suggested}");
    assert!(
        suggested.contains("# refused in audit mode, not suggested: 10.10.10.10 tcp/80"),
        "{suggested}"
    );
    host.disable_ok();

    let policy = write_policy(&host, &suggested);
    host.setup_ok(&["--policy", &policy, "--dns", UPSTREAM_FLAG]);
    workload(&host);
    // Anything else is refused.
    host.tcp(Ns::Sandbox, (WEB, 443)).assert_refused_promptly();
    host.tcp(Ns::Sandbox, (WEB, 8080)).assert_refused_promptly();
    host.tcp(Ns::Sandbox, (ROTATING[0], 80)).assert_refused_promptly();
    host.tcp(Ns::Sandbox, (PKG_A, 80)).assert_refused_promptly();
    let a = ask(&host, Ns::Sandbox, HOST_IP, "unlisted.test", RecordType::A).expect("answer");
    assert_eq!(a.code, ResponseCode::NXDomain);
    let a = ask(&host, Ns::Sandbox, HOST_IP, "a.b.pkg.test", RecordType::A).expect("answer");
    assert_eq!(a.code, ResponseCode::NXDomain, "the suggestion names hosts exactly");

    // The record lost: --disable still finds our resolver (by its command
    // line) and stops it, and removes its files.
    std::fs::remove_file(host.state_file("sandbox")).expect("remove the record");
    let run = host.disable_ok();
    assert!(run.stdout.contains("stopped the resolver of sandbox sandbox"), "{run}");
    assert!(!host.root().join("var/lib/sandbox/sandbox/resolver.json").exists());
}

/// The namespace removed and made anew by a re-run (what `ip netns del`
/// then setup does): the running resolver's socket still holds the old
/// namespace, where writes would succeed and open nothing. The re-run
/// starts a resolver in the new one (the old one exits by itself).
#[test]
fn a_namespace_made_anew_gets_its_sets_filled_by_the_running_resolver() {
    let Some(host) = FakeHost::new() else { return };
    let _dns = upstream(&host);
    let policy = write_policy(&host, POLICY);
    host.setup_ok(&["--policy", &policy, "--dns", UPSTREAM_FLAG]);
    assert_eq!(resolve(&host, "a.pkg.test"), vec![PKG_A]);
    host.tcp(Ns::Sandbox, (PKG_A, 443)).assert_connected();

    let ns = host.sandbox_netns();
    let ns = ns.to_str().expect("utf8");
    host.must(Ns::Host, &["umount", ns]);
    host.must(Ns::Host, &["rm", ns]);
    let run = host.setup_ok(&["--policy", &policy, "--dns", UPSTREAM_FLAG]);
    assert!(run.stdout.contains("started the resolver"), "{run}");

    host.tcp(Ns::Sandbox, (PKG_A, 443)).assert_refused_promptly();
    assert_eq!(resolve(&host, "a.pkg.test"), vec![PKG_A]);
    host.tcp(Ns::Sandbox, (PKG_A, 443)).assert_connected();
    host.disable_ok();
}

/// A CI job in audit mode: what its steps used comes back from
/// `policy suggest --name <job>`, as for any sandbox.
#[test]
fn a_job_in_audit_mode_gets_its_policy_suggested() {
    let Some(host) = FakeHost::new() else { return };
    let _dns = upstream(&host);
    let root = host.root_str().to_string();
    let made = host.sandbox(&[
        "job",
        "create",
        "--root",
        &root,
        "--no-systemd",
        "--name",
        "aud1",
        "--creator",
        "none",
        "--policy",
        "strict",
        "--mode",
        "audit",
        "--dns",
        UPSTREAM_FLAG,
    ]);
    assert_eq!(made.code, 0, "{made}");
    let web = format!("exec 3<>/dev/tcp/{WEB}/80");
    let ran = host.sandbox(&[
        "job",
        "exec",
        "--root",
        &root,
        "--no-systemd",
        "aud1",
        "--",
        "bash",
        "-c",
        &web,
    ]);
    assert_eq!(ran.code, 0, "audit mode lets the job reach the web: {ran}");
    std::thread::sleep(Duration::from_millis(600)); // the counts file
    let out = host.sandbox(&["policy", "suggest", "--root", &root, "--name", "aud1"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains(&format!("to = \"{WEB}\"")), "{out}");
    assert!(out.stdout.contains("ports = [80]"), "{out}");
    let gone = host.sandbox(&["job", "destroy", "--root", &root, "--no-systemd", "aud1"]);
    assert_eq!(gone.code, 0, "{gone}");
}

/// The resolver a job starts takes SIGTERM: `sandbox job` blocks the
/// signals it forwards, and a blocked mask is inherited across exec, so
/// a resolver that kept it would hold the job's namespace until SIGKILL.
#[test]
fn the_resolver_of_a_job_does_not_inherit_its_blocked_signals() {
    let Some(host) = FakeHost::new() else { return };
    let _dns = upstream(&host);
    let root = host.root_str().to_string();
    let policy = write_policy(&host, POLICY);
    // The resolver of this root, found by its command line.
    let resolver = || -> Option<u32> {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let ours = args.get(1) == Some(&&b"resolver"[..]) && args.contains(&root.as_bytes());
            ours.then_some(pid)
        })
    };
    std::thread::scope(|s| {
        let job = s.spawn(|| {
            host.sandbox(&[
                "job",
                "run",
                "--root",
                &root,
                "--no-systemd",
                "--policy",
                &policy,
                "--dns",
                UPSTREAM_FLAG,
                "--",
                "sleep",
                "3",
            ])
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(p) = resolver() {
                break p;
            }
            assert!(Instant::now() < deadline, "the job's resolver never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        // Found as soon as it exists, maybe before it reached its own
        // code: what counts is the mask it serves with, so look until it
        // is clear (a resolver that keeps the job's mask never gets there).
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("resolver status");
            let blocked = status.lines().find(|l| l.starts_with("SigBlk:")).expect("SigBlk line");
            if blocked.split_whitespace().nth(1) == Some("0000000000000000") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the resolver still blocks signals:\n{status}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let ran = job.join().expect("job thread");
        assert_eq!(ran.code, 0, "{ran}");
    });
    assert_eq!(resolver(), None, "the resolver went with the job");
}

/// A DNS server of the host's on every address (dnsmasq's default) would
/// make the resolver fail at start, after other steps changed the host:
/// setup refuses before it changes anything, naming the port and who
/// holds it (here: this test process).
#[test]
fn a_dns_server_on_every_address_is_refused_before_anything_changes() {
    let Some(host) = FakeHost::new() else { return };
    let policy = write_policy(&host, POLICY);
    host.listen_tcp(Ns::Host, (Ipv4Addr::UNSPECIFIED, 53).into());
    let before = host.snapshot();
    let run = host.setup(&["--policy", &policy, "--dns", UPSTREAM_FLAG]);
    assert_eq!(run.code, 3, "the host is not fit: {run}");
    assert!(run.stderr.contains("TCP port 53 on 0.0.0.0"), "{run}");
    assert!(run.stderr.contains(&format!("(pid {})", std::process::id())), "{run}");
    assert!(
        run.stderr.contains("bind that DNS server to its own addresses only"),
        "{run}"
    );
    before.assert_same(&host.snapshot(), "a refused setup");
    // A policy that lists resolvers needs no port of the host: it goes ahead.
    host.setup_ok(&["--policy", "strict"]);
    host.disable_ok();
}
