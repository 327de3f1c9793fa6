//! Benchmark (not a test): does a sandbox cost more when there are many?
//! Creates N sandboxes one after another with the real binary (N = 200,
//! or SANDBOX_BENCH_N, or the first argument), then destroys them, and
//! prints the time of every create and destroy, and the TCP connect
//! latency from the first sandbox to its host IP and over the host's
//! loopback at N = 1, 50, 100, 200 (those not above N are skipped).
//! Targets (issue 13): the Nth create at most 1.5x the first; connect
//! latency at 200 at most 1.2x at 1, on both paths. It prints figures and
//! never asserts on them.
//!
//!     sudo cargo bench --bench scale [-- N]
//!
//! Everything runs in a throwaway network + mount namespace with a private
//! /run and a temp `--root`: the real host's network, /etc and /run are
//! never touched. Each create is light: `--policy strict`, `--no-systemd`,
//! `--no-auto-pair`; the accounts are made up front, so /etc/passwd does
//! not grow with N and only what sandboxes share is measured.

#[path = "throwaway.rs"]
mod throwaway;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

const GATEWAY_PORT: u16 = 18970;
const LOOPBACK_PORT: u16 = 7001;
const CHECKPOINTS: [usize; 4] = [1, 50, 100, 200];
/// Connects per latency figure (the median is printed).
const CONNECTS: usize = 2000;
/// System accounts (below UID_MIN 1000): setup adopts no person's account.
const FIRST_UID: u32 = 600;

