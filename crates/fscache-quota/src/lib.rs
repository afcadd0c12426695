//! Space accounting for fscache: the space of a tree, the `cache.size`
//! counter, the `maximum-size` limit, and least-recently-used eviction.
//!
//! Use this when you keep a size-limited store of directory trees in the
//! fscache format and need its books: what a tree costs on disk, charging
//! and uncharging the shared counter without ever passing the limit, and
//! choosing and removing the least recently used entries.
//!
//! ```
//! use std::path::Path;
//! use fscache_dir::CacheDir;
//! use fscache_quota::{charge, read_size, uncharge, Charge, MaxSize};
//!
//! let tmp = tempfile::tempdir()?;
//! let cache = CacheDir::open(&tmp.path().join("cache"))?;
//! cache.scaffold()?;
//! let limit: MaxSize = "1KiB".parse().unwrap();
//! assert_eq!(charge(&cache, 1000, limit)?, Charge::Accepted { total: 1000 });
//! assert_eq!(charge(&cache, 100, limit)?, Charge::Refused { total: 1000 });
//! assert_eq!(uncharge(&cache, 400)?, 600);
//! assert_eq!(read_size(&cache)?, 600);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! * [`tree_space`]: `st_blocks × 512` of a directory and everything below
//!   it, symlinks not followed, hard links once, one file system only.
//! * [`charge`] / [`uncharge`]: the counter is updated under its exclusive
//!   lock by read → new temp file → `rename`, so a crash never leaves a
//!   partial value; a charge past the limit is refused, an uncharge floors
//!   at 0. A corrupt or missing counter is rebuilt from the entries.
//! * [`reconcile`]: books a failed update left off are marked suspect
//!   and recounted live, exactly: every counter change in flight holds
//!   [`Books`] shared, the recount waits them out (`books.lock`, see
//!   `docs/format.md`, "Books that heal").
//! * [`list_lru`] → [`plan`] → [`evict`] / [`evict_candidate`]: one
//!   directory scan, oldest `object.lock` atime first, planned down to a
//!   low watermark; eviction takes each victim's lock without waiting,
//!   skips held or just-used entries and uncharges exactly what the
//!   victim's `object.info` recorded. Because every check is made again
//!   under the victim's lock, a plan can be kept and consumed one
//!   candidate at a time by later stores ([`Tried`] says whether a
//!   candidate stays one).
//! * [`scan_plan`] and [`evictlist`]: the plan kept for every process in
//!   `cache.evict` (its format is in the module docs), with a cutoff for
//!   the stores in flight during the scan; any process pops from it, and a
//!   damaged list is ignored, never trusted.
//!
//! The files and steps are those of `docs/format.md` in the fscache
//! repository (`cache.size`, `object.info`, "Eviction", "Sweep").
//!
//! # Errors
//!
//! `io::Result` throughout, the path folded in as `fscache-dir` does
//! ([`fscache_dir::PathError`]); a `cache.size` that holds garbage where no
//! recovery applies is `InvalidData` with a [`fscache_dir::Corrupt`]
//! source.
//!
//! # Limitations
//!
//! * A crash between a charge and the commit's `object.info`, or a failed
//!   counter update, leaves the counter too high (never too low); the
//!   sweep or the failure marks the books suspect ([`mark_suspect`]) and
//!   [`reconcile`] makes them exact while others work, or [`recount`]
//!   with the cache to itself. An osbuild process takes no hold of
//!   [`Books`]: a recount that meets one of its commits or removals
//!   half-way leaves the counter low by that entry (the way osbuild's own
//!   drift goes) until the next recount.
//! * LRU order is only as fine as the file system's atime.
//! * A plan kept for later (see [`evict_candidate`]) does not see entries
//!   whose atime was set back after its scan.

#![forbid(unsafe_code)]

mod books;
mod counter;
mod error;
pub mod evictlist;
mod lru;
mod maxsize;
mod objinfo;
mod space;
mod sweep;

/// A scaffolded cache in a fresh temporary directory, for the unit tests.
#[cfg(test)]
fn test_cache() -> (tempfile::TempDir, fscache_dir::CacheDir) {
    let tmp = tempfile::tempdir().unwrap();
    let c = fscache_dir::CacheDir::open(&tmp.path().join("c")).unwrap();
    c.scaffold().unwrap();
    (tmp, c)
}

pub use books::{
    is_suspect, mark_suspect, reconcile, Books, BooksShared, Patience, Reconciled, BOOKS_LOCK,
    BOOKS_SUSPECT,
};
pub use counter::{charge, read_size, recount, uncharge, Charge};
pub use error::{Result, PARSE};
pub use lru::{
    atime, candidate, evict, evict_candidate, list_lru, plan, plan_lru, retire, scan_plan,
    Candidate, Evicted, Inode, Retired, ScanPlan, Stamp, Tried,
};
pub use maxsize::{format_bytes, parse_bytes, MaxSize, ParseSizeError};
pub use objinfo::{boot_id_from_json, ObjectInfo};
pub use space::tree_space;
pub use sweep::{sweep, Swept};

/// The default low watermark: an eviction scan plans candidates down to
/// this percentage of the limit.
pub const DEFAULT_WATERMARK_PERCENT: u8 = 90;

/// The crate's `README.md` example, run as a doc test so it never goes
/// stale (also from the packaged crate, which carries its README).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
