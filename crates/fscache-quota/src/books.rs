//! Books that heal: the "suspect" marker a failed counter update leaves,
//! the books lock that makes a live recount exact, and [`reconcile`].
//!
//! `cache.size` is a running sum: every commit charges it, every removal
//! uncharges it. When one of those updates fails after the entry it pairs
//! with changed (an entry's `object.info` unlinked, then the uncharge
//! fails), the sum is off for good. [`recount`](crate::recount) fixes it,
//! but only with the cache to itself. This module fixes it live:
//!
//! * Whoever sees a counter update fail (or cannot tell what it did)
//!   creates `cache.size.suspect`, an empty file in the root
//!   ([`mark_suspect`]). osbuild never reads it; a cache without it is
//!   simply not suspect.
//! * Every change that pairs an `object.info` with the counter (a commit
//!   from its charge to its rename or its undo; a removal from reading
//!   `object.info` to its uncharge) runs inside a [`BooksShared`] hold: a
//!   shared OFD lock on byte 0 of `books.lock`, taken as the readers of
//!   `fscache_lock::RangeLock::lock_writers_first` take it.
//! * [`reconcile`] takes byte 0 of `books.lock` exclusively, writers
//!   first (`fscache_lock::RangeLock::try_lock_writers_first`: the gate,
//!   byte 1, closes first): new holds wait at the gate, holds in flight
//!   drain from byte 0. With none in flight, every `object.info` in `objects/` (a
//!   committed entry's, and a crashed commit's in `uuid-*`, which a sweep
//!   uncharges later) is exactly what is on the books; the recount writes
//!   that sum under the counter's lock and removes the marker.
//!
//! The commit protocol keeps its order (charge, then `object.info`): a
//! `uuid-*` directory with an `object.info` is then always charged, which
//! the sweep relies on, and the books lock covers the window in which a
//! charge has no `object.info` yet. Writing `object.info` before the charge
//! would open the opposite window (recorded, not yet charged), which a
//! recount cannot tell apart from a charged one either; it buys nothing.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use fscache_dir::CacheDir;
use fscache_lock::{LockKind, RangeLock};
use rustix::fs::{Mode, OFlags};

use crate::counter::Entries;
use crate::error::{self, Result};
use crate::objinfo::ObjectInfo;

/// The marker: present means `cache.size` may be off and the next
/// [`reconcile`] recounts it.
pub const BOOKS_SUSPECT: &str = "cache.size.suspect";

/// The lock file of the books (created on demand, never replaced): byte 0
/// is held shared by every counter change in flight, byte 1 is the gate a
/// recount closes.
pub const BOOKS_LOCK: &str = "books.lock";

/// Mark the books suspect: create [`BOOKS_SUSPECT`] (an empty file; it may
/// exist already).
///
/// # Errors
///
/// The file could not be created.
pub fn mark_suspect(cache: &CacheDir) -> Result<()> {
    let rel = Path::new(BOOKS_SUSPECT);
    cache
        .open_raw(
            rel,
            OFlags::WRONLY | OFlags::CREATE | OFlags::NONBLOCK,
            Mode::from_raw_mode(0o666),
        )
        .map(drop)
        .map_err(|e| error::io("create", cache.abs(rel), e))
}

/// Mark the books suspect after `e`, a failed counter update (what it
/// changed is unknown to the caller), and return `e`. A marker that cannot
/// be written either leaves the books as the update left them, which `e`
/// already reports.
pub(crate) fn suspect_after(cache: &CacheDir, e: std::io::Error) -> std::io::Error {
    let _ = mark_suspect(cache);
    e
}

/// Whether the books are marked suspect (one `stat`).
pub fn is_suspect(cache: &CacheDir) -> bool {
    cache.stat(Path::new(BOOKS_SUSPECT)).is_ok()
}

/// One handle's side of the books lock: a descriptor of `books.lock` and
/// how many of its threads hold it shared now. The shared lock belongs to
/// the descriptor, so threads of one handle share one hold (taken by the
/// first, released by the last).
#[derive(Debug, Default)]
pub struct Books {
    state: Mutex<Hold>,
}

/// The descriptor of a [`Books`] and how many threads are inside.
#[derive(Debug, Default)]
struct Hold {
    inside: usize,
    fd: Lockfd,
}

/// `books.lock` of a handle: not opened yet, open, or held shared.
#[derive(Debug, Default)]
enum Lockfd {
    #[default]
    Closed,
    Open(OwnedFd),
    Held(RangeLock<OwnedFd>),
}

/// A shared hold on the books (see [`Books::enter`]); released on drop.
#[derive(Debug)]
#[must_use = "the books are held only while this lives"]
pub struct BooksShared<'a> {
    books: &'a Books,
}

