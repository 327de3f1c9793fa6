//! The one host table all sandboxes share, `inet sandbox_host`.
//!
//! Its base chains (input, forward, postrouting nat: the hooks and
//! priorities a per-sandbox table had) hold nothing but dispatch rules,
//! `iifname vmap @…` / `oifname vmap @…`, which jump to the chains of the
//! sandbox whose veth the packet came in through (or, forwarded, goes out
//! to). So a packet costs one map lookup per hook however many sandboxes
//! there are (forwarded traffic two: in and out), host traffic that is not
//! a sandbox's passes after that lookup, and the base policy stays accept:
//! we judge only our veths' traffic.
//!
//! Each sandbox owns, by name prefix `<name>_`: chains `<name>_input`
//! (whose last rule, never reached, carries the fingerprint of what was
//! generated as its comment), `<name>_forward`, `<name>_post` (only when
//! it forwards), the refusal-count sets `<name>_denied4`/`<name>_denied6`
//! and one element keyed by its veth in each map. Sandbox names are
//! `[a-z][a-z0-9_-]*` and no suffix holds `_`, so two sandboxes' names
//! never meet; the table's own objects have names no sandbox can make
//! (`input`, `forward`, `postrouting`, and maps ending in `_iif`/`_oif`).
//!
//! Adding a sandbox is one nft transaction that (idempotently) ensures the
//! base and flushes and refills only this sandbox's objects; removing one
//! is one transaction touching only its objects. Nothing here lists the
//! ruleset or the whole table: only our own chains, sets and maps by name.
//! nft 1.0.6 lists at most one chain and one set (or map) per run (its
//! cache keeps one name of each), so a check takes three runs, side by
//! side: this sandbox's chains and sets, and the input map. The other
//! maps and the base chains are not read back: every install rewrites
//! them, and one transaction adds or removes all of a sandbox's elements.
//!
//! The table itself is a shared host resource, held in the host record
//! (`host`, resource `host-table`). The last holder [`leave`]s: one look
//! at the input map and, with no other sandbox's element in it, one
//! delete of the whole table (both over nfnetlink, `sys::nfnl`: no `nft`
//! process); [`remove_base_if_unused`] deletes it when no map holds an
//! element any more, for the paths that took a part out first. An inner
//! `flock` on the state directory (shared while a sandbox's objects
//! change, exclusive while the base goes) also covers a sweep that has no
//! host record to go by.

use std::path::Path;

use serde_json::{json, Value};

use super::{ChainShape, Hook, Table};
use crate::error::{Error, Result};

/// The shared table's name.
pub const TABLE: &str = "sandbox_host";

/// The comment of every dispatch rule.
pub const DISPATCH: &str = "to the chains of the sandbox on this interface";

/// A base chain of the shared table.
struct Base {
    name: &'static str,
    hook: Hook,
    nat: bool,
    priority: i32,
}

const BASES: [Base; 3] = [
    Base {
        name: "input",
        hook: Hook::Input,
        nat: false,
        priority: 0,
    },
    Base {
        name: "forward",
        hook: Hook::Forward,
        nat: false,
        priority: 0,
    },
    Base {
        name: "postrouting",
        hook: Hook::Postrouting,
        nat: true,
        priority: 100,
    },
];

/// Which interface of a packet a map is keyed by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    In,
    Out,
}

/// A verdict map: looked up by the base chain of `hook`, keyed by the
/// interface name, each element a jump to a sandbox's chain for that hook.
struct Map {
    name: &'static str,
    hook: Hook,
    by: By,
}

/// In the order the base chains look them up.
const MAPS: [Map; 4] = [
    Map {
        name: "input_iif",
        hook: Hook::Input,
        by: By::In,
    },
    Map {
        name: "forward_iif",
        hook: Hook::Forward,
        by: By::In,
    },
    Map {
        name: "forward_oif",
        hook: Hook::Forward,
        by: By::Out,
    },
    Map {
        name: "postrouting_iif",
        hook: Hook::Postrouting,
        by: By::In,
    },
];

