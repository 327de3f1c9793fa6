//! Root integration tests for the one host table all sandboxes share
//! (`inet sandbox_host`, issue 13): several sandboxes at once, each judged
//! by its own chains; removing one, in any order, leaves the others judged
//! exactly as before; the last one out leaves no table at all; the host's
//! own loopback traffic is never touched; and a record of the version with
//! one host table per sandbox is migrated.
//!
//! The sandboxes' own (namespace) tables are deleted before traffic is
//! judged, so what is seen is the host table's doing alone.

mod common;

use std::net::Ipv4Addr;

use common::*;

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
const GATEWAY_PORT: u16 = 18970;
const LOOPBACK_PORT: u16 = 7000;

/// One sandbox of several: distinct name, addresses and home.
struct Sandbox {
    name: &'static str,
    netns: &'static str,
    host_ip: Ipv4Addr,
    /// The resolver its policy lets it reach (None: strict, no DNS).
    dns: Option<Ipv4Addr>,
}

const A: Sandbox = Sandbox {
    name: "sandbox",
    netns: "sandbox0",
    host_ip: Ipv4Addr::new(10, 200, 0, 1),
    dns: Some(RESOLVER_A),
};
const B: Sandbox = Sandbox {
    name: "boxb",
    netns: "boxb0",
    host_ip: Ipv4Addr::new(10, 200, 1, 1),
    dns: None,
};
const C: Sandbox = Sandbox {
    name: "boxc",
    netns: "boxc0",
    host_ip: Ipv4Addr::new(10, 200, 2, 1),
    dns: Some(RESOLVER_B),
};

impl Sandbox {
    fn flags(&self) -> Vec<String> {
        let o = self.host_ip.octets();
        let sandbox_ip = Ipv4Addr::new(o[0], o[1], o[2], 2);
        let mut v = vec![
            "--name".to_string(),
            self.name.into(),
            "--host-ip".into(),
            self.host_ip.to_string(),
            "--sandbox-ip".into(),
            sandbox_ip.to_string(),
            "--sandbox-home".into(),
            format!("/home/{}", self.name),
        ];
        match self.dns {
            Some(r) => v.extend(["--policy".into(), DNS_ONLY.into(), "--dns".into(), r.to_string()]),
            None => v.extend(["--policy".into(), "strict".into()]),
        }
        v
    }

    fn ns(&self) -> Ns {
        Ns::Netns(self.netns)
    }

    fn setup(&self, host: &FakeHost) -> Run {
        let flags = self.flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        host.setup_ok(&flags)
    }

    fn disable(&self, host: &FakeHost) -> Run {
        let run = host.sandbox(&[
            "setup",
            "--root",
            host.root_str(),
            "--disable",
            "--non-interactive",
            "--name",
            self.name,
        ]);
        assert_eq!(run.code, 0, "--disable {} failed:\n{run}", self.name);
        run
    }

    /// Drop the sandbox's own table: from here on only the host judges.
    fn drop_own_table(&self, host: &FakeHost) {
        host.nft(
            self.ns(),
            &["delete", "table", "inet", &format!("sandbox_{}", self.name)],
        );
    }

    /// Its traffic, judged by its host chains alone: its sidecar on its
    /// host IP and nothing else on the host (not another sandbox's host
    /// IP), its resolver forwarded and no other.
    #[track_caller]
    fn assert_judged(&self, host: &FakeHost, others: &[&Sandbox]) {
        let ns = self.ns();
        host.tcp(ns, (self.host_ip, GATEWAY_PORT)).assert_connected();
        host.tcp(ns, (self.host_ip, 2222)).assert_refused_promptly();
        host.tcp(ns, (UPLINK_IP, GATEWAY_PORT)).assert_refused_promptly();
        for o in others {
            host.tcp(ns, (o.host_ip, GATEWAY_PORT)).assert_refused_promptly();
        }
        for r in [RESOLVER_A, RESOLVER_B] {
            if self.dns == Some(r) {
                host.udp(ns, (r, 53)).assert_connected().assert_seen_from(UPLINK_IP);
            } else {
                host.udp(ns, (r, 53)).assert_refused_promptly();
            }
        }
        host.tcp(ns, (WEB, 80)).assert_refused_promptly();
    }
}

