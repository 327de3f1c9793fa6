//! Root integration tests for the netns and netlink adapters.
//!
//! Every test body runs on its own thread inside a fresh network + mount
//! namespace with `/` made private, so the real host's links, routes and
//! mounts are never touched and nothing leaks between tests running in
//! parallel. The thread's namespaces die with it.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox::sys::netlink::{Addr, Netlink, Route4};
use sandbox::sys::netns::{self, DirChanges};

const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const PREFIX: u8 = 30;

/// Mount points as seen by the calling thread (its own mount namespace).
fn is_mount_point(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/thread-self/mountinfo")
        .unwrap_or_else(|e| panic!("reading /proc/thread-self/mountinfo: {e}"));
    let wanted = path.to_string_lossy();
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| mount_point == wanted)
}

fn thread_netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .unwrap_or_else(|e| panic!("stat /proc/thread-self/ns/net: {e}"))
        .ino()
}

/// Not existing yet, so `create` records that it created the directory.
fn netns_dir(tmp: &Path) -> PathBuf {
    tmp.join("netns")
}

#[test]
fn netns_lifecycle_and_veth_end_to_end() {
    common::in_throwaway_host(|tmp| {
        let dir = netns_dir(tmp);
        let ns_path = dir.join("sbx0");

        // create, twice
        assert!(!netns::exists(&dir, "sbx0"));
        let changes = netns::create(&dir, "sbx0").expect("create netns");
        assert_eq!(
            changes,
            DirChanges {
                created_dir: true,
                made_mountpoint: true
            }
        );
        assert!(netns::exists(&dir, "sbx0"));
        assert!(is_mount_point(&dir), "netns dir should be a mount point");
        assert!(is_mount_point(&ns_path), "netns file should be a mount point");
        let again = netns::create(&dir, "sbx0").expect("create netns again");
        assert_eq!(again, DirChanges::default(), "second create changes nothing");
        assert!(netns::exists(&dir, "sbx0"));

        let host = Netlink::host().expect("host netlink");
        let inner = Netlink::in_netns(&ns_path).expect("netlink in netns");

        // lo is up inside
        let lo = inner.link("lo").expect("get lo").expect("lo exists in netns");
        assert!(lo.up, "lo should be up inside the new netns: {lo:?}");

        // veth with its peer created directly inside the netns
        host.create_veth("sbx0", "eth0", &ns_path, "sandbox:test")
            .expect("create veth");
        let host_end = host.link("sbx0").expect("get host end").expect("host end exists");
        assert_eq!(host_end.kind.as_deref(), Some("veth"));
        assert_eq!(host_end.alias.as_deref(), Some("sandbox:test"));
        let peer = inner.link("eth0").expect("get peer").expect("peer exists in netns");
        assert_eq!(peer.kind.as_deref(), Some("veth"));
        assert!(
            host.link("eth0").expect("get eth0 on host").is_none(),
            "peer must not exist on the host side"
        );
        assert!(
            inner.link("sbx0").expect("get sbx0 in netns").is_none(),
            "host end must not exist inside the netns"
        );
        let host_links = host.links().expect("list host links");
        assert!(host_links.iter().any(|l| l.name == "sbx0"));
        assert!(host_links.iter().all(|l| l.name != "eth0"));

        // addresses (adding twice is fine), links up
        for _ in 0..2 {
            host.add_address("sbx0", IpAddr::V4(HOST_IP), PREFIX)
                .expect("add host address");
            inner
                .add_address("eth0", IpAddr::V4(PEER_IP), PREFIX)
                .expect("add peer address");
        }
        host.set_up("sbx0").expect("host end up");
        inner.set_up("eth0").expect("peer up");
        assert!(host.link("sbx0").expect("get").expect("exists").up);
        assert!(inner.link("eth0").expect("get").expect("exists").up);
        assert!(host.addresses().expect("host addresses").contains(&Addr {
            index: host_end.index,
            addr: IpAddr::V4(HOST_IP),
            prefix: PREFIX
        }));
        assert!(inner.addresses().expect("netns addresses").contains(&Addr {
            index: peer.index,
            addr: IpAddr::V4(PEER_IP),
            prefix: PREFIX
        }));

        // default route inside, twice (replace semantics)
        inner.replace_default_route(HOST_IP).expect("default route");
        inner.replace_default_route(HOST_IP).expect("default route again");
        let routes = inner.routes_v4().expect("routes in netns");
        let defaults: Vec<&Route4> = routes
            .iter()
            .filter(|r| r.table == 254 && r.dst.prefix_len() == 0)
            .collect();
        assert_eq!(
            defaults,
            vec![&Route4 {
                dst: "0.0.0.0/0".parse().expect("net"),
                gateway: Some(HOST_IP),
                oif: Some(peer.index),
                table: 254
            }],
            "all routes: {routes:?}"
        );

        // TCP from inside the netns to a listener on the host-side address
        let listener = TcpListener::bind((HOST_IP, 0)).expect("bind on host-side address");
        let port = listener.local_addr().expect("local addr").port();
        let seen_from = netns::run_in(&ns_path, move || {
            let mut stream = TcpStream::connect_timeout(&(HOST_IP, port).into(), Duration::from_secs(5))
                .map_err(|e| sandbox::Error::io("connect from netns", "tcp", e))?;
            stream
                .write_all(b"hi")
                .map_err(|e| sandbox::Error::io("write from netns", "tcp", e))?;
            stream
                .local_addr()
                .map_err(|e| sandbox::Error::io("local addr in netns", "tcp", e))
        })
        .expect("tcp connect from inside the netns");
        let (mut conn, peer_addr) = listener.accept().expect("accept");
        assert_eq!(peer_addr, seen_from);
        assert_eq!(peer_addr.ip(), IpAddr::V4(PEER_IP));
        let mut buf = [0u8; 2];
        conn.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"hi");

        // address removal is idempotent
        for _ in 0..2 {
            host.del_address("sbx0", IpAddr::V4(HOST_IP), PREFIX)
                .expect("del host address");
        }
        assert!(!host
            .addresses()
            .expect("host addresses")
            .iter()
            .any(|a| a.addr == IpAddr::V4(HOST_IP)));

        // deleting the host end takes the peer
        assert!(host.delete_link("sbx0").expect("delete veth"));
        assert!(host.link("sbx0").expect("get").is_none());
        assert!(inner.link("eth0").expect("get").is_none(), "peer went with it");
        assert!(!host.delete_link("sbx0").expect("delete veth again"));
        drop(inner);

        // netns and directory go away
        assert!(netns::delete(&dir, "sbx0").expect("delete netns"));
        assert!(!netns::exists(&dir, "sbx0"));
        assert!(!ns_path.exists());
        assert!(!netns::delete(&dir, "sbx0").expect("delete netns again"));
        netns::release_dir(&dir, changes).expect("release dir");
        assert!(!is_mount_point(&dir), "netns dir should no longer be a mount point");
        assert!(!dir.exists(), "netns dir we created should be gone");
    });
}

