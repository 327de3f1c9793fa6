//! The state record under `<root>/var/lib/sandbox/<name>/`: what was
//! applied and what is needed to undo it. Written atomically after every
//! change, under an exclusive lock, so an interrupted run can be resumed
//! or undone and two runs on one name never interleave.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::spec::Root;
use crate::sys::files;

const VERSION: u32 = 1;

/// The largest state record read (a real one is a few KiB): a record
/// swapped for something huge must not exhaust memory.
pub const MAX_RECORD_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub name: String,
    /// Directories made to hold this record; removed (if empty) when the
    /// last step is reverted.
    pub created_dirs: Vec<PathBuf>,
    /// The spec of the last setup, for `sandbox status` (kept as JSON so
    /// a record written by another version still loads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Value>,
    pub steps: Vec<StepRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: String,
    /// False while the step is under way: a crash leaves it false, and
    /// `--disable` reverts it all the same (reverts are idempotent).
    pub done: bool,
    pub data: Value,
}

impl State {
    pub fn get(&self, id: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|r| r.id == id)
    }

    pub fn put(&mut self, id: &str, done: bool, data: Value) {
        match self.steps.iter_mut().find(|r| r.id == id) {
            Some(r) => {
                r.done = done;
                r.data = data;
            }
            None => self.steps.push(StepRecord {
                id: id.into(),
                done,
                data,
            }),
        }
    }

    pub fn remove(&mut self, id: &str) {
        self.steps.retain(|r| r.id != id);
    }
}

/// The record's home, held under an exclusive `flock` for the life of
/// the value. Dropping it releases the lock.
pub struct Store {
    dir: PathBuf,
    /// `--root`: the record's created directories must lie below it.
    root: Root,
    /// What the file holds now: a save that would not change it is skipped
    /// (each save costs two fsyncs).
    saved: std::cell::RefCell<Vec<u8>>,
    /// A durable save was made by this run (group commit: the first one is
    /// the run's intent, committed at once; later ones wait for the run's
    /// commit).
    intent: std::cell::Cell<bool>,
    _lock: nix::fcntl::Flock<File>,
}

impl Store {
    /// The sandbox's state directory (root's, 0700).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Lock the record of `name`, creating its directory if needed.
    pub fn open(root: &Root, name: &str) -> Result<(Store, State)> {
        let dir = root.state_dir(name);
        let lock_path = dir.join("lock");
        // Refused before anything is made: a directory others may write
        // to (a pre-existing world-writable /var/lib/sandbox, say) would
        // let them swap the record root reverts from.
        check_tree(root, name)?;
        let mut created = Vec::new();
        // A run that finishes --disable unlinks the lock file (and maybe
        // the directory) while we open it: a lock on an unlinked file
        // excludes nobody, so lock again until the locked file is the one
        // at the path.
        let mut attempt = 0;
        let (lock, created) = loop {
            attempt += 1;
            created.extend(files::create_dirs(&dir, 0o700)?);
            check_tree(root, name)?;
            let file = match open_lock_file(&lock_path)? {
                Some(f) => f,
                None if attempt < 10 => continue,
                None => return Err(Error::io("open lock", &lock_path, std::io::ErrorKind::NotFound.into())),
            };
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) if attempt < 10 && !same_file(&lock, &lock_path) => continue,
                other => break (other, created),
            }
        };
        match lock {
            Ok(lock) => {
                let store = Store {
                    dir,
                    root: root.clone(),
                    saved: Default::default(),
                    intent: Default::default(),
                    _lock: lock,
                };
                let loaded = store.load()?;
                if let Some(state) = &loaded {
                    // What the file holds: a save of the same state is skipped.
                    *store.saved.borrow_mut() = serde_json::to_vec_pretty(state).unwrap_or_default();
                }
                let fresh = loaded.is_none();
                let mut state = loaded.unwrap_or_else(|| State {
                    version: VERSION,
                    name: name.into(),
                    ..State::default()
                });
                let mut created = created;
                if fresh {
                    // Two runs racing to make these directories each see only
                    // the ones they made; ours by name, they are recorded
                    // whoever made them (removed only when empty).
                    if let Some(parent) = store.dir.parent() {
                        created.push(parent.to_path_buf());
                    }
                    created.push(store.dir.clone());
                    created.sort_by_key(|d| d.components().count());
                    created.dedup();
                }
                for d in created {
                    if !state.created_dirs.contains(&d) {
                        state.created_dirs.push(d);
                    }
                }
                Ok((store, state))
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::Locked {
                name: name.into(),
                path: lock_path,
            }),
            Err((_, e)) => Err(Error::io("lock", lock_path, e.into())),
        }
    }

    /// Read the record without locking, for plans.
    pub fn peek(root: &Root, name: &str) -> Result<Option<State>> {
        check_tree(root, name)?;
        read(&root.state_dir(name).join("state.json"))
    }

    fn load(&self) -> Result<Option<State>> {
        read(&self.file())
    }

    /// Save durably (fsynced).
    pub fn save(&self, state: &State) -> Result<()> {
        self.save_with(state, true)
    }

    /// Save atomically; `durable` also fsyncs. A record that only precedes
    /// in-memory kernel state (links, rules, sysctls: all gone after a power
    /// cut) needs the atomic rename, not the disk.
    pub fn save_with(&self, state: &State, durable: bool) -> Result<()> {
        let json = serde_json::to_vec_pretty(state).map_err(|e| Error::State {
            path: self.file(),
            cause: e.to_string(),
            fix: "report this as a bug".into(),
        })?;
        if *self.saved.borrow() == json {
            return Ok(());
        }
        files::write_atomic_with(&self.file(), &json, 0o600, durable)?;
        *self.saved.borrow_mut() = json;
        if durable && !self.intent.replace(true) {
            // The run's first durable record: on disk before anything it
            // covers (a no-op outside group commit, where each save syncs).
            files::commit()?;
        }
        Ok(())
    }

    /// Everything is reverted: remove the record, the lock and the
    /// directories made for them.
    pub fn remove(self, state: &State) -> Result<()> {
        confine_dirs(&state.created_dirs, &self.root, &self.dir)?;
        // Every step is reverted: no original is needed any more, also not
        // one kept by a run killed before its record named it.
        crate::originals::forget_all(&self.dir)?;
        for f in [self.file(), self.dir.join("lock")] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", f, e)),
            }
        }
        files::remove_dirs(&state.created_dirs)
    }
}

