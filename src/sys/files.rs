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
///
/// The content goes to an anonymous file (`O_TMPFILE`) first, so a run
/// killed while writing leaves nothing behind; only once it is complete
/// does it get a name (`.NAME.<pid>.sandbox-tmp`, for the instant until the
/// rename). A full disk or a read-only filesystem is reported with its
/// fix, and leaves the old file as it was.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_file(path, bytes, mode, None, Durability::FileAndDir)
}

/// As [`write_atomic`] for several files: each is on disk before it takes
/// its name, and each directory is synced once at the end rather than once
/// per file.
pub fn write_atomic_all(files: &[(&Path, &[u8])], mode: u32) -> Result<()> {
    let mut dirs: Vec<&Path> = Vec::new();
    for (path, bytes) in files {
        write_file(path, bytes, mode, None, Durability::File)?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.into_iter().filter(|d| !defer(d)).try_for_each(sync_dir)
}

/// As [`write_atomic`]; with `durable` false the rename is atomic (a killed
/// process never leaves half a file) but not yet on disk after a power cut.
pub fn write_atomic_with(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> Result<()> {
    let sync = if durable {
        Durability::FileAndDir
    } else {
        Durability::Nothing
    };
    write_file(path, bytes, mode, None, sync)
}

/// As [`write_atomic`], the new file given to `owner` (uid, gid) before it
/// takes the name: a run killed at any point never leaves a file of the
/// right content with the wrong owner.
pub fn write_atomic_as(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    write_file(path, bytes, mode, owner, Durability::FileAndDir)
}

// ---- group commit ---------------------------------------------------------
//
// A run makes each change durable once, where it must be, instead of two
// fsyncs per file: with group commit on (`setup` and `--disable` turn it
// on), a write that asks to be durable is only renamed into place and its
// directory remembered; `commit()` then makes everything so far durable
// with one `syncfs` per filesystem. The run commits at its barriers: after
// the first record of the run (the intent: what undo needs exists before
// any change that outlives a power cut), after keeping an original that the
// next write replaces, and at its end. Between barriers a power cut can
// lose this run's newest writes, but not their order: on ext4 (ordered
// data, the journal commits renames in order) a change on disk implies the
// record written ahead of it is too, and a re-run converges. A killed
// process loses nothing (the page cache survives it): the fault matrix and
// the kill soak hold as before.

static GROUP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static PENDING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
static SYNCS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Turn group commit on or off for this process.
pub fn group_commit(on: bool) {
    GROUP.store(on, std::sync::atomic::Ordering::SeqCst);
}

fn grouped() -> bool {
    GROUP.load(std::sync::atomic::Ordering::SeqCst)
}

/// A write under `dir` is not durable yet: the next `commit` makes it so.
/// Returns whether it was deferred (group commit on).
pub fn defer(dir: &Path) -> bool {
    if !grouped() {
        return false;
    }
    if let Ok(mut p) = PENDING.lock() {
        if !p.iter().any(|d| d == dir) {
            p.push(dir.to_path_buf());
        }
    }
    true
}

/// Make every deferred write durable: one `syncfs` per filesystem.
pub fn commit() -> Result<()> {
    let dirs = PENDING.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
    let mut done: Vec<u64> = Vec::new();
    for d in dirs {
        let Ok(f) = File::open(&d) else { continue }; // gone since: nothing to sync
        let dev = f
            .metadata()
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
            .unwrap_or(0);
        if done.contains(&dev) {
            continue;
        }
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)).map_err(|e| io_error("syncfs", &d, e.into()))?;
        count_sync();
        done.push(dev);
    }
    Ok(())
}

