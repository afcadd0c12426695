//! Atomic file: a locked `uuid-<hex>` temporary file, written, then
//! published at its target by `rename` (replace) or `link` (no-replace);
//! the temporary file can be made ahead ([`AtomicTemp`]) so that a caller
//! holding another lock only writes and renames it (`docs/format.md`,
//! "Atomic file").

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use fscache_lock::{FileLock, LockKind};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::fdio::write_all_fd;
use crate::layout::OBJECTS;
use crate::name::{anonymous_name, reseed_anonymous_names};
use crate::CacheDir;

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

/// A locked, empty temporary file `uuid-<hex>` in `objects/`, made ahead of
/// an atomic file's publication ([`CacheDir::atomic_temp`]), so that a
/// caller holding another lock (the counter's) only writes and renames it.
/// Dropped unpublished, it is unlinked.
#[derive(Debug)]
#[must_use = "dropped unpublished, the temporary file is unlinked"]
pub struct AtomicTemp<'a> {
    cache: &'a CacheDir,
    // The directory the temporary file is in, relative to the root (for
    // messages) and as a descriptor (for every operation).
    store: PathBuf,
    dir: Arc<OwnedFd>,
    name: String,
    lock: Option<FileLock<OwnedFd>>,
    // Whether publishing syncs the temp file before, and the target's
    // directory after (the cache's durability, or forced for the files a
    // torn copy of would make the cache unusable).
    pub(crate) sync: bool,
}

/// How often an atomic file is retried when its temporary file vanished
/// (a racing cleanup unlinked it between its creation and its lock).
const TEMP_RETRIES: usize = 8;

/// Create a locked, empty temporary file `uuid-<hex>` in the directory
/// `dir`. Returns its name and the exclusive lock.
///
/// A racing cleanup may unlink the new file before it is locked; that
/// is not checked here (it would cost an `fstat` on every atomic file)
/// but when the file is published: the `rename` or `link` of a vanished
/// name fails with `ENOENT`, and the caller retries with a new file.
pub(crate) fn create_temp_at(dir: &OwnedFd) -> io::Result<(String, FileLock<OwnedFd>)> {
    loop {
        let name = anonymous_name();
        let fd = match rustix::io::retry_on_intr(|| {
            rustix::fs::openat(
                dir,
                name.as_str(),
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
        }) {
            Ok(fd) => fd,
            // Another process shares our names (a fork): draw anew.
            Err(Errno::EXIST) => {
                reseed_anonymous_names();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // Fresh and private: only a cleanup that found it unlocked can
        // hold its lock, briefly.
        let lock = FileLock::lock(fd, LockKind::Exclusive)?;
        return Ok((name, lock));
    }
}

/// See [`CacheDir::atomic_temp`].
pub(crate) fn atomic_temp(cache: &CacheDir) -> io::Result<AtomicTemp<'_>> {
    let mut dir = cache.objects()?;
    let (name, lock) = match create_temp_at(&dir) {
        // `objects/` was removed under the held descriptor: look again.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            dir = cache.objects_checked()?;
            create_temp_at(&dir)
        }
        other => other,
    }
    .map_err(|e| cache.err("create", &Path::new(OBJECTS).join("uuid-*"), e))?;
    Ok(AtomicTemp {
        cache,
        store: PathBuf::from(OBJECTS),
        dir,
        name,
        lock: Some(lock),
        sync: cache.durable,
    })
}

/// See [`CacheDir::atomic_file`].
pub(crate) fn atomic_file(
    cache: &CacheDir,
    store: &Path,
    target: &Path,
    contents: &[u8],
    how: Publish,
) -> io::Result<Published> {
    cache
        .atomic_file_locked(store, target, contents, how)
        // Our own temp file's only descriptor: closing releases it.
        .map(|(published, lock)| {
            lock.close();
            published
        })
}

/// See [`CacheDir::atomic_file_locked`] (`sync`: the cache's
/// durability) and [`CacheDir::atomic_file_durable`] (`sync` forced).
pub(crate) fn atomic_file_locked(
    cache: &CacheDir,
    store: &Path,
    target: &Path,
    contents: &[u8],
    how: Publish,
    sync: bool,
) -> io::Result<(Published, FileLock<OwnedFd>)> {
    let temp = if store == Path::new(OBJECTS) {
        let mut temp = cache.atomic_temp()?;
        temp.sync = sync;
        temp
    } else {
        let dir = cache
            .open_errno(store, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| cache.err("open directory", store, e))?;
        let dir = Arc::new(dir);
        let (name, lock) =
            create_temp_at(&dir).map_err(|e| cache.err("create", &store.join("uuid-*"), e))?;
        AtomicTemp {
            cache,
            store: store.to_owned(),
            dir,
            name,
            lock: Some(lock),
            sync,
        }
    };
    temp.publish_locked(target, contents, how)
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
                            .open_errno(p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
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
            if self.sync {
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
                            let (new, lock) = create_temp_at(&self.dir)
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
            if self.sync && published == Published::Done {
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
