//! nf_tables over nfnetlink, for the few requests where starting `nft`
//! (a process that loads eight libraries before it says a word: 2-3 ms,
//! more on a busy host) would be most of the cost: the resolver's set
//! updates (`nft_set`), the kernel probe of a first setup, and the last
//! sandbox's look at the shared host table and its delete.
//!
//! Only requests of fixed shape are built here; rules stay `nft`'s job
//! (JSON in, the kernel's own checks, one place that renders them).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::libc;

use crate::error::{Error, Result};

pub const NETLINK_NETFILTER: libc::c_int = 12;
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
pub const NFT_MSG_DELTABLE: u16 = 2;
pub const NFT_MSG_GETSETELEM: u16 = 13;
pub const NFT_MSG_GETGEN: u16 = 16;
pub const NFPROTO_INET: u8 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_LIST_ELEM: u16 = 1;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_DATA_VALUE: u16 = 1;

/// A NETLINK_NETFILTER socket, bound to the network namespace of the
/// thread that opened it.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: AtomicU32,
}

impl Socket {
    /// Open one in the calling thread's network namespace. Err is the
    /// errno (EPROTONOSUPPORT: a kernel without nfnetlink).
    pub fn open() -> std::result::Result<Socket, i32> {
        // SAFETY: socket(2) with constant arguments; the result is
        // checked before being owned.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(last_errno());
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
        // SAFETY: setsockopt with a pointer to a live timeval of the size
        // given. A failure only leaves reads without a timeout.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Socket {
            fd,
            seq: AtomicU32::new(1),
        })
    }

    /// `n` fresh sequence numbers; returns the first.
    pub fn seqs(&self, n: u32) -> u32 {
        self.seq.fetch_add(n, Ordering::Relaxed)
    }

    /// Send `buf` (one message, or a batch) and wait for the
    /// acknowledgement of every sequence number in `acked`; the first
    /// error is the answer (the kernel aborts a batch at it).
    pub fn transact(&self, buf: &[u8], acked: &[u32]) -> std::result::Result<(), i32> {
        self.send(buf)?;
        let mut pending = acked.to_vec();
        let mut rbuf = vec![0u8; 8192];
        while !pending.is_empty() {
            for (typ, seq, body) in self.recv(&mut rbuf)? {
                if typ == NLMSG_ERROR {
                    let err = error_of(&body);
                    if err != 0 {
                        return Err(err);
                    }
                    pending.retain(|s| *s != seq);
                }
            }
        }
        Ok(())
    }

    /// Send a dump request and collect the payloads (after the nfgenmsg)
    /// of every message it answers, until NLMSG_DONE.
    pub fn dump(&self, buf: &[u8]) -> std::result::Result<Vec<Vec<u8>>, i32> {
        self.send(buf)?;
        let mut out = Vec::new();
        let mut rbuf = vec![0u8; 65536];
        loop {
            for (typ, _, body) in self.recv(&mut rbuf)? {
                match typ {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let err = error_of(&body);
                        if err != 0 {
                            return Err(err);
                        }
                    }
                    _ => out.push(body.get(4..).unwrap_or_default().to_vec()),
                }
            }
        }
    }

    fn send(&self, buf: &[u8]) -> std::result::Result<(), i32> {
        // SAFETY: a zeroed sockaddr_nl addressed to the kernel (pid 0).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: buf and `to` are live for the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(last_errno());
        }
        Ok(())
    }

    /// One datagram, split into (type, seq, payload after the header).
    fn recv(&self, rbuf: &mut [u8]) -> std::result::Result<Vec<(u16, u32, Vec<u8>)>, i32> {
        // SAFETY: rbuf is live and writable for its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), rbuf.as_mut_ptr().cast(), rbuf.len(), 0) };
        if n < 0 {
            return Err(last_errno());
        }
        let n = n as usize;
        let mut out = Vec::new();
        let mut off = 0usize;
        while off + 16 <= n {
            let len = u32_at(rbuf, off) as usize;
            let typ = u16::from_ne_bytes([rbuf[off + 4], rbuf[off + 5]]);
            let seq = u32_at(rbuf, off + 8);
            if len < 16 || off + len > n {
                break;
            }
            out.push((typ, seq, rbuf[off + 16..off + len].to_vec()));
            off += (len + 3) & !3;
        }
        Ok(out)
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The errno of an NLMSG_ERROR payload (0: an acknowledgement).
fn error_of(body: &[u8]) -> i32 {
    body.get(..4)
        .map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(libc::EIO)
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// An nf_tables message type.
pub fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// An nlmsghdr + nfgenmsg, then the attributes `body` appends.
pub fn msg(buf: &mut Vec<u8>, typ: u16, flags: u16, seq: u32, family: u8, body: impl FnOnce(&mut Vec<u8>)) {
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

/// A batch of `n` messages numbered from `first` + 1: BEGIN, what `body`
/// appends (given the first message's sequence number), END. `body`
/// returns the sequence numbers that ask for an acknowledgement. Take
/// `first` from [`Socket::seqs`]`(n + 2)`.
pub fn batch(first: u32, n: u32, body: impl FnOnce(&mut Vec<u8>, u32) -> Vec<u32>) -> (Vec<u8>, Vec<u32>) {
    let mut buf = Vec::with_capacity(256);
    msg(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        libc::NLM_F_REQUEST as u16,
        first,
        0,
        |_| {},
    );
    let acked = body(&mut buf, first + 1);
    msg(
        &mut buf,
        NFNL_MSG_BATCH_END,
        libc::NLM_F_REQUEST as u16,
        first + n + 1,
        0,
        |_| {},
    );
    (buf, acked)
}

pub fn attr(buf: &mut Vec<u8>, typ: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(data);
    pad(buf);
}

pub fn nested(buf: &mut Vec<u8>, typ: u16, body: impl FnOnce(&mut Vec<u8>)) {
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

pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// The attributes in `b`: (type without flags, payload).
pub fn attrs(b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 4 <= b.len() {
        let len = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
        let typ = u16::from_ne_bytes([b[off + 2], b[off + 3]]) & NLA_TYPE_MASK;
        if len < 4 || off + len > b.len() {
            break;
        }
        out.push((typ, &b[off + 4..off + len]));
        off += (len + 3) & !3;
    }
    out
}

/// An nf_tables request that failed, with the kernel's errno as cause.
pub fn nl_error(op: impl Into<String>, errno: i32) -> Error {
    Error::Nft {
        op: op.into(),
        cause: std::io::Error::from_raw_os_error(errno).to_string(),
    }
}

/// Whether the kernel answers nf_tables requests (asking makes it load
/// the module, as `nft` would): its ruleset generation, in this network
/// namespace.
pub fn probe() -> std::result::Result<(), String> {
    let sock = Socket::open().map_err(|e| format!("no netfilter netlink: {}", std::io::Error::from_raw_os_error(e)))?;
    let seq = sock.seqs(1);
    let mut buf = Vec::new();
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg(
        &mut buf,
        nft_type(NFT_MSG_GETGEN),
        flags,
        seq,
        libc::AF_UNSPEC as u8,
        |_| {},
    );
    sock.transact(&buf, &[seq]).map_err(|e| {
        format!(
            "the kernel does not answer nf_tables requests: {}",
            std::io::Error::from_raw_os_error(e)
        )
    })
}

/// The keys of the elements of set or map `set` in `inet <table>`, raw;
/// None when the table or the set is not there.
pub fn set_keys(table: &str, set: &str) -> Result<Option<Vec<Vec<u8>>>> {
    let op = || format!("list map inet {table} {set}");
    let sock = Socket::open().map_err(|e| nl_error(op(), e))?;
    let seq = sock.seqs(1);
    let mut buf = Vec::new();
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    msg(&mut buf, nft_type(NFT_MSG_GETSETELEM), flags, seq, NFPROTO_INET, |b| {
        attr(b, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
        attr(b, NFTA_SET_ELEM_LIST_SET, &cstr(set));
    });
    let msgs = match sock.dump(&buf) {
        Ok(m) => m,
        Err(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(nl_error(op(), e)),
    };
    let mut keys = Vec::new();
    for m in &msgs {
        for (t, list) in attrs(m) {
            if t != NFTA_SET_ELEM_LIST_ELEMENTS {
                continue;
            }
            for (_, elem) in attrs(list).into_iter().filter(|(t, _)| *t == NFTA_LIST_ELEM) {
                for (_, key) in attrs(elem).into_iter().filter(|(t, _)| *t == NFTA_SET_ELEM_KEY) {
                    keys.extend(
                        attrs(key)
                            .into_iter()
                            .filter(|(t, _)| *t == NFTA_DATA_VALUE)
                            .map(|(_, v)| v.to_vec()),
                    );
                }
            }
        }
    }
    Ok(Some(keys))
}

/// Delete `inet <table>` and everything in it, one transaction.
pub fn delete_table(table: &str) -> Result<()> {
    let op = || format!("delete table inet {table}");
    let sock = Socket::open().map_err(|e| nl_error(op(), e))?;
    let (buf, acked) = batch(sock.seqs(3), 1, |b, seq| {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        msg(b, nft_type(NFT_MSG_DELTABLE), flags, seq, NFPROTO_INET, |b| {
            attr(b, NFTA_TABLE_NAME, &cstr(table));
        });
        vec![seq]
    });
    sock.transact(&buf, &acked).map_err(|e| nl_error(op(), e))?;
    linger(sock);
    Ok(())
}

/// Close a socket that committed a delete off the caller's path. The
/// kernel frees what a commit deleted one RCU grace period later (15-30
/// ms), on a work queue; closing the socket waits for that work
/// (nf_tables' NETLINK_URELEASE handler flushes it), which is where `nft`
/// spends most of its time after a delete. Closed on a thread of its own,
/// the wait overlaps what the run does next, and by the time the process
/// exits (which waits for that thread) the grace period is mostly over.
fn linger(sock: Socket) {
    // A thread that cannot start: close here, and wait.
    let _ = std::thread::Builder::new()
        .name("nfnl-close".into())
        .spawn(move || drop(sock));
}

/// An interface name as a set key holds it (IFNAMSIZ bytes, NUL padded).
pub fn ifname_key(key: &[u8]) -> &[u8] {
    let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
    &key[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_read_back_as_written() {
        let mut b = Vec::new();
        attr(&mut b, NFTA_SET_ELEM_LIST_TABLE, &cstr("t"));
        nested(&mut b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
            nested(b, NFTA_LIST_ELEM, |b| {
                nested(b, NFTA_SET_ELEM_KEY, |b| attr(b, NFTA_DATA_VALUE, b"veth0\0\0\0"));
            });
        });
        let top = attrs(&b);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0], (NFTA_SET_ELEM_LIST_TABLE, &b"t\0"[..]));
        assert_eq!(top[1].0, NFTA_SET_ELEM_LIST_ELEMENTS, "the nested flag is masked off");
        let elem = attrs(top[1].1);
        let key = attrs(elem[0].1);
        let value = attrs(key[0].1);
        assert_eq!(ifname_key(value[0].1), b"veth0");
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end() {
        let (buf, acked) = batch(7, 1, |b, seq| {
            msg(b, nft_type(NFT_MSG_DELTABLE), 0, seq, NFPROTO_INET, |_| {});
            vec![seq]
        });
        let typ_at = |off: usize| u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        assert_eq!(typ_at(0), NFNL_MSG_BATCH_BEGIN);
        assert_eq!(typ_at(20), nft_type(NFT_MSG_DELTABLE));
        assert_eq!(typ_at(40), NFNL_MSG_BATCH_END);
        assert_eq!(acked, vec![8]);
        assert_eq!((u32_at(&buf, 8), u32_at(&buf, 28), u32_at(&buf, 48)), (7, 8, 9));
    }
}
