//! Adding addresses, each with its own timeout, to an nft set of ours,
//! straight over nfnetlink: the resolver does it before every answer it
//! returns, where starting `nft` (a few milliseconds) each time would
//! be most of a lookup's cost.
//!
//! A netlink socket stays bound to the network namespace it was opened in
//! (DESIGN.md, pitfalls): [`SetWriter::open_in`] opens it on a thread that
//! entered the sandbox's namespace, and the socket is then used from any
//! thread of the (host-side) resolver.
//!
//! One batch per update: for each address, "destroy element" (absent is
//! fine; kernel 6.3 and later) then "add element" with the new timeout, so
//! an address answered again gets its timeout renewed, never shortened to
//! what an earlier answer left. On an older kernel without "destroy" the
//! batch is retried as "add" alone (a live element then keeps its timeout
//! until it expires and the next answer adds it again).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DESTROYSETELEM: u16 = 30;
const NFPROTO_INET: u8 = 1;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;

/// A NETLINK_NETFILTER socket bound to one namespace.
#[derive(Debug)]
pub struct SetWriter {
    fd: OwnedFd,
    seq: AtomicU32,
    /// The kernel knows "destroy element" (until it says otherwise).
    destroy: AtomicBool,
    /// Serialises request and acknowledgement on the one socket.
    lock: std::sync::Mutex<()>,
}

impl SetWriter {
    /// Open the socket inside the namespace at `netns` (a bind-mounted
    /// namespace file).
    pub fn open_in(netns: &Path) -> Result<SetWriter> {
        crate::sys::netns::run_in(netns, || {
            // SAFETY: socket(2) with constant arguments; the result is
            // checked before being owned.
            let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
            if fd < 0 {
                return Err(Error::io(
                    "open a netfilter netlink socket",
                    "/proc/self/ns/net",
                    std::io::Error::last_os_error(),
                ));
            }
            // SAFETY: fd is a fresh, valid descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
            // SAFETY: setsockopt with a pointer to a live timeval of the
            // size given.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&timeout as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
            }
            Ok(SetWriter {
                fd,
                seq: AtomicU32::new(1),
                destroy: AtomicBool::new(true),
                lock: std::sync::Mutex::new(()),
            })
        })
    }

    /// Add `addrs` to `inet <table> <set>`, each to expire after `ttl`.
    pub fn add(&self, table: &str, set: &str, addrs: &[Ipv4Addr], ttl: Duration) -> Result<()> {
        if addrs.is_empty() {
            return Ok(());
        }
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let op = || format!("add {} address(es) to set inet {table} {set}", addrs.len());
        if self.destroy.load(Ordering::Relaxed) {
            match self.batch(table, set, addrs, ttl, true) {
                Ok(()) => return Ok(()),
                // EINVAL/EOPNOTSUPP: a kernel before "destroy" (6.3).
                Err(e) if e == libc::EINVAL || e == libc::EOPNOTSUPP => self.destroy.store(false, Ordering::Relaxed),
                Err(e) => return Err(nl_error(op(), e)),
            }
        }
        self.batch(table, set, addrs, ttl, false).map_err(|e| nl_error(op(), e))
    }

    /// One batch; Err is the first errno the kernel answered.
    fn batch(
        &self,
        table: &str,
        set: &str,
        addrs: &[Ipv4Addr],
        ttl: Duration,
        destroy: bool,
    ) -> std::result::Result<(), i32> {
        let mut buf = Vec::with_capacity(256);
        let first = self.seq.fetch_add(4, Ordering::Relaxed);
        let mut seq = first;
        msg(
            &mut buf,
            NFNL_MSG_BATCH_BEGIN,
            libc::NLM_F_REQUEST as u16,
            seq,
            0,
            |_| {},
        );
        let mut acked = Vec::new();
        if destroy {
            seq += 1;
            let t = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DESTROYSETELEM;
            msg(
                &mut buf,
                t,
                (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
                seq,
                NFPROTO_INET,
                |b| elements(b, table, set, addrs, None),
            );
            acked.push(seq);
        }
        seq += 1;
        let t = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM;
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE) as u16;
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        msg(&mut buf, t, flags, seq, NFPROTO_INET, |b| {
            elements(b, table, set, addrs, Some(ms))
        });
        acked.push(seq);
        seq += 1;
        msg(&mut buf, NFNL_MSG_BATCH_END, libc::NLM_F_REQUEST as u16, seq, 0, |_| {});

        let fd = self.fd.as_raw_fd();
        // SAFETY: a zeroed sockaddr_nl addressed to the kernel (pid 0).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: buf and `to` are live for the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
        }
        // One acknowledgement per message that asked for one; the first
        // error is the answer (the kernel aborts the batch at it).
        let mut pending = acked;
        let mut rbuf = vec![0u8; 8192];
        while !pending.is_empty() {
            // SAFETY: rbuf is live and writable for its length.
            let n = unsafe { libc::recv(fd, rbuf.as_mut_ptr().cast(), rbuf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(rbuf[off..off + 4].try_into().unwrap_or_default()) as usize;
                let typ = u16::from_ne_bytes(rbuf[off + 4..off + 6].try_into().unwrap_or_default());
                let mseq = u32::from_ne_bytes(rbuf[off + 8..off + 12].try_into().unwrap_or_default());
                if len < 16 || off + len > n {
                    break;
                }
                if typ == NLMSG_ERROR && len >= 20 {
                    let err = i32::from_ne_bytes(rbuf[off + 16..off + 20].try_into().unwrap_or_default());
                    if err != 0 {
                        return Err(-err);
                    }
                    pending.retain(|s| *s != mseq);
                }
                off += (len + 3) & !3;
            }
        }
        Ok(())
    }
}