/// How many sync calls this process made (for the benchmark).
pub fn sync_count() -> usize {
    SYNCS.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn count_sync() {
    SYNCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// What reaches the disk before `write_file` returns.
#[derive(Clone, Copy, PartialEq)]
enum Durability {
    Nothing,
    /// The content, before the rename; the caller syncs the directory.
    File,
    FileAndDir,
}

fn write_file(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>, sync: Durability) -> Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::host(
            path.display().to_string(),
            "is a symbolic link; refusing to write through it",
            "remove the link (it was not made by sandbox), then re-run",
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = temp_path(path);
    let result = (|| {
        let write = |f: &mut File, at: &Path| -> Result<()> {
            f.write_all(bytes).map_err(|e| io_error("write", at, e))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::fchown(&*f, Some(uid), Some(gid)).map_err(|e| io_error("chown", at, e))?;
            }
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| io_error("chmod", at, e))?;
            if sync != Durability::Nothing && !grouped() {
                f.sync_all().map_err(|e| io_error("fsync", at, e))?;
                count_sync();
            }
            Ok(())
        };
        let anonymous = OpenOptions::new()
            .write(true)
            .mode(mode)
            .custom_flags(nix::libc::O_TMPFILE)
            .open(dir);
        match anonymous {
            Ok(mut f) => {
                write(&mut f, dir)?;
                // A stale name of ours (pids are reused) from a run killed
                // between link and rename.
                let _ = fs::remove_file(&tmp);
                let fd = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f)));
                nix::unistd::linkat(
                    None,
                    fd.as_path(),
                    None,
                    tmp.as_path(),
                    nix::unistd::LinkatFlags::AT_SYMLINK_FOLLOW,
                )
                .map_err(|e| io_error("link", &tmp, e.into()))?;
            }
            // Filesystems without O_TMPFILE: a named temp file throughout.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::EOPNOTSUPP | nix::libc::EISDIR | nix::libc::EINVAL)
                ) =>
            {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(mode)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&tmp)
                    .map_err(|e| io_error("create", &tmp, e))?;
                write(&mut f, &tmp)?;
            }
            Err(e) => return Err(io_error("create a file in", dir, e)),
        }
        fs::rename(&tmp, path).map_err(|e| io_error("rename into place", path, e))?;
        if sync != Durability::Nothing && !defer(dir) && sync == Durability::FileAndDir {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The name a file has for an instant before it is renamed over `path`:
/// `.NAME.<pid>.sandbox-tmp`, one per process, so two runs writing one
/// shared file (the unit templates) never take each other's temp file. A
/// run killed in that instant leaves it; reverts remove it with the file.
pub fn temp_path(path: &Path) -> PathBuf {
    temp_path_of(path, std::process::id())
}

fn temp_path_of(path: &Path, pid: u32) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("/"));
    dir.join(format!(".{}.{pid}.sandbox-tmp", file_name(path)))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The temp names of `path` left by runs that are gone (or by this one):
/// never one a live run is about to rename into place.
fn stale_temps(path: &Path) -> Vec<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let prefix = format!(".{}.", file_name(path));
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix(&prefix)?.strip_suffix(".sandbox-tmp")?;
            writer_gone(pid).then(|| e.path())
        })
        .chain(std::iter::once(dir.join(format!(".{}.sandbox-tmp", file_name(path)))))
        .collect()
}

/// Whether the run that named a temp file with `pid` is gone (or is this
/// one): its temp file is then stale. Older versions used
/// `.NAME.sandbox-tmp` (no pid).
fn writer_gone(pid: &str) -> bool {
    pid.is_empty()
        || pid.parse::<i32>().is_ok_and(|p| {
            p as u32 == std::process::id()
                || nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None) == Err(nix::errno::Errno::ESRCH)
        })
}

/// Whether `name` is a temp file of ours whose writer is gone. A live
/// run's is about to be renamed into place: removing it would fail that
/// run's write (two sandboxes share `/var/lib/sandbox`, where one run's
/// `--disable` tidies up while another writes the host record).
fn stale_temp_name(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.strip_suffix(".sandbox-tmp"))
        .is_some_and(|n| match n.rsplit_once('.') {
            Some((_, pid)) if pid.bytes().all(|b| b.is_ascii_digit()) => writer_gone(pid),
            _ => true,
        })
}

