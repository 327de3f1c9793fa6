//! Files and directories owned by the sandbox user, made without ever
//! following a symlink: every object is opened with `O_NOFOLLOW` and
//! chowned/chmodded on its fd. Nothing is chowned recursively, so a link
//! the agent planted in its home (say, to /etc) is never followed.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys::files;

/// Who owns what we write under the home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

pub fn symlink_refused(path: &Path) -> Error {
    Error::host(
        path.display().to_string(),
        "is a symbolic link; refusing to follow it",
        "remove the link (sandbox never makes links in the home), then re-run",
    )
}

/// Whether `path` is a symlink (false when it does not exist).
pub fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn open_nofollow(path: &Path, dir: bool) -> Result<File> {
    let mut flags = nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC;
    if dir {
        flags |= nix::libc::O_DIRECTORY;
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                symlink_refused(path)
            } else {
                Error::io("open", path, e)
            }
        })
}

/// Set owner and mode of `path` through an fd opened with O_NOFOLLOW: a
/// symlink is refused, never followed.
pub fn set(path: &Path, dir: bool, mode: u32, owner: Owner) -> Result<()> {
    let f = open_nofollow(path, dir)?;
    std::os::unix::fs::fchown(&f, Some(owner.uid), Some(owner.gid)).map_err(|e| Error::io("chown", path, e))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", path, e))
}

/// Make sure `dir` exists below `home` as a real directory owned by
/// `owner`: every component from `home` down is checked (a symlink is
/// refused), missing ones are created with `mode`. Returns the ones created,
/// outermost first.
pub fn dirs_under(home: &Path, dir: &Path, mode: u32, owner: Owner) -> Result<Vec<PathBuf>> {
    let rel = dir.strip_prefix(home).map_err(|_| {
        Error::host(
            dir.display().to_string(),
            format!("is not below the sandbox home {}", home.display()),
            "report this as a bug",
        )
    })?;
    let mut cur = home.to_path_buf();
    let mut made = Vec::new();
    check_dir(&cur)?;
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(_) => check_dir(&cur)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|e| Error::io("create directory", &cur, e))?;
                set(&cur, true, mode, owner)?;
                made.push(cur.clone());
            }
            Err(e) => return Err(Error::io("stat", &cur, e)),
        }
    }
    Ok(made)
}

fn check_dir(path: &Path) -> Result<()> {
    let m = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if m.file_type().is_symlink() {
        return Err(symlink_refused(path));
    }
    if !m.is_dir() {
        return Err(Error::host(
            path.display().to_string(),
            "is not a directory",
            "move it out of the way, then re-run",
        ));
    }
    Ok(())
}

/// Write `bytes` atomically to `path` (never through a symlink), then give
/// it to `owner` with `mode` on an O_NOFOLLOW fd.
pub fn write(path: &Path, bytes: &[u8], mode: u32, owner: Owner) -> Result<()> {
    files::write_atomic_as(path, bytes, mode, Some((owner.uid, owner.gid)))?;
    set(path, false, mode, owner)
}

/// Replace the content of an existing file and keep its owner and mode.
pub fn rewrite_keeping_owner(path: &Path, bytes: &[u8]) -> Result<()> {
    let m = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if m.file_type().is_symlink() {
        return Err(symlink_refused(path));
    }
    let mode = m.mode() & 0o7777;
    write(
        path,
        bytes,
        mode,
        Owner {
            uid: m.uid(),
            gid: m.gid(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Owner {
        Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    #[test]
    fn dirs_under_creates_and_refuses_links() {
        let d = tempfile::tempdir().expect("tempdir");
        let home = d.path().join("home");
        fs::create_dir(&home).expect("home");
        let made = dirs_under(&home, &home.join("a/b"), 0o750, me()).expect("create");
        assert_eq!(made, vec![home.join("a"), home.join("a/b")]);
        assert_eq!(fs::metadata(home.join("a/b")).expect("m").mode() & 0o777, 0o750);
        assert!(dirs_under(&home, &home.join("a/b"), 0o750, me())
            .expect("again")
            .is_empty());

        let outside = d.path().join("outside");
        fs::create_dir(&outside).expect("outside");
        std::os::unix::fs::symlink(&outside, home.join("evil")).expect("link");
        let e = dirs_under(&home, &home.join("evil/x"), 0o750, me()).expect_err("refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!outside.join("x").exists());
    }

    #[test]
    fn set_refuses_a_symlink() {
        let d = tempfile::tempdir().expect("tempdir");
        let target = d.path().join("t");
        fs::write(&target, "x").expect("w");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).expect("chmod");
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&target, &link).expect("link");
        assert!(set(&link, false, 0o600, me()).is_err());
        assert_eq!(fs::metadata(&target).expect("m").mode() & 0o777, 0o644);
    }

    #[test]
    fn rewrite_keeps_mode() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        fs::write(&p, "one").expect("w");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).expect("chmod");
        rewrite_keeping_owner(&p, b"two").expect("rewrite");
        assert_eq!(fs::read(&p).expect("r"), b"two");
        assert_eq!(fs::metadata(&p).expect("m").mode() & 0o777, 0o640);
    }
}
