//! `FsCache` and the operations on a whole handle: configuration, load,
//! contains, store, stage, repair (opening it is `builder.rs`).

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use fscache_dir::{
    is_miss, stat, touch_atime, CacheDir, EntryName, IfMissing, LockOptions, TryLocked, CACHE_INFO,
    CACHE_LOCK, OBJECTS, OBJECT_INFO, OBJECT_LOCK, STAGE,
};
use fscache_lock::{FileLock, LockKind};

use crate::builder::Durability;
use crate::error::{Error, Result};
use crate::guards::{Anon, Entry, StageGuard, StoreGuard};
use crate::info::CacheInfo;
use crate::stats::{Pending, Stats};
use crate::Stored;

/// A cache of named directory trees, shared safely by threads and
/// processes. See the crate docs.
///
/// Cloning is cheap (an `Arc`): clones share one open handle, one shared
/// lock on `cache.lock` and one configuration, and guards own a clone, so
/// they can live in a struct beside the cache or move to another thread.
#[derive(Clone)]
pub struct FsCache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) dir: CacheDir,
    pub(crate) appid: String,
    pub(crate) boot_id: String,
    // The configuration as last read, what identified that version of
    // `cache.info`, and the descriptor it was read through (kept for the
    // cheap check of `current_info`).
    pub(crate) info: RwLock<(CacheInfo, FileId, OwnedFd)>,
    pub(crate) watermark_percent: AtomicU8,
    pub(crate) durability: Durability,
    pub(crate) record_digests: bool,
    pub(crate) stats: Arc<crate::stats::Counter>,
    // Held shared for the handle's whole life; repair converts it to
    // exclusive for a moment.
    pub(crate) cache_lock: Mutex<FileLock<OwnedFd>>,
    // Commits hold it shared from charge to rename; repair exclusively, so
    // a recount never misses a charge of this handle in flight.
    pub(crate) commit_gate: RwLock<()>,
    // The kept list of eviction candidates, shared by this handle's
    // commits (see `commit.rs`).
    pub(crate) evict_queue: crate::commit::EvictQueue,
    // This handle's side of `books.lock`: commits and removals hold it
    // shared while a counter change and its `object.info` change are
    // apart, so a live recount of suspect books is exact
    // (`fscache_quota::reconcile`).
    pub(crate) books: fscache_quota::Books,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last clone is gone: hand this handle's counts to the cache,
        // unless it is of a format we do not write into.
        let compatible = self
            .info
            .read()
            .map(|i| i.0.is_compatible())
            .unwrap_or(false);
        if compatible {
            let _ = self.stats.flush(&self.dir);
        }
    }
}

impl fmt::Debug for FsCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsCache")
            .field("root", &self.inner.dir.root())
            .field("appid", &self.inner.appid)
            .finish_non_exhaustive()
    }
}

impl FsCache {
    /// Open the cache at `path` for application `appid` with the default
    /// options: `FsCache::builder(appid).open(path)`.
    ///
    /// A new cache has no `maximum-size`, which osbuild's format reads as
    /// 0: it keeps nothing until a limit is set ([`FsCache::set_info`], or
    /// [`Builder::max_size_if_unset`]).
    ///
    /// # Errors
    ///
    /// As [`Builder::open`].
    pub fn open(appid: &str, path: impl AsRef<Path>) -> Result<Self> {
        Self::builder(appid).open(path)
    }

    /// As [`FsCache::open`], with a test hook that fires at named points of
    /// the protocols (see [`fscache_dir::HookPoint`]).
    ///
    /// # Errors
    ///
    /// As [`FsCache::open`].
    #[cfg(feature = "test-hooks")]
    pub fn open_with_hook(
        appid: &str,
        path: impl AsRef<Path>,
        hook: Option<fscache_dir::Hook>,
    ) -> Result<Self> {
        let mut b = Self::builder(appid);
        b.hook = hook;
        b.open(path)
    }

