//! Integration tests of the `fscache` binary, built as one test binary (one
//! link, one process to run): every command and flag, run as a real process
//! on temporary caches, `--json` parsed with serde_json.
//!
//! A new test goes into the module of the behaviour it checks; a new
//! behaviour gets a module here, never a new `tests/*.rs` (each would be a
//! binary of its own). The crate is published: nothing here may use
//! `fscache-testkit` or read files outside the crate folder (the osbuild
//! vector is a copy in `tests/data/`).

// What the modules share: `fsc!` and `fscache(ARGS)`, exit codes and
// errors checked with the output shown, temporary caches and trees, a
// reader that holds an entry, strace. First: the macro is textual.
#[macro_use]
mod util;

// Each command and flag on its own: set, info, store, ls, load, cat, rm,
// prune, stage, help, hostile input, an unwritable cache, a cache osbuild
// wrote.
mod commands;

// The operator's verbs and defaults: FSCACHE_DIR and --cache, clear,
// repair (also while busy), debris, set over the limit or on a directory
// that is no cache, completions, the man page, stdout that fails.
mod operator;

// `stats` counted exactly across processes, `verify` and its damage
// report, removals listed by cause.
mod integrity_and_stats;

// Stopping on SIGINT/SIGTERM/SIGHUP at random moments: nothing left,
// exact books.
mod signals;

// `push`, `pull` and `remote` against a file:// remote.
mod remote;

// Every I/O error survived: each command with one system call failing
// (strace fault injection; a fast subset here, `cargo xtask ioerr` runs
// all), and a prune whose counter write fails heals on the next.
mod io_errors;
