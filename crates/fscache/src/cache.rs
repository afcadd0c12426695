//! `FsCache` and its guards: open, load, store → commit, stage.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use cap_std::fs::Dir;
use fscache_dir::{
    gone, raw_os_error, AnonDir, CacheDir, EntryName, HookPoint, Publish, CACHE_INFO, CACHE_LOCK,
    DATA, OBJECTS, OBJECT_INFO, OBJECT_LOCK, STAGE,
};
use fscache_lock::{FileLock, LockKind, Wait};
use fscache_quota::{Charge, ObjectInfo};
use rustix::fs::{Mode, OFlags, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::info::CacheInfo;

/// What a commit did with the entry. Only [`Stored::Committed`] keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a commit may keep nothing: check what happened"]
pub enum Stored {
    /// The entry is in the cache under its name.
    Committed,
    /// Another writer committed the name first; this copy was discarded.
    Exists,
    /// The entry alone is larger than the cache's maximum size (0 unless
    /// configured); discarded.
    TooLarge,
    /// Even after evicting every idle least-recently-used entry, the entry
    /// does not fit; discarded.
    NoSpace,
    /// The cache has a format version this implementation does not use;
    /// the store acted as a stage and was discarded.
    Incompatible,
}

/// A cache of named directory trees, shared safely by threads and
/// processes. See the crate docs.
pub struct FsCache {
    dir: CacheDir,
    appid: String,
    boot_id: String,
    info: RwLock<(CacheInfo, FileId)>,
    watermark_percent: u8,
    // Held shared for the handle's whole life; repair converts it to
    // exclusive for a moment.
    cache_lock: Mutex<FileLock<OwnedFd>>,
    // Commits hold it shared from charge to rename; repair exclusively, so
    // a recount never misses a charge of this handle in flight.
    commit_gate: RwLock<()>,
}

/// What [`FsCache::repair`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Debris removed: `uuid-*` leftovers of crashed writers and named
    /// directories left half-removed.
    pub removed: Vec<String>,
    /// `cache.size` before the repair (`None` if it was corrupt).
    pub accounted_before: Option<u64>,
    /// `cache.size` after: the exact sum of the entries' recorded sizes.
    pub accounted: u64,
}

impl fmt::Debug for FsCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsCache")
            .field("root", &self.dir.root())
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

impl FsCache {
    /// Open the cache at `path` for application `appid`, creating it (and
    /// its parents) if needed, and take a shared lock on its `cache.lock`
    /// for the life of the handle.
    ///
    /// `appid` seeds the app boot id written into new entries.
    ///
    /// # Errors
    ///
    /// Creating the scaffolding, taking the lock, or reading `cache.info`
    /// failed (`cache.info` that is not JSON is [`Error::Corrupt`]).
    pub fn open(appid: &str, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let dir = CacheDir::open(path).map_err(|e| Error::io("open cache", path, e))?;
        Self::open_dir(appid, dir)
    }

