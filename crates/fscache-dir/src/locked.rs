//! Locked open: open (never create) → lock → check that the path still
//! names the locked file → retry ([`CacheDir::lock`](crate::CacheDir::lock),
//! [`CacheDir::try_lock`](crate::CacheDir::try_lock),
//! [`CacheDir::try_claim`](crate::CacheDir::try_claim)), and its options and
//! answers.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fscache_lock::{FileLock, LockKind, Wait};
use rustix::fs::{AtFlags, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::hook::HookPoint;
use crate::CacheDir;

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

/// A locked file and what `fstat` said of it after the lock was taken.
#[derive(Debug)]
#[must_use = "the lock is released as soon as this drops"]
pub struct LockedFile {
    /// The held lock, owning the descriptor.
    pub lock: FileLock<OwnedFd>,
    /// `fstat` of the descriptor, taken after locking.
    pub stat: Stat,
}

/// What a locked open does when the path is absent.
enum Absence<'a> {
    /// Report `ENOENT`/`ENOTDIR` as an error.
    Error,
    /// Answer `None` and set the flag, without building an error.
    Note(&'a mut bool),
}

/// Where the path of a locked open starts.
#[derive(Clone, Copy)]
enum Base<'a> {
    /// The cache root: `rel` is resolved beneath it (`openat2` with
    /// `RESOLVE_BENEATH`, or cap-std).
    Root(&'a Path),
    /// The held `objects/` descriptor: `rel` (`NAME/object.lock`, of a
    /// validated name) is resolved beneath it, one lookup less than from
    /// the root, and passed to the kernel as the C string it already is.
    Objects(BorrowedFd<'a>, &'a CStr),
}

impl Base<'_> {
    /// The path relative to `objects/` or the root, as given.
    fn given(&self) -> &Path {
        match *self {
            Base::Root(rel) => rel,
            Base::Objects(_, rel) => Path::new(OsStr::from_bytes(rel.to_bytes())),
        }
    }

    /// The path relative to the root, for errors and hooks (built only
    /// for them).
    fn rel(&self) -> PathBuf {
        match *self {
            Base::Root(rel) => rel.to_path_buf(),
            Base::Objects(..) => Path::new(crate::layout::OBJECTS).join(self.given()),
        }
    }

    fn err(&self, cache: &CacheDir, op: &'static str, e: impl Into<io::Error>) -> io::Error {
        cache.err(op, &self.rel(), e)
    }

    /// Run the test hook at `point` with the root-relative path (without
    /// the `test-hooks` feature, or without a hook installed, nothing: the
    /// path is built only for a hook).
    #[inline(always)]
    fn hook(&self, cache: &CacheDir, point: HookPoint) {
        #[cfg(feature = "test-hooks")]
        if cache.hook.is_some() {
            match *self {
                Base::Root(rel) => cache.hook(point, rel),
                Base::Objects(..) => cache.hook(point, &self.rel()),
            }
        }
        #[cfg(not(feature = "test-hooks"))]
        let _ = (cache, point);
    }

    fn open(&self, cache: &CacheDir, flags: OFlags, noatime: bool) -> rustix::io::Result<OwnedFd> {
        match *self {
            Base::Root(rel) if noatime => open_noatime_raw(cache, rel, flags),
            Base::Root(rel) => cache.open_errno(rel, flags, Mode::empty()),
            Base::Objects(fd, rel) => {
                let open = |flags| crate::beneath::open_beneath_fd_errno(cache, fd, rel, flags);
                match open(
                    flags
                        | if noatime {
                            OFlags::NOATIME
                        } else {
                            OFlags::empty()
                        },
                ) {
                    // open(2): O_NOATIME needs ownership or CAP_FOWNER.
                    Err(Errno::PERM) if noatime => open(flags),
                    other => other,
                }
            }
        }
    }

    /// `fstatat` of the path (no symlink followed at its end).
    fn stat(&self, cache: &CacheDir) -> rustix::io::Result<Stat> {
        rustix::io::retry_on_intr(|| match *self {
            Base::Root(rel) => rustix::fs::statat(&cache.dir, rel, AtFlags::SYMLINK_NOFOLLOW),
            Base::Objects(fd, rel) => rustix::fs::statat(fd, rel, AtFlags::SYMLINK_NOFOLLOW),
        })
    }
}

/// See [`CacheDir::lock`].
pub(crate) fn lock(cache: &CacheDir, rel: &Path, opts: LockOptions) -> io::Result<LockedFile> {
    match locked_open(cache, Base::Root(rel), opts, Wait::Block, Absence::Error)? {
        Some(locked) => Ok(locked),
        // `FileLock::lock` waits: it never reports contention.
        None => Err(cache.err("lock", rel, io::Error::from(io::ErrorKind::WouldBlock))),
    }
}

/// See [`CacheDir::try_lock`].
pub(crate) fn try_lock(cache: &CacheDir, rel: &Path, opts: LockOptions) -> io::Result<TryLocked> {
    try_lock_at(cache, Base::Root(rel), opts)
}

/// See [`CacheDir::try_lock_object`].
pub(crate) fn try_lock_object(
    cache: &CacheDir,
    objects: BorrowedFd<'_>,
    rel: &CStr,
    opts: LockOptions,
) -> io::Result<TryLocked> {
    try_lock_at(cache, Base::Objects(objects, rel), opts)
}

