//! The one way root touches the agent's home.
//!
//! The agent owns its home and may change anything in it at any moment,
//! also while root works there: swap a directory for a symlink, plant a
//! FIFO, a hard link to a host file or a 1 TiB sparse file. So nothing here
//! ever looks a home path up by name from `/`. The home is opened once
//! (`O_NOFOLLOW | O_DIRECTORY`; its parent is root's, so the agent cannot
//! swap it), and every path below it is walked one component at a time
//! from that descriptor with `O_NOFOLLOW` (systemd's `chase()` with
//! `CHASE_NOFOLLOW`, done by hand): a symlink anywhere, `..` or an absolute
//! path is refused, never followed.
//!
//! Checks are made on the opened descriptor (`fstat`), never on the path:
//! type, owner, link count and size. Reads take only regular files, opened
//! non-blocking (a FIFO cannot stall us), up to a cap, and the hash is of
//! the bytes read from that one descriptor.
//!
//! Writes, directory creation and removals run with the agent's own
//! file-system identity (`setfsuid`/`setfsgid` on this thread, which also
//! drops root's file capabilities for their duration): whatever trick the
//! agent plays, root can then reach only what the agent could reach
//! anyway, and what we create is the agent's from its first instant.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::error::{Error, Result};
use crate::sys::files::sha256_hex;
use crate::sys::owner::Owner;

/// Config files (openclaw.json, paired.json, notes) are small: anything
/// bigger is refused rather than read.
pub const CONFIG_CAP: u64 = 4 << 20;

/// The agent's home, held open.
pub struct AgentHome {
    dir: OwnedFd,
    path: PathBuf,
    agent: Owner,
}

/// A regular file read whole through one descriptor.
#[derive(Debug, Clone)]
pub struct FileRead {
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub mode: u32,
}

/// What [`AgentHome::stat`] found at a path (never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A symlink, FIFO, socket or device: never ours.
    Other,
}

impl AgentHome {
    /// Open the home. It must be a real directory owned by the agent (or
    /// root, before the `user` step hands it over).
    pub fn open(path: &Path, agent: Owner) -> Result<AgentHome> {
        let fd = open_raw(None, path, OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY)
            .map_err(|e| refusal(path, e, true))?;
        let st = fstat(fd.as_raw_fd()).map_err(|e| Error::io("stat", path, e.into()))?;
        if st.st_uid != agent.uid && st.st_uid != 0 {
            return Err(Error::host(
                path.display().to_string(),
                format!(
                    "is owned by uid {}, not by the sandbox user (uid {})",
                    st.st_uid, agent.uid
                ),
                "point --sandbox-home at the sandbox user's own home, then re-run",
            ));
        }
        Ok(AgentHome {
            dir: fd,
            path: path.to_path_buf(),
            agent,
        })
    }

    /// The home's path, for messages and records.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` as an absolute path, for messages.
    pub fn show(&self, rel: &Path) -> String {
        self.path.join(rel).display().to_string()
    }

