//! A fake host for the root integration tests.
//!
//! `FakeHost::new()` builds a throwaway world and nothing outside it:
//!
//! ```text
//!   fake host (net + mount namespace)            "internet" (net namespace)
//!   lo, inet0 198.51.100.1/24  <---- veth ---->  wan0 198.51.100.2/24
//!   default via 198.51.100.2                     lo: 203.0.113.53, 203.0.113.54 (resolvers)
//!   nft table inet operator (not ours)               203.0.113.80 (web), 10.10.10.10 (a LAN box)
//!   net.ipv4.conf.inet0.forwarding=1                 169.254.169.254 (metadata)
//!   --root: a temp tree with etc/resolv.conf         route 10.200.0.0/24 via 198.51.100.1
//!           (loopback stub) and unrelated files
//! ```
//!
//! The real `sandbox` binary runs inside the fake host (as a child of a thread
//! that entered its namespaces), so its netns mount, veth, nft tables and
//! sysctls land there. Probes run from threads that entered the sandbox's
//! namespace (`<root>/run/netns/sandbox0`), the fake host or the internet.
//! iproute2 and nft are used here only to build and observe the world.
//!
//! Dropping the `FakeHost` stops its listeners, closes the namespace handles
//! (so the namespaces and every mount in them go away) and removes the temp
//! root from the real mount namespace, where no test mount ever sat.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod openclaw;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use sha2::{Digest, Sha256};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sandbox");

pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
pub const SANDBOX_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// The fake host's address towards the internet.
pub const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The internet's end of the uplink (the fake host's default gateway).
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const RESOLVER_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
pub const RESOLVER_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 54);
pub const WEB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// A private address behind the gateway: "public" must not include it.
pub const LAN_BOX: Ipv4Addr = Ipv4Addr::new(10, 10, 10, 10);

/// The flag value every test that may send DNS passes (never the defaults).
pub const DNS_A: &str = "203.0.113.53";
pub const DNS_B: &str = "203.0.113.54";

pub const HOST_IF: &str = "sandbox0";
pub const PEER_IF: &str = "eth0";
pub const TABLE: &str = "sandbox_sandbox";
/// The fake host's uplink interface.
pub const UPLINK_IF: &str = "inet0";

/// How long a probe waits before calling it a timeout.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// A refusal must come well before the probe would time out.
pub const PROMPT: Duration = Duration::from_millis(1500);
/// A run of the binary that takes longer than this is hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The resolv.conf the fake host starts with: a loopback stub, as under
/// systemd-resolved. The sandbox must never be pointed at it.
pub const HOST_RESOLV_CONF: &str =
    "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\n\
     nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.internal\n";

/// Paths under the root that `--disable` keeps on purpose (without
/// `--purge`): the policy directory (the operator may have edited it) and the
/// device identity (`device.key`, the pairing registry, `~/.env`).
/// (the audit log under var/log is kept too: it is the trail of what was done)
pub const KEPT_BY_DESIGN: &[&str] = &["home/sandbox/.defenseclaw", "home/sandbox/.env", "var/log"];

/// What OpenClaw writes on its first run as the sandbox user.
pub const OPENCLAW_JSON: &str =
    "{\n    \"master_key\": \"mk-fake-host\",\n    \"gateway\": {\n        \"mode\": \"local\"\n    }\n}\n";

/// A table of the operator's own, which the tool must leave alone.
const OPERATOR_RULESET: &str = "table inet operator {
    set blocked4 {
        type ipv4_addr
        elements = { 192.0.2.99 }
    }
    chain input {
        type filter hook input priority -10; policy accept;
        ip saddr @blocked4 drop comment \"the operator's own rule\"
    }
}
";

/// Root tests fail when not root, unless the operator opted out.
/// Returns false when the test should return early (skipped on purpose).
pub fn root_or_skip() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("SANDBOX_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: not root and SANDBOX_SKIP_ROOT_TESTS=1");
        return false;
    }
    panic!(
        "these tests need root (they create network namespaces, veths, nft tables and mounts \
         inside a throwaway namespace); run them as root, or set SANDBOX_SKIP_ROOT_TESTS=1 \
         to skip them explicitly"
    );
}

/// Run `body` with a fresh temp directory on a thread that entered its own
/// network and mount namespaces (`/` made private): a throwaway host for
/// tests that need no fake internet. The directory is made and removed out
/// here, in the real mount namespace, where no test mount ever sits on it,
/// so cleanup works even after a test failed halfway with mounts in place.
pub fn in_throwaway_host(body: impl FnOnce(&Path) + Send + 'static) {
    if !root_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().to_path_buf();
    let worker = std::thread::spawn(move || {
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS) {
            panic!("unshare(CLONE_NEWNET|CLONE_NEWNS) failed: {e}");
        }
        let none = None::<&str>;
        if let Err(e) = mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none) {
            panic!("making / private in the throwaway mount namespace failed: {e}");
        }
        body(&path);
    });
    let outcome = worker.join();
    drop(tmp);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Where a probe or command runs. Every one of them also sees the fake
/// host's mount namespace (so `--root` paths and the netns mount resolve).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// The fake host itself.
    Host,
    /// The fake internet behind the fake host's uplink.
    Internet,
    /// The sandbox's namespace, `<root>/run/netns/sandbox0` (must exist).
    Sandbox,
}

