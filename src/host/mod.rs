//! The host scope: what several sandboxes share, and who holds it.
//!
//! Some of what a sandbox needs is the host's, not the sandbox's: the
//! forwarding sysctls, `nf_log_all_netns`, the `/run/netns` mount, the
//! `/etc/netns` directory, `/var/lib/private`, the shared unit templates,
//! the shared nft table, and the addresses handed out to sandboxes. One record,
//! `<root>/var/lib/sandbox/host.json`, holds each such resource with the
//! names of the sandboxes that hold it and what the host had before the
//! first of them. The first holder applies a resource; the last one
//! restores the original exactly, whatever order sandboxes go in.
//!
//! Locking: `host.lock` beside the record, taken (blocking) only for short
//! sections that read, change and save the record, and never held while
//! waiting for anything else. A run holds its sandbox's own lock (a
//! try-lock: it never waits) for its whole life and takes the host lock
//! inside it; since nobody waits for a sandbox lock while holding the host
//! lock, the two cannot deadlock.

mod leases;
mod migrate;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::spec::Root;
use crate::sys::files;

pub use leases::{addresses, choose, lease_for, Addressing, Lease, DEFAULT_POOL, JOB_UIDS};

const VERSION: u32 = 1;

/// What sandboxes share. The id is the record's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `net.ipv4.ip_forward` (and every `net.ipv4.conf.*.forwarding`).
    Forwarding,
    /// `net.netfilter.nf_log_all_netns`.
    NfLog,
    /// `/run/netns`, made a shared mount point.
    NetnsDir,
    /// `/etc/netns` and its parents.
    EtcNetns,
    /// `sandbox-net@.service` and `defenseclaw-gateway@.service`.
    UnitTemplates,
    /// The one nft table on the host all sandboxes' chains live in.
    HostTable,
    /// `/var/lib/private` (and its parents), where the sidecars' dynamic
    /// users get their state directories.
    PrivateStateDir,
}

impl Resource {
    pub fn id(self) -> &'static str {
        match self {
            Resource::Forwarding => "forwarding",
            Resource::NfLog => "nflog",
            Resource::NetnsDir => "netns-dir",
            Resource::EtcNetns => "etc-netns",
            Resource::UnitTemplates => "unit-templates",
            Resource::HostTable => "host-table",
            Resource::PrivateStateDir => "var-lib-private",
        }
    }
}

/// The host record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    #[serde(default)]
    pub resources: BTreeMap<String, Held>,
    /// Addresses (and job uids) handed out, by sandbox name.
    #[serde(default)]
    pub leases: BTreeMap<String, Lease>,
}

/// One shared resource: who holds it and what the host had before.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub holders: BTreeSet<String>,
    /// What the first holder found (its shape is the resource's own).
    pub original: Value,
}

/// The host record, locked for the life of the value.
pub struct Host {
    root: Root,
    record: Record,
    saved: Record,
    _lock: nix::fcntl::Flock<File>,
}

/// A resource's original, for the host record.
pub fn to_value<T: Serialize>(v: T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::State {
        path: PathBuf::from("host.json"),
        cause: format!("cannot encode an original value: {e}"),
        fix: "report this as a bug".into(),
    })
}

/// A resource's original in the host record that does not decode.
pub fn bad_original(res: &str, e: serde_json::Error) -> Error {
    Error::State {
        path: PathBuf::from("/var/lib/sandbox/host.json"),
        cause: format!("the original of {res} does not decode: {e}"),
        fix: "restore the host record from a backup, or set the host's value back by hand".into(),
    }
}

/// The record's file under `root`.
pub fn record_path(root: &Root) -> PathBuf {
    root.path("/var/lib/sandbox/host.json")
}

fn lock_path(root: &Root) -> PathBuf {
    root.path("/var/lib/sandbox/host.lock")
}

/// Run `f` on the locked host record; save what it changed (before
/// returning, so a change `f` made to the record is on disk before the
/// caller acts on it). When no resource and no lease is left, the record
/// and its lock go.
pub fn with<T>(root: &Root, f: impl FnOnce(&mut Host) -> Result<T>) -> Result<T> {
    let mut host = Host::open(root)?;
    let out = f(&mut host);
    // Saved even when `f` failed: what it recorded before failing (a
    // holder about to apply) is what undo needs.
    host.save()?;
    out
}

/// The record as it is, unlocked (plans and `status`). None: no record.
pub fn peek(root: &Root) -> Result<Option<Record>> {
    read(&record_path(root))
}