#[test]
fn release_dir_keeps_directory_in_use_and_existing_dir() {
    common::in_throwaway_host(|tmp| {
        // Pre-existing directory: only the mount point is ours.
        let dir = tmp.to_path_buf();
        let a = netns::create(&dir, "a").expect("create a");
        assert_eq!(
            a,
            DirChanges {
                created_dir: false,
                made_mountpoint: true
            }
        );
        let b = netns::create(&dir, "b").expect("create b");
        assert_eq!(b, DirChanges::default(), "dir already prepared");

        assert!(netns::delete(&dir, "a").expect("delete a"));
        netns::release_dir(&dir, a).expect("release with b still there");
        assert!(is_mount_point(&dir), "b still needs the shared mount");
        assert!(netns::exists(&dir, "b"));

        assert!(netns::delete(&dir, "b").expect("delete b"));
        netns::release_dir(&dir, a).expect("release");
        assert!(!is_mount_point(&dir));
        assert!(dir.is_dir(), "a directory we did not create stays");
    });
}

#[test]
fn delete_tolerates_leftover_plain_file_and_create_reuses_it() {
    common::in_throwaway_host(|tmp| {
        let dir = tmp.to_path_buf();
        std::fs::write(dir.join("stale"), b"").expect("write leftover");
        assert!(!netns::exists(&dir, "stale"), "a plain file is not a netns");
        assert!(netns::delete(&dir, "stale").expect("delete leftover"));
        assert!(!dir.join("stale").exists());

        std::fs::write(dir.join("stale"), b"").expect("write leftover");
        let changes = netns::create(&dir, "stale").expect("create over leftover");
        assert!(netns::exists(&dir, "stale"));
        assert!(netns::delete(&dir, "stale").expect("delete"));
        netns::release_dir(&dir, changes).expect("release");
        assert!(!is_mount_point(&dir));
    });
}

