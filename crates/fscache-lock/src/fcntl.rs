//! The one `unsafe` call of the crate: `fcntl` with a `struct flock`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::LockKind;

/// Whether a lock request waits for conflicting holders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// `F_OFD_SETLKW`: sleep until the lock is granted (`EINTR` retried).
    Block,
    /// `F_OFD_SETLK`: fail at once when a conflicting lock is held.
    NonBlock,
}

/// `fcntl(fd, F_OFD_SETLK[W], &flock)`—set (`Some(kind)`) or clear (`None`)
/// the whole-file OFD lock of `fd`'s open file description.
///
/// Returns `Ok(true)` when the lock was set, `Ok(false)` when
/// [`Wait::NonBlock`] met a conflicting lock (`EAGAIN`/`EACCES`). Unlocking
/// always returns `Ok(true)`.
///
/// # Errors
///
/// Any other `fcntl` error, e.g. `EBADF` when the descriptor's access mode
/// does not allow the lock kind.
///
/// # References
///
/// * [fcntl(2)](https://man7.org/linux/man-pages/man2/fcntl.2.html)
#[doc(alias = "F_OFD_SETLK")]
#[doc(alias = "F_OFD_SETLKW")]
pub fn set_lock(fd: BorrowedFd<'_>, kind: Option<LockKind>, wait: Wait) -> io::Result<bool> {
    set_range_lock(fd, kind, wait, 0, 0)
}

/// `fcntl(fd, F_OFD_SETLK[W], &flock)` on the byte range `start..start+len`
/// (`len` 0: to the end of the file, however it grows)—set or clear an
/// OFD lock on part of a file, as [`set_lock`] does on all of it.
///
/// Ranges need not lie inside the file: a range far past its end is a
/// cheap way to give many independent names a lock each in one file. The
/// range's end must fit in an `off_t` (`start + len <= i64::MAX`).
///
/// # Errors
///
/// As [`set_lock`]; `InvalidInput` when the range does not fit in `off_t`.
///
/// # References
///
/// * [fcntl(2)](https://man7.org/linux/man-pages/man2/fcntl.2.html),
///   "Open file description locks (non-POSIX)"
#[doc(alias = "F_OFD_SETLK")]
pub fn set_range_lock(
    fd: BorrowedFd<'_>,
    kind: Option<LockKind>,
    wait: Wait,
    start: u64,
    len: u64,
) -> io::Result<bool> {
    let cmd = match wait {
        Wait::Block => libc::F_OFD_SETLKW,
        Wait::NonBlock => libc::F_OFD_SETLK,
    };
    let mut lock = range(kind.map_or(libc::F_UNLCK, l_type), start, len)?;
    loop {
        match fcntl_flock(fd, cmd, &mut lock) {
            Ok(()) => return Ok(true),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::EACCES) if wait == Wait::NonBlock => {
                    return Ok(false)
                }
                _ => return Err(e),
            },
        }
    }
}

/// `fcntl(fd, F_OFD_GETLK)`—the kind of an existing lock, held through
/// another open file description, that a lock of `kind` on `fd` would
/// conflict with; `None` when it would be granted now.
///
/// The answer may be stale as soon as it returns; use it for reports, not
/// for decisions a lock should make.
///
/// # Errors
///
/// Whatever `fcntl` reports (`EBADF`, `EINVAL`) other than `EINTR`, which
/// is retried.
#[doc(alias = "F_OFD_GETLK")]
pub fn conflicting_lock(fd: BorrowedFd<'_>, kind: LockKind) -> io::Result<Option<LockKind>> {
    Ok(conflicting_range_lock(fd, kind, 0, 0)?.map(|c| c.kind))
}

/// Who holds a lock that [`conflicting_range_lock`] reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockOwner {
    /// An open file description (an OFD lock: ours, osbuild's): the kernel
    /// reports `l_pid = -1`, since such a lock belongs to no process.
    OpenFile,
    /// The process with this pid, holding a classic process-associated
    /// `F_SETLK` lock (the two kinds share one lock table and conflict).
    Process(i32),
}

/// A lock that a requested one would conflict with: what `F_OFD_GETLK`
/// writes back into its `struct flock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conflict {
    /// The kind of the conflicting lock.
    pub kind: LockKind,
    /// Its first byte.
    pub start: u64,
    /// Its length; 0 means "to the end of the file".
    pub len: u64,
    /// Who holds it.
    pub owner: LockOwner,
}

/// `fcntl(fd, F_OFD_GETLK)` on `start..start+len`—the first existing lock,
/// held through another open file description or by a process's classic
/// `F_SETLK`, that a lock of `kind` on that range would conflict with;
/// `None` when it would be granted now. `flock(2)` locks are a separate
/// table and never show here.
///
/// As with [`conflicting_lock`], the answer may be stale at once.
///
/// # Errors
///
/// As [`set_range_lock`] (`InvalidInput` for a range past `off_t`).
///
/// # References
///
/// * [fcntl(2)](https://man7.org/linux/man-pages/man2/fcntl.2.html):
///   "`F_OFD_GETLK` … `l_pid` … set to -1" for OFD locks
#[doc(alias = "F_OFD_GETLK")]
pub fn conflicting_range_lock(
    fd: BorrowedFd<'_>,
    kind: LockKind,
    start: u64,
    len: u64,
) -> io::Result<Option<Conflict>> {
    let mut lock = range(l_type(kind), start, len)?;
    // Interrupted, the kernel has not filled `lock` in: ask again.
    while let Err(e) = fcntl_flock(fd, libc::F_OFD_GETLK, &mut lock) {
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    let kind = match i32::from(lock.l_type) {
        libc::F_RDLCK => LockKind::Shared,
        libc::F_WRLCK => LockKind::Exclusive,
        _ => return Ok(None),
    };
    Ok(Some(Conflict {
        kind,
        // The kernel reports a range it holds, so both are non-negative.
        start: u64::try_from(lock.l_start).unwrap_or(0),
        len: u64::try_from(lock.l_len).unwrap_or(0),
        owner: match lock.l_pid {
            -1 => LockOwner::OpenFile,
            pid => LockOwner::Process(pid),
        },
    }))
}

fn l_type(kind: LockKind) -> libc::c_int {
    match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
    }
}

/// The `struct flock` of `start..start+len` from `SEEK_SET` (`l_start = 0`
/// and `l_len = 0`: the whole file, however it grows). OFD commands require
/// `l_pid = 0`. `InvalidInput` when the range's end does not fit `off_t`.
fn range(l_type: libc::c_int, start: u64, len: u64) -> io::Result<libc::flock> {
    let (Ok(l_start), Ok(l_len)) = (libc::off_t::try_from(start), libc::off_t::try_from(len))
    else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    if l_start.checked_add(l_len).is_none() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    Ok(libc::flock {
        l_type: l_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start,
        l_len,
        l_pid: 0,
    })
}

/// Issue one `fcntl` lock command. The only `unsafe` in the crate.
#[allow(unsafe_code)]
fn fcntl_flock(fd: BorrowedFd<'_>, cmd: libc::c_int, lock: &mut libc::flock) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor for the duration of the borrow, and
    // `lock` is a valid, exclusively borrowed `struct flock` that the lock
    // commands (F_OFD_SETLK, F_OFD_SETLKW, F_OFD_GETLK) read and, for
    // GETLK, write; the kernel does not keep the pointer.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, lock as *mut libc::flock) };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
