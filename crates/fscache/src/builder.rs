//! Opening a cache: [`FsCache::builder`] → [`Builder`] (limit if unset,
//! watermark, [`Durability`], digests) → [`Builder::open`]: scaffold, the
//! shared `cache.lock`, `cache.info`.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use fscache_dir::{CacheDir, LockOptions, CACHE_LOCK};

use crate::error::{Error, Result};
use crate::handle::{read_info, FsCache, Inner};
use crate::info::{CacheInfo, MaxSize};

/// How much a commit waits for the disk. Chosen per handle with
/// [`Builder::durability`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Nothing is `fsync`ed, as osbuild does: a power loss may lose recent
    /// entries (a crash of the process loses nothing committed).
    #[default]
    Relaxed,
    /// Every file and directory of an entry reaches stable storage before
    /// the rename that publishes it, and the rename itself (its parent
    /// directory is `fsync`ed) before `commit` returns; `cache.size` and
    /// `cache.info` are replaced durably (temp file synced before the
    /// rename, directory after).
    ///
    /// What a power loss can do then: lose an entry whose `commit` had not
    /// returned (never expose it torn), and leave the books over-counted by
    /// a charge whose commit did not finish (a repair recounts). On ext4
    /// (`data=ordered` or `journal`), xfs and btrfs the `fsync` of a file
    /// and of its directory are what make both the data and the name
    /// durable; without them (`Relaxed`) ext4 and xfs can publish a name
    /// whose files are empty or short after a crash.
    Committed,
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
    pub(crate) appid: String,
    pub(crate) max_size_if_unset: Option<MaxSize>,
    pub(crate) watermark_percent: u8,
    pub(crate) durability: Durability,
    pub(crate) record_digests: bool,
    #[cfg(feature = "test-hooks")]
    pub(crate) hook: Option<fscache_dir::Hook>,
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
            seen.pending.lock_waits.fetch_add(1, Ordering::Relaxed);
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
}