impl Store {
    /// `--disable` without a usable record: remove the record, the lock,
    /// this sandbox's state directory and `/var/lib/sandbox` if empty. All
    /// of them are ours by their names, whoever made the directories.
    pub fn remove_all(self) -> Result<()> {
        for f in [self.file(), self.dir.join("lock")] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", f, e)),
            }
        }
        crate::originals::forget_all(&self.dir)?;
        let mut dirs = vec![self.dir.clone()];
        if let Some(parent) = self.dir.parent() {
            dirs.insert(0, parent.to_path_buf());
        }
        files::remove_dirs(&dirs)
    }
}

/// Open (creating) a lock file: never through a link, never blocked on a
/// FIFO. None when its directory vanished meanwhile (a run that finished
/// `--disable` removed it): the caller makes it again and retries.
pub(crate) fn open_lock_file(lock_path: &Path) -> Result<Option<File>> {
    let file = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(lock_path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open lock", lock_path, e)),
    };
    if !file.metadata().is_ok_and(|m| m.file_type().is_file()) {
        return Err(Error::host(
            format!("lock file {}", lock_path.display()),
            "is not a regular file",
            format!("remove it (rm {}), then re-run", lock_path.display()),
        ));
    }
    Ok(Some(file))
}

/// Whether `file` is (still) the file at `path`.
pub(crate) fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `<root>/var/lib/sandbox` and `<root>/var/lib/sandbox/<name>`, where
/// they exist, must be directories (not links) owned by root and not
/// writable by group or others: whoever can write there can swap the
/// record that `--disable` acts on as root.
pub fn check_tree(root: &Root, name: &str) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    for dir in [root.path("/var/lib/sandbox"), root.state_dir(name)] {
        let meta = match std::fs::symlink_metadata(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("inspect", &dir, e)),
        };
        let d = dir.display();
        let refuse = |why: String, fix: String| Err(Error::host(format!("state directory {d}"), why, fix));
        if meta.file_type().is_symlink() || !meta.is_dir() {
            let what = if meta.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "not a directory"
            };
            return refuse(
                format!("is {what}; the state record must live in a directory of root's own"),
                format!("move it away (mv {d} {d}.moved), then re-run: setup makes the directory (0700)"),
            );
        }
        // Root's; or, in a test run unprivileged, the running user's.
        if meta.uid() != 0 && meta.uid() != me {
            return refuse(
                format!(
                    "is owned by uid {}, not root: that user could swap the state record",
                    meta.uid()
                ),
                format!("chown root: {d}; chmod go-w {d} (and check who made it)"),
            );
        }
        if meta.mode() & 0o022 != 0 {
            return refuse(
                format!(
                    "is writable by group or others (mode {:04o}): they could swap the state record",
                    meta.mode() & 0o7777
                ),
                format!("chmod go-w {d}; chown root: {d} (and check who made it so)"),
            );
        }
    }
    Ok(())
}

