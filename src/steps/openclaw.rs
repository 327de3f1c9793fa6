//! `~sandbox/.openclaw/openclaw.json`, patched in OpenClaw's real schema
//! (a strict root: no key OpenClaw does not know is ever added):
//! `gateway.mode: local`, `gateway.port` (`--openclaw-port`), `gateway.bind:
//! custom` with `customBindHost` the sandbox IP (so the sidecar on the host
//! reaches it; OpenClaw refuses a non-loopback bind without auth), and
//! `gateway.auth` (`mode: token`, the token already there, else a random
//! one). Unless `--no-guardrail`, the guardrail is wired the way DefenseClaw
//! does it: the `defenseclaw` model provider, where one exists, gets its
//! `baseUrl` pointed at the proxy on the host IP, and the plugin is enabled
//! (`plugins.entries.defenseclaw`, and `plugins.allow` where a list exists).
//!
//! The file is read as JSON5 (OpenClaw's format) through the home-access
//! layer and written back as JSON with the operator's keys in their order
//! (comments do not survive: OpenClaw's own writes drop them too). The
//! original is kept root-owned under the state directory; a copy goes to
//! `openclaw.json.bak` for operators (OpenClaw keeps a `.bak` of its own
//! there too, so a changed `.bak` is not an error). Refused, with nothing
//! written: no file (OpenClaw never set up: the fix is `openclaw setup
//! --baseline` as the sandbox user), a link, FIFO or other non-file, a file
//! the sandbox user does not own, malformed JSON5.
//!
//! `--disable`: if the file is still what setup wrote, the original comes
//! back byte for byte from root's copy (never from the home). If it was
//! edited since, only our keys are taken out, each given back its old value.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::home::{self, HomeRef};
use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::originals;
use crate::spec::Spec;
use crate::sys::agent_home::{AgentHome, CONFIG_CAP};
use crate::sys::{files, users};

pub struct OpenclawJson;

/// One key we set, by its path from the top, and what it held before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owned {
    pub key: Vec<String>,
    /// None: the key did not exist before.
    pub previous: Option<Value>,
    /// We made the key's parent object (removed again when empty).
    pub made_parent: bool,
    /// An object we made to hold our keys: taken out only while empty.
    #[serde(default)]
    pub container: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    at: HomeRef,
    /// SHA-256 of the original, kept under the state directory.
    original_sha256: String,
    written_sha256: String,
    /// The `.bak` we wrote, and the one OpenClaw had there before (kept by
    /// root, put back by `--disable`).
    #[serde(default)]
    bak: Option<home::Written>,
    /// The token we generated (the file had none): reused by re-runs.
    #[serde(default)]
    token: Option<String>,
    /// The operator edited the file between two runs: what we wrote since
    /// holds their edits, so `--disable` takes our keys out instead of
    /// bringing back the original.
    #[serde(default)]
    operator_edited: bool,
    owned: Vec<Owned>,
}

/// The file, relative to the home.
pub const REL: &str = ".openclaw/openclaw.json";
const BAK_REL: &str = ".openclaw/openclaw.json.bak";

pub fn path(spec: &Spec) -> PathBuf {
    home::dir(spec).join(REL)
}

/// Parse JSON5 (OpenClaw's format), naming line and column of an error.
pub fn parse(p: &Path, bytes: &[u8]) -> Result<Value> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::host(
            p.display().to_string(),
            format!("is not UTF-8 text ({e})"),
            "fix the file (or move it away and run `openclaw setup --baseline` as the sandbox user), then re-run",
        )
    })?;
    let v: Value = json5::from_str(text).map_err(|e| {
        Error::host(
            p.display().to_string(),
            format!("malformed JSON5: {e}"),
            "fix the file (`openclaw config validate` as the sandbox user shows where), then re-run",
        )
    })?;
    if !v.is_object() {
        return Err(Error::host(
            p.display().to_string(),
            "is not a JSON object",
            "move it away and run `openclaw setup --baseline` as the sandbox user, then re-run",
        ));
    }
    Ok(v)
}

pub fn not_set_up(p: &Path, spec: &Spec) -> Error {
    Error::host(
        p.display().to_string(),
        "does not exist: OpenClaw was never set up for the sandbox user",
        format!(
            "run `sudo -u {} -H openclaw setup --baseline` (it writes the config), then re-run",
            spec.name
        ),
    )
}

