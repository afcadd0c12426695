//! The capability handle of an fscache directory: every file operation of
//! the cache, resolved beneath its root, and the on-disk protocols built on
//! [`fscache_lock`].
//!
//! Use this when you need the cache's building blocks without its
//! accounting: a locked open that survives concurrent replacement, files
//! and directories that appear atomically, careful removal, name validation,
//! a native tree copy, and the tree digest.
//!
//! ```
//! use std::path::Path;
//! use fscache_dir::{CacheDir, LockOptions, Publish, Published, TryLocked, OBJECTS};
//!
//! let tmp = tempfile::tempdir()?;
//! let cache = CacheDir::open(&tmp.path().join("cache"))?;
//! cache.scaffold()?;
//! // A second writer of the same file loses without harm.
//! let p = Path::new("note");
//! assert_eq!(cache.atomic_file(Path::new(OBJECTS), p, b"1", Publish::NoReplace)?, Published::Done);
//! assert_eq!(cache.atomic_file(Path::new(OBJECTS), p, b"2", Publish::NoReplace)?, Published::Exists);
//! let held = cache.lock(p, LockOptions::shared())?;
//! assert_eq!(held.stat.st_size, 1);
//! // An exclusive lock without waiting: another open file holds it shared.
//! assert!(matches!(cache.try_lock(p, LockOptions::exclusive())?, TryLocked::Busy));
//! assert!(matches!(cache.try_lock(Path::new("gone"), LockOptions::shared())?, TryLocked::Absent));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Design
//!
//! [`CacheDir`] holds a `cap_std::fs::Dir` of the root. Opens go through
//! `openat2(RESOLVE_BENEATH)` (cap-std where that is missing), other
//! operations through cap-std, so no name, symlink or rename race reaches
//! outside the root. It also holds an `O_PATH` descriptor of `objects/`
//! (opened that way, checked against the path once per new entry), through
//! which single components are created, linked and renamed: a store
//! resolves `objects/` once, not at every step. The protocols follow the
//! contract written down in `docs/format.md` of the fscache repository:
//!
//! * **locked open** — [`CacheDir::lock`] / [`CacheDir::try_lock`] with
//!   [`LockOptions`]: open (never create), lock, then prove the path still
//!   names the locked file (`st_nlink > 0` locally, a path `stat` on NFS);
//! * **atomic file** — `uuid-<hex>` temp with `O_EXCL`, locked, filled,
//!   then `rename` (replace) or `link` (no-replace), temp name unlinked;
//!   the temp can be made ahead ([`CacheDir::atomic_temp`]) so that a
//!   caller holding another lock only writes and renames it;
//! * **atomic anonymous dir** — a locked lock file linked into a fresh
//!   `uuid-<hex>` directory as `object.lock`;
//! * **removal** — `object.info` first, `object.lock` last;
//! * **names** — [`EntryName`] validation before any I/O.
//! * **tree digest** — [`digest`]: the identity of a tree's content,
//!   names and modes (BLAKE3, `blake3:<hex>`, encoding and test vector in
//!   the module docs), computed alone or during a [`copy`].
//!
//! One platform layer serves every crate above: [`open_beneath`] (the only
//! `openat2` fallback), [`stat`] (the only place `Stat` field widths are
//! normalised) and [`walk`] (the only tree walk, hard-link dedupe and
//! one-file-system rule, shared by [`copy`], removal and
//! `fscache_quota::tree_space`).
//!
//! Test hooks ([`Hook`]) fire at each [`HookPoint`] so races can be forced;
//! installing one needs the cargo feature `test-hooks`.
//!
//! # Errors
//!
//! Every fallible function returns `io::Result`. An error names the
//! operation and the absolute path in a [`PathError`] payload (its kind and
//! errno kept, [`raw_os_error`] looks through it) whose `source()` is the OS
//! error: the message never repeats it, so print the chain. A protocol file
//! holding garbage is `InvalidData` with a [`Corrupt`] source, which the
//! layers above recognise by [`Corrupt::find`].
//!
//! # Limitations
//!
//! * A process killed mid-protocol leaves `uuid-*` debris (unlocked, so
//!   maintenance can remove it); nothing partial ever appears under a
//!   committed name.
//! * Nothing is `fsync`ed: after a power loss, a renamed file may be empty
//!   on some file systems; a crash of the process alone is safe.
//! * Existence probes (`stat`) use paths relative to the root fd; they read
//!   no data and create nothing.

#![forbid(unsafe_code)]

// The handle, and one module per protocol it runs.
mod anon;
mod atomic;
mod cachedir;
mod fdio;
mod layout;
mod locked;
mod remove;
mod scaffold;
mod update;

// The platform layer every crate above shares.
mod beneath;
pub mod copy;
pub mod digest;
mod error;
mod hook;
mod intr;
pub mod meta;
mod name;
pub mod stat;
pub mod walk;

pub use anon::{AnonDir, Renamed};
pub use atomic::{AtomicTemp, Publish, Published};
pub use beneath::open_beneath;
pub use cachedir::{CacheDir, WaitObserver};
pub use error::{gone, is_miss, raw_os_error, with_path, Corrupt, PathError};
pub use fdio::{copy_mode_and_times_at, open_tree, read_small_fd, stamp_committed, touch_atime};
pub use hook::{Hook, HookPoint};
pub use intr::retry_io;
pub use layout::{
    CACHEDIR_TAG, CACHEDIR_TAG_CONTENTS, CACHE_INFO, CACHE_LOCK, CACHE_SIZE, DATA, OBJECTS,
    OBJECT_INFO, OBJECT_LOCK, STAGE,
};
pub use locked::{LockOptions, LockedFile, TryLocked};
pub use name::{
    anonymous_name, reseed_anonymous_names, EntryName, InvalidName, MAX_NAME_LEN, RESERVED_PREFIX,
};
pub use update::IfMissing;

/// The crate's `README.md` example, run as a doc test so it never goes
/// stale (also from the packaged crate, which carries its README).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
