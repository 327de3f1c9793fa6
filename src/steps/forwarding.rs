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
        // Never re-record: a second run would otherwise take our own "1"
        // for the host's original value.
        if rec.get::<Record>().is_none() {
            let mut old = vec![(IP_FORWARD.to_string(), sysctl::read(IP_FORWARD)?)];
            for key in sysctl::ipv4_forwarding_keys()? {
                old.push((key.clone(), sysctl::read(&key)?));
            }
            rec.put(&Record { old })?;
        }
        let now = sysctl::read(IP_FORWARD)?;
        if now == "1" {
            return Ok(vec![]);
        }
        sysctl::write(IP_FORWARD, "1")?;
        Ok(vec![format!("set {} {now} -> 1", sysctl::display(IP_FORWARD))])
    }

    fn revert(&self, _undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        let mut out = Vec::new();
        for (key, old) in &r.old {
            // An interface that went away took its setting with it.
            let Ok(now) = sysctl::read(key) else { continue };
            if &now != old {
                sysctl::write(key, old)?;
                out.push(format!("restored {} {now} -> {old}", sysctl::display(key)));
            }
        }
        Ok(out)
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
