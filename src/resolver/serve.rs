//! The resolver's sockets and threads: [`UDP_WORKERS`] threads share the
//! UDP socket, each with its own upstream socket; TCP gets a thread per
//! connection (at most [`MAX_TCP`] at once). Every question is answered
//! after the nft sets hold the addresses in the answer, never before.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use ipnet::Ipv4Net;

use super::answer::{self, Decision, Upstream};
use super::stats::Shared;
use super::Config;
use crate::error::{Error, Result};
use crate::policy::HostPattern;
use crate::sys::nft_set::SetWriter;

pub const UDP_WORKERS: usize = 4;
pub const MAX_TCP: usize = 64;
/// How long one upstream gets to answer before the next is asked.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_IDLE: Duration = Duration::from_secs(10);

struct Ctx {
    cfg: Config,
    rules: Vec<(HostPattern, String)>,
    forbidden: Vec<Ipv4Net>,
    /// The socket, and which namespace (device, inode of the namespace
    /// file) it was opened in.
    writer: Mutex<(Arc<SetWriter>, Option<NsId>)>,
    stats: Shared,
}

/// Bind, drop what is no longer needed, serve forever.
pub fn serve(cfg: Config, stats_path: PathBuf) -> Result<()> {
    let ns_id = namespace_id(&cfg.netns);
    let writer = SetWriter::open_in(&cfg.netns)?;
    let addr = SocketAddr::from((cfg.listen, cfg.port));
    let udp = UdpSocket::bind(addr).map_err(|e| bind_error(addr, "UDP", e))?;
    let tcp = TcpListener::bind(addr).map_err(|e| bind_error(addr, "TCP", e))?;
    drop_privileges();
    // Setup (under --no-systemd) waits for this line on our standard
    // output; nothing else is ever written there (the log is stderr).
    {
        use std::io::Write as _;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    let stats = Shared::default();
    stats.keep_written(stats_path);
    watch_namespace(cfg.netns.clone(), ns_id, cfg.name.clone());
    let ctx = Arc::new(Ctx {
        rules: cfg.patterns(),
        forbidden: super::not_public(),
        writer: Mutex::new((Arc::new(writer), ns_id)),
        cfg,
        stats,
    });
    eprintln!(
        "resolver {}: listening on {addr} (UDP, TCP); upstreams {:?}; {} name rule(s){}",
        ctx.cfg.name,
        ctx.cfg.upstreams,
        ctx.rules.len(),
        if ctx.cfg.audit { "; audit mode" } else { "" }
    );
    let mut threads = Vec::new();
    for _ in 0..UDP_WORKERS {
        let sock = udp.try_clone().map_err(|e| bind_error(addr, "UDP", e))?;
        let ctx = ctx.clone();
        threads.push(std::thread::spawn(move || udp_worker(&ctx, &sock)));
    }
    let open = Arc::new(AtomicUsize::new(0));
    for conn in tcp.incoming() {
        let Ok(stream) = conn else { continue };
        if open.load(Ordering::Relaxed) >= MAX_TCP {
            continue; // dropped: the client retries or uses UDP
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (ctx, open) = (ctx.clone(), open.clone());
        std::thread::spawn(move || {
            tcp_conn(&ctx, stream);
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn bind_error(addr: SocketAddr, proto: &str, e: std::io::Error) -> Error {
    Error::host(
        format!("resolver on {addr} ({proto})"),
        format!("cannot listen: {e}"),
        "is another DNS server bound to the host IP (or to 0.0.0.0:53)? Stop it or bind it elsewhere; see README, Troubleshooting",
    )
}

/// Keep only CAP_NET_ADMIN (the netlink socket checks it on every send):
/// the namespace was entered and port 53 bound already.
fn drop_privileges() {
    use caps::{CapSet, Capability};
    let keep: caps::CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
    let bounding = caps::read(None, CapSet::Bounding).unwrap_or_default();
    for c in bounding.difference(&keep) {
        let _ = caps::drop(None, CapSet::Bounding, *c);
    }
    let none = caps::CapsHashSet::new();
    for (set, want) in [
        (CapSet::Inheritable, &none),
        (CapSet::Effective, &keep),
        (CapSet::Permitted, &keep),
    ] {
        if let Err(e) = caps::set(None, set, want) {
            eprintln!("resolver: could not drop capabilities ({set:?}): {e}");
        }
    }
}

fn udp_worker(ctx: &Ctx, sock: &UdpSocket) {
    let up = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("resolver: cannot open an upstream socket: {e}");
            return;
        }
    };
    let _ = up.set_read_timeout(Some(UPSTREAM_TIMEOUT));
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Some(out) = handle(ctx, &buf[..n], from, Some(&up)) {
            let _ = sock.send_to(&out, from);
        }
    }
}

fn tcp_conn(ctx: &Ctx, mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(TCP_IDLE));
    let from = s
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    loop {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if s.read_exact(&mut msg).is_err() {
            return;
        }
        let Some(out) = handle(ctx, &msg, from, None) else {
            return;
        };
        let Ok(n) = u16::try_from(out.len()) else { return };
        let mut framed = n.to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        if s.write_all(&framed).is_err() {
            return;
        }
    }
}

/// One question in, one answer out (None: not a question; dropped).
/// `up`: the worker's UDP socket for upstream; None asks over TCP.
fn handle(ctx: &Ctx, bytes: &[u8], from: SocketAddr, up: Option<&UdpSocket>) -> Option<Vec<u8>> {
    let req = Message::from_vec(bytes).ok()?;
    if req.message_type() != MessageType::Query {
        return None;
    }
    let reply = match req.queries() {
        [q] => {
            let name = answer::qname(q);
            match answer::decide(&ctx.rules, ctx.cfg.audit, &name, q.query_type()) {
                Decision::Deny => {
                    let mut nth = 0;
                    ctx.stats.update(|s| {
                        s.deny(&name);
                        nth = s.denied.get(&name).copied().unwrap_or(0);
                    });
                    if nth.is_power_of_two() || nth % 1000 == 0 {
                        eprintln!(
                            "resolver {}: denied {name} ({}) from {from}: not in the policy (NXDOMAIN; refusal #{nth} of this name)",
                            ctx.cfg.name,
                            q.query_type()
                        );
                    }
                    answer::reply(&req, ResponseCode::NXDomain)
                }
                Decision::Empty => answer::reply(&req, ResponseCode::NoError),
                Decision::Forward { sets } => forward(ctx, &req, &name, &sets, up),
            }
        }
        _ => answer::reply(&req, ResponseCode::FormErr),
    };
    reply.to_vec().ok()
}

fn forward(ctx: &Ctx, req: &Message, name: &str, sets: &[String], up: Option<&UdpSocket>) -> Message {
    let Some(resp) = ask_upstreams(ctx, req, up) else {
        return answer::reply(req, ResponseCode::ServFail);
    };
    let cfg = &ctx.cfg;
    match answer::inspect(&resp, &ctx.forbidden, &cfg.private_ok, cfg.ttl_floor, cfg.ttl_cap) {
        Upstream::Nothing => answer::relay(req, resp, cfg.ttl_cap),
        Upstream::Rebinding(ip) => {
            ctx.stats.update(|s| s.rebind(name));
            eprintln!(
                "resolver {}: refused the answer for {name}: {ip} is in a private, loopback, link-local or metadata range the policy does not name (DNS rebinding)",
                cfg.name
            );
            answer::reply(req, ResponseCode::Refused)
        }
        Upstream::Addresses { addrs, ttl } => {
            for set in sets {
                if let Err(e) = add_to_set(ctx, set, &addrs, ttl) {
                    eprintln!("resolver {}: {name}: {e}", cfg.name);
                    return answer::reply(req, ResponseCode::ServFail);
                }
            }
            ctx.stats.update(|s| s.answer(name, &addrs));
            answer::relay(req, resp, ttl)
        }
    }
}

/// A namespace: device and inode of its file.
pub type NsId = (u64, u64);

/// The namespace a bind-mounted namespace file refers to now.
pub fn namespace_id(path: &std::path::Path) -> Option<NsId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Exit (status [`NAMESPACE_CHANGED`]) once the namespace at the path is
/// another one than ours: our socket would write into the old one, which
/// it keeps alive, and having dropped CAP_SYS_ADMIN we cannot enter the new
/// one. systemd restarts the unit; under `--no-systemd` the next setup
/// (which re-made the namespace) starts a new resolver.
fn watch_namespace(path: PathBuf, opened: Option<NsId>, name: String) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        if namespace_id(&path) != opened {
            eprintln!(
                "resolver {name}: the namespace at {} is not the one I entered: exiting to be started in the new one",
                path.display()
            );
            std::process::exit(NAMESPACE_CHANGED);
        }
    });
}

