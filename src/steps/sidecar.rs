//! The DefenseClaw gateway's own configuration, as the real gateway reads
//! it: `config.yaml` (v8 schema) in its data directory with the keys
//! DefenseClaw's sandbox setup writes for standalone sandbox mode
//! (`openshell.mode: standalone`, `openshell.sandbox_home`, `gateway.host`
//! and `gateway.port`: OpenClaw on the sandbox IP; `gateway.api_bind`
//! and `guardrail.host`: the host IP, where the sandbox reaches it;
//! `gateway.token_env`; `claw.home_dir`/`claw.config_file`), and the
//! OpenClaw gateway token in `.env` (0600) beside it: the same token the
//! `openclaw` step put in `openclaw.json`.
//!
//! An operator's config already there is merged (their keys kept, in their
//! order), and its original is kept root-owned under the state directory:
//! `--disable` puts back exactly what was there (or removes the files we
//! made) while they still hold what we wrote; an edited file is kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::openclaw;
use super::sidecar_data::{DataDir, Opened};
use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::host::{self, to_value, Resource};
use crate::inventory::Inventory;
use crate::originals;
use crate::spec::Spec;
use crate::sys::files;

pub struct Sidecar;

const CONFIG: &str = "config.yaml";
const ENV: &str = ".env";
pub const TOKEN_ENV: &str = "OPENCLAW_GATEWAY_TOKEN";

/// One file we wrote in the data directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Wrote {
    written_sha256: String,
    /// SHA-256 of the original, kept under the state directory.
    original: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    dir: Option<DataDir>,
    state_dir: PathBuf,
    created_dirs: Vec<PathBuf>,
    config: Option<Wrote>,
    env: Option<Wrote>,
}

/// `/var/lib/private` under `root`: shared by every sandbox's sidecar
/// (and by other services' dynamic users), so it belongs to the host scope.
fn private_base(root: &crate::spec::Root) -> PathBuf {
    root.path("/var/lib/private")
}

/// Let go of `/var/lib/private`: the last sandbox holding it removes what
/// the first one made, if empty.
fn release_private(undo: &Undo) -> Result<Vec<String>> {
    let base = private_base(&undo.root);
    host::with(&undo.root, |h| {
        h.release(Resource::PrivateStateDir, &undo.name, |v| {
            let dirs: Vec<PathBuf> =
                serde_json::from_value(v.clone()).map_err(|e| host::bad_original("var-lib-private", e))?;
            crate::state::confine_dirs(&dirs, &undo.root, &base)?;
            files::remove_dirs(&dirs)?;
            Ok(Vec::new())
        })
    })
}

/// Our keys in `config.yaml` for this spec.
pub fn config_keys(spec: &Spec) -> Vec<(Vec<String>, Value)> {
    let k = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let home = spec.sandbox_home.display().to_string();
    let side = spec.policy.sidecar;
    vec![
        (k(&["config_version"]), json!(8)),
        (k(&["openshell", "mode"]), json!("standalone")),
        (k(&["openshell", "sandbox_home"]), json!(home)),
        (k(&["gateway", "host"]), json!(spec.net.sandbox_ip.to_string())),
        (k(&["gateway", "port"]), json!(spec.openclaw_port)),
        (k(&["gateway", "token_env"]), json!(TOKEN_ENV)),
        (k(&["gateway", "api_bind"]), json!(spec.net.host_ip.to_string())),
        (k(&["gateway", "api_port"]), json!(side.gateway_port.0)),
        (k(&["guardrail", "host"]), json!(spec.net.host_ip.to_string())),
        (k(&["guardrail", "port"]), json!(side.guardrail_port.0)),
        (k(&["claw", "home_dir"]), json!(format!("{home}/.openclaw"))),
        (
            k(&["claw", "config_file"]),
            json!(format!("{home}/.openclaw/openclaw.json")),
        ),
    ]
}

/// `config.yaml` with our keys merged into `existing` (YAML text).
pub fn merged_config(existing: Option<&[u8]>, spec: &Spec, shown: &str) -> Result<String> {
    let doc: Value = match existing {
        Some(b) if !b.iter().all(u8::is_ascii_whitespace) => serde_norway::from_slice(b).map_err(|e| {
            Error::host(
                shown,
                format!("malformed YAML: {e}"),
                "fix the file (or move it away: setup then writes a new one), then re-run",
            )
        })?,
        _ => json!({}),
    };
    if !doc.is_object() {
        return Err(Error::host(
            shown,
            "is not a YAML mapping",
            "fix the file or move it away, then re-run",
        ));
    }
    let (new, _) = openclaw::patch(&doc, &config_keys(spec));
    let body = serde_norway::to_string(&new)
        .map_err(|e| Error::host(shown, format!("cannot render YAML: {e}"), "report this as a bug"))?;
    Ok(format!(
        "# DefenseClaw gateway for sandbox {}: keys set by `sandbox setup` (the rest is yours).\n{body}",
        spec.name
    ))
}

