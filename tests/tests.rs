//! Cross-crate, multi-process and interoperability tests of fscache, built
//! as one test binary (one link, one process to run; ripgrep's layout).
//!
//! The modules live in `tests/suite/` so that cargo does not build each one
//! as a test crate of its own.

// Spawning `fscache-test-helper`; re-exports the shared helpers of the
// `fscache-testkit` crate (timing bounds, child processes, python3).
#[path = "suite/util.rs"]
mod util;

// Locks across processes: the helper binary against this process, and
// interoperability with Python's `fcntl` (osbuild's locking).
#[path = "suite/lock_processes.rs"]
mod lock_processes;

// The semantics table of fscache-lock and its peers (std, fd-lock, fs4,
// fs2, file-guard, rustix), a test per row; helper processes are this
// binary run again.
#[path = "suite/lock_peers.rs"]
mod lock_peers;

// Blocking waits and timeouts of `fscache-lock` between threads: the
// timing-dependent tests of the crate, here to share the kit's bounds.
#[path = "suite/lock_waits.rs"]
mod lock_waits;

// Several processes stressing one small cache (`fscache-test-helper
// stress`): exact books and intact entries afterwards. Also the
// cache-inspection helpers the crash tests share.
#[path = "suite/multiprocess.rs"]
mod multiprocess;

// Processes killed mid-protocol (store, commit, eviction) or while holding
// an entry: the cache stays usable and never undercounts.
#[path = "suite/crash.rs"]
mod crash;

// The cache on mounted tmpfs file systems: disk full, noatime (needs root).
#[path = "suite/filesystems.rs"]
mod filesystems;

// Helpers of the cache_* modules: tmpfs temp caches, reading the books.
#[path = "suite/cache_util.rs"]
mod cache_util;

// FsCache::open scaffolding, the records of a commit, cache.info updates.
#[path = "suite/cache_layout.rs"]
mod cache_layout;

// Misses, invalid names, commit outcomes, guard cleanup, LRU eviction.
#[path = "suite/cache_semantics.rs"]
mod cache_semantics;

// Property test: random operations against the cache and a model.
#[path = "suite/cache_model.rs"]
mod cache_model;

// Corrupt protocol files and hostile entries: clear answers, no escapes.
#[path = "suite/cache_garbage.rs"]
mod cache_garbage;

// osbuild compatibility: boot id vectors and an osbuild-written cache.
#[path = "suite/cache_vectors.rs"]
mod cache_vectors;

// Races forced through the test hooks.
#[path = "suite/cache_races.rs"]
mod cache_races;

// Single flight: several processes miss on one name, one builds.
#[path = "suite/single_flight.rs"]
mod single_flight;

// Model-based testing: random operations over several handles (in this
// process, and each in its own helper process) against a reference model.
#[path = "suite/model.rs"]
mod model;
#[path = "suite/model_run.rs"]
mod model_run;

// Power loss on a FUSE file system that forgets what was not synced
// (`fscache-lazyfs`): Committed keeps every commit whole, Relaxed's
// damage is found by verify and healed by repair (needs root, /dev/fuse).
#[path = "suite/powerloss.rs"]
mod powerloss;

// Differences from osbuild fixed: a negative maximum-size, what usage
// counts, entries damaged by a deleter outside the cache's locks.
#[path = "suite/osbuild_compat.rs"]
mod osbuild_compat;