/// The sandbox user, with OpenClaw run once in its home (as setup
/// requires, and as the fake host has it for `sandbox`).
fn seed_user(host: &FakeHost, name: &str, uid: u32) {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let root = host.root();
    let append = |rel: &str, line: String| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join(rel))
            .unwrap_or_else(|e| panic!("open {rel}: {e}"));
        f.write_all(line.as_bytes()).expect("append");
    };
    append(
        "etc/passwd",
        format!("{name}:x:{uid}:{uid}:OpenClaw sandbox:/home/{name}:/bin/bash\n"),
    );
    append("etc/group", format!("{name}:x:{uid}:\n"));
    append("etc/shadow", format!("{name}:!:19000::::::\n"));
    append("etc/gshadow", format!("{name}:!::\n"));
    let home = root.join("home").join(name);
    std::fs::create_dir_all(home.join(".openclaw")).expect("mkdir home");
    std::fs::write(home.join(".openclaw/openclaw.json"), OPENCLAW_JSON).expect("openclaw.json");
    for p in [
        home.clone(),
        home.join(".openclaw"),
        home.join(".openclaw/openclaw.json"),
    ] {
        std::os::unix::fs::chown(&p, Some(uid), Some(uid)).expect("chown");
    }
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    std::fs::set_permissions(home.join(".openclaw"), std::fs::Permissions::from_mode(0o700)).expect("chmod");
}

/// The host's network (links, addresses, routes, rules, ruleset,
/// sysctls, mounts: `/run/netns` is the host record's, restored by the
/// last sandbox whichever goes last) as before. (The homes of the other
/// sandboxes keep their policy data and identity by design, as
/// `sandbox`'s does.)
#[track_caller]
fn assert_network_restored(before: &Snapshot, after: &Snapshot, context: &str) {
    for sec in [
        "links",
        "addresses",
        "routes4",
        "routes6",
        "ip rules",
        "nft",
        "sysctl",
        "mounts",
    ] {
        assert_eq!(
            before.section(sec),
            after.section(sec),
            "{context}: {sec} changed:\n{}",
            before.diff(after)
        );
    }
}

/// A host that does not forward (the sandboxes turn it on; the host
/// record keeps it on until the last of them goes, whatever the order),
/// with the sidecar ports, a port nobody may reach and a loopback service.
fn forwarding_host() -> Option<FakeHost> {
    let host = FakeHost::new()?;
    host.set_sysctl(Ns::Host, "net/ipv4/ip_forward", "0");
    for port in [GATEWAY_PORT, 4000, 2222] {
        host.listen_tcp(Ns::Host, (ANY, port).into());
    }
    host.listen_tcp(Ns::Host, (Ipv4Addr::LOCALHOST, LOOPBACK_PORT).into());
    seed_user(&host, B.name, 991);
    seed_user(&host, C.name, 992);
    Some(host)
}

#[track_caller]
fn assert_loopback_untouched(host: &FakeHost) {
    host.tcp(Ns::Host, (Ipv4Addr::LOCALHOST, LOOPBACK_PORT))
        .assert_connected();
}

fn has_table(host: &FakeHost, table: &str) -> bool {
    host.nft(Ns::Host, &["list", "tables"])
        .lines()
        .any(|l| l.trim() == format!("table inet {table}"))
}

/// Every base chain holds dispatch rules only, one per map, whatever
/// the number of sandboxes.
#[track_caller]
fn assert_base_is_dispatch_only(host: &FakeHost) {
    for (chain, lookups) in [("input", 1), ("forward", 2), ("postrouting", 1)] {
        let text = host.nft(Ns::Host, &["list", "chain", "inet", HOST_TABLE, chain]);
        let rules: Vec<&str> = text.lines().map(str::trim).filter(|l| l.contains("comment")).collect();
        assert_eq!(rules.len(), lookups, "{text}");
        assert!(rules.iter().all(|r| r.contains(" vmap @")), "{text}");
        assert!(text.contains("policy accept;"), "{text}");
    }
}

