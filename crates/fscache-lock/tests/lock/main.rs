//! Integration tests of `fscache-lock`, built as one test binary (one link,
//! one process to run).
//!
//! A new test goes into the module of the behaviour it checks; a new
//! behaviour gets a module here, never a new `tests/*.rs` (each would be a
//! binary of its own). The crate is published: nothing here may use
//! `fscache-testkit` or read files outside the crate folder.

// OFD lock semantics within one process: separate opens conflict, dups
// share, a lock lives until unlock or the last descriptor closes, range
// locks. Deterministic only: the timing-dependent tests are in the
// workspace's `tests/suite/lock_waits.rs`.
mod semantics;
