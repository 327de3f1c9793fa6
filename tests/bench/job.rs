//! Benchmark (not a test): `sandbox job run -- true` end to end, one after
//! another (target: under 150 ms on the 2-core CI machine), and 20 of them
//! at once (wall time, and each one's time). Prints figures; asserts
//! nothing about time.
//!
//!     sudo cargo bench --bench job [-- ROUNDS]
//!
//! Everything runs in a throwaway network + mount namespace with a private
//! /run and a temp `--root`: the real host's network, /etc and /run are
//! never touched.

#[path = "throwaway.rs"]
mod throwaway;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox");

fn main() -> Result<(), String> {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(30);
    throwaway::enter("job")?;
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root_s = root.path().to_str().ok_or("temp path is not UTF-8")?.to_string();
    let run = |root: &str| -> Result<Duration, String> {
        let t = Instant::now();
        let out = Command::new(BIN)
            .args([
                "job",
                "run",
                "--root",
                root,
                "--no-systemd",
                "--dns",
                "203.0.113.53",
                "--",
                "true",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let took = t.elapsed();
        if !out.status.success() {
            return Err(format!("job run failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(took)
    };
    run(&root_s)?; // warm-up (page cache, nft's first run)
    let mut one: Vec<Duration> = (0..rounds).map(|_| run(&root_s)).collect::<Result<_, _>>()?;
    one.sort();
    println!("job run -- true, one at a time ({rounds} runs):");
    print_stats(&one);
    println!("  target: median under 150 ms");

    let t = Instant::now();
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let r = root_s.clone();
            std::thread::spawn(move || run(&r))
        })
        .collect();
    let mut each = Vec::new();
    for h in handles {
        each.push(h.join().map_err(|_| "a runner thread panicked".to_string())??);
    }
    let wall = t.elapsed();
    each.sort();
    println!("20 concurrent job run -- true: wall {:.0} ms", ms(wall));
    print_stats(&each);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_stats(sorted: &[Duration]) {
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    println!(
        "  min {:.0} ms, median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(sorted[0]),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(sorted[sorted.len() - 1])
    );
}