    /// Read a regular file owned by the agent, at most `cap` bytes. `None`
    /// when there is nothing at the path. A link, FIFO, device, directory,
    /// a file someone else owns, a hard link (more than one name: it may be
    /// a host file linked in) or one over `cap` is refused.
    pub fn read(&self, rel: &Path, cap: u64) -> Result<Option<FileRead>> {
        let Some(fd) = self.open_beneath(
            rel,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_NOFOLLOW,
        )?
        else {
            return Ok(None);
        };
        let st = fstat(fd.as_raw_fd()).map_err(|e| Error::io("stat", self.path.join(rel), e.into()))?;
        let shown = self.show(rel);
        if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
            return Err(Error::host(
                &shown,
                format!("is not a regular file (it is {})", kind_name(st.st_mode)),
                "move it out of the way (sandbox reads only regular files there), then re-run",
            ));
        }
        self.check_owned(&shown, st.st_uid, st.st_nlink)?;
        if st.st_size as u64 > cap {
            return Err(too_big(&shown, st.st_size as u64, cap));
        }
        let mut bytes = Vec::with_capacity(st.st_size as usize);
        File::from(fd)
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", self.path.join(rel), e))?;
        if bytes.len() as u64 > cap {
            return Err(too_big(&shown, bytes.len() as u64, cap));
        }
        Ok(Some(FileRead {
            sha256: sha256_hex(&bytes),
            bytes,
            mode: st.st_mode & 0o7777,
        }))
    }

    /// The SHA-256 of a file as [`read`](Self::read) reads it.
    pub fn hash(&self, rel: &Path, cap: u64) -> Result<Option<String>> {
        Ok(self.read(rel, cap)?.map(|f| f.sha256))
    }

    /// What is at `rel`, without following anything; `None`: nothing.
    pub fn stat(&self, rel: &Path) -> Result<Option<Kind>> {
        let Some(fd) = self.open_beneath(rel, OFlag::O_PATH | OFlag::O_NOFOLLOW)? else {
            return Ok(None);
        };
        let st = fstat(fd.as_raw_fd()).map_err(|e| Error::io("stat", self.path.join(rel), e.into()))?;
        Ok(Some(match st.st_mode & nix::libc::S_IFMT {
            nix::libc::S_IFREG => Kind::File,
            nix::libc::S_IFDIR => Kind::Dir,
            _ => Kind::Other,
        }))
    }

    /// The permission bits of a directory the agent owns; `None`: nothing
    /// there. Anything but such a directory is refused.
    pub fn dir_mode(&self, rel: &Path) -> Result<Option<u32>> {
        let Some(fd) = self.open_beneath(rel, OFlag::O_PATH | OFlag::O_NOFOLLOW)? else {
            return Ok(None);
        };
        let shown = self.show(rel);
        let st = fstat(fd.as_raw_fd()).map_err(|e| Error::io("stat", &shown, e.into()))?;
        if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFDIR {
            return Err(not_a_dir(&shown));
        }
        self.check_owned(&shown, st.st_uid, 1)?;
        Ok(Some(st.st_mode & 0o7777))
    }

    /// Replace (or create) `rel` with `bytes` and `mode`, atomically: a
    /// temp file in the same directory, synced, renamed over the name. As
    /// the agent, so the file is the agent's. Its directory must exist.
    pub fn write(&self, rel: &Path, bytes: &[u8], mode: u32) -> Result<()> {
        let (parent, name) = self.parent_of(rel)?;
        let shown = self.show(rel);
        let tmp_name = temp_name(name);
        let _agent = AsAgent::enter(self.agent);
        // A temp name left by a killed run.
        let _ = unlinkat(
            Some(parent.as_raw_fd()),
            tmp_name.as_os_str(),
            UnlinkatFlags::NoRemoveDir,
        );
        let fd = openat(
            Some(parent.as_raw_fd()),
            tmp_name.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| io_err("create", &shown, e))?;
        // SAFETY-free: `openat` returned a fresh descriptor that nothing
        // else owns; OwnedFd closes it once.
        let mut f = File::from(owned(fd));
        let result = (|| {
            f.write_all(bytes).map_err(|e| Error::io("write", &shown, e))?;
            f.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("chmod", &shown, e))?;
            if !crate::sys::files::defer(&self.path) {
                f.sync_all().map_err(|e| Error::io("fsync", &shown, e))?;
                crate::sys::files::count_sync();
            }
            nix::fcntl::renameat(
                Some(parent.as_raw_fd()),
                tmp_name.as_os_str(),
                Some(parent.as_raw_fd()),
                name,
            )
            .map_err(|e| io_err("rename into place", &shown, e))
        })();
        if result.is_err() {
            let _ = unlinkat(
                Some(parent.as_raw_fd()),
                tmp_name.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
        result?;
        if !crate::sys::files::defer(&self.path) {
            let _ = nix::unistd::fsync(parent.as_raw_fd());
            crate::sys::files::count_sync();
        }
        Ok(())
    }

    /// The directories [`make_dirs`](Self::make_dirs) would create for
    /// `rel`, outermost first (recorded before they are made).
    pub fn missing_dirs(&self, rel: &Path) -> Result<Vec<PathBuf>> {
        let comps = components(rel, &self.path)?;
        let mut cur = PathBuf::new();
        let mut missing = Vec::new();
        for c in comps {
            cur.push(c);
            if !missing.is_empty() {
                missing.push(cur.clone());
                continue;
            }
            match self.stat(&cur)? {
                None => missing.push(cur.clone()),
                Some(Kind::Dir) => {}
                Some(_) => return Err(not_a_dir(&self.show(&cur))),
            }
        }
        Ok(missing)
    }

    /// Make `rel` and its missing parents, as the agent, each with `mode`.
    /// Returns the ones made, outermost first.
    pub fn make_dirs(&self, rel: &Path, mode: u32) -> Result<Vec<PathBuf>> {
        let comps = components(rel, &self.path)?;
        let _agent = AsAgent::enter(self.agent);
        let mut dir = self.dup()?;
        let mut cur = PathBuf::new();
        let mut made = Vec::new();
        for c in comps {
            cur.push(c);
            let shown = self.show(&cur);
            match nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), c, Mode::from_bits_truncate(0o700)) {
                Ok(()) => made.push(cur.clone()),
                Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(io_err("create directory", &shown, e)),
            }
            let next = open_raw(
                Some(&dir),
                Path::new(c),
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY,
            )
            .map_err(|e| refusal(Path::new(&shown), e, true))?;
            let st = fstat(next.as_raw_fd()).map_err(|e| Error::io("stat", &shown, e.into()))?;
            self.check_owned(&shown, st.st_uid, 1)?;
            if made.last() == Some(&cur) {
                nix::sys::stat::fchmod(next.as_raw_fd(), Mode::from_bits_truncate(mode))
                    .map_err(|e| io_err("chmod", &shown, e))?;
            }
            dir = next;
        }
        Ok(made)
    }

    /// Set the mode of an existing file or directory the agent owns.
    pub fn set_mode(&self, rel: &Path, mode: u32) -> Result<()> {
        let shown = self.show(rel);
        let Some(fd) = self.open_beneath(
            rel,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_NOFOLLOW,
        )?
        else {
            return Err(Error::host(&shown, "does not exist", "re-run setup"));
        };
        let st = fstat(fd.as_raw_fd()).map_err(|e| Error::io("stat", &shown, e.into()))?;
        let kind = st.st_mode & nix::libc::S_IFMT;
        if kind != nix::libc::S_IFREG && kind != nix::libc::S_IFDIR {
            return Err(Error::host(
                &shown,
                format!("is not a regular file or directory (it is {})", kind_name(st.st_mode)),
                "move it out of the way, then re-run",
            ));
        }
        self.check_owned(
            &shown,
            st.st_uid,
            if kind == nix::libc::S_IFDIR { 1 } else { st.st_nlink },
        )?;
        let _agent = AsAgent::enter(self.agent);
        nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode)).map_err(|e| io_err("chmod", &shown, e))
    }

    /// Remove the file at `rel` (a name in a directory of the agent's: the
    /// agent could remove it itself). Returns whether something was there.
    /// Never follows a link: a link is removed as a name.
    pub fn remove_file(&self, rel: &Path) -> Result<bool> {
        let (parent, name) = match self.parent_of(rel) {
            Ok(p) => p,
            // Its directory is gone (or is a link now): so is the file.
            Err(_) if self.stat(rel.parent().unwrap_or(Path::new(""))).ok().flatten() != Some(Kind::Dir) => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        let _agent = AsAgent::enter(self.agent);
        let _ = unlinkat(
            Some(parent.as_raw_fd()),
            temp_name(name).as_os_str(),
            UnlinkatFlags::NoRemoveDir,
        );
        match unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::ENOENT) => Ok(false),
            Err(e) => Err(io_err("remove", &self.show(rel), e)),
        }
    }

    /// Remove `rel` if it still holds what we wrote (`sha256`). An edited
    /// file, or something that is not a regular file of the agent's, is
    /// left and reported as [`Removal::Kept`].
    pub fn remove_if(&self, rel: &Path, sha256: &str) -> Result<Removal> {
        match self.read(rel, CONFIG_CAP) {
            Ok(None) => {
                self.remove_temp(rel);
                Ok(Removal::Absent)
            }
            Ok(Some(f)) if f.sha256 == sha256 => {
                self.remove_file(rel)?;
                Ok(Removal::Removed)
            }
            Ok(Some(_)) => Ok(Removal::Kept("changed since sandbox wrote it".into())),
            // Not ours to judge (a link, a FIFO, too big): left alone.
            Err(e) => Ok(Removal::Kept(cause_of(&e))),
        }
    }

    /// Remove the temp name a killed [`write`](Self::write) may have left.
    pub fn remove_temp(&self, rel: &Path) {
        if let Ok((parent, name)) = self.parent_of(rel) {
            let _agent = AsAgent::enter(self.agent);
            let _ = unlinkat(
                Some(parent.as_raw_fd()),
                temp_name(name).as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }

    /// Remove directories we made (innermost first), each only if empty.
    /// One that holds something else now, or is gone, is left as it is.
    pub fn remove_dirs(&self, made: &[PathBuf]) -> Result<()> {
        for d in made.iter().rev() {
            let Ok((parent, name)) = self.parent_of(d) else {
                continue;
            };
            let _agent = AsAgent::enter(self.agent);
            match unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::RemoveDir) {
                Ok(()) => {}
                Err(
                    nix::errno::Errno::ENOENT
                    | nix::errno::Errno::ENOTEMPTY
                    | nix::errno::Errno::EEXIST
                    | nix::errno::Errno::ENOTDIR
                    | nix::errno::Errno::EBUSY,
                ) => {}
                Err(e) => return Err(io_err("remove directory", &self.show(d), e)),
            }
        }
        Ok(())
    }

    fn dup(&self) -> Result<OwnedFd> {
        self.dir
            .try_clone()
            .map_err(|e| Error::io("duplicate descriptor of", &self.path, e))
    }

    /// The directory holding `rel`, opened by walking from the home, and
    /// the last component's name.
    fn parent_of<'a>(&self, rel: &'a Path) -> Result<(OwnedFd, &'a OsStr)> {
        let comps = components(rel, &self.path)?;
        let Some((name, dirs)) = comps.split_last() else {
            return Err(bad_path(&self.path, rel));
        };
        let mut dir = self.dup()?;
        let mut cur = PathBuf::new();
        for c in dirs {
            cur.push(c);
            dir = open_raw(
                Some(&dir),
                Path::new(c),
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY,
            )
            .map_err(|e| refusal(&self.path.join(&cur), e, true))?;
        }
        Ok((dir, name))
    }

    /// Open `rel` below the home with `flags`; `None` when it (or one of
    /// its directories) does not exist.
    fn open_beneath(&self, rel: &Path, flags: OFlag) -> Result<Option<OwnedFd>> {
        let (parent, name) = match self.parent_of(rel) {
            Ok(p) => p,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match open_raw(Some(&parent), Path::new(name), flags) {
            Ok(fd) => Ok(Some(fd)),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(refusal(&self.path.join(rel), e, false)),
        }
    }

    fn check_owned(&self, shown: &str, uid: u32, nlink: u64) -> Result<()> {
        if uid != self.agent.uid {
            return Err(Error::host(
                shown,
                format!(
                    "is owned by uid {uid}, not by the sandbox user (uid {})",
                    self.agent.uid
                ),
                format!(
                    "if it is the sandbox's, `chown {}: {shown}`; else move it out of the home; then re-run",
                    self.agent.uid
                ),
            ));
        }
        if nlink > 1 {
            return Err(Error::host(
                shown,
                format!("has {nlink} names (a hard link; it may be a file from elsewhere)"),
                "replace it with a copy of its own (cp, then mv over it), then re-run",
            ));
        }
        Ok(())
    }
}