#[test]
fn three_sandboxes_share_one_table_and_leave_in_any_order() {
    let Some(host) = forwarding_host() else { return };
    let before = host.snapshot();
    assert_loopback_untouched(&host);
    for s in [&A, &B, &C] {
        let run = s.setup(&host);
        assert!(run.stdout.contains(&format!("host chains {}_input", s.name)), "{run}");
        assert_loopback_untouched(&host);
    }
    let tables = host.nft(Ns::Host, &["list", "tables"]);
    assert_eq!(
        tables.lines().filter(|l| l.contains("sandbox")).collect::<Vec<_>>(),
        vec![format!("table inet {HOST_TABLE}")],
        "one host table, whatever the number of sandboxes:\n{tables}"
    );
    assert_base_is_dispatch_only(&host);
    for s in [&A, &B, &C] {
        s.drop_own_table(&host);
    }
    A.assert_judged(&host, &[&B, &C]);
    B.assert_judged(&host, &[&A, &C]);
    C.assert_judged(&host, &[&A, &B]);

    // The middle one first: the others are judged as before.
    let run = B.disable(&host);
    assert!(run.stdout.contains("removed boxb's chains"), "{run}");
    assert!(!run.stdout.contains("deleted host table inet sandbox_host"), "{run}");
    assert!(!host
        .nft(Ns::Host, &["list", "table", "inet", HOST_TABLE])
        .contains("boxb"));
    A.assert_judged(&host, &[&C]);
    C.assert_judged(&host, &[&A]);
    assert_loopback_untouched(&host);
    assert_base_is_dispatch_only(&host);

    // Then the first made.
    A.disable(&host);
    C.assert_judged(&host, &[]);
    assert_loopback_untouched(&host);

    // The last one out takes the table with it.
    let run = C.disable(&host);
    assert!(
        run.stdout
            .contains("deleted host table inet sandbox_host (no sandbox left in it)"),
        "{run}"
    );
    assert!(!has_table(&host, HOST_TABLE));
    assert_loopback_untouched(&host);
    assert_network_restored(
        &before,
        &host.snapshot(),
        "three sandboxes, removed middle, first, last",
    );
}

#[test]
fn two_sandboxes_leave_newest_first_and_each_rerun_changes_nothing() {
    let Some(host) = forwarding_host() else { return };
    let before = host.snapshot();
    A.setup(&host);
    C.setup(&host);
    // Adding C re-ensured the shared base: A is still in place, as is C.
    for s in [&A, &C] {
        let again = s.setup(&host);
        assert!(again.stdout.contains("nothing changed"), "{again}");
        let status = host.sandbox(&["status", "--root", host.root_str(), "--name", s.name]);
        assert!(status.stdout.contains("host refusals"), "{status}");
    }
    A.drop_own_table(&host);
    C.drop_own_table(&host);
    A.assert_judged(&host, &[&C]);
    C.assert_judged(&host, &[&A]);
    // C's refusals are C's: A's sets counted nothing of them.
    let a_sets = host.nft(Ns::Host, &["list", "set", "inet", HOST_TABLE, "sandbox_denied4"]);
    let c_sets = host.nft(Ns::Host, &["list", "set", "inet", HOST_TABLE, "boxc_denied4"]);
    assert!(c_sets.contains("203.0.113.53 . udp . 53"), "{c_sets}");
    assert!(a_sets.contains("203.0.113.54 . udp . 53"), "{a_sets}");
    assert!(!a_sets.contains("203.0.113.53"), "{a_sets}");
    assert!(!c_sets.contains("203.0.113.54"), "{c_sets}");

    C.disable(&host);
    A.assert_judged(&host, &[]);
    assert!(has_table(&host, HOST_TABLE));
    A.disable(&host);
    assert!(!has_table(&host, HOST_TABLE));
    assert_network_restored(&before, &host.snapshot(), "two sandboxes, removed newest first");
}