/// A path from a state record, before a revert acts on it: absolute,
/// without `..`, and at or below one of `allowed` (the places this
/// sandbox writes). A record altered to name anything else (`/etc/passwd`,
/// say) makes that step's revert fail with this error; nothing is touched
/// there.
pub fn confine(path: &Path, allowed: &[PathBuf]) -> Result<()> {
    let clean = path.is_absolute() && !path.components().any(|c| matches!(c, Component::ParentDir));
    if clean && allowed.iter().any(|a| path.starts_with(a)) {
        return Ok(());
    }
    Err(outside(path, &format!("outside {}", list(allowed))))
}

/// Directories a record says were made on the way to `anchor` (and are
/// removed if empty): each must be `anchor`, below it, or one of its
/// ancestors strictly below `--root`.
pub fn confine_dirs(dirs: &[PathBuf], root: &Root, anchor: &Path) -> Result<()> {
    for d in dirs {
        let clean = d.is_absolute() && !d.components().any(|c| matches!(c, Component::ParentDir));
        let ours = d.starts_with(anchor) || (anchor.starts_with(d) && d.starts_with(&root.0) && *d != root.0);
        if !(clean && ours) {
            return Err(outside(
                d,
                &format!("neither {} nor a directory made on the way to it", anchor.display()),
            ));
        }
    }
    Ok(())
}

/// The `user` step's record: the home (which `--purge` removes whole)
/// must lie below `--root` and be no system directory, the files it
/// removes must lie in that home, the parents it made on the way to it,
/// and the user it may delete must not be root.
pub fn confine_home(root: &Root, name: &str, home: &Path, files: &[&Path], parents: &[PathBuf]) -> Result<()> {
    let on_host = home
        .strip_prefix(&root.0)
        .ok()
        .map(|rel| Path::new("/").join(rel))
        .filter(|_| home.is_absolute() && !home.components().any(|c| matches!(c, Component::ParentDir)));
    match on_host.as_deref().map(crate::spec::system_dir) {
        None => return Err(outside(home, &format!("not below {}", root.0.display()))),
        Some(Some(why)) => return Err(outside(home, &why)),
        Some(None) => {}
    }
    if name == "root" || name.is_empty() || name.contains(['/', ':']) {
        return Err(outside(Path::new(name), "not a name setup gives a sandbox user"));
    }
    let home = [home.to_path_buf()];
    for f in files {
        confine(f, &home)?;
    }
    confine_dirs(parents, root, &home[0])
}

/// Sysctl values a record says to restore: only keys `ours` accepts, and
/// only plain numbers (what the forwarding and logging switches hold), so
/// an altered record cannot set `kernel.core_pattern` or the like.
pub fn confine_sysctls(old: &[(String, String)], ours: impl Fn(&str) -> bool) -> Result<()> {
    for (key, value) in old {
        let plain = !key.split('/').any(|c| c.is_empty() || c == "." || c == "..");
        let number = !value.is_empty() && value.chars().all(|c| c.is_ascii_digit());
        if !(plain && ours(key) && number) {
            return Err(outside(
                &Path::new("/proc/sys").join(key),
                &format!("a sysctl (set to {value:?}) that this step never changes"),
            ));
        }
    }
    Ok(())
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("{}/", p.display()))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The error of a revert that refuses `path` from an altered record.
pub fn outside(path: &Path, why: &str) -> Error {
    Error::host(
        format!("{} (named in the state record)", path.display()),
        format!("{why}, where this sandbox writes: the record was altered, so this step touches nothing"),
        "find out who changed the record under /var/lib/sandbox; restore it from a backup, or undo this step by hand \
         and delete its entry from the record, then re-run --disable",
    )
}

