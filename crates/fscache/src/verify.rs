//! Integrity: check an entry's content against the tree digest its
//! `object.info` recorded at commit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use fscache_dir::digest::{
    compare, digest_tree, digest_tree_listed, Change, Digest, Listing, Version,
};
use fscache_dir::{EntryName, LockOptions, TryLocked, DATA, OBJECTS, OBJECT_INFO, OBJECT_LOCK};
use fscache_quota::ObjectInfo;

use crate::error::{Error, Result};
use crate::handle::FsCache;
use fscache_dir::is_miss;

/// What [`FsCache::verify`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verified {
    /// The content has the digest recorded at commit.
    Ok(Digest),
    /// The content changed since it was committed: a flipped byte, a
    /// truncated, removed or added file, a changed mode or symlink target;
    /// for a digest of version 2 or 3 also a changed owner, xattr or device
    /// number.
    /// The digest is one hash of the whole tree, so it cannot say which
    /// path changed.
    Mismatch {
        /// The digest `object.info` recorded.
        recorded: Digest,
        /// The digest of the content now.
        actual: Digest,
    },
    /// No digest was recorded (an entry osbuild wrote, or a commit of a
    /// handle that records none), or the recorded one is not a digest:
    /// nothing to check against. Not a sign of damage.
    Unverified,
    /// The entry's directory is there, but parts of it are gone: deleted
    /// from outside, without the cache's locks (a `tmpfiles.d` age rule
    /// over the cache, say), or left by a removal that crashed. `load`
    /// never hands it out; [`FsCache::remove`] and [`FsCache::sweep`]
    /// remove it.
    Incomplete {
        /// Which parts are gone.
        missing: Missing,
    },
    /// No valid entry of that name (or it is being removed right now).
    Miss,
}

impl Verified {
    /// Whether the entry is known to be damaged.
    pub fn is_bad(&self) -> bool {
        matches!(
            self,
            Verified::Mismatch { .. } | Verified::Incomplete { .. }
        )
    }
}

/// The parts of a committed entry that [`Verified::Incomplete`] found gone.
/// Files gone *inside* `data/` show as a [`Verified::Mismatch`] of the
/// digest instead (when one was recorded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Missing {
    /// `object.lock`: the entry's lock file (and LRU clock).
    pub object_lock: bool,
    /// `object.info`: the record of its commit (and of what it was charged).
    pub object_info: bool,
    /// `data/`: its whole content.
    pub data: bool,
}

impl Missing {
    /// The names of the missing parts, as they appear in the entry's
    /// directory (`data/` with its slash).
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.object_lock, OBJECT_LOCK),
            (self.object_info, OBJECT_INFO),
            (self.data, "data/"),
        ]
        .into_iter()
        .filter_map(|(gone, name)| gone.then_some(name))
        .collect()
    }

    /// Whether anything is missing.
    pub fn any(&self) -> bool {
        self.object_lock || self.object_info || self.data
    }
}

/// The tree digest of the directory at `path` (see
/// [`fscache_dir::digest`]): what [`FsCache::verify`] compares with the
/// recorded one, for a tree anywhere, never following a symlink.
///
/// # Errors
///
/// `path` is not a directory, or reading the tree failed (the error names
/// the path).
pub fn tree_digest(path: impl AsRef<std::path::Path>) -> Result<Digest> {
    let path = path.as_ref();
    let fd = fscache_dir::open_tree(path).map_err(|e| Error::io("open directory", path, e))?;
    digest_tree(&fd, path, Version::default()).map_err(|e| Error::io("digest", path, e))
}

/// [`tree_digest`] in the encoding of `version`: version 1 to compare
/// with a digest recorded before version 2 existed.
///
/// # Errors
///
/// As [`tree_digest`].
pub fn tree_digest_version(path: impl AsRef<std::path::Path>, version: Version) -> Result<Digest> {
    let path = path.as_ref();
    let fd = fscache_dir::open_tree(path).map_err(|e| Error::io("open directory", path, e))?;
    digest_tree(&fd, path, version).map_err(|e| Error::io("digest", path, e))
}

/// The per-path record beside an entry's digest (`objects/NAME/object.tree`,
/// fscache's own and optional: osbuild neither writes nor reads it): one
/// line per node of what the digest (version 2 or 3) covers of it, so
/// [`FsCache::verify_changes`] can name what changed where.
pub const OBJECT_TREE: &str = "object.tree";

