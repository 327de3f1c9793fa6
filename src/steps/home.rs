//! What the steps that write into the sandbox user's home share: where it
//! is and whose, and seeding a file without ever overwriting one the
//! operator edited. Every access goes through [`AgentHome`]; paths in the
//! records are relative to the home.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::originals;
use crate::spec::Spec;
use crate::sys::agent_home::{AgentHome, CONFIG_CAP};
use crate::sys::owner::Owner;
use crate::sys::{files, users};

/// The home as seen under `--root`.
pub fn dir(spec: &Spec) -> PathBuf {
    spec.root.path(&spec.sandbox_home)
}

/// The sandbox user's uid and gid (the `user` step made or adopted it).
pub fn owner(spec: &Spec) -> Result<Owner> {
    let Some(acct) = users::user(&spec.root, &spec.name)? else {
        return Err(Error::host(
            format!("user {}", spec.name),
            "does not exist",
            "the `user` step creates it: re-run `sandbox setup` (it runs first)",
        ));
    };
    Ok(Owner {
        uid: acct.uid,
        gid: acct.gid,
    })
}

/// Where a step's record says the home is, whose it is, and where the
/// originals it replaced are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeRef {
    pub home: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub state_dir: PathBuf,
}

impl HomeRef {
    pub fn of(spec: &Spec, rec: &Recorder<'_>) -> Result<HomeRef> {
        let who = owner(spec)?;
        Ok(HomeRef {
            home: dir(spec),
            uid: who.uid,
            gid: who.gid,
            state_dir: rec.state_dir(),
        })
    }

    /// Open the home a record names. A record is never a way to act as
    /// root: uid 0 is refused, and the home must be that uid's.
    pub fn open(&self) -> Result<AgentHome> {
        if self.uid == 0 {
            return Err(Error::host(
                self.home.display().to_string(),
                "the record names uid 0 as the sandbox user",
                "the record was edited; restore it from a backup",
            ));
        }
        AgentHome::open(
            &self.home,
            Owner {
                uid: self.uid,
                gid: self.gid,
            },
        )
    }
}

/// Open the spec's home (the user must exist).
pub fn open(spec: &Spec) -> Result<AgentHome> {
    AgentHome::open(&dir(spec), owner(spec)?)
}

/// A file we wrote: where (relative to the home), the SHA-256 of what we
/// wrote, and the SHA-256 of what was there before, kept under the state
/// directory (None: there was nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub path: PathBuf,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

/// What to do with a file we want to hold `wanted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seeded {
    /// Write it: new, or our unedited copy replaced.
    Wrote,
    /// Write it, keeping what was there (never ours) to put back later.
    Replaced,
    /// Already holds exactly this.
    Same,
    /// Holds an edit of what we wrote, or something we do not read (a
    /// link, a FIFO, another owner's file): kept, with the reason.
    Kept(String),
}

/// Decide, given what is there (`current`: its hash, or why it cannot be
/// read) and what we last wrote (`ours`). Pure.
pub fn decide(current: std::result::Result<Option<&str>, String>, wanted: &str, ours: Option<&str>) -> Seeded {
    match current {
        Err(why) => Seeded::Kept(why),
        Ok(Some(c)) if c == wanted => Seeded::Same,
        Ok(None) => Seeded::Wrote,
        Ok(Some(c)) if Some(c) == ours => Seeded::Wrote,
        Ok(Some(_)) if ours.is_none() => Seeded::Replaced,
        Ok(Some(_)) => Seeded::Kept("changed since sandbox wrote it (an operator edit)".into()),
    }
}

/// The line a step reports for a kept file.
pub fn kept_line(path: &str, why: &str) -> String {
    format!("kept {path}: {why}; not overwritten")
}

fn current(h: &AgentHome, rel: &Path) -> std::result::Result<Option<crate::sys::agent_home::FileRead>, String> {
    h.read(rel, CONFIG_CAP).map_err(|e| match e {
        Error::Host { why, .. } => why,
        e => e.to_string(),
    })
}

