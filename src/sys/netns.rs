//! Named network namespaces, laid out the way iproute2 lays them out: an nsfs
//! bind mount at `DIR/NAME`, with `DIR` a shared mount point. Using the same
//! layout means `ip netns list/exec` and systemd's `NetworkNamespacePath=`
//! work on ours, and a namespace mount made after a unit started still
//! propagates into that unit's private mount namespace.
//!
//! `unshare`/`setns` only affect the calling thread, so every namespace switch
//! happens on a short-lived thread of its own; the caller's thread never moves.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use crate::error::Error;
use crate::sys::netlink::{Link, Netlink};

/// `/proc/self` would name the main thread's namespace, not the one the
/// current thread just unshared.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// A namespace file can carry stacked mounts (two racing `create`s); more than
/// this many means something else is mounting there and we stop.
const MAX_STACKED_MOUNTS: usize = 16;

/// What `create` did to the netns directory, so `release_dir` can undo exactly that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirChanges {
    pub created_dir: bool,
    pub made_mountpoint: bool,
}

/// Create `dir/name` as a persistent network namespace with `lo` up, the way
/// `ip netns add` does. `dir` itself is created (not its parents) if missing.
///
/// If `dir/name` already is a namespace, the directory is left alone and
/// `DirChanges::default()` is returned; `lo` is still brought up, so a re-run
/// after a crash between mounting and bringing `lo` up converges.
/// On failure everything this call changed is undone (best effort).
pub fn create(dir: &Path, name: &str) -> crate::Result<DirChanges> {
    let path = ns_path(dir, name)?;
    if is_netns(&path) {
        bring_lo_up(&path)?;
        return Ok(DirChanges::default());
    }
    let mut changes = DirChanges::default();
    match create_in(dir, &path, &mut changes) {
        Ok(()) => Ok(changes),
        Err(err) => {
            // Best effort: the original error is the one the operator needs.
            // A file left at `path` is either ours or a leftover plain file
            // (not a namespace), so removing it loses nothing.
            let _ = remove_ns_file(&path);
            let _ = release_dir(dir, changes);
            Err(err)
        }
    }
}

fn create_in(dir: &Path, path: &Path, changes: &mut DirChanges) -> crate::Result<()> {
    changes.created_dir = ensure_dir(dir)?;
    let _lock = lock_dir(dir)?;
    changes.made_mountpoint = ensure_shared_mountpoint(dir)?;
    // Mode 0 as iproute2 does: the file is only a mount target. A leftover
    // plain file from an interrupted run is reused rather than refused.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o000)
        .open(path)
        .map_err(|e| Error::io("create network namespace file", path, e))?;
    let target = path.to_path_buf();
    on_thread("create network namespace", path, move || {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::io("unshare a network namespace for", &target, io::Error::from(e)))?;
        mount(
            Some(THREAD_NETNS),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::io("bind-mount the new network namespace onto", &target, io::Error::from(e)))?;
        // Still inside the new namespace: its socket is the namespace's own.
        Netlink::host()?.set_up("lo")
    })
}

/// True if `dir/name` exists and is a namespace mount (not a leftover plain file).
pub fn exists(dir: &Path, name: &str) -> bool {
    ns_path(dir, name).is_ok_and(|path| is_netns(&path))
}

/// Unmount (lazily, so open handles do not block it) and unlink `dir/name`.
/// `Ok(false)` if nothing was there. A leftover plain file is just unlinked.
pub fn delete(dir: &Path, name: &str) -> crate::Result<bool> {
    let path = ns_path(dir, name)?;
    remove_ns_file(&path)
}

/// The links `host` sees whose other end lives in the namespace at `path`
/// (a veth's host end): the kernel deletes them as it tears that namespace
/// down. Empty if `path` is not a namespace.
pub fn links_into(host: &Netlink, path: &Path) -> crate::Result<Vec<Link>> {
    if !is_netns(path) {
        return Ok(vec![]);
    }
    let Some(id) = host.nsid(path)? else {
        return Ok(vec![]);
    };
    Ok(host.links()?.into_iter().filter(|l| l.peer_nsid == Some(id)).collect())
}

/// Wait until each of `links` is gone from `host`, for at most `within`;
/// returns the ones still there. After its last reference is dropped a
/// namespace is torn down on a kernel work queue (about a millisecond when
/// that queue is idle), so only a namespace something still holds open (a
/// process inside it, an open handle) keeps its links past `within`.
pub fn wait_links_gone(host: &Netlink, links: Vec<Link>, within: Duration) -> crate::Result<Vec<Link>> {
    let start = Instant::now();
    let mut left = links;
    loop {
        let mut still = Vec::new();
        for l in left {
            // An index is not reused while the link lives; a new link that
            // got it later has another name.
            if host.link_by_index(l.index)?.is_some_and(|now| now.name == l.name) {
                still.push(l);
            }
        }
        left = still;
        if left.is_empty() || start.elapsed() >= within {
            return Ok(left);
        }
        // Quick polls at first (the usual case takes about a millisecond),
        // gentler ones while a held namespace runs the clock out.
        thread::sleep((start.elapsed() / 10).clamp(Duration::from_micros(200), Duration::from_millis(20)));
    }
}

