//! What sandboxes share belongs to the host record (issue 13): the first
//! holder applies it, the last restores it, whatever order they go in and
//! however many are made at once. Addresses and homes differ per name
//! without a flag. Records of the previous version are taken over.

mod common;

use common::*;
use serde_json::Value;

const FLAGS: &[&str] = &["--policy", "default", "--dns", DNS_A];

fn setup_named(host: &FakeHost, name: &str) -> Run {
    let mut flags = vec!["--name", name];
    flags.extend_from_slice(FLAGS);
    host.setup(&flags)
}

fn disable_named(host: &FakeHost, name: &str) {
    let r = host.disable_env(&[], &["--name", name]);
    assert_eq!(r.code, 0, "--disable {name}:\n{r}");
}

fn host_record(host: &FakeHost) -> Option<Value> {
    let p = host.root().join("var/lib/sandbox/host.json");
    let text = std::fs::read_to_string(p).ok()?;
    serde_json::from_str(&text).ok()
}

fn leased_subnets(host: &FakeHost) -> Vec<String> {
    let rec = host_record(host).expect("a host record while sandboxes exist");
    let mut v: Vec<String> = rec["leases"]
        .as_object()
        .expect("leases")
        .values()
        .map(|l| l["subnet"].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

/// Data kept by design (README: what `--disable` keeps) is removed, so the
/// comparison with the host before is exact for everything else.
fn drop_kept(host: &FakeHost, names: &[String]) {
    for name in names {
        host.sh_ok(&format!(
            "rm -rf {r}/home/{name}/.defenseclaw {r}/home/{name}/.env",
            r = host.root_str()
        ));
    }
}

fn names(prefix: &str, n: u32) -> Vec<(String, u32)> {
    (1..=n).map(|i| (format!("{prefix}{i}"), 980 + i)).collect()
}

/// A simple shuffle from the clock, printed so a failure can be replayed.
fn shuffled(mut v: Vec<String>) -> Vec<String> {
    let mut seed = std::env::var("HOST_SCOPE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.subsec_nanos() as u64)
        });
    eprintln!("order seed (HOST_SCOPE_SEED): {seed}");
    for i in (1..v.len()).rev() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        v.swap(i, (seed >> 33) as usize % (i + 1));
    }
    v
}

#[test]
fn sandboxes_go_in_any_order_and_the_last_restores_the_host() {
    let Some(host) = FakeHost::new() else { return };
    let users = names("s", 4);
    for (n, id) in &users {
        host.add_agent_user(n, *id);
    }
    host.set_sysctl(Ns::Host, "net/ipv4/ip_forward", "0");
    let before = host.snapshot();
    for (n, _) in &users {
        let r = setup_named(&host, n);
        assert_eq!(r.code, 0, "setup {n}:\n{r}");
    }
    // No flag given: each got its own /30 and its own home.
    let subnets = leased_subnets(&host);
    assert_eq!(
        subnets,
        ["10.200.0.0/30", "10.200.0.12/30", "10.200.0.4/30", "10.200.0.8/30"],
        "one /30 each"
    );
    for (n, _) in &users {
        let unit_home = host.root().join(format!("home/{n}/run-sandbox.sh"));
        assert!(unit_home.is_file(), "{n}'s scripts live in /home/{n}");
    }
    // The first-made goes first: forwarding stays on for the others.
    let first = users[0].0.clone();
    disable_named(&host, &first);
    assert_eq!(
        host.sysctl(Ns::Host, "net/ipv4/ip_forward"),
        "1",
        "others still forward"
    );
    let rest = shuffled(users[1..].iter().map(|(n, _)| n.clone()).collect());
    for n in &rest {
        disable_named(&host, n);
    }
    assert_eq!(
        host.sysctl(Ns::Host, "net/ipv4/ip_forward"),
        "0",
        "the last one restored it"
    );
    assert!(
        host_record(&host).is_none(),
        "the host record goes with the last sandbox"
    );
    let all: Vec<String> = users.iter().map(|(n, _)| n.clone()).collect();
    drop_kept(&host, &all);
    before.without_kept().assert_same(
        &host.snapshot().without_kept(),
        &format!("after disabling {first} then {rest:?}"),
    );
}

#[test]
fn sandboxes_made_at_once_get_their_own_subnets_and_all_go() {
    let Some(host) = FakeHost::new() else { return };
    let users = names("p", 6);
    for (n, id) in &users {
        host.add_agent_user(n, *id);
    }
    host.set_sysctl(Ns::Host, "net/ipv4/ip_forward", "0");
    let before = host.snapshot();
    let root = host.root_str().to_string();
    let run_all = |disable: bool| -> Vec<(String, i32, String)> {
        let argvs: Vec<(String, Vec<String>)> = users
            .iter()
            .map(|(n, _)| {
                let mut a = vec![
                    "setup",
                    "--root",
                    &root,
                    "--non-interactive",
                    "--no-systemd",
                    "--name",
                    n,
                ];
                if disable {
                    a.push("--disable");
                } else {
                    a.extend_from_slice(FLAGS);
                }
                (n.clone(), a.into_iter().map(String::from).collect())
            })
            .collect();
        host.in_ns(Ns::Host, move || {
            let children: Vec<_> = argvs
                .into_iter()
                .map(|(n, a)| {
                    let c = std::process::Command::new(BIN)
                        .args(&a)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .expect("spawn sandbox");
                    (n, c)
                })
                .collect();
            children
                .into_iter()
                .map(|(n, c)| {
                    let o = c.wait_with_output().expect("wait");
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    );
                    (n, o.status.code().unwrap_or(-1), text)
                })
                .collect()
        })
    };
    for (n, code, out) in run_all(false) {
        assert_eq!(code, 0, "setup {n}:\n{out}");
    }
    let subnets = leased_subnets(&host);
    let mut distinct = subnets.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "six different subnets: {subnets:?}");
    for (n, code, out) in run_all(true) {
        assert_eq!(code, 0, "--disable {n}:\n{out}");
    }
    assert_eq!(host.sysctl(Ns::Host, "net/ipv4/ip_forward"), "0");
    let all: Vec<String> = users.iter().map(|(n, _)| n.clone()).collect();
    drop_kept(&host, &all);
    before.without_kept().assert_same(
        &host.snapshot().without_kept(),
        "six made at once, then all disabled at once",
    );
}