/// What [`AgentHome::remove_if`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Removed,
    Absent,
    /// Left in place, and why.
    Kept(String),
}

/// This thread's file-system identity switched to the agent's until drop.
/// `setfsuid` acts on the calling thread only (unlike `setuid`), and while
/// it is not 0 the kernel also clears the thread's file capabilities
/// (CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER, ...). Supplementary groups
/// stay root's, which is why reads also check owner and link count on the
/// descriptor.
struct AsAgent {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

impl AsAgent {
    fn enter(agent: Owner) -> AsAgent {
        // Group first: once the fsuid is not 0 we could not switch it.
        let gid = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(agent.gid));
        let uid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(agent.uid));
        AsAgent { uid, gid }
    }
}

impl Drop for AsAgent {
    fn drop(&mut self) {
        nix::unistd::setfsuid(self.uid);
        nix::unistd::setfsgid(self.gid);
    }
}

/// The normal components of `rel`; `..`, `.`, absolute paths and empty
/// paths are refused.
fn components<'a>(rel: &'a Path, home: &Path) -> Result<Vec<&'a OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            _ => return Err(bad_path(home, rel)),
        }
    }
    if out.is_empty() {
        return Err(bad_path(home, rel));
    }
    Ok(out)
}

fn open_raw(dir: Option<&OwnedFd>, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_CLOEXEC;
    let fd = match dir {
        Some(d) => openat(Some(d.as_fd().as_raw_fd()), path, flags, Mode::empty())?,
        None => nix::fcntl::open(path, flags, Mode::empty())?,
    };
    Ok(owned(fd))
}

