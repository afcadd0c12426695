//! Atomic anonymous directory: a locked lock file linked into a fresh
//! `uuid-<hex>` directory as `object.lock` (`docs/format.md`, "Anonymous
//! directory").

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use fscache_lock::FileLock;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::atomic::create_temp_at;
use crate::hook::HookPoint;
use crate::layout::{OBJECTS, OBJECT_LOCK};
use crate::name::{anonymous_name, reseed_anonymous_names};
use crate::CacheDir;

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
                .open_raw(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                .map_err(|e| cache.err("open directory", parent, e))?,
        )
    };
    loop {
        let (tmp_name, lock) =
            create_temp_at(&pfd).map_err(|e| cache.err("create", &parent.join("uuid-*"), e))?;
        let unlink_tmp = || {
            let _ = rustix::fs::unlinkat(&pfd, tmp_name.as_str(), AtFlags::empty());
        };
        let name = anonymous_name();
        let dir = parent.join(&name);
        if let Err(e) = rustix::fs::mkdirat(&pfd, name.as_str(), Mode::from_raw_mode(0o777)) {
            unlink_tmp();
            if e == Errno::EXIST {
                reseed_anonymous_names();
                continue;
            }
            return Err(cache.err("create directory", &dir, e));
        }
        cache.hook(HookPoint::AtomicDirLink, &dir);
        let linked = rustix::fs::openat(
            &pfd,
            name.as_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|dfd| {
            rustix::fs::linkat(&pfd, tmp_name.as_str(), &dfd, OBJECT_LOCK, AtFlags::empty())
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
                let _ = rustix::fs::unlinkat(&pfd, name.as_str(), AtFlags::REMOVEDIR);
                continue;
            }
            Err(e) => {
                let _ = rustix::fs::unlinkat(&pfd, name.as_str(), AtFlags::REMOVEDIR);
                return Err(cache.err("link", &dir.join(OBJECT_LOCK), e));
            }
        }
    }
}