#[test]
fn a_fixed_subnet_another_sandbox_holds_is_refused_and_nothing_changes() {
    let Some(host) = FakeHost::new() else { return };
    host.add_agent_user("fa", 971);
    host.add_agent_user("fb", 972);
    let r = host.setup(&["--name", "fa", "--policy", "strict"]);
    assert_eq!(r.code, 0, "{r}");
    let between = host.snapshot();
    let r = host.setup(&["--name", "fb", "--policy", "strict", "--subnet", "10.200.0.0/29"]);
    assert_eq!(r.code, 3, "refused before any change: {r}");
    assert!(
        r.stderr.contains("sandbox fa") && r.stderr.contains("--subnet auto"),
        "{r}"
    );
    between
        .without_audit_trail()
        .assert_same(&host.snapshot().without_audit_trail(), "refused clash");
    disable_named(&host, "fa");
}

/// Turn what this version wrote into what the previous one did: no host
/// record; each sandbox's own record carries the host values it found
/// (the first-made the host's own, the later ones "1"), the namespace
/// directory's changes, /etc/netns and /var/lib/private in the
/// first-made's records.
fn downgrade(host: &FakeHost, first: &str, later: &str) {
    let rec = host_record(host).expect("host record");
    let res = &rec["resources"];
    for (name, is_first) in [(first, true), (later, false)] {
        let path = host.state_file(name);
        let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("record")).expect("json");
        for step in state["steps"].as_array_mut().expect("steps") {
            let id = step["id"].as_str().unwrap_or_default().to_string();
            let data = &mut step["data"];
            match id.as_str() {
                "forwarding" | "nflog" => {
                    let mut old = res[&id]["original"].clone();
                    if !is_first {
                        for pair in old.as_array_mut().into_iter().flatten() {
                            pair[1] = Value::from("1");
                        }
                    }
                    data["old"] = old;
                }
                "netns" if is_first => {
                    data["dir_changes"] = res["netns-dir"]["original"]["dir_changes"].clone();
                    data["created_dirs"] = res["netns-dir"]["original"]["created_dirs"].clone();
                }
                "sidecar" if is_first => {
                    let mut dirs = res["var-lib-private"]["original"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    dirs.extend(data["created_dirs"].as_array().cloned().unwrap_or_default());
                    data["created_dirs"] = Value::from(dirs);
                }
                "dns" if is_first => {
                    let mut dirs = res["etc-netns"]["original"].as_array().cloned().unwrap_or_default();
                    dirs.extend(data["created_dirs"].as_array().cloned().unwrap_or_default());
                    data["created_dirs"] = Value::from(dirs);
                }
                _ => {}
            }
        }
        if let Some(spec) = state["spec"].as_object_mut() {
            spec.remove("addressing");
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&state).expect("encode")).expect("write record");
    }
    for f in ["host.json", "host.lock"] {
        std::fs::remove_file(host.root().join("var/lib/sandbox").join(f)).expect("remove host record");
    }
}

#[test]
fn records_of_the_previous_version_are_taken_over() {
    let Some(host) = FakeHost::new() else { return };
    host.add_agent_user("m1", 961);
    host.add_agent_user("m2", 962);
    host.set_sysctl(Ns::Host, "net/ipv4/ip_forward", "0");
    let before = host.snapshot();
    assert_eq!(setup_named(&host, "m1").code, 0);
    assert_eq!(setup_named(&host, "m2").code, 0);
    downgrade(&host, "m1", "m2");
    // The previous version would set ip_forward back to 0 here, under m2.
    disable_named(&host, "m1");
    assert_eq!(host.sysctl(Ns::Host, "net/ipv4/ip_forward"), "1", "m2 still forwards");
    let rec = host_record(&host).expect("made on first use");
    assert_eq!(
        rec["resources"]["forwarding"]["holders"],
        serde_json::json!(["m2"]),
        "m2 was adopted as a holder"
    );
    assert!(rec["leases"]["m2"].is_object(), "m2's addresses are its lease");
    // A re-run of the survivor changes nothing.
    let again = setup_named(&host, "m2");
    assert!(again.stdout.contains("nothing changed"), "{again}");
    disable_named(&host, "m2");
    assert_eq!(
        host.sysctl(Ns::Host, "net/ipv4/ip_forward"),
        "0",
        "the host's own value is back"
    );
    drop_kept(&host, &["m1".into(), "m2".into()]);
    before
        .without_kept()
        .assert_same(&host.snapshot().without_kept(), "old records, any order");
}