/// Undo what `create` recorded in `changes`, but only once `dir` is empty:
/// another namespace there (ours or iproute2's) still needs the shared mount.
/// Held while the directory is made a mount point and a namespace file
/// created in it, or while it is found empty and released: two runs (two
/// sandboxes) racing there would otherwise both bind-mount the directory
/// onto itself, and a file made under the lower mount would vanish behind
/// the upper one. iproute2 has the same race; a flock on the directory
/// (the same inode before and after the self bind mount) closes it.
fn lock_dir(dir: &Path) -> crate::Result<nix::fcntl::Flock<fs::File>> {
    let f = fs::File::open(dir).map_err(|e| Error::io("open network namespace directory", dir, e))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io("lock network namespace directory", dir, e.into()))
}

pub fn release_dir(dir: &Path, changes: DirChanges) -> crate::Result<()> {
    if !changes.created_dir && !changes.made_mountpoint {
        return Ok(());
    }
    let _lock = match lock_dir(dir) {
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    let mut entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list network namespace directory", dir, e)),
    };
    match entries.next() {
        None => {}
        Some(Ok(_)) => return Ok(()),
        Some(Err(e)) => return Err(Error::io("list network namespace directory", dir, e)),
    }
    if changes.made_mountpoint {
        match umount2(dir, MntFlags::MNT_DETACH) {
            // EINVAL: no longer a mount point, someone already undid it.
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(Error::io("unmount network namespace directory", dir, e.into())),
        }
    }
    if changes.created_dir {
        match fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove network namespace directory", dir, e)),
        }
    }
    Ok(())
}

/// Run `f` on a dedicated thread whose network namespace is `path`.
/// Processes `f` spawns inherit that namespace; the namespace fd itself is
/// close-on-exec and closed before `f` runs. A panic in `f` is re-raised here.
pub fn run_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    let ns = File::open(path).map_err(|e| Error::io("open network namespace", path, e))?;
    let target = path.to_path_buf();
    on_thread("enter network namespace", path, move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
            let what = if e == Errno::EINVAL {
                "enter network namespace (not a network namespace file)"
            } else {
                "enter network namespace"
            };
            Error::io(what, &target, io::Error::from(e))
        })?;
        drop(ns);
        f()
    })
}

fn on_thread<T: Send + 'static>(
    what: &'static str,
    path: &Path,
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    let handle = thread::Builder::new()
        .name("netns".into())
        .spawn(f)
        .map_err(|e| Error::io(what, path, e))?;
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// `name` must be one path component, or `dir/name` could point anywhere.
fn ns_path(dir: &Path, name: &str) -> crate::Result<PathBuf> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::io(
            "invalid network namespace name (must be one path component)",
            dir.join(name),
            io::Error::from(io::ErrorKind::InvalidInput),
        ));
    }
    Ok(dir.join(name))
}

/// NSFS_MAGIC matches any namespace type; a non-net namespace mounted under
/// the netns directory is not something this tool or iproute2 creates.
fn is_netns(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
}

fn bring_lo_up(path: &Path) -> crate::Result<()> {
    Netlink::in_netns(path)?.set_up("lo")
}

/// Returns whether `dir` had to be created.
fn ensure_dir(dir: &Path) -> crate::Result<bool> {
    match DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::metadata(dir).map_err(|e| Error::io("inspect network namespace directory", dir, e))?;
            if meta.is_dir() {
                Ok(false)
            } else {
                Err(Error::io(
                    "network namespace directory is not a directory",
                    dir,
                    io::Error::from(io::ErrorKind::AlreadyExists),
                ))
            }
        }
        Err(e) => Err(Error::io("create network namespace directory", dir, e)),
    }
}

/// Returns whether `dir` had to be made a mount point. Same sequence as
/// iproute2: making a non-mount-point shared fails with EINVAL, which is how
/// we learn that it needs the bind mount onto itself first.
fn ensure_shared_mountpoint(dir: &Path) -> crate::Result<bool> {
    let make_shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => return Ok(false),
        Err(Errno::EINVAL) => {}
        Err(e) => {
            return Err(Error::io(
                "make network namespace directory a shared mount",
                dir,
                e.into(),
            ))
        }
    }
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::io("bind-mount network namespace directory onto itself", dir, e.into()))?;
    if let Err(e) = make_shared() {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
        return Err(Error::io(
            "make network namespace directory a shared mount",
            dir,
            e.into(),
        ));
    }
    Ok(true)
}

fn remove_ns_file(path: &Path) -> crate::Result<bool> {
    let mut unmounted = false;
    for _ in 0..MAX_STACKED_MOUNTS {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => unmounted = true,
            // EINVAL: not (or no longer) a mount point.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
            Err(e) => return Err(Error::io("unmount network namespace", path, e.into())),
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(unmounted),
        Err(e) => Err(Error::io("remove network namespace file", path, e)),
    }
}
