//! The veth pair: host end `<name>0` with the host IP, peer `eth0` created
//! directly inside the namespace (a moved link loses its addresses) with
//! the sandbox IP and a default route via the host. All over rtnetlink.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{data, Recorder, Step, Undo};
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::sys::netlink::Netlink;
use crate::sys::netns;

pub struct Veth;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    host_if: String,
    peer_if: String,
    netns: PathBuf,
    host_ip: Ipv4Addr,
    sandbox_ip: Ipv4Addr,
    prefix: u8,
}

/// The ownership mark on the host end, visible in `ip link` as its alias.
pub fn alias(name: &str) -> String {
    format!("sandbox:{name}")
}

impl Step for Veth {
    fn id(&self) -> &'static str {
        "veth"
    }

    fn in_jobs(&self) -> bool {
        true
    }

    fn volatile(&self) -> bool {
        true
    }

    /// No link before the firewall's tables are in.
    fn waits_for_background(&self) -> bool {
        true
    }

    fn inventory(&self, spec: &Spec, inv: &mut Inventory) {
        let n = &spec.net;
        let gone = format!(
            "down, then goes with namespace {}: the kernel deletes both ends",
            n.netns
        );
        inv.object(
            self.id(),
            "link",
            &n.host_if,
            &format!(
                "veth, host end, {}/{}, up, alias {}",
                n.host_ip,
                n.prefix,
                alias(&spec.name)
            ),
            &gone,
        );
        inv.object(
            self.id(),
            "link",
            &format!("{} in {}", n.peer_if, n.netns),
            &format!(
                "veth peer created inside the namespace, {}/{}, up",
                n.sandbox_ip, n.prefix
            ),
            &gone,
        );
        inv.object(
            self.id(),
            "route",
            &format!("default in {}", n.netns),
            &format!("via {}", n.host_ip),
            &gone,
        );
    }

    fn plan(&self, spec: &Spec, rec: Option<&Value>) -> Result<Vec<String>> {
        let want = wanted(spec);
        let host = Netlink::host()?;
        let owned = rec.is_some();
        let mut out = Vec::new();
        match host.link(&want.host_if)? {
            None => {
                out.push(format!(
                    "create veth {} ({}/{}) <-> {} in {} ({}/{}), default route via {}",
                    want.host_if,
                    want.host_ip,
                    want.prefix,
                    want.peer_if,
                    spec.net.netns,
                    want.sandbox_ip,
                    want.prefix,
                    want.host_ip
                ));
                return Ok(out);
            }
            Some(l) if !owned && l.alias.as_deref() != Some(&alias(&spec.name)) => {
                return Err(not_ours(&want.host_if, l.alias.as_deref()));
            }
            Some(l) => {
                if !has_addr(&host, l.index, want.host_ip, want.prefix)? {
                    out.push(format!("set {} address {}/{}", want.host_if, want.host_ip, want.prefix));
                }
                if !l.up {
                    out.push(format!("bring {} up", want.host_if));
                }
            }
        }
        if want.netns.exists() {
            let ns = Netlink::in_netns(&want.netns)?;
            match ns.link(&want.peer_if)? {
                Some(p) => {
                    if !has_addr(&ns, p.index, want.sandbox_ip, want.prefix)? {
                        out.push(format!(
                            "set {} address {}/{} in {}",
                            want.peer_if, want.sandbox_ip, want.prefix, spec.net.netns
                        ));
                    }
                    if !p.up {
                        out.push(format!("bring {} up in {}", want.peer_if, spec.net.netns));
                    }
                    if !has_default_route(&ns, want.host_ip)? {
                        out.push(format!("set default route via {} in {}", want.host_ip, spec.net.netns));
                    }
                }
                None => out.push(format!("recreate veth {}: its peer is missing", want.host_if)),
            }
        }
        Ok(out)
    }

    fn apply(&self, spec: &Spec, rec: &mut Recorder<'_>) -> Result<Vec<String>> {
        let want = wanted(spec);
        let before = rec.get::<Record>();
        let host = Netlink::host()?;
        let mut out = Vec::new();
        let existing = host.link(&want.host_if)?;
        if let Some(l) = &existing {
            if before.is_none() && l.alias.as_deref() != Some(&alias(&spec.name)) {
                return Err(not_ours(&want.host_if, l.alias.as_deref()));
            }
        }
        rec.put(&want)?;
        let ns = Netlink::in_netns(&want.netns)?;
        // A host end without its peer (the namespace was re-created behind
        // our back) cannot be repaired: make the pair again.
        let peer_missing = existing.is_some() && ns.link(&want.peer_if)?.is_none();
        if peer_missing {
            host.delete_link(&want.host_if)?;
            out.push(format!("deleted {} (its peer was gone)", want.host_if));
        }
        if existing.is_none() || peer_missing {
            host.create_veth(&want.host_if, &want.peer_if, &want.netns, &alias(&spec.name))?;
            out.push(format!(
                "created veth {} <-> {} in {}",
                want.host_if, want.peer_if, spec.net.netns
            ));
        }
        if let Some(old) =
            before.filter(|b| b.host_ip != want.host_ip || b.sandbox_ip != want.sandbox_ip || b.prefix != want.prefix)
        {
            host.del_address(&want.host_if, IpAddr::V4(old.host_ip), old.prefix)?;
            ns.del_address(&want.peer_if, IpAddr::V4(old.sandbox_ip), old.prefix)?;
            out.push(format!(
                "removed old addresses {}/{} and {}/{}",
                old.host_ip, old.prefix, old.sandbox_ip, old.prefix
            ));
        }
        out.extend(ensure_end(&host, &want.host_if, want.host_ip, want.prefix, "")?);
        let where_ = format!(" in {}", spec.net.netns);
        out.extend(ensure_end(&ns, &want.peer_if, want.sandbox_ip, want.prefix, &where_)?);
        if !has_default_route(&ns, want.host_ip)? {
            ns.replace_default_route(want.host_ip)?;
            out.push(format!("set default route via {}{where_}", want.host_ip));
        }
        Ok(out)
    }

    /// With its peer inside our namespace the pair goes with the namespace
    /// (the netns step, reverted last, waits until it has); until then the
    /// host end is down, so nothing passes while the host table comes out.
    /// Deleting a link would block on an RCU barrier (tens of ms). A host
    /// end whose peer is elsewhere (the namespace was deleted behind our
    /// back while something held it) is deleted, which takes the peer.
    fn revert(&self, _undo: &Undo, v: &Value) -> Result<Vec<String>> {
        let r: Record = data(self.id(), v)?;
        let host = Netlink::host()?;
        let Some(link) = host.link(&r.host_if)? else {
            return Ok(vec![]);
        };
        if netns::links_into(&host, &r.netns)?
            .iter()
            .any(|l| l.index == link.index)
        {
            host.set_down(&r.host_if)?;
            let ns = r.netns.file_name().unwrap_or_default().to_string_lossy();
            return Ok(vec![format!("veth {} down; it goes with namespace {ns}", r.host_if)]);
        }
        Ok(if host.delete_link(&r.host_if)? {
            vec![format!("deleted veth {}", r.host_if)]
        } else {
            vec![]
        })
    }

    /// Link `<name>0` is ours only if it carries our alias.
    fn sweep(&self, _undo: &Undo, name: &str) -> Result<Vec<String>> {
        let host_if = format!("{name}0");
        let host = Netlink::host()?;
        Ok(match host.link(&host_if)? {
            None => vec![],
            Some(l) if l.alias.as_deref() == Some(&alias(name)) => {
                host.delete_link(&host_if)?;
                vec![format!("deleted veth {host_if} (alias {})", alias(name))]
            }
            Some(l) => vec![format!(
                "left interface {host_if}: not ours (alias {:?}, not {:?})",
                l.alias.as_deref().unwrap_or(""),
                alias(name)
            )],
        })
    }
}