    /// As [`FsCache::open`], with a test hook that fires at each
    /// [`fscache_dir::HookPoint`] (this layer fires the `Commit*` ones).
    /// Needs the cargo feature `test-hooks`.
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
        let path = path.as_ref();
        let mut dir = CacheDir::open(path).map_err(|e| Error::io("open cache", path, e))?;
        dir.set_hook(hook);
        Self::open_dir(appid, dir)
    }

    fn open_dir(appid: &str, dir: CacheDir) -> Result<Self> {
        dir.scaffold()
            .map_err(|e| Error::io("create scaffolding in", dir.root(), e))?;
        let lock_rel = Path::new(CACHE_LOCK);
        // Read-write where we may, so repair can convert the lock in place;
        // read-only otherwise (a shared lock needs no more).
        let cache_lock = match dir.open_locked_rw(lock_rel, LockKind::Shared, Wait::Block) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                dir.open_locked(lock_rel, LockKind::Shared, Wait::Block)
            }
            other => other,
        }
        .map_err(|e| Error::io("lock", dir.abs(lock_rel), e))?
        .expect("a blocking lock is never contended")
        .lock;
        let boot_id = crate::bootid::current_app_boot_id(appid)
            .map_err(|e| Error::io("read", crate::bootid::KERNEL_BOOT_ID, e))?;
        let info = read_info(&dir)?;
        Ok(Self {
            dir,
            appid: appid.to_owned(),
            boot_id,
            info: RwLock::new(info),
            watermark_percent: fscache_quota::DEFAULT_WATERMARK_PERCENT,
            cache_lock: Mutex::new(cache_lock),
            commit_gate: RwLock::new(()),
        })
    }

    /// The absolute path of the cache root.
    pub fn path(&self) -> &Path {
        self.dir.root()
    }

    /// The application id given at open.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// The app boot id of this boot (written into new entries).
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// The capability layer under this cache, for tools that need the
    /// protocols directly.
    pub fn cache_dir(&self) -> &CacheDir {
        &self.dir
    }

    /// Set the low watermark eviction frees down to, in percent of the
    /// maximum size (default 90; clamped to 0..=100).
    pub fn set_watermark_percent(&mut self, percent: u8) {
        self.watermark_percent = percent.min(100);
    }

    /// The configuration in force, as read at open, at the last
    /// [`FsCache::set_info`] or [`FsCache::reload_info`].
    pub fn info(&self) -> CacheInfo {
        self.info
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
        let (info, id) = read_info(&self.dir)?;
        *self.info.write().unwrap_or_else(|p| p.into_inner()) = (info.clone(), id);
        Ok(info)
    }

    /// The configuration as `cache.info` says now: one `stat` when it is
    /// unchanged since we read it, a re-read when another process replaced
    /// it.
    fn current_info(&self) -> Result<CacheInfo> {
        let rel = Path::new(CACHE_INFO);
        let st = self
            .dir
            .stat(rel)
            .map_err(|e| Error::io("stat", self.dir.abs(rel), e))?;
        {
            let cached = self.info.read().unwrap_or_else(|p| p.into_inner());
            if cached.1 == FileId::of(&st) {
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
        let rel = Path::new(CACHE_INFO);
        let abs = self.dir.abs(rel);
        let _locked = self
            .dir
            .open_locked(rel, LockKind::Exclusive, Wait::Block)
            .map_err(|e| Error::io("lock", &abs, e))?;
        let bytes = self
            .dir
            .read_small(rel)
            .map_err(|e| Error::io("read", &abs, e))?;
        let mut map = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Err(Error::Corrupt {
                    path: abs,
                    what: "not a JSON object".into(),
                })
            }
        };
        info.merge_into(&mut map);
        let text = serde_json::to_vec(&serde_json::Value::Object(map))
            .expect("a JSON map always serializes");
        self.dir
            .atomic_file(Path::new(OBJECTS), rel, &text, Publish::Replace)
            .map_err(|e| Error::io("replace", &abs, e))?;
        drop(_locked);
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
    /// Commits of this handle wait meanwhile.
    ///
    /// # Errors
    ///
    /// The lock conversion, a removal or the recount failed.
    pub fn repair(&self) -> Result<Option<Repaired>> {
        let _gate = self.commit_gate.write().unwrap_or_else(|p| p.into_inner());
        let mut lock = self.cache_lock.lock().unwrap_or_else(|p| p.into_inner());
        let lock_path = || self.dir.abs(Path::new(CACHE_LOCK));
        if !lock
            .try_convert(LockKind::Exclusive)
            .map_err(|e| Error::io("lock", lock_path(), e))?
        {
            return Ok(None);
        }
        let result = (|| {
            let accounted_before = fscache_quota::read_size(&self.dir).ok();
            let swept = fscache_quota::sweep(&self.dir)?;
            let accounted = fscache_quota::recount(&self.dir)?;
            Ok(Repaired {
                removed: swept.removed,
                accounted_before,
                accounted,
            })
        })();
        // Downgrading never conflicts.
        lock.convert(LockKind::Shared)
            .map_err(|e| Error::io("lock", lock_path(), e))?;
        result.map(Some)
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
        if !self
            .info
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .is_compatible()
        {
            return Ok(None);
        }
        let entry = PathBuf::from(OBJECTS).join(name.as_str());
        let lock_rel = entry.join(OBJECT_LOCK);
        // Absent (ENOENT/ENOTDIR) comes back as `None` without an error
        // being built: a miss is a common answer.
        let locked = match self.dir.try_open_locked(&lock_rel, LockKind::Shared) {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(None),
            Err(e) if is_miss(&e) => return Ok(None),
            Err(e) => return Err(Error::io("lock", self.dir.abs(&lock_rel), e)),
        };
        // An entry without object.info is being removed, or debris of a
        // crashed removal: not valid.
        match self.dir.stat(&entry.join(OBJECT_INFO)) {
            Ok(_) => {}
            Err(e) if is_miss(&e) => return Ok(None),
            Err(e) => return Err(Error::io("stat", self.dir.abs(&entry.join(OBJECT_INFO)), e)),
        }
        touch_atime(&locked.lock);
        Ok(Some(Entry {
            path: self.dir.abs(&entry.join(DATA)),
            name,
            lock: Some(locked.lock),
        }))
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
    pub fn store(&self, name: &str) -> Result<StoreGuard<'_>> {
        let name = EntryName::new(name)?;
        let compatible = self
            .info
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .is_compatible();
        let parent = if compatible { OBJECTS } else { STAGE };
        let anon = self.anon_entry(parent)?;
        Ok(StoreGuard {
            cache: self,
            name,
            anon: Some(anon),
            compatible,
        })
    }

    /// A private scratch `data/` directory in `stage/`, removed completely
    /// when the guard drops.
    ///
    /// # Errors
    ///
    /// Creating the anonymous entry failed.
    pub fn stage(&self) -> Result<StageGuard<'_>> {
        Ok(StageGuard {
            cache: self,
            anon: Some(self.anon_entry(STAGE)?),
        })
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
        let src = src.as_ref();
        let guard = self.store(name)?;
        let data = guard.open_data()?;
        fscache_dir::copy::copy_tree_into(src, &data, progress)
            .map_err(|e| Error::io("copy", src, e))?;
        drop(data);
        guard.commit()
    }

    fn anon_entry(&self, parent: &'static str) -> Result<Anon> {
        let anon = self
            .dir
            .atomic_anon_dir(Path::new(parent))
            .map_err(|e| Error::io("create entry in", self.dir.abs(Path::new(parent)), e))?;
        let rel = PathBuf::from(parent).join(&anon.name);
        let data = rel.join(DATA);
        // Through the directory's own descriptor: its path is not resolved
        // again, and `data` is a single component.
        let made = rustix::fs::mkdirat(&anon.dir, DATA, Mode::from_raw_mode(0o777));
        let anon = Anon {
            rel,
            held: Some(anon),
        };
        if let Err(e) = made {
            let err = Error::io("create directory", self.dir.abs(&data), e.into());
            self.discard(anon);
            return Err(err);
        }
        Ok(anon)
    }

    /// Remove an anonymous entry we hold, then release its lock.
    fn discard(&self, anon: Anon) {
        // Errors cannot be reported from the drop paths that call this;
        // what is left is unlocked `uuid-*` debris that maintenance removes.
        let _ = self.dir.remove_entry(&anon.rel);
        drop(anon);
    }

    fn commit(&self, name: &EntryName, anon: Anon) -> Result<Stored> {
        let _gate = self.commit_gate.read().unwrap_or_else(|p| p.into_inner());
        let data_rel = anon.rel.join(DATA);
        self.dir.hook(HookPoint::CommitMeasure, &anon.rel);
        let size = match fscache_quota::tree_space(self.dir.dir(), &data_rel) {
            Ok(s) => s,
            Err(e) => {
                let err = Error::io("measure", self.dir.abs(&data_rel), e);
                self.discard(anon);
                return Err(err);
            }
        };
        // Another process may have changed the limit since we looked.
        let info = match self.current_info() {
            Ok(i) => i,
            Err(e) => {
                self.discard(anon);
                return Err(e);
            }
        };
        if !info.is_compatible() {
            self.discard(anon);
            return Ok(Stored::Incompatible);
        }
        let limit = info.limit();
        // A limit of 0 (also an absent one) keeps nothing, not even an
        // entry that happens to occupy no blocks (an empty tree on tmpfs).
        if limit == fscache_quota::MaxSize::Bytes(0) || !limit.admits(size) {
            self.discard(anon);
            return Ok(Stored::TooLarge);
        }
        self.dir.hook(HookPoint::CommitCharge, &anon.rel);
        match self.charge_or_evict(size, limit) {
            Ok(true) => {}
            Ok(false) => {
                self.discard(anon);
                return Ok(Stored::NoSpace);
            }
            Err(e) => {
                self.discard(anon);
                return Err(e);
            }
        }
        // From here on, every way out that does not commit uncharges
        // exactly `size` again.
        let outcome = self.publish(name, &anon, size);
        if !matches!(outcome, Ok(Stored::Committed)) {
            let _ = self.dir.dir().remove_file(anon.rel.join(OBJECT_INFO));
            let uncharged = fscache_quota::uncharge(&self.dir, size);
            self.discard(anon);
            uncharged?;
        }
        outcome
    }

    /// Charge `size`; when refused, evict least-recently-used entries down
    /// to the watermark and charge again. `Ok(false)`: no space.
    fn charge_or_evict(&self, size: u64, limit: fscache_quota::MaxSize) -> Result<bool> {
        if let Charge::Accepted { .. } = fscache_quota::charge(&self.dir, size, limit)? {
            return Ok(true);
        }
        // Full: the scan that eviction needs anyway also clears the debris
        // of crashed writers (unaccounted space, or half-committed charges).
        fscache_quota::sweep(&self.dir)?;
        let target = limit.watermark(self.watermark_percent).unwrap_or(u64::MAX);
        // Entries a reader holds (or that were just used) are skipped by
        // eviction; plan again without them, so that a held old entry does
        // not hide idle younger ones. Every round removes something or
        // skips a new name, so this ends.
        let mut skipped = std::collections::HashSet::new();
        loop {
            let candidates: Vec<_> = fscache_quota::list_lru(&self.dir)?
                .into_iter()
                .filter(|c| !skipped.contains(&c.name))
                .collect();
            let total = fscache_quota::read_size(&self.dir).unwrap_or(u64::MAX);
            let victims = fscache_quota::plan(&candidates, total, size, target);
            let evicted = fscache_quota::evict(&self.dir, &victims)?;
            if let Charge::Accepted { .. } = fscache_quota::charge(&self.dir, size, limit)? {
                return Ok(true);
            }
            let before = skipped.len();
            skipped.extend(evicted.skipped);
            if evicted.removed.is_empty() && skipped.len() == before {
                return Ok(false);
            }
        }
    }

    /// Write `object.info` with `O_EXCL` and rename the entry to its name.
    fn publish(&self, name: &EntryName, anon: &Anon, size: u64) -> Result<Stored> {
        let info_rel = anon.rel.join(OBJECT_INFO);
        let info = ObjectInfo {
            creation_boot_id: Some(self.boot_id.clone()),
            size: Some(size),
        };
        let fd = self
            .dir
            .open_raw(
                &info_rel,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                Mode::from_raw_mode(0o644),
            )
            .map_err(|e| Error::io("create", self.dir.abs(&info_rel), e.into()))?;
        let mut file = std::fs::File::from(fd);
        io::Write::write_all(&mut file, &info.to_json_bytes())
            .map_err(|e| Error::io("write", self.dir.abs(&info_rel), e))?;
        drop(file);
        self.dir.hook(HookPoint::CommitRename, &anon.rel);
        // Both names are single components in `objects/`: resolve it once
        // (beneath the root) instead of cap-std's open + close per side.
        let objects = Path::new(OBJECTS);
        let objects_fd = self
            .dir
            .open_raw(objects, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| Error::io("open directory", self.dir.abs(objects), e.into()))?;
        let anon_name = anon.rel.file_name().expect("an anonymous entry has a name");
        match rustix::fs::renameat(&objects_fd, anon_name, &objects_fd, name.as_str())
            .map_err(io::Error::from)
        {
            Ok(()) => Ok(Stored::Committed),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists
                        | io::ErrorKind::DirectoryNotEmpty
                        | io::ErrorKind::NotADirectory
                        | io::ErrorKind::IsADirectory
                ) =>
            {
                Ok(Stored::Exists)
            }
            Err(e) => Err(Error::io("rename", self.dir.abs(&anon.rel), e)),
        }
    }
}

