//! `net.netfilter.nf_log_all_netns=1`, so that the refusals logged by the
//! table inside the sandbox's namespace reach the kernel log (and the
//! journal). The kernel drops `log` statements from any namespace but the
//! initial one unless this is set; the host table's own log lines need
//! nothing. Host-wide, hence said in the plan; the old value is recorded
//! once, before the first write, and restored.
//!
//! The key exists only in the initial network namespace: elsewhere (a
//! container, the root test tier's fake host) the step does nothing and the
//! refusals are still counted (`sandbox status`), just not logged.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::Result;
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::sysctl;

pub struct NfLog;

const KEY: &str = "net/netfilter/nf_log_all_netns";

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The value found before our first write.
    old: String,
}

fn present() -> bool {
    Path::new("/proc/sys").join(KEY).exists()
}

fn change(now: &str) -> String {
    format!(
        "set {} {now} -> 1 (host-wide: `log` rules in every network namespace reach the kernel log, \
         so the sandbox's refusals are logged)",
        sysctl::display(KEY)
    )
}

impl Step for NfLog {
    fn id(&self) -> &'static str {
        "nflog"
    }

    fn inventory(&self, _spec: &Spec, inv: &mut Inventory) {
        inv.sysctl(
            self.id(),
            &sysctl::display(KEY),
            "1",
            "the value found before setup, restored",
        );
    }

    /// Like every host change, not with `--no-host-networking`.
    fn wanted(&self, spec: &Spec) -> bool {
        spec.host_networking
    }

    fn plan(&self, _spec: &Spec, _rec: Option<&Value>) -> Result<Vec<String>> {
        if !present() {
            return Ok(vec![]);
        }
        let now = sysctl::read(KEY)?;
        Ok(if now == "1" { vec![] } else { vec![change(&now)] })
    }

    fn apply(&self, _spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        if !present() {
            return Ok(vec![]);
        }
        // Never re-record: a second run would take our own "1" for the
        // host's original value.
        if rec.get::<Record>().is_none() {
            rec.put(&Record {
                old: sysctl::read(KEY)?,
            })?;
        }
        let now = sysctl::read(KEY)?;
        if now == "1" {
            return Ok(vec![]);
        }
        sysctl::write(KEY, "1")?;
        Ok(vec![change(&now).replacen("set", "changed", 1)])
    }

    fn revert(&self, _undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        let Ok(now) = sysctl::read(KEY) else { return Ok(vec![]) };
        if now == r.old {
            return Ok(vec![]);
        }
        sysctl::write(KEY, &r.old)?;
        Ok(vec![format!("restored {} {now} -> {}", sysctl::display(KEY), r.old)])
    }
}
