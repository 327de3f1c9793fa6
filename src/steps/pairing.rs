//! Device pre-pairing (skipped by `--no-auto-pair`):
//! `~sandbox/.defenseclaw/device.key`, an Ed25519 private key (PKCS#8
//! PEM, 0600, owned by the sandbox user); its public key in `device.pub`
//! and registered in `~sandbox/.defenseclaw/paired-devices.json`, where the
//! sidecar reads pre-paired devices; and `~sandbox/.env` with a random
//! `OPENCLAW_GATEWAY_TOKEN` (0600) if none is set. An existing key or token
//! is never replaced. `--disable` keeps all of it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::home;
use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::files;
use crate::sys::owner::{self, Owner};

pub struct Pairing;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    key: PathBuf,
    registry: PathBuf,
    env: PathBuf,
    key_created: bool,
    token_written: bool,
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| {
        Error::host(
            "the kernel's random number generator",
            format!("cannot read random bytes: {e}"),
            "check that getrandom(2) or /dev/urandom works on this host",
        )
    })?;
    Ok(b)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh token line for `.env`: 32 random bytes in hex.
pub fn token_line() -> Result<String> {
    Ok(format!("OPENCLAW_GATEWAY_TOKEN={}\n", hex(&random::<32>()?)))
}

/// The token in `.env` text, if set and non-empty.
pub fn token_in(env: &str) -> Option<&str> {
    env.lines()
        .filter_map(|l| l.trim().strip_prefix("OPENCLAW_GATEWAY_TOKEN="))
        .map(|v| v.trim().trim_matches('"'))
        .next_back()
        .filter(|v| !v.is_empty())
}

pub fn key_pem(key: &SigningKey) -> Result<String> {
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|z| z.to_string())
        .map_err(|e| Error::host("device key", format!("cannot encode: {e}"), "report this as a bug"))
}

pub fn public_pem(key: &SigningKey) -> Result<String> {
    key.verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::host("device key", format!("cannot encode: {e}"), "report this as a bug"))
}

/// `paired-devices.json` with our device put in (replacing an older entry
/// of the same id, keeping every other device).
pub fn register(existing: Option<&Value>, id: &str, key: &SigningKey) -> Result<Value> {
    let mut doc = existing.cloned().unwrap_or_else(|| json!({"devices": []}));
    let entry = json!({
        "id": id,
        "algorithm": "ed25519",
        "public_key_hex": hex(key.verifying_key().as_bytes()),
        "public_key_pem": public_pem(key)?,
        "added_by": format!("sandbox setup --name {id}"),
    });
    let Some(list) = doc.get_mut("devices").and_then(Value::as_array_mut) else {
        return Err(Error::host(
            "paired-devices.json",
            "has no `devices` list",
            "fix the file (it holds {\"devices\": [...]}) or move it away, then re-run",
        ));
    };
    list.retain(|d| d.get("id").and_then(Value::as_str) != Some(id));
    list.push(entry);
    Ok(doc)
}

fn paths(spec: &Spec) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let h = home::dir(spec);
    let d = h.join(".defenseclaw");
    (
        d.join("device.key"),
        d.join("device.pub"),
        d.join("paired-devices.json"),
        h.join(".env"),
    )
}

/// Read a file we may have to keep, refusing links.
fn read_opt(p: &std::path::Path) -> Result<Option<Vec<u8>>> {
    if owner::is_symlink(p) {
        return Err(owner::symlink_refused(p));
    }
    match fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", p, e)),
    }
}