impl Books {
    /// A handle's books lock, not yet opened.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hold the books shared: a counter change and the `object.info`
    /// change it pairs with happen inside it. Waits while a recount runs.
    ///
    /// [`RangeLock::lock_writers_first`] shared on `books.lock` (the gate,
    /// byte 1, shared, then byte 0 shared, then the gate released: three
    /// `fcntl` calls, and one to release), only for the first holder of
    /// the handle; the descriptor is opened once.
    ///
    /// Never nest holds in one thread around a [`reconcile`]: a recount
    /// waits for every hold, its own thread's too.
    ///
    /// # Errors
    ///
    /// `books.lock` could not be opened or created, or locked.
    pub fn enter<'a>(&'a self, cache: &CacheDir) -> Result<BooksShared<'a>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.inside == 0 {
            let fd = match std::mem::take(&mut state.fd) {
                Lockfd::Open(fd) => fd,
                // Not held with nobody inside; but never mind: reopen.
                Lockfd::Closed | Lockfd::Held(_) => open_lock(cache)?,
            };
            // The gate first: a recount waiting for the holds in flight
            // holds it, and we wait before we count as in flight. A failed
            // lock drops the descriptor; the next hold reopens.
            let held = RangeLock::lock_writers_first(fd, LockKind::Shared)
                .map_err(|e| error::io("lock", cache.abs(Path::new(BOOKS_LOCK)), e))?;
            state.fd = Lockfd::Held(held);
        }
        state.inside += 1;
        Ok(BooksShared { books: self })
    }
}

impl Drop for BooksShared<'_> {
    fn drop(&mut self) {
        let mut state = self.books.state.lock().unwrap_or_else(|p| p.into_inner());
        state.inside = state.inside.saturating_sub(1);
        if state.inside == 0 {
            if let Lockfd::Held(held) = std::mem::take(&mut state.fd) {
                // Unlocking cannot conflict; should it fail, the descriptor
                // is closed, which releases the lock (the next hold
                // reopens).
                if let Ok(fd) = held.unlock() {
                    state.fd = Lockfd::Open(fd);
                }
            }
        }
    }
}

pub(crate) fn open_lock(cache: &CacheDir) -> Result<OwnedFd> {
    let rel = Path::new(BOOKS_LOCK);
    // Never replaced nor unlinked, so a plain O_CREAT is race-free: every
    // opener gets the same inode.
    cache
        .open_raw(
            rel,
            OFlags::RDWR | OFlags::CREATE | OFlags::NONBLOCK,
            Mode::from_raw_mode(0o666),
        )
        .map_err(|e| error::io("open", cache.abs(rel), e))
}

/// How long [`reconcile`] waits for the changes in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patience {
    /// One try: give up at once if a change is in flight (an evicting
    /// commit, which must not stall).
    Once,
    /// Wait up to this long for the changes in flight to drain (prune,
    /// sweep); new ones wait meanwhile.
    Upto(Duration),
}

/// What [`reconcile`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconciled {
    /// The books were not marked suspect: nothing to do (one `stat`).
    Clean,
    /// The books were recounted: `cache.size` went from `before` (`None`:
    /// unreadable) to `after`, and the marker is gone.
    Recounted {
        /// The counter before.
        before: Option<u64>,
        /// The counter now: the exact sum of the recorded sizes.
        after: u64,
    },
    /// Changes stayed in flight longer than the patience allowed: the
    /// marker stays for the next try.
    Busy,
}

/// If the books are marked suspect, make them exact while others work:
/// close the books' gate, wait for the changes in flight (as `patience`
/// says), then, under the counter's lock, write the sum of every
/// `object.info` in `objects/` to `cache.size` and remove the marker.
///
/// The caller must not hold the books itself (a [`BooksShared`] of this
/// thread would never drain).
///
/// # Errors
///
/// Opening or locking `books.lock`, listing `objects/`, or the counter's
/// update failed (the marker stays).
pub fn reconcile(cache: &CacheDir, patience: Patience) -> Result<Reconciled> {
    if !is_suspect(cache) {
        return Ok(Reconciled::Clean);
    }
    let patience = match patience {
        Patience::Once => Duration::ZERO,
        Patience::Upto(d) => d,
    };
    // The writer's side of the lock: the gate closes for new holds, the
    // holds in flight drain from byte 0 (a hold takes the gate only inside
    // one `fcntl`, so the gate is near always free at once).
    let held = RangeLock::try_lock_writers_first(open_lock(cache)?, LockKind::Exclusive, patience)
        .map_err(|e| error::io("lock", cache.abs(Path::new(BOOKS_LOCK)), e))?;
    let Ok(held) = held else {
        // The gate is open again: the marker stays for the next try.
        return Ok(Reconciled::Busy);
    };
    // Another recount may have finished while we waited.
    if !is_suspect(cache) {
        return Ok(Reconciled::Clean);
    }
    let before = crate::counter::read_size(cache).ok();
    let after =
        crate::counter::set_to(cache, || crate::counter::sum_recorded(cache, Entries::All))?;
    match fscache_dir::retry_io(|| cache.dir().remove_file(BOOKS_SUSPECT)) {
        Err(e) if !fscache_dir::gone(&e) => {
            return Err(error::io("remove", cache.abs(Path::new(BOOKS_SUSPECT)), e))
        }
        _ => {}
    }
    drop(held);
    Ok(Reconciled::Recounted { before, after })
}

