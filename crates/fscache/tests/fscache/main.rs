//! Integration tests of the `fscache` facade, built as one test binary (one
//! link, one process to run): each module is one behaviour.
//!
//! A new test goes into the module of the behaviour it checks; a new
//! behaviour gets a module here, never a new `tests/*.rs` (each would be a
//! binary of its own). The crate is published: nothing here may use
//! `fscache-testkit` or read files outside the crate folder. Tests across
//! processes and crates are in the workspace's `tests/suite/`.

// What the modules share: caches without a limit, small entries, aging.
mod util;

// An entry's life through one process's handles: builder, store, commit,
// load, owned guards, LRU order, `contains`, commit reports, error text.
mod lifecycle;

// Of many threads that miss one name, one builds; waits are bounded; a
// re-entrant build is an error.
mod single_flight;

// `cache.stats`: summed over handles, kept across drops, lock waits,
// load_or_build by what its callers got.
mod statistics;

// Books and debris that heal: prune, sweep and repair make them exact.
mod books;

// Sparse files are charged their blocks and stay sparse.
mod sparse;

// `Durability::Committed` syncs everything before the publishing rename
// (system calls recorded with strace).
mod durability;

// The tree digest recorded at commit, and `verify` catching every damage.
mod verify;
