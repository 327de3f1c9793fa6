//! Checks made before anything changes. Every problem is reported at once,
//! each with its fix, so an operator fixes the host in one go.

use caps::{CapSet, Capability};
use ipnet::Ipv4Net;

use crate::error::Error;
use crate::spec::Spec;
use crate::state::State;
use crate::steps::veth_alias;
use crate::sys::{netlink::Netlink, nft};

/// Capabilities every run needs: netlink and nft changes, and mounting and
/// entering the namespace.
const NEEDED: &[(Capability, &str)] = &[
    (
        Capability::CAP_NET_ADMIN,
        "configure links, addresses, routes and nftables",
    ),
    (Capability::CAP_SYS_ADMIN, "mount and enter the network namespace"),
];

/// Linux, root and the capabilities; `command` (`setup`, `status`, ...)
/// goes into the fix, so it says exactly what to run.
pub fn privileges(command: &str) -> Vec<Error> {
    let mut problems = Vec::new();
    if std::env::consts::OS != "linux" {
        problems.push(Error::host(
            "this host",
            "sandbox mode requires Linux",
            "run it on a Linux host",
        ));
        return problems;
    }
    if !nix::unistd::geteuid().is_root() {
        problems.push(Error::host(
            "user",
            format!("running as uid {}, not root", nix::unistd::geteuid()),
            format!("run it with sudo: sudo sandbox {command} ..."),
        ));
        return problems;
    }
    for (cap, why) in NEEDED {
        match caps::has_cap(None, CapSet::Effective, *cap) {
            Ok(true) => {}
            Ok(false) => problems.push(Error::host(
                format!("capability {cap}"),
                format!("missing from the effective set; needed to {why}"),
                format!("run as full root, or grant {cap} (e.g. in the container or unit that runs sandbox)"),
            )),
            Err(e) => problems.push(Error::host(
                format!("capability {cap}"),
                format!("cannot read: {e}"),
                "run as root",
            )),
        }
    }
    problems
}

pub fn for_setup(spec: &Spec, state: Option<&State>) -> Vec<Error> {
    let mut problems = privileges("setup");
    if !problems.is_empty() {
        return problems;
    }
    if let Err(why) = nft::available() {
        problems.push(Error::host(
            "nft",
            why,
            "install nftables: apt-get install nftables (or dnf install nftables); the kernel needs nf_tables",
        ));
    } else if let Err(why) = nft::kernel_support() {
        problems.push(Error::host(
            "kernel nf_tables",
            why,
            "load it (modprobe nf_tables) or boot a kernel built with CONFIG_NF_TABLES",
        ));
    }
    // The record as it is now, not as it was read before preflight began:
    // a run racing us on this name writes its record ahead of making its
    // objects, so they are not taken for someone else's.
    let fresh = crate::state::Store::peek(&spec.root, &spec.name).ok().flatten();
    let state = fresh.as_ref().or(state);
    match address_clashes(spec, state) {
        Ok(found) => problems.extend(found),
        Err(e) => problems.push(e),
    }
    match foreign_objects(spec, state) {
        Ok(found) => problems.extend(found),
        Err(e) => problems.push(e),
    }
    problems.extend(crate::engine::preflight_all(&crate::steps::all(), spec));
    problems
}

/// A link or namespace with our name that no record of ours accounts for
/// belongs to someone else: taking it over, or deleting it at --disable,
/// would touch what is not ours.
fn foreign_objects(spec: &Spec, state: Option<&State>) -> crate::Result<Vec<Error>> {
    let recorded = |id: &str| state.is_some_and(|s| s.get(id).is_some());
    let mut out = Vec::new();
    if !recorded("veth") {
        if let Some(l) = Netlink::host()?.link(&spec.net.host_if)? {
            if l.alias.as_deref() != Some(&veth_alias(&spec.name)) {
                let kind = l.kind.as_deref().unwrap_or("link");
                out.push(Error::host(
                    format!("interface {}", spec.net.host_if),
                    format!(
                        "a {kind} of that name exists and is not ours (no alias {:?}, no state record)",
                        veth_alias(&spec.name)
                    ),
                    format!(
                        "if it is a leftover, delete it (ip link del {}); otherwise pick another --name",
                        spec.net.host_if
                    ),
                ));
            }
        }
    }
    let ns_dir = spec.root.netns_dir();
    if !recorded("netns") && crate::sys::netns::exists(&ns_dir, &spec.net.netns) {
        out.push(Error::host(
            format!("network namespace {}", spec.net.netns),
            format!(
                "{} exists and no state record says setup made it",
                ns_dir.join(&spec.net.netns).display()
            ),
            format!(
                "if it is a leftover of this sandbox (its state record was lost), run `sandbox setup --disable \
                 --name {}`, which removes what is named after it and carries our mark; otherwise pick another --name",
                spec.name
            ),
        ));
    }
    Ok(out)
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Our subnet against every address and route the host already has, but
/// for those on our own veth (a re-run must not trip over itself).
fn address_clashes(spec: &Spec, state: Option<&State>) -> crate::Result<Vec<Error>> {
    let nl = Netlink::host()?;
    let links = nl.links()?;
    let ours = links
        .iter()
        .find(|l| {
            l.name == spec.net.host_if
                && (l.alias.as_deref() == Some(&veth_alias(&spec.name))
                    || state.is_some_and(|s| s.get("veth").is_some()))
        })
        .map(|l| l.index);
    let name_of = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .map_or_else(|| format!("#{index}"), |l| l.name.clone())
    };
    let subnet = spec.net.subnet();
    let fix = "pick --host-ip/--sandbox-ip in a range the host does not use, e.g. 10.231.0.1 and 10.231.0.2";
    let mut out = Vec::new();
    for a in nl.addresses()? {
        let std::net::IpAddr::V4(ip) = a.addr else { continue };
        if Some(a.index) == ours {
            continue;
        }
        let Ok(net) = Ipv4Net::new(ip, a.prefix) else { continue };
        if overlaps(&net, &subnet) {
            out.push(Error::host(
                format!("subnet {subnet}"),
                format!("overlaps address {ip}/{} on {}", a.prefix, name_of(a.index)),
                fix,
            ));
        }
    }
    for r in nl.routes_v4()? {
        // Local and broadcast routes mirror the addresses checked above.
        if r.dst.prefix_len() == 0 || r.oif.is_some() && r.oif == ours || r.table == 255 {
            continue;
        }
        if overlaps(&r.dst, &subnet) {
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            let dev = r.oif.map(|i| format!(" dev {}", name_of(i))).unwrap_or_default();
            out.push(Error::host(
                format!("subnet {subnet}"),
                format!("overlaps route {}{via}{dev}", r.dst),
                fix,
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let n = |s: &str| s.parse::<Ipv4Net>().expect("net");
        assert!(overlaps(&n("10.200.0.0/30"), &n("10.0.0.0/8")));
        assert!(overlaps(&n("10.0.0.0/8"), &n("10.200.0.0/30")));
        assert!(overlaps(&n("10.200.0.0/30"), &n("10.200.0.2/32")));
        assert!(!overlaps(&n("10.200.0.0/30"), &n("10.200.0.4/30")));
        assert!(!overlaps(&n("10.200.0.0/30"), &n("192.168.0.0/16")));
    }
}
