//! Benchmark (not a test): what our resolver adds to a lookup. In a fake
//! host (tests/common) with a fake upstream in the fake internet, a
//! sandbox whose policy names `bench.test` asks:
//!
//! - the upstream directly, from the fake host (the baseline);
//! - our resolver, from inside the sandbox (forward + nft set update);
//! - our resolver for a name not in the policy (NXDOMAIN, no upstream);
//!
//! one question at a time (latency: mean, p50, p99), then from several
//! threads at once (lookups per second); and the nft set update alone
//! (nfnetlink, one batch per answer).
//!
//!     sudo cargo bench --bench resolver [-- LOOKUPS]

#[path = "../common/mod.rs"]
mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::dns::{zone, FakeDns};
use common::{FakeHost, Ns, HOST_IP};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

const UPSTREAM: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 55);

fn question(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(
        Name::from_str(&format!("{name}.")).expect("name"),
        RecordType::A,
    ));
    m.to_vec().expect("encode")
}

/// `n` lookups of `name` at `server`, one at a time, from one socket:
/// each one's duration.
fn lookups(server: Ipv4Addr, name: &str, n: usize) -> Vec<Duration> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let mut buf = [0u8; 2048];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let q = question(name, i as u16);
        let t = Instant::now();
        s.send_to(&q, (server, 53)).expect("send");
        s.recv_from(&mut buf).expect("an answer");
        out.push(t.elapsed());
    }
    out
}

fn summary(what: &str, mut d: Vec<Duration>) -> f64 {
    d.sort();
    let us = |x: Duration| x.as_secs_f64() * 1e6;
    let mean = d.iter().map(|x| us(*x)).sum::<f64>() / d.len() as f64;
    println!(
        "{what:<44} mean {mean:>8.1} µs   p50 {:>8.1} µs   p99 {:>8.1} µs   ({} lookups)",
        us(d[d.len() / 2]),
        us(d[d.len() * 99 / 100]),
        d.len()
    );
    mean
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(2000);
    let Some(host) = FakeHost::new() else {
        eprintln!("run it as root: sudo cargo bench --bench resolver");
        return;
    };
    let addrs: Vec<Ipv4Addr> = (1..=8).map(|i| Ipv4Addr::new(203, 0, 113, 200 + i)).collect();
    let _dns = FakeDns::start(&host, UPSTREAM, vec![zone("bench.test", &addrs, 300, true)]);
    let policy = host.root().join("bench-policy.toml");
    std::fs::write(
        &policy,
        "description = \"bench\"\n[[destination]]\nto = \"bench.test\"\nprotocol = \"tcp\"\nports = [443]\nwhy = \"bench\"\n",
    )
    .expect("policy");
    host.setup_ok(&["--policy", policy.to_str().expect("utf8"), "--dns", "203.0.113.55"]);

    println!("resolver benchmark ({n} lookups each)");
    let base = summary(
        "upstream directly (from the host)",
        host.in_ns(Ns::Host, move || lookups(UPSTREAM, "bench.test", n)),
    );
    let ours = summary(
        "through our resolver (allowed name)",
        host.in_ns(Ns::Sandbox, move || lookups(HOST_IP, "bench.test", n)),
    );
    summary(
        "through our resolver (denied name, NXDOMAIN)",
        host.in_ns(Ns::Sandbox, move || lookups(HOST_IP, "not-listed.test", n)),
    );
    println!("added latency per allowed lookup: {:.1} µs", ours - base);

    // The set update alone: one nfnetlink batch (destroy + add) per answer.
    let netns = host.sandbox_netns();
    let writer = host.in_ns(Ns::Host, move || {
        sandbox::sys::nft_set::SetWriter::open_in(&netns).expect("open")
    });
    let t = Instant::now();
    for i in 0..n {
        let a = addrs[i % addrs.len()];
        writer
            .add("sandbox_sandbox", "host_1", &[a], Duration::from_secs(300))
            .expect("add");
    }
    println!(
        "nft set update alone (nfnetlink batch)        mean {:>8.1} µs",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );

    for threads in [1usize, 4, 16] {
        let per = n / threads;
        let t = Instant::now();
        let total: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| s.spawn(|| host.in_ns(Ns::Sandbox, move || lookups(HOST_IP, "bench.test", per).len())))
                .collect();
            hs.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        println!(
            "throughput, {threads:>2} client thread(s): {:>8.0} lookups/s",
            total as f64 / t.elapsed().as_secs_f64()
        );
    }
    host.disable_ok();
}
