//! Integration tests of `fscache-remote`, built as one test binary (one
//! link, one process to run).
//!
//! A new test goes into the module of the behaviour it checks; a new
//! behaviour gets a module here, never a new `tests/*.rs` (each would be a
//! binary of its own). The crate is published: nothing here may use
//! `fscache-testkit` or read files outside the crate folder.

// What the modules share: deterministic pseudo-random content.
mod util;

// A latency proxy in front of an S3 server that counts requests (also
// used by `benches/remote.rs`).
mod proxy;

// Two hosts' caches sharing one remote on the `memory`, `fs` and S3 (moto)
// services: round trips, dedupe, refused damage, signatures, prune and its
// races with pushes, servers that die or hang, the async API, older
// formats.
mod end_to_end;

// Faithful trees judged from outside: every file-system feature survives
// store, load, push and pull (`rsync -aHAXn` finds no difference); xattr
// values large enough to travel as blobs.
mod faithful;

// Property test: random stores, removals, pushes, pulls and prunes on two
// hosts against a model (failing seeds in `model.proptest-regressions`).
mod model;
