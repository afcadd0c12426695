//! `FsCache`, its builder, and the operations on a whole handle: open,
//! store, stage, the statistics. The lookups are in `load.rs`, the
//! configuration in `info.rs`, repair in `repair.rs`.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use fscache_dir::{CacheDir, EntryName, LockOptions, CACHE_LOCK, OBJECTS, STAGE};
use fscache_lock::FileLock;

use crate::error::{Error, Result};
use crate::guards::{Anon, StageGuard, StoreGuard};
use crate::info::{read_info, CacheInfo, FileId, MaxSize};
use crate::stats::{Pending, Stats};
use crate::Stored;

/// How much a commit waits for the disk. Chosen per handle with
/// [`Builder::durability`].
///
/// What each mode guarantees after a power loss is what the power-loss
/// tests check (`tests/suite/powerloss.rs`, on the `fscache-lazyfs` FUSE
/// file system, which forgets every directory entry and every file page
/// not made durable by an `fsync`, in any order the `fsync`s allow). In
/// both modes `cache.info` and the scaffolding are written durably (they
/// are written once or rarely, and a torn `cache.info` would make the cache
/// unopenable), so after a power loss the cache always opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Nothing else is `fsync`ed, as osbuild does: a crash of the process
    /// loses nothing committed, but a power loss may lose recent entries
    /// and may leave entries whose files are empty or short, or whose
    /// `object.info` is empty. After a power loss:
    ///
    /// * `load` may return such a damaged entry: with
    ///   [`Builder::record_digests`], [`FsCache::verify`] reports it as a
    ///   mismatch, and what `verify` reports as `Ok` is exactly a tree that
    ///   was committed under that name;
    /// * one [`FsCache::repair`] makes the books exact (`cache.size` is the
    ///   sum of the recorded sizes), removes all debris and every entry
    ///   whose `object.info` records no size;
    /// * after that and the removal of what `verify` flags, every load
    ///   returns a tree that was committed under its name.
    #[default]
    Relaxed,
    /// Every file and directory of an entry reaches stable storage before
    /// the rename that publishes it, and the rename itself (its parent
    /// directory is `fsync`ed) before `commit` returns; `cache.size` is
    /// replaced durably (temp file synced before the rename, directory
    /// after), and a removal or eviction makes the entry invalid durably
    /// (`object.info` unlinked, the entry directory synced) before it
    /// uncharges it or removes its tree. After a power loss:
    ///
    /// * every entry whose commit returned (and that was not removed or
    ///   evicted since) loads with exactly its committed tree and verifies;
    /// * no load returns a tree that was never committed under its name: a
    ///   commit in flight at the loss is there whole or not at all, and so
    ///   is a pull ([`fscache-remote`](https://docs.rs/fscache-remote)
    ///   commits through the same guard);
    /// * the books may be over-counted by a charge whose commit did not
    ///   finish (by design never under-counted: a removal makes the entry
    ///   invalid durably before it uncharges it), and one
    ///   [`FsCache::repair`] makes them exact and removes the debris.
    ///
    /// On ext4 (`data=ordered` or `journal`), xfs and btrfs the `fsync` of a
    /// file and of its directory are what make both the data and the name
    /// durable; without them (`Relaxed`) ext4 and xfs can publish a name
    /// whose files are empty or short after a crash.
    Committed,
}

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

// Aligned to a cache line pair: in the `Arc`'s allocation the reference
// counts (which every guard's clone and drop writes) then sit on a line of
// their own, not on the one holding the fields every load reads.
#[repr(align(128))]
pub(crate) struct Inner {
    pub(crate) dir: CacheDir,
    appid: String,
    pub(crate) boot_id: String,
    // The configuration as last read, what identified that version of
    // `cache.info`, and the descriptor it was read through (kept for the
    // cheap check of `current_info`).
    pub(crate) info: RwLock<(CacheInfo, FileId, OwnedFd)>,
    // Whether `info` is of a version we use: read by every operation.
    pub(crate) compatible: AtomicBool,
    watermark_percent: AtomicU8,
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
    pub(crate) evict_queue: crate::evict::EvictQueue,
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

/// Options for opening a cache, from [`FsCache::builder`].
///
/// ```
/// use fscache::{Durability, FsCache, MaxSize};
///
/// let tmp = tempfile::tempdir()?;
/// let cache = FsCache::builder("my-app")
///     .max_size_if_unset(MaxSize::Bytes(1 << 30))
///     .watermark(80)
///     .durability(Durability::Relaxed)
///     .open(tmp.path().join("cache"))?;
/// assert_eq!(cache.info().maximum_size, Some(MaxSize::Bytes(1 << 30)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until `open`"]
pub struct Builder {
    appid: String,
    max_size_if_unset: Option<MaxSize>,
    watermark_percent: u8,
    durability: Durability,
    record_digests: bool,
    #[cfg(feature = "test-hooks")]
    hook: Option<fscache_dir::Hook>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("appid", &self.appid)
            .field("max_size_if_unset", &self.max_size_if_unset)
            .field("watermark_percent", &self.watermark_percent)
            .field("durability", &self.durability)
            .field("record_digests", &self.record_digests)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// The limit to write into `cache.info` when it sets none (a new cache,
    /// or one whose `maximum-size` is absent or not a size). A limit
    /// someone set is never changed. Without this, osbuild's format keeps
    /// nothing: an absent limit means 0.
    ///
    /// The check and the write happen under `cache.info`'s exclusive lock,
    /// so handles racing to set a default agree on one.
    pub fn max_size_if_unset(mut self, limit: MaxSize) -> Self {
        self.max_size_if_unset = Some(limit);
        self
    }

