//! The throwaway host every benchmark runs in: its own network and mount
//! namespace, a private tmpfs on /run (so `/run/netns` is ours), loopback
//! up. Called while the process is still single-threaded, so the whole
//! process moves.

use std::process::Command;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Refuse without root (naming the bench), then move into a throwaway host.
pub fn enter(bench: &str) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(format!("run it as root: sudo cargo bench --bench {bench}"));
    }
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
    let lo = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| e.to_string())?;
    if !lo.success() {
        return Err("ip link set lo up failed".into());
    }
    Ok(())
}