/// Add the directories `rel` still lacks to `created` (write-ahead: the
/// caller records them before making them). Whether any was added.
pub fn note_missing_dirs(h: &AgentHome, rel: &Path, created: &mut Vec<PathBuf>) -> Result<bool> {
    let missing: Vec<PathBuf> = h
        .missing_dirs(rel)?
        .into_iter()
        .filter(|d| !created.contains(d))
        .collect();
    created.extend(missing.iter().cloned());
    Ok(!missing.is_empty())
}

/// The record of a step that writes files into the home (user, scripts,
/// extras): what it wrote and which directories it made.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FileSet {
    #[serde(default)]
    pub at: Option<HomeRef>,
    pub created_dirs: Vec<PathBuf>,
    pub files: Vec<Written>,
}

/// Plan lines for `wanted` (relative path, body, mode).
pub fn plan_files(spec: &Spec, wanted: &[(PathBuf, String, u32)], rec: Option<&FileSet>) -> Result<Vec<String>> {
    let h = match owner(spec) {
        Ok(who) if dir(spec).exists() => Some(AgentHome::open(&dir(spec), who)?),
        _ => None,
    };
    let mut out = Vec::new();
    for (rel, body, mode) in wanted {
        let shown = dir(spec).join(rel).display().to_string();
        let ours = rec
            .and_then(|r| r.files.iter().find(|f| &f.path == rel))
            .map(|f| f.sha256.as_str());
        let now = match &h {
            Some(h) => current(h, rel).map(|f| f.map(|f| f.sha256)),
            None => Ok(None),
        };
        match decide(
            now.as_ref().map(Option::as_deref).map_err(Clone::clone),
            &files::sha256_hex(body.as_bytes()),
            ours,
        ) {
            Seeded::Wrote => out.push(format!("write {shown} ({mode:o})")),
            Seeded::Replaced => out.push(format!(
                "write {shown} ({mode:o}); what is there now is kept by root and put back by --disable"
            )),
            Seeded::Same => {}
            Seeded::Kept(why) => out.push(kept_line(&shown, &why)),
        }
    }
    Ok(out)
}

/// Seed `wanted` (relative path, body, mode) in the home, recording
/// through `put` before each change.
pub fn apply_files(
    h: &AgentHome,
    at: &HomeRef,
    wanted: &[(PathBuf, String, u32)],
    r: &mut FileSet,
    put: &mut dyn FnMut(&FileSet) -> Result<()>,
) -> Result<Vec<String>> {
    r.at = Some(at.clone());
    let mut out = Vec::new();
    for (rel, body, mode) in wanted {
        let shown = h.show(rel);
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Write-ahead: the directories are recorded before they exist.
            if note_missing_dirs(h, parent, &mut r.created_dirs)? {
                put(r)?;
            }
            h.make_dirs(parent, 0o750)?;
        }
        let sha = files::sha256_hex(body.as_bytes());
        let prior = r.files.iter().find(|f| &f.path == rel).cloned();
        let now = current(h, rel);
        let decision = decide(
            now.as_ref()
                .map(|f| f.as_ref().map(|f| f.sha256.as_str()))
                .map_err(Clone::clone),
            &sha,
            prior.as_ref().map(|f| f.sha256.as_str()),
        );
        let original = match (&decision, &now) {
            (Seeded::Replaced, Ok(Some(f))) => Some(originals::keep(&at.state_dir, &f.bytes)?),
            _ => prior.as_ref().and_then(|p| p.original.clone()),
        };
        match decision {
            Seeded::Wrote | Seeded::Replaced => {
                r.files.retain(|f| &f.path != rel);
                r.files.push(Written {
                    path: rel.clone(),
                    sha256: sha,
                    original: original.clone(),
                });
                put(r)?;
                h.write(rel, body.as_bytes(), *mode)?;
                out.push(match original {
                    Some(_) if prior.is_none() => {
                        format!("wrote {shown} ({mode:o}); the file that was there is kept by root for --disable")
                    }
                    _ => format!("wrote {shown} ({mode:o})"),
                });
            }
            Seeded::Same => {
                if prior.is_none() {
                    r.files.push(Written {
                        path: rel.clone(),
                        sha256: sha,
                        original: None,
                    });
                    put(r)?;
                }
            }
            Seeded::Kept(why) => out.push(kept_line(&shown, &why)),
        }
    }
    Ok(out)
}