/// The bytes of a record of ours (`what`: "state record", "host record"):
/// a regular file of bounded size only, opened without following a link
/// or waiting on a FIFO. None when it is missing, or empty (only a power
/// cut right after the record was first made leaves it so: nothing was
/// recorded yet).
pub(crate) fn read_record_bytes(path: &Path, what: &str) -> Result<Option<Vec<u8>>> {
    let bytes = match crate::sys::bounded::read_regular(path, MAX_RECORD_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(Error::State {
                path: path.into(),
                cause: e.to_string(),
                fix: format!(
                    "a record is a regular JSON file of at most {} MiB: move this away, restore the record from a \
                     backup, or run `sandbox setup --disable` to clean up by name",
                    MAX_RECORD_BYTES >> 20
                ),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Error::host(
                format!("{what} {}", path.display()),
                "permission denied: it belongs to root",
                "run it with sudo",
            ))
        }
        Err(e) => return Err(Error::io("read", path, e)),
    };
    Ok((!bytes.is_empty()).then_some(bytes))
}

fn read(path: &Path) -> Result<Option<State>> {
    let Some(bytes) = read_record_bytes(path, "state record")? else {
        return Ok(None);
    };
    let state: State = serde_json::from_slice(&bytes).map_err(|e| Error::State {
        path: path.into(),
        cause: format!("unreadable: {e}"),
        fix: "restore it from a backup, or move it away and run `sandbox setup --disable` to clean up by name".into(),
    })?;
    if state.version != VERSION {
        return Err(Error::State {
            path: path.into(),
            cause: format!("version {} is not the {VERSION} this binary writes", state.version),
            fix: "use the sandbox binary that wrote it to run --disable".into(),
        });
    }
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_on_one_name_is_refused_other_names_are_not() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = Root(d.path().into());
        let (a, mut st) = Store::open(&root, "one").expect("first");
        st.put("netns", true, serde_json::json!({"x": 1}));
        a.save(&st).expect("save");
        let e = Store::open(&root, "one").err().expect("locked");
        assert_eq!(e.exit_code(), 4, "{e}");
        assert!(e.to_string().contains("another `sandbox` run"), "{e}");
        let _b = Store::open(&root, "two").expect("other names do not block");
        drop(a);
        let (c, st2) = Store::open(&root, "one").expect("free again");
        assert_eq!(st2.get("netns").map(|r| r.done), Some(true));
        c.remove(&st2).expect("remove");
        assert!(!root.state_dir("one").exists());
    }

    #[test]
    fn corrupt_record_names_file_and_fix() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = Root(d.path().into());
        std::fs::create_dir_all(root.state_dir("x")).expect("mkdir");
        std::fs::write(root.state_dir("x").join("state.json"), "{not json").expect("w");
        let e = Store::peek(&root, "x").expect_err("corrupt");
        assert!(
            e.to_string().contains("state.json") && e.to_string().contains("fix:"),
            "{e}"
        );
    }

    #[test]
    fn a_state_tree_others_may_write_is_refused_and_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let root = Root(d.path().into());
        let top = root.path("/var/lib/sandbox");
        std::fs::create_dir_all(&top).expect("mkdir");
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        for e in [
            Store::open(&root, "x").err().expect("open refused"),
            Store::peek(&root, "x").expect_err("peek refused"),
        ] {
            let t = e.to_string();
            assert_eq!(e.exit_code(), 3, "{t}");
            assert!(
                t.contains("writable by group or others") && t.contains("chmod go-w"),
                "{t}"
            );
        }
        assert!(!root.state_dir("x").exists(), "nothing made under it");
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::create_dir(root.state_dir("x")).expect("mkdir x");
        std::fs::set_permissions(root.state_dir("x"), std::fs::Permissions::from_mode(0o770)).expect("chmod");
        let e = Store::open(&root, "x").err().expect("group-writable refused");
        assert!(e.to_string().contains("mode 0770"), "{e}");
        std::fs::set_permissions(root.state_dir("x"), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let (store, state) = Store::open(&root, "x").expect("tight again");
        store.remove(&state).expect("remove");
    }

    #[test]
    fn a_linked_state_directory_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = Root(d.path().into());
        std::fs::create_dir_all(root.path("/var/lib")).expect("mkdir");
        std::fs::create_dir(d.path().join("elsewhere")).expect("mkdir");
        std::os::unix::fs::symlink(d.path().join("elsewhere"), root.path("/var/lib/sandbox")).expect("link");
        let e = Store::open(&root, "x").err().expect("refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_fifo_or_huge_record_is_refused_promptly() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = Root(d.path().into());
        std::fs::create_dir_all(root.state_dir("x")).expect("mkdir");
        let file = root.state_dir("x").join("state.json");
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let started = std::time::Instant::now();
        let e = Store::peek(&root, "x").expect_err("a FIFO");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(e.exit_code(), 5, "{e}");
        assert!(
            e.to_string().contains("is a FIFO") && e.to_string().contains("fix:"),
            "{e}"
        );
        std::fs::remove_file(&file).expect("rm");
        File::create(&file)
            .and_then(|f| f.set_len(MAX_RECORD_BYTES + 1))
            .expect("sparse");
        let e = Store::peek(&root, "x").expect_err("too large");
        assert!(e.to_string().contains("allowed"), "{e}");
    }

    #[test]
    fn record_paths_are_confined_to_where_we_write() {
        let root = Root("/tmp/tree".into());
        let allowed = [root.path("/etc/netns")];
        confine(Path::new("/tmp/tree/etc/netns/s0/resolv.conf"), &allowed).expect("ours");
        for bad in [
            "/tmp/tree/etc/passwd",
            "/etc/passwd",
            "/tmp/tree/etc/netns/../passwd",
            "/tmp/tree/etc/netnsx/f",
            "etc/netns/s0/resolv.conf",
        ] {
            let e = confine(Path::new(bad), &allowed).expect_err(bad);
            assert!(e.to_string().contains("record was altered"), "{e}");
        }
        let anchor = root.path("/etc/netns/s0");
        let made = [root.path("/etc"), root.path("/etc/netns"), anchor.clone()];
        confine_dirs(&made, &root, &anchor).expect("the way to it");
        for bad in ["/tmp/tree", "/tmp", "/tmp/tree/var", "/tmp/tree/etc/../var"] {
            confine_dirs(&[PathBuf::from(bad)], &root, &anchor).expect_err(bad);
        }
    }

    #[test]
    fn the_user_record_is_confined_to_its_home() {
        let root = Root("/tmp/tree".into());
        let home = root.path("/home/sb");
        let rc = home.join(".bashrc");
        confine_home(&root, "sb", &home, &[&rc], &[root.path("/home")]).expect("ours");
        let passwd = root.path("/etc/passwd");
        let bad: [(&str, PathBuf, &Path); 5] = [
            ("sb", root.path("/etc"), &rc),
            ("sb", root.0.clone(), &rc),
            ("sb", PathBuf::from("/home/sb"), &rc),
            ("sb", home.clone(), &passwd),
            ("root", home.clone(), &rc),
        ];
        for (name, h, f) in bad {
            let e = confine_home(&root, name, &h, &[f], &[]).expect_err("refused");
            assert!(e.to_string().contains("record was altered"), "{e}");
        }
    }

    #[test]
    fn only_our_sysctls_with_plain_values_are_restored() {
        let ours = |k: &str| k == "net/ipv4/ip_forward";
        let kv = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        confine_sysctls(&kv("net/ipv4/ip_forward", "0"), ours).expect("ours");
        for (k, v) in [
            ("kernel/core_pattern", "0"),
            ("net/ipv4/ip_forward", "|/tmp/x"),
            ("net/ipv4/../../kernel/core_pattern", "1"),
        ] {
            confine_sysctls(&kv(k, v), ours).expect_err(k);
        }
    }

    #[test]
    fn removing_the_store_refuses_created_dirs_elsewhere() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = Root(d.path().join("root"));
        std::fs::create_dir(&root.0).expect("root");
        let victim = d.path().join("victim");
        std::fs::create_dir(&victim).expect("victim");
        let (store, mut state) = Store::open(&root, "x").expect("open");
        state.created_dirs.push(victim.clone());
        let e = store.remove(&state).expect_err("refused");
        assert!(e.to_string().contains("victim"), "{e}");
        assert!(victim.exists(), "an empty directory outside is not removed");
    }

    /// The first save is not fsynced: a power cut right after it can leave
    /// the file empty, which holds no step yet.
    #[test]
    fn an_empty_record_is_no_record() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = Root(d.path().into());
        std::fs::create_dir_all(root.state_dir("x")).expect("mkdir");
        std::fs::write(root.state_dir("x").join("state.json"), "").expect("w");
        assert!(Store::peek(&root, "x").expect("empty reads").is_none());
        let (store, state) = Store::open(&root, "x").expect("open");
        assert!(state.get("netns").is_none());
        store.remove(&state).expect("remove");
    }
}