/// What [`FsCache::verify_changes`] found: each changed path, relative to
/// the entry's `data/`, with the ways it changed.
pub type Changes = Vec<(PathBuf, Vec<Change>)>;

/// How far [`FsCache::verify_all`] is, for a progress bar.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct VerifyProgress<'a> {
    /// The entry just checked.
    pub name: &'a str,
    /// Entries checked so far, this one included.
    pub done: usize,
    /// Entries to check.
    pub total: usize,
}

impl FsCache {
    /// Check the entry `name` against the digest recorded at its commit,
    /// under its read lock (taken without waiting, and without counting as
    /// a use: its last-use time is not touched).
    ///
    /// An entry whose directory is there without its `object.lock`,
    /// `object.info` or `data/` is [`Verified::Incomplete`], naming what is
    /// gone.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] before any I/O; reading the content failed
    /// (an I/O error of the disk is damage too: the error names the path).
    pub fn verify(&self, name: &str) -> Result<Verified> {
        let name = EntryName::new(name)?;
        if !self.compatible() {
            return Ok(Verified::Miss);
        }
        let dir = self.dir();
        let entry = PathBuf::from(OBJECTS).join(name.as_str());
        let lock_rel = entry.join(OBJECT_LOCK);
        let info_rel = entry.join(OBJECT_INFO);
        let data_rel = entry.join(DATA);
        // Whether `rel` is gone (a `stat`; other errors count as there).
        let gone = |rel: &PathBuf| matches!(dir.stat(rel), Err(e) if is_miss(&e));
        let _locked = match dir.try_lock(&lock_rel, LockOptions::shared().noatime()) {
            Ok(TryLocked::Locked(l)) => l,
            Ok(TryLocked::Busy) => return Ok(Verified::Miss),
            Ok(TryLocked::Absent) => {
                // No lock file: no entry, or a directory whose lock file
                // was deleted from outside.
                return Ok(match dir.stat(&entry) {
                    Ok(st) if st.st_mode & 0o170_000 == 0o040_000 => Verified::Incomplete {
                        missing: Missing {
                            object_lock: true,
                            object_info: gone(&info_rel),
                            data: gone(&data_rel),
                        },
                    },
                    _ => Verified::Miss,
                });
            }
            Err(e) if is_miss(&e) => return Ok(Verified::Miss),
            Err(e) => return Err(Error::io("lock", dir.abs(&lock_rel), e)),
        };
        // Under our read lock nobody removes it (a remover holds the lock
        // exclusively): what is gone was deleted without the lock, or is
        // left by a removal that crashed.
        let info = match dir.read_small(&info_rel) {
            Ok(b) => Some(ObjectInfo::parse(&b)),
            Err(e) if is_miss(&e) => None,
            Err(e) => return Err(Error::io("read", dir.abs(&info_rel), e)),
        };
        let missing = Missing {
            object_lock: false,
            object_info: info.is_none(),
            data: gone(&data_rel),
        };
        let Some(info) = info.filter(|_| !missing.any()) else {
            return Ok(Verified::Incomplete { missing });
        };
        let Some(recorded) = info.digest.and_then(|d| d.parse::<Digest>().ok()) else {
            return Ok(Verified::Unverified);
        };
        let data_abs = dir.abs(&data_rel);
        let data = dir
            .open_dir(&data_rel)
            .map_err(|e| Error::io("open directory", &data_abs, e))?;
        let actual = digest_tree(&data, &data_abs, recorded.version())
            .map_err(|e| Error::io("digest", &data_abs, e))?;
        Ok(if actual == recorded {
            Verified::Ok(actual)
        } else {
            Verified::Mismatch { recorded, actual }
        })
    }