impl Step for Pairing {
    fn id(&self) -> &'static str {
        "pairing"
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        let (key, public, registry, env) = paths(spec);
        let kept = "kept (an existing key or token is reused, never replaced)";
        let id = self.id();
        inv.file_generated(
            id,
            &key,
            &spec.name,
            Some(0o600),
            "Ed25519 private key, generated at apply",
            kept,
        );
        inv.file_generated(id, &public, &spec.name, Some(0o644), "its public key", kept);
        inv.file_generated(
            id,
            &registry,
            &spec.name,
            Some(0o640),
            "the public key registered for the sidecar",
            kept,
        );
        inv.file_generated(
            id,
            &env,
            &spec.name,
            Some(0o600),
            "random OPENCLAW_GATEWAY_TOKEN, if none is set",
            kept,
        );
    }

    fn wanted(&self, spec: &Spec) -> bool {
        spec.auto_pair
    }

    fn plan(&self, spec: &Spec, _rec: Option<&Value>) -> Result<Vec<String>> {
        let (key, _, reg, env) = paths(spec);
        let mut out = Vec::new();
        if !key.exists() {
            out.push(format!("create {} (Ed25519, 0600)", key.display()));
            out.push(format!("register its public key in {}", reg.display()));
        }
        let has_token = fs::read_to_string(&env).ok().is_some_and(|t| token_in(&t).is_some());
        if !has_token {
            out.push(format!(
                "write a random OPENCLAW_GATEWAY_TOKEN to {} (0600)",
                env.display()
            ));
        }
        Ok(out)
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let who = home::owner(spec)?;
        let h = home::dir(spec);
        let (key_p, pub_p, reg_p, env_p) = paths(spec);
        let mut r = rec.get::<Record>().unwrap_or_default();
        r.key = key_p.clone();
        r.registry = reg_p.clone();
        r.env = env_p.clone();
        let mut out = Vec::new();
        owner::dirs_under(&h, &h.join(".defenseclaw"), 0o750, who)?;

        let key = match read_opt(&key_p)? {
            Some(pem) => {
                let text = String::from_utf8_lossy(&pem);
                let k = SigningKey::from_pkcs8_pem(&text).map_err(|e| {
                    Error::host(
                        key_p.display().to_string(),
                        format!("is not an Ed25519 private key in PKCS#8 PEM ({e})"),
                        "move it away (a new key is made) or put the right key there, then re-run",
                    )
                })?;
                let m = fs::symlink_metadata(&key_p).map_err(|e| Error::io("stat", &key_p, e))?;
                if m.mode() & 0o777 != 0o600 || m.uid() != who.uid {
                    owner::set(&key_p, false, 0o600, who)?;
                    out.push(format!(
                        "{}: owner and mode reset to {} 0600",
                        key_p.display(),
                        spec.name
                    ));
                }
                k
            }
            None => {
                let k = SigningKey::from_bytes(&random::<32>()?);
                r.key_created = true;
                rec.put(&r)?;
                owner::write(&key_p, key_pem(&k)?.as_bytes(), 0o600, who)?;
                out.push(format!("created {} (Ed25519, PKCS#8 PEM, 0600)", key_p.display()));
                k
            }
        };

        let pub_pem = public_pem(&key)?;
        if files::hash_of(&pub_p)?.as_deref() != Some(&files::sha256_hex(pub_pem.as_bytes())) {
            if owner::is_symlink(&pub_p) {
                return Err(owner::symlink_refused(&pub_p));
            }
            owner::write(&pub_p, pub_pem.as_bytes(), 0o644, who)?;
            out.push(format!("wrote {}", pub_p.display()));
        }

        let existing = match read_opt(&reg_p)? {
            Some(b) => Some(serde_json::from_slice::<Value>(&b).map_err(|e| {
                Error::host(
                    reg_p.display().to_string(),
                    format!("malformed JSON at line {}, column {}: {e}", e.line(), e.column()),
                    "fix the file or move it away, then re-run",
                )
            })?),
            None => None,
        };
        let doc = register(existing.as_ref(), &spec.name, &key)?;
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        if files::hash_of(&reg_p)?.as_deref() != Some(&files::sha256_hex(text.as_bytes())) {
            owner::write(&reg_p, text.as_bytes(), 0o640, who)?;
            out.push(format!("registered device {} in {}", spec.name, reg_p.display()));
        }

        match read_opt(&env_p)? {
            Some(b) if token_in(&String::from_utf8_lossy(&b)).is_some() => {
                let m = fs::symlink_metadata(&env_p).map_err(|e| Error::io("stat", &env_p, e))?;
                if m.mode() & 0o077 != 0 {
                    owner::set(
                        &env_p,
                        false,
                        0o600,
                        Owner {
                            uid: m.uid(),
                            gid: m.gid(),
                        },
                    )?;
                    out.push(format!("{}: holds a token, mode tightened to 0600", env_p.display()));
                }
            }
            prev => {
                let mut text = prev
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                // An empty `OPENCLAW_GATEWAY_TOKEN=` line gives way to ours.
                text = text
                    .lines()
                    .filter(|l| !l.trim().starts_with("OPENCLAW_GATEWAY_TOKEN="))
                    .map(|l| format!("{l}\n"))
                    .collect();
                text.push_str(&token_line()?);
                r.token_written = true;
                rec.put(&r)?;
                owner::write(&env_p, text.as_bytes(), 0o600, who)?;
                out.push(format!(
                    "wrote a random OPENCLAW_GATEWAY_TOKEN to {} (0600)",
                    env_p.display()
                ));
            }
        }
        rec.put(&r)?;
        Ok(out)
    }

    fn revert(&self, _undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        Ok(vec![format!(
            "kept {}, {} and {} (the device's identity; --purge removes them with the home)",
            r.key.display(),
            r.registry.display(),
            r.env.display()
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer;
    use ed25519_dalek::Verifier;

    #[test]
    fn key_round_trips_through_pkcs8_pem() {
        let k = SigningKey::from_bytes(&random::<32>().expect("random"));
        let pem = key_pem(&k).expect("pem");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let back = SigningKey::from_pkcs8_pem(&pem).expect("parse");
        let sig = back.sign(b"pair me");
        k.verifying_key().verify(b"pair me", &sig).expect("same key");
    }

    #[test]
    fn tokens_are_random_hex_and_found_in_env_text() {
        let a = token_line().expect("token");
        let b = token_line().expect("token");
        assert_ne!(a, b);
        let t = token_in(&a).expect("set");
        assert_eq!(t.len(), 64);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(token_in("OPENCLAW_GATEWAY_TOKEN=\n"), None);
        assert_eq!(token_in("A=1\nOPENCLAW_GATEWAY_TOKEN=\"abc\"\n"), Some("abc"));
        assert_eq!(token_in("# nothing\n"), None);
    }

    #[test]
    fn register_replaces_our_entry_and_keeps_others() {
        let k = SigningKey::from_bytes(&[7u8; 32]);
        let existing = json!({"devices": [{"id": "laptop"}, {"id": "sandbox", "public_key_hex": "old"}]});
        let doc = register(Some(&existing), "sandbox", &k).expect("register");
        let list = doc["devices"].as_array().expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["id"], "laptop");
        assert_eq!(list[1]["public_key_hex"], hex(k.verifying_key().as_bytes()));
        assert!(register(Some(&json!({"x": 1})), "sandbox", &k).is_err());
    }
}
