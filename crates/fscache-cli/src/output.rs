//! Where reports go: stdout through a writer whose failure becomes the one
//! `error:` line and exit 1 (a reader that went away, `| head`, is a quiet
//! success), stderr for notes that never fail the command, and how much to
//! say (`-q`, `-v`).

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicI8, Ordering};

use serde_json::Value;

use crate::fail::Fail;

/// How a command prints its report: for people, or as one JSON document
/// for scripts (`--json`), which carries every figure the text shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Lines for people.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// -1 with `-q`, 0 by default, 1 and more with `-v`.
static VERBOSITY: AtomicI8 = AtomicI8::new(0);

pub(crate) fn set_verbosity(quiet: bool, verbose: u8) {
    let v = if quiet {
        -1
    } else {
        i8::try_from(verbose).unwrap_or(i8::MAX)
    };
    VERBOSITY.store(v, Ordering::Relaxed);
}

/// Whether confirmations and notes are wanted (not `-q`).
pub(crate) fn chatty() -> bool {
    VERBOSITY.load(Ordering::Relaxed) >= 0
}

/// Whether details are wanted (`-v`).
pub(crate) fn verbose() -> bool {
    VERBOSITY.load(Ordering::Relaxed) > 0
}

/// What a failed write to stdout means for the command.
pub(crate) fn stdout_failed(e: &io::Error) -> Fail {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Fail::quiet()
    } else {
        Fail::error(format!("failed to write to stdout: {e}"))
    }
}

/// Write one line to stdout.
///
/// # Errors
///
/// The write failed: see [`stdout_failed`].
pub(crate) fn line(args: fmt::Arguments<'_>) -> Result<(), Fail> {
    let mut out = io::stdout().lock();
    // `println!` would panic here (std's `print_to`); we report instead.
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| stdout_failed(&e))
}

/// Write raw bytes to stdout.
pub(crate) fn bytes(b: &[u8]) -> Result<(), Fail> {
    let mut out = io::stdout().lock();
    out.write_all(b)
        .and_then(|()| out.flush())
        .map_err(|e| stdout_failed(&e))
}

/// Print a JSON value, pretty, as one document.
pub(crate) fn json(v: &Value) -> Result<(), Fail> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Fail::error(format!("failed to format JSON: {e}")))?;
    line(format_args!("{text}"))
}

/// One line on stderr. A failure to write it is ignored: stderr is where
/// failures would be reported, so there is nowhere left to say it.
pub(crate) fn eline(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// `println!` that returns `Err(Fail)` instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => { $crate::output::line(format_args!($($t)*)) };
}

/// A confirmation or note on stdout, left out with `-q`.
macro_rules! note {
    ($($t:tt)*) => {
        if $crate::output::chatty() { $crate::output::line(format_args!($($t)*)) } else { Ok(()) }
    };
}

/// A detail on stdout, printed only with `-v`.
macro_rules! detail {
    ($($t:tt)*) => {
        if $crate::output::verbose() { $crate::output::line(format_args!($($t)*)) } else { Ok(()) }
    };
}

pub(crate) use {detail, note, outln};
