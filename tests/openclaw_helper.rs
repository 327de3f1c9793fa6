//! The harness for the real OpenClaw (tests/common/openclaw.rs) against the
//! real OpenClaw 2026.9.6, without `sandbox`: what the issue-11 tests rely on
//! holds, independently of the code under test. In a fake host, a scratch
//! user absent from /etc/passwd (like the sandbox user of a `--root` tree)
//! runs `openclaw setup --baseline`; `config validate` passes, and fails on
//! an unknown root key; the gateway, configured as the openclaw step
//! configures it and started as the agent unit starts it in a namespace with
//! the sandbox IP, answers `/health` on that IP from the host; a device key
//! in DefenseClaw's format listed in `devices/paired.json` connects with the
//! shared token without any approval; an unlisted key and a wrong token are
//! refused.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::openclaw::{self, OpenClaw};
use common::*;

/// A uid/gid no account on the host has.
const UID: u32 = 64_123;
const PORT: u16 = 18789;
const TOKEN: &str = "helper-test-token-5f1c0e9b";

fn chown(path: &Path) {
    nix::unistd::chown(path, Some(UID.into()), Some(UID.into()))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn write_json(path: &Path, v: &serde_json::Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap() + "\n")
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chown(path);
}

fn stdout(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_real_openclaw_accepts_a_pre_paired_defenseclaw_key_on_the_sandbox_ip() {
    let Some(host) = FakeHost::new() else { return };
    let Some(oc) = OpenClaw::find() else { return };
    let home = host.root().join("home/agent");
    std::fs::create_dir_all(&home).expect("make the home");
    chown(&home);

    oc.setup_baseline(&home, UID, UID);
    let valid = oc.config_validate(&home, UID, UID);
    assert!(valid.status.success(), "baseline config invalid: {}", stdout(&valid));
    assert!(stdout(&valid).contains(r#""valid":true"#), "{}", stdout(&valid));

    let config_path = home.join(".openclaw/openclaw.json");
    let baseline: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).expect("baseline is plain JSON");
    assert_eq!(baseline["gateway"]["mode"], "local", "{baseline}");

    let mut unknown = baseline.clone();
    unknown["guardrail"] = serde_json::json!({ "url": "http://10.200.0.1:4000" });
    write_json(&config_path, &unknown);
    let invalid = oc.config_validate(&home, UID, UID);
    assert!(
        !invalid.status.success(),
        "an unknown root key passed: {}",
        stdout(&invalid)
    );
    assert!(
        stdout(&invalid).contains(r#"Unrecognized key: \"guardrail\""#),
        "{}",
        stdout(&invalid)
    );

    let mut config = baseline.clone();
    config["gateway"] = serde_json::json!({
        "mode": "local", "port": PORT, "bind": "custom", "customBindHost": SANDBOX_IP.to_string(),
        "auth": { "mode": "token", "token": TOKEN },
    });
    write_json(&config_path, &config);
    let valid = oc.config_validate(&home, UID, UID);
    assert!(valid.status.success(), "gateway config invalid: {}", stdout(&valid));

    let keys = tempfile::tempdir().expect("key dir");
    let paired_key = keys.path().join("device.key");
    let stranger_key = keys.path().join("stranger.key");
    oc.keygen(&paired_key);
    oc.keygen(&stranger_key);
    let (device_id, entry) = oc.paired_entry(&paired_key);
    std::fs::create_dir_all(home.join(".openclaw/devices")).unwrap();
    chown(&home.join(".openclaw/devices"));
    write_json(
        &home.join(".openclaw/devices/paired.json"),
        &serde_json::json!({ device_id: entry }),
    );

    // A namespace with the sandbox IP, tied to the fake host by a veth.
    let ns = host.root().join("agent-netns");
    host.sh_ok(&format!(
        "touch {ns}; unshare --net={ns} true; ip link add oct0 type veth peer name eth0 netns {ns}; \
         ip addr add {HOST_IP}/24 dev oct0; ip link set oct0 up; \
         nsenter --net={ns} sh -ec 'ip link set lo up; ip addr add {SANDBOX_IP}/24 dev eth0; ip link set eth0 up'",
        ns = ns.display()
    ));

    let gateway = host.in_ns(Ns::Host, || oc.spawn_gateway(&ns, &home, UID, UID, PORT));
    let checks = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        host.in_ns(Ns::Host, || {
            let addr = SocketAddr::from((SANDBOX_IP, PORT));
            let body = openclaw::wait_health(addr, Duration::from_secs(120));
            assert!(body.contains(r#""ok":true"#), "/health said {body}");
            let url = format!("ws://{SANDBOX_IP}:{PORT}");
            oc.connect_paired(&url, &paired_key, TOKEN)
                .expect("the pre-paired key is accepted");
            let stranger = oc
                .connect_paired(&url, &stranger_key, TOKEN)
                .expect_err("an unpaired key is refused");
            assert!(stranger.contains("not-paired"), "{stranger}");
            let wrong = oc
                .connect_paired(&url, &paired_key, "not-the-token")
                .expect_err("a wrong token is refused");
            assert!(wrong.contains("AUTH_TOKEN_MISMATCH"), "{wrong}");
        })
    }));
    let log = openclaw::stop_gateway(gateway, PORT);
    if let Err(panic) = checks {
        eprintln!("gateway output:\n{log}");
        std::panic::resume_unwind(panic);
    }
}