/// The exit status when the namespace changed under the resolver.
pub const NAMESPACE_CHANGED: i32 = 75;

/// Add to the set; refused (SERVFAIL) when the namespace at the path is
/// not ours any more (see [`watch_namespace`]).
fn add_to_set(ctx: &Ctx, set: &str, addrs: &[Ipv4Addr], ttl: u32) -> Result<()> {
    let ttl = Duration::from_secs(u64::from(ttl));
    let (writer, opened) = ctx.writer.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if namespace_id(&ctx.cfg.netns) != opened {
        return Err(Error::host(
            format!("namespace {}", ctx.cfg.netns.display()),
            "is not the one the resolver entered",
            "the resolver exits and is started anew (systemd, or the next setup)",
        ));
    }
    writer.add(&ctx.cfg.table, set, addrs, ttl)
}

/// The question as we ask it upstream: a fresh id, recursion desired.
fn upstream_query(req: &Message) -> Message {
    let mut id = [0u8; 2];
    let _ = getrandom::fill(&mut id);
    let mut m = Message::new();
    m.set_id(u16::from_be_bytes(id))
        .set_message_type(MessageType::Query)
        .set_op_code(req.op_code())
        .set_recursion_desired(true);
    m.add_queries(req.queries().iter().cloned());
    m
}

