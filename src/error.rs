//! One error type for the whole tool. Every variant names the object, the
//! cause and the fix, because an operator on a locked-down host has nothing
//! else to go on. Each variant maps to a documented exit code.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags or a bad policy file: nothing was changed.
    #[error("{what}: {why}\n  fix: {fix}")]
    Input { what: String, why: String, fix: String },
    /// The host is not fit to run on (not root, no nft, address clash...).
    #[error("{what}: {why}\n  fix: {fix}")]
    Host { what: String, why: String, fix: String },
    /// Preflight found problems; each names its own fix. Nothing changed.
    #[error("preflight found {} problem(s); nothing was changed:\n{}", problems.len(), problems.iter().map(|p| format!("  - {}", p.to_string().replace('\n', "\n    "))).collect::<Vec<_>>().join("\n"))]
    Preflight { problems: Vec<Error> },
    /// `sandbox status` found something unhealthy (the checks say what).
    #[error("sandbox {name} is unhealthy: see the FAIL lines above\n  fix: each FAIL line names its fix; `sudo sandbox setup` with the same flags repairs what is ours")]
    Unhealthy { name: String },
    /// Another run holds the lock on this sandbox.
    #[error("sandbox {name}: another `sandbox` run holds {path}\n  fix: wait for it to finish, then re-run")]
    Locked { name: String, path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink: {op} {object}: {cause}")]
    Netlink {
        op: &'static str,
        object: String,
        cause: String,
    },
    #[error("nft: {op}: {cause}")]
    Nft { op: String, cause: String },
    /// systemd refused or failed a request (over D-Bus).
    #[error("systemd: {op} {unit}: {cause}\n  fix: {fix}")]
    Systemd {
        op: &'static str,
        unit: String,
        cause: String,
        fix: String,
    },
    /// A step failed; the inner error names the object and the fix.
    #[error("step {step} ({op}): {source}")]
    Step {
        step: &'static str,
        op: &'static str,
        #[source]
        source: Box<Error>,
    },
    #[error("state record {path}: {cause}\n  fix: {fix}")]
    State { path: PathBuf, cause: String, fix: String },
    /// A run failed after it had changed the host, whatever the cause:
    /// exit 1, since 2 and 3 promise that nothing was changed.
    #[error("{source}\n  note: this run had already changed the host ({}); re-run it to converge, or undo with `sudo sandbox setup --disable`", changed.join(", "))]
    AfterChanges {
        /// The steps that changed something (or were under way).
        changed: Vec<String>,
        #[source]
        source: Box<Error>,
    },
    /// `--disable` reverted what it could; these steps failed and stay in
    /// the state record, so a re-run reverts only them.
    #[error("--disable could not revert {} step(s); every other step was reverted, and the state record keeps the failed ones:\n{}\n  fix: fix each cause above, then run `sandbox setup --disable` again: it reverts only what is left", failures.len(), failures.iter().map(|f| format!("  - {}", f.to_string().replace('\n', "\n    "))).collect::<Vec<_>>().join("\n"))]
    Reverts { failures: Vec<Error> },
}

impl Error {
    pub fn input(what: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Input {
            what: what.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }

    pub fn host(what: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Host {
            what: what.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }

    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub fn netlink(op: &'static str, object: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Error::Netlink {
            op,
            object: object.into(),
            cause: cause.to_string(),
        }
    }

    /// This error, from a run in which `changed` steps had changed the
    /// host (none: the error as it is).
    pub fn after_changes(self, changed: &[String]) -> Self {
        if changed.is_empty() || matches!(self, Error::AfterChanges { .. }) {
            return self;
        }
        Error::AfterChanges {
            changed: changed.to_vec(),
            source: Box::new(self),
        }
    }

    /// Exit codes are part of the operator interface (README, "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input { .. } => 2,
            Error::Host { .. } | Error::Preflight { .. } => 3,
            Error::Locked { .. } => 4,
            Error::Unhealthy { .. } => 6,
            Error::State { .. } => 5,
            Error::Step { source, .. } => source.exit_code(),
            Error::Io { .. }
            | Error::Netlink { .. }
            | Error::Nft { .. }
            | Error::Systemd { .. }
            | Error::AfterChanges { .. }
            | Error::Reverts { .. } => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_after_a_change_exits_1_whatever_its_cause() {
        let refused = || Error::Step {
            step: "openclaw",
            op: "apply",
            source: Box::new(Error::host(
                "openclaw.json",
                "master_key not found",
                "run openclaw once",
            )),
        };
        assert_eq!(refused().exit_code(), 3, "nothing changed: the host is not fit");
        let after = refused().after_changes(&["user".into(), "netns".into()]);
        assert_eq!(after.exit_code(), 1);
        let text = after.to_string();
        assert!(
            text.starts_with("step openclaw (apply): openclaw.json: master_key not found"),
            "{text}"
        );
        assert!(text.contains("already changed the host (user, netns)"), "{text}");
        assert_eq!(
            Error::input("x", "y", "z").after_changes(&["dns".into()]).exit_code(),
            1
        );
        assert_eq!(Error::input("x", "y", "z").after_changes(&[]).exit_code(), 2);
        let twice = refused().after_changes(&["a".into()]).after_changes(&["b".into()]);
        assert!(twice.to_string().matches("note:").count() == 1, "{twice}");
    }
}
