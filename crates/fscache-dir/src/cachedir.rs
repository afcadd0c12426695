//! `CacheDir`: the capability handle of a cache root. Its protocols live
//! one per module (`locked`, `atomic`, `anon`, `remove`, `scaffold`,
//! `fdio`, the names in `layout`); `CacheDir` keeps one-line methods that
//! delegate to them, as cap-std's `Dir` does to cap-primitives.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, Mode, OFlags, Stat};

use crate::anon::AnonDir;
use crate::atomic::{AtomicTemp, Publish, Published};
#[cfg(doc)]
use crate::beneath::open_beneath;
use crate::error::with_path;
#[cfg(feature = "test-hooks")]
use crate::hook::Hook;
use crate::hook::HookPoint;
use crate::layout::OBJECTS;
use crate::locked::{LockOptions, LockedFile, TryLocked};
use crate::update::IfMissing;
use crate::{anon, atomic, fdio, locked, remove, scaffold, update};
use fscache_lock::FileLock;

/// `NFS_SUPER_MAGIC` from `statfs(2)`.
const NFS_SUPER_MAGIC: i128 = 0x6969;

/// The capability handle of a cache root: every file operation of the
/// cache goes through it, resolved beneath the root.
///
/// Paths given to its methods are relative to the root, built from fixed
/// components and validated names; resolution never leaves the root
/// (`openat2` with `RESOLVE_BENEATH`, or cap-std's sandboxing).
pub struct CacheDir {
    pub(crate) dir: Dir,
    pub(crate) root: PathBuf,
    pub(crate) nfs: bool,
    pub(crate) durable: bool,
    pub(crate) waits: Option<WaitObserver>,
    // `objects/`, opened (`O_PATH`) beneath the root on first use and
    // held, with its device and inode: see `CacheDir::objects_checked`.
    pub(crate) objects: RwLock<Option<(Arc<OwnedFd>, crate::stat::Inode)>>,
    // The first descriptor `objects` held, kept for the handle's life: the
    // load's hot path borrows it with two plain loads instead of taking
    // the read lock (two atomic read-modify-writes), for as long as
    // `objects_replaced` is false.
    pub(crate) first_objects: OnceLock<Arc<OwnedFd>>,
    pub(crate) objects_replaced: AtomicBool,
    #[cfg(feature = "test-hooks")]
    pub(crate) hook: Option<Hook>,
}

/// Told of every wait for a lock: the path, and how long it took to get.
pub type WaitObserver = Arc<dyn Fn(&Path, Duration) + Send + Sync>;

impl fmt::Debug for CacheDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheDir")
            .field("root", &self.root)
            .field("nfs", &self.nfs)
            .finish_non_exhaustive()
    }
}

/// Whether `path` names anything (a symlink counts), with an interrupted
/// `stat` retried rather than read as "absent".
fn present(path: &Path) -> io::Result<bool> {
    match crate::retry_io(|| std::fs::symlink_metadata(path)) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(with_path("stat", path, e)),
    }
}

