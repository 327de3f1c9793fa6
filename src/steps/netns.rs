//! The named network namespace, iproute2-compatible: `ip netns exec
//! sandbox0 …` works on it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::Result;
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
        let mut r = Record {
            dir: dir.clone(),
            name: spec.net.netns.clone(),
            dir_changes: before.as_ref().map(|b| b.dir_changes).unwrap_or_default(),
            created_dirs: before.map(|b| b.created_dirs).unwrap_or_default(),
        };
        if netns::exists(&dir, &spec.net.netns) {
            rec.put(&r)?;
            return Ok(vec![]);
        }
        // Write-ahead, in one save: the namespace, the parents of its
        // directory this run makes and, if the directory does not exist
        // yet, that it will be made and made a shared mount point. Every
        // undo skips what is not there.
        let missing = dir.parent().map(files::missing_dirs).unwrap_or_default();
        r.created_dirs.extend(missing);
        let prior = r.dir_changes;
        if !dir.exists() {
            r.dir_changes.created_dir = true;
            r.dir_changes.made_mountpoint = true;
        }
        rec.put(&r)?;
        if let Some(parent) = dir.parent() {
            files::create_dirs(parent, 0o755)?;
        }
        let did = netns::create(&dir, &spec.net.netns)?;
        r.dir_changes.created_dir = prior.created_dir || did.created_dir;
        r.dir_changes.made_mountpoint = prior.made_mountpoint || did.made_mountpoint;
        rec.put(&r)?;
        Ok(vec![format!(
            "created network namespace {} ({})",
            r.name,
            dir.join(&r.name).display()
        )])
    }

    /// The veth pair (and the table inside) go with the namespace: the
    /// kernel deletes both ends as it tears the namespace down, on its own
    /// work queue, where deleting the link from here would block on an RCU
    /// barrier. The host end is gone before this returns.
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
        netns::release_dir(&r.dir, r.dir_changes)?;
        files::remove_dirs(&r.created_dirs)?;
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
        if !out.is_empty() && dir.exists() {
            netns::release_dir(&dir, all)?;
            if !dir.exists() {
                out.push(format!("removed {} (empty)", dir.display()));
            }
        }
        Ok(out)
    }
}
