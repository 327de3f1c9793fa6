//! Device pre-pairing (skipped by `--no-auto-pair`), the way DefenseClaw
//! does it: the sidecar's own device key (`device.key` in its data
//! directory: PEM `ED25519 PRIVATE KEY` holding the raw 32-byte seed, owned
//! by the sidecar, 0600) is used if there, else created in that format. Its
//! entry goes into the sandbox's `~/.openclaw/devices/paired.json`, keyed by
//! the device id (hex SHA-256 of the raw public key), keeping every other
//! device: the sidecar's gateway client is then accepted without an
//! approval step. Also `~/.defenseclaw/.host-ip`, which the DefenseClaw
//! page's verify step reads.
//!
//! `--disable` removes only our entry (and `paired.json` if we made it and
//! nothing else is in it) and `.host-ip`; the sidecar's key is kept.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::home::{self, HomeRef};
use super::openclaw_store::{self, Unpaired};
use super::sidecar_data::DataDir;
use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::agent_home::{AgentHome, Removal, CONFIG_CAP};
use crate::sys::files;

pub struct Pairing;

const PAIRED: &str = ".openclaw/devices/paired.json";
/// Where OpenClaw (2026.9.6 on) moves `paired.json` once its gateway has
/// imported it into its own pairing store (`state/openclaw.sqlite`): the
/// legacy file is its import channel, archived under this name.
const IMPORTED: &str = ".openclaw/devices/paired.json.migrated";
const HOST_IP: &str = ".defenseclaw/.host-ip";
const KEY: &str = "device.key";
const PEM_LABEL: &str = "ED25519 PRIVATE KEY";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    at: HomeRef,
    #[serde(default)]
    sidecar: Option<DataDir>,
    device_id: String,
    key_created: bool,
    /// Directories made in the home (relative), outermost first.
    created_dirs: Vec<PathBuf>,
    paired_created: bool,
    host_ip_sha256: Option<String>,
    /// `~/.openclaw`'s mode before we let the sandbox's group (the
    /// sidecar's supplementary group) through it, if we changed it.
    #[serde(default)]
    openclaw_dir_mode: Option<u32>,
    /// `devices/`'s mode before we opened it to the group, if we changed it.
    #[serde(default)]
    devices_mode: Option<u32>,
}

/// The sidecar repairs its own entry in `paired.json` at run time: the
/// unit gives it the sandbox's group, which may pass `~/.openclaw` and
/// write `devices/` (nothing else there).
const OPENCLAW_GROUP_PASS: u32 = 0o010;
const DEVICES_MODE: u32 = 0o770;

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

/// 32 random bytes in hex (a gateway token).
pub fn random_hex32() -> Result<String> {
    Ok(hex(&random::<32>()?))
}

