//! The capability handle of an fscache directory: every file operation of
//! the cache, resolved beneath its root, and the on-disk protocols built on
//! [`fscache_lock`].
//!
//! Use this when you need the cache's building blocks without its
//! accounting: a locked open that survives concurrent replacement, files
//! and directories that appear atomically, careful removal, name validation,
//! and a native tree copy.
//!
//! ```
//! use std::path::Path;
//! use fscache_dir::{CacheDir, Publish, Published, OBJECTS};
//! use fscache_lock::{LockKind, Wait};
//!
//! let tmp = tempfile::tempdir()?;
//! let cache = CacheDir::open(&tmp.path().join("cache"))?;
//! cache.scaffold()?;
//! // A second writer of the same file loses without harm.
//! let p = Path::new("note");
//! assert_eq!(cache.atomic_file(Path::new(OBJECTS), p, b"1", Publish::NoReplace)?, Published::Done);
//! assert_eq!(cache.atomic_file(Path::new(OBJECTS), p, b"2", Publish::NoReplace)?, Published::Exists);
//! let held = cache.open_locked(p, LockKind::Shared, Wait::NonBlock)?.expect("uncontended");
//! assert_eq!(held.stat.st_size, 1);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Design
//!
//! [`CacheDir`] holds a `cap_std::fs::Dir` of the root. Opens go through
//! `openat2(RESOLVE_BENEATH)` (cap-std where that is missing), other
//! operations through cap-std, so no name, symlink or rename race reaches
//! outside the root. The protocols follow the contract in `DESIGN.md`:
//!
//! * **locked open** — open (never create), lock, then prove the path still
//!   names the locked file (`st_nlink > 0` locally, a path `stat` on NFS);
//! * **atomic file** — `uuid-<hex>` temp with `O_EXCL`, locked, filled,
//!   then `rename` (replace) or `link` (no-replace), temp name unlinked;
//! * **atomic anonymous dir** — a locked lock file linked into a fresh
//!   `uuid-<hex>` directory as `object.lock`;
//! * **removal** — `object.info` first, `object.lock` last;
//! * **names** — [`EntryName`] validation before any I/O.
//!
//! Test hooks ([`Hook`]) fire at named points so races can be forced.
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

mod cachedir;
pub mod copy;
mod error;
mod name;

pub use cachedir::{
    gone, read_small_fd, AnonDir, CacheDir, Hook, LockedFile, Publish, Published, CACHEDIR_TAG,
    CACHEDIR_TAG_CONTENTS, CACHE_INFO, CACHE_LOCK, CACHE_SIZE, DATA, OBJECTS, OBJECT_INFO,
    OBJECT_LOCK, STAGE,
};
pub use error::{raw_os_error, with_path, PathError};
pub use name::{anonymous_name, EntryName, InvalidName, MAX_NAME_LEN, RESERVED_PREFIX};
