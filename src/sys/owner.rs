//! Owner and mode of one object set on an fd opened with `O_NOFOLLOW`
//! (the home directory itself, whose parent is root's). Below the home,
//! everything goes through `sys::agent_home`.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn me() -> Owner {
        Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
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
}
