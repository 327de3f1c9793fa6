//! The firewall: an nft table of our own named `sandbox_<name>` with the
//! egress allowlist inside the sandbox's namespace (default drop), and on
//! the host, in the table all sandboxes share (`inet sandbox_host`, see
//! `firewall::host_table`), chains that hold what arrives through our veth
//! to the same allowlist, so a sandbox that could change its own rules
//! still could not get further. Nothing else in either ruleset is touched.
//!
//! The two live in different namespaces, so they take one `nft` run
//! each; the runs are independent and go side by side, in the background
//! while the next steps run (each is mostly process start-up). Both are in
//! place before the veth exists: that step waits for them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::Result;
use crate::firewall::{denials, generate, host_table, Table, Where};
use crate::host::{self, Resource};
use crate::inventory::Inventory;
use crate::spec::{Root, Spec};
use crate::sys::{netns, nft};

pub struct EgressRules;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    netns: PathBuf,
    /// The namespace's table. In records written before the shared host
    /// table (no `shared`), also the name of the sandbox's own host table.
    table: String,
    /// Our rules may be on the host (false under `--no-host-networking`).
    host: bool,
    /// Where on the host: this sandbox's part of the shared host table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shared: Option<Shared>,
    /// A per-sandbox host table of an older version that a setup moved
    /// into the shared one (deleted in the same transaction; kept here so
    /// an undo deletes it too, whatever happened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    legacy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Shared {
    sandbox: String,
    veth: String,
}

impl Record {
    /// The host table of an older version this record names, if any.
    fn old_host_table(&self) -> Option<String> {
        if self.host && self.shared.is_none() {
            return Some(self.table.clone());
        }
        self.legacy.clone()
    }
}

impl Step for EgressRules {
    fn id(&self) -> &'static str {
        "firewall"
    }

    fn in_jobs(&self) -> bool {
        true
    }

    fn volatile(&self) -> bool {
        true
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        let place = format!("inside {}", spec.net.netns);
        inv.table(
            self.id(),
            &place,
            &generate::netns_table(spec),
            "goes with the namespace",
        );
        if spec.host_networking {
            let t = generate::host_table(spec);
            let inverse = format!(
                "delete this sandbox's chains, sets and map elements from table inet {}; the table itself \
                 goes with the last sandbox; nothing else in the ruleset is touched",
                t.name
            );
            inv.table(self.id(), "host", &t, &inverse);
        }
    }

    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
        let inside = generate::netns_table(spec);
        let path = spec.root.netns_path(&spec.net.netns);
        let before = rec.and_then(|v| data::<Record>(self.id(), v).ok());
        let mut out = Vec::new();
        let current = path.exists() && {
            let t = inside.clone();
            netns::run_in(&path, move || nft::is_current(&t))?
        };
        if !current {
            out.push(describe_inside(&inside, &spec.net.netns));
        }
        if let Some(old) = before.as_ref().and_then(Record::old_host_table) {
            if nft::table_exists(&old)? {
                out.push(format!(
                    "delete host table inet {old} (an older version's; moved into {})",
                    host_table::TABLE
                ));
            }
        }
        if spec.host_networking {
            let t = generate::host_table(spec);
            let listed = nft::listing(&t)?;
            if !nft::matches(&t, listed.as_ref()) {
                out.push(describe_host(&t));
            } else {
                let seen = denials::from_listing(listed.as_ref(), Where::Host);
                if !seen.is_empty() {
                    out.push(format!("{CLEAR} {} before this setup", denials::summary(&seen)));
                }
            }
        } else if before.is_some_and(|r| r.host) {
            out.push(format!("remove the host rules of {} (--no-host-networking)", spec.name));
        }
        Ok(out)
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let inside = generate::netns_table(spec);
        let host = spec.host_networking.then(|| generate::host_table(spec));
        let path = spec.root.netns_path(&spec.net.netns);
        let before = rec.get::<Record>();
        let known = before.is_some();
        let had_shared = before.as_ref().is_some_and(|b| b.host && b.shared.is_some());
        let legacy = before.as_ref().and_then(Record::old_host_table);
        let shared = Shared {
            sandbox: spec.name.clone(),
            veth: spec.net.host_if.clone(),
        };
        // Write-ahead: host rules about to be installed, ones an earlier run
        // left that this run removes, and an older version's host table
        // this run deletes, are in the record first.
        let mut r = Record {
            netns: path.clone(),
            table: inside.name.clone(),
            host: had_shared || host.is_some(),
            shared: (had_shared || host.is_some()).then(|| shared.clone()),
            legacy: legacy.clone(),
        };
        rec.put(&r)?;
        let netns_name = spec.net.netns.clone();
        let lock = host_table::lock_dir(&spec.root);
        let host_work = HostWork {
            want: host,
            had_shared,
            legacy,
            shared,
            lock: lock.clone(),
        };
        if host_work.want.is_none() && (had_shared || host_work.legacy.is_some()) {
            // Rare (--no-host-networking after a run without it): the record
            // must say the host rules are gone once they are, so not in the
            // background.
            let mut out = both_tables(inside, host_work, path, netns_name, known)?;
            r.host = false;
            r.shared = None;
            r.legacy = None;
            rec.put(&r)?;
            out.extend(release_shared_base(&spec.root, &spec.name, &lock)?);
            return Ok(out);
        }
        if host_work.want.is_some() {
            // Held before our part goes in: the last other sandbox leaving
            // meanwhile does not take the table from under it.
            host::with(&spec.root, |h| {
                h.hold(Resource::HostTable, &spec.name, || Ok(Value::Null))
            })?;
        }
        // Both runs are mostly nft's start-up: the next steps go on
        // meanwhile, and the veth waits for them.
        rec.finish_in_background(move || both_tables(inside, host_work, path, netns_name, known))?;
        Ok(vec![])
    }

    /// The host rules go first. The namespace's table lives and dies with
    /// the namespace, which the netns step (always recorded before this
    /// one) deletes next; deleting it here would cost an RCU grace period
    /// for nothing.
    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        let mut out = Vec::new();
        let lock = host_table::lock_dir(&undo.root);
        match (&r.shared, r.old_host_table()) {
            (Some(s), legacy) if r.host => {
                out.extend(leave_shared(&undo.root, &undo.name, s, legacy.as_deref(), &lock)?);
                if let Some(old) = legacy {
                    out.push(format!("deleted host table inet {old} (an older version's)"));
                }
            }
            (_, Some(old)) => {
                // A record of an older version: its own host table.
                nft::delete_table(&old)?;
                out.push(format!("deleted host table inet {old}"));
                // What the host record may say this sandbox holds.
                out.extend(release_shared_base(&undo.root, &undo.name, &lock)?);
            }
            _ => {}
        }
        let ns = r.netns.file_name().unwrap_or_default().to_string_lossy();
        out.push(format!("table inet {} goes with namespace {ns}", r.table));
        Ok(out)
    }

    /// On the host, ours by their names: this sandbox's part of the shared
    /// table (chains and sets `<name>_…`, map elements of veth `<name>0`)
    /// and an older version's table `inet sandbox_<name>`. The namespace's
    /// table goes with the namespace.
    fn sweep(&self, undo: &Undo, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let old = format!("sandbox_{name}");
        if nft::table_exists(&old)? {
            nft::delete_table(&old)?;
            out.push(format!("deleted host table inet {old}"));
        }
        let veth = format!("{name}0");
        let lock = host_table::lock_dir(&undo.root);
        if host_table::has_part(name, &veth)? {
            host_table::remove(name, &veth, None, &lock)?;
            out.push(removed_line(name));
            out.extend(release_shared_base(&undo.root, name, &lock)?);
        }
        Ok(out)
    }
}

