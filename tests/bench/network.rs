//! Benchmark (not a test): the time of sandbox's network steps (netns,
//! firewall, forwarding, veth, dns) to set up and tear down, and of the
//! whole binary (`sandbox setup` + `--disable`, every step), against
//! `iproute2.sh` doing the network work with `ip` and `nft`, in one run,
//! as ratios, with the sync calls each makes. Blocks alternate ABBA
//! (script, ours, ours, script, ...), so load drift lands on both sides.
//! The trees live in the default temp dir (a real disk, where a sync costs
//! what it costs). Targets: full setup + disable at most 1.0x the script's
//! cycle; a full setup at most 8 sync calls.
//!
//!     sudo cargo bench --bench network [-- ROUNDS]
//!
//! Everything runs in a throwaway network + mount namespace with a private
//! /run: the real host's network, /etc and /run are never touched.

#[path = "throwaway.rs"]
mod throwaway;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sandbox::engine::{self, Step, Undo};
use sandbox::spec::Spec;
use sandbox::state::Store;

/// Idle time between setup and teardown, counted in neither, for ours and
/// the script alike. A sandbox lives for a while before it is torn down;
/// torn down within milliseconds, its namespace would still be held by
/// the sockets setup just closed inside it (the kernel frees a netlink
/// socket one RCU grace period after its close).
const SETTLE: Duration = Duration::from_millis(100);

const DNS_ONLY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/examples/dns-only.toml");

const NETWORK_STEPS: &[&str] = &["netns", "firewall", "forwarding", "dns", "veth"];

fn main() -> Result<(), String> {
    let rounds: u32 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20);
    throwaway::enter("network")?;

    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    script(1, scratch.path())?; // warm-up

    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root_s = root.path().to_str().ok_or("temp path is not UTF-8")?;
    let args = [
        "--root",
        root_s,
        "--policy",
        DNS_ONLY,
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
    sandbox::sys::files::group_commit(true);
    cycle(&steps, &spec, &mut per_step)?; // warm-up, as the script has
    per_step
        .iter_mut()
        .for_each(|p| (p.1, p.2) = (Duration::ZERO, Duration::ZERO));
    let full_root = tempfile::tempdir().map_err(|e| e.to_string())?;
    seed_full_root(full_root.path())?;
    full_cycle(full_root.path())?; // warm-up
    let (mut ours_up, mut ours_down) = (Duration::ZERO, Duration::ZERO);
    let (mut script_up, mut script_down) = (Duration::ZERO, Duration::ZERO);
    let (mut full, mut step_syncs) = (Duration::ZERO, 0usize);
    // ABBA: blocks of BLOCK rounds, script and ours in alternating order.
    const BLOCK: u32 = 5;
    let blocks = rounds.div_ceil(BLOCK);
    // Each block's full-cycle time over the script's in the same block:
    // their median shrugs off a burst of load from elsewhere on a shared
    // VM, which the ratio of sums takes in whole.
    let mut block_ratios = Vec::new();
    for b in 0..blocks {
        let script_first = matches!(b % 4, 0 | 3);
        let (mut script_block, mut full_block) = (Duration::ZERO, Duration::ZERO);
        for side in if script_first { [true, false] } else { [false, true] } {
            if side {
                let (u, d) = script(BLOCK, scratch.path())?;
                script_up += u;
                script_down += d;
                script_block = u + d;
                continue;
            }
            for _ in 0..BLOCK {
                let before = sandbox::sys::files::sync_count();
                let (u, d) = cycle(&steps, &spec, &mut per_step)?;
                step_syncs += sandbox::sys::files::sync_count() - before;
                ours_up += u;
                ours_down += d;
                let f = full_cycle(full_root.path())?;
                full += f;
                full_block += f;
            }
        }
        block_ratios.push(full_block.as_secs_f64() / script_block.as_secs_f64());
    }
    block_ratios.sort_by(f64::total_cmp);
    let rounds = blocks * BLOCK;
    let full_syncs = syncs_of(full_root.path())?;

    let ms = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(rounds);
    println!("{:<22} {:>14} {:>14} {:>8}", "", "sandbox (ms)", "script (ms)", "ratio");
    for (what, ours, theirs) in [
        ("network setup", ours_up, script_up),
        ("network teardown", ours_down, script_down),
        ("network total", ours_up + ours_down, script_up + script_down),
        ("full setup+disable", full, script_up + script_down),
    ] {
        let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
        println!("{what:<22} {:>14.2} {:>14.2} {ratio:>8.2}", ms(ours), ms(theirs));
    }
    println!(
        "full setup+disable, median of the {} blocks' ratios: {:.2} (range {:.2}-{:.2})",
        block_ratios.len(),
        block_ratios[block_ratios.len() / 2],
        block_ratios[0],
        block_ratios[block_ratios.len() - 1]
    );
    println!(
        "sync calls: network steps {:.1} per cycle; a full `sandbox setup` {full_syncs} (strace; 0: no strace)",
        step_syncs as f64 / f64::from(rounds)
    );
    println!(
        "rounds: {rounds} in ABBA blocks of {BLOCK}; temp dir {}; targets: full <= 1.0x (aim 0.8), <= 8 syncs",
        std::env::temp_dir().display()
    );
    println!("\nper step (ms, setup / teardown; a step that finishes in the background is charged");
    println!("until it is collected, the steps that ran meanwhile show ~0):");
    for (id, up, down) in &per_step {
        println!("  {id:<14} {:>7.2} {:>7.2}", ms(*up), ms(*down));
    }
    Ok(())
}

