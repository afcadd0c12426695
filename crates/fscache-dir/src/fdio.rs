//! I/O on descriptors: reading a protocol file (bounded), writing all of a
//! buffer, `stat`, the atime stamp of a use, and `fsync` of a directory or
//! of a whole tree (over the one walk), each retrying `EINTR`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, Stat, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT};
use rustix::io::Errno;

use crate::error::with_path;
use crate::walk::{Frame, Visit, Visitor, Walk};
use crate::CacheDir;

/// See [`CacheDir::stat`].
pub(crate) fn stat(cache: &CacheDir, rel: &Path) -> io::Result<Stat> {
    rustix::io::retry_on_intr(|| rustix::fs::statat(&cache.dir, rel, AtFlags::SYMLINK_NOFOLLOW))
        .map_err(|e| cache.err("stat", rel, e))
}

/// See [`CacheDir::read_small`].
pub(crate) fn read_small(cache: &CacheDir, rel: &Path) -> io::Result<Vec<u8>> {
    // O_NONBLOCK: a FIFO planted where a protocol file belongs must not
    // hang the open; on a regular file it changes nothing.
    let fd = cache
        .open_errno(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())
        .map_err(|e| cache.err("open", rel, e))?;
    read_small_fd(&fd).map_err(|e| cache.err("read", rel, e))
}

/// See [`CacheDir::sync_dir`].
pub(crate) fn sync_dir(cache: &CacheDir, rel: &Path) -> io::Result<()> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let fd = cache
        .open_errno(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| cache.err("open directory", rel, e))?;
    rustix::io::retry_on_intr(|| rustix::fs::fsync(&fd)).map_err(|e| cache.err("sync", rel, e))
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

pub(crate) fn write_all_fd(fd: &impl AsFd, mut buf: &[u8]) -> io::Result<()> {
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

/// `futimens(fd, {UTIME_NOW, UTIME_OMIT})`—set the file's atime to now,
/// mtime untouched: the stamp of a use (an entry's `object.lock` atime is
/// its last use). Best effort: a reader without write access or on a
/// read-only mount still gets its hit.
///
/// # References
///
/// * [`utimensat(2)`](https://man7.org/linux/man-pages/man2/utimensat.2.html)
#[doc(alias = "futimens")]
pub fn touch_atime(fd: &impl AsFd) {
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
    let _ = rustix::io::retry_on_intr(|| rustix::fs::futimens(fd, &times));
}

/// `open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)`—open a
/// directory anywhere (not in a cache: for hashing a tree a caller names),
/// refusing a symlink in the last component.
///
/// # Errors
///
/// The open failed; the path is folded in.
pub fn open_tree(path: &Path) -> io::Result<OwnedFd> {
    crate::walk::open_dir_nofollow(rustix::fs::CWD, path)
}

/// See [`CacheDir::sync_all`].
pub(crate) fn sync_all(cache: &CacheDir, rel: &Path) -> io::Result<()> {
    let fd = cache.open_dir(rel)?;
    let abs = cache.abs(rel);
    let mut v = Syncer { need_syncfs: false };
    let root = Frame::new(fd, abs.clone(), ()).map_err(|e| with_path("read directory", &abs, e))?;
    Walk::new().run(&mut v, root)?;
    if v.need_syncfs {
        rustix::io::retry_on_intr(|| rustix::fs::syncfs(cache.dir()))
            .map_err(|e| with_path("sync", cache.root(), e.into()))?;
    }
    Ok(())
}

/// The visitor of [`sync_all`]: `fsync` each regular file as it is met,
/// each directory when it is left (after its children).
struct Syncer {
    // A file or directory that cannot be opened for reading (its mode
    // refuses it): one `syncfs` covers it instead.
    need_syncfs: bool,
}

impl Visitor for Syncer {
    type State = ();

    fn visit(
        &mut self,
        parent: &mut Frame<()>,
        name: &OsStr,
        path: &Path,
        st: &Stat,
    ) -> io::Result<Visit<()>> {
        match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::Directory => {
                if st.st_mode & 0o500 != 0o500 && !can_open_dir(parent, name) {
                    self.need_syncfs = true;
                    return Ok(Visit::Skip);
                }
                Ok(Visit::Descend(()))
            }
            rustix::fs::FileType::RegularFile => {
                match crate::walk::open_file_errno(parent.fd(), name) {
                    Ok(f) => rustix::io::retry_on_intr(|| rustix::fs::fsync(&f))
                        .map_err(|e| with_path("sync", path, e.into()))?,
                    Err(Errno::ACCESS) => self.need_syncfs = true,
                    Err(e) => return Err(with_path("sync", path, e.into())),
                }
                Ok(Visit::Skip)
            }
            // Symlinks and special files live in their directory's
            // entries, which the directory's fsync covers.
            _ => Ok(Visit::Skip),
        }
    }

    fn leave(&mut self, dir: Frame<()>, _parent: Option<&mut Frame<()>>) -> io::Result<()> {
        rustix::io::retry_on_intr(|| rustix::fs::fsync(dir.fd()))
            .map_err(|e| with_path("sync", dir.path(), e.into()))
    }

    fn error(&self, path: &Path, e: io::Error) -> io::Error {
        with_path("sync", path, e)
    }
}