    /// The low watermark an eviction scan plans down to, in percent of the
    /// maximum size (default 90; clamped to 0..=100). A commit that needs
    /// room removes only what its own charge needs; the rest of the plan
    /// stays in the handle for the commits that follow, so one directory
    /// scan serves many stores without any one of them paying for the
    /// whole batch.
    pub fn watermark(mut self, percent: u8) -> Self {
        self.watermark_percent = percent.min(100);
        self
    }

    /// How much commits of this handle wait for the disk (default
    /// [`Durability::Relaxed`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Whether a commit of a filled [`StoreGuard`] computes the tree digest
    /// of its `data/` (one more read of the data) and records it in
    /// `object.info`, so [`FsCache::verify`] can check the entry later.
    /// Default off; [`FsCache::store_tree`] records it always, computing it
    /// during the copy.
    pub fn record_digests(mut self, record: bool) -> Self {
        self.record_digests = record;
        self
    }

    /// A test hook that fires at named points of the protocols (see
    /// [`fscache_dir::HookPoint`]).
    #[cfg(feature = "test-hooks")]
    pub fn hook(mut self, hook: fscache_dir::Hook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Open the cache at `path`, creating it (and its parents) if needed,
    /// and take a shared lock on its `cache.lock` for the life of the
    /// handle.
    ///
    /// # Errors
    ///
    /// `path` is not a directory; creating the scaffolding, taking the lock,
    /// or reading `cache.info` failed (`cache.info` that is not JSON is
    /// [`Error::Corrupt`]).
    pub fn open(self, path: impl AsRef<Path>) -> Result<FsCache> {
        let path = path.as_ref();
        let mut dir = CacheDir::open(path).map_err(|e| open_error(path, e))?;
        #[cfg(feature = "test-hooks")]
        dir.set_hook(self.hook.clone());
        // cache.size and cache.info are replaced durably too.
        dir.set_durable(self.durability == Durability::Committed);
        // Waits for a lock (cache.size, cache.info, cache.stats): counted
        // and traced. A free lock costs nothing more.
        let stats = Arc::new(crate::stats::Counter::default());
        let seen = stats.clone();
        dir.set_wait_observer(Some(Arc::new(move |path: &Path, waited| {
            seen.add(|p| &p.lock_waits, 1);
            tracing::debug!(path = %path.display(), ?waited, "waited for a lock");
        })));
        let boot_id = crate::bootid::current_app_boot_id(&self.appid)
            .map_err(|e| Error::io("read", crate::bootid::KERNEL_BOOT_ID, e))?;
        dir.scaffold_created_by(Some(&boot_id))
            .map_err(|e| Error::io("create scaffolding in", dir.root(), e))?;
        let lock_rel = Path::new(CACHE_LOCK);
        // Read-write where we may, so repair can convert the lock in place;
        // read-only otherwise (a shared lock needs no more).
        let cache_lock = match dir.lock(lock_rel, LockOptions::shared().read_write()) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                dir.lock(lock_rel, LockOptions::shared())
            }
            other => other,
        }
        .map_err(|e| Error::io("lock", dir.abs(lock_rel), e))?
        .lock;
        let info = read_info(&dir)?;
        let cache = FsCache {
            inner: Arc::new(Inner {
                dir,
                appid: self.appid,
                boot_id,
                compatible: AtomicBool::new(info.0.is_compatible()),
                info: RwLock::new(info),
                watermark_percent: AtomicU8::new(self.watermark_percent),
                durability: self.durability,
                record_digests: self.record_digests,
                stats,
                cache_lock: Mutex::new(cache_lock),
                commit_gate: RwLock::new(()),
                evict_queue: Default::default(),
                books: fscache_quota::Books::new(),
            }),
        };
        if let Some(limit) = self.max_size_if_unset {
            if cache.info().maximum_size.is_none() {
                cache.update_info(|info| {
                    if info.maximum_size.is_some() || !info.is_compatible() {
                        return None;
                    }
                    Some(CacheInfo {
                        maximum_size: Some(limit),
                        ..Default::default()
                    })
                })?;
            }
        }
        Ok(cache)
    }
}

/// The error of opening the cache root: a file where the root should be is
/// "not a directory", not the `EEXIST` that creating it met.
fn open_error(path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::AlreadyExists && path.exists() && !path.is_dir() {
        // ENOTDIR, errno 20 on Linux (errno-base.h), so `raw_os_error` works.
        let e = io::Error::from_raw_os_error(20);
        return Error::io("open cache", path, e);
    }
    Error::io("open cache", path, e)
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
    /// Options for opening a cache for application `appid` (it seeds the
    /// app boot id written into new entries). See [`Builder`].
    pub fn builder(appid: &str) -> Builder {
        Builder {
            appid: appid.to_owned(),
            max_size_if_unset: None,
            watermark_percent: fscache_quota::DEFAULT_WATERMARK_PERCENT,
            durability: Durability::Relaxed,
            record_digests: false,
            #[cfg(feature = "test-hooks")]
            hook: None,
        }
    }

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

    /// Whether the cache's format version is one this implementation uses,
    /// as last read.
    pub(crate) fn compatible(&self) -> bool {
        // A plain load, not the `RwLock` of the configuration: taking a
        // read lock writes its cache line, which every loading thread
        // would then pass around.
        self.inner.compatible.load(Ordering::Relaxed)
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
    /// at most a second (or 100,000 operations) later.
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
    /// osbuild's `store_tree` differs: it copies a directory in as
    /// `data/<its name>/` (`cp -a -- SRC data/`) unless the path ends in
    /// `/.`. This API keeps its own rule; for osbuild's, use
    /// [`StoreGuard::copy_as_child`] (the Python package does).
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