/// A token OpenClaw may hold and the sidecar's `.env` may carry: printable,
/// no quotes, spaces or newlines (a value the agent chose must not become
/// another line of the sidecar's environment).
pub fn valid_token(t: &str) -> bool {
    (16..=512).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=:".contains(&b))
}

/// The gateway token a config holds (`gateway.auth.token`), if usable.
pub fn token_in(doc: &Value) -> Option<&str> {
    doc.pointer("/gateway/auth/token")
        .and_then(Value::as_str)
        .filter(|t| valid_token(t))
}

/// Our keys and their values for this spec, given the config as it is
/// without them (`base`) and the token to use.
pub fn our_keys(spec: &Spec, base: &Value, token: &str) -> Vec<(Vec<String>, Value)> {
    let k = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut v = vec![
        (k(&["gateway", "mode"]), json!("local")),
        (k(&["gateway", "port"]), json!(spec.openclaw_port)),
        (k(&["gateway", "bind"]), json!("custom")),
        (
            k(&["gateway", "customBindHost"]),
            json!(spec.net.sandbox_ip.to_string()),
        ),
        (k(&["gateway", "auth", "mode"]), json!("token")),
        (k(&["gateway", "auth", "token"]), json!(token)),
    ];
    if spec.guardrail {
        let proxy = format!("http://{}:{}", spec.net.host_ip, spec.policy.sidecar.guardrail_port.0);
        if base
            .pointer("/models/providers/defenseclaw")
            .is_some_and(Value::is_object)
        {
            v.push((k(&["models", "providers", "defenseclaw", "baseUrl"]), json!(proxy)));
        }
        v.push((k(&["plugins", "entries", "defenseclaw", "enabled"]), json!(true)));
        v.push((
            k(&["plugins", "entries", "defenseclaw", "config"]),
            json!({
                "gatewayUrl": format!("http://{}:{}", spec.net.host_ip, spec.policy.sidecar.gateway_port.0),
                "failClosed": true,
            }),
        ));
        if let Some(allow) = base.pointer("/plugins/allow").and_then(Value::as_array) {
            if !allow.iter().any(|a| a == "defenseclaw") {
                let mut list = allow.clone();
                list.push(json!("defenseclaw"));
                v.push((k(&["plugins", "allow"]), Value::Array(list)));
            }
        }
    }
    v
}

fn obj_at<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Map<String, Value>> {
    match path.split_first() {
        None => v.as_object_mut(),
        Some((head, rest)) => obj_at(v.as_object_mut()?.get_mut(head)?, rest),
    }
}

/// Set `keys` in `doc` (an object), recording what each held before.
pub fn patch(doc: &Value, keys: &[(Vec<String>, Value)]) -> (Value, Vec<Owned>) {
    let mut doc = doc.clone();
    let mut owned = Vec::new();
    for (key, val) in keys {
        let Some((last, parents)) = key.split_last() else {
            continue;
        };
        let mut made_parent = false;
        for i in 0..parents.len() {
            let Some(obj) = obj_at(&mut doc, &parents[..i]) else {
                break;
            };
            let p = &parents[i];
            if obj.get(p).is_some_and(Value::is_object) {
                continue;
            }
            match obj.insert(p.clone(), Value::Object(Map::new())) {
                // A non-object where we need an object: remember it.
                Some(old) => owned.push(Owned {
                    key: parents[..=i].to_vec(),
                    previous: Some(old),
                    made_parent: false,
                    container: false,
                }),
                None => {
                    made_parent = true;
                    owned.push(Owned {
                        key: parents[..=i].to_vec(),
                        previous: None,
                        made_parent: false,
                        container: true,
                    });
                }
            }
        }
        let Some(obj) = obj_at(&mut doc, parents) else { continue };
        let previous = obj.insert(last.clone(), val.clone());
        owned.push(Owned {
            key: key.clone(),
            previous,
            made_parent,
            container: false,
        });
    }
    (doc, owned)
}

