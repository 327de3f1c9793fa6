//! Fault injection for the crash and fault tests. Compiled in only with
//! the cargo feature `fault-injection` (off by default): in any other build
//! every hook below is an empty inline function and `SANDBOX_FAULT` is never
//! read.
//!
//! `SANDBOX_FAULT=<mode>:<step>[:<n>]` picks one fault (`fail-revert`: the
//! step's revert fails, as a step the host stops from reverting would):
//!
//! | mode                   | where                                         | what                       |
//! |------------------------|-----------------------------------------------|----------------------------|
//! | `abort-after`          | `apply` of `<step>` returned                  | die at once, as if killed  |
//! | `fail`                 | before `apply` of `<step>` starts             | the step returns an error  |
//! | `abort-at-put`         | the `<n>`th write-ahead record of `<step>` is on disk | die at once        |
//! | `fail-at-put`          | the `<n>`th write-ahead record of `<step>` is on disk | the step returns an error |
//! | `abort-after-revert`   | `revert` of `<step>` returned, record not yet updated | die at once        |
//!
//! "Die" is `std::process::abort()`: no destructors, no final save, no
//! lock release but the kernel's, exactly what SIGKILL leaves behind.
//! Every fault that fires says so on stderr first (`fault injected: ...`),
//! so a test can tell a fault that fired from one that never did.

use crate::error::Result;

#[cfg(feature = "fault-injection")]
mod imp {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::error::{Error, Result};

    /// Write-ahead records of the targeted step seen so far.
    static PUTS: AtomicUsize = AtomicUsize::new(0);

    struct Plan {
        mode: String,
        step: String,
        n: usize,
    }

    fn plan() -> Option<Plan> {
        let v = std::env::var("SANDBOX_FAULT").ok()?;
        let mut parts = v.splitn(3, ':');
        let mode = parts.next()?.to_string();
        let step = parts.next()?.to_string();
        let n = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        Some(Plan { mode, step, n })
    }

    fn hit(mode: &str, step: &str) -> Option<Plan> {
        plan().filter(|p| p.mode == mode && p.step == step)
    }

    fn die(what: &str) -> ! {
        eprintln!("fault injected: {what}: aborting as if killed");
        std::process::abort()
    }

    fn fail(what: &str) -> Error {
        eprintln!("fault injected: {what}: failing");
        // An I/O error, like the real failures it stands for (exit code 1).
        Error::io(
            "injected fault (SANDBOX_FAULT) at",
            what,
            std::io::Error::other("failing on purpose"),
        )
    }

    pub fn before_apply(step: &str) -> Result<()> {
        match hit("fail", step) {
            Some(_) => Err(fail(&format!("fail:{step}"))),
            None => Ok(()),
        }
    }

    pub fn after_apply(step: &str) {
        if hit("abort-after", step).is_some() {
            die(&format!("abort-after:{step}"));
        }
    }

    pub fn after_put(step: &str) -> Result<()> {
        let Some(p) = plan().filter(|p| p.step == step && p.mode.ends_with("-at-put")) else {
            return Ok(());
        };
        let seen = PUTS.fetch_add(1, Ordering::SeqCst) + 1;
        if seen != p.n {
            return Ok(());
        }
        let what = format!("{}:{step}:{seen}", p.mode);
        match p.mode.as_str() {
            "abort-at-put" => die(&what),
            "fail-at-put" => Err(fail(&what)),
            _ => Ok(()),
        }
    }

    pub fn before_revert(step: &str) -> Result<()> {
        match hit("fail-revert", step) {
            Some(_) => Err(fail(&format!("fail-revert:{step}"))),
            None => Ok(()),
        }
    }

    pub fn after_revert(step: &str) {
        if hit("abort-after-revert", step).is_some() {
            die(&format!("abort-after-revert:{step}"));
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
mod imp {
    use crate::error::Result;

    #[inline(always)]
    pub fn before_apply(_step: &str) -> Result<()> {
        Ok(())
    }
    #[inline(always)]
    pub fn after_apply(_step: &str) {}
    #[inline(always)]
    pub fn after_put(_step: &str) -> Result<()> {
        Ok(())
    }
    #[inline(always)]
    pub fn before_revert(_step: &str) -> Result<()> {
        Ok(())
    }
    #[inline(always)]
    pub fn after_revert(_step: &str) {}
}

pub fn before_revert(step: &str) -> Result<()> {
    imp::before_revert(step)
}

/// Before a step's `apply`: `fail:<step>`.
pub fn before_apply(step: &str) -> Result<()> {
    imp::before_apply(step)
}

/// A step's `apply` returned (its record is not yet marked done):
/// `abort-after:<step>`.
pub fn after_apply(step: &str) {
    imp::after_apply(step)
}

/// A step's write-ahead record is on disk: `abort-at-put:<step>:<n>`,
/// `fail-at-put:<step>:<n>`.
pub fn after_put(step: &str) -> Result<()> {
    imp::after_put(step)
}

/// A step's `revert` returned (its record is still there):
/// `abort-after-revert:<step>`.
pub fn after_revert(step: &str) {
    imp::after_revert(step)
}