/// Whether the directory `name` of `parent` can be opened for reading
/// (the walk opens every directory it descends into).
fn can_open_dir(parent: &Frame<()>, name: &OsStr) -> bool {
    crate::walk::open_dir_errno(parent.fd(), name).is_ok()
}

/// A commit's stamp on a finished entry `objects/<name>`, best effort as
/// [`touch_atime`]: `futimens(lock, {UTIME_NOW, UTIME_NOW})` on its lock
/// file, then `utimensat` of the entry's directory to an mtime one
/// nanosecond before the lock's. The atime is the entry's last use; the
/// lock's mtime dates the commit. Nothing changes the entry's directory
/// after this (the rename to its name changes only its ctime), and
/// removing anything in it sets its mtime to the time then, never earlier
/// than the stamp: so `load's one `stat` of the directory, mtime older
/// than the lock's, proves `object.info` and `data/` are there.
pub fn stamp_committed(lock: &impl AsFd, objects: &impl AsFd, name: &OsStr) {
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: UTIME_NOW,
    };
    let stamp = Timestamps {
        last_access: now,
        last_modification: now,
    };
    if rustix::io::retry_on_intr(|| rustix::fs::futimens(lock, &stamp)).is_err() {
        return;
    }
    let Ok(st) = rustix::io::retry_on_intr(|| rustix::fs::fstat(lock)) else {
        return;
    };
    let (secs, nsecs) = crate::stat::mtime(&st);
    let before = if nsecs > 0 {
        Timespec {
            tv_sec: secs,
            tv_nsec: nsecs - 1,
        }
    } else {
        Timespec {
            tv_sec: secs - 1,
            tv_nsec: 999_999_999,
        }
    };
    let dir_times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: before,
    };
    let _ = rustix::io::retry_on_intr(|| {
        rustix::fs::utimensat(objects, name, &dir_times, AtFlags::empty())
    });
}

/// `chmodat` and `utimensat` of `parent/name` (a single component, no
/// symlink followed for the times) to the permission bits and the atime and
/// mtime of `like` (`lstat`): a copied directory root gets its source's.
///
/// # Errors
///
/// The `lstat` of `like`, the `chmodat` or the `utimensat` failed; the
/// error names the path.
pub fn copy_mode_and_times_at(parent: &impl AsFd, name: &OsStr, like: &Path) -> io::Result<()> {
    let st = rustix::io::retry_on_intr(|| rustix::fs::lstat(like))
        .map_err(|e| with_path("stat", like, e.into()))?;
    let named = Path::new(name);
    rustix::io::retry_on_intr(|| {
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )
    })
    .map_err(|e| with_path("chmod", named, e.into()))?;
    let ts = |(tv_sec, tv_nsec): (i64, i64)| Timespec { tv_sec, tv_nsec };
    let times = Timestamps {
        last_access: ts(crate::stat::atime(&st)),
        last_modification: ts(crate::stat::mtime(&st)),
    };
    rustix::io::retry_on_intr(|| {
        rustix::fs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)
    })
    .map_err(|e| with_path("set times", named, e.into()))
}