/// The names of one sandbox's objects in the shared table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub prefix: String,
    pub input: String,
    pub forward: String,
    pub post: String,
    pub denied4: String,
    pub denied6: String,
}

impl Names {
    pub fn of(sandbox: &str) -> Names {
        let n = |suffix: &str| format!("{sandbox}_{suffix}");
        Names {
            prefix: n(""),
            input: n("input"),
            forward: n("forward"),
            post: n("post"),
            denied4: n(super::DENIED4),
            denied6: n(super::DENIED6),
        }
    }

    /// The sandbox's chain a packet of `hook` is sent to.
    fn chain_for(&self, hook: Hook) -> &str {
        match hook {
            Hook::Input => &self.input,
            Hook::Forward => &self.forward,
            // Only the three hooks above carry maps.
            Hook::Postrouting | Hook::Output => &self.post,
        }
    }

    /// Every chain the sandbox may have.
    fn chains(&self) -> [&str; 3] {
        [&self.input, &self.forward, &self.post]
    }
}

/// The sandbox name of a part of the shared table (its prefix, less `_`).
fn sandbox_of(t: &Table) -> &str {
    t.prefix.strip_suffix('_').unwrap_or(&t.prefix)
}

fn obj(kind: &str, name: &str) -> Value {
    json!({ kind: { "family": "inet", "table": TABLE, "name": name } })
}

fn cmd(verb: &str, body: Value) -> Value {
    json!({ verb: body })
}

fn map_def(m: &Map) -> Value {
    json!({"map": {"family": "inet", "table": TABLE, "name": m.name, "type": "ifname", "map": "verdict"}})
}

fn element(map: &str, veth: &str, target: Option<&str>) -> Value {
    let elem = match target {
        Some(chain) => json!([[veth, {"jump": {"target": chain}}]]),
        None => json!([veth]),
    };
    json!({"element": {"family": "inet", "table": TABLE, "name": map, "elem": elem}})
}

/// Ensure the table, its maps and its base chains with their dispatch
/// rules. Every command is idempotent: the base chains are flushed and
/// refilled in the same transaction, so they never hold a rule twice and
/// a drifted dispatch is repaired.
fn base_cmds() -> Vec<Value> {
    let mut v = vec![cmd("add", json!({"table": {"family": "inet", "name": TABLE}}))];
    v.extend(MAPS.iter().map(|m| cmd("add", map_def(m))));
    for b in &BASES {
        let chain = super::Chain {
            name: b.name.into(),
            hook: b.hook,
            nat: b.nat,
            priority: b.priority,
            policy_drop: false,
            rules: vec![],
        };
        let def = serde_json::to_value(super::render::base_chain(TABLE, &chain)).unwrap_or(Value::Null);
        v.push(json!({"add": {"chain": def}}));
        v.push(cmd("flush", obj("chain", b.name)));
        for m in MAPS.iter().filter(|m| m.hook == b.hook) {
            let key = if m.by == By::In { "iifname" } else { "oifname" };
            v.push(json!({"add": {"rule": {
                "family": "inet", "table": TABLE, "chain": b.name, "comment": DISPATCH,
                "expr": [{"vmap": {"key": {"meta": {"key": key}}, "data": format!("@{}", m.name)}}]
            }}}));
        }
    }
    v
}

