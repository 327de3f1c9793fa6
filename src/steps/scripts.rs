//! `~sandbox/run-sandbox.sh` (for hosts without systemd: enter the netns,
//! with its DNS files bound over /etc, drop to the sandbox user, start
//! OpenClaw) and `~sandbox/pair.sh` (pair the device with the sidecar using
//! `OPENCLAW_GATEWAY_TOKEN` from `~sandbox/.env`). Both shellcheck-clean.
//! `--disable` removes them unless edited.

use std::path::PathBuf;

use super::home::SeededFiles;
use crate::spec::Spec;

pub struct Scripts;

/// `s` as one shell word, single-quoted.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Started by root on a host without systemd.
pub fn run_sandbox_sh(spec: &Spec) -> String {
    format!(
        r#"#!/bin/bash
# Start OpenClaw in the sandbox {name} on a host without systemd. Run as root.
# Written by `sandbox setup --name {name}`; `sandbox setup --disable` removes it.
#
# It enters the network namespace {netns} (`ip netns exec` binds
# /etc/netns/{netns}/resolv.conf and nsswitch.conf over /etc, so DNS goes
# only to the sandbox's resolvers), drops to the user {name} with no
# capabilities and no_new_privs, and starts the OpenClaw gateway.
#
# The user {name} can change files in its home, this one included: read it
# before you run it as root (`sandbox setup` rewrites it if unedited).
set -euo pipefail

netns={netns}
user={name}
home={home}
port={port}

if [ "$(id -u)" -ne 0 ]; then
    echo "run-sandbox.sh: run it as root: it enters the network namespace $netns" >&2
    exit 1
fi
if [ ! -e "/run/netns/$netns" ]; then
    echo "run-sandbox.sh: the network namespace $netns does not exist" >&2
    echo "  fix: sudo sandbox setup --name $user" >&2
    exit 1
fi
cd "$home"
exec ip netns exec "$netns" \
    setpriv --reuid="$user" --regid="$user" --init-groups --reset-env \
    --no-new-privs --inh-caps=-all --bounding-set=-all \
    -- openclaw gateway --port "$port"
"#,
        name = spec.name,
        netns = spec.net.netns,
        home = sh_quote(&spec.sandbox_home.to_string_lossy()),
        port = spec.openclaw_port,
    )
}

/// Run as the sandbox user, inside the sandbox: send the device's public
/// key to the sidecar's gateway API with the gateway token.
pub fn pair_sh(spec: &Spec) -> String {
    let h = spec.sandbox_home.to_string_lossy();
    format!(
        r#"#!/bin/bash
# Pair this sandbox's device with the DefenseClaw sidecar.
# Written by `sandbox setup --name {name}`; `sandbox setup --disable` removes it.
#
# Sends the public key of {home}/.defenseclaw/device.key (setup wrote it to
# device.pub and registered it in paired-devices.json) to the sidecar's
# gateway API, authenticated with OPENCLAW_GATEWAY_TOKEN from {home}/.env.
# PAIR_URL overrides the endpoint.
set -euo pipefail

env_file={env_file}
pub_file={pub_file}
url="${{PAIR_URL:-http://{ip}:{gw}/v1/devices/pair}}"

token=""
if [ -r "$env_file" ]; then
    token=$(sed -n 's/^OPENCLAW_GATEWAY_TOKEN=//p' "$env_file" | tail -n 1)
    token=${{token#\"}}
    token=${{token%\"}}
fi
if [ -z "$token" ]; then
    echo "pair.sh: OPENCLAW_GATEWAY_TOKEN is empty or missing in $env_file" >&2
    echo "  fix: sudo sandbox setup --name {name}   (writes a random token there when none is set)" >&2
    exit 1
fi
if [ ! -r "$pub_file" ]; then
    echo "pair.sh: no device public key at $pub_file" >&2
    echo "  fix: sudo sandbox setup --name {name}   (without --no-auto-pair)" >&2
    exit 1
fi

# The PEM as one JSON string: newlines become \n.
pem=$(awk '{{printf "%s\\n", $0}}' "$pub_file")
body=$(printf '{{"device":"%s","algorithm":"ed25519","public_key_pem":"%s"}}' "{name}" "$pem")

# The token goes in a header read from a file descriptor, never on the
# command line where `ps` would show it.
curl --fail --silent --show-error --max-time 10 \
    --header @<(printf 'Authorization: Bearer %s\n' "$token") \
    --header 'Content-Type: application/json' \
    --data-binary "$body" \
    "$url"
echo "pair.sh: device {name} paired with the sidecar at $url"
"#,
        name = spec.name,
        home = h,
        env_file = sh_quote(&format!("{h}/.env")),
        pub_file = sh_quote(&format!("{h}/.defenseclaw/device.pub")),
        ip = spec.net.host_ip,
        gw = spec.policy.sidecar.gateway_port.0,
    )
}

impl SeededFiles for Scripts {
    const ID: &'static str = "scripts";
    const INVERSE: &'static str = "removed if unedited";

    fn files(spec: &Spec) -> Vec<(PathBuf, String, u32)> {
        vec![
            (PathBuf::from("run-sandbox.sh"), run_sandbox_sh(spec), 0o750),
            (PathBuf::from("pair.sh"), pair_sh(spec), 0o750),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command as Proc;

    fn spec(extra: &[&str]) -> Spec {
        crate::testutil::spec(extra)
    }

    fn shellcheck(name: &str, text: &str) {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join(name);
        std::fs::write(&p, text).expect("write");
        let out = match Proc::new("shellcheck").arg("--shell=bash").arg(&p).output() {
            Ok(o) => o,
            Err(e) => panic!(
                "shellcheck is needed to check {name} and could not be run ({e}): \
                 install it (apt-get install shellcheck)"
            ),
        };
        assert!(
            out.status.success(),
            "shellcheck {name}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn scripts_are_shellcheck_clean() {
        for s in [spec(&[]), spec(&["--name", "ci3", "--sandbox-home", "/srv/ci 3"])] {
            shellcheck("run-sandbox.sh", &run_sandbox_sh(&s));
            shellcheck("pair.sh", &pair_sh(&s));
        }
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn run_sandbox_enters_the_netns_and_drops_privileges() {
        let s = run_sandbox_sh(&spec(&["--name", "ci3", "--openclaw-port", "18800"]));
        assert!(s.contains("ip netns exec \"$netns\""), "{s}");
        assert!(s.contains("netns=ci30"), "{s}");
        assert!(s.contains("--reuid=\"$user\"") && s.contains("--no-new-privs"), "{s}");
        assert!(s.contains("--port \"$port\"") && s.contains("port=18800"), "{s}");
    }

    #[test]
    fn pair_stops_on_a_missing_token_naming_file_and_command() {
        let d = tempfile::tempdir().expect("tempdir");
        let home = d.path().join("home");
        std::fs::create_dir(&home).expect("home");
        let home_s = home.to_str().expect("utf8").to_string();
        let s = spec(&["--sandbox-home", &home_s]);
        let script = d.path().join("pair.sh");
        std::fs::write(&script, pair_sh(&s)).expect("write");
        for env in [None, Some("OPENCLAW_GATEWAY_TOKEN=\n")] {
            if let Some(text) = env {
                std::fs::write(home.join(".env"), text).expect("env");
            }
            let out = Proc::new("bash").arg(&script).output().expect("bash");
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&format!("{home_s}/.env")), "{err}");
            assert!(err.contains("sudo sandbox setup --name sandbox"), "{err}");
        }
    }
}
