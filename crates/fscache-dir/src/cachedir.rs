//! `CacheDir`: the capability handle of a cache root and the protocols that
//! run on it (locked open, atomic file, atomic anonymous dir, removal,
//! scaffolding).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Component;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cap_std::fs::Dir;
use fscache_lock::{FileLock, LockKind, Wait};
use rustix::fs::{AtFlags, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::beneath::open_beneath;
use crate::error::{raw_os_error, with_path};
#[cfg(feature = "test-hooks")]
use crate::hook::Hook;
use crate::hook::HookPoint;
use crate::locked::{LockOptions, TryLocked};
use crate::name::{anonymous_name, reseed_anonymous_names};

/// `objects/`: committed entries and entries being stored.
pub const OBJECTS: &str = "objects";
/// `stage/`: scratch entries.
pub const STAGE: &str = "stage";
/// `cache.info`: the cache's configuration (JSON object).
pub const CACHE_INFO: &str = "cache.info";
/// `cache.lock`: shared by every open handle, exclusive for repair.
pub const CACHE_LOCK: &str = "cache.lock";
/// `cache.size`: bytes accounted to committed entries (JSON integer).
pub const CACHE_SIZE: &str = "cache.size";
/// `CACHEDIR.TAG`: marks the directory as a cache for backup tools.
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
/// `object.info` of an entry: `{"creation-boot-id": …, "size": …}`.
pub const OBJECT_INFO: &str = "object.info";
/// `object.lock` of an entry: locks the entry; its atime is the last use.
pub const OBJECT_LOCK: &str = "object.lock";
/// `data/` of an entry: the caller's content.
pub const DATA: &str = "data";

/// What scaffolding writes to a new `CACHEDIR.TAG`
/// (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG_CONTENTS: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This is a cache directory tag created by fscache (see https://bford.info/cachedir/)\n";

/// `NFS_SUPER_MAGIC` from `statfs(2)`.
const NFS_SUPER_MAGIC: i128 = 0x6969;

/// How an atomic file is published at its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// `rename` over whatever is there.
    Replace,
    /// `link`: an existing target is kept and reported.
    NoReplace,
}

/// What an atomic file creation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// The new file is at the target.
    Done,
    /// [`Publish::NoReplace`] found the target taken; nothing changed.
    Exists,
}

/// A locked file and what `fstat` said of it after the lock was taken.
#[derive(Debug)]
pub struct LockedFile {
    /// The held lock, owning the descriptor.
    pub lock: FileLock<OwnedFd>,
    /// `fstat` of the descriptor, taken after locking.
    pub stat: Stat,
}

/// A new anonymous directory `uuid-<hex>` with its `object.lock` linked in
/// and held exclusively.
#[derive(Debug)]
pub struct AnonDir {
    /// The directory's name (`uuid-<32 hex>`), relative to its parent.
    pub name: String,
    /// The exclusive lock on its `object.lock`.
    pub lock: FileLock<OwnedFd>,
    /// An `O_PATH` descriptor of the directory itself, for creating what
    /// goes inside it without resolving its path again.
    pub dir: OwnedFd,
    /// An `O_PATH` descriptor of the parent the directory was made in, for
    /// renaming it there without resolving the parent again.
    pub parent: Arc<OwnedFd>,
}

/// A locked, empty temporary file `uuid-<hex>` in `objects/`, made ahead of
/// an atomic file's publication ([`CacheDir::atomic_temp`]), so that a
/// caller holding another lock (the counter's) only writes and renames it.
/// Dropped unpublished, it is unlinked.
#[derive(Debug)]
pub struct AtomicTemp<'a> {
    cache: &'a CacheDir,
    // The directory the temporary file is in, relative to the root (for
    // messages) and as a descriptor (for every operation).
    store: PathBuf,
    dir: Arc<OwnedFd>,
    name: String,
    lock: Option<FileLock<OwnedFd>>,
}

/// How often an atomic file is retried when its temporary file vanished
/// (a racing cleanup unlinked it between its creation and its lock).
const TEMP_RETRIES: usize = 8;