impl Host {
    fn open(root: &Root) -> Result<Host> {
        let dir = root.path("/var/lib/sandbox");
        crate::state::check_tree(root, "")?;
        let path = lock_path(root);
        // The last holder removes the lock file (and maybe the directory):
        // a lock on an unlinked file excludes nobody, so lock again until
        // ours is the one at the path. Each retry means another run got
        // through meanwhile, so this ends; a bound turns a bug into an error.
        let mut attempt = 0;
        let lock = loop {
            attempt += 1;
            if attempt > 10_000 {
                return Err(Error::host(
                    format!("host lock {}", path.display()),
                    "kept vanishing while being locked",
                    "report this as a bug; re-running usually succeeds",
                ));
            }
            files::create_dirs(&dir, 0o700)?;
            let Some(file) = crate::state::open_lock_file(&path)? else {
                continue;
            };
            // Blocking: the sections under this lock are short.
            let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| Error::io("lock", &path, e.into()))?;
            if crate::state::same_file(&lock, &path) {
                break lock;
            }
        };
        let found = read(&record_path(root))?;
        let fresh = found.is_none();
        let saved = found.unwrap_or(Record {
            version: VERSION,
            ..Record::default()
        });
        let mut host = Host {
            root: root.clone(),
            record: saved.clone(),
            saved,
            _lock: lock,
        };
        if fresh {
            // Sandboxes made by a version without a host record hold
            // shared resources in their own records: take them over
            // before anyone else claims a resource.
            migrate::adopt_all(&mut host)?;
        }
        Ok(host)
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Hold `res` for `holder`. The first holder's `snapshot` (what the
    /// host has now) becomes the original, saved before this returns, so
    /// the caller may then apply the change. Returns whether `holder` is
    /// the first (the caller applies the resource for every holder
    /// anyway: applying is idempotent, and repairs a resource changed
    /// behind our back).
    pub fn hold(&mut self, res: Resource, holder: &str, snapshot: impl FnOnce() -> Result<Value>) -> Result<bool> {
        let first = !self.record.resources.contains_key(res.id());
        if first {
            let original = snapshot()?;
            self.record.resources.insert(
                res.id().into(),
                Held {
                    holders: BTreeSet::new(),
                    original,
                },
            );
        }
        if let Some(h) = self.record.resources.get_mut(res.id()) {
            h.holders.insert(holder.into());
        }
        self.save()?;
        Ok(first)
    }

    /// Let go of `res` for `holder`. The last holder restores the original
    /// with `restore`; the resource leaves the record only once that
    /// worked (a failed restore is retried by the next release). Says what
    /// was done, or why the resource stays.
    pub fn release(
        &mut self,
        res: Resource,
        holder: &str,
        restore: impl FnOnce(&Value) -> Result<Vec<String>>,
    ) -> Result<Vec<String>> {
        let Some(held) = self.record.resources.get_mut(res.id()) else {
            return Ok(Vec::new());
        };
        let was_holder = held.holders.remove(holder);
        let others: Vec<String> = held.holders.iter().cloned().collect();
        let original = held.original.clone();
        // Saved before the restore: a crash in between leaves a resource
        // nobody holds, which the next release (or the next first holder,
        // who keeps the original) settles.
        self.save()?;
        if !others.is_empty() {
            return Ok(if was_holder {
                vec![format!(
                    "kept {}: sandbox {} still holds it",
                    res.id(),
                    others.join(", ")
                )]
            } else {
                Vec::new()
            });
        }
        let out = restore(&original)?;
        self.record.resources.remove(res.id());
        self.save()?;
        Ok(out)
    }

    /// Change what the record holds as `res`'s original (a holder found
    /// the host made more of it than the first one recorded).
    pub fn amend(&mut self, res: Resource, f: impl FnOnce(&mut Value)) -> Result<()> {
        if let Some(h) = self.record.resources.get_mut(res.id()) {
            f(&mut h.original);
        }
        self.save()
    }

    /// Whether the record knows `res` at all (held, or left by a run
    /// killed while the last holder restored it). A resource it does not
    /// know was made before the host scope, or its record was lost.
    pub fn knows(&self, res: Resource) -> bool {
        self.record.resources.contains_key(res.id())
    }