/// The one transaction that puts this sandbox's part `t` in place: the
/// base ensured, its chains flushed and refilled, its counts started
/// afresh, its map elements added (and dropped for a chain it no longer
/// has). `sets_exist`: its sets are there (`add set` of one the packet
/// path updates fails, nft marking it dynamic behind our back), so they
/// are flushed instead. `legacy`: a per-sandbox host table of an older
/// version, deleted in the same transaction.
pub fn install_batch(t: &Table, sets_exist: bool, legacy: Option<&str>) -> Result<Value> {
    let veth = t.dispatch.as_deref().unwrap_or_default();
    let names = Names::of(sandbox_of(t));
    let mut v = Vec::new();
    if let Some(old) = legacy {
        let cmds = super::render::delete_table_cmds(old);
        v.extend(cmds.iter().filter_map(|c| serde_json::to_value(c).ok()));
    }
    v.extend(base_cmds());
    for c in names.chains() {
        v.push(cmd("add", obj("chain", c)));
        v.push(cmd("flush", obj("chain", c)));
    }
    if sets_exist {
        for s in [&names.denied4, &names.denied6] {
            v.push(cmd("flush", obj("set", s)));
        }
    } else {
        let sets = nftables::schema::Nftables {
            objects: super::render::denied_sets(t).into(),
        };
        let sets = super::render::with_set_counters(&sets).map_err(|e| encode_error(t, e))?;
        v.extend(sets["nftables"].as_array().cloned().unwrap_or_default());
    }
    for (i, c) in t.chains.iter().enumerate() {
        for r in super::render::chain_rules(t, c) {
            v.push(serde_json::to_value(r).map_err(|e| encode_error(t, e))?);
        }
        if i == 0 {
            // After the chain's final refusal: never reached, it only
            // carries the fingerprint (see `Table::shape`).
            v.push(json!({"add": {"rule": {
                "family": "inet", "table": TABLE, "chain": c.name, "comment": t.fingerprint(),
                "expr": [{"counter": null}]
            }}}));
        }
    }
    for m in &MAPS {
        let chain = names.chain_for(m.hook);
        if t.chains.iter().any(|c| c.name == chain) {
            v.push(cmd("add", element(m.name, veth, Some(chain))));
        } else {
            // "add; delete": idempotent whether or not it was there.
            v.push(cmd("add", element(m.name, veth, Some(chain))));
            v.push(cmd("delete", element(m.name, veth, None)));
        }
    }
    for c in names.chains() {
        if !t.chains.iter().any(|have| have.name == c) {
            v.push(cmd("delete", obj("chain", c)));
        }
    }
    Ok(json!({ "nftables": v }))
}

/// The one transaction that takes sandbox `sandbox` (veth `veth`) out of
/// the shared table: its map elements, chains and (when `sets`) sets.
/// Chains and elements are ensured before they are deleted, so it holds
/// whether or not they were there (the table and maps too: an emptied
/// base is for [`remove_base_if_unused`]). Sets cannot be ensured (see
/// [`install_batch`]), so the caller says whether they are there.
pub fn remove_batch(sandbox: &str, veth: &str, sets: bool) -> Value {
    let names = Names::of(sandbox);
    let mut v = vec![cmd("add", json!({"table": {"family": "inet", "name": TABLE}}))];
    v.extend(MAPS.iter().map(|m| cmd("add", map_def(m))));
    for c in names.chains() {
        v.push(cmd("add", obj("chain", c)));
    }
    for m in &MAPS {
        v.push(cmd("add", element(m.name, veth, Some(names.chain_for(m.hook)))));
        v.push(cmd("delete", element(m.name, veth, None)));
    }
    for c in names.chains() {
        v.push(cmd("flush", obj("chain", c)));
        v.push(cmd("delete", obj("chain", c)));
    }
    if sets {
        for s in [&names.denied4, &names.denied6] {
            v.push(cmd("delete", obj("set", s)));
        }
    }
    json!({ "nftables": v })
}

/// The list runs that read `t`'s part back, each at most one chain and
/// one set or map (see the module's notes): its chains paired with its
/// sets and the input map. Every one fails when what it names is missing.
pub fn listing_batches(t: &Table) -> Vec<Value> {
    let names = Names::of(sandbox_of(t));
    let mut sets = vec![
        cmd("list", obj("map", MAPS[0].name)),
        cmd("list", obj("set", &names.denied4)),
        cmd("list", obj("set", &names.denied6)),
    ];
    let mut out = Vec::new();
    for c in &t.chains {
        let mut run = vec![cmd("list", obj("chain", &c.name))];
        if !sets.is_empty() {
            run.push(sets.remove(0));
        }
        out.push(json!({ "nftables": run }));
    }
    out.extend(sets.into_iter().map(|s| json!({ "nftables": [s] })));
    out
}

