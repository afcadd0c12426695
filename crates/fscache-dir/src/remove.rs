//! Removal: an entry (`object.info` first, `object.lock` last, racing
//! removals tolerated) and any tree, never following symlinks
//! (`docs/format.md`, "Remove an entry").

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::beneath::open_beneath_errno;
use crate::error::{gone, raw_os_error};
use crate::hook::HookPoint;
use crate::layout::{OBJECT_INFO, OBJECT_LOCK};
use crate::CacheDir;

/// See [`CacheDir::remove_entry`].
pub(crate) fn remove_entry(cache: &CacheDir, rel: &Path) -> io::Result<()> {
    use cap_fs_ext::DirExt;
    let err = |op, p: &Path, e| cache.err(op, p, e);
    let entry = match crate::retry_io(|| cache.dir.open_dir_nofollow(rel)) {
        Ok(d) => d,
        // Before `gone`: ENOTDIR here mostly means a file or symlink at
        // `rel` itself, which is unlinked (if a parent is missing
        // instead, the unlink finds nothing too).
        Err(e) if is_not_dir_or_link(&e) => {
            return match crate::retry_io(|| cache.dir.remove_file(rel)) {
                Err(e) if !gone(&e) => Err(cache.err("remove", rel, e)),
                _ => Ok(()),
            }
        }
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(cache.err("open directory", rel, e)),
    };
    if !empty_entry(&entry, rel, &err, cache.durable)? {
        return Ok(());
    }
    cache.hook(HookPoint::RemoveRmdir, rel);
    rmdir_result(crate::retry_io(|| cache.dir.remove_dir(rel)))
        .map_err(|e| cache.err("remove directory", rel, e))
}

/// Steps 1–3 of removing an entry whose directory is open as `entry`
/// (`rel` in errors): unlink `object.info`, everything but `object.lock`,
/// then `object.lock`. `false` when the directory vanished meanwhile.
/// `durable`: `fsync` the directory once `object.info` is gone.
pub(crate) fn empty_entry(
    entry: &Dir,
    rel: &Path,
    err: &dyn Fn(&'static str, &Path, io::Error) -> io::Error,
    durable: bool,
) -> io::Result<bool> {
    match entry.remove_file(OBJECT_INFO) {
        Err(e) if !gone(&e) && e.kind() != io::ErrorKind::IsADirectory => {
            return Err(err("remove", &rel.join(OBJECT_INFO), e))
        }
        // Durably, the entry must be invalid before any of its tree
        // goes: nothing orders the unlinks of two directories, and a
        // power loss could keep `object.info` beside a half-removed
        // `data/` (a hit with a wrong tree; found on the lazy FUSE file
        // system), or keep the entry while its uncharge survives.
        Ok(()) if durable => {
            rustix::io::retry_on_intr(|| rustix::fs::fsync(entry))
                .map_err(|e| err("sync", rel, e.into()))?;
        }
        _ => {}
    }
    // Read to the end first, again from the start if a call is interrupted
    // (see `CacheDir::list_dir`); the directory gone meanwhile lists as
    // what was read of it.
    let children = crate::retry_io(|| {
        let mut read = Vec::new();
        for child in entry.read_dir(".")? {
            match child {
                Ok(c) => read.push(c),
                Err(e) if gone(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(read)
    });
    let children = match children {
        Ok(it) => it,
        Err(e) if gone(&e) => return Ok(false),
        Err(e) => return Err(err("read directory", rel, e)),
    };
    for child in children {
        let name = child.file_name();
        if name == OBJECT_LOCK {
            continue;
        }
        remove_any(entry, Path::new(&name)).map_err(|e| err("remove", &rel.join(&name), e))?;
    }
    match entry.remove_file(OBJECT_LOCK) {
        Err(e) if !gone(&e) => return Err(err("remove", &rel.join(OBJECT_LOCK), e)),
        _ => {}
    }
    Ok(true)
}

/// The last step of removing an entry, `rmdir`: a directory reclaimed by
/// a racing store just now (`ENOTEMPTY`, `EBUSY`), or gone already, is
/// fine.
pub(crate) fn rmdir_result(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e)
            if !gone(&e)
                && !matches!(
                    e.kind(),
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::ResourceBusy
                ) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

/// See [`CacheDir::remove_tree`].
pub(crate) fn remove_tree(cache: &CacheDir, rel: &Path) -> io::Result<()> {
    remove_any(&cache.dir, rel).map_err(|e| cache.err("remove", rel, e))
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
    let fd = match open_beneath_errno(dir, rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()) {
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
    let pfd = match open_beneath_errno(dir, parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
    {
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