    pub(crate) fn dir(&self) -> &CacheDir {
        &self.inner.dir
    }

    /// The absolute path of the cache root.
    pub fn path(&self) -> &Path {
        self.inner.dir.root()
    }

    /// The application id given at open.
    pub fn appid(&self) -> &str {
        &self.inner.appid
    }

    /// The app boot id of this boot (written into new entries).
    pub fn boot_id(&self) -> &str {
        &self.inner.boot_id
    }

    /// How much this handle's commits wait for the disk.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Set the low watermark an eviction scan plans down to, in percent of the
    /// maximum size (default 90; clamped to 0..=100). Applies to every
    /// clone of this handle.
    pub fn set_watermark_percent(&self, percent: u8) {
        self.inner
            .watermark_percent
            .store(percent.min(100), Ordering::Relaxed);
    }

    /// The low watermark in force, in percent of the maximum size.
    pub fn watermark_percent(&self) -> u8 {
        self.inner.watermark_percent.load(Ordering::Relaxed)
    }

    /// The configuration in force, as read at open, at the last
    /// [`FsCache::set_info`] or [`FsCache::reload_info`], or at a commit
    /// that noticed another process changing it.
    pub fn info(&self) -> CacheInfo {
        self.inner
            .info
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Re-read `cache.info` (another process may have changed it).
    ///
    /// # Errors
    ///
    /// As [`FsCache::open`].
    pub fn reload_info(&self) -> Result<CacheInfo> {
        let (info, id, fd) = read_info(self.dir())?;
        *self.inner.info.write().unwrap_or_else(|p| p.into_inner()) = (info.clone(), id, fd);
        Ok(info)
    }

    /// The configuration as `cache.info` says now: one `stat` when it is
    /// unchanged since we read it, a re-read when another process replaced
    /// it.
    pub(crate) fn current_info(&self) -> Result<CacheInfo> {
        let rel = Path::new(CACHE_INFO);
        let dir = self.dir();
        {
            let cached = self.inner.info.read().unwrap_or_else(|p| p.into_inner());
            // `cache.info` is replaced by rename, never moved: locally, the
            // descriptor it was read through still being linked (an
            // `fstat`, no path lookup) proves it is the file the path
            // names; size and mtime catch writers that edit it in place.
            // On NFS an unlinked open file keeps its link count, so the
            // path is compared there (docs/format.md, "NFS").
            let st = if dir.is_nfs() {
                dir.stat(rel)
                    .map_err(|e| Error::io("stat", dir.abs(rel), e))?
            } else {
                stat::fstat(&cached.2).map_err(|e| Error::io("stat", dir.abs(rel), e))?
            };
            if st.st_nlink > 0 && cached.1 == FileId::of(&st) {
                return Ok(cached.0.clone());
            }
        }
        self.reload_info()
    }

    /// Update `cache.info` with the fields of `info` that are set, keeping
    /// every other key (also ones this implementation does not know), under
    /// the file's exclusive lock by read → temp file → rename.
    ///
    /// # Errors
    ///
    /// Locking, reading or replacing `cache.info` failed, or it holds
    /// something other than a JSON object ([`Error::Corrupt`]).
    pub fn set_info(&self, info: CacheInfo) -> Result<()> {
        self.update_info(|_| Some(info)).map(drop)
    }

    /// Read-modify-write of `cache.info` under its exclusive lock: `change`
    /// sees the configuration on disk and returns the fields to set, or
    /// `None` to leave the file alone. The handle's view is re-read
    /// afterwards.
    pub(crate) fn update_info(
        &self,
        change: impl FnOnce(&CacheInfo) -> Option<CacheInfo>,
    ) -> Result<()> {
        let dir = self.dir();
        let rel = Path::new(CACHE_INFO);
        let abs = dir.abs(rel);
        let corrupt = dir
            .update(rel, IfMissing::Fail, |bytes| {
                let mut map = match serde_json::from_slice::<serde_json::Value>(bytes) {
                    Ok(serde_json::Value::Object(map)) => map,
                    _ => return Ok((None, true)),
                };
                let Some(update) = change(&CacheInfo::from_map(&map)) else {
                    return Ok((None, false));
                };
                tracing::info!(info = ?update, "cache.info updated");
                update.merge_into(&mut map);
                Ok((
                    Some(serde_json::Value::Object(map).to_string().into_bytes()),
                    false,
                ))
            })
            .map_err(|e| Error::io("update", &abs, e))?;
        if corrupt {
            return Err(Error::Corrupt {
                path: abs,
                what: "not a JSON object".into(),
            });
        }
        self.reload_info()?;
        Ok(())
    }

    /// Whole-cache repair after crashes: remove the debris of crashed
    /// writers and removals, and rebuild `cache.size` as the exact sum of
    /// the entries' recorded sizes (a crash between a charge and its commit,
    /// or during eviction, leaves it too high — never too low).
    ///
    /// Runs only while no other handle (in any process, osbuild's included)
    /// has the cache open: it converts this handle's shared `cache.lock` to
    /// exclusive without waiting, and returns `Ok(None)` if others hold it.
    /// Commits of this handle wait meanwhile. To remove debris while others
    /// use the cache, see [`FsCache::sweep`].
    ///
    /// # Errors
    ///
    /// The lock conversion, a removal or the recount failed.
    pub fn repair(&self) -> Result<Option<Repaired>> {
        self.alone(|| {
            self.count(|p| &p.repairs, 1);
            let accounted_before = fscache_quota::read_size(self.dir()).ok();
            let swept = fscache_quota::sweep(self.dir())?;
            let accounted = fscache_quota::recount(self.dir())?;
            tracing::info!(
                removed = ?swept.removed,
                before = ?accounted_before,
                accounted,
                "repaired"
            );
            Ok(Repaired {
                removed: swept.removed,
                accounted_before,
                accounted,
            })
        })
    }

    /// Run `f` while no other handle has the cache open: this handle's
    /// shared `cache.lock` is converted to exclusive without waiting
    /// (`Ok(None)` if others hold it) and back afterwards. Commits of this
    /// handle wait meanwhile, so a recount never misses a charge in flight.
    pub(crate) fn alone<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
        let _gate = self
            .inner
            .commit_gate
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut lock = self
            .inner
            .cache_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let lock_path = || self.dir().abs(Path::new(CACHE_LOCK));
        if !lock
            .try_convert(LockKind::Exclusive)
            .map_err(|e| Error::io("lock", lock_path(), e))?
        {
            return Ok(None);
        }
        let result = f();
        // Downgrading never conflicts.
        lock.convert(LockKind::Shared)
            .map_err(|e| Error::io("lock", lock_path(), e))?;
        result.map(Some)
    }