/// Read and parse `cache.info`.
fn read_info(dir: &CacheDir) -> Result<(CacheInfo, FileId)> {
    let rel = Path::new(CACHE_INFO);
    let fd = dir
        .open_raw(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())
        .map_err(|e| Error::io("open", dir.abs(rel), e.into()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("stat", dir.abs(rel), e.into()))?;
    let bytes = fscache_dir::read_small_fd(&fd).map_err(|e| Error::io("read", dir.abs(rel), e))?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => Ok((CacheInfo::from_json(&v), FileId::of(&st))),
        Err(e) => Err(Error::Corrupt {
            path: dir.abs(rel),
            what: format!("not JSON ({e})"),
        }),
    }
}

/// What identifies one version of `cache.info`: it is only ever replaced
/// by `rename`, so a change is a new inode (and the times and size are
/// compared too, for writers that edit it in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: fscache_quota::Stamp,
}

impl FileId {
    // The field types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &rustix::fs::Stat) -> Self {
        Self {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as i64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
        }
    }
}

/// Whether an open or stat error means "not there for me now".
pub(crate) fn is_miss(e: &io::Error) -> bool {
    gone(e)
        || matches!(
            raw_os_error(e).map(Errno::from_raw_os_error),
            // ELOOP: a symlink where a protocol file should be; EXDEV: a
            // symlink leading out of the cache.
            Some(Errno::LOOP) | Some(Errno::XDEV) | Some(Errno::STALE)
        )
}

