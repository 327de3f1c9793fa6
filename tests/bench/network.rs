//! Benchmark (not a test): the time of sandbox's network steps (netns,
//! firewall, forwarding, veth, dns) to set up and tear down,
//! against `iproute2.sh` doing the same work with `ip` and `nft`, in one
//! run, as a ratio. Target: at most 0.5x the script.
//!
//!     sudo cargo bench --bench network [-- ROUNDS]
//!
//! Everything runs in a throwaway network + mount namespace with a private
//! /run: the real host's network, /etc and /run are never touched.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use sandbox::engine::{self, Step, Undo};
use sandbox::spec::Spec;
use sandbox::state::Store;

/// Idle time between setup and teardown, counted in neither, for ours and
/// the script alike. A sandbox lives for a while before it is torn down;
/// torn down within milliseconds, its namespace would still be held by
/// the sockets setup just closed inside it (the kernel frees a netlink
/// socket one RCU grace period after its close).
const SETTLE: Duration = Duration::from_millis(100);

const NETWORK_STEPS: &[&str] = &["netns", "firewall", "forwarding", "dns", "veth"];

fn main() -> Result<(), String> {
    let rounds: u32 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20);
    if !nix::unistd::geteuid().is_root() {
        return Err("run it as root: sudo cargo bench --bench network".into());
    }
    // Still single-threaded here, so the whole process moves.
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).map_err(|e| format!("make / private: {e}"))?;
    mount(
        Some("bench"),
        "/run",
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(|e| format!("tmpfs on /run: {e}"))?;
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("ip link set lo up failed".into());
    }

    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (script_up, script_down) = script(rounds, scratch.path())?;

    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root_s = root.path().to_str().ok_or("temp path is not UTF-8")?;
    let args = [
        "--root",
        root_s,
        "--policy",
        "default",
        "--dns",
        "203.0.113.53",
        "--no-systemd",
    ];
    let spec = Spec::from_args(&sandbox_args(&args)).map_err(|e| e.to_string())?;
    let steps: Vec<Box<dyn Step>> = sandbox::steps::all()
        .into_iter()
        .filter(|s| NETWORK_STEPS.contains(&s.id()))
        .collect();
    let mut per_step: Vec<(String, Duration, Duration)> = NETWORK_STEPS
        .iter()
        .map(|s| (s.to_string(), Duration::ZERO, Duration::ZERO))
        .collect();
    cycle(&steps, &spec, &mut per_step)?; // warm-up, as the script has
    per_step
        .iter_mut()
        .for_each(|p| (p.1, p.2) = (Duration::ZERO, Duration::ZERO));
    let (mut ours_up, mut ours_down) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let (u, d) = cycle(&steps, &spec, &mut per_step)?;
        ours_up += u;
        ours_down += d;
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(rounds);
    println!("{:<10} {:>14} {:>14} {:>8}", "", "sandbox (ms)", "script (ms)", "ratio");
    for (what, ours, theirs) in [
        ("setup", ours_up, script_up),
        ("teardown", ours_down, script_down),
        ("total", ours_up + ours_down, script_up + script_down),
    ] {
        let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
        println!("{what:<10} {:>14.2} {:>14.2} {ratio:>8.2}", ms(ours), ms(theirs));
    }
    println!("rounds: {rounds}; target: total ratio <= 0.50");
    println!("\nper step (ms, setup / teardown; a step that finishes in the background is charged");
    println!("until it is collected, the steps that ran meanwhile show ~0):");
    for (id, up, down) in &per_step {
        println!("  {id:<14} {:>7.2} {:>7.2}", ms(*up), ms(*down));
    }
    Ok(())
}

fn sandbox_args(flags: &[&str]) -> sandbox::cli::SetupArgs {
    use clap::Parser;
    let argv = ["sandbox", "setup"].iter().chain(flags);
    match sandbox::cli::Cli::parse_from(argv).command {
        sandbox::cli::Command::Setup(a) => a,
        #[allow(unreachable_patterns)]
        _ => unreachable!("parsed as setup"),
    }
}

/// One setup and one teardown of the network steps, timed, with each
/// step's share added to `per_step` (the time since the previous step ended).
fn cycle(
    steps: &[Box<dyn Step>],
    spec: &Spec,
    per_step: &mut [(String, Duration, Duration)],
) -> Result<(Duration, Duration), String> {
    let t0 = Instant::now();
    let mark = std::cell::Cell::new(t0);
    let mut tally = |o: &engine::Outcome, up: bool| {
        let now = Instant::now();
        if let Some(p) = per_step.iter_mut().find(|p| p.0 == o.step) {
            *(if up { &mut p.1 } else { &mut p.2 }) += now - mark.get();
        }
        mark.set(now);
    };
    let (store, mut state) = Store::open(&spec.root, &spec.name).map_err(|e| e.to_string())?;
    engine::apply_all(steps, spec, &store, &mut state, &mut |o| tally(o, true)).map_err(|e| e.to_string())?;
    drop(store);
    let t1 = Instant::now();
    std::thread::sleep(SETTLE);
    let t2 = Instant::now();
    let (store, mut state) = Store::open(&spec.root, &spec.name).map_err(|e| e.to_string())?;
    mark.set(Instant::now());
    let undo = Undo {
        root: spec.root.clone(),
        purge: false,
    };
    engine::revert_all(steps, &undo, &store, &mut state, &mut |o| tally(o, false)).map_err(|e| e.to_string())?;
    store.remove(&state).map_err(|e| e.to_string())?;
    Ok((t1 - t0, t2.elapsed()))
}

/// The script's own timing of `rounds` rounds (it measures itself, so its
/// shell start-up is not counted against it).
fn script(rounds: u32, scratch: &Path) -> Result<(Duration, Duration), String> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/iproute2.sh");
    let out = Command::new("bash")
        .arg(&here)
        .arg(rounds.to_string())
        .arg(scratch)
        .output()
        .map_err(|e| format!("{}: {e}", here.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            here.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut nums = text.split_whitespace().filter_map(|n| n.parse::<u64>().ok());
    match (nums.next(), nums.next()) {
        (Some(u), Some(d)) => Ok((Duration::from_nanos(u), Duration::from_nanos(d))),
        _ => Err(format!("unexpected output from {}: {text}", here.display())),
    }
}