    /// Whether the cache's format version is one this implementation uses,
    /// as last read.
    pub(crate) fn compatible(&self) -> bool {
        self.inner
            .info
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .is_compatible()
    }

    /// Load the entry `name`: a read-locked committed entry, or `None` for
    /// a miss (absent, being written or removed, invalid, or the cache's
    /// version is not ours). Never waits.
    ///
    /// The entry's last use (its `object.lock` atime) is set to now.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] before any I/O; a system call failing in a way
    /// that is not a miss.
    pub fn load(&self, name: &str) -> Result<Option<Entry>> {
        let name = EntryName::new(name)?;
        if !self.compatible() {
            self.count(|p| &p.misses_incompatible, 1);
            return Ok(None);
        }
        // Compatible, as just read: count without reading it again (the
        // load is the hot path).
        let count =
            |field: fn(&Pending) -> &AtomicU64| self.inner.stats.bump(Some(self.dir()), field, 1);
        let dir = self.dir();
        // One buffer for the three paths a hit needs, `objects/NAME/…`:
        // the lookup is the hot path, and a miss allocates nothing more.
        let mut rel = String::with_capacity(OBJECTS.len() + name.as_str().len() + 13);
        rel.push_str(OBJECTS);
        rel.push('/');
        rel.push_str(name.as_str());
        let entry_len = rel.len();
        rel.push('/');
        rel.push_str(OBJECT_LOCK);
        let lock_rel = Path::new(&rel);
        // Absent (ENOENT/ENOTDIR) comes back as `Absent` without an error
        // being built: a miss is a common answer.
        let locked = match dir.try_lock(lock_rel, LockOptions::shared()) {
            Ok(TryLocked::Locked(l)) => l,
            Ok(TryLocked::Absent) => {
                count(|p| &p.misses_absent);
                return Ok(None);
            }
            Ok(TryLocked::Busy) => {
                count(|p| &p.misses_busy);
                return Ok(None);
            }
            Err(e) if is_miss(&e) => {
                count(|p| &p.misses_absent);
                return Ok(None);
            }
            Err(e) => return Err(Error::io("lock", dir.abs(lock_rel), e)),
        };
        // An entry without object.info is being removed, or debris of a
        // crashed removal: not valid.
        rel.truncate(entry_len + 1);
        rel.push_str(OBJECT_INFO);
        let info_rel = Path::new(&rel);
        match dir.stat(info_rel) {
            Ok(_) => {}
            Err(e) if is_miss(&e) => {
                count(|p| &p.misses_invalid);
                return Ok(None);
            }
            Err(e) => return Err(Error::io("stat", dir.abs(info_rel), e)),
        }
        touch_atime(&locked.lock);
        count(|p| &p.hits);
        rel.truncate(entry_len);
        Ok(Some(Entry::new(
            self.clone(),
            name,
            PathBuf::from(rel),
            locked.lock,
        )))
    }

