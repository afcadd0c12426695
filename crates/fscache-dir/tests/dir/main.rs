//! Integration tests of `fscache-dir`, built as one test binary (one link,
//! one process to run): each module is one protocol or behaviour.
//!
//! A new test goes into the module of the behaviour it checks; a new
//! behaviour gets a module here, never a new `tests/*.rs` (each would be a
//! binary of its own). The crate is published: nothing here may use
//! `fscache-testkit` or read files outside the crate folder.

// Each protocol step of `CacheDir` (scaffold, atomic files, locked opens,
// anonymous directories, removal, claims), with the races it exists for
// forced through the test hook at named points.
mod protocols;