struct Namespaces {
    host_net: File,
    host_mnt: File,
    internet_net: File,
}

pub struct FakeHost {
    services: Services,
    ns: Option<Namespaces>,
    root: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

impl FakeHost {
    /// A fresh fake host, or None when root tests are skipped on purpose.
    pub fn new() -> Option<FakeHost> {
        if !root_or_skip() {
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("sandbox-fakehost-")
            .tempdir()
            .expect("create the temp root");
        let root = tmp.path().to_path_buf();
        seed_root(&root);

        let (host_net, host_mnt) = std::thread::spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
                .expect("unshare(CLONE_NEWNET|CLONE_NEWNS) for the fake host");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make / private in the fake host's mount namespace");
            (
                File::open("/proc/thread-self/ns/net").expect("open the fake host's netns"),
                File::open("/proc/thread-self/ns/mnt").expect("open the fake host's mount ns"),
            )
        })
        .join()
        .expect("fake host namespace thread");
        let internet_net = std::thread::spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) for the internet");
            File::open("/proc/thread-self/ns/net").expect("open the internet's netns")
        })
        .join()
        .expect("internet namespace thread");

        let host = FakeHost {
            services: Services::start(),
            ns: Some(Namespaces {
                host_net,
                host_mnt,
                internet_net,
            }),
            root,
            tmp: Some(tmp),
        };
        host.build_network();
        host.start_internet_services();
        host.check_world();
        Some(host)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn root_str(&self) -> &str {
        self.root.to_str().expect("temp root is UTF-8")
    }

    /// `<root>/run/netns/sandbox0`, as the fake host sees it.
    pub fn sandbox_netns(&self) -> PathBuf {
        self.root.join("run/netns").join(HOST_IF)
    }

    /// The sandbox's resolv.conf, if it exists.
    pub fn sandbox_resolv_conf(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join("etc/netns/sandbox0/resolv.conf")).ok()
    }

    fn namespaces(&self) -> &Namespaces {
        self.ns.as_ref().expect("the fake host's namespaces are alive")
    }

    /// Run `f` on a thread inside `ns` (and the fake host's mount namespace).
    /// Processes `f` spawns inherit both. Panics in `f` are re-raised here.
    pub fn in_ns<T: Send>(&self, ns: Ns, f: impl FnOnce() -> T + Send) -> T {
        let nss = self.namespaces();
        let sandbox = self.sandbox_netns();
        std::thread::scope(|s| {
            let worker = s.spawn(move || {
                // setns into a mount namespace needs an fs_struct of our own.
                unshare(CloneFlags::CLONE_FS).expect("unshare(CLONE_FS)");
                setns(&nss.host_mnt, CloneFlags::CLONE_NEWNS).expect("enter the fake host's mount namespace");
                match ns {
                    Ns::Host => setns(&nss.host_net, CloneFlags::CLONE_NEWNET).expect("enter the fake host's netns"),
                    Ns::Internet => {
                        setns(&nss.internet_net, CloneFlags::CLONE_NEWNET).expect("enter the internet's netns")
                    }
                    Ns::Sandbox => {
                        let f = File::open(&sandbox)
                            .unwrap_or_else(|e| panic!("open the sandbox netns {}: {e}", sandbox.display()));
                        setns(&f, CloneFlags::CLONE_NEWNET)
                            .unwrap_or_else(|e| panic!("enter the sandbox netns {}: {e}", sandbox.display()));
                    }
                }
                f()
            });
            match worker.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    // ---- commands -------------------------------------------------------

    /// Run a command in `ns`; returns its output whatever the exit code.
    pub fn cmd(&self, ns: Ns, argv: &[&str], stdin: Option<&str>) -> Output {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let input = stdin.map(str::to_string);
        self.in_ns(ns, move || {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..])
                .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
            if let (Some(text), Some(mut pipe)) = (input, child.stdin.take()) {
                pipe.write_all(text.as_bytes())
                    .unwrap_or_else(|e| panic!("write stdin of {argv:?}: {e}"));
            }
            child
                .wait_with_output()
                .unwrap_or_else(|e| panic!("wait for {argv:?}: {e}"))
        })
    }

    /// Run a command in `ns` that must succeed; returns its stdout.
    pub fn must(&self, ns: Ns, argv: &[&str]) -> String {
        let out = self.cmd(ns, argv, None);
        assert!(
            out.status.success(),
            "{argv:?} in {ns:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip <args>` in `ns`, which must succeed.
    pub fn ip(&self, ns: Ns, args: &[&str]) -> String {
        let mut argv = vec!["ip"];
        argv.extend_from_slice(args);
        self.must(ns, &argv)
    }

    /// `nft <args>` in `ns`, which must succeed.
    pub fn nft(&self, ns: Ns, args: &[&str]) -> String {
        let mut argv = vec!["nft"];
        argv.extend_from_slice(args);
        self.must(ns, &argv)
    }

    pub fn ruleset(&self, ns: Ns) -> String {
        self.nft(ns, &["list", "ruleset"])
    }

    /// Read a sysctl (`net/ipv4/ip_forward`) as `ns` sees it.
    pub fn sysctl(&self, ns: Ns, key: &str) -> String {
        let path = format!("/proc/sys/{key}");
        self.in_ns(ns, move || {
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {path}: {e}"))
                .trim()
                .to_string()
        })
    }

    pub fn set_sysctl(&self, ns: Ns, key: &str, value: &str) {
        let path = format!("/proc/sys/{key}");
        let value = value.to_string();
        self.in_ns(ns, move || {
            std::fs::write(&path, &value).unwrap_or_else(|e| panic!("write {value} to {path}: {e}"))
        })
    }

    // ---- the binary -----------------------------------------------------

    /// `sandbox <args>` inside the fake host, exactly as given.
    pub fn sandbox(&self, args: &[&str]) -> Run {
        self.sandbox_with(&[], &[], args)
    }

    /// `sandbox <args>`, run through `prefix` (e.g. setpriv) with extra
    /// environment variables.
    pub fn sandbox_with(&self, prefix: &[&str], env: &[(&str, &str)], args: &[&str]) -> Run {
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.push(BIN.to_string());
        argv.extend(args.iter().map(|s| s.to_string()));
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.in_ns(Ns::Host, move || run_with_timeout(argv, env))
    }

    /// `sandbox setup --root <root> --non-interactive <flags>`.
    pub fn setup(&self, flags: &[&str]) -> Run {
        let mut args = vec!["setup", "--root", self.root_str(), "--non-interactive", "--no-systemd"];
        args.extend_from_slice(flags);
        self.sandbox(&args)
    }

    /// `setup` that must succeed.
    pub fn setup_ok(&self, flags: &[&str]) -> Run {
        let run = self.setup(flags);
        assert_eq!(run.code, 0, "setup failed:\n{run}");
        run
    }

    /// `sandbox setup --root <root> --disable --non-interactive`.
    pub fn disable(&self) -> Run {
        self.sandbox(&["setup", "--root", self.root_str(), "--disable", "--non-interactive"])
    }

    pub fn disable_ok(&self) -> Run {
        let run = self.disable();
        assert_eq!(run.code, 0, "--disable failed:\n{run}");
        run
    }

    // ---- listeners and probes -------------------------------------------

    /// A TCP listener in `ns` that greets every connection with
    /// `peer <addr>` (the address it saw) and closes it.
    pub fn listen_tcp(&self, ns: Ns, addr: SocketAddr) {
        let l = self.in_ns(ns, move || {
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind tcp {addr} in {ns:?}: {e}"))
        });
        l.set_nonblocking(true).expect("nonblocking listener");
        self.services.add(Sock::Tcp(l));
    }

    /// An HTTP responder in `ns` (200 and `{"ok":true,…}` to any request):
    /// a stand-in for a `/health` endpoint.
    pub fn listen_http(&self, ns: Ns, addr: SocketAddr) {
        let l = self.in_ns(ns, move || {
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind http {addr} in {ns:?}: {e}"))
        });
        l.set_nonblocking(true).expect("nonblocking listener");
        self.services.add(Sock::Http(l));
    }

    /// A UDP responder in `ns` that answers `<payload> from <peer>`.
    pub fn listen_udp(&self, ns: Ns, addr: SocketAddr) {
        let s = self.in_ns(ns, move || {
            UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr} in {ns:?}: {e}"))
        });
        s.set_nonblocking(true).expect("nonblocking udp socket");
        self.services.add(Sock::Udp(s));
    }

    pub fn tcp(&self, from: Ns, to: impl Into<SocketAddr>) -> Probe {
        self.tcp_timeout(from, to, PROBE_TIMEOUT)
    }

    /// TCP connect from `from` to `to`; on success, read the greeting.
    pub fn tcp_timeout(&self, from: Ns, to: impl Into<SocketAddr>, timeout: Duration) -> Probe {
        let to = to.into();
        self.in_ns(from, move || {
            let start = Instant::now();
            match TcpStream::connect_timeout(&to, timeout) {
                Ok(mut s) => {
                    let elapsed = start.elapsed();
                    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut buf = Vec::new();
                    let _ = s.read_to_end(&mut buf);
                    Probe {
                        proto: "tcp",
                        from,
                        to,
                        reach: Reach::Connected,
                        elapsed,
                        detail: String::from_utf8_lossy(&buf).trim().to_string(),
                    }
                }
                Err(e) => Probe::failed("tcp", from, to, start.elapsed(), &e),
            }
        })
    }

    /// One UDP datagram from `from` to `to`, and the reply if any.
    pub fn udp(&self, from: Ns, to: impl Into<SocketAddr>) -> Probe {
        let to = to.into();
        self.in_ns(from, move || {
            let start = Instant::now();
            let result = (|| {
                let any: SocketAddr = if to.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(any)?;
                s.connect(to)?;
                s.set_read_timeout(Some(PROBE_TIMEOUT))?;
                s.send(b"ping")?;
                let mut buf = [0u8; 512];
                let n = s.recv(&mut buf)?;
                Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
            })();
            match result {
                Ok(reply) => Probe {
                    proto: "udp",
                    from,
                    to,
                    reach: Reach::Connected,
                    elapsed: start.elapsed(),
                    detail: reply,
                },
                Err(e) => Probe::failed("udp", from, to, start.elapsed(), &e),
            }
        })
    }

    // ---- observing ------------------------------------------------------

    /// The first IPv6 link-local address on `ifname` in `ns`.
    pub fn link_local(&self, ns: Ns, ifname: &str) -> Ipv6Addr {
        let json = self.ip(ns, &["-j", "-6", "addr", "show", "dev", ifname, "scope", "link"]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j addr JSON");
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["local"].as_str()?.parse().ok())
            .next()
            .unwrap_or_else(|| panic!("no link-local address on {ifname} in {ns:?}: {json}"))
    }

    /// Wait (up to 10 s) until no address on `ifname` in `ns` is tentative.
    pub fn wait_for_dad(&self, ns: Ns, ifname: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let json = self.ip(ns, &["-j", "-6", "addr", "show", "dev", ifname]);
            if !json.contains("tentative") {
                return;
            }
            assert!(Instant::now() < deadline, "{ifname} in {ns:?} stays tentative: {json}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn ifindex(&self, ns: Ns, ifname: &str) -> u32 {
        let name = ifname.to_string();
        self.in_ns(ns, move || {
            nix::net::if_::if_nametoindex(name.as_str()).unwrap_or_else(|e| panic!("if_nametoindex({name}): {e}"))
        })
    }

    /// Everything about the fake host that the tool could change.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = BTreeMap::new();
        let links: serde_json::Value =
            serde_json::from_str(&self.ip(Ns::Host, &["-j", "-d", "link", "show"])).expect("ip -j link JSON");
        s.insert("links", json_lines(&links));
        let addrs: serde_json::Value =
            serde_json::from_str(&self.ip(Ns::Host, &["-j", "addr", "show"])).expect("ip -j addr JSON");
        let mut addr_lines = Vec::new();
        for l in addrs.as_array().into_iter().flatten() {
            for a in l["addr_info"].as_array().into_iter().flatten() {
                addr_lines.push(format!("{} {a}", l["ifname"].as_str().unwrap_or("?")));
            }
        }
        s.insert("addresses", addr_lines);
        for (key, family) in [("routes4", "-4"), ("routes6", "-6")] {
            let routes: serde_json::Value =
                serde_json::from_str(&self.ip(Ns::Host, &["-j", family, "route", "show", "table", "all"]))
                    .expect("ip -j route JSON");
            s.insert(key, json_lines(&routes));
        }
        s.insert(
            "ip rules",
            self.ip(Ns::Host, &["rule", "show"]).lines().map(String::from).collect(),
        );
        s.insert("nft", self.ruleset(Ns::Host).lines().map(String::from).collect());
        let root = self.root.clone();
        let (sysctls, mounts, tree) = self.in_ns(Ns::Host, move || {
            (sysctl_lines(), mount_lines(&root), tree_lines(&root))
        });
        s.insert("sysctl", sysctls);
        s.insert("mounts", mounts);
        s.insert("root tree", tree);
        Snapshot { sections: s }
    }

    // ---- building the world ---------------------------------------------

    fn build_network(&self) {
        // No DAD in the fake host and the internet: addresses are usable at
        // once and snapshots never catch one half-way.
        for ns in [Ns::Host, Ns::Internet] {
            for conf in ["all", "default"] {
                self.set_sysctl(ns, &format!("net/ipv6/conf/{conf}/accept_dad"), "0");
            }
            self.ip(ns, &["link", "set", "lo", "up"]);
        }
        let internet_fd = {
            use std::os::fd::AsRawFd;
            format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                self.namespaces().internet_net.as_raw_fd()
            )
        };
        self.ip(
            Ns::Host,
            &[
                "link",
                "add",
                UPLINK_IF,
                "type",
                "veth",
                "peer",
                "name",
                "wan0",
                "netns",
                &internet_fd,
            ],
        );
        self.ip(Ns::Host, &["addr", "add", "198.51.100.1/24", "dev", UPLINK_IF]);
        self.ip(Ns::Host, &["link", "set", UPLINK_IF, "up"]);
        self.ip(Ns::Host, &["route", "add", "default", "via", "198.51.100.2"]);
        // A host that forwards on its uplink (only there): the tool must
        // restore this per-interface value, not just the global one.
        self.set_sysctl(Ns::Host, "net/ipv4/conf/inet0/forwarding", "1");
        self.cmd_ok_stdin(Ns::Host, &["nft", "-f", "-"], OPERATOR_RULESET);

        for a in [RESOLVER_A, RESOLVER_B, WEB, METADATA, LAN_BOX] {
            self.ip(Ns::Internet, &["addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        self.ip(Ns::Internet, &["addr", "add", "198.51.100.2/24", "dev", "wan0"]);
        self.ip(Ns::Internet, &["link", "set", "wan0", "up"]);
        // So that inbound attempts from the internet reach the fake host.
        self.ip(Ns::Internet, &["route", "add", "10.200.0.0/24", "via", "198.51.100.1"]);
    }

    fn cmd_ok_stdin(&self, ns: Ns, argv: &[&str], stdin: &str) {
        let out = self.cmd(ns, argv, Some(stdin));
        assert!(
            out.status.success(),
            "{argv:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_internet_services(&self) {
        for ip in [RESOLVER_A, RESOLVER_B] {
            self.listen_tcp(Ns::Internet, (ip, 53).into());
            self.listen_udp(Ns::Internet, (ip, 53).into());
        }
        for port in [80, 443, 8080] {
            self.listen_tcp(Ns::Internet, (WEB, port).into());
        }
        self.listen_tcp(Ns::Internet, (METADATA, 80).into());
        self.listen_tcp(Ns::Internet, (LAN_BOX, 80).into());
    }

    /// The fake internet answers the fake host: every "blocked" result in a
    /// test is the sandbox's doing, not a dead service.
    fn check_world(&self) {
        for to in [
            SocketAddr::from((RESOLVER_A, 53)),
            (RESOLVER_B, 53).into(),
            (WEB, 80).into(),
            (WEB, 443).into(),
            (WEB, 8080).into(),
            (METADATA, 80).into(),
            (LAN_BOX, 80).into(),
        ] {
            self.tcp(Ns::Host, to).assert_connected().assert_seen_from(UPLINK_IP);
        }
        for ip in [RESOLVER_A, RESOLVER_B] {
            let p = self.udp(Ns::Host, (ip, 53));
            p.assert_connected().assert_seen_from(UPLINK_IP);
            assert!(p.detail.starts_with("ping from "), "{p}");
        }
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.services.stop();
        // Last handles on the namespaces: the fake host's mounts (the netns
        // bind mounts under the root among them) and links go with them.
        drop(self.ns.take());
        if let Some(tmp) = self.tmp.take() {
            let path = tmp.path().to_path_buf();
            if let Err(e) = tmp.close() {
                eprintln!("warning: could not remove the temp root {}: {e}", path.display());
            }
        }
    }
}

/// A `--root` that looks like a small host: a loopback-stub resolv.conf and
/// a few unrelated files the tool must not touch.
fn seed_root(root: &Path) {
    let dir = |rel: &str, mode: u32| {
        let p = root.join(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod dir");
    };
    let file = |rel: &str, body: &str, mode: u32| {
        let p = root.join(rel);
        std::fs::write(&p, body).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod file");
    };
    // Like /: world-readable, so unprivileged runs see what they would see.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod root");
    dir("etc", 0o755);
    file("etc/resolv.conf", HOST_RESOLV_CONF, 0o644);
    file("etc/hosts", "127.0.0.1 localhost\n198.51.100.1 fakehost\n", 0o644);
    file(
        "etc/nsswitch.conf",
        "passwd: files\ngroup: files\nhosts: files resolve [!UNAVAIL=return] dns\n",
        0o644,
    );
    std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", root.join("etc/localtime")).expect("symlink");
    // The accounts database, with the sandbox user already there: OpenClaw
    // was installed and ran once as that user (it wrote openclaw.json with
    // its master key), as setup requires.
    file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
         sandbox:x:990:990:OpenClaw sandbox:/home/sandbox:/bin/bash\n",
        0o644,
    );
    file("etc/group", "root:x:0:\nnogroup:x:65534:\nsandbox:x:990:\n", 0o644);
    file(
        "etc/shadow",
        "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\nsandbox:!:19000::::::\n",
        0o640,
    );
    file("etc/gshadow", "root:*::\nnogroup:*::\nsandbox:!::\n", 0o640);
    dir("home/sandbox/.openclaw", 0o700);
    file("home/sandbox/.openclaw/openclaw.json", OPENCLAW_JSON, 0o600);
    for p in [
        "home/sandbox",
        "home/sandbox/.openclaw",
        "home/sandbox/.openclaw/openclaw.json",
    ] {
        std::os::unix::fs::chown(root.join(p), Some(990), Some(990)).expect("chown");
    }
    std::fs::set_permissions(root.join("home/sandbox"), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    std::fs::set_permissions(root.join("home"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir("var/lib/misc", 0o755);
    dir("var/log", 0o755);
    file("var/log/syslog", "Jan  1 00:00:00 fakehost kernel: booted\n", 0o640);
    dir("run", 0o755);
    file("run/utmp", "", 0o664);
}

/// Run argv (in the caller's namespaces), killing it if it hangs.
fn run_with_timeout(argv: Vec<String>, env: Vec<(String, String)>) -> Run {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{argv:?} did not finish within {RUN_TIMEOUT:?}");
            }
            Err(e) => panic!("wait for {argv:?}: {e}"),
        }
    };
    Run {
        argv,
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// One run of the binary.
pub struct Run {
    pub argv: Vec<String>,
    /// Exit code, -1 if killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ {}\nexit code {}\n--- stdout\n{}--- stderr\n{}---",
            self.argv.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

// ---- probes -------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// TCP handshake done, or a UDP reply came back.
    Connected,
    /// Refused, unreachable, not permitted: any error short of a timeout.
    Refused,
    /// Nothing came back within the probe's timeout.
    TimedOut,
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub proto: &'static str,
    pub from: Ns,
    pub to: SocketAddr,
    pub reach: Reach,
    pub elapsed: Duration,
    /// The greeting/reply on success, the error otherwise.
    pub detail: String,
}

impl Probe {
    fn failed(proto: &'static str, from: Ns, to: SocketAddr, elapsed: Duration, e: &std::io::Error) -> Probe {
        let reach = match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Reach::TimedOut,
            _ => Reach::Refused,
        };
        Probe {
            proto,
            from,
            to,
            reach,
            elapsed,
            detail: e.to_string(),
        }
    }

    #[track_caller]
    pub fn assert_connected(&self) -> &Self {
        assert_eq!(self.reach, Reach::Connected, "expected a connection: {self}");
        self
    }

    /// Not connected, however it failed.
    #[track_caller]
    pub fn assert_blocked(&self) -> &Self {
        assert_ne!(self.reach, Reach::Connected, "expected no way through: {self}");
        self
    }

    /// Refused well before the probe would have timed out.
    #[track_caller]
    pub fn assert_refused_promptly(&self) -> &Self {
        assert_eq!(self.reach, Reach::Refused, "expected a prompt refusal: {self}");
        assert!(
            self.elapsed < PROMPT,
            "refused, but only after {:?}: {self}",
            self.elapsed
        );
        self
    }

    /// The address the far end saw us come from (from its greeting).
    #[track_caller]
    pub fn assert_seen_from(&self, ip: impl Into<IpAddr>) -> &Self {
        let ip = ip.into();
        let seen = self
            .detail
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse::<SocketAddr>().ok().map(|a| a.ip()).or_else(|| s.parse().ok()));
        assert_eq!(seen, Some(ip), "far end saw another source: {self}");
        self
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} -> {}: {:?} after {:?} ({})",
            self.proto, self.from, self.to, self.reach, self.elapsed, self.detail
        )
    }
}

// ---- listener service ---------------------------------------------------

enum Sock {
    Tcp(TcpListener),
    /// Answers `GET /health` (any request) with 200 and a small JSON body,
    /// as the sidecar's and OpenClaw's health endpoints do.
    Http(TcpListener),
    Udp(UdpSocket),
}

/// Every listener of one fake host, served by one thread. A socket stays in
/// the namespace it was created in, so serving it from here is fine.
struct Services {
    socks: Arc<Mutex<Vec<Sock>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Services {
    fn start() -> Services {
        let socks: Arc<Mutex<Vec<Sock>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (socks.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Ok(socks) = s.lock() {
                    for sock in socks.iter() {
                        serve(sock);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Services {
            socks,
            stop,
            thread: Some(thread),
        }
    }

    fn add(&self, sock: Sock) {
        self.socks.lock().expect("services lock").push(sock);
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(mut socks) = self.socks.lock() {
            socks.clear();
        }
    }
}

fn serve(sock: &Sock) {
    match sock {
        Sock::Tcp(l) => {
            while let Ok((mut conn, peer)) = l.accept() {
                let _ = conn.set_nonblocking(false);
                let _ = conn.write_all(format!("peer {peer}\n").as_bytes());
            }
        }
        Sock::Http(l) => {
            while let Ok((mut conn, peer)) = l.accept() {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                let mut req = Vec::new();
                let mut buf = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 4096 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!("{{\"ok\":true,\"status\":\"live\",\"peer\":\"{peer}\"}}");
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        }
        Sock::Udp(s) => {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = s.recv_from(&mut buf) {
                let mut reply = buf[..n].to_vec();
                reply.extend_from_slice(format!(" from {}", peer.ip()).as_bytes());
                let _ = s.send_to(&reply, peer);
            }
        }
    }
}

// ---- snapshots ----------------------------------------------------------

/// The fake host's observable state, section by section, one line per item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub sections: BTreeMap<&'static str, Vec<String>>,
}

impl Snapshot {
    pub fn section(&self, name: &str) -> &[String] {
        self.sections
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_else(|| panic!("no section {name}"))
    }

    /// Lines only in `self` ("-") or only in `other` ("+"), per section,
    /// counting repeats (a second `chain input {` is a change too).
    pub fn diff(&self, other: &Snapshot) -> String {
        fn only_in<'a>(a: &'a [String], b: &[String]) -> Vec<&'a String> {
            let mut left: BTreeMap<&str, usize> = BTreeMap::new();
            for l in b {
                *left.entry(l.as_str()).or_default() += 1;
            }
            a.iter()
                .filter(|l| match left.get_mut(l.as_str()) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        false
                    }
                    _ => true,
                })
                .collect()
        }
        let mut out = String::new();
        let empty = Vec::new();
        for (name, lines) in &self.sections {
            let theirs = other.sections.get(name).unwrap_or(&empty);
            if lines == theirs {
                continue;
            }
            out.push_str(&format!("[{name}]\n"));
            let (gone, new) = (only_in(lines, theirs), only_in(theirs, lines));
            for l in &gone {
                out.push_str(&format!("  - {l}\n"));
            }
            for l in &new {
                out.push_str(&format!("  + {l}\n"));
            }
            if gone.is_empty() && new.is_empty() {
                out.push_str("  (same lines in another order)\n");
            }
        }
        out
    }

    /// The snapshot without the files `--disable` keeps by design (DESIGN.md:
    /// the policy directory and the device identity hold the operator's data).
    pub fn without_kept(&self) -> Snapshot {
        let mut s = self.clone();
        if let Some(tree) = s.sections.get_mut("root tree") {
            tree.retain(|line| {
                let path = line.split(' ').next().unwrap_or("");
                !KEPT_BY_DESIGN
                    .iter()
                    .any(|k| path == *k || path.starts_with(&format!("{k}/")))
            });
        }
        s
    }

    /// After `--disable`: everything as before, except the files DESIGN.md
    /// says are kept (and only those).
    #[track_caller]
    pub fn assert_restored(&self, after: &Snapshot, context: &str) {
        self.without_kept().assert_same(&after.without_kept(), context);
    }

    /// The snapshot without the audit trail (`var/log`): every run that
    /// reaches the host, a refused one too, appends its start and outcome
    /// records there (issue 16), and that is not a change to the host.
    pub fn without_audit_trail(&self) -> Snapshot {
        let mut s = self.clone();
        if let Some(tree) = s.sections.get_mut("root tree") {
            tree.retain(|line| {
                let path = line.split(' ').next().unwrap_or("");
                path != "var/log" && !path.starts_with("var/log/")
            });
        }
        s
    }

    /// Panics with a readable diff unless `after` equals `self` (the
    /// audit trail aside: see [`Snapshot::without_audit_trail`]).
    #[track_caller]
    pub fn assert_same(&self, after: &Snapshot, context: &str) {
        let (before, after) = (self.without_audit_trail(), after.without_audit_trail());
        if before != after {
            panic!(
                "{context}: the fake host changed (- before, + after):\n{}",
                before.diff(&after)
            );
        }
    }
}

fn json_lines(v: &serde_json::Value) -> Vec<String> {
    v.as_array().into_iter().flatten().map(|x| x.to_string()).collect()
}

/// `net.ipv4.ip_forward`, every `net.ipv4.conf.*.forwarding`, and IPv6's.
fn sysctl_lines() -> Vec<String> {
    let read = |k: &str| {
        std::fs::read_to_string(format!("/proc/sys/{k}"))
            .map(|v| format!("{k}={}", v.trim()))
            .unwrap_or_else(|e| format!("{k}: {e}"))
    };
    let mut out = vec![read("net/ipv4/ip_forward")];
    let mut ifs: Vec<String> = std::fs::read_dir("/proc/sys/net/ipv4/conf")
        .expect("list net/ipv4/conf")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    ifs.sort();
    for i in &ifs {
        out.push(read(&format!("net/ipv4/conf/{i}/forwarding")));
    }
    out.push(read("net/ipv6/conf/all/forwarding"));
    out
}

/// Mounts at or under `root`, as the calling thread's mount namespace has them.
fn mount_lines(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").expect("read mountinfo");
    info.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let point = *fields.get(4)?;
            if point != root && !point.starts_with(&format!("{root}/")) {
                return None;
            }
            let after_dash = l.split(" - ").nth(1).unwrap_or("");
            Some(format!("{point} {} {after_dash}", fields.get(5).unwrap_or(&"")))
        })
        .collect()
}

