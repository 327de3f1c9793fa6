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
use crate::host::{self, to_value, Resource};
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::sysctl;

pub struct NfLog;

const KEY: &str = "net/netfilter/nf_log_all_netns";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// (key, value) found before our first write: only in a record written
    /// before the host scope (the host record holds it now).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    old: Vec<(String, String)>,
}

fn present() -> bool {
    Path::new("/proc/sys").join(KEY).exists()
}

const HOST_WIDE: &str = "(host-wide: `log` rules in every network namespace reach the kernel log, \
     so the sandbox's refusals are logged)";

fn change(now: &str) -> String {
    format!("set {} {now} -> 1 {HOST_WIDE}", sysctl::display(KEY))
}

impl Step for NfLog {
    fn id(&self) -> &'static str {
        "nflog"
    }

    fn volatile(&self) -> bool {
        true
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

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        if !present() {
            return Ok(vec![]);
        }
        // Our record says we hold it; the value before the first sandbox
        // is the host record's.
        let own = rec.get::<Record>().unwrap_or_default();
        rec.put(&own)?;
        host::with(&spec.root, |h| {
            h.hold(Resource::NfLog, &spec.name, || {
                to_value(sysctl::snapshot(&[KEY.to_string()])?)
            })
        })?;
        Ok(sysctl::ensure(KEY, "1")?
            .map(|line| format!("{line} {HOST_WIDE}"))
            .into_iter()
            .collect())
    }

    /// The last sandbox that holds it puts the host's value back.
    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let own = data::<Record>(self.id(), v)?.old;
        let restore = |old: &[(String, String)]| {
            crate::state::confine_sysctls(old, |k| k == KEY)?;
            sysctl::restore(old)
        };
        host::with(&undo.root, |h| {
            if !h.knows(Resource::NfLog) && !own.is_empty() {
                // Made before the host scope and never adopted.
                return restore(&own);
            }
            h.release(Resource::NfLog, &undo.name, |v| {
                restore(
                    &serde_json::from_value::<Vec<(String, String)>>(v.clone())
                        .map_err(|e| host::bad_original("nflog", e))?,
                )
            })
        })
    }

    /// Without our record, the host record still says whether we held it.
    fn sweep(&self, undo: &Undo, _name: &str) -> Result<Vec<String>> {
        self.revert(undo, &serde_json::json!({}))
    }
}
