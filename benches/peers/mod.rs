//! The file locks a Rust user chooses between, behind one small trait:
//! `fscache-lock` and its peers (`std::fs::File::lock`, `fd-lock`, `fs4`,
//! `fs2`, `file-guard`, rustix's `fcntl_lock`), each through its own API.
//!
//! Shared by the semantics table's tests (`tests/suite/lock_peers.rs`) and
//! the contention benches (`benches/lock.rs`), so both measure the same
//! calls. The peers are dev-dependencies of the root package only.
//!
//! A lock is taken, held while a closure runs, and released by the peer's
//! own unlock (a guard's `Drop` or an `unlock` call): `fd-lock`'s guards
//! borrow their `RwLock`, so a closure is the one shape every peer fits.
#![allow(dead_code)]
// The peers are what the root `clippy.toml` forbids everywhere else: the
// process-associated locks (std's `File::lock`, rustix's `fcntl_lock`)
// this module exists to compare `fscache-lock` with.
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use fscache_lock::{FileLock, LockKind, RangeLock};

/// Which kernel lock a peer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Open-file-description locks (`F_OFD_SETLK`).
    Ofd,
    /// `flock(2)`: per open file description, a table of its own.
    Flock,
    /// Classic process-associated POSIX record locks (`F_SETLK`).
    Posix,
}

/// Whether a lock request waits for conflicting holders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Block until granted.
    Block,
    /// Fail at once (`Ok(false)` from [`Peer::with`]).
    Try,
}

/// One file-lock crate, driven through its own API.
pub trait Peer: Sync {
    /// The crate's name, as in the table's column heads.
    fn name(&self) -> &'static str;

    /// The kernel lock it takes.
    fn family(&self) -> Family;

    /// Lock the whole file behind `file` with `kind`, run `body` while it
    /// is held, then release it; `Ok(false)` (and `body` not run) when
    /// [`Wait::Try`] met a conflicting lock.
    fn with(
        &self,
        file: &File,
        kind: LockKind,
        wait: Wait,
        body: &mut dyn FnMut(),
    ) -> io::Result<bool>;

    /// As [`Peer::with`] on the bytes `start..start + len`; `None` when the
    /// crate has no byte-range locks.
    fn with_range(
        &self,
        file: &File,
        kind: LockKind,
        start: u64,
        len: u64,
        body: &mut dyn FnMut(),
    ) -> Option<io::Result<bool>> {
        let _ = (file, kind, start, len, body);
        None
    }

    /// Hold a shared lock through `file`, then upgrade it to exclusive the
    /// best way the crate offers without waiting, and run `then(upgraded)`
    /// with whatever is held afterwards; release it all at the end.
    fn try_upgrade(&self, file: &File, then: &mut dyn FnMut(bool)) -> io::Result<()>;
}

/// Whether an error means "held by someone else" for a non-blocking
/// request: `EWOULDBLOCK`/`EAGAIN`, or `EACCES` (which `F_SETLK` may
/// return instead).
pub fn contended(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
        || matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES))
}

/// `Ok(true)` for `Ok`, `Ok(false)` for contention, else the error.
fn granted<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if contended(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `fscache-lock`: OFD locks.
pub struct Ours;

impl Peer for Ours {
    fn name(&self) -> &'static str {
        "fscache-lock"
    }
    fn family(&self) -> Family {
        Family::Ofd
    }
    fn with(
        &self,
        file: &File,
        kind: LockKind,
        wait: Wait,
        body: &mut dyn FnMut(),
    ) -> io::Result<bool> {
        let held = match wait {
            Wait::Block => Some(FileLock::lock(file, kind)?),
            Wait::Try => FileLock::try_lock(file, kind)?,
        };
        let Some(held) = held else { return Ok(false) };
        body();
        held.unlock()?;
        Ok(true)
    }
    fn with_range(
        &self,
        file: &File,
        kind: LockKind,
        start: u64,
        len: u64,
        body: &mut dyn FnMut(),
    ) -> Option<io::Result<bool>> {
        Some((|| {
            let Some(held) = RangeLock::try_lock(file, kind, start, len)? else {
                return Ok(false);
            };
            body();
            held.unlock()?;
            Ok(true)
        })())
    }
    fn try_upgrade(&self, file: &File, then: &mut dyn FnMut(bool)) -> io::Result<()> {
        let mut held = FileLock::lock(file, LockKind::Shared)?;
        let upgraded = held.try_convert(LockKind::Exclusive)?;
        then(upgraded);
        held.unlock().map(drop)
    }
}

