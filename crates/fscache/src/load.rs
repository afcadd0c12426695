//! `FsCache::load` and `FsCache::contains`: the lookups of one entry, the
//! hot path (no allocation for a miss, none for the paths of a hit).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use fscache_dir::{is_miss, stat, touch_atime, EntryName, LockOptions, TryLocked};
use fscache_dir::{DATA, OBJECTS, OBJECT_INFO, OBJECT_LOCK};

use crate::error::{Error, Result};
use crate::guards::Entry;
use crate::stats::Pending;
use crate::FsCache;

impl FsCache {
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
        // Validated without a copy: a miss allocates nothing.
        let name = EntryName::check(name)?;
        if !self.compatible() {
            self.count(|p| &p.misses_incompatible, 1);
            return Ok(None);
        }
        // Compatible, as just read: count without reading it again (the
        // load is the hot path).
        let count =
            |field: fn(&Pending) -> &AtomicU64| self.inner.stats.bump(Some(self.dir()), field, 1);
        let dir = self.dir();
        // `objects/NAME/object.lock`, then `…/object.info`, built on the
        // stack.
        let mut buf = EntryFile::new(name);
        let lock_rel = buf.path(OBJECT_LOCK);
        // Absent (ENOENT/ENOTDIR) comes back as `Absent` without an error
        // being built: a miss is a common answer.
        let locked = match dir.try_lock(lock_rel, LockOptions::shared()) {
            Ok(TryLocked::Locked(l)) => l,
            Ok(TryLocked::Absent) => {
                count(|p| &p.misses_absent);
                return Ok(None);
            }
            Ok(TryLocked::Busy) => {
                count(|p| &p.misses_busy);
                return Ok(None);
            }
            Err(e) if is_miss(&e) => {
                count(|p| &p.misses_absent);
                return Ok(None);
            }
            Err(e) => return Err(Error::io("lock", dir.abs(lock_rel), e)),
        };
        // An entry without object.info is being removed, or debris of a
        // crashed removal; one without data/ (or object.info) was damaged by
        // a deleter outside the cache's locks: not valid. One `stat`, of the
        // entry's directory, proves both for an entry this implementation
        // committed: the commit set the directory's mtime just before its
        // lock file's (`stamp_committed`), and removing anything in it sets
        // the mtime to now. Otherwise (osbuild's entries; a removal in the
        // stamp's clock tick) the parts are looked at one by one.
        let intact = match dir.stat_if_present(buf.path(".")) {
            Ok(Some(st)) => {
                stat::mtime(&st) < stat::mtime(&locked.stat) || self.parts_present(&mut buf)?
            }
            Ok(None) => false,
            Err(e) => return Err(Error::io("stat", dir.abs(buf.path(".")), e)),
        };
        if !intact {
            count(|p| &p.misses_invalid);
            return Ok(None);
        }
        touch_atime(&locked.lock);
        count(|p| &p.hits);
        Ok(Some(Entry::new(self.clone(), name, locked.lock)))
    }

    /// Whether the entry of `buf` (`objects/NAME/…`) has its `object.info`
    /// and `data/`, a `stat` each: load's check for an entry whose lock
    /// file does not date its last change (osbuild's commit does not stamp
    /// it).
    fn parts_present(&self, buf: &mut EntryFile) -> Result<bool> {
        let dir = self.dir();
        for part in [OBJECT_INFO, DATA] {
            match dir.stat_if_present(buf.path(part)) {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(false),
                Err(e) => return Err(Error::io("stat", dir.abs(buf.path(part)), e)),
            }
        }
        Ok(true)
    }

    /// Whether a committed entry `name` is in the cache now: a peek that,
    /// unlike [`FsCache::load`], takes no lock and does not count as a use
    /// (one `stat`). The answer is stale as soon as it returns: only
    /// `load` can hold an entry.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] before any I/O; the `stat` failed in a way
    /// that is not a miss.
    pub fn contains(&self, name: &str) -> Result<bool> {
        let name = EntryName::new(name)?;
        if !self.compatible() {
            return Ok(false);
        }
        let rel = PathBuf::from(OBJECTS).join(name.as_str()).join(OBJECT_INFO);
        match self.dir().stat(&rel) {
            Ok(_) => Ok(true),
            Err(e) if is_miss(&e) => Ok(false),
            Err(e) => Err(Error::io("stat", self.dir().abs(&rel), e)),
        }
    }
}

/// `objects/NAME/FILE` for a valid `NAME`, built in a buffer on the stack
/// (the load is the hot path: no allocation for its paths).
struct EntryFile {
    buf: [u8; EntryFile::CAP],
    /// Where the file name starts: after `objects/NAME/`.
    at: usize,
}

impl EntryFile {
    const CAP: usize = OBJECTS.len() + fscache_dir::MAX_NAME_LEN + 2 + 16;

    fn new(name: &str) -> Self {
        let mut buf = [0u8; Self::CAP];
        let mut at = 0;
        for part in [OBJECTS.as_bytes(), b"/", name.as_bytes(), b"/"] {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Self { buf, at }
    }

    /// The path of `file` (a protocol file name, at most 16 bytes) in the
    /// entry.
    fn path(&mut self, file: &str) -> &Path {
        let end = self.at + file.len();
        self.buf[self.at..end].copy_from_slice(file.as_bytes());
        use std::os::unix::ffi::OsStrExt;
        Path::new(std::ffi::OsStr::from_bytes(&self.buf[..end]))
    }
}
