//! Single flight: `load_or_build`, where of several processes that miss on
//! one name at once, one builds and the others wait, then load.
//!
//! The build lock of a name is a one-byte OFD lock in `ROOT/build.lock`, at
//! an offset derived from the name (62 bits of its SHA-256). One file
//! serves every name, nothing is created per name (so nothing is left
//! behind), and the lock dies with its holder. osbuild never opens
//! `build.lock`, so it is unaffected: it neither waits nor is waited for.
//!
//! A build that calls `load_or_build` of its own name would wait for
//! itself forever (a second open file description of `build.lock` conflicts
//! with the first, even in one process). Each thread keeps the build locks
//! it holds (the inode of `build.lock` and the byte), so that call is
//! [`Error::Reentrant`] instead of a hang.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fscache_dir::{stat, EntryName};
use fscache_lock::{LockKind, RangeLock};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::guards::Obtained;
use crate::handle::FsCache;
use crate::load::Counting;

/// The file whose byte ranges are the per-name build locks.
pub const BUILD_LOCK: &str = "build.lock";

/// How [`FsCache::load_or_build_with`] waits for another builder.
///
/// ```
/// use std::sync::{atomic::AtomicBool, Arc};
/// use std::time::Duration;
///
/// let stop = Arc::new(AtomicBool::new(false)); // set it from a signal handler
/// let opts = fscache::BuildOptions::default()
///     .wait_at_most(Duration::from_secs(600))
///     .cancel_on(stop);
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    wait: Option<Duration>,
    cancel: Option<Arc<AtomicBool>>,
}

impl BuildOptions {
    /// Wait at most this long for another process building the same name;
    /// past it, build without waiting any more (the default is to wait as
    /// long as the other builder lives: its lock dies with it).
    pub fn wait_at_most(mut self, limit: Duration) -> Self {
        self.wait = Some(limit);
        self
    }

    /// Stop waiting, with [`Error::Cancelled`], once `flag` is set.
    pub fn cancel_on(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }
}

/// Which build lock: the inode of a `build.lock` and the byte in it.
type LockId = (stat::Inode, u64);

thread_local! {
    /// The build locks this thread holds, innermost last: a build that
    /// asks for one of them again would wait for itself.
    static HELD: RefCell<Vec<LockId>> = const { RefCell::new(Vec::new()) };
}

/// A held build lock: one byte of `build.lock`, unlocked on drop (and
/// forgotten by its thread's [`HELD`]; a `Flight` never leaves the thread
/// that took it).
struct Flight {
    id: LockId,
    _lock: RangeLock<OwnedFd>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|id| *id == self.id) {
                h.remove(i);
            }
        });
    }
}

impl FsCache {
    /// Load `name`, or build it once: on a miss, `build` fills an empty
    /// directory, which is committed and handed back read-locked
    /// ([`StoreGuard::commit_and_load`](crate::StoreGuard::commit_and_load)).
    ///
    /// When several threads or processes miss on the same name at once, one
    /// builds and the others wait for it and then load its entry, so the
    /// work is done once. If the cache does not keep the built tree (too
    /// large, no space), the builder still gets it
    /// ([`Obtained::Uncached`]), and a waiter that then misses builds its
    /// own.
    ///
    /// ```
    /// use fscache::{FsCache, MaxSize, Obtained};
    ///
    /// let tmp = tempfile::tempdir()?;
    /// let cache = FsCache::builder("demo")
    ///     .max_size_if_unset(MaxSize::Unlimited)
    ///     .open(tmp.path())?;
    /// let got = cache.load_or_build("step-1", |dir| {
    ///     std::fs::write(dir.join("out"), b"result")
    /// })?;
    /// assert!(matches!(got, Obtained::Built(_)));
    /// assert_eq!(std::fs::read(got.path().join("out"))?, b"result");
    /// drop(got);
    /// let again = cache.load_or_build("step-1", |_| -> std::io::Result<()> { unreachable!() })?;
    /// assert!(matches!(again, Obtained::Hit(_)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// The statistics count what the caller got: a hit
    /// ([`Stats::hits`](crate::Stats::hits)), a build kept or not
    /// ([`Stats::built`](crate::Stats::built),
    /// [`Stats::built_uncached`](crate::Stats::built_uncached)); and a
    /// call that waited for another builder once in
    /// [`Stats::build_waits`](crate::Stats::build_waits).
    ///
    /// `build` must not call `load_or_build` of the same name on this
    /// cache from the same thread: that would wait for itself, and is
    /// [`Error::Reentrant`]. (From another thread that `build` waits for,
    /// it cannot be told from an honest wait, and does hang.)
    ///
    /// # Errors
    ///
    /// What `build` returned (the partial tree is removed), or a cache
    /// error converted into `E`: [`Error::InvalidName`] before any I/O,
    /// [`Error::Cancelled`], [`Error::Reentrant`], or a failed system call.
    pub fn load_or_build<E, F>(&self, name: &str, build: F) -> Result<Obtained, E>
    where
        F: FnOnce(&Path) -> Result<(), E>,
        E: From<Error>,
    {
        self.load_or_build_with(name, &BuildOptions::default(), build)
    }

