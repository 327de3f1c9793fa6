//! `~sandbox/.openclaw/openclaw.json`: OpenClaw's gateway port
//! (`gateway.port`, from `--openclaw-port`) and, unless `--no-guardrail`, a
//! `guardrail` section pointing at the sidecar on the host IP.
//!
//! Before the first patch the original is copied to `openclaw.json.bak`
//! (same owner and mode), which later runs never overwrite. Writes are
//! atomic and keep the file's owner and mode. Refused, with nothing
//! written: a symlink, a file owned by anyone but root or the sandbox user,
//! malformed JSON, a missing file or one without `master_key` (OpenClaw
//! never ran as the sandbox user).
//!
//! `--disable`: if the file is still exactly what setup wrote, the original
//! comes back byte for byte from the `.bak`, and the `.bak` (now identical)
//! is removed. If it was edited since, only our keys are taken out (each
//! gets back the value it had before setup) and the `.bak` is kept.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::home;
use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::{files, owner, users};

pub struct OpenclawJson;

/// One key we set, by its path from the top, and what it held before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owned {
    pub key: Vec<String>,
    /// None: the key did not exist before.
    pub previous: Option<Value>,
    /// We made the key's parent object (removed again when empty).
    pub made_parent: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    path: PathBuf,
    bak: PathBuf,
    /// The `.bak` was written by us (else it was there already).
    bak_ours: bool,
    original_sha256: String,
    written_sha256: String,
    /// The operator edited the file between two runs: what we wrote since
    /// holds their edits, so `--disable` takes our keys out instead of
    /// bringing back the `.bak`.
    #[serde(default)]
    operator_edited: bool,
    owned: Vec<Owned>,
}

pub fn path(spec: &Spec) -> PathBuf {
    home::dir(spec).join(".openclaw/openclaw.json")
}

fn bak_of(p: &Path) -> PathBuf {
    p.with_file_name("openclaw.json.bak")
}

/// Parse, naming line and column of a syntax error.
pub fn parse(p: &Path, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::host(
            p.display().to_string(),
            format!("malformed JSON at line {}, column {}: {e}", e.line(), e.column()),
            format!(
                "fix the file (the original from before setup is in {}, if it exists), then re-run",
                bak_of(p).display()
            ),
        )
    })
}

pub fn has_master_key(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("master_key") || m.values().any(has_master_key),
        Value::Array(a) => a.iter().any(has_master_key),
        _ => false,
    }
}

pub fn master_key_missing(p: &Path, spec: &Spec) -> Error {
    Error::host(
        p.display().to_string(),
        "master_key not found: OpenClaw never ran as the sandbox user",
        format!(
            "run `sudo -u {} openclaw --version` to materialize defaults, then re-run",
            spec.name
        ),
    )
}

