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
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::libc;

use super::nfnl::{self, attr, cstr, msg, nested, nft_type, nl_error, Socket};
use super::nfnl::{NFPROTO_INET, NFTA_DATA_VALUE, NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY};
use super::nfnl::{NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE};
use crate::error::{Error, Result};

const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DESTROYSETELEM: u16 = 30;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;

/// A NETLINK_NETFILTER socket bound to one namespace.
#[derive(Debug)]
pub struct SetWriter {
    sock: Socket,
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
            let sock = Socket::open().map_err(|e| {
                Error::io(
                    "open a netfilter netlink socket",
                    "/proc/self/ns/net",
                    std::io::Error::from_raw_os_error(e),
                )
            })?;
            Ok(SetWriter {
                sock,
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
        let n = if destroy { 2 } else { 1 };
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let (buf, acked) = nfnl::batch(self.sock.seqs(n + 2), n, |b, mut seq| {
            let mut acked = Vec::new();
            if destroy {
                let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
                msg(b, nft_type(NFT_MSG_DESTROYSETELEM), flags, seq, NFPROTO_INET, |b| {
                    elements(b, table, set, addrs, None)
                });
                acked.push(seq);
                seq += 1;
            }
            let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE) as u16;
            msg(b, nft_type(NFT_MSG_NEWSETELEM), flags, seq, NFPROTO_INET, |b| {
                elements(b, table, set, addrs, Some(ms))
            });
            acked.push(seq);
            acked
        });
        self.sock.transact(&buf, &acked)
    }
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
            NFTA_SET_ELEM_LIST_ELEMENTS | nfnl::NLA_F_NESTED
        );
        assert!(b.windows(4).any(|w| w == [1, 2, 3, 4]));
        assert!(b.windows(8).any(|w| w == 1000u64.to_be_bytes()));
    }
}