    /// As [`FsCache::load_or_build`], waiting for another builder as
    /// `opts` says.
    ///
    /// # Errors
    ///
    /// As [`FsCache::load_or_build`].
    pub fn load_or_build_with<E, F>(
        &self,
        name: &str,
        opts: &BuildOptions,
        build: F,
    ) -> Result<Obtained, E>
    where
        F: FnOnce(&Path) -> Result<(), E>,
        E: From<Error>,
    {
        // The probes are not counted as loads: the call counts once, by
        // what its caller gets.
        let hit = |entry| {
            self.count(|p| &p.hits, 1);
            Ok(Obtained::Hit(entry))
        };
        if let Some(entry) = self.load_counting(name, Counting::Quiet)? {
            return hit(entry);
        }
        let valid = EntryName::new(name).map_err(Error::from)?;
        let _flight = if self.compatible() {
            self.wait_for_flight(&valid, opts)?
        } else {
            None
        };
        // Whoever held the lock may have committed it meanwhile.
        if let Some(entry) = self.load_counting(name, Counting::Quiet)? {
            return hit(entry);
        }
        let guard = self.store(name)?;
        build(guard.path())?;
        let got = guard.commit_and_load()?;
        match &got {
            Obtained::Built(_) => self.count(|p| &p.built, 1),
            Obtained::Uncached(_) => self.count(|p| &p.built_uncached, 1),
            // Another writer committed the name first; the load that
            // found its entry counted the hit.
            Obtained::Hit(_) => {}
        }
        Ok(got)
    }

    /// Take the build lock of `name`, waiting as `opts` says. `None` when
    /// there is none to take (`build.lock` cannot be opened for writing,
    /// e.g. a read-only cache) or the wait timed out: build without it.
    /// [`Error::Reentrant`] when this thread holds it already.
    fn wait_for_flight(&self, name: &EntryName, opts: &BuildOptions) -> Result<Option<Flight>> {
        let dir = self.dir();
        let rel = Path::new(BUILD_LOCK);
        // Never replaced nor unlinked, so a plain O_CREAT is race-free:
        // every opener gets the same inode.
        let mut fd = match dir.create_or_open(rel) {
            Ok(fd) => fd,
            // EACCES, EPERM, EROFS: a cache we may not write into.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(Error::io("open", dir.abs(rel), e)),
        };
        let offset = flight_offset(name.as_str());
        let st = stat::fstat(&fd).map_err(|e| Error::io("stat", dir.abs(rel), e))?;
        let id = (stat::inode(&st), offset);
        if HELD.with(|h| h.borrow().contains(&id)) {
            return Err(Error::Reentrant {
                name: name.as_str().to_owned(),
            });
        }
        let started = Instant::now();
        let deadline = opts.wait.map(|w| started + w);
        let mut pause = Duration::from_millis(1);
        loop {
            fd = match RangeLock::try_lock_or_return(fd, LockKind::Exclusive, offset, 1)
                .map_err(|e| Error::io("lock", dir.abs(rel), e))?
            {
                Ok(held) => {
                    if pause > Duration::from_millis(1) {
                        tracing::debug!(
                            name = name.as_str(),
                            waited = ?started.elapsed(),
                            "waited for another builder"
                        );
                    }
                    HELD.with(|h| h.borrow_mut().push(id));
                    return Ok(Some(Flight { id, _lock: held }));
                }
                Err(fd) => fd,
            };
            if pause == Duration::from_millis(1) {
                // The first refusal: another thread or process builds this
                // name. (The call counts one wait, however it ends.)
                self.count(|p| &p.build_waits, 1);
            }
            if opts
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return Err(Error::Cancelled {
                    name: name.as_str().to_owned(),
                });
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                tracing::info!(
                    name = name.as_str(),
                    waited = ?started.elapsed(),
                    "gave up waiting for another builder; building too"
                );
                return Ok(None);
            }
            // Poll rather than F_OFD_SETLKW, so the wait can be bounded and
            // cancelled; back off to 50 ms between tries.
            let nap = deadline.map_or(pause, |d| pause.min(d - now));
            std::thread::sleep(nap);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

/// The byte of `build.lock` that is `name`'s build lock: 62 bits of its
/// SHA-256, so the range always fits in an `off_t`.
fn flight_offset(name: &str) -> u64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b) >> 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stable_distinct_and_fit_off_t() {
        let a = flight_offset("a");
        assert_eq!(a, flight_offset("a"));
        assert_ne!(a, flight_offset("b"));
        for n in ["", "x", "a-very-long-name"] {
            assert!(flight_offset(n) < (1 << 62));
        }
    }
}
