//! Standard output and standard error, for every command that prints.
//!
//! A reader that went away (`sandbox plan | head`) is not a failure, and
//! never a panic: what is left to print is dropped and the command
//! finishes as it would have, with its own exit code. A `setup` whose
//! reader left still completes its run (stopping halfway would leave the
//! host half-changed); the audit log has every change. Any other write
//! error (a full disk under `> plan.md`) is kept and reported at the end
//! by `main`, so a truncated report never exits 0.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::sync::Mutex;

/// The first write error that was not a closed pipe.
static FAILED: Mutex<Option<std::io::Error>> = Mutex::new(None);

/// Print to standard output (see the module doc for errors).
pub fn stdout(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        keep(e);
    }
}

/// Raw bytes to standard output (the man page, completions).
pub fn stdout_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        keep(e);
    }
}

/// Print to standard error. Errors are dropped: there is nowhere left to
/// say them.
pub fn stderr(args: fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

fn keep(e: std::io::Error) {
    if is_closed(&e) {
        return;
    }
    if let Ok(mut first) = FAILED.lock() {
        first.get_or_insert(e);
    }
}

/// A reader that went away.
pub fn is_closed(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::BrokenPipe
}

/// The first write to standard output that failed for another reason
/// than a closed pipe, if any (taken: asked once, at exit).
pub fn take_error() -> Option<std::io::Error> {
    FAILED.lock().ok().and_then(|mut f| f.take())
}

/// `println!` that neither panics nor fails the command on a closed pipe.
#[macro_export]
macro_rules! outln {
    () => { $crate::out::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that neither panics nor fails the command on a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::stdout(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_not_kept_as_a_failure() {
        keep(std::io::Error::from(ErrorKind::BrokenPipe));
        assert!(take_error().is_none());
        keep(std::io::Error::from(ErrorKind::StorageFull));
        assert_eq!(take_error().map(|e| e.kind()), Some(ErrorKind::StorageFull));
        assert!(take_error().is_none(), "taken once");
    }
}
