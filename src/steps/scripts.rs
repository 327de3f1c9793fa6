//! `~sandbox/run-sandbox.sh` (for hosts without systemd: enter the netns,
//! with its DNS files bound over /etc, drop to the sandbox user, start
//! OpenClaw) and `~sandbox/pair.sh` (pair the sidecar again: runs `sandbox
//! setup` for this sandbox with the flags it is given, which re-pairs as
//! setup does). Both shellcheck-clean.
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
    format!(
        r#"#!/bin/bash
# Pair the DefenseClaw sidecar with this sandbox's OpenClaw again. Run as root.
# Written by `sandbox setup --name {name}`; `sandbox setup --disable` removes it.
#
# Pairing is what setup does: the sidecar's own device key (device.key in
# its data directory) goes into ~/.openclaw/devices/paired.json, and the
# gateway token of ~/.openclaw/openclaw.json into the sidecar's .env. So this
# runs setup again; give it the flags you gave setup (pair.sh --policy strict,
# say): setup changes only what drifted and says what. OpenClaw imports
# paired.json when its gateway starts: restart openshell-{name}.service
# afterwards if it runs.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "pair.sh: run it as root (sudo): pairing writes the sidecar's files" >&2
    exit 1
fi
if ! command -v sandbox >/dev/null 2>&1; then
    echo "pair.sh: the sandbox program is not on PATH" >&2
    echo "  fix: install it (README, On a fresh machine), or run: sudo /path/to/sandbox setup --name {name}" >&2
    exit 1
fi
exec sandbox setup --name {name} --non-interactive "$@"
"#,
        name = spec.name,
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
    fn pair_reruns_setup_for_this_sandbox() {
        let s = pair_sh(&spec(&["--name", "ci3"]));
        assert!(s.contains("exec sandbox setup --name ci3 --non-interactive"), "{s}");
        assert!(!s.contains("/v1/devices/pair"), "no route the real gateway lacks");
    }
}