fn wanted(spec: &Spec) -> Record {
    Record {
        host_if: spec.net.host_if.clone(),
        peer_if: spec.net.peer_if.clone(),
        netns: spec.root.netns_path(&spec.net.netns),
        host_ip: spec.net.host_ip,
        sandbox_ip: spec.net.sandbox_ip,
        prefix: spec.net.prefix,
    }
}

fn ensure_end(nl: &Netlink, ifname: &str, ip: Ipv4Addr, prefix: u8, where_: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let link = nl.link(ifname)?.ok_or_else(|| {
        Error::netlink(
            "find link",
            format!("{ifname}{where_}"),
            "vanished while being configured",
        )
    })?;
    if !has_addr(nl, link.index, ip, prefix)? {
        nl.add_address(ifname, IpAddr::V4(ip), prefix)?;
        out.push(format!("set {ifname} address {ip}/{prefix}{where_}"));
    }
    if !link.up {
        nl.set_up(ifname)?;
        out.push(format!("brought {ifname} up{where_}"));
    }
    Ok(out)
}

fn has_addr(nl: &Netlink, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<bool> {
    Ok(nl
        .addresses()?
        .iter()
        .any(|a| a.index == index && a.addr == IpAddr::V4(ip) && a.prefix == prefix))
}

fn has_default_route(nl: &Netlink, via: Ipv4Addr) -> Result<bool> {
    Ok(nl
        .routes_v4()?
        .iter()
        .any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(via)))
}

fn not_ours(ifname: &str, alias: Option<&str>) -> Error {
    Error::host(
        format!("interface {ifname}"),
        format!("already exists and is not ours (alias {:?})", alias.unwrap_or("")),
        "remove it if it is stale, or pick another --name",
    )
}