/// `std::fs::File::lock`, `lock_shared`, `try_lock`, `try_lock_shared`,
/// `unlock` (Rust 1.89; `flock(2)` on Linux).
pub struct Std;

// `File::lock` is newer (1.89) than the workspace's rust-version (1.85):
// only these tests and benches use it, and the toolchain that runs them
// has it.
#[allow(clippy::incompatible_msrv)]
impl Peer for Std {
    fn name(&self) -> &'static str {
        "std"
    }
    fn family(&self) -> Family {
        Family::Flock
    }
    fn with(
        &self,
        file: &File,
        kind: LockKind,
        wait: Wait,
        body: &mut dyn FnMut(),
    ) -> io::Result<bool> {
        let got = match (wait, kind) {
            (Wait::Block, LockKind::Exclusive) => file.lock().map(|()| true)?,
            (Wait::Block, LockKind::Shared) => file.lock_shared().map(|()| true)?,
            (Wait::Try, kind) => {
                let r = match kind {
                    LockKind::Exclusive => file.try_lock(),
                    LockKind::Shared => file.try_lock_shared(),
                };
                match r {
                    Ok(()) => true,
                    Err(std::fs::TryLockError::WouldBlock) => false,
                    Err(std::fs::TryLockError::Error(e)) => return Err(e),
                }
            }
        };
        if got {
            body();
            file.unlock()?;
        }
        Ok(got)
    }
    fn try_upgrade(&self, file: &File, then: &mut dyn FnMut(bool)) -> io::Result<()> {
        file.lock_shared()?;
        // std leaves relocking a locked handle unspecified; on Linux it is
        // flock(2)'s conversion.
        let upgraded = match file.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => false,
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        };
        then(upgraded);
        file.unlock()
    }
}

/// `fd_lock::RwLock` (`flock(2)`): `read`, `write`, `try_read`, `try_write`.
pub struct FdLock;

impl Peer for FdLock {
    fn name(&self) -> &'static str {
        "fd-lock"
    }
    fn family(&self) -> Family {
        Family::Flock
    }
    fn with(
        &self,
        file: &File,
        kind: LockKind,
        wait: Wait,
        body: &mut dyn FnMut(),
    ) -> io::Result<bool> {
        let mut lock = fd_lock::RwLock::new(file);
        match kind {
            LockKind::Shared => {
                let guard = match wait {
                    Wait::Block => Some(lock.read()?),
                    Wait::Try => granted(lock.try_read())?,
                };
                let Some(guard) = guard else { return Ok(false) };
                body();
                drop(guard);
            }
            LockKind::Exclusive => {
                let guard = match wait {
                    Wait::Block => Some(lock.write()?),
                    Wait::Try => granted(lock.try_write())?,
                };
                let Some(guard) = guard else { return Ok(false) };
                body();
                drop(guard);
            }
        }
        Ok(true)
    }
    fn try_upgrade(&self, file: &File, then: &mut dyn FnMut(bool)) -> io::Result<()> {
        let mut lock = fd_lock::RwLock::new(file);
        // No upgrade: a read guard borrows the lock, `try_write` needs it
        // mutably, so the read guard must go first.
        drop(lock.read()?);
        match granted(lock.try_write())? {
            Some(guard) => {
                then(true);
                drop(guard);
            }
            None => then(false),
        }
        Ok(())
    }
}

/// `fs4::fs_std::FileExt` (`flock(2)`): `lock_exclusive`, `lock_shared`,
/// `try_lock_*` (`Ok(false)` when contended), `unlock`.
pub struct Fs4;

