//! Addresses and job uids handed out to sandboxes, in the host record: a
//! sandbox made with `--subnet auto` (the default) gets the first free /30
//! of the pool, and keeps it for as long as it exists; one given fixed
//! addresses has them entered too, so no other sandbox is handed them.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{Host, Record};
use crate::error::{Error, Result};
use crate::spec::Spec;
use crate::state::State;

/// The pool `--subnet auto` takes /30s from, unless `--subnet-pool` says.
pub const DEFAULT_POOL: &str = "10.200.0.0/16";

/// The uids `sandbox job` hands out: far above what `useradd`, systemd's
/// dynamic users (61184-65519) and the usual subordinate ranges use.
pub const JOB_UIDS: std::ops::Range<u32> = 2_000_000_000..2_000_065_536;

/// How a sandbox wants its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Addressing {
    /// A free /30 from `pool`: host .1, sandbox .2.
    Auto { pool: Ipv4Net },
    /// Addresses the operator chose.
    Fixed,
}

/// What one sandbox was handed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub subnet: Ipv4Net,
    /// Taken from the pool (rather than given by the operator).
    pub auto: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

/// The host and sandbox addresses of a leased /30.
pub fn addresses(subnet: Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(subnet.network());
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The subnet `name` gets for `want`, from `record` as it stands: its own
/// lease when it has one that fits, else the first /30 of the pool that no
/// other sandbox holds and `busy` (the host's own addresses and routes)
/// does not refuse. `fixed` is the operator's subnet under `Fixed`.
pub fn choose(
    record: &Record,
    name: &str,
    want: &Addressing,
    fixed: Ipv4Net,
    busy: &dyn Fn(&Ipv4Net) -> bool,
) -> Result<Ipv4Net> {
    let others = || record.leases.iter().filter(move |(n, _)| n.as_str() != name);
    match want {
        Addressing::Fixed => {
            if let Some((other, l)) = others().find(|(_, l)| overlaps(&l.subnet, &fixed)) {
                return Err(Error::host(
                    format!("subnet {fixed}"),
                    format!("overlaps {} of sandbox {other}", l.subnet),
                    "pick addresses no other sandbox uses, or let sandbox choose them with --subnet auto",
                ));
            }
            Ok(fixed)
        }
        Addressing::Auto { pool } => {
            if let Some(own) = record.leases.get(name) {
                if pool.contains(&own.subnet) {
                    return Ok(own.subnet);
                }
            }
            let free = pool
                .subnets(30)
                .map_err(|_| {
                    Error::input(
                        format!("--subnet-pool {pool}"),
                        "is narrower than one /30",
                        "give a pool of /30 or wider, e.g. 10.200.0.0/16",
                    )
                })?
                .find(|s| !others().any(|(_, l)| overlaps(&l.subnet, s)) && !busy(s));
            free.ok_or_else(|| {
                Error::host(
                    format!("subnet pool {pool}"),
                    format!(
                        "has no free /30 left: {} held by sandboxes, the rest overlap the host's own addresses or routes",
                        record.leases.len()
                    ),
                    "remove sandboxes you no longer need, or give a wider --subnet-pool",
                )
            })
        }
    }
}

impl Host {
    /// Lease `subnet` to `name` (chosen with [`choose`]), keeping a job uid
    /// it already has.
    pub fn lease_subnet(&mut self, name: &str, subnet: Ipv4Net, auto: bool) -> Result<()> {
        let uid = self.record.leases.get(name).and_then(|l| l.uid);
        self.record.leases.insert(name.into(), Lease { subnet, auto, uid });
        self.save()
    }

    /// A uid of `JOB_UIDS` for job `name` that no other live job has and
    /// `taken` (the user database) does not know.
    pub fn lease_uid(&mut self, name: &str, taken: &dyn Fn(u32) -> bool) -> Result<u32> {
        if let Some(uid) = self.record.leases.get(name).and_then(|l| l.uid) {
            return Ok(uid);
        }
        let used: std::collections::BTreeSet<u32> = self.record.leases.values().filter_map(|l| l.uid).collect();
        let uid = JOB_UIDS
            .clone()
            .find(|u| !used.contains(u) && !taken(*u))
            .ok_or_else(|| {
                Error::host(
                    "job uids",
                    format!("all {} are handed out", JOB_UIDS.len()),
                    "run `sandbox job gc` to reap jobs whose runner died",
                )
            })?;
        let Some(lease) = self.record.leases.get_mut(name) else {
            return Err(Error::host(
                format!("job {name}"),
                "has no address lease to attach a uid to",
                "report this as a bug",
            ));
        };
        lease.uid = Some(uid);
        self.save()?;
        Ok(uid)
    }

    /// Give back everything leased to `name`.
    pub fn release_lease(&mut self, name: &str) -> Result<()> {
        self.record.leases.remove(name);
        self.save()
    }
}

/// Put `spec`'s addresses from its lease: the one it holds, or for `auto`
/// the first free /30. With `take`, under the host lock, the lease is
/// made; without, the host record is only read (plans, preflight). A
/// sandbox from before the host scope keeps the addresses its record has.
pub fn lease_for(spec: &mut Spec, previous: Option<&State>, take: bool) -> Result<()> {
    let in_use = crate::preflight::networks_in_use(spec, previous)?;
    let busy = |s: &Ipv4Net| in_use.iter().any(|(n, _)| overlaps(n, s));
    let recorded = previous
        .and_then(|p| p.spec.as_ref())
        .and_then(|v| serde_json::from_value::<Spec>(v.clone()).ok())
        .map(|old| old.net.subnet());
    let pick = |record: &Record| -> Result<Ipv4Net> {
        let mut record = record.clone();
        if let (Some(old), false) = (recorded, record.leases.contains_key(&spec.name)) {
            record.leases.insert(
                spec.name.clone(),
                Lease {
                    subnet: old,
                    auto: false,
                    uid: None,
                },
            );
        }
        choose(&record, &spec.name, &spec.addressing, spec.net.subnet(), &busy)
    };
    let subnet = if take {
        let auto = matches!(spec.addressing, Addressing::Auto { .. });
        super::with(&spec.root, |h| {
            let subnet = pick(h.record())?;
            if h.record().leases.get(&spec.name).map(|l| (l.subnet, l.auto)) != Some((subnet, auto)) {
                h.lease_subnet(&spec.name, subnet, auto)?;
            }
            Ok(subnet)
        })?
    } else {
        pick(&super::peek(&spec.root)?.unwrap_or_default())?
    };
    if matches!(spec.addressing, Addressing::Auto { .. }) {
        let (host, sandbox) = addresses(subnet);
        spec.net.host_ip = host;
        spec.net.sandbox_ip = sandbox;
        spec.net.prefix = subnet.prefix_len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("net")
    }

    fn auto() -> Addressing {
        Addressing::Auto {
            pool: net(DEFAULT_POOL),
        }
    }

    fn lease(s: &str) -> Lease {
        Lease {
            subnet: net(s),
            auto: true,
            uid: None,
        }
    }

    #[test]
    fn auto_takes_the_first_free_slash_30_and_keeps_its_own() {
        let mut r = Record::default();
        let none = |_: &Ipv4Net| false;
        let fixed = net("10.9.0.0/30");
        assert_eq!(choose(&r, "a", &auto(), fixed, &none).expect("a"), net("10.200.0.0/30"));
        r.leases.insert("a".into(), lease("10.200.0.0/30"));
        r.leases.insert("c".into(), lease("10.200.0.8/30"));
        assert_eq!(choose(&r, "b", &auto(), fixed, &none).expect("b"), net("10.200.0.4/30"));
        assert_eq!(
            choose(&r, "a", &auto(), fixed, &none).expect("a again"),
            net("10.200.0.0/30")
        );
        // The host's own use of a range is skipped.
        let busy = |s: &Ipv4Net| overlaps(s, &net("10.200.0.4/31"));
        assert_eq!(
            choose(&r, "b", &auto(), fixed, &busy).expect("b"),
            net("10.200.0.12/30")
        );
        assert_eq!(addresses(net("10.200.0.12/30")).0, Ipv4Addr::new(10, 200, 0, 13));
        assert_eq!(addresses(net("10.200.0.12/30")).1, Ipv4Addr::new(10, 200, 0, 14));
    }

    #[test]
    fn a_fixed_subnet_another_sandbox_holds_is_refused_by_name() {
        let mut r = Record::default();
        r.leases.insert("a".into(), lease("10.200.0.0/30"));
        let err = choose(&r, "b", &Addressing::Fixed, net("10.200.0.0/24"), &|_| false)
            .expect_err("clash")
            .to_string();
        assert!(err.contains("sandbox a") && err.contains("--subnet auto"), "{err}");
        assert!(choose(&r, "a", &Addressing::Fixed, net("10.200.0.0/24"), &|_| false).is_ok());
    }

    #[test]
    fn a_full_pool_says_how_to_free_it() {
        let mut r = Record::default();
        r.leases.insert("a".into(), lease("10.1.0.0/30"));
        let want = Addressing::Auto {
            pool: net("10.1.0.0/30"),
        };
        let err = choose(&r, "b", &want, net("10.9.0.0/30"), &|_| false)
            .expect_err("full")
            .to_string();
        assert!(err.contains("no free /30") && err.contains("--subnet-pool"), "{err}");
    }
}