fn removed_line(sandbox: &str) -> String {
    format!(
        "removed {sandbox}'s chains, sets and map elements from host table inet {}",
        host_table::TABLE
    )
}

/// Take this sandbox out of the shared host table. While other sandboxes
/// hold the table (by the host record), only our part goes, one nft run
/// outside the host lock, so their teardowns go on side by side. Otherwise
/// [`host_table::leave`] decides under the lock, by the table's own
/// dispatch map: with no other sandbox in it, the whole table goes in one
/// transaction instead of our part first and the table after (one RCU
/// grace period, not two). A sandbox that joined meanwhile re-creates the
/// base with its part, as every install does.
fn leave_shared(root: &Root, name: &str, s: &Shared, legacy: Option<&str>, lock: &Path) -> Result<Vec<String>> {
    let others_hold = host::peek(root)?.is_some_and(|h| {
        h.resources
            .get(Resource::HostTable.id())
            .is_some_and(|held| held.holders.iter().any(|x| x != name))
    });
    if others_hold {
        host_table::remove(&s.sandbox, &s.veth, legacy, lock)?;
        let mut out = vec![removed_line(&s.sandbox)];
        out.extend(release_shared_base(root, name, lock)?);
        return Ok(out);
    }
    host::with(root, |h| {
        let mut out = vec![removed_line(&s.sandbox)];
        let deleted = host_table::leave(&s.sandbox, &s.veth, legacy, lock)? == host_table::Left::Table;
        if deleted {
            out.push(deleted_line());
        }
        let restore = |_: &Value| if deleted { Ok(vec![]) } else { delete_if_unused(lock) };
        if h.knows(Resource::HostTable) {
            out.extend(h.release(Resource::HostTable, name, restore)?);
        } else {
            out.extend(restore(&Value::Null)?);
        }
        Ok(out)
    })
}

fn deleted_line() -> String {
    format!("deleted host table inet {} (no sandbox left in it)", host_table::TABLE)
}

/// Delete the shared table if no sandbox is left in it.
fn delete_if_unused(lock: &Path) -> Result<Vec<String>> {
    Ok(if host_table::remove_base_if_unused(lock)? {
        vec![deleted_line()]
    } else {
        vec![]
    })
}