impl Peer for Fs4 {
    fn name(&self) -> &'static str {
        "fs4"
    }
    fn family(&self) -> Family {
        Family::Flock
    }
    fn with(
        &self,
        file: &File,
        kind: LockKind,
        wait: Wait,
        body: &mut dyn FnMut(),
    ) -> io::Result<bool> {
        use fs4::fs_std::FileExt;
        let got = match (wait, kind) {
            (Wait::Block, LockKind::Exclusive) => FileExt::lock_exclusive(file).map(|()| true)?,
            (Wait::Block, LockKind::Shared) => FileExt::lock_shared(file).map(|()| true)?,
            (Wait::Try, LockKind::Exclusive) => FileExt::try_lock_exclusive(file)?,
            (Wait::Try, LockKind::Shared) => FileExt::try_lock_shared(file)?,
        };
        if got {
            body();
            FileExt::unlock(file)?;
        }
        Ok(got)
    }
    fn try_upgrade(&self, file: &File, then: &mut dyn FnMut(bool)) -> io::Result<()> {
        use fs4::fs_std::FileExt;
        FileExt::lock_shared(file)?;
        let upgraded = FileExt::try_lock_exclusive(file)?;
        then(upgraded);
        FileExt::unlock(file)
    }
}

/// `fs2::FileExt` (`flock(2)`): as `fs4`, but `try_lock_*` fails with
/// `WouldBlock` when contended.
pub struct Fs2;

impl Peer for Fs2 {
    fn name(&self) -> &'static str {
        "fs2"
    }
    fn family(&self) -> Family {
        Family::Flock
    }
    fn with(
        &self,
        file: &File,
        kind: LockKind,
        wait: Wait,
        body: &mut dyn FnMut(),
    ) -> io::Result<bool> {
        use fs2::FileExt;
        let got = match (wait, kind) {
            (Wait::Block, LockKind::Exclusive) => Some(FileExt::lock_exclusive(file)?),
            (Wait::Block, LockKind::Shared) => Some(FileExt::lock_shared(file)?),
            (Wait::Try, LockKind::Exclusive) => granted(FileExt::try_lock_exclusive(file))?,
            (Wait::Try, LockKind::Shared) => granted(FileExt::try_lock_shared(file))?,
        };
        if got.is_some() {
            body();
            FileExt::unlock(file)?;
        }
        Ok(got.is_some())
    }
    fn try_upgrade(&self, file: &File, then: &mut dyn FnMut(bool)) -> io::Result<()> {
        use fs2::FileExt;
        FileExt::lock_shared(file)?;
        let upgraded = granted(FileExt::try_lock_exclusive(file))?.is_some();
        then(upgraded);
        FileExt::unlock(file)
    }
}

/// `file_guard` (POSIX `F_SETLK` byte ranges): `lock`, `try_lock` →
/// `FileGuard`, `FileGuardExt::try_upgrade`, `downgrade`.
pub struct FileGuard;

/// `file-guard` refuses `len` 0; this is "to the end of any file".
const FILE_GUARD_WHOLE: usize = i64::MAX as usize;

fn file_guard_kind(kind: LockKind) -> file_guard::Lock {
    match kind {
        LockKind::Shared => file_guard::Lock::Shared,
        LockKind::Exclusive => file_guard::Lock::Exclusive,
    }
}

impl FileGuard {
    fn range(
        file: &File,
        kind: LockKind,
        wait: Wait,
        start: usize,
        len: usize,
        body: &mut dyn FnMut(),
    ) -> io::Result<bool> {
        let kind = file_guard_kind(kind);
        let guard = match wait {
            Wait::Block => Some(file_guard::lock(file, kind, start, len)?),
            Wait::Try => granted(file_guard::try_lock(file, kind, start, len))?,
        };
        let Some(guard) = guard else { return Ok(false) };
        body();
        drop(guard);
        Ok(true)
    }
}

impl Peer for FileGuard {
    fn name(&self) -> &'static str {
        "file-guard"
    }
    fn family(&self) -> Family {
        Family::Posix
    }
    fn with(
        &self,
        file: &File,
        kind: LockKind,
        wait: Wait,
        body: &mut dyn FnMut(),
    ) -> io::Result<bool> {
        Self::range(file, kind, wait, 0, FILE_GUARD_WHOLE, body)
    }
    fn with_range(
        &self,
        file: &File,
        kind: LockKind,
        start: u64,
        len: u64,
        body: &mut dyn FnMut(),
    ) -> Option<io::Result<bool>> {
        let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
            return Some(Err(io::ErrorKind::InvalidInput.into()));
        };
        Some(Self::range(file, kind, Wait::Try, start, len, body))
    }
    fn try_upgrade(&self, file: &File, then: &mut dyn FnMut(bool)) -> io::Result<()> {
        use file_guard::os::unix::FileGuardExt;
        let mut guard = file_guard::lock(file, file_guard::Lock::Shared, 0, FILE_GUARD_WHOLE)?;
        let upgraded = granted(guard.try_upgrade())?.is_some();
        then(upgraded);
        drop(guard);
        Ok(())
    }
}

