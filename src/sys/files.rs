//! Files we own: written atomically (temp file, fsync, rename, fsync the
//! directory) so a crash or a full disk never leaves half a file, and
//! removed only when they still hold what we wrote.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Write `bytes` to `path` atomically with `mode`, durable (fsynced) once
/// this returns. Refuses to replace a symlink: we never write through a
/// link someone planted.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_with(path, bytes, mode, true)
}

/// As [`write_atomic`]; with `durable` false the rename is atomic (a killed
/// process never leaves half a file) but not yet on disk after a power cut.
pub fn write_atomic_with(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::host(
            path.display().to_string(),
            "is a symbolic link; refusing to write through it",
            "remove the link (it was not made by sandbox), then re-run",
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.sandbox-tmp"));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io("write", &tmp, e))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", &tmp, e))?;
        if durable {
            f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        }
        fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))?;
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// The directories `create_dirs(dir)` would make, outermost first: a step
/// records them before making them, so a crash in between leaves none
/// unrecorded.
pub fn missing_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    missing.reverse();
    missing
}

/// Create `dir` and any missing parents; return the ones we created,
/// outermost first, so they can be removed again in reverse.
pub fn create_dirs(dir: &Path, mode: u32) -> Result<Vec<PathBuf>> {
    let missing = missing_dirs(dir);
    for d in &missing {
        fs::create_dir(d).map_err(|e| Error::io("create directory", d, e))?;
        fs::set_permissions(d, fs::Permissions::from_mode(mode)).map_err(|e| Error::io("chmod", d, e))?;
    }
    Ok(missing)
}

/// Remove directories we created (innermost first), each only if empty.
pub fn remove_dirs(created: &[PathBuf]) -> Result<()> {
    for d in created.iter().rev() {
        match fs::remove_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Someone else put files there: it is theirs now, keep it.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTEMPTY) => {}
            // Something is mounted there: not ours to remove.
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {}
            Err(e) => return Err(Error::io("remove directory", d, e)),
        }
    }
    Ok(())
}

/// The file's SHA-256, or None if it does not exist.
pub fn hash_of(path: &Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(sha256_hex(&b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Remove `path` if it is absent or still holds what we wrote (`hash`).
/// Returns whether the file is gone; an edited file is left in place.
pub fn remove_if_ours(path: &Path, hash: &str) -> Result<bool> {
    match hash_of(path)? {
        None => Ok(true),
        Some(h) if h == hash => {
            fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
            Ok(true)
        }
        Some(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        write_atomic(&p, b"one", 0o644).expect("first");
        write_atomic(&p, b"two", 0o600).expect("second");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        assert_eq!(fs::metadata(&p).expect("meta").permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(d.path()).expect("ls").count(), 1, "no temp file left");
    }

    #[test]
    fn atomic_write_refuses_a_symlink() {
        let d = tempfile::tempdir().expect("tempdir");
        let target = d.path().join("target");
        fs::write(&target, "keep").expect("w");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let e = write_atomic(&link, b"evil", 0o644).expect_err("refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read_to_string(&target).expect("r"), "keep");
    }

    #[test]
    fn dirs_created_are_removed_only_when_empty() {
        let d = tempfile::tempdir().expect("tempdir");
        let deep = d.path().join("a/b/c");
        let made = create_dirs(&deep, 0o755).expect("create");
        assert_eq!(made, vec![d.path().join("a"), d.path().join("a/b"), deep.clone()]);
        fs::write(d.path().join("a/keep"), "x").expect("w");
        remove_dirs(&made).expect("remove");
        assert!(!d.path().join("a/b").exists());
        assert!(d.path().join("a/keep").exists(), "a is not empty, so it stays");
    }

    #[test]
    fn remove_if_ours_keeps_edited_files() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        fs::write(&p, "ours").expect("w");
        let h = sha256_hex(b"ours");
        fs::write(&p, "edited").expect("w");
        assert!(!remove_if_ours(&p, &h).expect("check"));
        assert!(p.exists());
        fs::write(&p, "ours").expect("w");
        assert!(remove_if_ours(&p, &h).expect("rm"));
        assert!(!p.exists());
    }
}
