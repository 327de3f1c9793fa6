//! The state record under `<root>/var/lib/sandbox/<name>/`: what was
//! applied and what is needed to undo it. Written atomically after every
//! change, under an exclusive lock, so an interrupted run can be resumed
//! or undone and two runs on one name never interleave.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::spec::Root;
use crate::sys::files;

const VERSION: u32 = 1;

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
    /// What the file holds now: a save that would not change it is skipped
    /// (each save costs two fsyncs).
    saved: std::cell::RefCell<Vec<u8>>,
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
        let mut created = Vec::new();
        // A run that finishes --disable unlinks the lock file (and maybe
        // the directory) while we open it: a lock on an unlinked file
        // excludes nobody, so lock again until the locked file is the one
        // at the path.
        let mut attempt = 0;
        let (lock, created) = loop {
            attempt += 1;
            created.extend(files::create_dirs(&dir, 0o700)?);
            let file = match OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 10 => continue,
                Err(e) => return Err(Error::io("open lock", &lock_path, e)),
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
                    saved: Default::default(),
                    _lock: lock,
                };
                let loaded = store.load()?;
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
        Ok(())
    }

    /// Everything is reverted: remove the record, the lock and the
    /// directories made for them.
    pub fn remove(self, state: &State) -> Result<()> {
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
        let mut dirs = vec![self.dir.clone()];
        if let Some(parent) = self.dir.parent() {
            dirs.insert(0, parent.to_path_buf());
        }
        files::remove_dirs(&dirs)
    }
}

/// Whether `file` is (still) the file at `path`.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn read(path: &Path) -> Result<Option<State>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Error::host(
                format!("state record {}", path.display()),
                "permission denied: it belongs to root",
                "run it with sudo",
            ))
        }
        Err(e) => return Err(Error::io("read", path, e)),
    };
    // Only a power cut right after the record was first made leaves it
    // empty (no save writes empty JSON): nothing was recorded yet.
    if bytes.is_empty() {
        return Ok(None);
    }
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