fn main() -> Result<(), String> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .or_else(|| std::env::var("SANDBOX_BENCH_N").ok().and_then(|v| v.parse().ok()))
        .unwrap_or(200);
    throwaway::enter("scale")?;

    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    seed(root.path(), n)?;
    let root_s = root.path().to_str().ok_or("temp path is not UTF-8")?.to_string();
    serve(None, SocketAddr::from((Ipv4Addr::UNSPECIFIED, GATEWAY_PORT)))?;
    serve(None, SocketAddr::from((Ipv4Addr::LOCALHOST, LOOPBACK_PORT)))?;
    // The yardstick: loopback in a namespace with no rules at all, measured
    // in the same rounds, so the machine's load (shared, noisy) shows there
    // too and the ratios to it are what the rules cost.
    run("ip", &["netns", "add", "benchctl"])?;
    run("ip", &["-n", "benchctl", "link", "set", "lo", "up"])?;
    let control = Path::new("/run/netns/benchctl").to_path_buf();
    serve(Some(&control), SocketAddr::from((Ipv4Addr::LOCALHOST, LOOPBACK_PORT)))?;

    let bin = env!("CARGO_BIN_EXE_sandbox");
    let mut creates = Vec::with_capacity(n);
    let mut latency: Vec<(usize, [f64; 3])> = Vec::new();
    for i in 1..=n {
        let (host_ip, sandbox_ip) = addresses(i);
        let name = name(i);
        let home = format!("/home/{name}");
        let args = [
            "setup",
            "--root",
            &root_s,
            "--non-interactive",
            "--no-systemd",
            "--no-auto-pair",
            "--policy",
            "strict",
            "--name",
            &name,
            "--host-ip",
            &host_ip.to_string(),
            "--sandbox-ip",
            &sandbox_ip.to_string(),
            "--sandbox-home",
            &home,
        ];
        let t = Instant::now();
        let out = Command::new(bin).args(args).output().map_err(|e| e.to_string())?;
        creates.push(t.elapsed());
        if !out.status.success() {
            return Err(format!(
                "create {i} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if CHECKPOINTS.contains(&i) || (i == n && !CHECKPOINTS.contains(&n)) {
            let netns = root.path().join("run/netns").join(format!("{}0", self::name(1)));
            let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, LOOPBACK_PORT));
            let medians = connect_latency([
                (Some(netns), SocketAddr::from((addresses(1).0, GATEWAY_PORT))),
                (None, lo),
                (Some(control.clone()), lo),
            ])?;
            latency.push((i, medians));
        }
    }
    let mut destroys = Vec::with_capacity(n);
    // First made, first destroyed: CI jobs end in any order, and this way
    // the table is the fullest for the earliest destroys.
    for i in 1..=n {
        let name = name(i);
        let args = [
            "setup",
            "--root",
            &root_s,
            "--non-interactive",
            "--disable",
            "--name",
            &name,
        ];
        let t = Instant::now();
        let out = Command::new(bin).args(args).output().map_err(|e| e.to_string())?;
        destroys.push(t.elapsed());
        if !out.status.success() {
            return Err(format!("destroy {i} failed:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    let left = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map_err(|e| e.to_string())?;

    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    println!(
        "sandboxes: {n} (policy strict, --no-systemd, --no-auto-pair), temp root {}",
        root_s
    );
    print_series("create (ms), in order", &creates);
    print_series("destroy (ms), first made first", &destroys);
    let median = |v: &[Duration]| {
        let mut s: Vec<f64> = v.iter().map(ms).collect();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(0.0)
    };
    let first = creates.first().map(ms).unwrap_or(0.0);
    let last = creates.last().map(ms).unwrap_or(0.0);
    let early = median(&creates[..creates.len().min(10)]);
    let late = median(&creates[creates.len().saturating_sub(10)..]);
    println!(
        "create: 1st {first:.1} ms, {n}th {last:.1} ms ({:.2}x; target <= 1.5x); median of the first 10 {early:.1}, of the last 10 {late:.1} ({:.2}x)",
        last / first,
        late / early
    );
    println!(
        "destroy: 1st {:.1} ms, {n}th {:.1} ms; median of the first 10 {:.1}, of the last 10 {:.1}",
        destroys.first().map(ms).unwrap_or(0.0),
        destroys.last().map(ms).unwrap_or(0.0),
        median(&destroys[..destroys.len().min(10)]),
        median(&destroys[destroys.len().saturating_sub(10)..])
    );
    println!("\nTCP connect latency, median of {CONNECTS} per path, paths interleaved (us):");
    println!(
        "{:>6} {:>22} {:>16} {:>22} {:>26}",
        "N", "sandbox -> host IP", "host loopback", "control (no rules)", "normalized to control"
    );
    let norm = |m: &[f64; 3]| (m[0] / m[2], m[1] / m[2]);
    let base = latency.first().map(|(_, m)| (m[0], m[1], norm(m)));
    for (i, m) in &latency {
        let (r1, r2, n1, n2) = base.map_or((1.0, 1.0, 1.0, 1.0), |b| {
            let (n1, n2) = norm(m);
            (m[0] / b.0, m[1] / b.1, n1 / b.2 .0, n2 / b.2 .1)
        });
        println!(
            "{i:>6} {:>14.1} ({r1:.2}x) {:>9.1} ({r2:.2}x) {:>22.1} {:>11.2}x {:>11.2}x",
            m[0], m[1], m[2], n1, n2
        );
    }
    println!("targets: latency at 200 <= 1.2x at 1 on both paths (the normalized columns take the load out)");
    let ours: Vec<String> = String::from_utf8_lossy(&left.stdout)
        .lines()
        .filter(|l| l.contains("sandbox"))
        .map(String::from)
        .collect();
    println!("tables of ours left after the last destroy: {ours:?}");
    Ok(())
}

fn name(i: usize) -> String {
    format!("s{i}")
}

/// A /30 of its own per sandbox: 10.(201 + i/256).(i%256).1 and .2.
fn addresses(i: usize) -> (Ipv4Addr, Ipv4Addr) {
    let hi = u8::try_from(201 + i / 256).unwrap_or(255);
    let lo = u8::try_from(i % 256).unwrap_or(0);
    (Ipv4Addr::new(10, hi, lo, 1), Ipv4Addr::new(10, hi, lo, 2))
}

fn print_series(what: &str, v: &[Duration]) {
    println!("{what}:");
    for (row, chunk) in v.chunks(10).enumerate() {
        let cells: Vec<String> = chunk.iter().map(|d| format!("{:6.1}", d.as_secs_f64() * 1e3)).collect();
        println!("  {:>4}: {}", row * 10 + 1, cells.join(" "));
    }
}

/// Accounts for every sandbox, each with OpenClaw's config in its home (as
/// on a host where `useradd -m` and `openclaw setup` ran), and a resolver.
fn seed(root: &Path, n: usize) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let (mut passwd, mut group, mut shadow, mut gshadow) = (
        "root:x:0:0:root:/root:/bin/bash\n".to_string(),
        "root:x:0:\n".to_string(),
        "root:*:19000:0:99999:7:::\n".to_string(),
        "root:*::\n".to_string(),
    );
    for i in 1..=n {
        let (name, uid) = (name(i), FIRST_UID + u32::try_from(i).map_err(|e| e.to_string())?);
        passwd.push_str(&format!(
            "{name}:x:{uid}:{uid}:OpenClaw sandbox:/home/{name}:/bin/bash\n"
        ));
        group.push_str(&format!("{name}:x:{uid}:\n"));
        shadow.push_str(&format!("{name}:!:19000::::::\n"));
        gshadow.push_str(&format!("{name}:!::\n"));
        let home = root.join("home").join(&name);
        std::fs::create_dir_all(home.join(".openclaw")).map_err(|e| e.to_string())?;
        std::fs::write(
            home.join(".openclaw/openclaw.json"),
            "{\n  \"gateway\": {\n    \"mode\": \"local\"\n  }\n}\n",
        )
        .map_err(|e| e.to_string())?;
        for p in [
            home.clone(),
            home.join(".openclaw"),
            home.join(".openclaw/openclaw.json"),
        ] {
            std::os::unix::fs::chown(&p, Some(uid), Some(uid)).map_err(|e| e.to_string())?;
        }
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o750)).map_err(|e| e.to_string())?;
    }
    for (rel, body) in [
        ("etc/passwd", passwd),
        ("etc/group", group),
        ("etc/shadow", shadow),
        ("etc/gshadow", gshadow),
        ("etc/resolv.conf", "nameserver 203.0.113.53\n".to_string()),
    ] {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().ok_or("no parent")?).map_err(|e| e.to_string())?;
        std::fs::write(&p, body).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A listener that accepts and closes every connection, on a thread (in
/// `netns`, or the bench's own namespace).
fn serve(netns: Option<&Path>, addr: SocketAddr) -> Result<(), String> {
    let l = match netns {
        Some(p) => {
            let f = File::open(p).map_err(|e| format!("open {}: {e}", p.display()))?;
            std::thread::spawn(move || -> Result<TcpListener, String> {
                setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
                TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))
            })
            .join()
            .map_err(|_| "the listener thread panicked".to_string())??
        }
        None => TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?,
    };
    std::thread::spawn(move || {
        for conn in l.incoming() {
            drop(conn);
        }
    });
    Ok(())
}

