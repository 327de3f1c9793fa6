//! rtnetlink behind a synchronous API, because the rest of the tool is
//! synchronous. Each `Netlink` owns a current-thread tokio runtime that drives
//! its connection only while a method is blocked on a request, so no
//! background thread exists and nothing migrates between namespaces.
//!
//! A netlink socket is bound to the network namespace it was opened in, for
//! its whole life: open it in the right namespace (`in_netns`) and it can be
//! used from any thread afterwards.

use std::fmt::Display;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{AddressMessageBuilder, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::runtime::Runtime;

use crate::error::Error;
use crate::sys::netns;

/// A route-netlink socket bound to one network namespace.
///
/// Blocking: do not call it (or drop it) from inside an async runtime.
pub struct Netlink {
    rt: Runtime,
    handle: rtnetlink::Handle,
    /// Names the namespace in error messages.
    ns: String,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("ns", &self.ns).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up (IFF_UP), not carrier state.
    pub up: bool,
    pub alias: Option<String>,
    /// IFLA_INFO_KIND: "veth", "dummy", ...; None for devices without one (`lo`, most NICs).
    pub kind: Option<String>,
    /// IFLA_LINK_NETNSID: the namespace (by this socket's nsid for it) that
    /// holds the other end of a veth living across two namespaces.
    pub peer_nsid: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub table: u32,
}

impl Netlink {
    /// Socket in the calling thread's current network namespace.
    pub fn host() -> crate::Result<Self> {
        let ns = match std::fs::read_link("/proc/thread-self/ns/net") {
            Ok(link) => format!("netns {}", link.display()),
            Err(_) => "current netns".to_string(),
        };
        Self::open(ns)
    }

    /// Socket opened inside the network namespace at `netns`.
    pub fn in_netns(netns: &Path) -> crate::Result<Self> {
        let ns = format!("netns {}", netns.display());
        netns::run_in(netns, move || Self::open(ns))
    }

    fn open(ns: String) -> crate::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| Error::netlink("start I/O runtime for", ns.clone(), e))?;
        // The socket registers with the runtime's reactor when created, so
        // the runtime must be entered.
        let opened = {
            let _entered = rt.enter();
            rtnetlink::new_connection()
        };
        let (connection, handle, _unsolicited) = opened.map_err(|e| Error::netlink("open socket in", ns.clone(), e))?;
        rt.spawn(connection);
        Ok(Netlink { rt, handle, ns })
    }

    fn object(&self, what: impl Display) -> String {
        format!("{what} in {}", self.ns)
    }

    fn err(&self, op: &'static str, what: impl Display, e: &rtnetlink::Error) -> Error {
        Error::netlink(op, self.object(what), cause(e))
    }

    /// `None` if there is no link of that name.
    pub fn link(&self, name: &str) -> crate::Result<Option<Link>> {
        self.one_link(self.handle.link().get().match_name(name), name)
    }

    /// `None` if no link has that index (any more).
    pub fn link_by_index(&self, index: u32) -> crate::Result<Option<Link>> {
        self.one_link(self.handle.link().get().match_index(index), format!("#{index}"))
    }

    fn one_link(&self, req: rtnetlink::LinkGetRequest, what: impl Display) -> crate::Result<Option<Link>> {
        match self.rt.block_on(async { req.execute().try_next().await }) {
            Ok(msg) => Ok(msg.map(to_link)),
            Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(self.err("get link", what, &e)),
        }
    }

    pub fn links(&self) -> crate::Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .rt
            .block_on(async { self.handle.link().get().execute().try_collect().await })
            .map_err(|e| self.err("list", "links", &e))?;
        Ok(msgs.into_iter().map(to_link).collect())
    }

    /// Create veth `host_name` here with its peer `peer_name` created directly
    /// inside `peer_netns`: a link moved after creation would lose its
    /// addresses and come up down. `alias` (IFLA_IFALIAS) goes on the host end.
    pub fn create_veth(&self, host_name: &str, peer_name: &str, peer_netns: &Path, alias: &str) -> crate::Result<()> {
        let what = format!("{host_name} (peer {peer_name} in {})", peer_netns.display());
        // The kernel resolves the fd while handling the request, so it only
        // has to stay open until `block_on` returns.
        let ns = File::open(peer_netns).map_err(|e| Error::io("open network namespace", peer_netns, e))?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.rt
            .block_on(self.handle.link().add(msg).execute())
            .map_err(|e| self.err("create veth", &what, &e))?;
        drop(ns);
        // The kernel ignores IFLA_IFALIAS when creating a link; only a change sets it.
        let mark = LinkUnspec::new_with_name(host_name).alias(alias).build();
        if let Err(e) = self.rt.block_on(self.handle.link().change(mark).execute()) {
            // An unmarked veth would not be recognised as ours later.
            let _ = self.delete_link(host_name);
            return Err(self.err("set alias on", host_name, &e));
        }
        Ok(())
    }

    /// This socket's id for the namespace at `netns` (RTM_GETNSID, as `ip
    /// netns list-id`); `None` while none is assigned, which means no link
    /// here has its other end there.
    pub fn nsid(&self, netns: &Path) -> crate::Result<Option<i32>> {
        use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
        use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
        use rtnetlink::packet_route::RouteNetlinkMessage;
        let what = format!("id of network namespace {}", netns.display());
        let ns = File::open(netns).map_err(|e| Error::io("open network namespace", netns, e))?;
        let mut msg = NsidMessage::default();
        msg.attributes = vec![NsidAttribute::Fd(ns.as_raw_fd() as u32)];
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        let mut handle = self.handle.clone();
        // The kernel resolves the fd while handling the request; `ns` stays
        // open until `block_on` returns.
        let answer = self.rt.block_on(async {
            use futures::StreamExt;
            let mut replies = handle.request(req)?;
            while let Some(reply) = replies.next().await {
                match reply.payload {
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(rtnetlink::Error::NetlinkError(e)),
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                        let id = m.attributes.iter().find_map(|a| match a {
                            NsidAttribute::Id(id) => Some(*id),
                            _ => None,
                        });
                        return Ok(id.filter(|id| *id >= 0));
                    }
                    _ => {}
                }
            }
            Ok(None)
        });
        drop(ns);
        answer.map_err(|e| self.err("get", &what, &e))
    }

    /// Deleting one end of a veth deletes both. `false` if there was no such link.
    pub fn delete_link(&self, name: &str) -> crate::Result<bool> {
        let Some(link) = self.link(name)? else {
            return Ok(false);
        };
        match self.rt.block_on(self.handle.link().del(link.index).execute()) {
            Ok(()) => Ok(true),
            // Gone between lookup and delete (e.g. its peer's namespace died).
            Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(false),
            Err(e) => Err(self.err("delete link", name, &e)),
        }
    }

    /// A link that is down passes no packets either way.
    pub fn set_down(&self, name: &str) -> crate::Result<()> {
        let msg = LinkUnspec::new_with_name(name).down().build();
        self.rt
            .block_on(self.handle.link().change(msg).execute())
            .map_err(|e| self.err("set down", name, &e))
    }

    pub fn set_up(&self, name: &str) -> crate::Result<()> {
        let msg = LinkUnspec::new_with_name(name).up().build();
        self.rt
            .block_on(self.handle.link().change(msg).execute())
            .map_err(|e| self.err("set up", name, &e))
    }

    /// Every address of every family on every link.
    pub fn addresses(&self) -> crate::Result<Vec<Addr>> {
        let msgs: Vec<AddressMessage> = self
            .rt
            .block_on(async { self.handle.address().get().execute().try_collect().await })
            .map_err(|e| self.err("list", "addresses", &e))?;
        Ok(msgs.into_iter().filter_map(to_addr).collect())
    }

    /// Already present (same address and prefix) is success.
    pub fn add_address(&self, link: &str, addr: IpAddr, prefix: u8) -> crate::Result<()> {
        let what = format!("{addr}/{prefix} on {link}");
        let Some(found) = self.link(link)? else {
            return Err(Error::netlink("add address", self.object(&what), "no such link"));
        };
        match self
            .rt
            .block_on(self.handle.address().add(found.index, addr, prefix).execute())
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(Errno::EEXIST) => Ok(()),
            Err(e) => Err(self.err("add address", &what, &e)),
        }
    }

    /// Absent (address or link) is success.
    pub fn del_address(&self, link: &str, addr: IpAddr, prefix: u8) -> crate::Result<()> {
        let Some(found) = self.link(link)? else {
            return Ok(());
        };
        let msg = match addr {
            IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(found.index)
                .address(a, prefix)
                .build(),
            IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(found.index)
                .address(a, prefix)
                .build(),
        };
        match self.rt.block_on(self.handle.address().del(msg).execute()) {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(Errno::EADDRNOTAVAIL | Errno::ENODEV)) => Ok(()),
            Err(e) => Err(self.err("delete address", format!("{addr}/{prefix} on {link}"), &e)),
        }
    }

    /// IPv4 routes of all tables and types (including the kernel's `local`
    /// table, 255); filter on `table` (main is 254).
    pub fn routes_v4(&self) -> crate::Result<Vec<Route4>> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let msgs: Vec<RouteMessage> = self
            .rt
            .block_on(async { self.handle.route().get(query).execute().try_collect().await })
            .map_err(|e| self.err("list", "IPv4 routes", &e))?;
        msgs.into_iter()
            .map(|msg| to_route4(msg).map_err(|why| Error::netlink("list", self.object("IPv4 routes"), why)))
            .collect()
    }

    /// Set the main table's IPv4 default route to go via `via`, replacing any
    /// existing default route there.
    pub fn replace_default_route(&self, via: Ipv4Addr) -> crate::Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().gateway(via).build();
        self.rt
            .block_on(self.handle.route().add(msg).replace().execute())
            .map_err(|e| self.err("replace default route", format!("via {via}"), &e))
    }
}

fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| Errno::from_raw(-code.get())),
        _ => None,
    }
}

/// The kernel's errno text, without rtnetlink's generic preamble.
fn cause(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io().to_string(),
        other => other.to_string(),
    }
}

fn to_link(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        up: msg.header.flags.contains(LinkFlags::Up),
        alias: None,
        kind: None,
        peer_nsid: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
            LinkAttribute::LinkNetNsId(id) => link.peer_nsid = Some(id),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// For IPv4, IFA_LOCAL is the interface's own address (IFA_ADDRESS is the
/// peer on point-to-point links); IPv6 only sends IFA_ADDRESS.
fn to_addr(msg: AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    for attr in msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(ip),
            AddressAttribute::Address(ip) => address = Some(ip),
            _ => {}
        }
    }
    local.or(address).map(|addr| Addr {
        index: msg.header.index,
        addr,
        prefix: msg.header.prefix_len,
    })
}

fn to_route4(msg: RouteMessage) -> Result<Route4, String> {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    // Tables above 255 only fit in RTA_TABLE; the header then says 252 (RT_TABLE_COMPAT).
    let mut table = u32::from(msg.header.table);
    for attr in msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(ip),
            RouteAttribute::Oif(index) => oif = Some(index),
            RouteAttribute::Table(id) => table = id,
            _ => {}
        }
    }
    let prefix = msg.header.destination_prefix_length;
    let dst = Ipv4Net::new(dst, prefix).map_err(|_| format!("kernel sent prefix length {prefix} for {dst}"))?;
    Ok(Route4 {
        dst,
        gateway,
        oif,
        table,
    })
}