    /// Who holds `res`.
    pub fn holders(&self, res: Resource) -> Vec<String> {
        self.record
            .resources
            .get(res.id())
            .map(|h| h.holders.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `holder` holds anything, a lease included.
    pub fn holds_anything(&self, holder: &str) -> bool {
        self.record.leases.contains_key(holder) || self.record.resources.values().any(|h| h.holders.contains(holder))
    }

    /// Write the record if it changed; remove it (and its lock) once it
    /// holds nothing.
    fn save(&mut self) -> Result<()> {
        let empty = self.record.resources.is_empty() && self.record.leases.is_empty();
        // An empty record is never left behind, nor its lock (a run that
        // only looked must leave no trace).
        if self.record == self.saved && !empty {
            return Ok(());
        }
        let path = record_path(&self.root);
        if empty {
            for f in [path.clone(), lock_path(&self.root)] {
                match std::fs::remove_file(&f) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", f, e)),
                }
            }
            // Ours by its name, as the sweep holds too: the last sandbox
            // takes it along once nothing is left in it (a sandbox that made
            // it may have gone first).
            files::remove_dirs(&[self.root.path("/var/lib/sandbox")])?;
        } else {
            let json = serde_json::to_vec_pretty(&self.record).map_err(|e| Error::State {
                path: path.clone(),
                cause: e.to_string(),
                fix: "report this as a bug".into(),
            })?;
            // Durable: it covers files on disk (the templates, /etc/netns)
            // as well as kernel state. Under group commit the sync joins
            // the run's next barrier.
            files::write_atomic_with(&path, &json, 0o600, true)?;
        }
        self.saved = self.record.clone();
        Ok(())
    }
}

fn read(path: &std::path::Path) -> Result<Option<Record>> {
    let Some(bytes) = crate::state::read_record_bytes(path, "host record")? else {
        return Ok(None);
    };
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| Error::State {
        path: path.into(),
        cause: format!("unreadable: {e}"),
        fix: "restore it from a backup; without it, shared host settings (ip_forward, /run/netns) are restored \
              by hand after the last sandbox is gone"
            .into(),
    })?;
    if record.version != VERSION {
        return Err(Error::State {
            path: path.into(),
            cause: format!("version {} is not the {VERSION} this binary writes", record.version),
            fix: "use the sandbox binary that wrote it".into(),
        });
    }
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().expect("tempdir");
        let r = Root(d.path().to_path_buf());
        (d, r)
    }

    #[test]
    fn the_first_holder_keeps_the_original_and_the_last_restores_it() {
        let (_d, root) = root();
        let restored = std::cell::RefCell::new(Vec::new());
        let first = with(&root, |h| h.hold(Resource::Forwarding, "a", || Ok(Value::from("0")))).expect("hold a");
        assert!(first);
        // The second finds "1" (a's change): it must not become the original.
        let first = with(&root, |h| h.hold(Resource::Forwarding, "b", || Ok(Value::from("1")))).expect("hold b");
        assert!(!first);
        let said = with(&root, |h| {
            h.release(Resource::Forwarding, "a", |v| {
                restored.borrow_mut().push(v.clone());
                Ok(vec![])
            })
        })
        .expect("release a");
        assert!(restored.borrow().is_empty(), "b still holds it");
        assert!(said[0].contains("sandbox b still holds it"), "{said:?}");
        with(&root, |h| {
            h.release(Resource::Forwarding, "b", |v| {
                restored.borrow_mut().push(v.clone());
                Ok(vec![])
            })
        })
        .expect("release b");
        assert_eq!(*restored.borrow(), vec![Value::from("0")]);
        assert!(!record_path(&root).exists(), "an empty record goes");
        assert!(!lock_path(&root).exists(), "and its lock");
    }

    #[test]
    fn a_failed_restore_keeps_the_resource_for_the_next_release() {
        let (_d, root) = root();
        with(&root, |h| h.hold(Resource::NfLog, "a", || Ok(Value::from("0")))).expect("hold");
        let err = with(&root, |h| {
            h.release(Resource::NfLog, "a", |_| Err(Error::input("x", "failed", "retry")))
        });
        assert!(err.is_err());
        let rec = peek(&root).expect("read").expect("kept");
        assert!(rec.resources["nflog"].holders.is_empty());
        let mut got = None;
        with(&root, |h| {
            h.release(Resource::NfLog, "a", |v| {
                got = Some(v.clone());
                Ok(vec![])
            })
        })
        .expect("retry");
        assert_eq!(got, Some(Value::from("0")));
        assert!(peek(&root).expect("read").is_none());
    }

    #[test]
    fn releasing_what_one_does_not_hold_changes_nothing() {
        let (_d, root) = root();
        with(&root, |h| h.hold(Resource::NetnsDir, "a", || Ok(Value::Null))).expect("hold");
        let said = with(&root, |h| {
            h.release(Resource::NetnsDir, "b", |_| panic!("not the last"))
        })
        .expect("release");
        assert!(said.is_empty());
        assert_eq!(
            peek(&root).expect("read").expect("kept").resources["netns-dir"]
                .holders
                .len(),
            1
        );
    }
}