/// The shared host table is a host resource, not this sandbox's: the host
/// record's last holder deletes it (and only if no sandbox's part is left
/// in it, which it checks by listing its dispatch map). Without a host
/// record that knows it (a sweep after both records were lost), the
/// listing alone decides.
fn release_shared_base(root: &Root, name: &str, lock: &Path) -> Result<Vec<String>> {
    host::with(root, |h| {
        if !h.knows(Resource::HostTable) {
            return delete_if_unused(lock);
        }
        // Also when nobody holds it any more: a run killed during the last
        // holder's delete left it so, and this one finishes that.
        h.release(Resource::HostTable, name, |_| delete_if_unused(lock))
    })
}

/// What the host side of a run is to do.
struct HostWork {
    /// This sandbox's part of the shared table, as generated now (None:
    /// `--no-host-networking`).
    want: Option<Table>,
    /// An earlier run put a part of this sandbox in the shared table.
    had_shared: bool,
    /// An older version's host table of this sandbox, to delete.
    legacy: Option<String>,
    shared: Shared,
    lock: PathBuf,
}

/// The two nft runs, side by side (one per namespace).
fn both_tables(inside: Table, host: HostWork, path: PathBuf, netns_name: String, known: bool) -> Result<Vec<String>> {
    let (inside_done, host_done) = std::thread::scope(|s| {
        let on_host = s.spawn(|| host_side(&host));
        let inside_done = install_inside(&inside, &path, known);
        let host_done = on_host.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (inside_done, host_done)
    });
    let mut out = Vec::new();
    if inside_done? {
        out.push(describe_inside(&inside, &netns_name).replacen("install", "installed", 1));
    }
    out.extend(host_done?);
    Ok(out)
}

/// `nft` on a thread that entered the namespace, so the table lands there
/// and nowhere else. Whether anything changed.
fn install_inside(t: &Table, path: &Path, known: bool) -> Result<bool> {
    let t = t.clone();
    netns::run_in(path, move || {
        if known && nft::is_current(&t)? {
            return Ok(false);
        }
        nft::apply(&t, !known)?;
        Ok(true)
    })
}

/// Put this sandbox's part of the shared host table in place (`want`),
/// or take out one an earlier run left when it is no longer wanted; an
/// older version's host table goes in the same transaction.
fn host_side(w: &HostWork) -> Result<Vec<String>> {
    let legacy = w.legacy.as_deref();
    let Some(t) = &w.want else {
        let mut out = Vec::new();
        if w.had_shared {
            host_table::remove(&w.shared.sandbox, &w.shared.veth, legacy, &w.lock)?;
            out.push(format!("{} (--no-host-networking)", removed_line(&w.shared.sandbox)));
        } else if let Some(old) = legacy {
            nft::delete_table(old)?;
            out.push(format!("deleted host table inet {old} (--no-host-networking)"));
        }
        return Ok(out);
    };
    // Refusals the host rules counted are kept until a setup has seen
    // them: they go into its output and the audit log, and `status`
    // counts only those after it. One listing serves both: what was
    // counted, and whether the part is as generated now.
    let listed = if w.had_shared { nft::listing(t)? } else { None };
    // Something of ours missing fails the whole listing: the sets then
    // are read on their own (their counts, and whether to re-add them).
    let sets = match (&listed, w.had_shared) {
        (None, true) => host_table::list_sets(&w.shared.sandbox)?,
        _ => None,
    };
    let seen = denials::from_listing(listed.as_ref().or(sets.as_ref()), Where::Host);
    let cleared = |out: &mut Vec<String>| {
        if !seen.is_empty() {
            out.push(format!("{CLEARED} {} before this setup", denials::summary(&seen)));
        }
    };
    let mut out = Vec::new();
    if w.had_shared && nft::matches(t, listed.as_ref()) {
        if !seen.is_empty() {
            let (v4, v6) = t.denied_sets();
            nft::flush_sets(&t.name, &[&v4, &v6])?;
        }
        cleared(&mut out);
        return Ok(out);
    }
    // Replacing the part starts its sets afresh.
    let sets_exist = listed.is_some() || sets.is_some();
    host_table::install(t, sets_exist, legacy, &w.lock)?;
    out.push(describe_host(t).replacen("install", "installed", 1));
    if let Some(old) = legacy {
        out.push(format!(
            "deleted host table inet {old} (an older version's; moved into {})",
            host_table::TABLE
        ));
    }
    cleared(&mut out);
    Ok(out)
}

/// How a plan, and a setup, say the host refusals they clear.
const CLEAR: &str = "clear the host table's refusals:";
const CLEARED: &str = "cleared the host table's refusals:";

/// A plan line that only clears counted host refusals: no drift of ours
/// (`status` reports those refusals on their own).
pub fn only_clears_refusals(line: &str) -> bool {
    line.starts_with(CLEAR)
}

fn describe_inside(t: &Table, netns: &str) -> String {
    let rules: usize = t.chains.iter().map(|c| c.rules.len()).sum();
    format!("install table inet {} in {netns} ({rules} rules, default drop)", t.name)
}

fn describe_host(t: &Table) -> String {
    let chains: Vec<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
    format!("install host chains {} in table inet {}", chains.join(", "), t.name)
}
