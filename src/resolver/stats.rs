//! The resolver's counts, kept in memory and written (atomically, 0600,
//! root's) to `resolver-stats.json` in the state directory at most four
//! times a second while they change. `status`, `plan` and `policy suggest`
//! read that file; nothing else is shared with the resolver.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// At most this many distinct names per map: past it, new names go under
/// [`OTHER`] (a flood of random names cannot grow the file without bound).
pub const MAX_NAMES: usize = 4096;
pub const OTHER: &str = "(other names)";
/// At most this many addresses kept per answered name.
pub const MAX_ADDRS: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Names refused (NXDOMAIN), with how often.
    pub denied: BTreeMap<String, u64>,
    /// Names whose answer pointed into a range the policy does not name.
    pub rebinding: BTreeMap<String, u64>,
    /// Names answered with addresses, and the addresses (audit mode and
    /// `policy suggest` read these).
    pub answered: BTreeMap<String, Answered>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    pub count: u64,
    pub addresses: BTreeSet<Ipv4Addr>,
}

fn bump(map: &mut BTreeMap<String, u64>, name: &str) {
    let key = if map.contains_key(name) || map.len() < MAX_NAMES {
        name
    } else {
        OTHER
    };
    *map.entry(key.to_string()).or_default() += 1;
}

impl Stats {
    pub fn deny(&mut self, name: &str) {
        bump(&mut self.denied, name);
    }

    pub fn rebind(&mut self, name: &str) {
        bump(&mut self.rebinding, name);
    }

    pub fn answer(&mut self, name: &str, addrs: &[Ipv4Addr]) {
        let key = if self.answered.contains_key(name) || self.answered.len() < MAX_NAMES {
            name
        } else {
            OTHER
        };
        let e = self.answered.entry(key.to_string()).or_default();
        e.count += 1;
        for a in addrs {
            if e.addresses.len() < MAX_ADDRS {
                e.addresses.insert(*a);
            }
        }
    }

    /// The file, or empty counts when it is absent or unreadable.
    pub fn read(path: &Path) -> Stats {
        crate::sys::bounded::read_regular(path, 16 << 20)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn total_denied(&self) -> u64 {
        self.denied.values().sum()
    }
}

/// Counts shared by the resolver's threads, and a flag saying they changed.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<(Stats, bool)>>);

impl Shared {
    pub fn update(&self, f: impl FnOnce(&mut Stats)) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g.0);
        g.1 = true;
    }

    /// Write the file whenever the counts changed, every 250 ms, forever.
    pub fn keep_written(&self, path: PathBuf) {
        let shared = self.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            let snapshot = {
                let mut g = shared.0.lock().unwrap_or_else(|p| p.into_inner());
                if !g.1 {
                    continue;
                }
                g.1 = false;
                g.0.clone()
            };
            if let Err(e) = write(&path, &snapshot) {
                eprintln!("resolver: cannot write {}: {e}", path.display());
            }
        });
    }
}

fn write(path: &Path, s: &Stats) -> Result<()> {
    let body = serde_json::to_vec_pretty(s).unwrap_or_default();
    crate::sys::files::write_atomic_with(path, &body, 0o600, false)
}
