//! Linux open-file-description (OFD) locks on any file descriptor, on the
//! whole file or on byte ranges.
//!
//! Use this when several threads *or* processes must coordinate through a
//! file: an OFD lock belongs to the open file description, so two `open`s of
//! one file conflict even inside one process, a `dup`ed descriptor shares the
//! lock, and the lock is released only when the last descriptor of that open
//! file closes (or on explicit unlock). These are the locks osbuild's Python
//! `FsCache` takes (`fcntl` commands 36/37/38), so both interoperate.
//!
//! ```
//! use fscache_lock::{FileLock, LockKind};
//!
//! let file = tempfile::tempfile()?;
//! let other = file.try_clone()?; // a dup: shares the open file description
//! let held = FileLock::lock(file, LockKind::Exclusive)?;
//! assert_eq!(held.kind(), LockKind::Exclusive);
//! // A second open of the same file would conflict; a dup does not.
//! assert!(FileLock::try_lock(other, LockKind::Shared)?.is_some());
//! drop(held); // unlocks (and closes the file)
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Design
//!
//! [`FileLock`] is a guard that owns its descriptor (any [`AsFd`], usually
//! an [`OwnedFd`](std::os::fd::OwnedFd) or a [`File`](std::fs::File)) and
//! unlocks it on drop. Blocking acquisition ([`FileLock::lock`]) retries
//! `EINTR`; [`FileLock::try_lock`] returns `Ok(None)` when contended;
//! [`FileLock::lock_timeout`] polls with exponential backoff for callers that
//! must never hang. [`RangeLock`] is the same guard over a byte range
//! (`l_start`/`l_len`), for many independent locks in one file. Held locks convert between shared and exclusive in place,
//! and [`conflicting_lock`] / [`conflicting_range_lock`] ask the kernel
//! (`F_OFD_GETLK`) whether a lock would conflict, and with whom, without
//! taking it.
//!
//! Every `fcntl` goes through one small `unsafe` function. This crate never
//! uses the classic process-associated `F_SETLK` (closing *any* descriptor
//! of the file drops all of a process's locks on it) nor `flock` (a
//! different lock table, invisible to `fcntl` lockers).
//!
//! # Limitations
//!
//! * Linux only (OFD locks exist since 3.15).
//! * Locks are advisory: they exclude only cooperating lockers.
//! * No deadlock detection: unlike classic `F_SETLK`, OFD locks never fail
//!   with `EDEADLK`; two waiters that each hold what the other wants wait
//!   forever. Take locks in a fixed order, or use
//!   [`FileLock::lock_timeout`].
//! * Readers are preferred: a stream of overlapping shared holders keeps
//!   an exclusive waiter out for as long as it lasts (the kernel grants a
//!   new shared lock past a queued writer). The crate README measures it;
//!   [`RangeLock::lock_writers_first`] is the writer-preferring option
//!   ([`RangeLock::try_lock_writers_first`] for a writer that gives up
//!   after a while, as `fscache`'s live recount of its books does).
//! * A converting lock (shared → exclusive) is not atomic with respect to
//!   other waiters: the kernel may grant a queued writer first.
//! * On network file systems, blocking waits may hang if the server goes
//!   away; use [`FileLock::lock_timeout`] there.
//! * If a guard is leaked (`mem::forget`), the lock lives until the last
//!   descriptor of its open file description is closed.

#![deny(unsafe_code)]

mod fcntl;
mod range;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

pub use fcntl::{
    conflicting_lock, conflicting_range_lock, set_lock, set_range_lock, Conflict, LockOwner, Wait,
};
pub use range::{RangeLock, WRITERS_FIRST_GATE, WRITERS_FIRST_LOCK};

/// The kind of a lock: shared (read) or exclusive (write).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// A read lock: any number of shared locks coexist.
    Shared,
    /// A write lock: excludes every other lock.
    Exclusive,
}

impl LockKind {
    /// Whether a lock of this kind conflicts with one of `other` held
    /// through another open file description.
    pub fn conflicts_with(self, other: LockKind) -> bool {
        !(self == LockKind::Shared && other == LockKind::Shared)
    }
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        })
    }
}

/// A held OFD lock on the whole file behind `F`; unlocks on drop.
///
/// The guard owns the descriptor so the lock cannot outlive the guard by
/// accident. [`FileLock::unlock`] releases it explicitly and hands the
/// descriptor back.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct FileLock<F: AsFd> {
    fd: Option<F>,
    kind: LockKind,
}

impl<F: AsFd> FileLock<F> {
    /// `fcntl(fd, F_OFD_SETLKW)`—take a lock of `kind`, waiting as long as
    /// it takes. `EINTR` is retried.
    ///
    /// # Errors
    ///
    /// Whatever `fcntl` reports other than `EINTR`: `EBADF` when `kind` is
    /// [`LockKind::Exclusive`] and the file is not open for writing (or
    /// `Shared` and not for reading), `ENOLCK`, `EINVAL` on kernels without
    /// OFD locks.
    ///
    /// # References
    ///
    /// * [fcntl(2), "Open file description locks"](https://man7.org/linux/man-pages/man2/fcntl.2.html)
    #[doc(alias = "F_OFD_SETLKW")]
    pub fn lock(fd: F, kind: LockKind) -> io::Result<Self> {
        set_lock(fd.as_fd(), Some(kind), Wait::Block)?;
        Ok(Self { fd: Some(fd), kind })
    }

