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
//! | resolver      | (names in the policy, or audit mode) resolver.json in the state dir; under --no-systemd the `sandbox resolver` process | process stopped (pid + start time), files removed |
//! | policy        | ~/.defenseclaw/policy/ (Rego, rule packs, manifest) | kept (edits never overwritten) |
//! | openclaw      | gateway mode/port/bind/auth + guardrail wiring in openclaw.json, .bak | original back from root's copy (or our keys out) |
//! | scripts       | ~/run-sandbox.sh, ~/pair.sh               | remove (if unedited)        |
//! | sidecar       | the sidecar's config.yaml + .env (token)  | originals back (if unedited) |
//! | pairing       | sidecar device.key; its entry in ~/.openclaw/devices/paired.json; ~/.defenseclaw/.host-ip | our entry out; key kept |
//! | extras        | ~/.openclaw/skills/codeguard, ~/.openclaw/extensions/defenseclaw | remove (if unedited) |
//! | units         | sandbox-net@, defenseclaw-gateway@, openshell-<name>, defenseclaw-<name>.target; enabled + started over D-Bus | stop, disable, remove (if unedited), reload |
//! | job_home      | (job sandboxes only) the job's home under its state dir, owned by its leased uid | removed with its contents; the lease given back |
//!
//! A job's sandbox (`sandbox job`, `Spec::job`) has only the steps whose
//! `in_jobs` says so: netns, firewall, forwarding, dns, veth and job_home.

mod dns;
mod extras;
mod firewall;
mod forwarding;
mod home;
mod job_home;
mod netns;
mod nflog;
mod openclaw;
pub mod openclaw_store;
mod pairing;
mod policy_dir;
mod resolver;
mod scripts;
mod sidecar;
mod sidecar_data;
pub mod units;
mod user;
mod veth;

use crate::engine::Step;

pub use firewall::only_clears_refusals;
pub use resolver::unit as resolver_unit;
pub use veth::alias as veth_alias;

pub fn all() -> Vec<Box<dyn Step>> {
    vec![
        // First, so its record (which holds the lease) is written before
        // any other step of a job, and it is reverted last.
        Box::new(job_home::JobHome),
        Box::new(user::User),
        Box::new(netns::Netns),
        Box::new(firewall::EgressRules),
        Box::new(forwarding::Forwarding),
        Box::new(nflog::NfLog),
        Box::new(dns::DnsFiles),
        Box::new(veth::Veth),
        Box::new(resolver::Resolver),
        Box::new(policy_dir::PolicyDir),
        Box::new(openclaw::OpenclawJson),
        Box::new(scripts::Scripts),
        Box::new(sidecar::Sidecar),
        Box::new(pairing::Pairing),
        Box::new(extras::Extras),
        Box::new(units::Units),
    ]
}

#[cfg(test)]
mod tests {
    /// The steps that work in the agent's home reach it only through
    /// `sys::agent_home` (issue 15): no path-based file call, no chown by
    /// path, outside their tests. (`user` makes the home itself, whose
    /// parent is root's, and is checked by its own tests; `sidecar` writes
    /// root's or an admin's directory, through the same layer where it is
    /// a home.)
    #[test]
    fn home_steps_use_only_the_home_access_layer() {
        let sources = [
            ("home.rs", include_str!("home.rs")),
            ("openclaw.rs", include_str!("openclaw.rs")),
            ("pairing.rs", include_str!("pairing.rs")),
            ("policy_dir.rs", include_str!("policy_dir.rs")),
            ("scripts.rs", include_str!("scripts.rs")),
            ("extras.rs", include_str!("extras.rs")),
        ];
        let forbidden = [
            "fs::",
            "files::write",
            "files::hash_of",
            "files::remove",
            "files::create_dirs",
            "files::missing_dirs",
            "files::previous_content",
            "files::undo_write",
            "owner::set",
            "owner::write",
            "owner::dirs_under",
            "owner::rewrite",
            "OpenOptions",
            "File::",
            "libc::open",
        ];
        for (name, text) in sources {
            let code = text.split("#[cfg(test)]").next().unwrap_or(text);
            for (n, line) in code.lines().enumerate() {
                let line = line.split("//").next().unwrap_or(line);
                for f in forbidden {
                    assert!(
                        !line.contains(f),
                        "src/steps/{name}:{}: `{f}` reaches the home by path; use sys::agent_home",
                        n + 1
                    );
                }
            }
        }
    }
}