/// `rustix::fs::fcntl_lock` (POSIX `F_SETLK` on the whole file) with
/// `FlockOperation`.
pub struct Rustix;

impl Peer for Rustix {
    fn name(&self) -> &'static str {
        "rustix"
    }
    fn family(&self) -> Family {
        Family::Posix
    }
    fn with(
        &self,
        file: &File,
        kind: LockKind,
        wait: Wait,
        body: &mut dyn FnMut(),
    ) -> io::Result<bool> {
        use rustix::fs::{fcntl_lock, FlockOperation as Op};
        let op = match (wait, kind) {
            (Wait::Block, LockKind::Exclusive) => Op::LockExclusive,
            (Wait::Block, LockKind::Shared) => Op::LockShared,
            (Wait::Try, LockKind::Exclusive) => Op::NonBlockingLockExclusive,
            (Wait::Try, LockKind::Shared) => Op::NonBlockingLockShared,
        };
        if granted(fcntl_lock(file.as_fd(), op).map_err(io::Error::from))?.is_none() {
            return Ok(false);
        }
        body();
        fcntl_lock(file.as_fd(), Op::Unlock)?;
        Ok(true)
    }
    fn try_upgrade(&self, file: &File, then: &mut dyn FnMut(bool)) -> io::Result<()> {
        use rustix::fs::{fcntl_lock, FlockOperation as Op};
        fcntl_lock(file.as_fd(), Op::LockShared)?;
        let r = fcntl_lock(file.as_fd(), Op::NonBlockingLockExclusive).map_err(io::Error::from);
        then(granted(r)?.is_some());
        fcntl_lock(file.as_fd(), Op::Unlock)?;
        Ok(())
    }
}

/// `fscache-lock`'s writer-preferring option
/// ([`RangeLock::lock_writers_first`]: a gate byte before the lock byte);
/// benchmarked beside the others, not a column of the semantics table.
pub struct OursWritersFirst;

impl Peer for OursWritersFirst {
    fn name(&self) -> &'static str {
        "writers-first"
    }
    fn family(&self) -> Family {
        Family::Ofd
    }
    fn with(
        &self,
        file: &File,
        kind: LockKind,
        wait: Wait,
        body: &mut dyn FnMut(),
    ) -> io::Result<bool> {
        let held = match wait {
            Wait::Block => RangeLock::lock_writers_first(file, kind)?,
            // Only blocking requests go through the gate; a try asks the
            // lock byte alone.
            Wait::Try => {
                match RangeLock::try_lock(file, kind, fscache_lock::WRITERS_FIRST_LOCK, 1)? {
                    Some(held) => held,
                    None => return Ok(false),
                }
            }
        };
        body();
        held.unlock()?;
        Ok(true)
    }
    fn try_upgrade(&self, file: &File, then: &mut dyn FnMut(bool)) -> io::Result<()> {
        let mut held = RangeLock::lock_writers_first(file, LockKind::Shared)?;
        then(held.try_convert(LockKind::Exclusive)?);
        held.unlock().map(drop)
    }
}

/// Every peer, ours first, in the order of the table's columns.
pub const ALL: [&dyn Peer; 7] = [&Ours, &Std, &FdLock, &Fs4, &Fs2, &FileGuard, &Rustix];

/// What the benches compare: [`ALL`] and ours with writers first.
pub const BENCHED: [&dyn Peer; 8] = [
    &Ours,
    &OursWritersFirst,
    &Std,
    &FdLock,
    &Fs4,
    &Fs2,
    &FileGuard,
    &Rustix,
];

/// The peer named `name`, of [`BENCHED`].
pub fn by_name(name: &str) -> Option<&'static dyn Peer> {
    BENCHED.into_iter().find(|p| p.name() == name)
}