/// Median time of a TCP connect on each of three paths (from a netns, a
/// thread entering it, or the bench's own), the paths taken in turns of
/// 100 connects so that load drift lands on all three alike.
fn connect_latency(paths: [(Option<std::path::PathBuf>, SocketAddr); 3]) -> Result<[f64; 3], String> {
    let mut samples: [Vec<f64>; 3] = Default::default();
    const TURN: usize = 100;
    for _ in 0..CONNECTS / TURN {
        for (k, (netns, to)) in paths.iter().enumerate() {
            let ns = match netns {
                Some(p) => Some(File::open(p).map_err(|e| format!("open {}: {e}", p.display()))?),
                None => None,
            };
            let to = *to;
            let got = std::thread::spawn(move || -> Result<Vec<f64>, String> {
                if let Some(f) = ns {
                    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
                }
                let mut v = Vec::with_capacity(TURN);
                for _ in 0..TURN {
                    let t = Instant::now();
                    let s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
                        .map_err(|e| format!("connect {to}: {e}"))?;
                    v.push(t.elapsed().as_secs_f64() * 1e6);
                    drop(s);
                }
                Ok(v)
            })
            .join()
            .map_err(|_| "the latency thread panicked".to_string())??;
            samples[k].extend(got);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let [a, b, c] = &mut samples;
    Ok([median(a), median(b), median(c)])
}

fn run(prog: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(prog)
        .args(args)
        .status()
        .map_err(|e| format!("{prog}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{prog} {args:?} failed"))
    }
}