/// Every path under `root`: type, mode, owner, and a hash of file contents.
fn tree_lines(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let line = describe(root, &p);
            out.push(line);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                walk(root, &p, out);
            }
        }
    }
    fn describe(root: &Path, p: &Path) -> String {
        let rel = p
            .strip_prefix(root)
            .map_or_else(|_| p.display().to_string(), |r| r.display().to_string());
        let rel = if rel.is_empty() { ".".to_string() } else { rel };
        let m = match std::fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) => return format!("{rel} unreadable: {e}"),
        };
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!(
                "symlink -> {}",
                std::fs::read_link(p).map_or_else(|e| e.to_string(), |t| t.display().to_string())
            )
        } else if ft.is_file() {
            match std::fs::read(p) {
                Ok(b) => format!("file sha256 {:x}", Sha256::digest(&b)),
                Err(e) => format!("file (unreadable: {})", e.kind()),
            }
        } else {
            "other".to_string()
        };
        format!(
            "{rel} {what} mode {:o} owner {}:{}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid()
        )
    }
    let mut out = vec![describe(root, root)];
    walk(root, root, &mut out);
    out
}

// ---- the real host ------------------------------------------------------

/// What the tests promise never to change on the real host, as seen from the
/// calling thread (a test thread: the real namespaces). Read-only; only the
/// stable fields, so the real host's own life (address lifetimes, counters)
/// does not show.
pub fn real_host_state() -> Vec<String> {
    fn run(argv: &[&str]) -> String {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn json(argv: &[&str]) -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&run(argv))
            .unwrap_or_else(|e| panic!("{argv:?} JSON: {e}"))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    fn pick(v: &serde_json::Value, keys: &[&str]) -> String {
        keys.iter().map(|k| format!("{k}={} ", v[*k])).collect()
    }
    let mut out = Vec::new();
    for l in json(&["ip", "-j", "link", "show"]) {
        out.push(format!("link {}", pick(&l, &["ifname", "flags", "mtu", "address"])));
    }
    for l in json(&["ip", "-j", "addr", "show"]) {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            out.push(format!(
                "addr {} {}",
                l["ifname"],
                pick(a, &["family", "local", "prefixlen"])
            ));
        }
    }
    for family in ["-4", "-6"] {
        for r in json(&["ip", "-j", family, "route", "show", "table", "all"]) {
            out.push(format!(
                "route {}",
                pick(&r, &["type", "dst", "gateway", "dev", "table"])
            ));
        }
    }
    for line in run(&["nft", "list", "ruleset"]).lines() {
        // Counters move with the real host's own traffic.
        let words: Vec<&str> = line.split_whitespace().collect();
        let masked: Vec<&str> = words
            .iter()
            .enumerate()
            .map(|(i, w)| match i.checked_sub(1).and_then(|p| words.get(p)) {
                Some(&"packets") | Some(&"bytes") => "N",
                _ => w,
            })
            .collect();
        out.push(format!("nft {}", masked.join(" ")));
    }
    for key in [
        "net/ipv4/ip_forward",
        "net/ipv4/conf/all/forwarding",
        "net/ipv6/conf/all/forwarding",
    ] {
        let v = std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap_or_else(|e| e.to_string());
        out.push(format!("sysctl {key}={}", v.trim()));
    }
    let mounts = std::fs::read_to_string("/proc/thread-self/mountinfo").expect("read mountinfo");
    for line in mounts.lines().filter(|l| l.contains("sandbox-fakehost-")) {
        out.push(format!("mount {line}"));
    }
    out
}