/// The size the `object.info` at `info` records: `None` when there is no
/// record (absent, not a directory above it, a directory, or no valid
/// size in it). The one reading of a record that every sum of the books
/// shares.
///
/// # Errors
///
/// Any other failure to read it: the sum is then unknown, and no guess
/// may be written (an I/O error read as "nothing recorded" would
/// undercount).
pub(crate) fn recorded(cache: &CacheDir, info: &Path) -> Result<Option<u64>> {
    match cache.read_small(info) {
        Ok(bytes) => Ok(ObjectInfo::parse(&bytes).size),
        Err(e) if fscache_dir::gone(&e) || e.kind() == std::io::ErrorKind::InvalidData => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => Ok(None),
        Err(e) => Err(error::io("read", cache.abs(info), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{charge, read_size, MaxSize};
    use fscache_dir::{OBJECTS, OBJECT_INFO};

    use crate::test_cache as cache;

    fn entry(c: &CacheDir, name: &str, size: u64) {
        let dir = c.abs(Path::new(OBJECTS)).join(name);
        fscache_dir::retry_io(|| std::fs::create_dir_all(&dir)).unwrap();
        std::fs::write(dir.join(OBJECT_INFO), format!(r#"{{"size": {size}}}"#)).unwrap();
    }

    #[test]
    fn a_clean_cache_is_not_recounted() {
        let (_t, c) = cache();
        charge(&c, 500, MaxSize::Unlimited).unwrap();
        assert_eq!(reconcile(&c, Patience::Once).unwrap(), Reconciled::Clean);
        // osbuild's drift is no damage: without a marker it stays.
        assert_eq!(read_size(&c).unwrap(), 500);
    }

    #[test]
    fn a_suspect_cache_is_recounted_with_crashed_commits_once() {
        let (_t, c) = cache();
        entry(&c, "a", 100);
        // A crashed commit: charged, object.info written, not renamed.
        entry(&c, "uuid-0", 7);
        charge(&c, 5000, MaxSize::Unlimited).unwrap();
        mark_suspect(&c).unwrap();
        assert!(is_suspect(&c));
        assert_eq!(
            reconcile(&c, Patience::Upto(Duration::from_secs(1))).unwrap(),
            Reconciled::Recounted {
                before: Some(5000),
                after: 107
            }
        );
        assert!(!is_suspect(&c));
        assert_eq!(read_size(&c).unwrap(), 107);
    }

    #[test]
    fn a_hold_in_flight_keeps_a_recount_waiting_and_new_holds_out() {
        let (_t, c) = cache();
        let c = std::sync::Arc::new(c);
        mark_suspect(&c).unwrap();
        let books = Books::new();
        let held = books.enter(&c).unwrap();
        // Threads of one handle share the hold.
        let again = books.enter(&c).unwrap();
        drop(again);
        assert_eq!(reconcile(&c, Patience::Once).unwrap(), Reconciled::Busy);
        assert_eq!(
            reconcile(&c, Patience::Upto(Duration::from_millis(30))).unwrap(),
            Reconciled::Busy
        );
        // A recount waiting for the hold keeps a second handle out until
        // it is done.
        let c2 = c.clone();
        let waiter = std::thread::spawn(move || {
            reconcile(&c2, Patience::Upto(Duration::from_secs(20))).unwrap()
        });
        std::thread::sleep(Duration::from_millis(100));
        let other = Books::new();
        let c3 = c.clone();
        let entrant = std::thread::spawn(move || {
            let _h = other.enter(&c3).unwrap();
            is_suspect(&c3)
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        assert!(matches!(
            waiter.join().unwrap(),
            Reconciled::Recounted { after: 0, .. }
        ));
        assert!(!entrant.join().unwrap(), "entered before the recount");
    }
}