fn owned(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open(2)/openat(2) in
    // this module and is owned by nothing else; OwnedFd takes sole
    // ownership and closes it once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn temp_name(name: &OsStr) -> PathBuf {
    let mut v = b".".to_vec();
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(b".sandbox-tmp");
    PathBuf::from(OsStr::from_bytes(&v))
}

fn kind_name(mode: u32) -> &'static str {
    match mode & nix::libc::S_IFMT {
        nix::libc::S_IFIFO => "a FIFO",
        nix::libc::S_IFSOCK => "a socket",
        nix::libc::S_IFCHR => "a character device",
        nix::libc::S_IFBLK => "a block device",
        nix::libc::S_IFDIR => "a directory",
        nix::libc::S_IFLNK => "a symbolic link",
        _ => "not a regular file",
    }
}

/// An open that failed: a link (ELOOP; ENOTDIR for a link where a
/// directory was expected) is named as such.
fn refusal(path: &Path, e: nix::errno::Errno, dir: bool) -> Error {
    let shown = path.display().to_string();
    match e {
        nix::errno::Errno::ELOOP => Error::host(
            shown,
            "is a symbolic link; refusing to follow it",
            "remove the link (sandbox never makes links in the home), then re-run",
        ),
        nix::errno::Errno::ENOTDIR if dir => not_a_dir(&shown),
        e => Error::io("open", path, e.into()),
    }
}