/// Take our keys out again, newest first, giving each its old value.
pub fn unpatch(doc: &Value, owned: &[Owned]) -> Value {
    let mut doc = doc.clone();
    for o in owned.iter().rev() {
        let Some((last, parents)) = o.key.split_last() else {
            continue;
        };
        let Some(obj) = obj_at(&mut doc, parents) else { continue };
        if o.container {
            if obj.get(last).and_then(Value::as_object).is_some_and(Map::is_empty) {
                obj.shift_remove(last);
            }
            continue;
        }
        match &o.previous {
            Some(v) => {
                obj.insert(last.clone(), v.clone());
            }
            None => {
                obj.shift_remove(last);
            }
        }
        if o.made_parent {
            if let Some((up_last, up)) = parents.split_last() {
                if let Some(up_obj) = obj_at(&mut doc, up) {
                    if up_obj
                        .get(up_last)
                        .and_then(Value::as_object)
                        .is_some_and(Map::is_empty)
                    {
                        up_obj.shift_remove(up_last);
                    }
                }
            }
        }
    }
    doc
}

pub fn render(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The config as OpenClaw left it, read through the home-access layer.
fn read(h: &AgentHome, spec: &Spec) -> Result<(crate::sys::agent_home::FileRead, Value)> {
    let p = path(spec);
    let f = h
        .read(Path::new(REL), CONFIG_CAP)?
        .ok_or_else(|| not_set_up(&p, spec))?;
    let doc = parse(&p, &f.bytes)?;
    Ok((f, doc))
}

/// The token to use: the one in the config (without our keys), else the
/// one we generated earlier, else a new one.
fn token_for(base: &Value, r: &mut Record) -> Result<String> {
    if let Some(t) = token_in(base) {
        r.token = None;
        return Ok(t.to_string());
    }
    if let Some(t) = r.token.clone().filter(|t| valid_token(t)) {
        return Ok(t);
    }
    let t = super::pairing::random_hex32()?;
    r.token = Some(t.clone());
    Ok(t)
}

/// The gateway token the sandbox's OpenClaw uses, for the sidecar's
/// `.env` (read through the home-access layer; checked, since the agent
/// can write the file).
pub fn gateway_token(spec: &Spec) -> Result<String> {
    let h = home::open(spec)?;
    let (_, doc) = read(&h, spec)?;
    token_in(&doc).map(str::to_string).ok_or_else(|| {
        Error::host(
            path(spec).display().to_string(),
            "holds no usable gateway.auth.token (16-512 printable characters, no spaces or quotes)",
            "re-run `sandbox setup`: the openclaw step writes one",
        )
    })
}

impl Step for OpenclawJson {
    fn id(&self) -> &'static str {
        "openclaw"
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        let p = path(spec);
        inv.file_generated(
            self.id(),
            &p,
            &spec.name,
            None,
            "patched at apply: gateway.mode/port/bind/customBindHost/auth; with the guardrail, \
             plugins.entries.defenseclaw and the defenseclaw provider's baseUrl; owner and mode kept",
            "original restored byte for byte from root's copy if unedited; else only our keys removed",
        );
        inv.file_generated(
            self.id(),
            &home::dir(spec).join(BAK_REL),
            &spec.name,
            None,
            "copy of the original, for operators, written at the first patch",
            "removed if unchanged",
        );
    }

    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
        let p = path(spec);
        let h = home::open(spec).map_err(|_| not_set_up(&p, spec))?;
        let (f, doc) = read(&h, spec)?;
        let mut r = rec
            .and_then(|v| serde_json::from_value::<Record>(v.clone()).ok())
            .unwrap_or_default();
        let base = unpatch(&doc, &r.owned);
        let token = match token_in(&base) {
            Some(t) => t.to_string(),
            None => r.token.take().unwrap_or_else(|| "<generated>".into()),
        };
        let keys = our_keys(spec, &base, &token);
        let (new, _) = patch(&base, &keys);
        if render(&new).as_bytes() == f.bytes.as_slice() {
            return Ok(vec![]);
        }
        let names: Vec<String> = keys.iter().map(|(k, _)| k.join(".")).collect();
        Ok(vec![format!("set {} in {}", names.join(", "), p.display())])
    }

    /// Only once the user exists: before that, the first setup must be
    /// let through to create it (README, "The first run").
    fn preflight(&self, spec: &Spec) -> Vec<Error> {
        match users::user(&spec.root, &spec.name) {
            Ok(Some(_)) => match home::open(spec).and_then(|h| read(&h, spec)) {
                Ok(_) => vec![],
                Err(e) => vec![e],
            },
            Ok(None) => vec![],
            Err(e) => vec![e],
        }
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let h = home::open(spec)?;
        let p = path(spec);
        let (f, doc) = read(&h, spec)?;
        let mut r = rec.get::<Record>().unwrap_or_default();
        let first = r.original_sha256.is_empty();
        let base = unpatch(&doc, &r.owned);
        let token = token_for(&base, &mut r)?;
        let (new, owned) = patch(&base, &our_keys(spec, &base, &token));
        let text = render(&new);
        if text.as_bytes() == f.bytes.as_slice() {
            if r.token.is_some() && !rec.has_record() {
                rec.put(&r)?;
            }
            return Ok(vec![]);
        }
        let mut out = Vec::new();
        if first {
            r.at = HomeRef::of(spec, rec)?;
            // Root's copy first: it is what --disable restores.
            r.original_sha256 = originals::keep(&r.at.state_dir, &f.bytes)?;
            // OpenClaw keeps a .bak of its own there: ours replaces it, and
            // root keeps it to put back.
            let theirs = match h.read(Path::new(BAK_REL), CONFIG_CAP) {
                Ok(Some(b)) => Some(originals::keep(&r.at.state_dir, &b.bytes)?),
                _ => None,
            };
            r.bak = Some(home::Written {
                path: PathBuf::from(BAK_REL),
                sha256: f.sha256.clone(),
                original: theirs,
            });
            rec.put(&r)?;
            out.push(format!(
                "kept the original (root's copy under {}; a copy for you in {})",
                r.at.state_dir.display(),
                h.show(Path::new(BAK_REL))
            ));
        } else if f.sha256 != r.written_sha256 && f.sha256 != r.original_sha256 {
            r.operator_edited = true;
            out.push(format!("{} was edited since setup wrote it: edits kept", p.display()));
        }
        // The copy for operators, while the file is still the original: also
        // after a run killed between recording it and writing it.
        if let Some(b) = r.bak.as_ref().filter(|_| f.sha256 == r.original_sha256) {
            if h.hash(Path::new(BAK_REL), CONFIG_CAP).ok().flatten().as_deref() != Some(b.sha256.as_str()) {
                h.write(Path::new(BAK_REL), &f.bytes, f.mode)?;
            }
        }
        r.owned = owned;
        r.written_sha256 = files::sha256_hex(text.as_bytes());
        rec.put(&r)?;
        h.write(Path::new(REL), text.as_bytes(), f.mode)?;
        let keys: Vec<String> = r.owned.iter().map(|o| o.key.join(".")).collect();
        out.push(format!("set {} in {}", keys.join(", "), p.display()));
        if r.token.is_some() {
            out.push("generated a gateway token (gateway.auth.token; the sidecar gets the same)".into());
        }
        if !spec.guardrail {
            out.push("no guardrail wiring (--no-guardrail)".into());
        }
        Ok(out)
    }

    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        if r.original_sha256.is_empty() {
            return Ok(vec![]);
        }
        let state_dir = originals::confined(&undo.root, &r.at.state_dir)?;
        let h = r.at.open()?;
        let shown = h.show(Path::new(REL));
        let mut out = Vec::new();
        h.remove_temp(Path::new(REL));
        match h.read(Path::new(REL), CONFIG_CAP) {
            Ok(None) => out.push(format!("{shown} is gone; nothing to restore")),
            Ok(Some(f)) if f.sha256 == r.original_sha256 => {}
            Ok(Some(f)) if f.sha256 == r.written_sha256 && !r.operator_edited => {
                let original = originals::load(&state_dir, &r.original_sha256)?;
                h.write(Path::new(REL), &original, f.mode)?;
                out.push(format!("restored {shown} byte for byte from root's copy"));
            }
            Ok(Some(f)) => match parse(Path::new(&shown), &f.bytes) {
                Ok(doc) => {
                    h.write(Path::new(REL), render(&unpatch(&doc, &r.owned)).as_bytes(), f.mode)?;
                    out.push(format!(
                        "{shown}: edited since setup: only our keys were taken out, the edits kept"
                    ));
                }
                Err(e) => out.push(format!(
                    "left {shown} alone: {e}; take out {} by hand",
                    r.owned.iter().map(|o| o.key.join(".")).collect::<Vec<_>>().join(", ")
                )),
            },
            Err(e) => out.push(format!("left {shown} alone: {e}")),
        }
        if let Some(bak) = &r.bak {
            out.extend(home::revert_file(&h, &state_dir, bak)?);
        }
        originals::forget(&state_dir, &r.original_sha256)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &[&str]) -> Spec {
        crate::testutil::spec(extra)
    }

    /// What `openclaw setup --baseline` writes (2026.9.6), abridged.
    const BASELINE: &str = r#"{
  "meta": {"lastTouchedVersion": "2026.9.6"},
  "agents": {"defaults": {"workspace": "/home/sandbox/.openclaw/workspace"}},
  "gateway": {"mode": "local"}
}"#;

    fn patched(original: &str, extra: &[&str]) -> (Value, Value, Vec<Owned>) {
        let s = spec(extra);
        let doc = parse(Path::new("openclaw.json"), original.as_bytes()).expect("parse");
        let token = token_in(&doc).unwrap_or("0123456789abcdef0123456789abcdef").to_string();
        let (new, owned) = patch(&doc, &our_keys(&s, &doc, &token));
        (doc, new, owned)
    }

    #[test]
    fn gateway_is_bound_on_the_sandbox_ip_with_token_auth_and_unpatch_restores() {
        let (doc, new, owned) = patched(BASELINE, &["--openclaw-port", "18800"]);
        assert_eq!(new["gateway"]["mode"], "local");
        assert_eq!(new["gateway"]["port"], 18800);
        assert_eq!(new["gateway"]["bind"], "custom");
        assert_eq!(new["gateway"]["customBindHost"], "10.200.0.2");
        assert_eq!(new["gateway"]["auth"]["mode"], "token");
        assert_eq!(new["plugins"]["entries"]["defenseclaw"]["enabled"], true);
        assert!(
            new.get("guardrail").is_none(),
            "OpenClaw's root schema has no guardrail key"
        );
        assert!(
            new.get("plugins").and_then(|p| p.get("allow")).is_none(),
            "no allow list is made"
        );
        assert_eq!(unpatch(&new, &owned), doc);
        let keys: Vec<&String> = new.as_object().expect("obj").keys().collect();
        assert_eq!(
            keys,
            ["meta", "agents", "gateway", "plugins"],
            "the operator's order is kept"
        );
    }

    #[test]
    fn json5_comments_existing_token_provider_and_foreign_plugins() {
        let original = r#"{
  // written by hand
  gateway: {mode: 'local', auth: {mode: 'token', token: 'existing-token-1234567890'}},
  models: {providers: {defenseclaw: {baseUrl: 'http://127.0.0.1:4000', api: 'openai-completions'}, other: {baseUrl: 'https://x'}}},
  plugins: {allow: ['telegram'], entries: {telegram: {enabled: true}}},
}"#;
        let (doc, new, owned) = patched(original, &[]);
        assert_eq!(
            new["gateway"]["auth"]["token"], "existing-token-1234567890",
            "an existing token is reused"
        );
        assert_eq!(
            new["models"]["providers"]["defenseclaw"]["baseUrl"],
            "http://10.200.0.1:4000"
        );
        assert_eq!(new["models"]["providers"]["other"]["baseUrl"], "https://x");
        assert_eq!(new["plugins"]["allow"], json!(["telegram", "defenseclaw"]));
        assert_eq!(new["plugins"]["entries"]["telegram"]["enabled"], true);
        assert_eq!(unpatch(&new, &owned), doc);
    }

    #[test]
    fn no_guardrail_wires_nothing_and_converges() {
        let (_, with, owned) = patched(BASELINE, &[]);
        let base = unpatch(&with, &owned);
        let s = spec(&["--no-guardrail"]);
        let (without, _) = patch(&base, &our_keys(&s, &base, "0123456789abcdef0123456789abcdef"));
        assert!(without.get("plugins").is_none());
        assert_eq!(without["gateway"]["port"], 18789);
    }

    #[test]
    fn bad_files_and_tokens_are_refused() {
        let e = parse(Path::new("/h/openclaw.json"), b"{\n  a: 1,\n  oops\n}").expect_err("bad");
        assert!(e.to_string().contains("malformed JSON5"), "{e}");
        assert_eq!(e.exit_code(), 3);
        assert!(parse(Path::new("x"), b"[1]").is_err());
        assert!(!valid_token("short"));
        assert!(!valid_token("has a space in it, and is long enough"));
        assert!(!valid_token("line\nOTHER=injected-into-the-env-file"));
        assert!(valid_token("0123456789abcdef0123456789abcdef"));
        let msg = not_set_up(Path::new("/home/sandbox/.openclaw/openclaw.json"), &spec(&[])).to_string();
        assert!(msg.contains("sudo -u sandbox -H openclaw setup --baseline"), "{msg}");
    }
}