    /// Count `by` on a statistics counter (in memory; flushed now and then).
    pub(crate) fn count(&self, field: fn(&Pending) -> &AtomicU64, by: u64) {
        // A cache of another format version is not ours to write into: its
        // counts stay in memory.
        let dir = self.compatible().then(|| self.dir());
        self.inner.stats.bump(dir, field, by);
    }

    /// The statistics of the cache, summed over every process that used it
    /// (this handle's counts flushed first). Other live handles add theirs
    /// at most a second (or a thousand operations) later.
    ///
    /// # Errors
    ///
    /// Flushing or reading `cache.stats` failed.
    pub fn stats(&self) -> Result<Stats> {
        if self.compatible() {
            self.inner.stats.flush(self.dir())?;
        }
        crate::stats::read(self.dir())
    }

    /// Zero the statistics of the cache (this handle's unflushed counts
    /// too).
    ///
    /// # Errors
    ///
    /// Replacing `cache.stats` failed.
    pub fn zero_stats(&self) -> Result<()> {
        self.inner.stats.discard();
        crate::stats::zero(self.dir())
    }

    /// Whether a committed entry `name` is in the cache now: a peek that,
    /// unlike [`FsCache::load`], takes no lock and does not count as a use
    /// (one `stat`). The answer is stale as soon as it returns: only
    /// `load` can hold an entry.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] before any I/O; the `stat` failed in a way
    /// that is not a miss.
    pub fn contains(&self, name: &str) -> Result<bool> {
        let name = EntryName::new(name)?;
        if !self.compatible() {
            return Ok(false);
        }
        let rel = PathBuf::from(OBJECTS).join(name.as_str()).join(OBJECT_INFO);
        match self.dir().stat(&rel) {
            Ok(_) => Ok(true),
            Err(e) if is_miss(&e) => Ok(false),
            Err(e) => Err(Error::io("stat", self.dir().abs(&rel), e)),
        }
    }