impl CacheDir {
    /// Create `root` (and its parents) if missing and open it.
    ///
    /// `root` is made absolute against the current directory first, so
    /// paths handed out later stay valid if the process changes directory.
    ///
    /// # Errors
    ///
    /// Creating or opening `root` failed, or it is not a directory.
    pub fn open(root: &Path) -> io::Result<Self> {
        let root = std::path::absolute(root).map_err(|e| with_path("resolve", root, e))?;
        // The levels about to be made: a new directory's name is durable
        // only once its parent is `fsync`ed, and without that a power loss
        // can take a new cache away whole, with every entry committed
        // durably in it (found on the lazy FUSE file system). Once per
        // creation, so in every durability mode.
        //
        // Not `create_dir_all`: after an `EEXIST` it asks `is_dir`, which
        // reads an interrupted `statx` as "not a directory" and returns the
        // `EEXIST`, which no retry loop can tell from a real failure.
        let mut missing = Vec::new();
        for level in root.ancestors() {
            if level.as_os_str().is_empty() || present(level)? {
                break;
            }
            missing.push(level);
        }
        for made in missing.iter().rev() {
            match crate::retry_io(|| std::fs::create_dir(made)) {
                Ok(()) => {}
                // Made by someone else meanwhile: fine if it is a directory.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let st = crate::retry_io(|| std::fs::metadata(made))
                        .map_err(|e| with_path("stat", made, e))?;
                    if !st.is_dir() {
                        return Err(with_path("create directory", &root, e));
                    }
                }
                // Named by the path the caller gave, as `create_dir_all` did.
                Err(e) => return Err(with_path("create directory", &root, e)),
            }
        }
        for made in &missing {
            if let Some(parent) = made.parent() {
                crate::retry_io(|| std::fs::File::open(parent).and_then(|f| f.sync_all()))
                    .map_err(|e| with_path("sync", parent, e))?;
            }
        }
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority())
            .map_err(|e| with_path("open directory", &root, e))?;
        let nfs = rustix::io::retry_on_intr(|| rustix::fs::fstatfs(&dir))
            .map(|s| i128::from(s.f_type) == NFS_SUPER_MAGIC)
            .map_err(|e| with_path("statfs", &root, e.into()))?;
        Ok(Self {
            dir,
            root,
            nfs,
            durable: false,
            waits: None,
            objects: RwLock::new(None),
            first_objects: OnceLock::new(),
            objects_replaced: AtomicBool::new(false),
            #[cfg(feature = "test-hooks")]
            hook: None,
        })
    }

    /// The held `O_PATH` descriptor of `objects/`, opened beneath the root
    /// (never through a symlink) on first use. Single components below it
    /// are created, linked and renamed through it, without resolving
    /// `objects/` again for every step.
    ///
    /// Nothing in the protocol moves or removes `objects/`; should someone
    /// do it anyway, [`CacheDir::objects_checked`] (once per new entry)
    /// notices and opens the directory the path names now, and a
    /// temporary file that cannot be created in a removed directory
    /// (`ENOENT`) does the same.
    ///
    /// # Errors
    ///
    /// Opening `objects/` failed.
    pub fn objects(&self) -> io::Result<Arc<OwnedFd>> {
        if let Some((fd, _)) = &*self.objects.read().unwrap_or_else(|p| p.into_inner()) {
            return Ok(fd.clone());
        }
        self.reopen_objects()
    }

    /// As [`CacheDir::objects`], first comparing the held descriptor's
    /// device and inode with a `stat` of the path (one system call) and
    /// opening `objects/` again when the path names another directory now.
    ///
    /// # Errors
    ///
    /// The `stat` or the open failed.
    pub fn objects_checked(&self) -> io::Result<Arc<OwnedFd>> {
        let rel = Path::new(OBJECTS);
        let st = rustix::io::retry_on_intr(|| {
            rustix::fs::statat(&self.dir, rel, AtFlags::SYMLINK_NOFOLLOW)
        })
        .map_err(|e| self.err("stat", rel, e))?;
        let now = crate::stat::inode(&st);
        if let Some((fd, id)) = &*self.objects.read().unwrap_or_else(|p| p.into_inner()) {
            if *id == now {
                return Ok(fd.clone());
            }
        }
        self.reopen_objects()
    }

    fn reopen_objects(&self) -> io::Result<Arc<OwnedFd>> {
        let rel = Path::new(OBJECTS);
        let fd = self
            .open_errno(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| self.err("open directory", rel, e))?;
        let st = rustix::io::retry_on_intr(|| rustix::fs::fstat(&fd))
            .map_err(|e| self.err("fstat", rel, e))?;
        let id = crate::stat::inode(&st);
        let fd = Arc::new(fd);
        let mut held = self.objects.write().unwrap_or_else(|p| p.into_inner());
        *held = Some((fd.clone(), id));
        // The first descriptor is also the hot path's; once another one
        // is held, the hot path takes the lock like everyone else. Under
        // the write lock, so `replaced` is set before this one is used.
        if self.first_objects.set(fd.clone()).is_err() {
            self.objects_replaced.store(true, Ordering::Release);
        }
        drop(held);
        Ok(fd)
    }

    /// Call `observer` whenever a blocking [`CacheDir::lock`] had to wait
    /// for another holder (not when the lock was free: that path costs
    /// nothing more).
    pub fn set_wait_observer(&mut self, observer: Option<WaitObserver>) {
        self.waits = observer;
    }

    /// Make atomic files durable: each temporary file is `fsync`ed before
    /// it is renamed or linked into place, and the target's directory after
    /// (off by default, as in osbuild).
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// Whether atomic files are made durable (see
    /// [`CacheDir::set_durable`]).
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// Install a test hook (see [`HookPoint`]); needs the cargo feature
    /// `test-hooks`.
    #[cfg(feature = "test-hooks")]
    pub fn set_hook(&mut self, hook: Option<Hook>) {
        self.hook = hook;
    }

    /// Run the test hook, if any, at `point`. Without the cargo feature
    /// `test-hooks` this is an empty inline function.
    #[inline(always)]
    pub fn hook(&self, point: HookPoint, path: &Path) {
        #[cfg(feature = "test-hooks")]
        if let Some(hook) = &self.hook {
            hook(point, path);
        }
        #[cfg(not(feature = "test-hooks"))]
        let _ = (point, path);
    }

    /// The cap-std handle of the root.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The entries of the directory `rel`, every one read before this
    /// returns (`read_dir`, then `getdents64` to the end): the one listing
    /// of a cache directory. An interrupted call (`EINTR`: the `openat2`,
    /// the `fcntl(F_GETFL)` and `openat(".")` of rustix's `Dir`) lists it
    /// again from the start; rustix retries an interrupted `getdents64`
    /// itself, and a listing another error cut short cannot be resumed
    /// (its `Dir` ends after one).
    ///
    /// # Errors
    ///
    /// Opening or reading the directory failed (the path is not folded
    /// in: the caller names it).
    pub fn list_dir(&self, rel: &Path) -> io::Result<Vec<cap_std::fs::DirEntry>> {
        crate::retry_io(|| self.dir.read_dir(rel)?.collect())
    }

    /// The absolute path of the root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the root is on NFS, where an unlinked open file keeps its
    /// link count and locked open compares paths instead.
    #[doc(alias = "is_remote")]
    pub fn is_nfs(&self) -> bool {
        self.nfs
    }

    /// The absolute path of `rel`.
    pub fn abs(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Fold `rel`'s absolute path and `op` into `e`.
    pub fn err(&self, op: &'static str, rel: &Path, e: impl Into<io::Error>) -> io::Error {
        with_path(op, &self.abs(rel), e.into())
    }

    /// `openat2(root, rel, flags | O_CLOEXEC | O_NOFOLLOW, RESOLVE_BENEATH)`—
    /// open `rel` beneath the root, never following a symlink out of it nor
    /// at the last component (see [`open_beneath`], whose cap-std fallback
    /// is sandboxed too).
    ///
    /// # Errors
    ///
    /// The open failed; the path is folded in (errno and kind kept:
    /// [`raw_os_error`](crate::raw_os_error) classifies it).
    pub fn open_raw(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        self.open_errno(rel, flags, mode)
            .map_err(|e| self.err("open", rel, e))
    }

    /// As [`CacheDir::open_raw`], the raw errno for the protocols here that
    /// classify it (a load's miss builds no `io::Error`).
    pub(crate) fn open_errno(
        &self,
        rel: &Path,
        flags: OFlags,
        mode: Mode,
    ) -> rustix::io::Result<OwnedFd> {
        crate::beneath::open_beneath_errno(&self.dir, rel, flags, mode)
    }

    /// `open(rel, O_RDONLY | O_DIRECTORY)` beneath the root—a directory of
    /// the cache, for reading it or `*at` calls inside it.
    ///
    /// # Errors
    ///
    /// The open failed; the path is folded in.
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_errno(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| self.err("open directory", rel, e))
    }

    /// `open(rel, O_RDONLY | O_NONBLOCK)` beneath the root—a protocol file
    /// to read (a FIFO planted in its place cannot hang the open).
    ///
    /// # Errors
    ///
    /// The open failed; the path is folded in.
    pub fn open_read(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_errno(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())
            .map_err(|e| self.err("open", rel, e))
    }

    /// `open(rel, O_RDWR | O_CREAT | O_NONBLOCK, 0o666)` beneath the
    /// root—create-or-open a file that is never replaced nor unlinked (so
    /// a plain `O_CREAT` is race-free: every opener gets the same inode),
    /// such as `build.lock`.
    ///
    /// # Errors
    ///
    /// The open failed (`PermissionDenied` or `ReadOnlyFilesystem` on a
    /// cache this process may not write); the path is folded in.
    pub fn create_or_open(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_errno(
            rel,
            OFlags::RDWR | OFlags::CREATE | OFlags::NONBLOCK,
            Mode::from_raw_mode(0o666),
        )
        .map_err(|e| self.err("open", rel, e))
    }

    /// `open(rel, O_WRONLY | O_CREAT | O_EXCL, 0o644)` beneath the root—a
    /// new file that must not exist yet (an entry's `object.info`).
    ///
    /// # Errors
    ///
    /// The open failed (`AlreadyExists` when `rel` exists); the path is
    /// folded in.
    pub fn create_new(&self, rel: &Path) -> io::Result<std::fs::File> {
        self.open_errno(
            rel,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(0o644),
        )
        .map(std::fs::File::from)
        .map_err(|e| self.err("create", rel, e))
    }

    /// `fsync` every file and directory below `rel` and `rel` itself, each
    /// directory after its children, over the one [walk](crate::walk).
    /// Where a file or directory cannot be opened for it (a mode without
    /// read permission), one `syncfs` of the cache's file system covers it.
    ///
    /// # Errors
    ///
    /// An open, read or `fsync` failed; the path is folded in.
    #[doc(alias = "fsync")]
    pub fn sync_all(&self, rel: &Path) -> io::Result<()> {
        fdio::sync_all(self, rel)
    }

    /// `open(rel, O_RDONLY | O_NOATIME)` beneath the root, retried without
    /// `O_NOATIME` where the kernel refuses it (`EPERM`: we neither own the
    /// file nor have `CAP_FOWNER`), so inspecting a file does not move its
    /// atime wherever that can be avoided.
    ///
    /// # Errors
    ///
    /// The open failed; the path is folded in.
    pub fn open_noatime(&self, rel: &Path) -> io::Result<OwnedFd> {
        locked::open_noatime_raw(self, rel, OFlags::RDONLY).map_err(|e| self.err("open", rel, e))
    }

    /// Locked open of `rel`, waiting for the lock: open (never create) →
    /// lock → check that the path still names the locked file; retry when
    /// it was replaced or unlinked meanwhile.
    ///
    /// # Errors
    ///
    /// The open or lock failed; `NotFound`/`NotADirectory` when `rel` (or a
    /// directory on its way) does not exist; `PermissionDenied` or
    /// `ReadOnlyFilesystem` when a read-write open is refused.
    pub fn lock(&self, rel: &Path, opts: LockOptions) -> io::Result<LockedFile> {
        locked::lock(self, rel, opts)
    }

    /// Locked open of `rel` without waiting: as [`CacheDir::lock`], but a
    /// conflicting lock is [`TryLocked::Busy`] and a missing `rel` (or a
    /// directory on its way: `ENOENT`, `ENOTDIR`) is [`TryLocked::Absent`],
    /// without building an error for it.
    ///
    /// # Errors
    ///
    /// As [`CacheDir::lock`], but never `NotFound`/`NotADirectory` from the
    /// open.
    pub fn try_lock(&self, rel: &Path, opts: LockOptions) -> io::Result<TryLocked> {
        locked::try_lock(self, rel, opts)
    }

    /// As [`CacheDir::try_lock`] of `objects/<rel>`, resolved beneath the
    /// held `objects/` descriptor ([`CacheDir::objects`]) instead of the
    /// root: `openat2(objects, rel, …, RESOLVE_BENEATH)`, one lookup less,
    /// and `rel` handed to the kernel as the C string it is. For the load,
    /// where `rel` is `NAME/object.lock` of a validated name.
    ///
    /// # Errors
    ///
    /// As [`CacheDir::try_lock`]; the path in an error is the one
    /// relative to the root.
    pub fn try_lock_object(&self, rel: &CStr, opts: LockOptions) -> io::Result<TryLocked> {
        self.with_objects(|fd| locked::try_lock_object(self, fd, rel, opts))
    }

    /// As [`CacheDir::stat_if_present`] of `objects/<rel>`, relative to
    /// the held `objects/` descriptor (`fstatat(objects, rel,
    /// AT_SYMLINK_NOFOLLOW)`).
    ///
    /// # Errors
    ///
    /// As [`CacheDir::stat_if_present`].
    pub fn stat_object_if_present(&self, rel: &CStr) -> io::Result<Option<Stat>> {
        use rustix::io::Errno;
        let st = self.with_objects(|fd| {
            Ok(rustix::io::retry_on_intr(|| {
                rustix::fs::statat(fd, rel, AtFlags::SYMLINK_NOFOLLOW)
            }))
        })?;
        match st {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV | Errno::STALE) => {
                Ok(None)
            }
            Err(e) => {
                use std::os::unix::ffi::OsStrExt;
                let rel = Path::new(OBJECTS).join(std::ffi::OsStr::from_bytes(rel.to_bytes()));
                Err(self.err("stat", &rel, e))
            }
        }
    }

    /// Run `f` with the held `objects/` descriptor, borrowed (no reference
    /// count touched: the load's hot path): the first one held without a
    /// lock while it is still the one held, else under the read lock.
    #[inline]
    fn with_objects<T>(&self, f: impl FnOnce(BorrowedFd<'_>) -> io::Result<T>) -> io::Result<T> {
        if !self.objects_replaced.load(Ordering::Acquire) {
            if let Some(fd) = self.first_objects.get() {
                return f(fd.as_fd());
            }
        }
        {
            let held = self.objects.read().unwrap_or_else(|p| p.into_inner());
            if let Some((fd, _)) = &*held {
                return f(fd.as_fd());
            }
        }
        let fd = self.reopen_objects()?;
        f(fd.as_fd())
    }

    /// Claim the lock file `rel` of a directory that may be crash debris,
    /// without waiting: open it read-write, creating it when it is missing
    /// (`O_CREAT`, as osbuild's cleanup does, so a writer about to link its
    /// own lock file in gets `EEXIST` and moves on), lock it exclusively,
    /// then require that `rel` still names the locked inode.
    ///
    /// The last check compares device and inode with a `stat` of the path,
    /// not only the link count: a descriptor opened before a racing
    /// cleanup unlinked the file (and a new writer linked its own lock in
    /// its place) or before its writer renamed the directory away must
    /// never pass for the lock of what `rel` names now. Removing a
    /// directory under such a stale lock deletes a live writer's files.
    /// A mismatch is [`TryLocked::Busy`]: the directory is not ours to
    /// remove now.
    ///
    /// # Errors
    ///
    /// The open, lock or `stat` failed for a reason other than absence.
    pub fn try_claim(&self, rel: &Path) -> io::Result<TryLocked> {
        locked::try_claim(self, rel)
    }

    /// `fstatat(root, rel, AT_SYMLINK_NOFOLLOW)`.
    ///
    /// # Errors
    ///
    /// As `fstatat`, path folded in.
    pub fn stat(&self, rel: &Path) -> io::Result<Stat> {
        fdio::stat(self, rel)
    }

    /// Read a small protocol file (at most 1 MiB: anything larger is
    /// garbage and reported as `InvalidData`).
    ///
    /// # Errors
    ///
    /// Opening or reading failed, or the file is too large.
    pub fn read_small(&self, rel: &Path) -> io::Result<Vec<u8>> {
        fdio::read_small(self, rel)
    }

    /// A locked, empty temporary file in `objects/`, to be published later
    /// by [`AtomicTemp::publish`] (the first half of an atomic file).
    ///
    /// # Errors
    ///
    /// Opening `objects/` or creating the file failed.
    pub fn atomic_temp(&self) -> io::Result<AtomicTemp<'_>> {
        atomic::atomic_temp(self)
    }

    /// Atomic file: create `store/uuid-<hex>`, lock it, write `contents`,
    /// then publish it at `target` by `rename` ([`Publish::Replace`]) or
    /// `link` ([`Publish::NoReplace`]), and unlink the temporary name.
    ///
    /// `store` must be on the same file system as `target`.
    ///
    /// # Errors
    ///
    /// Any step failed; the temporary name is unlinked then too.
    pub fn atomic_file(
        &self,
        store: &Path,
        target: &Path,
        contents: &[u8],
        how: Publish,
    ) -> io::Result<Published> {
        atomic::atomic_file(self, store, target, contents, how)
    }

    /// As [`CacheDir::atomic_file`], also handing back the exclusive lock
    /// of the new file.
    ///
    /// # Errors
    ///
    /// As [`CacheDir::atomic_file`].
    pub fn atomic_file_locked(
        &self,
        store: &Path,
        target: &Path,
        contents: &[u8],
        how: Publish,
    ) -> io::Result<(Published, FileLock<OwnedFd>)> {
        atomic::atomic_file_locked(self, store, target, contents, how, self.durable)
    }

    /// As [`CacheDir::atomic_file`], durably whatever
    /// [`CacheDir::set_durable`] says: the temporary file is `fsync`ed
    /// before it is published and the target's directory after. For the
    /// files a power loss must never leave empty or short, because the
    /// cache cannot be opened then (`cache.info`, and the scaffolding).
    ///
    /// # Errors
    ///
    /// As [`CacheDir::atomic_file`].
    pub fn atomic_file_durable(
        &self,
        store: &Path,
        target: &Path,
        contents: &[u8],
        how: Publish,
    ) -> io::Result<Published> {
        atomic::atomic_file_locked(self, store, target, contents, how, true).map(
            |(published, lock)| {
                lock.close();
                published
            },
        )
    }

    /// `fsync` the directory `rel` (`""`: the root), so the names in it are
    /// durable.
    ///
    /// # Errors
    ///
    /// Opening or syncing it failed.
    pub fn sync_dir(&self, rel: &Path) -> io::Result<()> {
        fdio::sync_dir(self, rel)
    }

    /// Atomic anonymous directory in `parent`: create a locked lock file,
    /// `mkdir parent/uuid-<hex>`, link the lock file in as `object.lock`,
    /// keeping its exclusive lock. Retries with a new name when a racing
    /// cleanup removed the empty directory first.
    ///
    /// # Errors
    ///
    /// Any step failed for another reason.
    pub fn atomic_anon_dir(&self, parent: &Path) -> io::Result<AnonDir> {
        anon::atomic_anon_dir(self, parent)
    }

    /// Remove the entry directory `rel` (the caller holds its exclusive
    /// lock, or knows nobody can take it): unlink `object.info` first (the
    /// entry is invalid from then on), then everything but `object.lock`,
    /// then `object.lock`, then the directory. Racing removals are
    /// tolerated; symlinks are removed, never followed; a plain file or
    /// symlink at `rel` is unlinked.
    ///
    /// # Errors
    ///
    /// A removal failed for a reason other than the entry being gone.
    pub fn remove_entry(&self, rel: &Path) -> io::Result<()> {
        remove::remove_entry(self, rel)
    }

    /// Remove `rel` whatever it is, recursively for a directory, never
    /// following symlinks, making read-only directories writable on the way.
    ///
    /// # Errors
    ///
    /// A removal failed for a reason other than the path being gone.
    pub fn remove_tree(&self, rel: &Path) -> io::Result<()> {
        remove::remove_tree(self, rel)
    }

    /// Create the cache's scaffolding: `objects/`, `stage/`, then
    /// `CACHEDIR.TAG`, `cache.info` (`{"version": 1}`), `cache.lock` and
    /// `cache.size` (`0`) as no-replace atomic files. What exists is kept,
    /// so this is safe on a live cache and in parallel.
    ///
    /// # Errors
    ///
    /// Creating a piece failed for a reason other than it existing.
    pub fn scaffold(&self) -> io::Result<()> {
        scaffold::scaffold_created_by(self, None)
    }

    /// As [`CacheDir::scaffold`], recording in a new `cache.info` the app
    /// boot id of the boot that creates the cache (`creation-boot-id`, as
    /// osbuild's format allows; osbuild itself writes only the version).
    /// An existing `cache.info` is never touched.
    ///
    /// # Errors
    ///
    /// As [`CacheDir::scaffold`].
    pub fn scaffold_created_by(&self, boot_id: Option<&str>) -> io::Result<()> {
        scaffold::scaffold_created_by(self, boot_id)
    }

    /// Read-modify-write of the protocol file `rel` (`cache.size`,
    /// `cache.info`, `cache.stats`): make a locked temporary file in
    /// `objects/`, take `rel`'s exclusive lock (waiting; when `rel` is
    /// missing, as `if_missing` says), read it through the locked
    /// descriptor, and call `f` with its bytes. `f` returns the new
    /// contents (`None`: leave the file alone) and the result; new contents
    /// are written into the temporary file and renamed over `rel`. A crash
    /// at any step leaves the old value or the new one.
    ///
    /// # Errors
    ///
    /// Creating the temporary file, the locked open, the read or the
    /// rename failed (the path is folded in), or `f` failed.
    pub fn update<T>(
        &self,
        rel: &Path,
        if_missing: IfMissing<'_>,
        f: impl FnOnce(&[u8]) -> io::Result<(Option<Vec<u8>>, T)>,
    ) -> io::Result<T> {
        update::update(self, rel, self.durable, if_missing, f)
    }

    /// As [`CacheDir::update`], durably whatever [`CacheDir::set_durable`]
    /// says (the temporary file synced before the rename, the directory
    /// after): for `cache.info`, which a power loss must never leave torn.
    ///
    /// # Errors
    ///
    /// As [`CacheDir::update`].
    pub fn update_durable<T>(
        &self,
        rel: &Path,
        if_missing: IfMissing<'_>,
        f: impl FnOnce(&[u8]) -> io::Result<(Option<Vec<u8>>, T)>,
    ) -> io::Result<T> {
        update::update(self, rel, true, if_missing, f)
    }

    /// `fstatat(root, rel, AT_SYMLINK_NOFOLLOW)`, with "not there for me
    /// now" as `Ok(None)` and no error built for it: gone (`ENOENT`,
    /// `ENOTDIR`), a symlink in the way (`ELOOP`), one leading out
    /// (`EXDEV`), a stale NFS handle (`ESTALE`), the classes of
    /// [`is_miss`](crate::is_miss). For lookups on the load path.
    ///
    /// # Errors
    ///
    /// The `stat` failed for another reason; the path is folded in.
    pub fn stat_if_present(&self, rel: &Path) -> io::Result<Option<Stat>> {
        use rustix::io::Errno;
        match rustix::io::retry_on_intr(|| {
            rustix::fs::statat(&self.dir, rel, AtFlags::SYMLINK_NOFOLLOW)
        }) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV | Errno::STALE) => {
                Ok(None)
            }
            Err(e) => Err(self.err("stat", rel, e)),
        }
    }
}
