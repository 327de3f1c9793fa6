//! A fake upstream DNS server for the resolver tests (hickory-proto, UDP
//! and TCP), listening at an address of the fake internet, and a small
//! DNS client to ask from inside a namespace.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{rdata::A, Name, RData, Record, RecordType};

use super::{FakeHost, Ns};

/// One name the fake server knows.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: &'static str,
    pub addrs: Vec<Ipv4Addr>,
    pub ttl: u32,
    /// Answer one address per query, the next each time (addresses that
    /// rotate on every query); otherwise all of them.
    pub rotate: bool,
}

pub fn zone(name: &'static str, addrs: &[Ipv4Addr], ttl: u32, rotate: bool) -> Zone {
    Zone {
        name,
        addrs: addrs.to_vec(),
        ttl,
        rotate,
    }
}

/// The fake server; stops when dropped.
pub struct FakeDns {
    stop: Arc<AtomicBool>,
    /// Questions asked, by name.
    pub asked: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct State {
    zones: Vec<Zone>,
    next: Mutex<BTreeMap<String, usize>>,
    asked: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl State {
    fn answer(&self, req: &Message) -> Message {
        let mut m = Message::new();
        m.set_id(req.id())
            .set_message_type(MessageType::Response)
            .set_recursion_desired(req.recursion_desired())
            .set_recursion_available(true);
        m.add_queries(req.queries().iter().cloned());
        let Some(q) = req.queries().first() else {
            m.set_response_code(ResponseCode::FormErr);
            return m;
        };
        let name = q.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
        *self.asked.lock().expect("lock").entry(name.clone()).or_default() += 1;
        let Some(z) = self.zones.iter().find(|z| z.name == name) else {
            m.set_response_code(ResponseCode::NXDomain);
            return m;
        };
        if q.query_type() != RecordType::A {
            return m;
        }
        let addrs: Vec<Ipv4Addr> = if z.rotate {
            let mut next = self.next.lock().expect("lock");
            let i = next.entry(name.clone()).or_default();
            let a = z.addrs[*i % z.addrs.len()];
            *i += 1;
            vec![a]
        } else {
            z.addrs.clone()
        };
        for a in addrs {
            m.add_answer(Record::from_rdata(q.name().clone(), z.ttl, RData::A(A(a))));
        }
        m
    }
}

impl FakeDns {
    /// Serve `zones` at `addr` (UDP and TCP port 53) in the fake internet;
    /// `addr` is added to its loopback.
    pub fn start(host: &FakeHost, addr: Ipv4Addr, zones: Vec<Zone>) -> FakeDns {
        host.ip(Ns::Internet, &["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        let at = SocketAddr::from((addr, 53));
        let (udp, tcp) = host.in_ns(Ns::Internet, move || {
            (
                UdpSocket::bind(at).expect("bind the fake DNS (udp)"),
                TcpListener::bind(at).expect("bind the fake DNS (tcp)"),
            )
        });
        let asked = Arc::new(Mutex::new(BTreeMap::new()));
        let state = Arc::new(State {
            zones,
            next: Mutex::new(BTreeMap::new()),
            asked: asked.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(req) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    let out = state.answer(&req).to_vec().expect("encode");
                    let _ = udp.send_to(&out, from);
                }
            });
        }
        tcp.set_nonblocking(true).expect("nonblocking");
        {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                            let Some(req) = read_framed(&mut s) else { continue };
                            let out = state.answer(&req).to_vec().expect("encode");
                            let _ = write_framed(&mut s, &out);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
        }
        FakeDns { stop, asked }
    }

    pub fn asked(&self, name: &str) -> u64 {
        self.asked.lock().expect("lock").get(name).copied().unwrap_or(0)
    }
}

fn read_framed(s: &mut TcpStream) -> Option<Message> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).ok()?;
    Message::from_vec(&buf).ok()
}

fn write_framed(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    s.write_all(&out)
}

/// What a lookup got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: ResponseCode,
    pub addrs: Vec<Ipv4Addr>,
    pub ttls: Vec<u32>,
}

fn question(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(0x5a5a).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_str(&format!("{name}.")).expect("name"), qtype));
    m
}

fn read_answer(m: &Message) -> Answer {
    let mut addrs = Vec::new();
    let mut ttls = Vec::new();
    for r in m.answers() {
        if let RData::A(a) = r.data() {
            addrs.push(a.0);
            ttls.push(r.ttl());
        }
    }
    Answer {
        code: m.response_code(),
        addrs,
        ttls,
    }
}

/// Ask `server` for `name` (type `qtype`) over UDP from `ns`; Err says why
/// nothing came back.
pub fn ask(host: &FakeHost, ns: Ns, server: Ipv4Addr, name: &str, qtype: RecordType) -> Result<Answer, String> {
    let q = question(name, qtype).to_vec().expect("encode");
    host.in_ns(ns, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        s.send_to(&q, (server, 53)).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        Message::from_vec(&buf[..n])
            .map(|m| read_answer(&m))
            .map_err(|e| e.to_string())
    })
}

/// The same over TCP.
pub fn ask_tcp(host: &FakeHost, ns: Ns, server: Ipv4Addr, name: &str) -> Result<Answer, String> {
    let q = question(name, RecordType::A).to_vec().expect("encode");
    host.in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::from((server, 53)), Duration::from_secs(3))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        write_framed(&mut s, &q).map_err(|e| e.to_string())?;
        read_framed(&mut s)
            .map(|m| read_answer(&m))
            .ok_or_else(|| "no answer".to_string())
    })
}

/// An A lookup through the sandbox's resolver that must succeed.
#[track_caller]
pub fn resolve(host: &FakeHost, name: &str) -> Vec<Ipv4Addr> {
    let a = ask(host, Ns::Sandbox, super::HOST_IP, name, RecordType::A)
        .unwrap_or_else(|e| panic!("lookup of {name} through the sandbox's resolver: {e}"));
    assert_eq!(a.code, ResponseCode::NoError, "{name}: {a:?}");
    assert!(!a.addrs.is_empty(), "{name}: no addresses: {a:?}");
    a.addrs
}
