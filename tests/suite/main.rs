//! Cross-crate, multi-process and interoperability tests of fscache, built
//! as one test binary (one link, one process to run; ripgrep's layout).
//!
//! A new test goes into the module of the behaviour it checks; a new
//! behaviour gets a module here, never a new `tests/*.rs` (each would be a
//! binary of its own). Each crate's own tests are in its
//! `crates/<crate>/tests/<name>/main.rs`, laid out the same way.

// Spawning `fscache-test-helper`; re-exports the shared helpers of the
// `fscache-testkit` crate (timing bounds, child processes, python3).
mod util;

// Locks across processes: the helper binary against this process, and
// interoperability with Python's `fcntl` (osbuild's locking).
mod lock_processes;

// The semantics table of fscache-lock and its peers (std, fd-lock, fs4,
// fs2, file-guard, rustix), a test per row; helper processes are this
// binary run again.
mod lock_peers;

// Blocking waits and timeouts of `fscache-lock` between threads: the
// timing-dependent tests of the crate, here to share the kit's bounds.
mod lock_waits;

// The one on-disk inspection of a cache: books, entries, debris (one
// meaning: `uuid-*` in objects/ and anything in stage/), space, digests.
mod inspect;

// Several processes stressing one small cache (`fscache-test-helper
// stress`): exact books and intact entries afterwards.
mod multiprocess;

// Processes killed mid-protocol (store, commit, eviction) or while holding
// an entry: the cache stays usable and never undercounts.
mod crash;

// The cache on mounted tmpfs file systems: disk full, noatime (needs root).
mod filesystems;

// Helpers of the cache_* modules: tmpfs temp caches, seeded entries.
mod cache_util;

// FsCache::open scaffolding, the records of a commit, cache.info updates.
mod cache_layout;

// Misses, invalid names, commit outcomes, guard cleanup, LRU eviction.
mod cache_semantics;

// Property test: random operations against the cache and a model.
mod cache_model;

// Corrupt protocol files and hostile entries: clear answers, no escapes.
mod cache_garbage;

// osbuild compatibility: boot id vectors and an osbuild-written cache.
mod cache_vectors;

// Races forced through the test hooks.
mod cache_races;

// Single flight: several processes miss on one name, one builds.
mod single_flight;

// Model-based testing: random operations over several handles (in this
// process, and each in its own helper process) against a reference model.
mod model;
mod model_run;

// Power loss on a FUSE file system that forgets what was not synced
// (`fscache-lazyfs`): Committed keeps every commit whole, Relaxed's
// damage is found by verify and healed by repair (needs root, /dev/fuse).
mod powerloss;

// Differences from osbuild fixed: a negative maximum-size, what usage
// counts, entries damaged by a deleter outside the cache's locks.
mod osbuild_compat;
