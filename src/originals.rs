//! Originals of files in the agent's home that setup replaced (a
//! pre-existing `.bashrc`, `openclaw.json` as OpenClaw wrote it), kept
//! where the agent cannot reach them: root-owned, 0600, under the state
//! directory (`<state>/originals/<sha256>`). `--disable` restores from
//! here and never reads back from the home what it restores. Each copy is
//! named by its own hash and checked against it when loaded.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::spec::Root;
use crate::sys::files;

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("originals")
}

/// The state directory a record names, if it is one of ours under `root`
/// (a tampered record must not point reads or removals elsewhere).
pub fn confined(root: &Root, state_dir: &Path) -> Result<PathBuf> {
    let base = root.path("/var/lib/sandbox");
    let ok = state_dir.parent() == Some(base.as_path())
        && state_dir
            .file_name()
            .is_some_and(|n| !n.is_empty() && n != "." && n != "..");
    if ok {
        Ok(state_dir.to_path_buf())
    } else {
        Err(Error::State {
            path: state_dir.to_path_buf(),
            cause: format!("is not a state directory under {}", base.display()),
            fix: "the record was edited; restore it from a backup or remove the step's objects by hand".into(),
        })
    }
}

/// Keep `bytes`; returns their SHA-256, by which they are loaded again.
pub fn keep(state_dir: &Path, bytes: &[u8]) -> Result<String> {
    let sha = files::sha256_hex(bytes);
    let d = dir(state_dir);
    files::create_dirs(&d, 0o700)?;
    let p = d.join(&sha);
    if files::hash_of(&p)?.as_deref() != Some(sha.as_str()) {
        files::write_atomic(&p, bytes, 0o600)?;
        // A barrier: the copy is on disk before the write that replaces
        // the file it keeps.
        files::commit()?;
    }
    Ok(sha)
}

/// The original with this hash, checked.
pub fn load(state_dir: &Path, sha: &str) -> Result<Vec<u8>> {
    let p = dir(state_dir).join(sha);
    let bytes = std::fs::read(&p).map_err(|e| Error::io("read the kept original", &p, e))?;
    if files::sha256_hex(&bytes) != sha {
        return Err(Error::State {
            path: p,
            cause: "does not hold what was kept (its hash differs)".into(),
            fix: "restore the file from a backup by hand; sandbox will not put back content it cannot vouch for".into(),
        });
    }
    Ok(bytes)
}

/// Forget the original with this hash (and the directory once empty).
pub fn forget(state_dir: &Path, sha: &str) -> Result<()> {
    let d = dir(state_dir);
    let p = d.join(sha);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", p, e)),
    }
    files::remove_dirs(&[d])
}

/// `--disable` without a record: the kept copies cannot be matched to
/// files any more (the record held which is which), so they go with the
/// state directory.
pub fn forget_all(state_dir: &Path) -> Result<()> {
    let d = dir(state_dir);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", d, e)),
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(e.path()).map_err(|err| Error::io("remove", e.path(), err))?;
        }
    }
    files::remove_dirs(&[d])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_originals_load_by_hash_and_tampering_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let sha = keep(d.path(), b"original").expect("keep");
        assert_eq!(load(d.path(), &sha).expect("load"), b"original");
        std::fs::write(d.path().join("originals").join(&sha), "evil").expect("tamper");
        assert!(load(d.path(), &sha).is_err());
        forget(d.path(), &sha).expect("forget");
        assert!(!d.path().join("originals").exists());
    }

    #[test]
    fn only_state_directories_are_trusted() {
        let root = Root("/r".into());
        assert!(confined(&root, Path::new("/r/var/lib/sandbox/a")).is_ok());
        assert!(confined(&root, Path::new("/r/etc")).is_err());
        assert!(confined(&root, Path::new("/r/var/lib/sandbox/../../etc")).is_err());
    }
}