// ---- crash and fault tests (additions) ----------------------------------

impl FakeHost {
    /// `sandbox setup --root <root> --non-interactive --no-systemd <flags>`
    /// with extra environment variables (`SANDBOX_FAULT`, say).
    pub fn setup_env(&self, env: &[(&str, &str)], flags: &[&str]) -> Run {
        let mut args = vec!["setup", "--root", self.root_str(), "--non-interactive", "--no-systemd"];
        args.extend_from_slice(flags);
        self.sandbox_with(&[], env, &args)
    }

    /// `--disable` with extra environment variables and flags.
    pub fn disable_env(&self, env: &[(&str, &str)], flags: &[&str]) -> Run {
        let mut args = vec!["setup", "--root", self.root_str(), "--disable", "--non-interactive"];
        args.extend_from_slice(flags);
        self.sandbox_with(&[], env, &args)
    }

    /// `<root>/var/lib/sandbox/<name>/state.json`.
    pub fn state_file(&self, name: &str) -> PathBuf {
        self.root.join("var/lib/sandbox").join(name).join("state.json")
    }

    /// Run a shell snippet in the fake host (its net and mount namespace);
    /// returns its output whatever the exit code.
    pub fn sh(&self, script: &str) -> Output {
        self.cmd(Ns::Host, &["sh", "-ec", script], None)
    }