/// `.env` with our token line (any older one replaced).
pub fn merged_env(existing: Option<&[u8]>, token: &str) -> String {
    let text = existing
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let mut out: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with(&format!("{TOKEN_ENV}=")))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("{TOKEN_ENV}={token}\n"));
    out
}

/// What writing `body` as `name` means: the record entry (the hash we are
/// about to write and the kept original), and whether a write is needed.
/// The caller saves the entry before it writes, so a run killed between
/// the two leaves a record that undo can act on.
fn intent(
    side: &Opened,
    name: &str,
    body: &str,
    prior: Option<Wrote>,
    state_dir: &std::path::Path,
) -> Result<(Wrote, bool)> {
    let current = side.read(name)?;
    let sha = files::sha256_hex(body.as_bytes());
    if current.as_deref().map(files::sha256_hex).as_deref() == Some(sha.as_str()) {
        let w = prior.unwrap_or(Wrote {
            written_sha256: sha,
            original: None,
        });
        return Ok((w, false));
    }
    let original = match (&prior, &current) {
        (Some(p), _) => p.original.clone(),
        (None, Some(b)) => Some(originals::keep(state_dir, b)?),
        (None, None) => None,
    };
    Ok((
        Wrote {
            written_sha256: sha,
            original,
        },
        true,
    ))
}

fn unseed(side: &Opened, name: &str, w: &Wrote, state_dir: &std::path::Path) -> Result<Option<String>> {
    let now = side.read(name).ok().flatten();
    let line = match (now.as_deref().map(files::sha256_hex), &w.original) {
        (Some(h), Some(orig)) if h == w.written_sha256 => {
            side.write(name, &originals::load(state_dir, orig)?, 0o600)?;
            Some(format!("restored {} as it was before setup", side.show(name)))
        }
        (Some(h), None) if h == w.written_sha256 => {
            side.remove(name)?;
            Some(format!("removed {}", side.show(name)))
        }
        (None, _) => None,
        // Killed before the write: the original is still there.
        (Some(h), Some(orig)) if h == *orig => None,
        (Some(_), _) => Some(format!("kept {}: edited since setup wrote it", side.show(name))),
    };
    if let Some(orig) = &w.original {
        originals::forget(state_dir, orig)?;
    }
    Ok(line)
}