/// Set the lock file's atime to now, mtime untouched. Best effort: a
/// reader without write access or on a read-only mount still gets its hit.
fn touch_atime(fd: &impl std::os::fd::AsFd) {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
        last_modification: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
    };
    let _ = rustix::fs::futimens(fd, &times);
}

/// An anonymous entry we created and hold exclusively.
struct Anon {
    rel: PathBuf,
    // Holds the exclusive lock until the entry is committed or removed.
    held: Option<AnonDir>,
}

impl Drop for Anon {
    fn drop(&mut self) {
        // We opened the lock file and never duplicated the descriptor, so
        // closing it releases the lock: no separate F_UNLCK.
        if let Some(held) = self.held.take() {
            held.lock.close();
        }
    }
}

impl Anon {
    fn data_abs(&self, dir: &CacheDir) -> PathBuf {
        dir.abs(&self.rel.join(DATA))
    }
}

/// A loaded entry: read-locked until dropped, so it cannot change or
/// vanish meanwhile.
#[must_use = "the entry is unlocked (and may be evicted) as soon as the guard drops"]
pub struct Entry {
    path: PathBuf,
    name: EntryName,
    lock: Option<FileLock<OwnedFd>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        // Our own, never duplicated descriptor: closing it releases the
        // read lock (one system call instead of F_UNLCK + close).
        if let Some(lock) = self.lock.take() {
            lock.close();
        }
    }
}

