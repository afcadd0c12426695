//! Atomic anonymous directory: a locked lock file linked into a fresh
//! `uuid-<hex>` directory as `object.lock` (`docs/format.md`, "Anonymous
//! directory").

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::Dir;
use fscache_lock::FileLock;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::atomic::create_temp_at;
use crate::error::with_path;
use crate::hook::HookPoint;
use crate::layout::{OBJECTS, OBJECT_LOCK};
use crate::name::{anonymous_name, reseed_anonymous_names};
use crate::remove::{empty_entry, rmdir_result};
use crate::CacheDir;

/// A new anonymous directory `uuid-<hex>` with its `object.lock` linked in
/// and held exclusively: a guard, like `tempfile::TempDir`.
///
/// Dropped, it removes itself (as an entry: `object.info` first,
/// `object.lock` last), and errors are ignored: what a failed removal
/// leaves is unlocked `uuid-*` debris that any sweep removes.
/// [`AnonDir::close`] removes it and reports the error;
/// [`AnonDir::rename_to`] publishes it under a name, and hands it back
/// when the name is taken (as cap-tempfile's `TempFile::replace` does).
#[must_use = "dropping the directory removes it at once"]
pub struct AnonDir {
    name: String,
    // Relative to the root (`objects/uuid-…`) for hooks, and absolute for
    // errors.
    rel: PathBuf,
    abs: PathBuf,
    // `None` once renamed or removed.
    lock: Option<FileLock<OwnedFd>>,
    dir: OwnedFd,
    parent: Arc<OwnedFd>,
    // The cache's durability: a removal syncs the directory once its
    // `object.info` is gone (see `remove::empty_entry`).
    durable: bool,
    #[cfg(feature = "test-hooks")]
    hook: Option<crate::Hook>,
}

/// What [`AnonDir::rename_to`] did.
#[derive(Debug)]
#[must_use = "a `Taken` directory is removed when dropped"]
pub enum Renamed {
    /// The directory has its name now; the exclusive lock of its
    /// `object.lock` is still held (closing it releases it).
    Done(FileLock<OwnedFd>),
    /// The name is taken by a non-empty directory or a file (`EEXIST`,
    /// `ENOTEMPTY`, `ENOTDIR`, `EISDIR`): nothing changed, here is the
    /// directory back.
    Taken(AnonDir),
}

impl fmt::Debug for AnonDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnonDir")
            .field("path", &self.abs)
            .field("held", &self.lock.is_some())
            .finish_non_exhaustive()
    }
}

impl AnonDir {
    /// A commit's stamp on the finished directory, just before its rename
    /// ([`crate::stamp_committed`]): the lock's atime and mtime to now, the
    /// directory's mtime to just before. Best effort; nothing once renamed.
    pub fn stamp_committed(&self) {
        if let Some(lock) = &self.lock {
            crate::fdio::stamp_committed(lock, &*self.parent, std::ffi::OsStr::new(self.name()));
        }
    }

    /// The directory's name, `uuid-<32 hex>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its path relative to the cache root (`objects/uuid-…`).
    pub fn rel(&self) -> &Path {
        &self.rel
    }

    /// Its absolute path.
    pub fn path(&self) -> &Path {
        &self.abs
    }

    /// The exclusive lock of its `object.lock` (`None` once it was
    /// renamed or removed, which consumes the guard, so never in practice).
    pub fn lock(&self) -> &FileLock<OwnedFd> {
        self.lock
            .as_ref()
            .expect("held until the guard is consumed")
    }

    /// `mkdirat(dir, name, 0o777)`—create the directory `name` inside,
    /// through the directory's own descriptor (its path is not resolved
    /// again).
    ///
    /// # Errors
    ///
    /// The `mkdirat` failed; the path is folded in.
    pub fn create_dir(&self, name: &str) -> io::Result<()> {
        rustix::io::retry_on_intr(|| {
            rustix::fs::mkdirat(&self.dir, name, Mode::from_raw_mode(0o777))
        })
        .map_err(|e| with_path("create directory", &self.abs.join(name), e.into()))
    }