    /// What differs, path by path, between the entry `name` now and the
    /// record its commit kept beside its digest (`object.tree`), under its
    /// read lock as [`FsCache::verify`]: each changed path (relative to
    /// `data/`) with the ways it changed (type, mode, owner, xattr,
    /// content, added, removed). Empty: nothing changed. `Ok(None)`: no
    /// record to compare with (an entry committed without a digest, or
    /// before the record existed), or no such entry.
    ///
    /// # Errors
    ///
    /// As [`FsCache::verify`].
    pub fn verify_changes(&self, name: &str) -> Result<Option<Changes>> {
        use std::os::unix::ffi::OsStrExt;
        let name = EntryName::new(name)?;
        if !self.compatible() {
            return Ok(None);
        }
        let dir = self.dir();
        let entry = PathBuf::from(OBJECTS).join(name.as_str());
        let lock_rel = entry.join(OBJECT_LOCK);
        let _locked = match dir.try_lock(&lock_rel, LockOptions::shared().noatime()) {
            Ok(TryLocked::Locked(l)) => l,
            Ok(TryLocked::Busy | TryLocked::Absent) => return Ok(None),
            Err(e) if is_miss(&e) => return Ok(None),
            Err(e) => return Err(Error::io("lock", dir.abs(&lock_rel), e)),
        };
        let tree_rel = entry.join(OBJECT_TREE);
        // Not `read_small`: a big tree's record passes its 1 MiB bound.
        let recorded = match fscache_dir::retry_io(|| dir.dir().read_to_string(&tree_rel)) {
            Ok(t) => Listing::from_text(&t),
            Err(e) if is_miss(&e) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => None,
            Err(e) => return Err(Error::io("read", dir.abs(&tree_rel), e)),
        };
        let Some(recorded) = recorded else {
            return Ok(None);
        };
        // The record's content hashes are those of the recorded digest's
        // version.
        let info_rel = entry.join(OBJECT_INFO);
        let version = match dir.read_small(&info_rel) {
            Ok(b) => ObjectInfo::parse(&b)
                .digest
                .and_then(|d| d.parse::<Digest>().ok())
                .map_or(Version::V2, |d| d.version()),
            Err(e) if is_miss(&e) => return Ok(None),
            Err(e) => return Err(Error::io("read", dir.abs(&info_rel), e)),
        };
        let data_rel = entry.join(DATA);
        let data_abs = dir.abs(&data_rel);
        let data = dir
            .open_dir(&data_rel)
            .map_err(|e| Error::io("open directory", &data_abs, e))?;
        let (_, now) = digest_tree_listed(&data, &data_abs, version)
            .map_err(|e| Error::io("digest", &data_abs, e))?;
        Ok(Some(
            compare(&recorded, &now)
                .into_iter()
                .map(|(p, c)| (PathBuf::from(std::ffi::OsStr::from_bytes(&p)), c))
                .collect(),
        ))
    }

    /// The names of the directories in `objects/` that are not `uuid-*`:
    /// committed entries and the remains of damaged ones, without sweeping.
    fn named_dirs(&self) -> Result<Vec<String>> {
        let dir = self.dir();
        let objects = std::path::Path::new(OBJECTS);
        let list = dir
            .list_dir(objects)
            .map_err(|e| Error::io("read directory", dir.abs(objects), e))?;
        let mut names = Vec::new();
        for entry in list {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if EntryName::new(&name).is_err() {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// [`FsCache::verify`] every committed entry, on as many threads as
    /// the machine has cores, calling `progress` after each. Returns each
    /// entry's answer (or error), sorted by name.
    ///
    /// Entries damaged from outside (their `object.lock`, `object.info` or
    /// `data/` gone) are found first and reported
    /// [`Verified::Incomplete`]; then the listing sweeps, as
    /// [`FsCache::entries`] does, which removes them with the rest of the
    /// debris (and recounts the books: what they were charged is unknown).
    ///
    /// # Errors
    ///
    /// Listing the entries failed.
    pub fn verify_all(
        &self,
        progress: &(dyn Fn(VerifyProgress<'_>) + Sync),
    ) -> Result<Vec<(String, Result<Verified>)>> {
        // Before the sweep removes them: a cheap look for missing parts,
        // then `verify` under the lock (a removal in progress is a miss).
        let dir = self.dir();
        let mut incomplete = Vec::new();
        for name in self.named_dirs()? {
            let entry = PathBuf::from(OBJECTS).join(&name);
            let gone = |part: &str| matches!(dir.stat(&entry.join(part)), Err(e) if is_miss(&e));
            if gone(OBJECT_LOCK) || gone(OBJECT_INFO) || gone(DATA) {
                if let Ok(v @ Verified::Incomplete { .. }) = self.verify(&name) {
                    incomplete.push((name, Ok(v)));
                }
            }
        }
        let mut names: Vec<String> = self.entries()?.into_iter().map(|e| e.name).collect();
        names.retain(|n| !incomplete.iter().any(|(d, _)| d == n));
        names.sort();
        let total = names.len();
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let results = Mutex::new(Vec::with_capacity(total));
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(total.max(1));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    let verdict = self.verify(name);
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress(VerifyProgress {
                        name,
                        done: n,
                        total,
                    });
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((name.clone(), verdict));
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        results.extend(incomplete);
        results.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(results)
    }
}
