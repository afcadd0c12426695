//! Read-modify-write of a protocol file (`cache.size`, `cache.info`,
//! `cache.stats`): a temporary file made ahead, the exclusive locked open
//! of the file, a read through the locked descriptor, the new value written
//! into the temporary file and renamed over the old one (`docs/format.md`,
//! "Read-modify-write of a protocol file"). Written once; every file of
//! that kind goes through it.

use std::io;
use std::path::Path;

use crate::atomic::{Publish, Published};
use crate::fdio::read_small_fd;
use crate::layout::OBJECTS;
use crate::locked::LockOptions;
use crate::CacheDir;

/// What [`CacheDir::update`] does when the file does not exist.
#[derive(Clone, Copy)]
pub enum IfMissing<'a> {
    /// Fail with the locked open's `NotFound` error (`cache.info`: a cache
    /// without it is not one).
    Fail,
    /// Create the file with these contents (a no-replace atomic file: a
    /// racing creator wins and its file is used), then lock it.
    Create(&'a dyn Fn() -> io::Result<Vec<u8>>),
}

impl std::fmt::Debug for IfMissing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IfMissing::Fail => "Fail",
            IfMissing::Create(_) => "Create(..)",
        })
    }
}

/// See [`CacheDir::update`].
pub(crate) fn update<T>(
    cache: &CacheDir,
    rel: &Path,
    sync: bool,
    if_missing: IfMissing<'_>,
    f: impl FnOnce(&[u8]) -> io::Result<(Option<Vec<u8>>, T)>,
) -> io::Result<T> {
    // Made before the lock is taken, so every process waiting for the
    // file waits only for a `read`, a `write` and a `rename` (plus the
    // `fstat` of the locked open).
    let mut temp = cache.atomic_temp()?;
    temp.sync = sync;
    let (lock, current) = loop {
        match cache.lock(rel, LockOptions::exclusive()) {
            Ok(l) => {
                // Read through the locked descriptor: no second open.
                let current = read_small_fd(&l.lock).map_err(|e| cache.err("read", rel, e))?;
                break (l.lock, current);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match if_missing {
                IfMissing::Fail => return Err(e),
                // Deleted under us, or never made: create it, unless a
                // racing writer does first (then take the lock on theirs).
                // Created, the new file's own lock is the file's lock: its
                // contents are what we wrote, and no other open or lock
                // (nor a close that could fail) stands between.
                IfMissing::Create(initial) => {
                    let initial = initial()?;
                    let (published, lock) = crate::atomic::atomic_file_locked(
                        cache,
                        Path::new(OBJECTS),
                        rel,
                        &initial,
                        Publish::NoReplace,
                        sync,
                    )?;
                    if published == Published::Done {
                        break (lock, initial);
                    }
                    lock.close();
                }
            },
            Err(e) => return Err(e),
        }
    };
    let (new, out) = f(&current)?;
    let published = match new {
        Some(new) => Some(temp.publish_locked(rel, &new, Publish::Replace)?.1),
        None => None,
    };
    // Our own, never duplicated descriptors: closing releases the locks,
    // the file's first. An unused temporary file is unlinked after.
    lock.close();
    if let Some(lock) = published {
        lock.close();
    }
    Ok(out)
}
