//! IPv4 forwarding, only when the policy sends something past the host
//! (DNS, or policy destinations). Under `strict` it is never touched. The
//! old values are recorded once, before the first write, and restored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::Result;
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::sysctl;

pub struct Forwarding;

const IP_FORWARD: &str = "net/ipv4/ip_forward";

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// (key, value) as found before our first write, global key first.
    old: Vec<(String, String)>,
}

impl Step for Forwarding {
    fn id(&self) -> &'static str {
        "forwarding"
    }

    fn in_jobs(&self) -> bool {
        true
    }

    fn volatile(&self) -> bool {
        true
    }

    fn inventory(&self, _spec: &Spec, inv: &mut Inventory) {
        inv.sysctl(
            self.id(),
            &sysctl::display(IP_FORWARD),
            "1",
            "the value found before setup, and every net.ipv4.conf.*.forwarding, restored",
        );
    }

    fn wanted(&self, spec: &Spec) -> bool {
        spec.host_networking && spec.forwards()
    }

    fn plan(&self, _spec: &Spec, _rec: Option<&Value>) -> Result<Vec<String>> {
        let now = sysctl::read(IP_FORWARD)?;
        Ok(if now == "1" {
            vec![]
        } else {
            vec![format!("set {} {now} -> 1", sysctl::display(IP_FORWARD))]
        })
    }

    fn apply(&self, _spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        if !rec.has_record() {
            let mut keys = vec![IP_FORWARD.to_string()];
            keys.extend(sysctl::ipv4_forwarding_keys()?);
            rec.put(&Record {
                old: sysctl::snapshot(&keys)?,
            })?;
        }
        Ok(sysctl::ensure(IP_FORWARD, "1")?.into_iter().collect())
    }

    fn revert(&self, _undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let old = data::<Record>(self.id(), v)?.old;
        let ours = |k: &str| {
            k == IP_FORWARD
                || k.strip_prefix("net/ipv4/conf/")
                    .and_then(|rest| rest.strip_suffix("/forwarding"))
                    .is_some_and(|ifname| !ifname.contains('/'))
        };
        crate::state::confine_sysctls(&old, ours)?;
        sysctl::restore(&old)
    }

    /// The old values were in the record: nothing can be restored, only said.
    fn sweep(&self, _undo: &Undo, _name: &str) -> Result<Vec<String>> {
        let now = sysctl::read(IP_FORWARD)?;
        Ok(if now == "1" {
            vec![format!(
                "left {} = 1: its value before setup was in the lost record; \
                 set it back by hand if setup turned it on (sysctl -w net.ipv4.ip_forward=0)",
                sysctl::display(IP_FORWARD)
            )]
        } else {
            vec![]
        })
    }
}