impl Step for Sidecar {
    fn id(&self) -> &'static str {
        "sidecar"
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        let Ok(d) = DataDir::of(spec) else { return };
        let who = spec
            .sidecar_user
            .as_deref()
            .unwrap_or("root (handed to the sidecar's dynamic user)");
        let inverse = "the original put back (or removed if setup made it), if unedited";
        inv.file_generated(
            self.id(),
            &d.path().join(CONFIG),
            who,
            Some(0o600),
            "DefenseClaw v8 config: standalone sandbox mode, bound on the host IP (operator keys merged)",
            inverse,
        );
        inv.file_generated(
            self.id(),
            &d.path().join(ENV),
            who,
            Some(0o600),
            "OPENCLAW_GATEWAY_TOKEN, the token in openclaw.json",
            inverse,
        );
    }

    fn plan(&self, spec: &Spec, _rec: Option<&Value>) -> Result<Vec<String>> {
        let d = DataDir::of(spec)?;
        let side = d.open(&spec.root)?;
        let mut out = Vec::new();
        let cfg = merged_config(side.read(CONFIG)?.as_deref(), spec, &side.show(CONFIG))?;
        if side.read(CONFIG)?.as_deref() != Some(cfg.as_bytes()) {
            out.push(format!("write {} (standalone sandbox mode)", side.show(CONFIG)));
        }
        let token = openclaw::gateway_token(spec).unwrap_or_default();
        let env = merged_env(side.read(ENV)?.as_deref(), &token);
        if token.is_empty() || side.read(ENV)?.as_deref() != Some(env.as_bytes()) {
            out.push(format!("write {} ({TOKEN_ENV}, 0600)", side.show(ENV)));
        }
        Ok(out)
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let d = DataDir::of(spec)?;
        let side = d.open(&spec.root)?;
        let mut r = rec.get::<Record>().unwrap_or_default();
        r.dir = Some(d.clone());
        r.state_dir = rec.state_dir();
        let token = openclaw::gateway_token(spec)?;
        let mut out = Vec::new();
        if let Opened::State(_) = &side {
            // `/var/lib/private` is the host's: whoever comes first records
            // what it made on the way there, the last one out removes it.
            // Our record first, so a run killed right after the hold leaves
            // a revert that lets go again.
            rec.put(&r)?;
            let base = private_base(&spec.root);
            host::with(&spec.root, |h| {
                h.hold(Resource::PrivateStateDir, &spec.name, || {
                    to_value(files::missing_dirs(&base))
                })
            })?;
        }
        if !d.path().is_dir() {
            // Write-ahead: the directory is recorded before it exists.
            r.created_dirs = match &side {
                Opened::User(_) => vec![PathBuf::from(".defenseclaw")],
                Opened::State(p) => vec![p.clone()],
            };
            rec.put(&r)?;
            side.make()?;
        }
        let cfg = merged_config(side.read(CONFIG)?.as_deref(), spec, &side.show(CONFIG))?;
        let env = merged_env(side.read(ENV)?.as_deref(), &token);
        // Both files are recorded (the hash about to be written, the kept
        // original) before either is written: a crash leaves what undo needs.
        let prior = |w: &Option<Wrote>| w.clone().filter(|w| !w.written_sha256.is_empty());
        let (cw, write_config) = intent(&side, CONFIG, &cfg, prior(&r.config), &r.state_dir)?;
        let (ew, write_env) = intent(&side, ENV, &env, prior(&r.env), &r.state_dir)?;
        r.config = Some(cw);
        r.env = Some(ew);
        rec.put(&r)?;
        for (name, body, write) in [(CONFIG, &cfg, write_config), (ENV, &env, write_env)] {
            if write {
                side.write(name, body.as_bytes(), 0o600)?;
                out.push(format!("wrote {}", side.show(name)));
            }
        }
        Ok(out)
    }

    /// Without a record: the dynamic user's state directory is ours by its
    /// name (`defenseclaw-<name>`), and what setup puts there goes. An
    /// admin's `~/.defenseclaw` cannot be told from their own: kept.
    fn sweep(&self, undo: &Undo, name: &str) -> Result<Vec<String>> {
        let dir = super::sidecar_data::state_dir(&undo.root, name);
        let mut out = Vec::new();
        if dir.is_dir() {
            let side = DataDir::State { dir: dir.clone() }.open(&undo.root)?;
            for f in [CONFIG, ENV, "device.key"] {
                side.remove(f)?;
                files::remove_temp(&dir.join(f))?;
            }
            files::remove_dirs(std::slice::from_ref(&dir))?;
            out.push(format!(
                "removed {} (the sidecar's state for this sandbox)",
                dir.display()
            ));
        }
        out.extend(release_private(undo)?);
        Ok(out)
    }

    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        let Some(d) = &r.dir else { return Ok(vec![]) };
        let side = d.open(&undo.root)?;
        let state_dir = originals::confined(&undo.root, &r.state_dir)?;
        let mut out = Vec::new();
        for (name, w) in [(ENV, &r.env), (CONFIG, &r.config)] {
            if let Some(w) = w.as_ref().filter(|w| !w.written_sha256.is_empty()) {
                out.extend(unseed(&side, name, w, &state_dir)?);
            }
        }
        match &side {
            Opened::User(_) => side.remove_dirs(&r.created_dirs)?,
            Opened::State(p) => {
                // Only our own directory: a record from before the host
                // scope may also name `/var/lib/private`, which migration
                // entered in the host record.
                let own: Vec<PathBuf> = r.created_dirs.iter().filter(|c| *c == p).cloned().collect();
                side.remove_dirs(&own)?;
                out.extend(release_private(undo)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_config_is_merged_in_order_and_our_keys_set() {
        let s = crate::testutil::spec(&[]);
        let existing = b"# mine\nllm:\n  model: x\ngateway:\n  reconnect_ms: 5\n";
        let out = merged_config(Some(existing), &s, "config.yaml").expect("merge");
        let v: Value = serde_norway::from_str(&out).expect("yaml");
        assert_eq!(v["llm"]["model"], "x");
        assert_eq!(v["gateway"]["reconnect_ms"], 5);
        assert_eq!(v["gateway"]["host"], "10.200.0.2");
        assert_eq!(v["gateway"]["api_bind"], "10.200.0.1");
        assert_eq!(v["guardrail"]["host"], "10.200.0.1");
        assert_eq!(v["openshell"]["mode"], "standalone");
        assert_eq!(v["config_version"], 8);
        let keys: Vec<&String> = v.as_object().expect("map").keys().collect();
        assert_eq!(keys[..2], ["llm", "gateway"], "the operator's keys stay first");
        assert!(merged_config(Some(b"[1, 2"), &s, "c").is_err());
    }

    #[test]
    fn env_token_line_is_replaced_and_other_lines_kept() {
        let e = merged_env(Some(b"A=1\nOPENCLAW_GATEWAY_TOKEN=old\n"), "new");
        assert_eq!(e, "A=1\nOPENCLAW_GATEWAY_TOKEN=new\n");
    }
}