fn try_lock_at(cache: &CacheDir, base: Base<'_>, opts: LockOptions) -> io::Result<TryLocked> {
    let mut absent = false;
    let locked = locked_open(
        cache,
        base,
        opts,
        Wait::NonBlock,
        Absence::Note(&mut absent),
    )?;
    Ok(match locked {
        Some(locked) => TryLocked::Locked(locked),
        None if absent => TryLocked::Absent,
        None => TryLocked::Busy,
    })
}

/// See [`CacheDir::try_claim`].
pub(crate) fn try_claim(cache: &CacheDir, rel: &Path) -> io::Result<TryLocked> {
    let fd = match cache.open_errno(
        rel,
        OFlags::RDWR | OFlags::CREATE | OFlags::NONBLOCK,
        Mode::from_raw_mode(0o644),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(TryLocked::Absent),
        Err(e) => return Err(cache.err("open", rel, e)),
    };
    cache.hook(HookPoint::LockedOpenLock, rel);
    let lock = match FileLock::try_lock(fd, LockKind::Exclusive) {
        Ok(Some(lock)) => lock,
        Ok(None) => return Ok(TryLocked::Busy),
        Err(e) => return Err(cache.err("lock", rel, e)),
    };
    let st = rustix::io::retry_on_intr(|| rustix::fs::fstat(&lock))
        .map_err(|e| cache.err("fstat", rel, e))?;
    match rustix::io::retry_on_intr(|| {
        rustix::fs::statat(&cache.dir, rel, AtFlags::SYMLINK_NOFOLLOW)
    }) {
        Ok(p) if p.st_dev == st.st_dev && p.st_ino == st.st_ino && st.st_nlink > 0 => {
            Ok(TryLocked::Locked(LockedFile { lock, stat: st }))
        }
        Ok(_) => Ok(TryLocked::Busy),
        Err(Errno::NOENT | Errno::NOTDIR | Errno::STALE) => Ok(TryLocked::Absent),
        Err(e) => Err(cache.err("stat", rel, e)),
    }
}

/// The loop of every locked open: open (never create) → lock → still
/// linked? → retry. `None` when a non-blocking lock met contention or
/// (with [`Absence::Note`]) the path is absent.
fn locked_open(
    cache: &CacheDir,
    base: Base<'_>,
    opts: LockOptions,
    wait: Wait,
    mut absence: Absence<'_>,
) -> io::Result<Option<LockedFile>> {
    let access = if opts.read_write {
        OFlags::RDWR
    } else {
        OFlags::RDONLY
    };
    // O_NONBLOCK: a FIFO planted where a lock file belongs must not hang
    // the open; on a regular file it changes nothing.
    let flags = access | OFlags::NONBLOCK;
    loop {
        base.hook(cache, HookPoint::LockedOpenOpen);
        let fd = match (base.open(cache, flags, opts.noatime), &mut absence) {
            (Ok(fd), _) => fd,
            (Err(Errno::NOENT | Errno::NOTDIR), Absence::Note(absent)) => {
                **absent = true;
                return Ok(None);
            }
            (Err(e), _) => return Err(base.err(cache, "open", e)),
        };
        base.hook(cache, HookPoint::LockedOpenLock);
        let lock = match wait {
            // Try first: free is the common case and costs the same one
            // fcntl; a wait is then timed and reported.
            Wait::Block => match FileLock::try_lock_or_return(fd, opts.kind) {
                Ok(Ok(lock)) => Ok(lock),
                Ok(Err(fd)) => {
                    let started = Instant::now();
                    let lock = FileLock::lock(fd, opts.kind);
                    if let Some(observe) = &cache.waits {
                        observe(&base.rel(), started.elapsed());
                    }
                    lock
                }
                Err(e) => Err(e),
            },
            Wait::NonBlock => match FileLock::try_lock(fd, opts.kind) {
                Ok(Some(lock)) => Ok(lock),
                Ok(None) => return Ok(None),
                Err(e) => Err(e),
            },
        }
        .map_err(|e| base.err(cache, "lock", e))?;
        if let Some(stat) = still_linked(cache, base, &lock)? {
            return Ok(Some(LockedFile { lock, stat }));
        }
        // Replaced or unlinked between open and lock: drop and retry.
    }
}

/// Whether the locked descriptor is still the file `rel` names:
/// `Some(fstat)` if so. Locally a link count above zero proves it
/// (protocol files are never moved once linked, and are unlinked when
/// replaced); on NFS the unlinked file is silly-renamed and keeps its
/// link count, so the path is compared.
fn still_linked(cache: &CacheDir, base: Base<'_>, fd: &impl AsFd) -> io::Result<Option<Stat>> {
    let st = match rustix::io::retry_on_intr(|| rustix::fs::fstat(fd)) {
        Ok(st) => st,
        Err(Errno::STALE) => return Ok(None),
        Err(e) => return Err(base.err(cache, "fstat", e)),
    };
    if !cache.nfs {
        return Ok((st.st_nlink > 0).then_some(st));
    }
    match base.stat(cache) {
        Ok(p) if p.st_dev == st.st_dev && p.st_ino == st.st_ino => Ok(Some(st)),
        Ok(_) | Err(Errno::NOENT) | Err(Errno::STALE) => Ok(None),
        Err(e) => Err(base.err(cache, "stat", e)),
    }
}

pub(crate) fn open_noatime_raw(
    cache: &CacheDir,
    rel: &Path,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    match cache.open_errno(rel, flags | OFlags::NOATIME, Mode::empty()) {
        // open(2): O_NOATIME needs ownership or CAP_FOWNER.
        Err(Errno::PERM) => cache.open_errno(rel, flags, Mode::empty()),
        other => other,
    }
}