/// The shape the listing must show: `t`'s chains.
pub fn shape(t: &Table) -> Vec<ChainShape> {
    t.shape()
}

/// Whether every map in the listing (the input map at least) sends `t`'s
/// veth to the right chain of `t`, and none to a chain `t` does not have.
pub fn dispatch_ok(t: &Table, doc: &Value) -> bool {
    let Some(veth) = t.dispatch.as_deref() else {
        return false;
    };
    let names = Names::of(sandbox_of(t));
    let listed = |name: &str| {
        doc["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("map"))
            .any(|o| o["name"] == name)
    };
    if !listed(MAPS[0].name) {
        return false;
    }
    MAPS.iter().filter(|m| listed(m.name)).all(|m| {
        let listed = doc["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("map"))
            .find(|o| o["name"] == m.name);
        let Some(listed) = listed else { return false };
        let target = listed["elem"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e[0] == veth)
            .and_then(|e| e[1].pointer("/jump/target").and_then(Value::as_str).map(String::from));
        let chain = names.chain_for(m.hook);
        let want = t.chains.iter().any(|c| c.name == chain).then(|| chain.to_string());
        target == want
    })
}

/// This sandbox's part as nft text, for people (`plan`, the inventory):
/// the base it relies on, its map elements, its sets and chains.
pub fn to_text(t: &Table) -> String {
    let veth = t.dispatch.as_deref().unwrap_or_default();
    let names = Names::of(sandbox_of(t));
    let mut out = format!(
        "table inet {TABLE} {{\n\t# shared by every sandbox; only {}'s part shown\n",
        sandbox_of(t)
    );
    for m in &MAPS {
        let chain = names.chain_for(m.hook);
        let elems = if t.chains.iter().any(|c| c.name == chain) {
            format!("\t\telements = {{ {veth:?} : jump {chain} }}\n")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "\tmap {} {{\n\t\ttype ifname : verdict\n{elems}\t}}\n",
            m.name
        ));
    }
    out.push_str(&super::render::sets_text(t));
    for b in &BASES {
        let kind = if b.nat { "nat" } else { "filter" };
        let hook = match b.hook {
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Postrouting | Hook::Output => "postrouting",
        };
        out.push_str(&format!(
            "\tchain {} {{\n\t\ttype {kind} hook {hook} priority {}; policy accept;\n",
            b.name, b.priority
        ));
        for m in MAPS.iter().filter(|m| m.hook == b.hook) {
            let key = if m.by == By::In { "iifname" } else { "oifname" };
            out.push_str(&format!("\t\t{key} vmap @{} comment {DISPATCH:?}\n", m.name));
        }
        out.push_str("\t}\n");
    }
    for (i, c) in t.chains.iter().enumerate() {
        let mut text = super::render::chain_text(t, c);
        if i == 0 {
            if let Some(end) = text.rfind("\t}\n") {
                text.truncate(end);
                text.push_str(&format!("\t\tcounter comment {:?}\n\t}}\n", t.fingerprint()));
            }
        }
        out.push_str(&text);
    }
    out.push_str("}\n");
    out
}

fn encode_error(t: &Table, e: serde_json::Error) -> Error {
    Error::Nft {
        op: format!("install {}'s chains in table inet {TABLE}", sandbox_of(t)),
        cause: e.to_string(),
    }
}

// ---- the runners: each is one `nft` run unless it says otherwise --------

use crate::sys::nft;

/// What `nft` lists of `t`'s part (base chains, its chains, sets and the
/// maps), merged into one document; None when any of it is missing.
pub fn list(t: &Table) -> Result<Option<Value>> {
    let op = format!("list {}'s part of table inet {TABLE}", sandbox_of(t));
    let docs = side_by_side(listing_batches(t), &op)?;
    let mut merged = Vec::new();
    for doc in docs {
        let Some(doc) = doc else { return Ok(None) };
        merged.extend(doc["nftables"].as_array().cloned().unwrap_or_default());
    }
    Ok(Some(json!({ "nftables": merged })))
}

/// Each list batch in its own `nft` run, all at once (each run is mostly
/// process start-up).
fn side_by_side(batches: Vec<Value>, op: &str) -> Result<Vec<Option<Value>>> {
    std::thread::scope(|s| {
        let runs: Vec<_> = batches
            .iter()
            .map(|b| s.spawn(move || nft::list_objects(b, op)))
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// This sandbox's two refusal-count sets, listed; None when neither is
/// there. Two `nft` runs side by side.
pub fn list_sets(sandbox: &str) -> Result<Option<Value>> {
    let names = Names::of(sandbox);
    let op = format!("list the refusal sets of {sandbox} in table inet {TABLE}");
    let runs = [&names.denied4, &names.denied6]
        .map(|s| json!({ "nftables": [cmd("list", obj("set", s))] }))
        .to_vec();
    let merged: Vec<Value> = side_by_side(runs, &op)?
        .into_iter()
        .flatten()
        .flat_map(|doc| doc["nftables"].as_array().cloned().unwrap_or_default())
        .collect();
    Ok((!merged.is_empty()).then(|| json!({ "nftables": merged })))
}

/// Put `t` in place (see [`install_batch`]). `sets_exist` as known from a
/// listing; when unknown (false), a "File exists" from the sets makes it
/// look and try once more.
pub fn install(t: &Table, sets_exist: bool, legacy: Option<&str>, lock_dir: &Path) -> Result<()> {
    let _lock = HostLock::shared(lock_dir)?;
    let op = format!("install {}'s chains in table inet {TABLE}", sandbox_of(t));
    match nft::run_json(&install_batch(t, sets_exist, legacy)?, &op) {
        Err(Error::Nft { cause, .. }) if !sets_exist && cause.contains("File exists") => {
            let exist = list_sets(sandbox_of(t))?.is_some();
            nft::run_json(&install_batch(t, exist, legacy)?, &op).map(drop)
        }
        done => done.map(drop),
    }
}

/// Take sandbox `sandbox` (veth `veth`) out of the shared table; with
/// `legacy`, delete that per-sandbox table of an older version in the same
/// transaction. One `nft` run; more only when its sets were not both there.
pub fn remove(sandbox: &str, veth: &str, legacy: Option<&str>, lock_dir: &Path) -> Result<()> {
    let _lock = HostLock::shared(lock_dir)?;
    remove_locked(sandbox, veth, legacy)
}

/// What [`leave`] took out.
#[derive(Debug, PartialEq, Eq)]
pub enum Left {
    /// This sandbox's part (others are still in the table, or it was
    /// not whole: the caller then looks again whether it is unused).
    Part,
    /// The whole table: no other sandbox was in it.
    Table,
}

/// Take sandbox `sandbox` out when it is likely the table's last user: one
/// look at the input map, then one transaction, both over nfnetlink. When
/// no other sandbox has an element in it, the whole table goes at once
/// (its RCU grace period is paid once, not once for our part and once more
/// for the table, and overlaps what the run does next: `nfnl`); otherwise
/// only our part goes. Under the exclusive host-table lock, so no run adds
/// a sandbox between the look and the delete.
pub fn leave(sandbox: &str, veth: &str, legacy: Option<&str>, lock_dir: &Path) -> Result<Left> {
    let _lock = HostLock::exclusive(lock_dir)?;
    // No map (the table, or only the map, is gone: a run killed half-way,
    // a hand edit): the part goes the general way, which copes with
    // whatever of it is left, and the table is looked at again after.
    // An older version's table goes the `nft` way (its delete tolerates a
    // table that is not there), and the table after it, by the caller.
    let others = members()?.is_none_or(|m| m.iter().any(|m| m != veth));
    if others || legacy.is_some() {
        remove_locked(sandbox, veth, legacy)?;
        return Ok(Left::Part);
    }
    crate::sys::nfnl::delete_table(TABLE)?;
    Ok(Left::Table)
}

fn remove_locked(sandbox: &str, veth: &str, legacy: Option<&str>) -> Result<()> {
    let op = format!("remove {sandbox}'s chains from table inet {TABLE}");
    let batch = |sets: bool| {
        let mut b = remove_batch(sandbox, veth, sets);
        if let Some(old) = legacy {
            let mut cmds: Vec<Value> = super::render::delete_table_cmds(old)
                .iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect();
            cmds.extend(b["nftables"].as_array().cloned().unwrap_or_default());
            b = json!({ "nftables": cmds });
        }
        b
    };
    match nft::run_json(&batch(true), &op) {
        Err(Error::Nft { cause, .. }) if cause.contains("No such file") => {
            // A set was missing: delete what there is of them.
            let names = Names::of(sandbox);
            let mut b = batch(false);
            for s in [&names.denied4, &names.denied6] {
                let one = json!({ "nftables": [cmd("list", obj("set", s))] });
                if nft::list_objects(&one, &op)?.is_some() {
                    if let Some(cmds) = b["nftables"].as_array_mut() {
                        cmds.push(cmd("delete", obj("set", s)));
                    }
                }
            }
            nft::run_json(&b, &op).map(drop)
        }
        done => done.map(drop),
    }
}

/// The veths with an element in the shared table's input map; None when
/// the table (or the map) is not there. Every sandbox in the table has an
/// element in it (each has an input chain), and one transaction adds or
/// removes all of a sandbox's elements, so this one map tells who is in the
/// table. Read over nfnetlink: no `nft` process.
fn members() -> Result<Option<Vec<String>>> {
    Ok(crate::sys::nfnl::set_keys(TABLE, MAPS[0].name)?.map(|keys| {
        keys.iter()
            .map(|k| String::from_utf8_lossy(crate::sys::nfnl::ifname_key(k)).into_owned())
            .collect()
    }))
}

/// Where the host-table lock lives: the directory of the state records.
pub fn lock_dir(root: &crate::spec::Root) -> std::path::PathBuf {
    root.path("/var/lib/sandbox")
}

/// Whether anything of sandbox `sandbox` (veth `veth`) is in the shared
/// table: its sets, or an element of its veth in a map. For a sweep, which
/// has no record to say so. One nfnetlink request and at most one `nft`
/// run.
pub fn has_part(sandbox: &str, veth: &str) -> Result<bool> {
    let Some(members) = members()? else {
        return Ok(false);
    };
    Ok(members.iter().any(|m| m == veth) || list_sets(sandbox)?.is_some())
}

/// Whether the shared table is there with any sandbox in it (an element
/// in its input map). Lists only that map.
pub fn in_use() -> Result<Option<bool>> {
    Ok(members()?.map(|m| !m.is_empty()))
}

/// Delete the shared table when no sandbox is left in it (its input map
/// holds no element): the host then has no table of ours at all. Decided
/// by listing that one map of ours, under the exclusive host-table lock, so no other
/// run adds a sandbox between the look and the delete. Whether it deleted.
///
/// The host scope (src/host.rs) is to call this when its last holder
/// leaves; until then the firewall step's revert and sweep call it.
pub fn remove_base_if_unused(lock_dir: &Path) -> Result<bool> {
    let _lock = HostLock::exclusive(lock_dir)?;
    if in_use()? != Some(false) {
        return Ok(false);
    }
    // It is there (just listed, and locked since).
    crate::sys::nfnl::delete_table(TABLE)?;
    Ok(true)
}

/// An advisory `flock` on the directory of the state records (where every
/// sandbox's record lives, so it exists while any run has one): shared
/// while one sandbox's part changes, exclusive while the base goes. A
/// directory that is not there (a sweep with no records left) means no
/// run holds a record, and nothing is locked.
struct HostLock {
    _held: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl HostLock {
    fn shared(dir: &Path) -> Result<HostLock> {
        HostLock::take(dir, nix::fcntl::FlockArg::LockShared)
    }

    fn exclusive(dir: &Path) -> Result<HostLock> {
        HostLock::take(dir, nix::fcntl::FlockArg::LockExclusive)
    }

    fn take(dir: &Path, how: nix::fcntl::FlockArg) -> Result<HostLock> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
            .open(dir)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HostLock { _held: None }),
            Err(e) => return Err(Error::io("open to lock", dir, e)),
        };
        nix::fcntl::Flock::lock(file, how)
            .map(|l| HostLock { _held: Some(l) })
            .map_err(|(_, e)| Error::io("lock", dir, e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::generate::host_table;

    fn spec(extra: &[&str]) -> crate::spec::Spec {
        crate::testutil::spec(extra)
    }

    fn cmds(v: &Value) -> Vec<String> {
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c.to_string())
            .collect()
    }

    #[test]
    fn names_of_two_sandboxes_never_meet() {
        let a = Names::of("a");
        let b = Names::of("a_input");
        let all = |n: &Names| {
            vec![
                n.input.clone(),
                n.forward.clone(),
                n.post.clone(),
                n.denied4.clone(),
                n.denied6.clone(),
            ]
        };
        for x in all(&a) {
            assert!(!all(&b).contains(&x), "{x}");
            assert!(!BASES.iter().any(|base| base.name == x));
            assert!(!MAPS.iter().any(|m| m.name == x));
        }
    }

    #[test]
    fn the_base_holds_only_dispatch_and_accepts() {
        let base = cmds(&json!({ "nftables": base_cmds() }));
        let rules: Vec<&String> = base.iter().filter(|c| c.contains("\"rule\"")).collect();
        assert_eq!(rules.len(), 4, "one lookup per map: {rules:?}");
        assert!(rules.iter().all(|r| r.contains("\"vmap\"")), "{rules:?}");
        let chains: Vec<&String> = base.iter().filter(|c| c.contains("\"hook\"")).collect();
        assert_eq!(chains.len(), 3);
        assert!(chains.iter().all(|c| c.contains("\"policy\":\"accept\"")), "{chains:?}");
        assert!(chains
            .iter()
            .any(|c| c.contains("\"type\":\"nat\"") && c.contains("\"prio\":100")));
    }

    #[test]
    fn an_install_touches_only_its_own_objects() {
        let s = spec(&["--policy", "default", "--dns", "192.0.2.53", "--name", "box1"]);
        let t = host_table(&s);
        let batch = install_batch(&t, false, None).expect("batch");
        for c in cmds(&batch) {
            let ours = c.contains("box1_") || c.contains("\"box10\"");
            let base = BASES.iter().any(|b| c.contains(&format!("\"name\":\"{}\"", b.name)))
                || MAPS.iter().any(|m| c.contains(&format!("\"name\":\"{}\"", m.name)))
                || BASES.iter().any(|b| c.contains(&format!("\"chain\":\"{}\"", b.name)))
                || c.contains("\"table\":{\"family\":\"inet\",\"name\":\"sandbox_host\"}");
            assert!(ours || base, "{c}");
            assert!(!c.contains("\"delete\"") || ours, "deletes only its own: {c}");
        }
        let text = cmds(&batch).join("\n");
        assert!(text.contains(r#"["box10",{"jump":{"target":"box1_post"}}]"#), "{text}");
        assert!(
            text.contains("\"set\":{\"family\":\"inet\",\"table\":\"sandbox_host\",\"name\":\"box1_denied4\""),
            "{text}"
        );
        assert!(text.contains("@box1_denied4"), "{text}");
        assert!(text.contains("\"stmt\":[{\"counter\":null}]"), "{text}");
        let again = install_batch(&t, true, None).expect("batch");
        let again = cmds(&again).join("\n");
        assert!(
            !again.contains("\"add\":{\"set\""),
            "existing sets are flushed, not re-added: {again}"
        );
        assert!(again.contains("{\"flush\":{\"set\""), "{again}");
    }

    #[test]
    fn a_sandbox_that_stops_forwarding_loses_its_nat_chain_and_element() {
        let t = host_table(&spec(&["--policy", "strict", "--name", "box1"]));
        assert!(!t.chains.iter().any(|c| c.name == "box1_post"));
        let text = cmds(&install_batch(&t, true, None).expect("batch")).join("\n");
        assert!(
            text.contains(r#"{"delete":{"element":{"family":"inet","table":"sandbox_host","name":"postrouting_iif","elem":["box10"]}}}"#),
            "{text}"
        );
        assert!(text.contains(r#"{"delete":{"chain":{"family":"inet","table":"sandbox_host","name":"box1_post"}}}"#));
    }

    #[test]
    fn a_removal_ensures_before_it_deletes() {
        let text = cmds(&remove_batch("box1", "box10", true));
        let pos = |needle: &str| text.iter().position(|c| c.contains(needle)).unwrap_or(usize::MAX);
        assert!(pos("\"add\":{\"chain\"") < pos("\"delete\":{\"element\""));
        assert!(pos("\"delete\":{\"element\"") < pos("\"delete\":{\"chain\""));
        assert!(pos("\"flush\":{\"chain\"") < pos("\"delete\":{\"set\""));
        assert!(
            !text.iter().any(|c| c.contains("\"delete\":{\"table\"")),
            "the base stays"
        );
        let without = cmds(&remove_batch("box1", "box10", false));
        assert!(!without.iter().any(|c| c.contains("\"set\"")));
    }

    #[test]
    fn the_text_shows_the_dispatch_and_the_sandbox_chains() {
        let t = host_table(&spec(&["--policy", "default", "--dns", "192.0.2.53"]));
        let text = to_text(&t);
        for want in [
            "table inet sandbox_host {",
            "elements = { \"sandbox0\" : jump sandbox_input }",
            "iifname vmap @input_iif",
            "oifname vmap @forward_oif",
            "chain sandbox_forward {",
            "set sandbox_denied4 {",
            "update @sandbox_denied4",
            "type nat hook postrouting priority 100; policy accept;",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        assert!(
            !text.contains("chain sandbox_input {\n\t\ttype"),
            "a regular chain:\n{text}"
        );
    }

    #[test]
    fn dispatch_is_checked_element_by_element() {
        let t = host_table(&spec(&["--policy", "strict", "--name", "box1"]));
        let map = |name: &str, elem: Value| json!({"map": {"name": name, "elem": elem}});
        let good = json!({"nftables": [
            map("input_iif", json!([["box10", {"jump": {"target": "box1_input"}}], ["other0", {"jump": {"target": "other_input"}}]])),
            map("forward_iif", json!([["box10", {"jump": {"target": "box1_forward"}}]])),
            map("forward_oif", json!([["box10", {"jump": {"target": "box1_forward"}}]])),
            map("postrouting_iif", json!([])),
        ]});
        assert!(dispatch_ok(&t, &good));
        let mut missing = good.clone();
        missing["nftables"][2] = map("forward_oif", json!([]));
        assert!(!dispatch_ok(&t, &missing));
        let mut extra = good;
        extra["nftables"][3] = map("postrouting_iif", json!([["box10", {"jump": {"target": "box1_post"}}]]));
        assert!(!dispatch_ok(&t, &extra));
    }
}
