//! Cross-crate, multi-process and interoperability tests of fscache, built
//! as one test binary (one link, one process to run; ripgrep's layout).
//!
//! The modules live in `tests/suite/` so that cargo does not build each one
//! as a test crate of its own.

// Shared helpers: temp files, spawning `fscache-test-helper` and python3.
#[path = "suite/util.rs"]
mod util;

// Locks across processes: the helper binary against this process, and
// interoperability with Python's `fcntl` (osbuild's locking).
#[path = "suite/lock_processes.rs"]
mod lock_processes;

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