/// Put back what was there before each file we wrote (from root's copy),
/// or remove the file, while it still holds what we wrote; then the
/// directories we made (if empty). Edited files stay, and are named.
pub fn revert_files(undo: &Undo, r: &FileSet) -> Result<Vec<String>> {
    let Some(at) = &r.at else {
        return Ok(vec![format!(
            "kept {} file(s): the record (from an older version) does not say whose home they are in; remove them by hand",
            r.files.len()
        )]);
    };
    let h = match at.open() {
        Ok(h) => h,
        Err(e) => return Ok(vec![format!("left the home alone: {e}")]),
    };
    let state_dir = originals::confined(&undo.root, &at.state_dir)?;
    let mut out = Vec::new();
    for f in &r.files {
        out.extend(revert_file(&h, &state_dir, f)?);
    }
    h.remove_dirs(&r.created_dirs)?;
    Ok(out)
}

/// Undo one recorded write.
pub fn revert_file(h: &AgentHome, state_dir: &Path, f: &Written) -> Result<Option<String>> {
    let shown = h.show(&f.path);
    let line = match (current(h, &f.path), &f.original) {
        (Ok(Some(now)), Some(orig)) if now.sha256 == f.sha256 => {
            let bytes = originals::load(state_dir, orig)?;
            h.write(&f.path, &bytes, now.mode)?;
            Some(format!("restored {shown} as it was before setup"))
        }
        (Ok(Some(now)), None) if now.sha256 == f.sha256 => {
            h.remove_file(&f.path)?;
            Some(format!("removed {shown}"))
        }
        (Ok(None), _) => {
            h.remove_temp(&f.path);
            None
        }
        (Ok(Some(_)), _) => Some(kept_line(&shown, "changed since sandbox wrote it (an operator edit)")),
        (Err(why), _) => Some(kept_line(&shown, &why)),
    };
    if let Some(orig) = &f.original {
        originals::forget(state_dir, orig)?;
    }
    Ok(line)
}

/// A step that seeds a fixed set of files in the home (owned by the
/// sandbox user) and on revert removes those still as written. `Step` is
/// implemented once for all of them below.
pub trait SeededFiles {
    const ID: &'static str;
    /// The inverse, as the change-control report states it.
    const INVERSE: &'static str;
    /// (path relative to the home, content, mode) for this spec.
    fn files(spec: &Spec) -> Vec<(PathBuf, String, u32)>;
}

impl<T: SeededFiles> Step for T {
    fn id(&self) -> &'static str {
        T::ID
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        for (p, body, mode) in T::files(spec) {
            inv.file(T::ID, &dir(spec).join(p), &spec.name, mode, body.as_bytes(), T::INVERSE);
        }
    }

    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
        let r = rec.and_then(|v| serde_json::from_value::<FileSet>(v.clone()).ok());
        plan_files(spec, &T::files(spec), r.as_ref())
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let h = open(spec)?;
        let at = HomeRef::of(spec, rec)?;
        let mut r = rec.get::<FileSet>().unwrap_or_default();
        let out = apply_files(&h, &at, &T::files(spec), &mut r, &mut |r| rec.put(r))?;
        rec.put(&r)?;
        Ok(out)
    }

    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        revert_files(undo, &data(T::ID, v)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_are_kept_foreign_files_replaced_and_ours_updated() {
        assert_eq!(decide(Ok(None), "w", None), Seeded::Wrote);
        assert_eq!(decide(Ok(Some("w")), "w", None), Seeded::Same);
        assert_eq!(
            decide(Ok(Some("old")), "w", Some("old")),
            Seeded::Wrote,
            "our unedited copy"
        );
        assert!(
            matches!(decide(Ok(Some("edit")), "w", Some("old")), Seeded::Kept(_)),
            "operator edit"
        );
        assert_eq!(
            decide(Ok(Some("skel")), "w", None),
            Seeded::Replaced,
            "a file that was there before us is not an edit of ours"
        );
        assert_eq!(decide(Err("a FIFO".into()), "w", None), Seeded::Kept("a FIFO".into()));
    }
}