fn b64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if pad {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn unb64(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = STD.iter().position(|x| *x == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Some(out)
}

/// DefenseClaw's device key file: the raw seed under `ED25519 PRIVATE KEY`.
pub fn key_pem(key: &SigningKey) -> String {
    format!(
        "-----BEGIN {PEM_LABEL}-----\n{}\n-----END {PEM_LABEL}-----\n",
        b64(&key.to_bytes(), STD, true)
    )
}

/// Parse DefenseClaw's device key file.
pub fn parse_key(pem: &[u8]) -> Option<SigningKey> {
    let text = std::str::from_utf8(pem).ok()?;
    let body = text
        .trim()
        .strip_prefix(&format!("-----BEGIN {PEM_LABEL}-----"))?
        .strip_suffix(&format!("-----END {PEM_LABEL}-----"))?;
    let seed: [u8; 32] = unb64(body)?.try_into().ok()?;
    Some(SigningKey::from_bytes(&seed))
}

/// The device id OpenClaw uses: hex SHA-256 of the raw public key.
pub fn device_id(key: &SigningKey) -> String {
    hex(&Sha256::digest(key.verifying_key().as_bytes()))
}

/// `paired.json` with the sidecar's device put in (replacing an older entry
/// of the same id, keeping every other device). `now_ms` stamps approval.
pub fn register(existing: Option<&Value>, key: &SigningKey, now_ms: u64) -> Result<Value> {
    let token = random::<32>()?;
    let mut doc = existing.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let Some(map) = doc.as_object_mut() else {
        return Err(Error::host(
            "paired.json",
            "is not a JSON object keyed by device id",
            "fix the file or move it away, then re-run",
        ));
    };
    let id = device_id(key);
    let old = map.get(&id).cloned().unwrap_or(Value::Null);
    let scopes = json!([
        "operator.read",
        "operator.write",
        "operator.admin",
        "operator.approvals"
    ]);
    map.insert(
        id.clone(),
        json!({
            "deviceId": id,
            "publicKey": b64(key.verifying_key().as_bytes(), URL, false),
            "displayName": "defenseclaw-sidecar",
            "platform": "linux",
            "clientId": "gateway-client",
            "clientMode": "backend",
            "role": "operator",
            "roles": ["operator"],
            "scopes": scopes,
            "approvedScopes": scopes,
            // An operator token makes the role effective (without one the
            // gateway answers NOT_PAIRED role-upgrade, as DefenseClaw's own
            // `"tokens": {}` entry gets).
            "tokens": old
                .get("tokens")
                .filter(|t| t.get("operator").is_some())
                .cloned()
                .unwrap_or_else(|| json!({"operator": {
                    "token": b64(&token, URL, false),
                    "role": "operator",
                    "scopes": scopes,
                    "createdAtMs": now_ms,
                }})),
            "createdAtMs": old.get("createdAtMs").cloned().unwrap_or_else(|| json!(now_ms)),
            "approvedAtMs": old.get("approvedAtMs").cloned().unwrap_or_else(|| json!(now_ms)),
        }),
    );
    Ok(doc)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn read_paired(h: &AgentHome) -> Result<Option<Value>> {
    let Some(f) = h.read(Path::new(PAIRED), CONFIG_CAP)? else {
        return Ok(None);
    };
    serde_json::from_slice(&f.bytes).map(Some).map_err(|e| {
        Error::host(
            h.show(Path::new(PAIRED)),
            format!("malformed JSON at line {}, column {}: {e}", e.line(), e.column()),
            "fix the file or move it away, then re-run",
        )
    })
}

/// Whether OpenClaw imported `device_id` from a `paired.json` of ours: no
/// `paired.json` now, and the archive it leaves holds the device.
fn imported_by_openclaw(h: &AgentHome, device_id: &str) -> bool {
    let pending = h.read(Path::new(PAIRED), CONFIG_CAP).ok().flatten().is_some();
    !pending
        && h.read(Path::new(IMPORTED), CONFIG_CAP)
            .ok()
            .flatten()
            .and_then(|f| serde_json::from_slice::<Value>(&f.bytes).ok())
            .is_some_and(|doc| doc.get(device_id).is_some())
}

impl Step for Pairing {
    fn id(&self) -> &'static str {
        "pairing"
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        let id = self.id();
        if let Ok(d) = DataDir::of(spec) {
            inv.file_generated(
                id,
                &d.path().join(KEY),
                spec.sidecar_user
                    .as_deref()
                    .unwrap_or("root (handed to the sidecar's dynamic user)"),
                Some(0o600),
                "the sidecar's Ed25519 device key (PEM ED25519 PRIVATE KEY, raw seed), if it has none",
                "kept (the sidecar's identity)",
            );
        }
        inv.file_generated(
            id,
            &home::dir(spec).join(PAIRED),
            &spec.name,
            Some(0o600),
            "the sidecar's device, pre-paired (other devices kept)",
            "our entry removed",
        );
        inv.file(
            id,
            &home::dir(spec).join(HOST_IP),
            &spec.name,
            0o644,
            format!("{}\n", spec.net.host_ip).as_bytes(),
            "removed if unchanged",
        );
    }

    fn wanted(&self, spec: &Spec) -> bool {
        spec.auto_pair
    }

    fn plan(&self, spec: &Spec, _rec: Option<&Value>) -> Result<Vec<String>> {
        let d = DataDir::of(spec)?;
        let mut out = Vec::new();
        let key = match d.open(&spec.root).and_then(|o| o.read(KEY)) {
            Ok(Some(pem)) => parse_key(&pem),
            _ => None,
        };
        if key.is_none() {
            out.push(format!("create {} (Ed25519, 0600)", d.path().join(KEY).display()));
        }
        let h = home::open(spec).ok();
        let paired = h.as_ref().and_then(|h| read_paired(h).ok().flatten());
        let registered = match (&key, &paired, &h) {
            (Some(k), Some(p), _) => p.get(device_id(k)).is_some(),
            (Some(k), None, Some(h)) => imported_by_openclaw(h, &device_id(k)),
            _ => false,
        };
        if !registered {
            out.push(format!(
                "pre-pair the sidecar's device in {}",
                home::dir(spec).join(PAIRED).display()
            ));
        }
        let want_ip = files::sha256_hex(format!("{}\n", spec.net.host_ip).as_bytes());
        if h.and_then(|h| h.hash(Path::new(HOST_IP), CONFIG_CAP).ok().flatten()) != Some(want_ip) {
            out.push(format!("write {}", home::dir(spec).join(HOST_IP).display()));
        }
        Ok(out)
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let h = home::open(spec)?;
        let mut r = rec.get::<Record>().unwrap_or_default();
        r.at = HomeRef::of(spec, rec)?;
        let dir = DataDir::of(spec)?;
        r.sidecar = Some(dir.clone());
        let side = dir.open(&spec.root)?;
        let mut out = Vec::new();

        let key = match side.read(KEY)? {
            Some(pem) => parse_key(&pem).ok_or_else(|| {
                Error::host(
                    side.show(KEY),
                    format!(
                        "is not an Ed25519 device key in DefenseClaw's format (PEM `{PEM_LABEL}`, raw 32-byte seed)"
                    ),
                    "move it away (setup makes a new one) or put the sidecar's real key there, then re-run",
                )
            })?,
            None => {
                let k = SigningKey::from_bytes(&random::<32>()?);
                r.key_created = true;
                rec.put(&r)?;
                side.make()?;
                side.write(KEY, key_pem(&k).as_bytes(), 0o600)?;
                out.push(format!(
                    "created {} (Ed25519, DefenseClaw's format, 0600)",
                    side.show(KEY)
                ));
                k
            }
        };
        r.device_id = device_id(&key);

        let devices = Path::new(PAIRED).parent().unwrap_or(Path::new(".openclaw"));
        if home::note_missing_dirs(&h, devices, &mut r.created_dirs)? {
            rec.put(&r)?;
        }
        h.make_dirs(devices, 0o700)?;
        let oc_dir = Path::new(".openclaw");
        if let Some(mode) = h.dir_mode(oc_dir)?.filter(|m| m & OPENCLAW_GROUP_PASS == 0) {
            r.openclaw_dir_mode = Some(mode);
            rec.put(&r)?;
            h.set_mode(oc_dir, mode | OPENCLAW_GROUP_PASS)?;
            out.push(format!(
                "{}: the sidecar's group may pass (mode {:o})",
                h.show(oc_dir),
                mode | OPENCLAW_GROUP_PASS
            ));
        }
        if let Some(mode) = h.dir_mode(devices)?.filter(|m| *m != DEVICES_MODE) {
            r.devices_mode = r.devices_mode.or(Some(mode));
            rec.put(&r)?;
            h.set_mode(devices, DEVICES_MODE)?;
            out.push(format!(
                "{}: the sidecar's group may write (mode {DEVICES_MODE:o})",
                h.show(devices)
            ));
        }
        let existing = read_paired(&h)?;
        let already = existing.as_ref().and_then(|p| p.get(&r.device_id)).is_some_and(|e| {
            e.get("publicKey").and_then(Value::as_str) == Some(b64(key.verifying_key().as_bytes(), URL, false).as_str())
        }) || (existing.is_none() && imported_by_openclaw(&h, &r.device_id));
        if !already {
            r.paired_created |= existing.is_none();
            rec.put(&r)?;
            let doc = register(existing.as_ref(), &key, now_ms())?;
            h.write(Path::new(PAIRED), pretty(&doc).as_bytes(), 0o600)?;
            out.push(format!(
                "pre-paired the sidecar's device {} in {}",
                &r.device_id[..12],
                h.show(Path::new(PAIRED))
            ));
        }

        let ip = format!("{}\n", spec.net.host_ip);
        let sha = files::sha256_hex(ip.as_bytes());
        if h.hash(Path::new(HOST_IP), CONFIG_CAP).ok().flatten().as_deref() != Some(sha.as_str()) {
            let parent = Path::new(".defenseclaw");
            home::note_missing_dirs(&h, parent, &mut r.created_dirs)?;
            r.host_ip_sha256 = Some(sha);
            rec.put(&r)?;
            h.make_dirs(parent, 0o750)?;
            h.write(Path::new(HOST_IP), ip.as_bytes(), 0o644)?;
            out.push(format!("wrote {} ({})", h.show(Path::new(HOST_IP)), spec.net.host_ip));
        }
        rec.put(&r)?;
        Ok(out)
    }

    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        let h = r.at.open()?;
        let mut out = Vec::new();
        if !r.device_id.is_empty() {
            match read_paired(&h) {
                Ok(Some(mut doc)) => {
                    let had = doc.as_object_mut().and_then(|m| m.shift_remove(&r.device_id)).is_some();
                    let empty = doc.as_object().is_some_and(Map::is_empty);
                    if r.paired_created && empty {
                        h.remove_file(Path::new(PAIRED))?;
                        out.push(format!("removed {}", h.show(Path::new(PAIRED))));
                    } else if had {
                        h.write(Path::new(PAIRED), pretty(&doc).as_bytes(), 0o600)?;
                        out.push(format!(
                            "removed the sidecar's device from {}",
                            h.show(Path::new(PAIRED))
                        ));
                    }
                }
                Ok(None) if imported_by_openclaw(&h, &r.device_id) => {
                    // In OpenClaw's own store now: taken out there, by a
                    // child of ours running as the sandbox user.
                    let id12 = &r.device_id[..12.min(r.device_id.len())];
                    match openclaw_store::unpair_as(&r.at.home, r.at.uid, r.at.gid, &r.device_id) {
                        Ok(Unpaired::Removed) => out.push(format!(
                            "removed the sidecar's device {id12} from OpenClaw's pairing store ({})",
                            h.show(Path::new(openclaw_store::DB))
                        )),
                        Ok(Unpaired::Absent) => {}
                        Err(e) => out.push(format!("kept the sidecar's device {id12} paired: {e}")),
                    }
                }
                Ok(None) => {}
                Err(e) => out.push(format!("left {} alone: {e}", h.show(Path::new(PAIRED)))),
            }
        }
        // Modes we opened for the sidecar, while they are still ours.
        for (rel, old, ours) in [
            (".openclaw/devices", r.devices_mode, DEVICES_MODE),
            (
                ".openclaw",
                r.openclaw_dir_mode,
                r.openclaw_dir_mode.unwrap_or(0) | OPENCLAW_GROUP_PASS,
            ),
        ] {
            if let Some(old) = old {
                if h.dir_mode(Path::new(rel)).ok().flatten() == Some(ours) {
                    h.set_mode(Path::new(rel), old)?;
                }
            }
        }
        if let Some(sha) = &r.host_ip_sha256 {
            if h.remove_if(Path::new(HOST_IP), sha)? == Removal::Removed {
                out.push(format!("removed {}", h.show(Path::new(HOST_IP))));
            }
        }
        h.remove_dirs(&r.created_dirs)?;
        match &r.sidecar {
            // A key setup made in the dynamic user's state directory is
            // ours alone: it goes with the sandbox.
            Some(d @ DataDir::State { .. }) if r.key_created => {
                d.open(&undo.root)?.remove(KEY)?;
                out.push(format!("removed {}", d.path().join(KEY).display()));
            }
            Some(d) => out.push(format!(
                "kept {} (the sidecar's identity)",
                d.path().join(KEY).display()
            )),
            None => {}
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_defenseclaws_pem() {
        let k = SigningKey::from_bytes(&random::<32>().expect("random"));
        let pem = key_pem(&k);
        assert!(pem.starts_with("-----BEGIN ED25519 PRIVATE KEY-----\n"), "{pem}");
        assert_eq!(parse_key(pem.as_bytes()).expect("parse").to_bytes(), k.to_bytes());
        assert!(parse_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_none());
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(b64(b"foobar", STD, true), "Zm9vYmFy");
        assert_eq!(b64(b"fo", STD, true), "Zm8=");
        assert_eq!(b64(&[0xfb, 0xff], URL, false), "-_8");
        assert_eq!(unb64("Zm9vYmE=").expect("decode"), b"fooba");
    }

    #[test]
    fn register_keys_by_device_id_and_keeps_others() {
        let k = SigningKey::from_bytes(&[7u8; 32]);
        let id = device_id(&k);
        assert_eq!(id.len(), 64);
        let existing = json!({"laptop": {"deviceId": "laptop"}, id.clone(): {"createdAtMs": 5}});
        let doc = register(Some(&existing), &k, 99).expect("register");
        assert_eq!(doc["laptop"]["deviceId"], "laptop");
        let e = &doc[&id];
        assert_eq!(e["deviceId"], id.as_str());
        assert_eq!(e["createdAtMs"], 5);
        assert_eq!(
            e["tokens"]["operator"]["role"], "operator",
            "an operator token makes the role effective"
        );
        let fresh = register(None, &k, 7).expect("fresh");
        assert_eq!(
            fresh[&id]["tokens"]["operator"]["token"].as_str().map(str::len),
            Some(43)
        );
        assert_eq!(e["clientMode"], "backend");
        assert_eq!(
            e["publicKey"].as_str().expect("key").len(),
            43,
            "raw 32 bytes, base64url unpadded"
        );
        assert!(register(Some(&json!([1])), &k, 1).is_err());
    }
}
