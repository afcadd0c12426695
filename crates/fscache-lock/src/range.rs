//! `RangeLock`: a guard over an OFD lock on a byte range of a file.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::{conflicting_range_lock, set_range_lock, Conflict, LockKind, Wait};

/// The byte that [`RangeLock::lock_writers_first`] locks.
pub const WRITERS_FIRST_LOCK: u64 = 0;

/// The gate byte of [`RangeLock::lock_writers_first`]: held exclusively
/// by a writer from before it waits for the lock until it has it.
pub const WRITERS_FIRST_GATE: u64 = 1;

/// A held OFD lock on the bytes `start..start + len` of the file behind
/// `F` (`len` 0: from `start` to the end of the file, however it grows);
/// unlocks that range on drop.
///
/// The shape of [`FileLock`](crate::FileLock) for part of a file: the guard
/// owns the descriptor, [`RangeLock::unlock`] releases the range and hands
/// the descriptor back. Ranges of one open file description never conflict
/// with each other, and locks of different descriptions conflict only where
/// their ranges overlap, so one file can carry a lock per name at offsets
/// derived from the names (what `fscache`'s single flight does in
/// `build.lock`). A range need not lie inside the file.
///
/// ```
/// use fscache_lock::{LockKind, RangeLock};
///
/// let tmp = tempfile::NamedTempFile::new()?;
/// let open = || std::fs::File::options().read(true).write(true).open(tmp.path());
/// let byte_7 = RangeLock::lock(open()?, LockKind::Exclusive, 7, 1)?;
/// // Another open: the same byte is taken, the next one is free.
/// assert!(RangeLock::try_lock(open()?, LockKind::Exclusive, 7, 1)?.is_none());
/// assert!(RangeLock::try_lock(open()?, LockKind::Exclusive, 8, 1)?.is_some());
/// let file = byte_7.unlock()?; // the descriptor comes back, unlocked
/// # drop(file);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// Unlocking a range releases every lock of the open file description on
/// those bytes: two guards over overlapping ranges of *one* description (or
/// its dups) are one lock, and dropping either unlocks the overlap.
#[must_use = "the range is unlocked as soon as the guard is dropped"]
pub struct RangeLock<F: AsFd> {
    fd: Option<F>,
    kind: LockKind,
    start: u64,
    len: u64,
}

impl<F: AsFd> RangeLock<F> {
    /// `fcntl(fd, F_OFD_SETLKW)` on `l_start = start`, `l_len = len`—lock
    /// the range with `kind`, waiting as long as it takes (`EINTR` is
    /// retried).
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `start + len` does not fit in an `off_t`; else
    /// as [`FileLock::lock`](crate::FileLock::lock): `EBADF` when the
    /// descriptor's access mode does not allow `kind`, `ENOLCK`, `EINVAL`.
    ///
    /// # References
    ///
    /// * [fcntl(2), "Open file description locks"](https://man7.org/linux/man-pages/man2/fcntl.2.html)
    #[doc(alias = "F_OFD_SETLKW")]
    pub fn lock(fd: F, kind: LockKind, start: u64, len: u64) -> io::Result<Self> {
        set_range_lock(fd.as_fd(), Some(kind), Wait::Block, start, len)?;
        Ok(Self::held(fd, kind, start, len))
    }

    /// `fcntl(fd, F_OFD_SETLK)` on the range—lock it if no conflicting lock
    /// overlaps it; `Ok(None)` (and `fd` dropped) when one does.
    ///
    /// # Errors
    ///
    /// As [`RangeLock::lock`], except that contention is not an error.
    #[doc(alias = "F_OFD_SETLK")]
    pub fn try_lock(fd: F, kind: LockKind, start: u64, len: u64) -> io::Result<Option<Self>> {
        Ok(Self::try_lock_or_return(fd, kind, start, len)?.ok())
    }

    /// As [`RangeLock::try_lock`], but hands the descriptor back on
    /// contention: `Ok(Err(fd))`, so a caller can poll with one open.
    ///
    /// # Errors
    ///
    /// As [`RangeLock::lock`], except that contention is not an error.
    pub fn try_lock_or_return(
        fd: F,
        kind: LockKind,
        start: u64,
        len: u64,
    ) -> io::Result<Result<Self, F>> {
        if set_range_lock(fd.as_fd(), Some(kind), Wait::NonBlock, start, len)? {
            Ok(Ok(Self::held(fd, kind, start, len)))
        } else {
            Ok(Err(fd))
        }
    }