    /// `fcntl(fd, F_OFD_SETLK)`—take a lock of `kind` if no conflicting lock
    /// is held; `Ok(None)` (and `fd` dropped) when one is.
    ///
    /// # Errors
    ///
    /// As [`FileLock::lock`], except that contention is not an error.
    #[doc(alias = "F_OFD_SETLK")]
    pub fn try_lock(fd: F, kind: LockKind) -> io::Result<Option<Self>> {
        Ok(Self::try_lock_or_return(fd, kind)?.ok())
    }

    /// As [`FileLock::try_lock`], but hands the descriptor back on
    /// contention: `Ok(Err(fd))`.
    ///
    /// # Errors
    ///
    /// As [`FileLock::lock`], except that contention is not an error.
    pub fn try_lock_or_return(fd: F, kind: LockKind) -> io::Result<Result<Self, F>> {
        if set_lock(fd.as_fd(), Some(kind), Wait::NonBlock)? {
            Ok(Ok(Self { fd: Some(fd), kind }))
        } else {
            Ok(Err(fd))
        }
    }

    /// Take a lock of `kind`, polling with `F_OFD_SETLK` and exponential
    /// backoff (1 ms doubling to 50 ms) until `timeout` has passed;
    /// `Ok(None)` when it is still contended then.
    ///
    /// Use it where a blocking wait could hang forever (a holder on a dead
    /// NFS client) or where the caller must bound its latency. The call
    /// returns within `timeout` plus one backoff step at most.
    ///
    /// # Errors
    ///
    /// As [`FileLock::lock`], except that contention is not an error.
    pub fn lock_timeout(fd: F, kind: LockKind, timeout: Duration) -> io::Result<Option<Self>> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if set_lock(fd.as_fd(), Some(kind), Wait::NonBlock)? {
                return Ok(Some(Self { fd: Some(fd), kind }));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The kind of lock held now.
    pub fn kind(&self) -> LockKind {
        self.kind
    }

    /// The locked descriptor.
    pub fn get_ref(&self) -> &F {
        self.fd.as_ref().expect("descriptor present until unlock")
    }

    /// Convert the held lock to `kind`, waiting for conflicting holders
    /// (`F_OFD_SETLKW`). Converting to the kind held is a no-op.
    ///
    /// # Errors
    ///
    /// As [`FileLock::lock`]. On error the lock held before is kept.
    pub fn convert(&mut self, kind: LockKind) -> io::Result<()> {
        if kind != self.kind {
            set_lock(self.get_ref().as_fd(), Some(kind), Wait::Block)?;
            self.kind = kind;
        }
        Ok(())
    }

    /// Convert the held lock to `kind` if that conflicts with no other
    /// holder; `Ok(false)` (and the old lock kept) when it would.
    ///
    /// Downgrading exclusive → shared never conflicts.
    ///
    /// # Errors
    ///
    /// As [`FileLock::lock`].
    pub fn try_convert(&mut self, kind: LockKind) -> io::Result<bool> {
        if kind == self.kind {
            return Ok(true);
        }
        let done = set_lock(self.get_ref().as_fd(), Some(kind), Wait::NonBlock)?;
        if done {
            self.kind = kind;
        }
        Ok(done)
    }

    /// Release the lock by closing the descriptor, without a separate
    /// `F_UNLCK`: one system call instead of two.
    ///
    /// The kernel drops an OFD lock when the last descriptor of its open
    /// file description closes, so this releases the lock only if `F` is
    /// the sole descriptor: one you opened yourself and never duplicated
    /// (`dup`, `try_clone`, or a `fork` that has not yet `exec`ed a child,
    /// with `O_CLOEXEC`). Otherwise the lock lives on with the other
    /// descriptors; use [`FileLock::unlock`] or drop the guard then.
    pub fn close(mut self) {
        drop(self.fd.take());
    }

    /// Release the lock (`F_UNLCK`) and hand the descriptor back.
    ///
    /// # Errors
    ///
    /// Whatever `fcntl` reports; the descriptor is dropped then, which
    /// releases the lock anyway if it was the last one of its open file.
    pub fn unlock(mut self) -> io::Result<F> {
        let fd = self.fd.take().expect("descriptor present until unlock");
        set_lock(fd.as_fd(), None, Wait::NonBlock)?;
        Ok(fd)
    }
}

impl<F: AsFd> AsFd for FileLock<F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl<F: AsFd> fmt::Debug for FileLock<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLock")
            .field("fd", &self.fd.as_ref().map(|fd| fd.as_fd()))
            .field("kind", &self.kind)
            .finish()
    }
}

impl<F: AsFd> Drop for FileLock<F> {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            // Unlock explicitly: `fd` may be a dup whose siblings live on,
            // and closing it alone would keep the lock. Errors cannot be
            // reported from drop; closing the last descriptor releases the
            // lock anyway.
            let _ = set_lock(fd.as_fd(), None, Wait::NonBlock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_matrix() {
        use LockKind::*;
        assert!(!Shared.conflicts_with(Shared));
        assert!(Shared.conflicts_with(Exclusive));
        assert!(Exclusive.conflicts_with(Shared));
        assert!(Exclusive.conflicts_with(Exclusive));
        assert_eq!(Shared.to_string(), "shared");
    }
}

/// The crate's `README.md` example, run as a doc test so it never goes
/// stale (also from the packaged crate, which carries its README).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
