//! Build script: put the commit into `sandbox --version`, so an operator can
//! tell exactly which code changed the host. A build outside a git checkout
//! (a source tarball) says "unknown"; `SANDBOX_COMMIT` overrides both.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SANDBOX_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("SANDBOX_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| {
            let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output();
            let hash = match out {
                Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
                _ => return "unknown".to_string(),
            };
            let dirty = Command::new("git")
                .args(["status", "--porcelain", "--untracked-files=no"])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty());
            if dirty {
                format!("{hash}-dirty")
            } else {
                hash
            }
        });
    println!("cargo:rustc-env=SANDBOX_COMMIT={commit}");
}