/// What the version with one host table per sandbox left: its table
/// `inet sandbox_<name>` on the host (the hooks and rules it had) and a
/// firewall record that names it and nothing else.
fn make_old_style(host: &FakeHost) {
    host.nft(Ns::Host, &["delete", "table", "inet", HOST_TABLE]);
    let old = "table inet sandbox_sandbox {
    chain gen_0123456789abcdef {
    }
    set denied4 {
        type ipv4_addr . inet_proto . inet_service
        size 4096
        flags timeout
        counter
        timeout 1d
    }
    chain input {
        type filter hook input priority 0; policy accept;
        iifname \"sandbox0\" ip saddr 10.200.0.2 ip daddr 10.200.0.1 tcp dport { 18970, 4000 } accept comment \"the sidecar on the host IP\"
        iifname \"sandbox0\" counter reject with icmpx admin-prohibited comment \"no other host service for the sandbox\"
    }
    chain forward {
        type filter hook forward priority 0; policy accept;
        iifname \"sandbox0\" ip saddr 10.200.0.2 ip daddr 203.0.113.53 udp dport 53 accept comment \"DNS to the listed resolvers\"
        iifname \"sandbox0\" counter reject with icmpx admin-prohibited comment \"nothing else leaves the sandbox\"
    }
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        ip saddr 10.200.0.2 oifname != \"sandbox0\" masquerade comment \"allowed traffic leaves with the host's address\"
    }
}
";
    let out = host.cmd(Ns::Host, &["nft", "-f", "-"], Some(old));
    assert!(out.status.success(), "{out:?}");
    let path = host.state_file("sandbox");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read the record")).expect("record JSON");
    let fw = state["steps"]
        .as_array_mut()
        .expect("steps")
        .iter_mut()
        .find(|s| s["id"] == "firewall")
        .expect("the firewall step");
    let netns = fw["data"]["netns"].clone();
    fw["data"] = serde_json::json!({"netns": netns, "table": "sandbox_sandbox", "host": true});
    std::fs::write(&path, serde_json::to_vec_pretty(&state).expect("encode")).expect("write the record");
}

#[test]
fn a_record_of_the_old_per_sandbox_table_is_migrated() {
    let Some(host) = forwarding_host() else { return };
    let before = host.snapshot();
    let flags = A.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();

    // setup moves it into the shared table, in one transaction.
    host.setup_ok(&flags);
    make_old_style(&host);
    assert!(has_table(&host, TABLE) && !has_table(&host, HOST_TABLE));
    let plan = host.sandbox(&["plan", "--root", host.root_str(), "--name", "sandbox"]);
    assert!(
        plan.stdout
            .contains("delete host table inet sandbox_sandbox (an older version's"),
        "{plan}"
    );
    let run = host.setup_ok(&flags);
    assert!(
        run.stdout
            .contains("deleted host table inet sandbox_sandbox (an older version's; moved into sandbox_host)"),
        "{run}"
    );
    assert!(!has_table(&host, TABLE) && has_table(&host, HOST_TABLE), "{run}");
    assert!(host.setup_ok(&flags).stdout.contains("nothing changed"));
    A.drop_own_table(&host);
    A.assert_judged(&host, &[]);
    A.disable(&host);
    before.assert_restored(&host.snapshot(), "old record, migrated by setup, then --disable");

    // --disable from the old record deletes the old table.
    host.setup_ok(&flags);
    make_old_style(&host);
    let run = A.disable(&host);
    assert!(run.stdout.contains("deleted host table inet sandbox_sandbox"), "{run}");
    before.assert_restored(&host.snapshot(), "old record, then --disable");

    // A lost record: the sweep finds the old table (and our part of the
    // shared one) by name.
    host.setup_ok(&flags);
    make_old_style(&host);
    std::fs::remove_file(host.state_file("sandbox")).expect("remove the record");
    let run = A.disable(&host);
    assert!(run.stdout.contains("deleted host table inet sandbox_sandbox"), "{run}");
    assert!(!has_table(&host, TABLE), "{run}");
}

/// The record lost while others are up: the sweep takes this sandbox's
/// part out of the shared table and nothing of the others'.
#[test]
fn a_sweep_takes_only_its_own_part_of_the_shared_table() {
    let Some(host) = forwarding_host() else { return };
    A.setup(&host);
    C.setup(&host);
    std::fs::remove_file(host.state_file("boxc")).expect("remove the record");
    let run = C.disable(&host);
    assert!(run.stdout.contains("removed boxc's chains"), "{run}");
    let left = host.nft(Ns::Host, &["list", "table", "inet", HOST_TABLE]);
    assert!(!left.contains("boxc"), "{left}");
    assert!(left.contains("sandbox_input"), "{left}");
    A.drop_own_table(&host);
    A.assert_judged(&host, &[]);
    A.disable(&host);
    assert!(!has_table(&host, HOST_TABLE));
}
