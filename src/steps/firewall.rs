//! The firewall, as two nft tables of our own named `sandbox_<name>`: the
//! egress allowlist inside the sandbox's namespace (default drop), and on
//! the host what arrives through our veth held to the same allowlist, so a
//! sandbox that could change its own rules still could not get further.
//! Nothing else in either ruleset is touched.
//!
//! The two tables live in different namespaces, so they take one `nft` run
//! each; the runs are independent and go side by side, in the background
//! while the next steps run (each is mostly process start-up). Both are in
//! place before the veth exists: that step waits for them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::Result;
use crate::firewall::{denials, generate, Table, Where, DENIED4, DENIED6};
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::{netns, nft};

pub struct EgressRules;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    netns: PathBuf,
    table: String,
    /// Our table may be on the host (false under `--no-host-networking`).
    host: bool,
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
            let inverse = format!("delete table inet {}; nothing else in the ruleset is touched", t.name);
            inv.table(self.id(), "host", &t, &inverse);
        }
    }

    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
        let inside = generate::netns_table(spec);
        let path = spec.root.netns_path(&spec.net.netns);
        let mut out = Vec::new();
        let current = path.exists() && {
            let t = inside.clone();
            netns::run_in(&path, move || nft::is_current(&t))?
        };
        if !current {
            out.push(describe_inside(&inside, &spec.net.netns));
        }
        if spec.host_networking {
            let t = generate::host_table(spec);
            if !nft::is_current(&t)? {
                out.push(describe_host(&t));
            } else {
                let seen = denials::read_table(&t.name, Where::Host)?;
                if !seen.is_empty() {
                    out.push(format!("{CLEAR} {} before this setup", denials::summary(&seen)));
                }
            }
        } else if rec
            .and_then(|v| data::<Record>(self.id(), v).ok())
            .is_some_and(|r| r.host)
        {
            out.push(format!("delete host table inet {} (--no-host-networking)", inside.name));
        }
        Ok(out)
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let inside = generate::netns_table(spec);
        let host = spec.host_networking.then(|| generate::host_table(spec));
        let path = spec.root.netns_path(&spec.net.netns);
        let before = rec.get::<Record>();
        let known = before.is_some();
        let had_host = before.is_some_and(|b| b.host);
        // Write-ahead: a host table about to be installed, or one an earlier
        // run left that this run removes, is in the record first.
        let mut r = Record {
            netns: path.clone(),
            table: inside.name.clone(),
            host: had_host || host.is_some(),
        };
        rec.put(&r)?;
        let netns_name = spec.net.netns.clone();
        if host.is_none() && had_host {
            // Rare (--no-host-networking after a run without it): the record
            // must say the host table is gone once it is, so not in the
            // background.
            let out = both_tables(inside, None, path, netns_name, known, had_host)?;
            r.host = false;
            rec.put(&r)?;
            return Ok(out);
        }
        // Both runs are mostly nft's start-up: the next steps go on
        // meanwhile, and the veth waits for them.
        rec.finish_in_background(move || both_tables(inside, host, path, netns_name, known, had_host))?;
        Ok(vec![])
    }

    /// The host table goes first. The namespace's table lives and dies
    /// with the namespace, which the netns step (always recorded before
    /// this one) deletes next; deleting it here would cost an RCU grace
    /// period for nothing.
    fn revert(&self, _undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        let mut out = Vec::new();
        if r.host {
            // One nft run ("add table; delete table"), whether or not it is there.
            nft::delete_table(&r.table)?;
            out.push(format!("deleted host table inet {}", r.table));
        }
        let ns = r.netns.file_name().unwrap_or_default().to_string_lossy();
        out.push(format!("table inet {} goes with namespace {ns}", r.table));
        Ok(out)
    }

    /// Table `inet sandbox_<name>` on the host is ours by its name; the
    /// namespace's goes with the namespace.
    fn sweep(&self, _undo: &Undo, name: &str) -> Result<Vec<String>> {
        let table = format!("sandbox_{name}");
        if !nft::table_exists(&table)? {
            return Ok(vec![]);
        }
        nft::delete_table(&table)?;
        Ok(vec![format!("deleted host table inet {table}")])
    }
}

/// The two nft runs, side by side (one per namespace).
fn both_tables(
    inside: Table,
    host: Option<Table>,
    path: PathBuf,
    netns_name: String,
    known: bool,
    had_host: bool,
) -> Result<Vec<String>> {
    let (inside_done, host_done) = std::thread::scope(|s| {
        let on_host = s.spawn(|| host_side(host.as_ref(), had_host, &inside.name));
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

/// Install the host table (`want`), or remove one an earlier run left
/// when it is no longer wanted.
fn host_side(want: Option<&Table>, had: bool, name: &str) -> Result<Vec<String>> {
    match want {
        Some(t) => {
            // Refusals the host table counted are kept until a setup has
            // seen them: they go into its output and the audit log, and
            // `status` counts only those after it.
            // One listing serves both: what the table counted, and whether
            // it is as generated now.
            let listed = if had { nft::list_table(&t.name)? } else { None };
            let seen = denials::from_listing(listed.as_ref(), Where::Host);
            let cleared = |out: &mut Vec<String>| {
                if !seen.is_empty() {
                    out.push(format!("{CLEARED} {} before this setup", denials::summary(&seen)));
                }
            };
            let mut out = Vec::new();
            if had && nft::matches(t, listed.as_ref()) {
                if !seen.is_empty() {
                    nft::flush_sets(&t.name, &[DENIED4, DENIED6])?;
                }
                cleared(&mut out);
                return Ok(out);
            }
            // Replacing the table starts its sets afresh.
            nft::apply(t, !had)?;
            out.push(describe_host(t).replacen("install", "installed", 1));
            cleared(&mut out);
            Ok(out)
        }
        None if had => {
            nft::delete_table(name)?;
            Ok(vec![format!("deleted host table inet {name} (--no-host-networking)")])
        }
        None => Ok(vec![]),
    }
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
    let chains: Vec<&str> = t.chains.iter().map(|c| c.name).collect();
    format!("install host table inet {} (chains {})", t.name, chains.join(", "))
}