    /// Lock byte [`WRITERS_FIRST_LOCK`] of the file with `kind`, waiting,
    /// after passing the gate byte [`WRITERS_FIRST_GATE`]: a writer-
    /// preferring reader-writer lock, when every party uses this call.
    ///
    /// Plain OFD locks prefer readers: the kernel grants a new shared lock
    /// while an exclusive request waits, so a steady stream of overlapping
    /// readers keeps a writer out for as long as it lasts (the crate README
    /// measures it). Here a writer takes the gate exclusively before it
    /// waits for the lock, and keeps it until it has the lock; a reader
    /// takes the gate shared only while it asks for the lock. Once a writer
    /// holds the gate, new readers queue behind it, and it waits only for
    /// the readers already inside. Both take the gate first, so there is
    /// no lock-order deadlock. The gate is released before this returns:
    /// the guard holds the lock byte only.
    ///
    /// All parties must use this call on the file: a [`FileLock`](crate::FileLock)
    /// covers both bytes and bypasses the gate. A reader can still starve a
    /// writer at the gate, but only by holding it across the two calls of
    /// a request, a window of microseconds instead of a whole hold.
    ///
    /// # Errors
    ///
    /// As [`RangeLock::lock`]; the gate is released on every path.
    pub fn lock_writers_first(fd: F, kind: LockKind) -> io::Result<Self> {
        let gate = WRITERS_FIRST_GATE;
        set_range_lock(fd.as_fd(), Some(kind), Wait::Block, gate, 1)?;
        let locked = set_range_lock(fd.as_fd(), Some(kind), Wait::Block, WRITERS_FIRST_LOCK, 1);
        let opened = set_range_lock(fd.as_fd(), None, Wait::NonBlock, gate, 1);
        locked?;
        let held = Self::held(fd, kind, WRITERS_FIRST_LOCK, 1);
        // A gate we could not release is an error the caller must see;
        // dropping `held` unlocks the lock byte then.
        opened?;
        Ok(held)
    }

    /// As [`RangeLock::lock_writers_first`], but waiting at most
    /// `patience` in all: `Ok(Err(fd))` (and both bytes released) when the
    /// gate or the lock byte is still taken then. `Duration::ZERO` makes
    /// one non-blocking try of each.
    ///
    /// `fcntl(F_OFD_SETLK)` tries of the gate, then of the lock byte, with
    /// pauses from 1 ms doubling up to 20 ms in between (OFD locks have no
    /// timed wait). Meant for a writer that may give up, such as a
    /// maintenance task that must not stall the others: while it waits at
    /// the lock byte it holds the gate, so new readers queue behind it as
    /// with [`RangeLock::lock_writers_first`], and readers already inside
    /// drain.
    ///
    /// # Errors
    ///
    /// As [`RangeLock::lock`], except that contention is not an error; the
    /// gate is released on every path.
    #[doc(alias = "F_OFD_SETLK")]
    pub fn try_lock_writers_first(
        fd: F,
        kind: LockKind,
        patience: Duration,
    ) -> io::Result<Result<Self, F>> {
        let deadline = Instant::now() + patience;
        let mut pause = Duration::from_millis(1);
        if !poll_range(fd.as_fd(), kind, WRITERS_FIRST_GATE, deadline, &mut pause)? {
            return Ok(Err(fd));
        }
        let locked = poll_range(fd.as_fd(), kind, WRITERS_FIRST_LOCK, deadline, &mut pause);
        let opened = set_range_lock(fd.as_fd(), None, Wait::NonBlock, WRITERS_FIRST_GATE, 1);
        if !locked? {
            opened?;
            return Ok(Err(fd));
        }
        let held = Self::held(fd, kind, WRITERS_FIRST_LOCK, 1);
        // As in `lock_writers_first`: dropping `held` unlocks the byte.
        opened?;
        Ok(Ok(held))
    }

    fn held(fd: F, kind: LockKind, start: u64, len: u64) -> Self {
        Self {
            fd: Some(fd),
            kind,
            start,
            len,
        }
    }

    /// The kind of lock held now.
    pub fn kind(&self) -> LockKind {
        self.kind
    }

    /// The first byte of the range.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The length of the range; 0 means "to the end of the file".
    #[allow(clippy::len_without_is_empty)] // a lock range is never empty
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The locked descriptor.
    pub fn get_ref(&self) -> &F {
        self.fd.as_ref().expect("descriptor present until unlock")
    }

    /// Convert the held range to `kind` in place, waiting for conflicting
    /// holders (`F_OFD_SETLKW`). The kernel replaces the lock atomically:
    /// no other locker can take the range in between.
    ///
    /// # Errors
    ///
    /// As [`RangeLock::lock`]. On error the lock held before is kept.
    pub fn convert(&mut self, kind: LockKind) -> io::Result<()> {
        if kind != self.kind {
            let (start, len) = (self.start, self.len);
            set_range_lock(self.as_fd(), Some(kind), Wait::Block, start, len)?;
            self.kind = kind;
        }
        Ok(())
    }

