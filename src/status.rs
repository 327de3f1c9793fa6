//! `sandbox status`: is the sandbox in place and healthy? Checked natively
//! (netlink, nft, sockets; no `ip`, no `jq`) against the state record: each
//! step's read-only `plan` shows drift, and live checks show that the
//! sidecar answers and that the host is reachable from inside.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

use crate::engine;
use crate::error::{Error, Result};
use crate::firewall::{self, Denial, Where};
use crate::spec::{Root, Spec};
use crate::state::{State, Store};
use crate::steps;
use crate::sys::netns;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub healthy: bool,
    pub policy: String,
    pub checks: Vec<Check>,
    /// Refused destinations and how often, most refused first.
    pub denials: Vec<Denial>,
    /// Host-name rules, with the addresses the resolver opened for each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<crate::resolver::NameStatus>,
    /// Names the resolver refused (NXDOMAIN), and how often.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dns_denials: std::collections::BTreeMap<String, u64>,
    /// Names whose answer pointed into a range the policy does not name.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dns_rebinding: std::collections::BTreeMap<String, u64>,
}

impl Check {
    fn ok(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn bad(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Everything `status` reports. Err only when there is nothing to check.
/// `systemd`: also ask systemd whether the units are active.
pub fn collect(root: &Root, name: &str, systemd: bool) -> Result<Status> {
    let Some(state) = Store::peek(root, name)? else {
        return Err(Error::host(
            format!("sandbox {name}"),
            format!("not set up: no state record under {}", root.state_dir(name).display()),
            "run `sudo sandbox setup` first",
        ));
    };
    let spec = recorded_spec(&state, root, name)?;
    let mut checks = drift(&spec, &state);
    checks.extend(live(&spec));
    if systemd && crate::steps::units::talks_to_systemd(&spec) {
        checks.extend(units(&spec));
    }
    let denials = match firewall::denials(&spec) {
        Ok(d) => d,
        Err(e) => {
            checks.push(Check::bad(
                "denials",
                format!("cannot read the counters: {e}"),
                "run as root",
            ));
            vec![]
        }
    };
    // Refusals inside the sandbox are the rules working; one counted on the
    // host means the sandbox's own rules were bypassed.
    // Each setup clears what the host table counted before it (saying so
    // in its output and the audit log), so these are since the last setup.
    let bypassed: Vec<Denial> = denials.iter().filter(|d| d.layer == Where::Host).cloned().collect();
    checks.push(if bypassed.is_empty() {
        Check::ok(
            "host refusals",
            "none since the last setup: the sandbox's own rules hold",
        )
    } else {
        Check::bad(
            "host refusals",
            format!(
                "since the last setup the host table refused {}: the sandbox's own rules were bypassed",
                firewall::denials::summary(&bypassed)
            ),
            format!(
                "investigate the agent, then re-run `sudo sandbox setup --name {}` with your flags: it repairs the \
                 sandbox's table and clears this count (the refusals go to `sandbox log`)",
                spec.name
            ),
        )
    });
    let names = match crate::resolver::names(&spec) {
        Ok(n) => n,
        Err(e) => {
            checks.push(Check::bad(
                "names",
                format!("cannot list the resolver's sets: {e}"),
                "run as root",
            ));
            vec![]
        }
    };
    let counts = crate::resolver::stats::Stats::read(&crate::resolver::file(root, name, crate::resolver::STATS));
    let healthy = checks.iter().all(|c| c.ok);
    Ok(Status {
        name: name.into(),
        healthy,
        policy: spec.policy_name.clone(),
        checks,
        denials,
        names,
        dns_denials: counts.denied,
        dns_rebinding: counts.rebinding,
    })
}

pub fn recorded_spec(state: &State, root: &Root, name: &str) -> Result<Spec> {
    let unreadable = |why: String| Error::State {
        path: root.state_dir(name).join("state.json"),
        cause: why,
        fix: "re-run `sudo sandbox setup` with your flags: it records them again".into(),
    };
    let v = state
        .spec
        .clone()
        .ok_or_else(|| unreadable("it holds no spec (written by an older version)".into()))?;
    let mut spec: Spec = serde_json::from_value(v).map_err(|e| unreadable(format!("its spec is unreadable: {e}")))?;
    // Status may be run with another --root view of the same tree.
    spec.root = root.clone();
    Ok(spec)
}

/// One check per step: what its `plan` would change is what drifted.
fn drift(spec: &Spec, state: &State) -> Vec<Check> {
    let steps = steps::all();
    let plan = engine::plan_all(&steps, spec, Some(state));
    let fix = format!(
        "re-run `sudo sandbox setup --name {}` with the same flags: it repairs what is ours",
        spec.name
    );
    steps
        .iter()
        .zip(plan)
        .filter(|(step, _)| crate::engine::wants(step.as_ref(), spec) || state.get(step.id()).is_some())
        .map(|(step, o)| {
            let id = step.id();
            let recorded = state.get(id);
            // Files the operator edited are kept on purpose: a note, not a fault.
            let (notes, changes): (Vec<String>, Vec<String>) = o
                .changes
                .into_iter()
                .filter(|c| !steps::only_clears_refusals(c))
                .partition(|c| engine::is_note(c));
            if changes.is_empty() {
                let detail = match (recorded, notes.is_empty()) {
                    (_, false) => notes.join("; "),
                    (Some(_), true) => "in place".to_string(),
                    // A step with nothing to do on this host (nflog outside
                    // the initial namespace) leaves no record.
                    (None, true) => "nothing to do on this host".to_string(),
                };
                Check::ok(id, detail)
            } else if recorded.is_none() {
                Check::bad(
                    id,
                    format!(
                        "never applied (an earlier setup stopped before it): {}",
                        changes.join("; ")
                    ),
                    fix.clone(),
                )
            } else if recorded.is_some_and(|r| !r.done) {
                Check::bad(
                    id,
                    format!("left half-done by an interrupted run: {}", changes.join("; ")),
                    fix.clone(),
                )
            } else {
                Check::bad(id, format!("drift: {}", changes.join("; ")), fix.clone())
            }
        })
        .collect()
}

/// Connected or refused: something at that address answered.
fn answers(addr: SocketAddr) -> std::result::Result<bool, String> {
    match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// `GET /health` over plain HTTP (the sidecar's ports and OpenClaw's
/// gateway both serve it): the body on 200, else why not.
pub fn health(addr: SocketAddr) -> std::result::Result<String, String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = s.set_write_timeout(Some(PROBE_TIMEOUT));
    s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    s.take(16 * 1024)
        .read_to_end(&mut reply)
        .map_err(|e| format!("no answer to GET /health: {e}"))?;
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(body.trim().chars().take(120).collect()),
        Some(code) => Err(format!("GET /health answered HTTP {code}")),
        None => Err("not an HTTP answer to GET /health".into()),
    }
}

fn live(spec: &Spec) -> Vec<Check> {
    let host = IpAddr::V4(spec.net.host_ip);
    let mut ports = vec![spec.policy.sidecar.gateway_port.0];
    if spec.guardrail {
        ports.push(spec.policy.sidecar.guardrail_port.0);
    }
    let mut out = Vec::new();
    let silent: Vec<String> = ports
        .iter()
        .filter_map(|p| {
            health(SocketAddr::new(host, *p))
                .err()
                .map(|why| format!("{host}:{p} ({why})"))
        })
        .collect();
    let listed: Vec<String> = ports.iter().map(|p| format!("{host}:{p}")).collect();
    out.push(if silent.is_empty() {
        Check::ok("sidecar", format!("/health answers on {}", listed.join(", ")))
    } else {
        Check::bad(
            "sidecar",
            format!("/health not answering on {}", silent.join(", ")),
            format!(
                "start the sidecar (defenseclaw-gateway@{}.service; `journalctl -u` it); it listens where its \
                 config.yaml says (written by the sidecar step)",
                spec.name
            ),
        )
    });
    let agent = SocketAddr::new(IpAddr::V4(spec.net.sandbox_ip), spec.openclaw_port);
    out.push(match health(agent) {
        Ok(body) => Check::ok(
            "agent",
            format!("OpenClaw's gateway answers /health on {agent}: {body}"),
        ),
        Err(why) => Check::bad(
            "agent",
            format!("OpenClaw's gateway does not answer /health on {agent}: {why}"),
            format!(
                "start the agent ({}, or ~{}/run-sandbox.sh without systemd); \
                 `openclaw config validate` as the sandbox user shows a config it refuses",
                crate::steps::units::agent_unit(&spec.name),
                spec.name
            ),
        ),
    });

    let path = spec.root.netns_path(&spec.net.netns);
    let target = SocketAddr::new(host, ports[0]);
    let inside = if path.exists() {
        netns::run_in(&path, move || Ok(answers(target)))
    } else {
        Ok(Err("the namespace is missing".into()))
    };
    out.push(match inside {
        Ok(Ok(_)) => Check::ok("reach host", format!("{host} answers from inside {}", spec.net.netns)),
        Ok(Err(why)) => Check::bad(
            "reach host",
            format!("{host} does not answer from inside {}: {why}", spec.net.netns),
            "check the veth step above; re-run setup to repair",
        ),
        Err(e) => Check::bad(
            "reach host",
            format!("cannot enter {}: {e}", spec.net.netns),
            "run as root",
        ),
    });
    out
}

/// Whether systemd runs our units, asked over D-Bus.
fn units(spec: &Spec) -> Vec<Check> {
    use crate::steps::units::{agent_unit, gateway_unit, net_unit, target_unit};
    let sd = match crate::sys::systemd::Systemd::connect() {
        Ok(sd) => sd,
        Err(e) => {
            return vec![Check::bad(
                "units",
                e.to_string(),
                "pass --no-systemd on a host without systemd",
            )]
        }
    };
    let mut checks: Vec<Check> = [
        net_unit(&spec.name),
        gateway_unit(&spec.name),
        agent_unit(&spec.name),
        target_unit(&spec.name),
    ]
    .into_iter()
    .map(|unit| match sd.state(&unit) {
        Ok(st) if st.is_active() => Check::ok(unit.clone(), st.to_string()),
        Ok(st) => Check::bad(
            unit.clone(),
            st.to_string(),
            format!(
                "journalctl -u {unit}; then `sudo systemctl start {}`",
                target_unit(&spec.name)
            ),
        ),
        Err(e) => Check::bad(unit, e.to_string(), "check systemd (systemctl status)"),
    })
    .collect();
    if let Ok(pid) = sd.main_pid(&agent_unit(&spec.name)) {
        if pid != 0 {
            checks.push(agent_view(spec, pid));
        }
    }
    checks
}

/// Whether the running agent is in the sandbox's namespace of now (not
/// one `setup` replaced) and sees its DNS files as they are now: it took
/// both in at its start.
fn agent_view(spec: &Spec, pid: u32) -> Check {
    let stale = crate::steps::units::agent_staleness(spec, pid);
    let unit = crate::steps::units::agent_unit(&spec.name);
    if stale.is_empty() {
        Check::ok(
            "agent view",
            format!("pid {pid} in {}, with its DNS files of now", spec.net.netns),
        )
    } else {
        Check::bad(
            "agent view",
            format!("pid {pid}: {}", stale.join("; ")),
            format!("`sudo systemctl restart {unit}` (setup restarts it when it changes these itself)"),
        )
    }
}

pub fn print_table(s: &Status) {
    let verdict = if s.healthy { "healthy" } else { "UNHEALTHY" };
    crate::outln!("sandbox {}: {verdict} (policy {})", s.name, s.policy);
    for c in &s.checks {
        let mark = if c.ok { "ok  " } else { "FAIL" };
        crate::outln!("  {mark}  {:<14} {}", c.check, c.detail);
        if let Some(fix) = c.fix.as_ref().filter(|_| !c.ok) {
            crate::outln!("        {:<14} fix: {fix}", "");
        }
    }
    if s.denials.is_empty() {
        crate::outln!("refused connections: none counted");
    } else {
        crate::outln!("refused connections (netns: last 24 h; host: since the last setup; most first):");
        crate::outln!(
            "  {:<6} {:<40} {:<5} {:>6} {:>8}  {}",
            "where",
            "destination",
            "proto",
            "port",
            "count",
            "last"
        );
        for d in &s.denials {
            let layer = if d.layer == Where::Host { "host" } else { "netns" };
            crate::outln!(
                "  {layer:<6} {:<40} {:<5} {:>6} {:>8}  {}",
                d.dst.to_string(),
                d.proto,
                d.port,
                d.count,
                d.last.as_deref().unwrap_or("-")
            );
        }
    }
    print_names(s);
}

/// Host-name rules with the addresses open for each, and refused names.
fn print_names(s: &Status) {
    if !s.names.is_empty() {
        crate::outln!("names (the addresses the resolver opened, seconds left):");
        for n in &s.names {
            let ports: Vec<String> = n.ports.iter().map(u16::to_string).collect();
            let addrs: Vec<String> = n
                .addresses
                .iter()
                .map(|a| match a.expires_s {
                    Some(e) => format!("{} ({e}s)", a.address),
                    None => a.address.to_string(),
                })
                .collect();
            let addrs = if addrs.is_empty() {
                "none yet".to_string()
            } else {
                addrs.join(", ")
            };
            crate::outln!("  {:<32} {}/{:<12} {addrs}", n.name, n.protocol, ports.join(","));
        }
    }
    for (title, map) in [
        ("refused names (NXDOMAIN)", &s.dns_denials),
        ("refused answers (DNS rebinding)", &s.dns_rebinding),
    ] {
        if map.is_empty() {
            continue;
        }
        crate::outln!("{title}:");
        let mut v: Vec<(&String, &u64)> = map.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (name, count) in v {
            crate::outln!("  {name:<48} x{count}");
        }
    }
}