/// The capability handle of a cache root: every file operation of the
/// cache goes through it, resolved beneath the root.
///
/// Paths given to its methods are relative to the root, built from fixed
/// components and validated names; resolution never leaves the root
/// (`openat2` with `RESOLVE_BENEATH`, or cap-std's sandboxing).
pub struct CacheDir {
    dir: Dir,
    root: PathBuf,
    remote: bool,
    durable: bool,
    waits: Option<WaitObserver>,
    // `objects/`, opened (`O_PATH`) beneath the root on first use and
    // held, with its device and inode: see `CacheDir::objects_checked`.
    objects: RwLock<Option<(Arc<OwnedFd>, crate::stat::Inode)>>,
    #[cfg(feature = "test-hooks")]
    hook: Option<Hook>,
}

/// Told of every wait for a lock: the path, and how long it took to get.
pub type WaitObserver = Arc<dyn Fn(&Path, Duration) + Send + Sync>;

/// What a locked open does when the path is absent.
enum Absence<'a> {
    /// Report `ENOENT`/`ENOTDIR` as an error.
    Error,
    /// Answer `None` and set the flag, without building an error.
    Note(&'a mut bool),
}

impl fmt::Debug for CacheDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheDir")
            .field("root", &self.root)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
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
        crate::retry_io(|| std::fs::create_dir_all(&root))
            .map_err(|e| with_path("create directory", &root, e))?;
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority())
            .map_err(|e| with_path("open directory", &root, e))?;
        let remote = rustix::io::retry_on_intr(|| rustix::fs::fstatfs(&dir))
            .map(|s| i128::from(s.f_type) == NFS_SUPER_MAGIC)
            .map_err(|e| with_path("statfs", &root, e.into()))?;
        Ok(Self {
            dir,
            root,
            remote,
            durable: false,
            waits: None,
            objects: RwLock::new(None),
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
            .open_raw(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| self.err("open directory", rel, e))?;
        let st = rustix::io::retry_on_intr(|| rustix::fs::fstat(&fd))
            .map_err(|e| self.err("fstat", rel, e))?;
        let id = crate::stat::inode(&st);
        let fd = Arc::new(fd);
        *self.objects.write().unwrap_or_else(|p| p.into_inner()) = Some((fd.clone(), id));
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

    /// The absolute path of the root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the root is on NFS, where an unlinked open file keeps its
    /// link count and locked open compares paths instead.
    pub fn is_remote(&self) -> bool {
        self.remote
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
    /// The raw errno, for callers that classify it.
    pub fn open_raw(&self, rel: &Path, flags: OFlags, mode: Mode) -> rustix::io::Result<OwnedFd> {
        open_beneath(&self.dir, rel, flags, mode)
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
        self.open_noatime_raw(rel, OFlags::RDONLY)
            .map_err(|e| self.err("open", rel, e))
    }

    fn open_noatime_raw(&self, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        match self.open_raw(rel, flags | OFlags::NOATIME, Mode::empty()) {
            // open(2): O_NOATIME needs ownership or CAP_FOWNER.
            Err(Errno::PERM) => self.open_raw(rel, flags, Mode::empty()),
            other => other,
        }
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
        match self.locked_open(rel, opts, Wait::Block, Absence::Error)? {
            Some(locked) => Ok(locked),
            // `FileLock::lock` waits: it never reports contention.
            None => Err(self.err("lock", rel, io::Error::from(io::ErrorKind::WouldBlock))),
        }
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
        let mut absent = false;
        let locked = self.locked_open(rel, opts, Wait::NonBlock, Absence::Note(&mut absent))?;
        Ok(match locked {
            Some(locked) => TryLocked::Locked(locked),
            None if absent => TryLocked::Absent,
            None => TryLocked::Busy,
        })
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
        let fd = match self.open_raw(
            rel,
            OFlags::RDWR | OFlags::CREATE | OFlags::NONBLOCK,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(TryLocked::Absent),
            Err(e) => return Err(self.err("open", rel, e)),
        };
        self.hook(HookPoint::LockedOpenLock, rel);
        let lock = match FileLock::try_lock(fd, LockKind::Exclusive) {
            Ok(Some(lock)) => lock,
            Ok(None) => return Ok(TryLocked::Busy),
            Err(e) => return Err(self.err("lock", rel, e)),
        };
        let st = rustix::io::retry_on_intr(|| rustix::fs::fstat(&lock))
            .map_err(|e| self.err("fstat", rel, e))?;
        match rustix::io::retry_on_intr(|| {
            rustix::fs::statat(&self.dir, rel, AtFlags::SYMLINK_NOFOLLOW)
        }) {
            Ok(p) if p.st_dev == st.st_dev && p.st_ino == st.st_ino && st.st_nlink > 0 => {
                Ok(TryLocked::Locked(LockedFile { lock, stat: st }))
            }
            Ok(_) => Ok(TryLocked::Busy),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::STALE) => Ok(TryLocked::Absent),
            Err(e) => Err(self.err("stat", rel, e)),
        }
    }

    /// The loop of every locked open: open (never create) → lock → still
    /// linked? → retry. `None` when a non-blocking lock met contention or
    /// (with [`Absence::Note`]) the path is absent.
    fn locked_open(
        &self,
        rel: &Path,
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
            self.hook(HookPoint::LockedOpenOpen, rel);
            let opened = if opts.noatime {
                self.open_noatime_raw(rel, flags)
            } else {
                self.open_raw(rel, flags, Mode::empty())
            };
            let fd = match (opened, &mut absence) {
                (Ok(fd), _) => fd,
                (Err(Errno::NOENT | Errno::NOTDIR), Absence::Note(absent)) => {
                    **absent = true;
                    return Ok(None);
                }
                (Err(e), _) => return Err(self.err("open", rel, e)),
            };
            self.hook(HookPoint::LockedOpenLock, rel);
            let lock = match wait {
                // Try first: free is the common case and costs the same one
                // fcntl; a wait is then timed and reported.
                Wait::Block => match FileLock::try_lock_or_return(fd, opts.kind) {
                    Ok(Ok(lock)) => Ok(lock),
                    Ok(Err(fd)) => {
                        let started = Instant::now();
                        let lock = FileLock::lock(fd, opts.kind);
                        if let Some(observe) = &self.waits {
                            observe(rel, started.elapsed());
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
            .map_err(|e| self.err("lock", rel, e))?;
            if let Some(stat) = self.still_linked(rel, &lock)? {
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
    fn still_linked(&self, rel: &Path, fd: &impl AsFd) -> io::Result<Option<Stat>> {
        let st = match rustix::io::retry_on_intr(|| rustix::fs::fstat(fd)) {
            Ok(st) => st,
            Err(Errno::STALE) => return Ok(None),
            Err(e) => return Err(self.err("fstat", rel, e)),
        };
        if !self.remote {
            return Ok((st.st_nlink > 0).then_some(st));
        }
        match rustix::io::retry_on_intr(|| {
            rustix::fs::statat(&self.dir, rel, AtFlags::SYMLINK_NOFOLLOW)
        }) {
            Ok(p) if p.st_dev == st.st_dev && p.st_ino == st.st_ino => Ok(Some(st)),
            Ok(_) | Err(Errno::NOENT) | Err(Errno::STALE) => Ok(None),
            Err(e) => Err(self.err("stat", rel, e)),
        }
    }

    /// `fstatat(root, rel, AT_SYMLINK_NOFOLLOW)`.
    ///
    /// # Errors
    ///
    /// As `fstatat`, path folded in.
    pub fn stat(&self, rel: &Path) -> io::Result<Stat> {
        rustix::io::retry_on_intr(|| rustix::fs::statat(&self.dir, rel, AtFlags::SYMLINK_NOFOLLOW))
            .map_err(|e| self.err("stat", rel, e))
    }

    /// Read a small protocol file (at most 1 MiB: anything larger is
    /// garbage and reported as `InvalidData`).
    ///
    /// # Errors
    ///
    /// Opening or reading failed, or the file is too large.
    pub fn read_small(&self, rel: &Path) -> io::Result<Vec<u8>> {
        // O_NONBLOCK: a FIFO planted where a protocol file belongs must not
        // hang the open; on a regular file it changes nothing.
        let fd = self
            .open_raw(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())
            .map_err(|e| self.err("open", rel, e))?;
        read_small_fd(&fd).map_err(|e| self.err("read", rel, e))
    }

    /// Create a locked, empty temporary file `uuid-<hex>` in the directory
    /// `dir`. Returns its name and the exclusive lock.
    ///
    /// A racing cleanup may unlink the new file before it is locked; that
    /// is not checked here (it would cost an `fstat` on every atomic file)
    /// but when the file is published: the `rename` or `link` of a vanished
    /// name fails with `ENOENT`, and the caller retries with a new file.
    fn create_temp_at(&self, dir: &OwnedFd) -> rustix::io::Result<(String, FileLock<OwnedFd>)> {
        loop {
            let name = anonymous_name();
            let fd = match rustix::io::retry_on_intr(|| {
                rustix::fs::openat(
                    dir,
                    name.as_str(),
                    OFlags::RDWR
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
            }) {
                Ok(fd) => fd,
                // Another process shares our names (a fork): draw anew.
                Err(Errno::EXIST) => {
                    reseed_anonymous_names();
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Fresh and private: only a cleanup that found it unlocked can
            // hold its lock, briefly.
            let lock = FileLock::lock(fd, LockKind::Exclusive)
                .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
            return Ok((name, lock));
        }
    }

    /// A locked, empty temporary file in `objects/`, to be published later
    /// by [`AtomicTemp::publish`] (the first half of an atomic file).
    ///
    /// # Errors
    ///
    /// Opening `objects/` or creating the file failed.
    pub fn atomic_temp(&self) -> io::Result<AtomicTemp<'_>> {
        let mut dir = self.objects()?;
        let (name, lock) = match self.create_temp_at(&dir) {
            // `objects/` was removed under the held descriptor: look again.
            Err(Errno::NOENT) => {
                dir = self.objects_checked()?;
                self.create_temp_at(&dir)
            }
            other => other,
        }
        .map_err(|e| self.err("create", &Path::new(OBJECTS).join("uuid-*"), e))?;
        Ok(AtomicTemp {
            cache: self,
            store: PathBuf::from(OBJECTS),
            dir,
            name,
            lock: Some(lock),
        })
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
        self.atomic_file_locked(store, target, contents, how)
            // Our own temp file's only descriptor: closing releases it.
            .map(|(published, lock)| {
                lock.close();
                published
            })
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
        let temp = if store == Path::new(OBJECTS) {
            self.atomic_temp()?
        } else {
            let dir = self
                .open_raw(store, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                .map_err(|e| self.err("open directory", store, e))?;
            let dir = Arc::new(dir);
            let (name, lock) = self
                .create_temp_at(&dir)
                .map_err(|e| self.err("create", &store.join("uuid-*"), e))?;
            AtomicTemp {
                cache: self,
                store: store.to_owned(),
                dir,
                name,
                lock: Some(lock),
            }
        };
        temp.publish_locked(target, contents, how)
    }

    /// `fsync` the directory `rel` (`""`: the root), so the names in it are
    /// durable.
    ///
    /// # Errors
    ///
    /// Opening or syncing it failed.
    pub fn sync_dir(&self, rel: &Path) -> io::Result<()> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let fd = self
            .open_raw(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| self.err("open directory", rel, e))?;
        rustix::io::retry_on_intr(|| rustix::fs::fsync(&fd)).map_err(|e| self.err("sync", rel, e))
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
        // One descriptor of `parent`, resolved beneath the root, serves every
        // step: cap-std would re-resolve (open + close) it for each call.
        // Below it only single components are used, never followed. The
        // one of `objects/` is held (and checked against its path here).
        let pfd = if parent == Path::new(OBJECTS) {
            self.objects_checked()?
        } else {
            Arc::new(
                self.open_raw(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                    .map_err(|e| self.err("open directory", parent, e))?,
            )
        };
        loop {
            let (tmp_name, lock) = self
                .create_temp_at(&pfd)
                .map_err(|e| self.err("create", &parent.join("uuid-*"), e))?;
            let unlink_tmp = || {
                let _ = rustix::io::retry_on_intr(|| {
                    rustix::fs::unlinkat(&pfd, tmp_name.as_str(), AtFlags::empty())
                });
            };
            let name = anonymous_name();
            let dir = parent.join(&name);
            if let Err(e) = rustix::io::retry_on_intr(|| {
                rustix::fs::mkdirat(&pfd, name.as_str(), Mode::from_raw_mode(0o777))
            }) {
                unlink_tmp();
                if e == Errno::EXIST {
                    reseed_anonymous_names();
                    continue;
                }
                return Err(self.err("create directory", &dir, e));
            }
            self.hook(HookPoint::AtomicDirLink, &dir);
            let linked = rustix::io::retry_on_intr(|| {
                rustix::fs::openat(
                    &pfd,
                    name.as_str(),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            })
            .and_then(|dfd| {
                rustix::io::retry_on_intr(|| {
                    rustix::fs::linkat(&pfd, tmp_name.as_str(), &dfd, OBJECT_LOCK, AtFlags::empty())
                })
                .map(|()| dfd)
            });
            unlink_tmp();
            match linked {
                Ok(dir) => {
                    return Ok(AnonDir {
                        name,
                        lock,
                        dir,
                        parent: pfd,
                    })
                }
                // A racing cleanup removed the empty directory, or the
                // temporary lock file before we locked it (or, for EEXIST,
                // took the name): try again with new ones. The directory,
                // if it is still there, is empty and ours.
                Err(Errno::NOENT) | Err(Errno::EXIST) => {
                    let _ = rustix::io::retry_on_intr(|| {
                        rustix::fs::unlinkat(&pfd, name.as_str(), AtFlags::REMOVEDIR)
                    });
                    continue;
                }
                Err(e) => {
                    let _ = rustix::io::retry_on_intr(|| {
                        rustix::fs::unlinkat(&pfd, name.as_str(), AtFlags::REMOVEDIR)
                    });
                    return Err(self.err("link", &dir.join(OBJECT_LOCK), e));
                }
            }
        }
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
        use cap_fs_ext::DirExt;
        let entry = match crate::retry_io(|| self.dir.open_dir_nofollow(rel)) {
            Ok(d) => d,
            // Before `gone`: ENOTDIR here mostly means a file or symlink at
            // `rel` itself, which is unlinked (if a parent is missing
            // instead, the unlink finds nothing too).
            Err(e) if is_not_dir_or_link(&e) => {
                return match crate::retry_io(|| self.dir.remove_file(rel)) {
                    Err(e) if !gone(&e) => Err(self.err("remove", rel, e)),
                    _ => Ok(()),
                }
            }
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(self.err("open directory", rel, e)),
        };
        match entry.remove_file(OBJECT_INFO) {
            Err(e) if !gone(&e) && e.kind() != io::ErrorKind::IsADirectory => {
                return Err(self.err("remove", &rel.join(OBJECT_INFO), e))
            }
            _ => {}
        }
        let children = match entry.read_dir(".") {
            Ok(it) => it,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(self.err("read directory", rel, e)),
        };
        for child in children {
            let child = match child {
                Ok(c) => c,
                Err(e) if gone(&e) => break,
                Err(e) => return Err(self.err("read directory", rel, e)),
            };
            let name = child.file_name();
            if name == OBJECT_LOCK {
                continue;
            }
            remove_any(&entry, Path::new(&name))
                .map_err(|e| self.err("remove", &rel.join(&name), e))?;
        }
        match entry.remove_file(OBJECT_LOCK) {
            Err(e) if !gone(&e) => return Err(self.err("remove", &rel.join(OBJECT_LOCK), e)),
            _ => {}
        }
        self.hook(HookPoint::RemoveRmdir, rel);
        match crate::retry_io(|| self.dir.remove_dir(rel)) {
            // Reclaimed by a racing store just now, or gone already.
            Err(e)
                if !gone(&e)
                    && !matches!(
                        e.kind(),
                        io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::ResourceBusy
                    ) =>
            {
                Err(self.err("remove directory", rel, e))
            }
            _ => Ok(()),
        }
    }

    /// Remove `rel` whatever it is, recursively for a directory, never
    /// following symlinks, making read-only directories writable on the way.
    ///
    /// # Errors
    ///
    /// A removal failed for a reason other than the path being gone.
    pub fn remove_tree(&self, rel: &Path) -> io::Result<()> {
        remove_any(&self.dir, rel).map_err(|e| self.err("remove", rel, e))
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
        self.scaffold_created_by(None)
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
        let info = match boot_id {
            Some(id) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                format!(r#"{{"version": 1, "creation-boot-id": "{id}"}}"#)
            }
            _ => r#"{"version": 1}"#.to_owned(),
        };
        for d in [OBJECTS, STAGE] {
            match crate::retry_io(|| self.dir.create_dir(d)) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(self.err("create directory", Path::new(d), e))
                }
                _ => {}
            }
        }
        let files: [(&str, &[u8]); 4] = [
            (CACHEDIR_TAG, CACHEDIR_TAG_CONTENTS.as_bytes()),
            (CACHE_INFO, info.as_bytes()),
            (CACHE_LOCK, b""),
            (CACHE_SIZE, b"0"),
        ];
        for (name, contents) in files {
            // Skip the temp-file dance when the file is there already: the
            // common case for every open of an existing cache.
            if self.stat(Path::new(name)).is_ok() {
                continue;
            }
            self.atomic_file(
                Path::new(OBJECTS),
                Path::new(name),
                contents,
                Publish::NoReplace,
            )?;
        }
        Ok(())
    }
}

impl AtomicTemp<'_> {
    /// Write `contents` into the temporary file and publish it at `target`
    /// (relative to the root) by `rename` ([`Publish::Replace`]) or `link`
    /// ([`Publish::NoReplace`], then unlinking the temporary name). When
    /// the temporary file vanished meanwhile (a racing cleanup), a new one
    /// is made and published instead.
    ///
    /// # Errors
    ///
    /// Writing or publishing failed; the temporary name is unlinked then.
    pub fn publish(self, target: &Path, contents: &[u8], how: Publish) -> io::Result<Published> {
        self.publish_locked(target, contents, how)
            .map(|(published, lock)| {
                // Our own temp file's only descriptor: closing releases it.
                lock.close();
                published
            })
    }

    /// As [`AtomicTemp::publish`], handing back the lock of the published
    /// file (closing it releases the lock).
    ///
    /// # Errors
    ///
    /// As [`AtomicTemp::publish`].
    pub fn publish_locked(
        mut self,
        target: &Path,
        contents: &[u8],
        how: Publish,
    ) -> io::Result<(Published, FileLock<OwnedFd>)> {
        let cache = self.cache;
        // The target is renamed or linked into its parent's descriptor:
        // the root's for a single component, else one opened beneath the
        // root (never through a symlink), so only its last component is
        // resolved by the `rename`/`link` itself.
        let (parent_fd, file_name) = match (target.parent(), target.file_name()) {
            (Some(p), Some(n))
                if matches!(target.components().next_back(), Some(Component::Normal(_))) =>
            {
                let fd = if p.as_os_str().is_empty() {
                    None
                } else {
                    let how = match how {
                        Publish::Replace => "rename",
                        Publish::NoReplace => "link",
                    };
                    Some(
                        cache
                            .open_raw(p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                            .map_err(|e| cache.err(how, target, e))?,
                    )
                };
                (fd, n.to_owned())
            }
            _ => {
                return Err(cache.err(
                    "publish",
                    target,
                    io::Error::from(io::ErrorKind::InvalidInput),
                ))
            }
        };
        let parent: &dyn AsFd = match &parent_fd {
            Some(fd) => fd,
            None => &cache.dir,
        };
        let mut attempt = 0;
        loop {
            let tmp_rel = || self.store.join(&self.name);
            let lock = self.lock.as_ref().expect("held until published");
            if let Err(e) = write_all_fd(lock, contents) {
                return Err(cache.err("write", &tmp_rel(), e));
            }
            if cache.durable {
                rustix::io::retry_on_intr(|| rustix::fs::fsync(lock))
                    .map_err(|e| cache.err("sync", &tmp_rel(), e))?;
            }
            let name = self.name.as_str();
            let parent = parent.as_fd();
            let done: io::Result<()> = match how {
                Publish::Replace => rustix::io::retry_on_intr(|| {
                    rustix::fs::renameat(&*self.dir, name, parent, &file_name)
                })
                .map_err(Into::into),
                Publish::NoReplace => rustix::io::retry_on_intr(|| {
                    rustix::fs::linkat(&*self.dir, name, parent, &file_name, AtFlags::empty())
                })
                .map_err(Into::into),
            };
            let published = match done {
                Ok(()) => Ok(Published::Done),
                Err(e) if how == Publish::NoReplace && e.kind() == io::ErrorKind::AlreadyExists => {
                    Ok(Published::Exists)
                }
                // The temporary file vanished (the target's directory may
                // be what is missing instead: then the error stands).
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < TEMP_RETRIES => {
                    match rustix::io::retry_on_intr(|| {
                        rustix::fs::statat(&*self.dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    }) {
                        Err(Errno::NOENT) => {
                            attempt += 1;
                            let (new, lock) = cache
                                .create_temp_at(&self.dir)
                                .map_err(|e| cache.err("create", &tmp_rel(), e))?;
                            if let Some(old) = self.lock.replace(lock) {
                                old.close();
                            }
                            self.name = new;
                            continue;
                        }
                        _ => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            let published = published.map_err(|e| match how {
                Publish::Replace => cache.err("rename", &tmp_rel(), e),
                Publish::NoReplace => cache.err("link", target, e),
            })?;
            // A successful rename moved the temporary name away already;
            // after a link (or a link that found the target taken) the
            // temporary name goes.
            if how == Publish::NoReplace {
                let _ = rustix::io::retry_on_intr(|| {
                    rustix::fs::unlinkat(&*self.dir, name, AtFlags::empty())
                });
            }
            let lock = self.lock.take().expect("held until published");
            if cache.durable && published == Published::Done {
                cache.sync_dir(target.parent().unwrap_or(Path::new("")))?;
            }
            return Ok((published, lock));
        }
    }
}

impl Drop for AtomicTemp<'_> {
    fn drop(&mut self) {
        // Not published (or failed): the temporary name goes.
        if let Some(lock) = self.lock.take() {
            let _ = rustix::io::retry_on_intr(|| {
                rustix::fs::unlinkat(&*self.dir, self.name.as_str(), AtFlags::empty())
            });
            lock.close();
        }
    }
}

/// Whether `e` says the thing is not there (any more).
pub fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn is_not_dir_or_link(e: &io::Error) -> bool {
    // O_DIRECTORY|O_NOFOLLOW on a symlink gives ELOOP or ENOTDIR.
    e.kind() == io::ErrorKind::NotADirectory || raw_os_error(e) == Some(Errno::LOOP.raw_os_error())
}

/// Remove `rel` below `dir`: unlink a non-directory, empty a directory
/// with the shared [walk](crate::walk) (never following symlinks, giving
/// directories without owner rwx those bits) and remove it. Tolerates
/// vanished paths; on `EACCES`/`EPERM` gives the parent directory owner
/// rwx and retries once.
fn remove_any(dir: &Dir, rel: &Path) -> io::Result<()> {
    match dir.remove_file(rel) {
        Ok(()) => return Ok(()),
        Err(e) if gone(&e) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(dir, rel.parent().unwrap_or(Path::new(".")))?;
            return match dir.remove_file(rel) {
                Err(e) if !gone(&e) => Err(e),
                _ => Ok(()),
            };
        }
        // EISDIR (Linux unlink(2) on a directory) or EPERM: a directory.
        Err(_) => {}
    }
    // Read, write and search permission are needed to empty it.
    make_writable(dir, rel)?;
    let fd = match open_beneath(dir, rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    crate::walk::remove_contents(fd, rel.to_owned())?;
    match dir.remove_dir(rel) {
        Err(e) if !gone(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Give the directory `rel` owner rwx if it lacks them (nothing to do for
/// anything else, or when it is gone).
fn make_writable(dir: &Dir, rel: &Path) -> io::Result<()> {
    let (parent, name) = match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) if !p.as_os_str().is_empty() => (p, n),
        (_, Some(n)) => (Path::new("."), n),
        _ => return Ok(()),
    };
    let pfd = match open_beneath(dir, parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let st = match rustix::io::retry_on_intr(|| {
        rustix::fs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW)
    }) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if !crate::walk::is_dir(&st) || st.st_mode & 0o700 == 0o700 {
        return Ok(());
    }
    crate::walk::make_owner_rwx(pfd.as_fd(), name, &st)
}

/// Read all of a protocol file through `fd` (from its current offset),
/// refusing more than 1 MiB.
///
/// # Errors
///
/// The read failed, or the file is larger than 1 MiB (`InvalidData`).
pub fn read_small_fd(fd: &impl AsFd) -> io::Result<Vec<u8>> {
    const LIMIT: usize = 1 << 20;
    const CHUNK: usize = 4096;
    let mut buf = Vec::new();
    loop {
        let start = buf.len();
        buf.resize(start + CHUNK, 0);
        let n = match rustix::io::read(fd, &mut buf[start..]) {
            Ok(n) => n,
            Err(Errno::INTR) => {
                buf.truncate(start);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        buf.truncate(start + n);
        // A regular file reads short only at its end: no second read to
        // see 0 (protocol files are tiny, so this is one read in all).
        if n < CHUNK {
            return Ok(buf);
        }
        if buf.len() > LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "protocol file larger than 1 MiB",
            ));
        }
    }
}

fn write_all_fd(fd: &impl AsFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