/// Our keys and their values for this spec.
pub fn our_keys(spec: &Spec) -> Vec<(Vec<String>, Value)> {
    let ip = spec.net.host_ip;
    let side = spec.policy.sidecar;
    let mut v = vec![(
        vec!["gateway".to_string(), "port".to_string()],
        json!(spec.openclaw_port),
    )];
    if spec.guardrail {
        v.push((
            vec!["guardrail".to_string()],
            json!({
                "enabled": true,
                "url": format!("http://{ip}:{}", side.guardrail_port.0),
                "gateway": {"url": format!("http://{ip}:{}", side.gateway_port.0)},
                "managed_by": format!("sandbox setup --name {}", spec.name),
            }),
        ));
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
                }),
                None => made_parent = true,
            }
        }
        let Some(obj) = obj_at(&mut doc, parents) else { continue };
        let previous = obj.insert(last.clone(), val.clone());
        owned.push(Owned {
            key: key.clone(),
            previous,
            made_parent,
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

/// Read the file if it is one we may patch: a regular file (not a link)
/// owned by root or the sandbox user.
fn read_checked(p: &Path, spec: &Spec, uid: u32) -> Result<(Vec<u8>, fs::Metadata)> {
    let m = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(master_key_missing(p, spec)),
        Err(e) => return Err(Error::io("stat", p, e)),
    };
    if m.file_type().is_symlink() {
        return Err(owner::symlink_refused(p));
    }
    if !m.is_file() {
        return Err(Error::host(
            p.display().to_string(),
            "is not a regular file",
            "move it away, run OpenClaw once as the sandbox user, then re-run",
        ));
    }
    if m.uid() != 0 && m.uid() != uid {
        return Err(Error::host(
            p.display().to_string(),
            format!(
                "owned by uid {}, neither root nor {} (uid {uid}); refusing to write a file another user controls",
                m.uid(),
                spec.name
            ),
            format!(
                "check who made it; if it is the sandbox's, `chown {}: {}`, then re-run",
                spec.name,
                p.display()
            ),
        ));
    }
    let bytes = fs::read(p).map_err(|e| Error::io("read", p, e))?;
    Ok((bytes, m))
}

/// The file as OpenClaw left it, if we may patch it: ours to write, valid
/// JSON, and holding the defaults of a first run (`master_key`).
fn materialized(spec: &Spec, uid: u32) -> Result<(Vec<u8>, fs::Metadata, Value)> {
    let p = path(spec);
    let (bytes, meta) = read_checked(&p, spec, uid)?;
    let doc = parse(&p, &bytes)?;
    if !has_master_key(&doc) {
        return Err(master_key_missing(&p, spec));
    }
    Ok((bytes, meta, doc))
}

impl Step for OpenclawJson {
    fn id(&self) -> &'static str {
        "openclaw"
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        let p = path(spec);
        let keys: Vec<String> = our_keys(spec).into_iter().map(|(k, _)| k.join(".")).collect();
        inv.file_generated(
            self.id(),
            &p,
            &spec.name,
            None,
            &format!("patched at apply: sets {}; owner and mode kept", keys.join(", ")),
            "original restored byte for byte from the .bak if unedited; else only our keys removed",
        );
        inv.file_generated(
            self.id(),
            &bak_of(&p),
            &spec.name,
            None,
            "copy of the original, written once before the first patch",
            "removed once the original is restored",
        );
    }

    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
        let p = path(spec);
        let uid = home::owner(spec).map(|o| o.uid).unwrap_or(0);
        let (bytes, _) = read_checked(&p, spec, uid)?;
        let doc = parse(&p, &bytes)?;
        if !has_master_key(&doc) {
            return Err(master_key_missing(&p, spec));
        }
        let r = rec
            .and_then(|v| serde_json::from_value::<Record>(v.clone()).ok())
            .unwrap_or_default();
        let (new, _) = patch(&unpatch(&doc, &r.owned), &our_keys(spec));
        if render(&new).as_bytes() == bytes.as_slice() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = our_keys(spec).iter().map(|(k, _)| k.join(".")).collect();
        Ok(vec![format!("set {} in {}", keys.join(", "), p.display())])
    }

    /// Only once the user exists: before that, the first setup must be
    /// let through to create it (README, "The first run").
    fn preflight(&self, spec: &Spec) -> Vec<Error> {
        match users::user(&spec.root, &spec.name) {
            Ok(Some(_)) => match home::owner(spec).and_then(|who| materialized(spec, who.uid)) {
                Ok(_) => vec![],
                Err(e) => vec![e],
            },
            Ok(None) => vec![],
            Err(e) => vec![e],
        }
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let who = home::owner(spec)?;
        let p = path(spec);
        let bak = bak_of(&p);
        let (bytes, meta, doc) = materialized(spec, who.uid)?;
        let mut r = rec.get::<Record>().unwrap_or_default();
        let first = r.original_sha256.is_empty();
        // A run killed between recording the backup and writing it: the
        // file is still the original, so the backup is written now.
        let bak_pending = !first && r.bak_ours && !bak.exists() && files::sha256_hex(&bytes) == r.original_sha256;
        let (new, owned) = patch(&unpatch(&doc, &r.owned), &our_keys(spec));
        let text = render(&new);
        if text.as_bytes() == bytes.as_slice() {
            return Ok(vec![]);
        }
        let mut out = Vec::new();
        if first || bak_pending {
            r.path = p.clone();
            r.bak = bak.clone();
            r.original_sha256 = files::sha256_hex(&bytes);
            if owner::is_symlink(&bak) {
                return Err(owner::symlink_refused(&bak));
            }
            if bak.exists() {
                out.push(format!(
                    "kept {}: it was there already, never overwritten",
                    bak.display()
                ));
            } else {
                r.bak_ours = true;
                rec.put(&r)?;
                let mode = meta.mode() & 0o7777;
                owner::write(
                    &bak,
                    &bytes,
                    mode,
                    owner::Owner {
                        uid: meta.uid(),
                        gid: meta.gid(),
                    },
                )?;
                out.push(format!("saved the original as {}", bak.display()));
            }
        }
        let current = files::sha256_hex(&bytes);
        if !first && current != r.written_sha256 && current != r.original_sha256 {
            r.operator_edited = true;
            out.push(format!("{} was edited since setup wrote it: edits kept", p.display()));
        }
        r.owned = owned;
        r.written_sha256 = files::sha256_hex(text.as_bytes());
        rec.put(&r)?;
        owner::rewrite_keeping_owner(&p, text.as_bytes())?;
        let keys: Vec<String> = r.owned.iter().map(|o| o.key.join(".")).collect();
        out.push(format!("set {} in {}", keys.join(", "), p.display()));
        if !spec.guardrail {
            out.push("no guardrail section (--no-guardrail)".into());
        }
        Ok(out)
    }

    fn revert(&self, _undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        let p = &r.path;
        let mut out = Vec::new();
        // What a run killed in the middle of a write may have left.
        files::remove_temp(p)?;
        files::remove_temp(&r.bak)?;
        if owner::is_symlink(p) {
            out.push(format!("left {} alone: it is a symbolic link now", p.display()));
            return Ok(out);
        }
        let current = files::hash_of(p)?;
        let bak_sha = if owner::is_symlink(&r.bak) {
            None
        } else {
            files::hash_of(&r.bak)?
        };
        let bak_is_original = bak_sha.as_deref() == Some(r.original_sha256.as_str());
        match current {
            None => out.push(format!("{} is gone; nothing to restore", p.display())),
            Some(h) if h == r.original_sha256 => {}
            Some(h) if h == r.written_sha256 && bak_is_original && !r.operator_edited => {
                let original = fs::read(&r.bak).map_err(|e| Error::io("read", &r.bak, e))?;
                owner::rewrite_keeping_owner(p, &original)?;
                out.push(format!(
                    "restored {} from {} byte for byte",
                    p.display(),
                    r.bak.display()
                ));
            }
            Some(h) => {
                let why = if h == r.written_sha256 && !r.operator_edited {
                    format!(
                        "{} is missing or changed, so our keys were taken out instead",
                        r.bak.display()
                    )
                } else {
                    "edited since setup: only our keys were taken out, the edits kept".to_string()
                };
                let bytes = fs::read(p).map_err(|e| Error::io("read", p, e))?;
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(doc) => {
                        let text = render(&unpatch(&doc, &r.owned));
                        owner::rewrite_keeping_owner(p, text.as_bytes())?;
                        out.push(format!("{}: {why}", p.display()));
                    }
                    Err(e) => out.push(format!(
                        "left {} alone: not valid JSON now ({e}); take out {} by hand",
                        p.display(),
                        r.owned.iter().map(|o| o.key.join(".")).collect::<Vec<_>>().join(", ")
                    )),
                }
            }
        }
        // The .bak goes only when it is ours and the file holds it again.
        if r.bak_ours && bak_is_original && files::hash_of(p)?.as_deref() == Some(r.original_sha256.as_str()) {
            fs::remove_file(&r.bak).map_err(|e| Error::io("remove", &r.bak, e))?;
            out.push(format!("removed {} (identical to the restored file)", r.bak.display()));
        } else if bak_sha.is_some() {
            out.push(format!("kept {} (the original from before setup)", r.bak.display()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &[&str]) -> Spec {
        crate::testutil::spec(extra)
    }

    const ORIGINAL: &str = r#"{"master_key": "k", "gateway": {"mode": "local", "port": 1}, "agents": {"x": 1}}"#;

    #[test]
    fn patch_adds_guardrail_and_port_and_unpatch_gives_back_the_original() {
        let s = spec(&["--openclaw-port", "18800"]);
        let doc: Value = serde_json::from_str(ORIGINAL).expect("json");
        let (new, owned) = patch(&doc, &our_keys(&s));
        assert_eq!(new["gateway"]["port"], 18800);
        assert_eq!(new["gateway"]["mode"], "local");
        assert_eq!(new["guardrail"]["url"], "http://10.200.0.1:4000");
        assert_eq!(new["guardrail"]["gateway"]["url"], "http://10.200.0.1:18970");
        assert_eq!(unpatch(&new, &owned), doc);
        // Key order is kept: the operator's keys stay where they were.
        let keys: Vec<&String> = new.as_object().expect("obj").keys().collect();
        assert_eq!(keys, ["master_key", "gateway", "agents", "guardrail"]);
    }

    #[test]
    fn unpatch_keeps_operator_edits() {
        let s = spec(&[]);
        let doc: Value = serde_json::from_str(r#"{"master_key": "k"}"#).expect("json");
        let (mut new, owned) = patch(&doc, &our_keys(&s));
        new["agents"] = json!({"added": "by operator"});
        let back = unpatch(&new, &owned);
        assert_eq!(back, json!({"master_key": "k", "agents": {"added": "by operator"}}));
    }

    #[test]
    fn no_guardrail_leaves_the_section_out_and_converges() {
        let doc: Value = serde_json::from_str(ORIGINAL).expect("json");
        let (with, owned) = patch(&doc, &our_keys(&spec(&[])));
        let (without, _) = patch(&unpatch(&with, &owned), &our_keys(&spec(&["--no-guardrail"])));
        assert!(without.get("guardrail").is_none());
        assert_eq!(without["gateway"]["port"], 18789);
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let e = parse(Path::new("/h/openclaw.json"), b"{\n  \"a\": 1,\n  oops\n}").expect_err("bad");
        let msg = e.to_string();
        assert!(msg.contains("line 3, column 3"), "{msg}");
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn master_key_is_found_anywhere_and_its_absence_explained() {
        assert!(has_master_key(&json!({"auth": {"master_key": "x"}})));
        assert!(!has_master_key(&json!({"auth": {}})));
        let msg = master_key_missing(Path::new("/home/sandbox/.openclaw/openclaw.json"), &spec(&[])).to_string();
        assert!(
            msg.contains("openclaw.json: master_key not found: OpenClaw never ran as the sandbox user"),
            "{msg}"
        );
        assert!(
            msg.contains("run `sudo -u sandbox openclaw --version` to materialize defaults, then re-run"),
            "{msg}"
        );
    }
}
