//! The host's side of the firewall: what arrives through our veth is held
//! to the same allowlist, so a sandbox that could change its own rules
//! still could not get further. Our table only; nothing else is touched.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::Result;
use crate::firewall::generate;
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::nft;

pub struct HostRules;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    table: String,
}

impl Step for HostRules {
    fn id(&self) -> &'static str {
        "host-firewall"
    }

    fn volatile(&self) -> bool {
        true
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        let t = generate::host_table(spec);
        let inverse = format!("delete table inet {}; nothing else in the ruleset is touched", t.name);
        inv.table(self.id(), "host", &t, &inverse);
    }

    fn wanted(&self, spec: &Spec) -> bool {
        spec.host_networking
    }

    fn plan(&self, spec: &Spec, _rec: Option<&Value>) -> Result<Vec<String>> {
        let t = generate::host_table(spec);
        Ok(if nft::is_current(&t)? {
            vec![]
        } else {
            vec![describe(&t)]
        })
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let t = generate::host_table(spec);
        let known = rec.has_record();
        rec.put(&Record { table: t.name.clone() })?;
        if known && nft::is_current(&t)? {
            return Ok(vec![]);
        }
        nft::apply(&t, !known)?;
        Ok(vec![describe(&t).replacen("install", "installed", 1)])
    }

    fn revert(&self, _undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        // One nft run ("add table; delete table"), whether or not it is there.
        nft::delete_table(&r.table)?;
        Ok(vec![format!("deleted host table inet {}", r.table)])
    }

    /// Table `inet sandbox_<name>` is ours by its name.
    fn sweep(&self, _undo: &Undo, name: &str) -> Result<Vec<String>> {
        let table = format!("sandbox_{name}");
        if !nft::table_exists(&table)? {
            return Ok(vec![]);
        }
        nft::delete_table(&table)?;
        Ok(vec![format!("deleted host table inet {table}")])
    }
}

fn describe(t: &crate::firewall::Table) -> String {
    let chains: Vec<&str> = t.chains.iter().map(|c| c.name).collect();
    format!("install host table inet {} (chains {})", t.name, chains.join(", "))
}