    /// A shell snippet in the fake host that must succeed; returns stdout.
    /// A user OpenClaw already ran as (as the fake host has `sandbox`),
    /// home `/home/<name>`.
    pub fn add_agent_user(&self, name: &str, id: u32) {
        let r = self.root_str();
        self.sh_ok(&format!(
            "echo '{name}:x:{id}:{id}::/home/{name}:/bin/bash' >> {r}/etc/passwd
             echo '{name}:x:{id}:' >> {r}/etc/group
             echo '{name}:!:19000::::::' >> {r}/etc/shadow
             echo '{name}:!::' >> {r}/etc/gshadow
             mkdir -p {r}/home/{name}/.openclaw
             printf '%s' '{json}' > {r}/home/{name}/.openclaw/openclaw.json
             chmod 0750 {r}/home/{name}; chmod 0700 {r}/home/{name}/.openclaw
             chmod 0600 {r}/home/{name}/.openclaw/openclaw.json
             chown -R {id}:{id} {r}/home/{name}",
            json = OPENCLAW_JSON
        ));
    }

    #[track_caller]
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "sh -ec {script:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Every file under `root` whose name says it is a temp file of an atomic
/// write (`.NAME.sandbox-tmp`): there must never be one after a run.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".sandbox-tmp"))
            {
                out.push(p.clone());
            }
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                walk(&p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

impl Snapshot {
    /// The snapshot with what differs between two equal setups masked:
    /// interface indexes and MAC addresses (a re-created veth gets new
    /// ones), the IPv6 link-local addresses derived from them, and the
    /// audit log (kept by design, it grows with every run).
    pub fn comparable(&self) -> Snapshot {
        const VOLATILE: &[&str] = &["ifindex", "link_index", "address", "broadcast", "link_netnsid"];
        let mut s = self.without_kept();
        // Files that hold secrets setup generates (gateway token, device
        // key) differ between two setups by design: their hashes are masked.
        const SECRET: &[&str] = &["openclaw.json ", "paired.json ", "/.env ", "device.key ", "state.json "];
        for lines in s.sections.values_mut() {
            for line in lines.iter_mut() {
                if SECRET.iter().any(|n| line.contains(n)) {
                    if let Some(i) = line.find("sha256 ") {
                        let end = line[i + 7..].find(' ').map_or(line.len(), |j| i + 7 + j);
                        line.replace_range(i + 7..end, "<masked>");
                    }
                }
            }
        }
        if let Some(links) = s.sections.get_mut("links") {
            for line in links.iter_mut() {
                if let Ok(serde_json::Value::Object(mut o)) = serde_json::from_str::<serde_json::Value>(line) {
                    for k in VOLATILE {
                        if o.contains_key(*k) {
                            o.insert((*k).to_string(), "<masked>".into());
                        }
                    }
                    *line = serde_json::Value::Object(o).to_string();
                }
            }
        }
        for sec in ["addresses", "routes6"] {
            if let Some(lines) = s.sections.get_mut(sec) {
                for line in lines.iter_mut() {
                    if let Some(i) = line.find("fe80::") {
                        let end = line[i..].find('"').map_or(line.len(), |e| i + e);
                        line.replace_range(i..end, "fe80::<masked>");
                    }
                }
                lines.sort();
            }
        }
        s
    }
}
