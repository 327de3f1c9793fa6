//! `sandbox`: provisions a locked-down home for an AI agent runtime and
//! removes it again without a trace. See README.md for the operator's view.

pub mod error;
pub mod sys;

pub use error::{Error, Result};
pub mod audit;
pub mod boot;
pub mod cli;
pub mod config_file;
pub mod doctor;
pub mod engine;
pub mod fault;
pub mod firewall;
pub mod hardening;
pub mod host;
pub mod inventory;
pub mod job;
pub mod originals;
pub mod out;
pub mod policy;
pub mod preflight;
pub mod report;
pub mod resolver;
pub mod run;
pub mod spec;
pub mod state;
pub mod status;
pub mod steps;
#[cfg(test)]
pub mod testutil;