/// An I/O error, with the fix when the cause is the filesystem itself.
fn io_error(what: &'static str, path: &Path, e: std::io::Error) -> Error {
    let fix = match e.raw_os_error() {
        Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT) => {
            "free space on that filesystem, then re-run setup (or run --disable to undo what was done)"
        }
        Some(nix::libc::EROFS) => {
            "remount that filesystem read-write, then re-run setup (or run --disable to undo what was done)"
        }
        _ => return Error::io(what, path, e),
    };
    let kind = e.kind();
    Error::io(what, path, std::io::Error::new(kind, format!("{e}\n  fix: {fix}")))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    count_sync();
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
    let mut made = Vec::new();
    for d in missing_dirs(dir) {
        match fs::create_dir(&d) {
            Ok(()) => {}
            // Another run made it a moment ago: it is not ours to record.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => continue,
            Err(e) => return Err(io_error("create directory", &d, e)),
        }
        fs::set_permissions(&d, fs::Permissions::from_mode(mode)).map_err(|e| Error::io("chmod", &d, e))?;
        made.push(d);
    }
    Ok(made)
}

/// Remove the temp names a killed `write_atomic` of `path` may have left.
pub fn remove_temp(path: &Path) -> Result<()> {
    for tmp in stale_temps(path) {
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", tmp, e)),
        }
    }
    Ok(())
}

/// Remove directories we created (innermost first), each only if empty
/// but for temp names of our own (`.*.sandbox-tmp`), which go with it.
pub fn remove_dirs(created: &[PathBuf]) -> Result<()> {
    for d in created.iter().rev() {
        // Recorded ahead but never made (on a read-only filesystem, rmdir
        // of a missing directory says EROFS rather than ENOENT).
        if fs::symlink_metadata(d).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            continue;
        }
        if let Ok(entries) = fs::read_dir(d) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if stale_temp_name(&name) && e.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
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
    remove_temp(path)?;
    match hash_of(path)? {
        None => Ok(true),
        Some(h) if h == hash => {
            fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
            Ok(true)
        }
        Some(_) => Ok(false),
    }
}

/// What a file held before our first write to it (for [`undo_write`]),
/// or None when there was no file.
pub fn previous_content(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Undo a write we recorded (`ours`: the SHA-256 of what we wrote;
/// `previous`: what was there before, if anything): put the previous
/// content back, or remove the file, but only while it still holds what
/// we wrote. An edited file is kept and said so.
pub fn undo_write(path: &Path, ours: &str, previous: Option<&str>, mode: u32) -> Result<Option<String>> {
    match (hash_of(path)?, previous) {
        (None, _) => {
            remove_temp(path)?;
            Ok(None)
        }
        (Some(h), Some(prev)) if h == ours => {
            write_atomic(path, prev.as_bytes(), mode)?;
            Ok(Some(format!("restored {}", path.display())))
        }
        (Some(h), None) if h == ours => {
            remove_if_ours(path, ours)?;
            Ok(Some(format!("removed {}", path.display())))
        }
        (Some(_), _) => Ok(Some(format!("kept {}: edited since setup wrote it", path.display()))),
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
    fn removing_a_dir_leaves_a_live_runs_temp_file_alone() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("shared");
        fs::create_dir(&dir).expect("mkdir");
        // Another run, alive (our parent), is about to rename its temp file
        // into place; a run that is gone left one behind.
        let live = dir.join(format!(
            ".host.json.{}.sandbox-tmp",
            std::os::unix::process::parent_id()
        ));
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead_pid = child.id();
        child.wait().expect("wait");
        let dead = dir.join(format!(".host.json.{dead_pid}.sandbox-tmp"));
        let old = dir.join(".state.json.sandbox-tmp");
        for f in [&live, &dead, &old] {
            fs::write(f, "x").expect("w");
        }
        remove_dirs(std::slice::from_ref(&dir)).expect("remove");
        assert!(live.exists(), "a live run's temp file is kept");
        assert!(!dead.exists() && !old.exists(), "stale ones go");
        assert!(dir.exists(), "so the directory stays");
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
    fn stale_temp_names_go_and_a_live_runs_stays() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        let old = d.path().join(".f.sandbox-tmp");
        let live = temp_path_of(&p, 1); // init: always alive
        let dead = temp_path_of(&p, i32::MAX as u32);
        for t in [&old, &live, &dead] {
            fs::write(t, "x").expect("w");
        }
        remove_temp(&p).expect("remove");
        assert!(!old.exists() && !dead.exists());
        assert!(live.exists(), "another live run's temp file is not ours to take");
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