fn not_a_dir(shown: &str) -> Error {
    Error::host(
        shown,
        "is not a directory (or is a symbolic link)",
        "move it out of the way (sandbox makes a directory there), then re-run",
    )
}

fn too_big(shown: &str, size: u64, cap: u64) -> Error {
    Error::host(
        shown,
        format!("is {size} bytes, more than the {cap} sandbox reads"),
        "move it out of the way (it is not a file OpenClaw or sandbox wrote), then re-run",
    )
}

fn bad_path(home: &Path, rel: &Path) -> Error {
    Error::host(
        format!("{} in {}", rel.display(), home.display()),
        "is not a plain relative path below the home",
        "report this as a bug",
    )
}

fn io_err(what: &'static str, shown: &str, e: nix::errno::Errno) -> Error {
    Error::io(what, shown, e.into())
}

/// The cause of a refusal, for "kept …: <cause>" lines.
fn cause_of(e: &Error) -> String {
    match e {
        Error::Host { why, .. } => why.clone(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn me() -> Owner {
        Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    fn home() -> (tempfile::TempDir, AgentHome) {
        let d = tempfile::tempdir().expect("tempdir");
        fs::create_dir(d.path().join("home")).expect("home");
        let h = AgentHome::open(&d.path().join("home"), me()).expect("open");
        (d, h)
    }

    #[test]
    fn writes_reads_and_removes_below_the_home() {
        let (_d, h) = home();
        let made = h.make_dirs(Path::new("a/b"), 0o750).expect("dirs");
        assert_eq!(made, [PathBuf::from("a"), PathBuf::from("a/b")]);
        h.write(Path::new("a/b/f"), b"one", 0o640).expect("write");
        let r = h.read(Path::new("a/b/f"), 10).expect("read").expect("there");
        assert_eq!((r.bytes.as_slice(), r.mode), (&b"one"[..], 0o640));
        assert_eq!(
            h.remove_if(Path::new("a/b/f"), &sha256_hex(b"two")).expect("rm"),
            Removal::Kept("changed since sandbox wrote it".into())
        );
        assert_eq!(
            h.remove_if(Path::new("a/b/f"), &r.sha256).expect("rm"),
            Removal::Removed
        );
        h.remove_dirs(&made).expect("rmdir");
        assert_eq!(h.stat(Path::new("a")).expect("stat"), None);
    }

    #[test]
    fn links_are_refused_at_any_depth_and_nothing_outside_changes() {
        let (d, h) = home();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).expect("outside");
        fs::write(outside.join("secret"), "root only").expect("w");
        std::os::unix::fs::symlink(&outside, d.path().join("home/dir")).expect("link");
        std::os::unix::fs::symlink(outside.join("secret"), d.path().join("home/file")).expect("link");
        for rel in ["dir/secret", "file"] {
            let e = h.read(Path::new(rel), 100).expect_err("refused");
            assert!(e.to_string().contains("symbolic link"), "{rel}: {e}");
        }
        assert!(h.write(Path::new("dir/secret"), b"evil", 0o600).is_err());
        assert!(h.make_dirs(Path::new("dir/x"), 0o700).is_err());
        assert!(h.read(Path::new("../outside/secret"), 100).is_err());
        assert_eq!(fs::read_to_string(outside.join("secret")).expect("r"), "root only");
        assert!(!outside.join("x").exists());
        // Writing over a link replaces the name, never the target.
        h.write(Path::new("file"), b"mine", 0o600).expect("write");
        assert_eq!(fs::read_to_string(outside.join("secret")).expect("r"), "root only");
    }

    #[test]
    fn fifos_and_big_files_are_refused_at_once() {
        let (d, h) = home();
        nix::unistd::mkfifo(&d.path().join("home/fifo"), Mode::from_bits_truncate(0o600)).expect("fifo");
        let t = std::time::Instant::now();
        let e = h.read(Path::new("fifo"), 100).expect_err("fifo");
        assert!(e.to_string().contains("a FIFO"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let big = fs::File::create(d.path().join("home/big")).expect("big");
        big.set_len(1 << 40).expect("sparse 1 TiB");
        let e = h.read(Path::new("big"), CONFIG_CAP).expect_err("big");
        assert!(e.to_string().contains("more than"), "{e}");
    }

    #[test]
    fn hard_links_are_refused() {
        let (d, h) = home();
        fs::write(d.path().join("elsewhere"), "x").expect("w");
        fs::hard_link(d.path().join("elsewhere"), d.path().join("home/linked")).expect("ln");
        let e = h.read(Path::new("linked"), 100).expect_err("refused");
        assert!(e.to_string().contains("hard link"), "{e}");
    }
}