/// A tree where the sandbox user and OpenClaw's config exist already (the
/// usual host: `useradd -m`, `openclaw setup --baseline`).
fn seed_full_root(root: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let w = |rel: &str, body: &str| -> Result<(), String> {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().ok_or("no parent")?).map_err(|e| e.to_string())?;
        std::fs::write(&p, body).map_err(|e| e.to_string())
    };
    w(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nsandbox:x:990:990:OpenClaw sandbox:/home/sandbox:/bin/bash\n",
    )?;
    w("etc/group", "root:x:0:\nsandbox:x:990:\n")?;
    w("etc/shadow", "root:*:19000:0:99999:7:::\nsandbox:!:19000::::::\n")?;
    w("etc/gshadow", "root:*::\nsandbox:!::\n")?;
    w("etc/resolv.conf", "nameserver 203.0.113.53\n")?;
    w(
        "home/sandbox/.openclaw/openclaw.json",
        "{\n  \"gateway\": {\n    \"mode\": \"local\"\n  }\n}\n",
    )?;
    for d in [
        "home/sandbox",
        "home/sandbox/.openclaw",
        "home/sandbox/.openclaw/openclaw.json",
    ] {
        std::os::unix::fs::chown(root.join(d), Some(990), Some(990)).map_err(|e| e.to_string())?;
    }
    std::fs::set_permissions(root.join("home/sandbox"), std::fs::Permissions::from_mode(0o750))
        .map_err(|e| e.to_string())
}

/// The whole binary's `setup` in the bench's tree.
fn full_setup_args(root: &str) -> [&str; 9] {
    [
        "setup",
        "--root",
        root,
        "--non-interactive",
        "--no-systemd",
        "--policy",
        DNS_ONLY,
        "--dns",
        "203.0.113.53",
    ]
}

/// The whole binary: `setup` then `--disable`, every step, as an operator
/// runs them; its time.
fn full_cycle(root: &Path) -> Result<Duration, String> {
    let bin = env!("CARGO_BIN_EXE_sandbox");
    let root_s = root.to_str().ok_or("temp path is not UTF-8")?;
    let setup = full_setup_args(root_s);
    let disable = ["setup", "--root", root_s, "--non-interactive", "--disable"];
    let mut total = Duration::ZERO;
    for args in [&setup[..], &disable[..]] {
        let t = Instant::now();
        let out = Command::new(bin).args(args).output().map_err(|e| e.to_string())?;
        total += t.elapsed();
        if !out.status.success() {
            return Err(format!("sandbox {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        std::thread::sleep(SETTLE);
    }
    Ok(total)
}

/// Sync calls of one full `sandbox setup`, by strace (0 when it is not
/// installed); the sandbox is disabled again after.
fn syncs_of(root: &Path) -> Result<usize, String> {
    let bin = env!("CARGO_BIN_EXE_sandbox");
    let root_s = root.to_str().ok_or("temp path is not UTF-8")?;
    let setup = full_setup_args(root_s);
    let log = std::env::temp_dir().join(format!("sandbox-bench-strace-{}", std::process::id()));
    let Ok(out) = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&log)
        .args(["-e", "trace=fsync,fdatasync,syncfs,sync,sync_file_range", bin])
        .args(setup)
        .output()
    else {
        return Ok(0);
    };
    let _ = Command::new(bin)
        .args(["setup", "--root", root_s, "--non-interactive", "--disable"])
        .output();
    if !out.status.success() {
        return Err(format!("strace sandbox: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    Ok(text
        .lines()
        .find(|l| l.trim_end().ends_with(" total"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
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
    sandbox::sys::files::commit().map_err(|e| e.to_string())?;
    drop(store);
    let t1 = Instant::now();
    std::thread::sleep(SETTLE);
    let t2 = Instant::now();
    let (store, mut state) = Store::open(&spec.root, &spec.name).map_err(|e| e.to_string())?;
    mark.set(Instant::now());
    let undo = Undo {
        root: spec.root.clone(),
        name: spec.name.clone(),
        purge: false,
    };
    engine::revert_all(steps, &undo, &store, &mut state, &mut |o| tally(o, false)).map_err(|e| e.to_string())?;
    store.remove(&state).map_err(|e| e.to_string())?;
    sandbox::sys::files::commit().map_err(|e| e.to_string())?;
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
