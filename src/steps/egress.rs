//! The egress allowlist inside the sandbox's namespace: default drop,
//! generated from the policy. `nft` runs on a thread that entered the
//! namespace, so the table lands there and nowhere else.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::Result;
use crate::firewall::generate;
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::{netns, nft};

pub struct EgressRules;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    netns: PathBuf,
    table: String,
}

impl Step for EgressRules {
    fn id(&self) -> &'static str {
        "egress"
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
    }

    fn plan(&self, spec: &Spec, _rec: Option<&Value>) -> Result<Vec<String>> {
        let table = generate::netns_table(spec);
        let path = spec.root.netns_path(&spec.net.netns);
        let current = if path.exists() {
            let t = table.clone();
            netns::run_in(&path, move || nft::is_current(&t))?
        } else {
            false
        };
        Ok(if current {
            vec![]
        } else {
            vec![describe(&table, &spec.net.netns)]
        })
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let table = generate::netns_table(spec);
        let path = spec.root.netns_path(&spec.net.netns);
        let known = rec.has_record();
        rec.put(&Record {
            netns: path.clone(),
            table: table.name.clone(),
        })?;
        let t = table.clone();
        let changed = netns::run_in(&path, move || {
            if known && nft::is_current(&t)? {
                return Ok(false);
            }
            nft::apply(&t, !known)?;
            Ok(true)
        })?;
        Ok(if changed {
            vec![describe(&table, &spec.net.netns).replacen("install", "installed", 1)]
        } else {
            vec![]
        })
    }

    /// The table lives and dies with the namespace, which the netns step
    /// (always recorded before this one) deletes next. Deleting it here
    /// first would cost an RCU grace period for nothing.
    fn revert(&self, _undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        let ns = r
            .netns
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(vec![format!("table inet {} goes with namespace {ns}", r.table)])
    }
}

fn describe(t: &crate::firewall::Table, netns: &str) -> String {
    let rules: usize = t.chains.iter().map(|c| c.rules.len()).sum();
    format!("install table inet {} in {netns} ({rules} rules, default drop)", t.name)
}
