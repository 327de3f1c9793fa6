//! Helpers for unit tests: one way to get a `Spec` from setup flags.

use crate::cli::{Command, SetupArgs};
use crate::spec::Spec;

/// `sandbox setup <flags>`, parsed.
pub fn args(flags: &[&str]) -> SetupArgs {
    let argv = ["sandbox", "setup"].iter().chain(flags);
    match crate::cli::parse_from(argv).command {
        Command::Setup(a) => a,
        #[allow(unreachable_patterns)]
        _ => unreachable!("parsed as setup"),
    }
}

/// A validated spec for `sandbox setup <flags>`; panics on invalid flags.
pub fn spec(flags: &[&str]) -> Spec {
    Spec::from_args(&args(flags)).unwrap_or_else(|e| panic!("flags {flags:?}: {e}"))
}

/// The example policy files (what `permissive` and `default` allowed
/// before the presets became DefenseClaw's name lists).
pub const WEB_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/examples/web.toml");
pub const DNS_ONLY_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/examples/dns-only.toml");
