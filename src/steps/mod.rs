//! The list of steps, in the order `setup` applies them (`--disable`
//! reverts in reverse). The rules go in before the link exists (the
//! firewall finishes in the background while forwarding, nflog and dns
//! run; the veth waits for it); the link is down before they come out, and
//! gone with the namespace after.
//!
//! | step          | creates                                   | inverse                     |
//! |---------------|-------------------------------------------|-----------------------------|
//! | user          | user+group <name>, home 0750, .bashrc     | kept; --purge: user, group, home if ours |
//! | netns         | /run/netns/<name>0, lo up                 | unmount + unlink; wait until its links are gone |
//! | firewall      | nft table inside the netns and on the host | delete the host's; the other goes with the netns |
//! | forwarding    | net.ipv4.ip_forward=1 (only if needed)    | old values restored         |
//! | nflog         | net.netfilter.nf_log_all_netns=1 (host-wide; initial netns only) | old value restored |
//! | dns           | /etc/netns/<name>0/{resolv,nsswitch}.conf | remove (if unedited)        |
//! | veth          | <name>0 <-> eth0 (in netns), addrs, route | host end down; the pair goes with the netns |
//! | policy        | ~/.defenseclaw/policy/ (Rego, rule packs, manifest) | kept (edits never overwritten) |
//! | openclaw      | gateway mode/port/bind/auth + guardrail wiring in openclaw.json, .bak | original back from root's copy (or our keys out) |
//! | scripts       | ~/run-sandbox.sh, ~/pair.sh               | remove (if unedited)        |
//! | sidecar       | the sidecar's config.yaml + .env (token)  | originals back (if unedited) |
//! | pairing       | sidecar device.key; its entry in ~/.openclaw/devices/paired.json; ~/.defenseclaw/.host-ip | our entry out; key kept |
//! | extras        | ~/.openclaw/skills/codeguard, ~/.openclaw/extensions/defenseclaw | remove (if unedited) |
//! | units         | sandbox-net@, defenseclaw-gateway@, openshell-<name>, defenseclaw-<name>.target; enabled + started over D-Bus | stop, disable, remove (if unedited), reload |

mod dns;
mod extras;
mod firewall;
mod forwarding;
mod home;
mod netns;
mod nflog;
mod openclaw;
mod pairing;
mod policy_dir;
mod scripts;
mod sidecar;
mod sidecar_data;
pub mod units;
mod user;
mod veth;

use crate::engine::Step;

pub use firewall::only_clears_refusals;
pub use veth::alias as veth_alias;

pub fn all() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(user::User),
        Box::new(netns::Netns),
        Box::new(firewall::EgressRules),
        Box::new(forwarding::Forwarding),
        Box::new(nflog::NfLog),
        Box::new(dns::DnsFiles),
        Box::new(veth::Veth),
        Box::new(policy_dir::PolicyDir),
        Box::new(openclaw::OpenclawJson),
        Box::new(scripts::Scripts),
        Box::new(sidecar::Sidecar),
        Box::new(pairing::Pairing),
        Box::new(extras::Extras),
        Box::new(units::Units),
    ]
}