    /// `renameat(parent, uuid-…, parent, name)`—publish the directory as
    /// `name` in the directory it was made in (through the held descriptor
    /// of that parent: both names are single components). When the name is
    /// taken, nothing changes and the guard comes back in
    /// [`Renamed::Taken`].
    ///
    /// # Errors
    ///
    /// The rename failed for another reason; the directory is removed
    /// (the guard drops).
    pub fn rename_to(mut self, name: &str) -> io::Result<Renamed> {
        match rustix::io::retry_on_intr(|| {
            rustix::fs::renameat(&*self.parent, self.name.as_str(), &*self.parent, name)
        }) {
            Ok(()) => Ok(Renamed::Done(
                self.lock.take().expect("held until the guard is consumed"),
            )),
            Err(Errno::EXIST | Errno::NOTEMPTY | Errno::NOTDIR | Errno::ISDIR) => {
                Ok(Renamed::Taken(self))
            }
            Err(e) => Err(with_path("rename", &self.abs, e.into())),
        }
    }

    /// Keep the directory where it is and release its lock, as a writer
    /// that died would leave it (its path comes back): unlocked `uuid-*`
    /// debris for a sweep. For tests of the sweep, and for callers that
    /// hand the directory to something else.
    pub fn keep(mut self) -> PathBuf {
        if let Some(lock) = self.lock.take() {
            lock.close();
        }
        std::mem::take(&mut self.abs)
    }

    /// Remove the directory now, reporting a failure (`Drop` removes
    /// quietly).
    ///
    /// # Errors
    ///
    /// A removal failed for a reason other than the directory being gone.
    pub fn close(mut self) -> io::Result<()> {
        self.remove()
    }

    /// Remove it as an entry (see [`CacheDir::remove_entry`]), under its
    /// lock, then release the lock.
    fn remove(&mut self) -> io::Result<()> {
        let Some(lock) = self.lock.take() else {
            return Ok(());
        };
        // Paths below the directory, relative to it ("" for itself).
        let err = |op, p: &Path, e| {
            if p.as_os_str().is_empty() {
                with_path(op, &self.abs, e)
            } else {
                with_path(op, &self.abs.join(p), e)
            }
        };
        let removed = (|| {
            let fd = match crate::walk::open_dir_errno(&*self.parent, self.name.as_str()) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                Err(e) => return Err(err("open directory", Path::new(""), e.into())),
            };
            let entry = Dir::from_std_file(File::from(fd));
            if !empty_entry(&entry, Path::new(""), &err, self.durable)? {
                return Ok(());
            }
            #[cfg(feature = "test-hooks")]
            if let Some(hook) = &self.hook {
                hook(HookPoint::RemoveRmdir, &self.rel);
            }
            rmdir_result(
                rustix::io::retry_on_intr(|| {
                    rustix::fs::unlinkat(&*self.parent, self.name.as_str(), AtFlags::REMOVEDIR)
                })
                .map_err(io::Error::from),
            )
            .map_err(|e| err("remove directory", Path::new(""), e))
        })();
        // Our own, never duplicated descriptor: closing releases the lock.
        lock.close();
        removed
    }
}

impl Drop for AnonDir {
    fn drop(&mut self) {
        // Errors cannot be reported from here; what is left is unlocked
        // `uuid-*` debris that any sweep removes.
        let _ = self.remove();
    }
}

/// See [`CacheDir::atomic_anon_dir`].
pub(crate) fn atomic_anon_dir(cache: &CacheDir, parent: &Path) -> io::Result<AnonDir> {
    // One descriptor of `parent`, resolved beneath the root, serves every
    // step: cap-std would re-resolve (open + close) it for each call.
    // Below it only single components are used, never followed. The
    // one of `objects/` is held (and checked against its path here).
    let pfd = if parent == Path::new(OBJECTS) {
        cache.objects_checked()?
    } else {
        Arc::new(
            cache
                .open_errno(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                .map_err(|e| cache.err("open directory", parent, e))?,
        )
    };
    loop {
        let (tmp_name, lock) =
            create_temp_at(&pfd).map_err(|e| cache.err("create", &parent.join("uuid-*"), e))?;
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
            return Err(cache.err("create directory", &dir, e));
        }
        cache.hook(HookPoint::AtomicDirLink, &dir);
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
            Ok(dfd) => {
                return Ok(AnonDir {
                    abs: cache.abs(&dir),
                    rel: dir,
                    name,
                    lock: Some(lock),
                    dir: dfd,
                    parent: pfd,
                    durable: cache.durable,
                    #[cfg(feature = "test-hooks")]
                    hook: cache.hook.clone(),
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
                return Err(cache.err("link", &dir.join(OBJECT_LOCK), e));
            }
        }
    }
}