    /// Start storing the entry `name`: an empty private `data/` directory to
    /// fill, committed with [`StoreGuard::commit`]; dropped without commit,
    /// everything is removed.
    ///
    /// If the cache's version is not ours, the guard is a stage and its
    /// commit reports [`Stored::Incompatible`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] before any I/O; creating the anonymous entry
    /// failed.
    pub fn store(&self, name: &str) -> Result<StoreGuard> {
        let name = EntryName::new(name)?;
        let compatible = self.compatible();
        let parent = if compatible { OBJECTS } else { STAGE };
        let anon = Anon::create(self, parent)?;
        Ok(StoreGuard::new(name, anon, compatible))
    }

    /// A private scratch `data/` directory in `stage/`, removed completely
    /// when the guard drops.
    ///
    /// # Errors
    ///
    /// Creating the anonymous entry failed.
    pub fn stage(&self) -> Result<StageGuard> {
        Ok(StageGuard::new(Anon::create(self, STAGE)?))
    }

    /// Store a copy of the tree at `src` as `name` and commit it: a
    /// directory's contents become `data/`'s, a file becomes
    /// `data/<its name>`. Reflinks where the file system can, symlinks
    /// verbatim, modes, times and hard links kept.
    ///
    /// # Errors
    ///
    /// As [`FsCache::store`] and [`StoreGuard::commit`], or the copy failed
    /// (the error names the failing path; nothing is kept).
    pub fn store_tree(&self, name: &str, src: impl AsRef<Path>) -> Result<Stored> {
        self.store_tree_with_progress(name, src, &mut |_| {})
    }

    /// As [`FsCache::store_tree`], calling `progress` with the bytes copied
    /// as the copy goes.
    ///
    /// # Errors
    ///
    /// As [`FsCache::store_tree`].
    pub fn store_tree_with_progress(
        &self,
        name: &str,
        src: impl AsRef<Path>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Stored> {
        let report = self.store(name)?.commit_tree(src, &mut |n| {
            progress(n);
            Ok(())
        })?;
        Ok(report.stored)
    }
}

/// What [`FsCache::repair`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Repaired {
    /// Debris removed: `uuid-*` leftovers of crashed writers and named
    /// directories left half-removed.
    pub removed: Vec<String>,
    /// `cache.size` before the repair (`None` if it was corrupt).
    pub accounted_before: Option<u64>,
    /// `cache.size` after: the exact sum of the entries' recorded sizes.
    pub accounted: u64,
}

/// Read and parse `cache.info`; the descriptor it was read through comes
/// back too.
pub(crate) fn read_info(dir: &CacheDir) -> Result<(CacheInfo, FileId, OwnedFd)> {
    let rel = Path::new(CACHE_INFO);
    let fd = dir
        .open_read(rel)
        .map_err(|e| Error::io("open", dir.abs(rel), e))?;
    let st = stat::fstat(&fd).map_err(|e| Error::io("stat", dir.abs(rel), e))?;
    let bytes = fscache_dir::read_small_fd(&fd).map_err(|e| Error::io("read", dir.abs(rel), e))?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok((CacheInfo::from_map(&map), FileId::of(&st), fd)),
        Ok(_) => Ok((CacheInfo::default(), FileId::of(&st), fd)),
        Err(e) => Err(Error::Corrupt {
            path: dir.abs(rel),
            // Where, not the parser's message: a message never embeds
            // its source.
            what: format!("not JSON (line {}, column {})", e.line(), e.column()),
        }),
    }
}

/// What identifies one version of `cache.info`: it is only ever replaced
/// by `rename`, so a change is a new inode (and the times and size are
/// compared too, for writers that edit it in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    inode: stat::Inode,
    size: u64,
    mtime: stat::Stamp,
}

impl FileId {
    fn of(st: &stat::Stat) -> Self {
        Self {
            inode: stat::inode(st),
            size: stat::size(st),
            mtime: stat::mtime(st),
        }
    }
}