    /// Convert the held range to `kind` if that conflicts with no other
    /// holder; `Ok(false)` (and the old lock kept) when it would.
    ///
    /// # Errors
    ///
    /// As [`RangeLock::lock`].
    pub fn try_convert(&mut self, kind: LockKind) -> io::Result<bool> {
        if kind == self.kind {
            return Ok(true);
        }
        let (start, len) = (self.start, self.len);
        let done = set_range_lock(self.as_fd(), Some(kind), Wait::NonBlock, start, len)?;
        if done {
            self.kind = kind;
        }
        Ok(done)
    }

    /// `fcntl(fd, F_OFD_GETLK)` on this guard's range: a lock of another
    /// open file description that a lock of `kind` on it would conflict
    /// with (see [`conflicting_range_lock`]).
    ///
    /// # Errors
    ///
    /// As [`conflicting_range_lock`].
    pub fn conflicting(&self, kind: LockKind) -> io::Result<Option<Conflict>> {
        conflicting_range_lock(self.as_fd(), kind, self.start, self.len)
    }

    /// Release the range by closing the descriptor, without a separate
    /// `F_UNLCK`: as [`FileLock::close`](crate::FileLock::close), this
    /// releases the lock only if `F` is the last descriptor of its open
    /// file description.
    pub fn close(mut self) {
        drop(self.fd.take());
    }

    /// Unlock the range (`F_UNLCK`) and hand the descriptor back.
    ///
    /// # Errors
    ///
    /// Whatever `fcntl` reports; the descriptor is dropped then, which
    /// releases the lock anyway if it was the last one of its open file.
    pub fn unlock(mut self) -> io::Result<F> {
        let fd = self.fd.take().expect("descriptor present until unlock");
        set_range_lock(fd.as_fd(), None, Wait::NonBlock, self.start, self.len)?;
        Ok(fd)
    }
}

/// Try to lock byte `byte` of `fd` with `kind` until `deadline`, pausing
/// `pause` (doubled each time, up to 20 ms) between tries; whether it is
/// held.
fn poll_range(
    fd: BorrowedFd<'_>,
    kind: LockKind,
    byte: u64,
    deadline: Instant,
    pause: &mut Duration,
) -> io::Result<bool> {
    loop {
        if set_range_lock(fd, Some(kind), Wait::NonBlock, byte, 1)? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep((*pause).min(deadline - now));
        *pause = (*pause * 2).min(Duration::from_millis(20));
    }
}

impl<F: AsFd> AsFd for RangeLock<F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl<F: AsFd> fmt::Debug for RangeLock<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeLock")
            .field("fd", &self.fd.as_ref().map(|fd| fd.as_fd()))
            .field("kind", &self.kind)
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl<F: AsFd> Drop for RangeLock<F> {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            // As in `FileLock`: unlock explicitly, since a dup of `fd` may
            // keep the open file description (and the lock) alive. Errors
            // cannot be reported here; the last close releases it anyway.
            let _ = set_range_lock(fd.as_fd(), None, Wait::NonBlock, self.start, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patient_writer_gives_up_with_the_gate_open_or_gets_the_lock() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let open = || {
            std::fs::File::options()
                .read(true)
                .write(true)
                .open(tmp.path())
                .unwrap()
        };
        let reader = RangeLock::lock_writers_first(open(), LockKind::Shared).unwrap();
        let patience = Duration::from_millis(30);
        let started = Instant::now();
        let fd = RangeLock::try_lock_writers_first(open(), LockKind::Exclusive, patience)
            .unwrap()
            .expect_err("a reader is inside");
        assert!(started.elapsed() >= patience);
        // It gave up with the gate open: a new reader passes at once.
        let second = RangeLock::try_lock_writers_first(open(), LockKind::Shared, Duration::ZERO)
            .unwrap()
            .expect("the gate is open");
        drop((reader, second));
        let held = RangeLock::try_lock_writers_first(fd, LockKind::Exclusive, Duration::ZERO)
            .unwrap()
            .expect("nobody inside");
        assert_eq!((held.start(), held.len()), (WRITERS_FIRST_LOCK, 1));
        // The writer holds the lock byte, not the gate: readers wait at
        // the lock byte.
        assert!(
            RangeLock::try_lock(open(), LockKind::Shared, WRITERS_FIRST_GATE, 1)
                .unwrap()
                .is_some()
        );
        assert!(
            RangeLock::try_lock(open(), LockKind::Shared, WRITERS_FIRST_LOCK, 1)
                .unwrap()
                .is_none()
        );
    }
}
