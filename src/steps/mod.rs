//! The list of steps, in the order `setup` applies them (`--disable`
//! reverts in reverse). Rules go in before the link exists, so there is
//! never a moment when the sandbox has a way out and no firewall.
//!
//! | step          | creates                                   | inverse                     |
//! |---------------|-------------------------------------------|-----------------------------|
//! | netns         | /run/netns/<name>0, lo up                 | unmount + unlink            |
//! | egress        | nft table inside the netns                | (goes with the netns)       |
//! | host-firewall | nft table on the host                     | delete our table            |
//! | forwarding    | net.ipv4.ip_forward=1 (only if needed)    | old values restored         |
//! | veth          | <name>0 <-> eth0 (in netns), addrs, route | delete the host end         |
//! | dns           | /etc/netns/<name>0/{resolv,nsswitch}.conf | remove (if unedited)        |

mod dns;
mod egress;
mod forwarding;
mod host_firewall;
mod netns;
mod veth;

use crate::engine::Step;

pub use veth::alias as veth_alias;

pub fn all() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(netns::Netns),
        Box::new(egress::EgressRules),
        Box::new(host_firewall::HostRules),
        Box::new(forwarding::Forwarding),
        Box::new(veth::Veth),
        Box::new(dns::DnsFiles),
    ]
}
