//! `sandbox setup` against the real OpenClaw 2026.9.6 from npm (issue 11),
//! in a throwaway host: the sandbox user runs `openclaw setup --baseline`;
//! `sandbox setup --policy strict` completes; `openclaw config validate`
//! passes; the real gateway, started as the agent unit starts it, inside
//! the sandbox's namespace, answers `/health` on the sandbox IP from the
//! host; the sidecar's device key (DefenseClaw's format, made by setup) and
//! the token setup handed the sidecar connect without any approval step;
//! `--disable` puts `openclaw.json` back byte for byte, and a second cycle
//! works too.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::openclaw::{self, OpenClaw};
use common::*;

/// The sandbox user of the fake host (tests/common: uid/gid 990).
const UID: u32 = 990;
const PORT: u16 = 18789;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `KEY=value` from the sidecar's `.env`.
fn env_value(env: &str, key: &str) -> Option<String> {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

#[test]
fn setup_wires_the_real_openclaw_to_the_sidecar_and_disable_restores_its_config() {
    let Some(host) = FakeHost::new() else { return };
    let Some(oc) = OpenClaw::find() else { return };
    let home = host.root().join("home/sandbox");
    // What an operator has: OpenClaw set up for the sandbox user by itself.
    std::fs::remove_dir_all(home.join(".openclaw")).expect("drop the seeded config");
    oc.setup_baseline(&home, UID, UID);
    let config = home.join(".openclaw/openclaw.json");
    let baseline = std::fs::read(&config).expect("baseline config");
    let their_bak = std::fs::read(home.join(".openclaw/openclaw.json.bak")).ok();
    let agent_bin = oc.agent_bin.to_str().expect("utf8").to_string();
    let flags = ["--policy", "strict", "--agent-bin", &agent_bin];

    for cycle in 1..=2 {
        host.setup_ok(&flags);
        let valid = oc.config_validate(&home, UID, UID);
        assert!(
            valid.status.success(),
            "cycle {cycle}: the config setup wrote is invalid: {}",
            text(&valid)
        );
        let patched: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).expect("config")).expect("plain JSON");
        let token = patched["gateway"]["auth"]["token"]
            .as_str()
            .expect("a token")
            .to_string();
        let env = std::fs::read_to_string(host.root().join("var/lib/private/defenseclaw-sandbox/.env"))
            .expect("the sidecar's .env");
        assert_eq!(
            env_value(&env, "OPENCLAW_GATEWAY_TOKEN").as_deref(),
            Some(token.as_str()),
            "the sidecar holds the agent's token"
        );
        let sidecar_config =
            std::fs::read_to_string(host.root().join("var/lib/private/defenseclaw-sandbox/config.yaml"))
                .expect("the sidecar's config.yaml");
        assert!(sidecar_config.contains("api_bind: 10.200.0.1"), "{sidecar_config}");
        let key = host.root().join("var/lib/private/defenseclaw-sandbox/device.key");
        assert!(std::fs::read_to_string(&key)
            .expect("device key")
            .starts_with("-----BEGIN ED25519 PRIVATE KEY-----"));

        let gateway = host.in_ns(Ns::Host, || {
            oc.spawn_gateway(&host.sandbox_netns(), &home, UID, UID, PORT)
        });
        let checks = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            host.in_ns(Ns::Host, || {
                let body = openclaw::wait_health(SocketAddr::from((SANDBOX_IP, PORT)), Duration::from_secs(150));
                assert!(body.contains(r#""ok":true"#), "/health said {body}");
                if cycle == 1 {
                    // Pre-paired: imported at the gateway's first start.
                    oc.connect_paired(&format!("ws://{SANDBOX_IP}:{PORT}"), &key, &token)
                        .expect("the sidecar's device is accepted without approval");
                }
            })
        }));
        let log = openclaw::stop_gateway(gateway, PORT);
        if let Err(panic) = checks {
            eprintln!("cycle {cycle}: gateway output:\n{log}");
            std::panic::resume_unwind(panic);
        }
        // The gateway names the plugins it loaded when it starts listening.
        let listening = log.lines().find(|l| l.contains("plugins:")).unwrap_or_default();
        eprintln!("cycle {cycle}: {listening}");
        assert!(
            listening.contains("defenseclaw"),
            "cycle {cycle}: the guardrail plugin is not among the loaded plugins:\n{log}"
        );

        // OpenClaw imported devices/paired.json into its own pairing store
        // at the gateway's start (and archived the file): the device is
        // paired, so a re-run does not write it again, and --disable takes
        // it out of that store (as the sandbox user).
        let again = host.setup_ok(&flags);
        assert!(
            !again.stdout.contains("pre-paired"),
            "cycle {cycle}: the imported pairing was written again:\n{again}"
        );
        let archived: serde_json::Value = serde_json::from_slice(
            &std::fs::read(home.join(".openclaw/devices/paired.json.migrated")).expect("OpenClaw archived paired.json"),
        )
        .expect("JSON");
        let device = archived
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .expect("our device in the archive");
        let db = home.join(".openclaw/state/openclaw.sqlite");
        let paired = |id: &str| -> bool {
            let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("OpenClaw's state database");
            c.query_row(
                "SELECT count(*) FROM device_pairing_paired WHERE device_id = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .expect("query")
                > 0
        };
        assert!(
            paired(&device),
            "cycle {cycle}: OpenClaw imported the device into its store"
        );
        let gone = host.disable_ok();
        assert!(
            gone.stdout.contains("removed the sidecar's device") && gone.stdout.contains("pairing store"),
            "cycle {cycle}: --disable takes the device out of OpenClaw's store:\n{gone}"
        );
        assert!(!paired(&device), "cycle {cycle}: the device is no longer paired");
        assert_eq!(
            std::fs::read(&config).expect("config"),
            baseline,
            "cycle {cycle}: --disable restores openclaw.json byte for byte"
        );
        assert_eq!(
            std::fs::read(home.join(".openclaw/openclaw.json.bak")).ok(),
            their_bak,
            "cycle {cycle}: OpenClaw's own .bak is back"
        );
        assert!(
            !Path::new(&host.root().join("var/lib/private/defenseclaw-sandbox")).exists(),
            "cycle {cycle}: the sidecar's state directory setup made is gone"
        );
    }
}