fn nl_error(op: String, errno: i32) -> Error {
    Error::Nft {
        op,
        cause: std::io::Error::from_raw_os_error(errno).to_string(),
    }
}

/// An nlmsghdr + nfgenmsg, then the attributes `body` appends.
fn msg(buf: &mut Vec<u8>, typ: u16, flags: u16, seq: u32, family: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version 0, res_id (the subsystem, for batches).
    buf.push(family);
    buf.push(0);
    let res_id = if typ == NFNL_MSG_BATCH_BEGIN || typ == NFNL_MSG_BATCH_END {
        NFNL_SUBSYS_NFTABLES
    } else {
        0
    };
    buf.extend_from_slice(&res_id.to_be_bytes());
    body(buf);
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn attr(buf: &mut Vec<u8>, typ: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(data);
    pad(buf);
}

fn nested(buf: &mut Vec<u8>, typ: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(typ | NLA_F_NESTED).to_ne_bytes());
    body(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn pad(buf: &mut Vec<u8>) {
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn elements(b: &mut Vec<u8>, table: &str, set: &str, addrs: &[Ipv4Addr], timeout_ms: Option<u64>) {
    attr(b, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    attr(b, NFTA_SET_ELEM_LIST_SET, &cstr(set));
    nested(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
        for a in addrs {
            nested(b, NFTA_LIST_ELEM, |b| {
                nested(b, NFTA_SET_ELEM_KEY, |b| attr(b, NFTA_DATA_VALUE, &a.octets()));
                if let Some(ms) = timeout_ms {
                    attr(b, NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_attributes_are_laid_out_as_the_kernel_reads_them() {
        let mut b = Vec::new();
        elements(&mut b, "t", "s", &[Ipv4Addr::new(1, 2, 3, 4)], Some(1000));
        // table "t\0" (4+2 padded to 8), set (8), elements nest.
        assert_eq!(&b[..8], &[6, 0, 1, 0, b't', 0, 0, 0]);
        assert_eq!(&b[8..16], &[6, 0, 2, 0, b's', 0, 0, 0]);
        let list_len = u16::from_ne_bytes([b[16], b[17]]) as usize;
        assert_eq!(list_len, b.len() - 16);
        assert_eq!(
            u16::from_ne_bytes([b[18], b[19]]),
            NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED
        );
        assert!(b.windows(4).any(|w| w == [1, 2, 3, 4]));
        assert!(b.windows(8).any(|w| w == 1000u64.to_be_bytes()));
    }
}
