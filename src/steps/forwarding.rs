//! IPv4 forwarding, only when the policy sends something past the host
//! (DNS, or policy destinations). Under `strict` it is never touched. The
//! old values are recorded once, before the first write, and restored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::Result;
use crate::host::{self, to_value, Resource};
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::sysctl;

pub struct Forwarding;

const IP_FORWARD: &str = "net/ipv4/ip_forward";

/// The values found before the first sandbox's write are the host
/// record's (`host`, resource `forwarding`); a record written before the
/// host scope still carries its own.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// (key, value) as found before our first write, global key first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        // Our own record only says we hold it: a revert then releases it.
        let own = rec.get::<Record>().unwrap_or_default();
        rec.put(&own)?;
        host::with(&spec.root, |h| {
            h.hold(Resource::Forwarding, &spec.name, || {
                let mut keys = vec![IP_FORWARD.to_string()];
                keys.extend(sysctl::ipv4_forwarding_keys()?);
                to_value(sysctl::snapshot(&keys)?)
            })
        })?;
        Ok(sysctl::ensure(IP_FORWARD, "1")?.into_iter().collect())
    }

    /// The last sandbox that holds forwarding puts the host's values back.
    fn revert(&self, undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let own = data::<Record>(self.id(), v)?.old;
        host::with(&undo.root, |h| {
            if !h.knows(Resource::Forwarding) && !own.is_empty() {
                // Made before the host scope and never adopted (its
                // record was unreadable then): its own values.
                return restore(&own);
            }
            h.release(Resource::Forwarding, &undo.name, |v| {
                restore(
                    &serde_json::from_value::<Vec<(String, String)>>(v.clone())
                        .map_err(|e| host::bad_original("forwarding", e))?,
                )
            })
        })
    }

    /// Without our record, the host record still knows the values before
    /// the first sandbox: released as a revert would. Without that either,
    /// nothing can be restored, only said.
    fn sweep(&self, undo: &Undo, _name: &str) -> Result<Vec<String>> {
        if host::peek(&undo.root)?.is_some_and(|r| r.resources.contains_key(Resource::Forwarding.id())) {
            return self.revert(undo, &serde_json::json!({}));
        }
        let now = sysctl::read(IP_FORWARD)?;
        Ok(if now == "1" {
            vec![format!(
                "left {} = 1: its value before setup was in the lost records; \
                 set it back by hand if setup turned it on (sysctl -w net.ipv4.ip_forward=0)",
                sysctl::display(IP_FORWARD)
            )]
        } else {
            vec![]
        })
    }
}

fn restore(old: &[(String, String)]) -> Result<Vec<String>> {
    let ours = |k: &str| {
        k == IP_FORWARD
            || k.strip_prefix("net/ipv4/conf/")
                .and_then(|rest| rest.strip_suffix("/forwarding"))
                .is_some_and(|ifname| !ifname.contains('/'))
    };
    crate::state::confine_sysctls(old, ours)?;
    sysctl::restore(old)
}
