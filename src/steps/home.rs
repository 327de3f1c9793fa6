//! What the steps that write into the sandbox user's home share: who owns
//! it, and seeding a file without ever overwriting one the operator edited.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::owner::{self, Owner};
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

/// A file we wrote and the SHA-256 of what we wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub path: PathBuf,
    pub sha256: String,
}

/// What `seed` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeded {
    /// Written (new, or our unedited copy replaced).
    Wrote,
    /// Already held exactly this.
    Same,
    /// Holds something we did not write: the operator's, kept.
    Kept,
}

/// Decide what to do with a file we want to hold `wanted`, given what is
/// there (`current`) and what we last wrote (`ours`). Pure.
pub fn decide(current: Option<&str>, wanted: &str, ours: Option<&str>) -> Seeded {
    match current {
        Some(c) if c == wanted => Seeded::Same,
        None => Seeded::Wrote,
        Some(c) if Some(c) == ours => Seeded::Wrote,
        Some(_) => Seeded::Kept,
    }
}

/// Put `body` at `path` unless the operator changed the file since we
/// wrote it (`ours` is the hash of what we wrote, if we ever did).
pub fn seed(path: &Path, body: &[u8], mode: u32, who: Owner, ours: Option<&str>) -> Result<Seeded> {
    if owner::is_symlink(path) {
        return Err(owner::symlink_refused(path));
    }
    let wanted = files::sha256_hex(body);
    let current = files::hash_of(path)?;
    let d = decide(current.as_deref(), &wanted, ours);
    if d == Seeded::Wrote {
        owner::write(path, body, mode, who)?;
    }
    Ok(d)
}

/// The line a step reports for a kept file.
pub fn kept_line(path: &Path) -> String {
    format!(
        "kept {}: changed since sandbox wrote it (an operator edit), not overwritten",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edited_files_are_kept_and_ours_replaced() {
        assert_eq!(decide(None, "w", None), Seeded::Wrote);
        assert_eq!(decide(Some("w"), "w", None), Seeded::Same);
        assert_eq!(
            decide(Some("old"), "w", Some("old")),
            Seeded::Wrote,
            "our unedited copy"
        );
        assert_eq!(decide(Some("edit"), "w", Some("old")), Seeded::Kept, "operator edit");
        assert_eq!(decide(Some("theirs"), "w", None), Seeded::Kept, "never ours");
    }
}

/// The record of a step that only writes files into the home (scripts,
/// extras): what it wrote and which directories it made.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FileSet {
    pub created_dirs: Vec<PathBuf>,
    pub files: Vec<Written>,
}

/// Plan lines for `wanted` (path, body, mode).
pub fn plan_files(wanted: &[(PathBuf, String, u32)], rec: Option<&FileSet>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (p, body, mode) in wanted {
        let ours = rec
            .and_then(|r| r.files.iter().find(|f| &f.path == p))
            .map(|f| f.sha256.as_str());
        match decide(files::hash_of(p)?.as_deref(), &files::sha256_hex(body.as_bytes()), ours) {
            Seeded::Wrote => out.push(format!("write {} ({mode:o})", p.display())),
            Seeded::Same => {}
            Seeded::Kept => out.push(kept_line(p)),
        }
    }
    Ok(out)
}

/// Seed `wanted` (path, body, mode) below the home, owned by `who`,
/// recording through `put` before each change.
pub fn apply_files(
    home: &Path,
    wanted: &[(PathBuf, String, u32)],
    who: Owner,
    r: &mut FileSet,
    put: &mut dyn FnMut(&FileSet) -> Result<()>,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (p, body, mode) in wanted {
        if let Some(parent) = p.parent() {
            // Write-ahead: the directories are recorded before they exist.
            let missing: Vec<PathBuf> = files::missing_dirs(parent)
                .into_iter()
                .filter(|d| d.starts_with(home) && !r.created_dirs.contains(d))
                .collect();
            if !missing.is_empty() {
                r.created_dirs.extend(missing);
                put(r)?;
            }
            owner::dirs_under(home, parent, 0o750, who)?;
        }
        let sha = files::sha256_hex(body.as_bytes());
        let ours = r.files.iter().find(|f| &f.path == p).map(|f| f.sha256.clone());
        if decide(files::hash_of(p)?.as_deref(), &sha, ours.as_deref()) == Seeded::Wrote {
            r.files.retain(|f| &f.path != p);
            r.files.push(Written {
                path: p.clone(),
                sha256: sha.clone(),
            });
            put(r)?;
        }
        match seed(p, body.as_bytes(), *mode, who, ours.as_deref())? {
            Seeded::Wrote => out.push(format!("wrote {} ({mode:o})", p.display())),
            Seeded::Same => {
                if ours.is_none() {
                    r.files.push(Written {
                        path: p.clone(),
                        sha256: sha,
                    });
                    put(r)?;
                }
            }
            Seeded::Kept => out.push(kept_line(p)),
        }
    }
    Ok(out)
}

/// Remove what we wrote if unchanged, then the directories we made (if
/// empty). Edited files stay, and are named.
pub fn revert_files(r: &FileSet) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in &r.files {
        if owner::is_symlink(&f.path) {
            out.push(format!("left {} alone: it is a symbolic link now", f.path.display()));
        } else if files::hash_of(&f.path)?.is_none() {
            // Never written, or killed before the rename: only a temp name may be left.
            files::remove_temp(&f.path)?;
        } else if files::remove_if_ours(&f.path, &f.sha256)? {
            out.push(format!("removed {}", f.path.display()));
        } else {
            out.push(kept_line(&f.path));
        }
    }
    files::remove_dirs(&r.created_dirs)?;
    Ok(out)
}

/// A step that seeds a fixed set of files in the home (owned by the
/// sandbox user) and on revert removes those still as written. `Step` is
/// implemented once for all of them below.
pub trait SeededFiles {
    const ID: &'static str;
    /// The inverse, as the change-control report states it.
    const INVERSE: &'static str;
    /// (path, content, mode) for this spec.
    fn files(spec: &Spec) -> Vec<(PathBuf, String, u32)>;
}

impl<T: SeededFiles> Step for T {
    fn id(&self) -> &'static str {
        T::ID
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        for (p, body, mode) in T::files(spec) {
            inv.file(T::ID, &p, &spec.name, mode, body.as_bytes(), T::INVERSE);
        }
    }

    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
        let r = rec.and_then(|v| serde_json::from_value::<FileSet>(v.clone()).ok());
        plan_files(&T::files(spec), r.as_ref())
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let who = owner(spec)?;
        let mut r = rec.get::<FileSet>().unwrap_or_default();
        let out = apply_files(&dir(spec), &T::files(spec), who, &mut r, &mut |r| rec.put(r))?;
        rec.put(&r)?;
        Ok(out)
    }

    fn revert(&self, _undo: &Undo, v: &Value) -> Result<Vec<String>> {
        revert_files(&data(T::ID, v)?)
    }
}
