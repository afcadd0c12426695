//! A size-limited, least-recently-used cache of named directory trees on a
//! local Linux file system, shared safely by any number of threads and
//! processes, in the on-disk format of osbuild's `FsCache` (version 1).
//!
//! Use this when a build system, image builder or CI runner must keep
//! build outputs or downloads between runs: an entry you load never changes
//! or vanishes under you, the cache never grows past its limit, a crash
//! never corrupts it, and a hit costs a handful of system calls.
//!
//! ```
//! use fscache::{CacheInfo, FsCache, MaxSize, Stored};
//!
//! let tmp = tempfile::tempdir()?;
//! let cache = FsCache::builder("my-app")
//!     .max_size_if_unset(MaxSize::Bytes(1 << 30))  // only if no limit is set yet
//!     .open(tmp.path().join("cache"))?;
//! # cache.set_info(CacheInfo { maximum_size: Some(MaxSize::Bytes(1 << 30)), ..Default::default() })?;
//!
//! let w = cache.store("key")?;
//! std::fs::write(w.path().join("file"), b"payload")?;
//! assert_eq!(w.commit()?, Stored::Committed);
//!
//! if let Some(entry) = cache.load("key")? {       // read-locked until dropped
//!     assert_eq!(std::fs::read(entry.path().join("file"))?, b"payload");
//! }
//! assert!(cache.load("other")?.is_none());          // a miss is not an error
//!
//! let scratch = cache.stage()?;                     // removed on drop
//! std::fs::write(scratch.path().join("tmp"), b"x")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! For a build step, [`FsCache::load_or_build`] does it all: a hit, or one
//! build across every thread and process that misses at once, handed back
//! read-locked.
//!
//! # Names
//!
//! An entry's name is one path component: non-empty, at most 255 bytes,
//! no `/` and no NUL, not `.` or `..`, and not starting with `uuid-` (the
//! prefix of entries being written). Anything else is
//! [`Error::InvalidName`], before any I/O. Hash long or structured keys
//! into such a name (e.g. hex of a digest).
//!
//! # Handles and guards
//!
//! [`FsCache`] is a cheap `Clone` (an `Arc`), `Send` and `Sync`; every
//! guard owns a clone, so guards can be kept in structs and moved across
//! threads. Guards clean up in `Drop`: an [`Entry`] releases its read lock,
//! a [`StoreGuard`] not committed and a [`StageGuard`] remove their
//! directories. `commit(self)`/`close(self)` consume them and report errors.
//!
//! # Errors
//!
//! One [`Error`] enum: a miss is never an error. A failed system call is
//! [`Error::Io`] with the operation, the innermost path and the OS error as
//! its source ([`Error::Os`] when no path is known); a protocol file
//! holding garbage is [`Error::Corrupt`]. Messages do not repeat their
//! source: print the `source()` chain. `From<Error> for io::Error` keeps
//! the [`std::io::ErrorKind`].
//!
//! # Design
//!
//! [`FsCache`] holds a shared lock on `cache.lock` for its life. `load` takes
//! a shared, non-blocking lock on the entry's `object.lock` (contention is a
//! miss) and sets its atime, which is the entry's last use. `store` fills an
//! anonymous `objects/uuid-*` directory under an exclusive lock; `commit`
//! measures it (`st_blocks`), charges `cache.size`, evicts least-recently
//! used idle entries when full (only as many as its own charge needs,
//! popped from a list that one scan of `objects/` planned down to a low
//! watermark, kept in `cache.evict` so that later commits of every handle
//! of every process keep using it: a process that stores once does not
//! scan while the list lasts), writes `object.info` and renames the
//! directory to its name. The layers below
//! are [`fscache_lock`], [`fscache_dir`] and [`fscache_quota`].
//!
//! The on-disk format (every file, JSON key, lock and protocol step, and
//! what fscache adds to osbuild's) is written down in `docs/format.md` of
//! the fscache repository.
//!
//! # Limitations
//!
//! * Eviction pops candidates from a list some process scanned earlier
//!   (each re-checked under its lock: a used, held, replaced or vanished
//!   entry is never removed by mistake; a damaged list is ignored). An
//!   entry whose atime someone sets *back* by hand after that scan (or a
//!   clock stepped back) is not where the list has it, so younger listed
//!   entries may go first until the next scan. Stores in flight during the
//!   scan (osbuild's do not stamp their entry at commit) bound how far the
//!   list is used before a rescan.
//! * Linux only, local file systems first (NFS is detected and handled by
//!   path comparison, but blocking locks may hang if the server dies).
//! * By default nothing is `fsync`ed, as in osbuild: a power loss may lose
//!   recent entries or leave them with empty files (`verify` finds them,
//!   `repair` heals the books). Open with [`Durability::Committed`] to make
//!   each commit durable before it returns; [`Durability`] says what each
//!   mode guarantees after a power loss, as the power-loss tests check.
//! * If a process dies, its `uuid-*` work directories remain, unlocked,
//!   until a sweep removes them ([`FsCache::sweep`], and every prune,
//!   remove, listing and evicting commit); a guard leaked with
//!   `mem::forget` keeps its lock until the process exits.
//! * LRU order is as fine as the kernel's file timestamps: Linux stamps
//!   them from a coarse clock that advances once per scheduler tick (1–10
//!   ms), so entries used within one tick tie and are evicted by name.

#![forbid(unsafe_code)]

mod bootid;
mod commit;
mod error;
mod evict;
mod flight;
mod guards;
mod handle;
mod info;
mod load;
mod maint;
mod repair;
mod stats;
mod verify;

pub use bootid::{app_boot_id, current_app_boot_id, KERNEL_BOOT_ID};
pub use commit::{CommitReport, Stored};
pub use error::{Error, InvalidName, Result};
pub use flight::{BuildOptions, BUILD_LOCK};
pub use fscache_dir::copy::tree_content_bytes;
pub use fscache_dir::copy::{CopyOptions, CopyStats};
pub use fscache_dir::digest::data_ranges;
pub use fscache_dir::digest::{
    Body, Change, ContentHasher, Digest, DirHasher, Listing, NodeMeta, ParseDigestError,
    Version as DigestVersion, BLOCK as DIGEST_BLOCK,
};
/// Node metadata and the policy for what cannot be kept (xattrs, owners,
/// set-ID bits), shared by the local copy and a remote pull.
pub use fscache_dir::meta;
#[cfg(feature = "test-hooks")]
pub use fscache_dir::{Hook, HookPoint};
pub use fscache_quota::{format_bytes, parse_bytes, ParseSizeError};
pub use guards::{Entry, Obtained, StageGuard, StoreGuard, Uncached};
pub use handle::{Builder, Durability, FsCache};
pub use info::{CacheInfo, MaxSize, VERSION};
pub use maint::{Entries, EntryInfo, PruneOptions, PruneReport, Removed, Swept, Usage};
pub use repair::Repaired;
pub use stats::{Removal, Stats, CACHE_STATS, RECENT_REMOVALS};
pub use verify::{
    tree_digest, tree_digest_version, Changes, Missing, Verified, VerifyProgress, OBJECT_TREE,
};

/// The README's example, run as a doc test so it never goes stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    #[test]
    fn handles_guards_and_errors_are_send_and_sync() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<super::FsCache>();
        send_sync::<super::Entry>();
        send_sync::<super::StoreGuard>();
        send_sync::<super::StageGuard>();
        send_sync::<super::Obtained>();
        send_sync::<super::Error>();
    }
}