#[test]
fn bad_names_are_refused() {
    common::in_throwaway_host(|tmp| {
        let dir = netns_dir(tmp);
        for name in ["", ".", "..", "a/b"] {
            let err = netns::create(&dir, name).expect_err("bad name must be refused");
            assert!(err.to_string().contains("netns"), "{err}");
            assert!(!netns::exists(&dir, name));
        }
        assert!(!dir.exists(), "nothing was created");
    });
}

#[test]
fn errors_name_the_object() {
    common::in_throwaway_host(|_tmp| {
        let host = Netlink::host().expect("host netlink");
        assert!(host.link("nope0").expect("lookup").is_none());
        let err = host.set_up("nope0").expect_err("no such link");
        let text = err.to_string();
        assert!(text.contains("nope0"), "{text}");
        let err = host
            .add_address("nope0", IpAddr::V4(HOST_IP), PREFIX)
            .expect_err("no such link");
        assert!(err.to_string().contains("nope0"), "{err}");
        host.del_address("nope0", IpAddr::V4(HOST_IP), PREFIX)
            .expect("deleting from an absent link is fine");

        let missing = Path::new("/nonexistent/netns/x");
        let err = Netlink::in_netns(missing).expect_err("no such netns");
        assert!(err.to_string().contains("/nonexistent/netns/x"), "{err}");
    });
}

#[test]
fn run_in_really_runs_in_the_other_namespace() {
    common::in_throwaway_host(|tmp| {
        let dir = tmp.to_path_buf();
        let changes = netns::create(&dir, "other").expect("create netns");
        let ns_path = dir.join("other");

        let ours = thread_netns_inode();
        let target = std::fs::metadata(&ns_path).expect("stat netns file").ino();
        assert_ne!(ours, target, "the netns is a different namespace");
        let inside = netns::run_in(&ns_path, || Ok(thread_netns_inode())).expect("run_in");
        assert_eq!(inside, target);
        assert_eq!(thread_netns_inode(), ours, "caller's thread did not move");

        // A child process inherits the namespace of the thread that spawned it.
        let child_ns = netns::run_in(&ns_path, || {
            let out = std::process::Command::new("readlink")
                .arg("/proc/self/ns/net")
                .output()
                .map_err(|e| sandbox::Error::io("spawn", "readlink", e))?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .expect("run_in with child");
        assert_eq!(child_ns, format!("net:[{target}]"));

        assert!(netns::delete(&dir, "other").expect("delete"));
        netns::release_dir(&dir, changes).expect("release");
    });
}

/// The nfnetlink requests read what `nft` wrote and delete what it made,
/// in the thread's own namespace.
#[test]
fn nf_tables_over_netlink_reads_a_map_and_deletes_a_table() {
    use sandbox::sys::nfnl;
    common::in_throwaway_host(|_| {
        nfnl::probe().expect("the kernel answers nf_tables requests");
        assert_eq!(nfnl::set_keys("t_nl", "m").expect("list"), None, "no table yet");
        let rules = "table inet t_nl {
            chain a { }
            chain b { }
            map m { type ifname : verdict; elements = { \"veth-a0\" : jump a, \"b0\" : jump b } }
            chain input { type filter hook input priority 0; policy accept; iifname vmap @m; }
        }";
        let mut nft = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn nft");
        nft.stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("write rules");
        assert!(nft.wait().expect("wait nft").success(), "nft -f");
        let keys = nfnl::set_keys("t_nl", "m").expect("list").expect("the map is there");
        let mut names: Vec<&[u8]> = keys.iter().map(|k| nfnl::ifname_key(k)).collect();
        names.sort();
        assert_eq!(names, vec![&b"b0"[..], &b"veth-a0"[..]]);
        assert_eq!(nfnl::set_keys("t_nl", "nope").expect("list"), None, "no such map");
        nfnl::delete_table("t_nl").expect("delete");
        let listed = std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .expect("nft list tables");
        assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "", "the table is gone");
        let again = nfnl::delete_table("t_nl").expect_err("a missing table is an error");
        assert!(again.to_string().contains("t_nl"), "{again}");
    });
}
