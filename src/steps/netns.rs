//! The named network namespace, iproute2-compatible: `ip netns exec
//! sandbox0 …` works on it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::Result;
use crate::host::{self, to_value, Resource};
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::state;
use crate::sys::files;
use crate::sys::netlink::Netlink;
use crate::sys::netns::{self, DirChanges};

pub struct Netns;

/// How long the kernel may take to tear a deleted namespace down (and its
/// links with it) before we delete them ourselves: about a millisecond
/// when idle; longer while other namespaces are being torn down.
const LINKS_GO_WITHIN: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    dir: PathBuf,
    name: String,
    dir_changes: DirChanges,
    /// Parents of `dir` we made (only ever under a fresh `--root`).
    #[serde(default)]
    created_dirs: Vec<PathBuf>,
}

/// What the first sandbox found of the shared directory, in the host record.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SharedDir {
    dir_changes: DirChanges,
    #[serde(default)]
    created_dirs: Vec<PathBuf>,
}

impl Step for Netns {
    fn id(&self) -> &'static str {
        "netns"
    }

    fn in_jobs(&self) -> bool {
        true
    }

    fn volatile(&self) -> bool {
        true
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        let path = spec.root.netns_path(&spec.net.netns);
        inv.object(
            self.id(),
            "namespace",
            &spec.net.netns,
            &format!("network namespace bind-mounted at {}, lo up", path.display()),
            "unmount and unlink; the netns directory too if setup made it",
        );
    }

    fn plan(&self, spec: &Spec, _rec: Option<&Value>) -> Result<Vec<String>> {
        let dir = spec.root.netns_dir();
        if netns::exists(&dir, &spec.net.netns) {
            return Ok(vec![]);
        }
        Ok(vec![format!(
            "create network namespace {} ({}), loopback up",
            spec.net.netns,
            dir.join(&spec.net.netns).display()
        )])
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let dir = spec.root.netns_dir();
        let before = rec.get::<Record>();
        // What a record made before the host scope says about the shared
        // directory stays (its revert may need it); new records leave the
        // directory to the host record.
        let r = Record {
            dir: dir.clone(),
            name: spec.net.netns.clone(),
            dir_changes: before.as_ref().map(|b| b.dir_changes).unwrap_or_default(),
            created_dirs: before.map(|b| b.created_dirs).unwrap_or_default(),
        };
        rec.put(&r)?;
        // The directory, its parents and its shared mount are the host's:
        // the first sandbox records what it will make before making it.
        let first = host::with(&spec.root, |h| {
            h.hold(Resource::NetnsDir, &spec.name, || {
                let fresh = !dir.exists();
                to_value(SharedDir {
                    dir_changes: DirChanges {
                        created_dir: fresh,
                        made_mountpoint: fresh,
                    },
                    created_dirs: dir.parent().map(files::missing_dirs).unwrap_or_default(),
                })
            })
        })?;
        if netns::exists(&dir, &spec.net.netns) {
            return Ok(vec![]);
        }
        if let Some(parent) = dir.parent() {
            files::create_dirs(parent, 0o755)?;
        }
        let did = netns::create(&dir, &spec.net.netns)?;
        if did.made_mountpoint && !first {
            // A directory someone else made, not yet a mount point: we made
            // it one, and the last sandbox must undo that too.
            host::with(&spec.root, |h| {
                h.amend(Resource::NetnsDir, |v| {
                    v["dir_changes"]["made_mountpoint"] = Value::Bool(true);
                })
            })?;
        }
        Ok(vec![format!(
            "created network namespace {} ({})",
            r.name,
            dir.join(&r.name).display()
        )])
    }

    /// The veth pair (and the table inside) go with the namespace: the
    /// kernel deletes both ends as it tears the namespace down, on its own
    /// work queue, where deleting the link from here would block on an RCU
    /// barrier. The host end is gone before this returns. The last sandbox
    /// releases the shared directory.
    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        // Only a namespace in <root>/run/netns, whatever an altered record says.
        let netns_dir = undo.root.netns_dir();
        let plain = !r.name.is_empty() && !r.name.contains('/') && r.name != "." && r.name != "..";
        if r.dir != netns_dir || !plain {
            let why = format!("not a namespace directly in {}", netns_dir.display());
            return Err(state::outside(&r.dir.join(&r.name), &why));
        }
        state::confine_dirs(&r.created_dirs, &undo.root, &netns_dir)?;
        let host = Netlink::host()?;
        let tied = netns::links_into(&host, &r.dir.join(&r.name))?;
        let mut out = Vec::new();
        if netns::delete(&r.dir, &r.name)? {
            out.push(format!("deleted network namespace {}", r.name));
        }
        for l in netns::wait_links_gone(&host, tied, LINKS_GO_WITHIN)? {
            if host.delete_link(&l.name)? {
                out.push(format!(
                    "deleted {}: namespace {} is still held open (a process inside it?), so the kernel had not",
                    l.name, r.name
                ));
            }
        }
        let release = |shared: SharedDir| -> Result<Vec<String>> {
            state::confine_dirs(&shared.created_dirs, &undo.root, &netns_dir)?;
            netns::release_dir(&netns_dir, shared.dir_changes)?;
            files::remove_dirs(&shared.created_dirs)?;
            Ok(Vec::new())
        };
        out.extend(host::with(&undo.root, |h| {
            if !h.knows(Resource::NetnsDir) && r.dir_changes != DirChanges::default() {
                // Made before the host scope and never adopted.
                return release(SharedDir {
                    dir_changes: r.dir_changes,
                    created_dirs: r.created_dirs.clone(),
                });
            }
            h.release(Resource::NetnsDir, &undo.name, |v| {
                release(serde_json::from_value(v.clone()).map_err(|e| host::bad_original("netns-dir", e))?)
            })
        })?);
        Ok(out)
    }

    /// `<root>/run/netns/<name>0` is named after this sandbox. Whether
    /// setup made `/run/netns` (and its shared mount) is in the lost record;
    /// an empty one holds nothing, and `ip netns add` makes it again.
    fn sweep(&self, undo: &Undo, name: &str) -> Result<Vec<String>> {
        let dir = undo.root.netns_dir();
        let ns = format!("{name}0");
        let mut out = Vec::new();
        if netns::delete(&dir, &ns)? {
            out.push(format!("deleted network namespace {ns} ({})", dir.join(&ns).display()));
        }
        let all = DirChanges {
            created_dir: true,
            made_mountpoint: true,
        };
        let held = host::with(&undo.root, |h| {
            if !h.knows(Resource::NetnsDir) {
                return Ok(false);
            }
            // The host record knows what the first sandbox made.
            h.release(Resource::NetnsDir, name, |v| {
                let shared: SharedDir =
                    serde_json::from_value(v.clone()).map_err(|e| host::bad_original("netns-dir", e))?;
                state::confine_dirs(&shared.created_dirs, &undo.root, &dir)?;
                netns::release_dir(&dir, shared.dir_changes)?;
                files::remove_dirs(&shared.created_dirs)?;
                Ok(Vec::new())
            })?;
            Ok(true)
        })?;
        if !held && !out.is_empty() && dir.exists() {
            netns::release_dir(&dir, all)?;
        }
        if !out.is_empty() && !dir.exists() {
            out.push(format!("removed {} (empty)", dir.display()));
        }
        Ok(out)
    }
}
