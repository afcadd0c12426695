//! `FsCache::load` and `FsCache::contains`: the lookups of one entry, the
//! hot path (no allocation for a miss, none for the paths of a hit).

use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use fscache_dir::{is_miss, stat, touch_atime, EntryName, LockOptions, TryLocked};
use fscache_dir::{DATA, OBJECTS, OBJECT_INFO, OBJECT_LOCK};

use crate::error::{Error, Result};
use crate::guards::Entry;
use crate::stats::Pending;
use crate::FsCache;

/// Whether a load counts its outcome in the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counting {
    /// As a load: a hit or a miss by cause.
    Count,
    /// Not at all: the caller counts.
    Quiet,
}

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
        self.load_counting(name, Counting::Count)
    }

    /// As [`FsCache::load`], counting the outcome in the statistics or not
    /// (`load_or_build` counts what its caller finally got instead).
    pub(crate) fn load_counting(&self, name: &str, counting: Counting) -> Result<Option<Entry>> {
        // Validated without a copy: a miss allocates nothing.
        let name = EntryName::check(name)?;
        if !self.compatible() {
            if counting == Counting::Count {
                self.count(|p| &p.misses_incompatible, 1);
            }
            return Ok(None);
        }
        // Compatible, as just read: count without reading it again (the
        // load is the hot path).
        let count = |field: fn(&Pending) -> &AtomicU64| {
            if counting == Counting::Count {
                self.inner.stats.bump(Some(self.dir()), field, 1);
            }
        };
        let dir = self.dir();
        // `NAME/object.lock`, then `NAME/.`, relative to the held
        // `objects/` and built on the stack as C strings: one lookup less
        // than from the root, and no copy of the path on the way to the
        // kernel.
        let mut buf = EntryFile::new(name);
        // Absent (ENOENT/ENOTDIR) comes back as `Absent` without an error
        // being built: a miss is a common answer.
        let locked = match dir.try_lock_object(buf.path(OBJECT_LOCK), LockOptions::shared()) {
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
            Err(e) => return Err(Error::io("lock", buf.abs(dir, OBJECT_LOCK), e)),
        };
        // An entry without object.info is being removed, or debris of a
        // crashed removal; one without data/ (or object.info) was damaged by
        // a deleter outside the cache's locks: not valid. One `stat`, of the
        // entry's directory, proves both for an entry this implementation
        // committed: the commit set the directory's mtime just before its
        // lock file's (`stamp_committed`), and removing anything in it sets
        // the mtime to now. Otherwise (osbuild's entries; a removal in the
        // stamp's clock tick) the parts are looked at one by one.
        let intact = match dir.stat_object_if_present(buf.path(".")) {
            Ok(Some(st)) => {
                stat::mtime(&st) < stat::mtime(&locked.stat) || self.parts_present(&mut buf)?
            }
            Ok(None) => false,
            Err(e) => return Err(Error::io("stat", buf.abs(dir, "."), e)),
        };
        if !intact {
            count(|p| &p.misses_invalid);
            return Ok(None);
        }
        touch_atime(&locked.lock);
        count(|p| &p.hits);
        Ok(Some(Entry::new(self.clone(), name, locked.lock)))
    }

    /// Whether the entry of `buf` (`NAME/…` in `objects/`) has its
    /// `object.info` and `data/`, a `stat` each: load's check for an entry
    /// whose lock file does not date its last change (osbuild's commit
    /// does not stamp it).
    fn parts_present(&self, buf: &mut EntryFile) -> Result<bool> {
        let dir = self.dir();
        for part in [OBJECT_INFO, DATA] {
            match dir.stat_object_if_present(buf.path(part)) {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(false),
                Err(e) => return Err(Error::io("stat", buf.abs(dir, part), e)),
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

/// `NAME/FILE` (relative to `objects/`) for a valid `NAME`, built as a C
/// string in a buffer on the stack (the load is the hot path: no
/// allocation for its paths).
struct EntryFile {
    buf: [u8; EntryFile::CAP],
    /// Where the file name starts: after `NAME/`.
    at: usize,
}

impl EntryFile {
    /// A name, `/`, a protocol file name of at most 15 bytes, the NUL.
    const CAP: usize = fscache_dir::MAX_NAME_LEN + 1 + 16;

    fn new(name: &str) -> Self {
        let mut buf = [0u8; Self::CAP];
        let n = name.len();
        buf[..n].copy_from_slice(name.as_bytes());
        buf[n] = b'/';
        Self { buf, at: n + 1 }
    }

    /// The path of `file` (a protocol file name, at most 15 bytes) in the
    /// entry.
    fn path(&mut self, file: &str) -> &CStr {
        let end = self.at + file.len();
        self.buf[self.at..end].copy_from_slice(file.as_bytes());
        self.buf[end] = 0;
        // A valid name holds no NUL, nor does a protocol file name: the
        // one NUL is the last byte, and this cannot fail.
        CStr::from_bytes_with_nul(&self.buf[..=end]).unwrap_or_default()
    }

    /// The absolute path of `file` in the entry, for an error.
    fn abs(&self, dir: &fscache_dir::CacheDir, file: &str) -> PathBuf {
        let name = OsStr::from_bytes(&self.buf[..self.at - 1]);
        dir.abs(&Path::new(OBJECTS).join(name).join(file))
    }
}