impl Entry {
    /// The absolute path of the entry's `data/` directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Open `data/` as a capability directory.
    ///
    /// # Errors
    ///
    /// The open failed.
    pub fn open_dir(&self) -> Result<Dir> {
        Dir::open_ambient_dir(&self.path, cap_std::ambient_authority())
            .map_err(|e| Error::io("open directory", &self.path, e))
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

/// An entry being stored: fill [`StoreGuard::path`], then
/// [`StoreGuard::commit`]. Dropped without commit, it is removed.
#[must_use = "dropping the guard without commit() discards the entry"]
pub struct StoreGuard<'a> {
    cache: &'a FsCache,
    name: EntryName,
    anon: Option<Anon>,
    compatible: bool,
}

impl StoreGuard<'_> {
    /// The absolute path of the private `data/` directory to fill.
    pub fn path(&self) -> PathBuf {
        self.anon().data_abs(&self.cache.dir)
    }

    /// Open the private `data/` directory as a capability directory.
    ///
    /// # Errors
    ///
    /// The open failed.
    pub fn open_data(&self) -> Result<Dir> {
        let rel = self.anon().rel.join(DATA);
        self.cache
            .dir
            .dir()
            .open_dir(&rel)
            .map_err(|e| Error::io("open directory", self.cache.dir.abs(&rel), e))
    }

    /// The name the entry will be committed as.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    fn anon(&self) -> &Anon {
        self.anon.as_ref().expect("present until commit or drop")
    }

    /// Commit the entry: measure it, charge the cache (evicting
    /// least-recently-used entries when full), write its `object.info` and
    /// rename it to its name. Returns what happened; anything but
    /// [`Stored::Committed`] discarded the entry.
    ///
    /// # Errors
    ///
    /// A system call failed; the entry is discarded and any charge undone.
    pub fn commit(mut self) -> Result<Stored> {
        let anon = self.anon.take().expect("present until commit or drop");
        if !self.compatible {
            self.cache.discard(anon);
            return Ok(Stored::Incompatible);
        }
        self.cache.commit(&self.name, anon)
    }
}

impl Drop for StoreGuard<'_> {
    fn drop(&mut self) {
        if let Some(anon) = self.anon.take() {
            self.cache.discard(anon);
        }
    }
}

impl fmt::Debug for StoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreGuard")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A private scratch directory, removed completely when dropped (also
/// during a panic unwind).
#[must_use = "the scratch directory is removed as soon as the guard drops"]
pub struct StageGuard<'a> {
    cache: &'a FsCache,
    anon: Option<Anon>,
}

impl StageGuard<'_> {
    /// The absolute path of the scratch `data/` directory.
    pub fn path(&self) -> PathBuf {
        self.anon
            .as_ref()
            .expect("present until drop")
            .data_abs(&self.cache.dir)
    }
}

impl Drop for StageGuard<'_> {
    fn drop(&mut self) {
        if let Some(anon) = self.anon.take() {
            self.cache.discard(anon);
        }
    }
}

impl fmt::Debug for StageGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageGuard")
            .field("path", &self.path())
            .finish()
    }
}