fn ask_upstreams(ctx: &Ctx, req: &Message, up: Option<&UdpSocket>) -> Option<Message> {
    let q = upstream_query(req);
    let bytes = q.to_vec().ok()?;
    for server in &ctx.cfg.upstreams {
        let to = SocketAddr::from((*server, 53));
        let got = match up {
            Some(sock) => ask_udp(sock, to, &q, &bytes).and_then(|m| {
                if m.truncated() {
                    ask_tcp(to, &q, &bytes)
                } else {
                    Some(m)
                }
            }),
            None => ask_tcp(to, &q, &bytes),
        };
        if got.is_some() {
            return got;
        }
    }
    None
}

fn answers(q: &Message, m: &Message) -> bool {
    m.id() == q.id() && m.message_type() == MessageType::Response && m.queries() == q.queries()
}

fn ask_udp(sock: &UdpSocket, to: SocketAddr, q: &Message, bytes: &[u8]) -> Option<Message> {
    sock.send_to(bytes, to).ok()?;
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + UPSTREAM_TIMEOUT;
    while std::time::Instant::now() < deadline {
        let (n, from) = sock.recv_from(&mut buf).ok()?;
        if from != to {
            continue;
        }
        match Message::from_vec(&buf[..n]) {
            Ok(m) if answers(q, &m) => return Some(m),
            _ => continue, // a late answer to an earlier question, or junk
        }
    }
    None
}

fn ask_tcp(to: SocketAddr, q: &Message, bytes: &[u8]) -> Option<Message> {
    let mut s = TcpStream::connect_timeout(&to, UPSTREAM_TIMEOUT).ok()?;
    s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    let mut framed = u16::try_from(bytes.len()).ok()?.to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).ok()?;
    Message::from_vec(&buf).ok().filter(|m| answers(q, m))
}
