//! Options and answers of a locked open ([`CacheDir::lock`](crate::CacheDir::lock),
//! [`CacheDir::try_lock`](crate::CacheDir::try_lock)).

use fscache_lock::LockKind;

use crate::LockedFile;

/// How a locked open opens and locks, in the style of cap-std's
/// `OpenOptions`: start from [`LockOptions::shared`] or
/// [`LockOptions::exclusive`] and add what is needed.
///
/// A shared lock opens read-only, an exclusive one read-write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOptions {
    pub(crate) kind: LockKind,
    pub(crate) read_write: bool,
    pub(crate) noatime: bool,
}

impl LockOptions {
    /// A shared (read) lock, opened `O_RDONLY`.
    pub fn shared() -> Self {
        Self {
            kind: LockKind::Shared,
            read_write: false,
            noatime: false,
        }
    }

    /// An exclusive (write) lock, opened `O_RDWR`.
    pub fn exclusive() -> Self {
        Self {
            kind: LockKind::Exclusive,
            read_write: true,
            noatime: false,
        }
    }

    /// Open `O_RDWR` whatever the lock, so a shared lock can later be
    /// converted to exclusive on the same descriptor (the lock needs no
    /// write access, the conversion does).
    pub fn read_write(mut self) -> Self {
        self.read_write = true;
        self
    }

    /// Open with `O_NOATIME` where permitted, so the open does not disturb
    /// the atime it may inspect; where the kernel refuses it (`EPERM`: we
    /// neither own the file nor have `CAP_FOWNER`) the open is retried
    /// without it.
    pub fn noatime(mut self) -> Self {
        self.noatime = true;
        self
    }

    /// The lock this takes.
    pub fn kind(&self) -> LockKind {
        self.kind
    }
}

/// What a non-blocking locked open ([`CacheDir::try_lock`](crate::CacheDir::try_lock))
/// found.
#[derive(Debug)]
#[must_use = "a `Locked` answer holds the lock until dropped"]
pub enum TryLocked {
    /// The lock is held, on the file the path names now.
    Locked(LockedFile),
    /// Another open file holds a conflicting lock.
    Busy,
    /// The path (or a directory on its way) does not exist: `ENOENT` or
    /// `ENOTDIR` on open. Common for lookups, so no `io::Error` is built.
    Absent,
}

impl TryLocked {
    /// The locked file, or `None` when busy or absent.
    pub fn locked(self) -> Option<LockedFile> {
        match self {
            TryLocked::Locked(l) => Some(l),
            TryLocked::Busy | TryLocked::Absent => None,
        }
    }
}
