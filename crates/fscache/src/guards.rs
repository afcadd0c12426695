//! The guards a cache hands out: a loaded [`Entry`], a [`StoreGuard`] to
//! fill and commit, a [`StageGuard`] of scratch space, and an [`Uncached`]
//! tree the cache did not keep. Each owns a clone of the handle, and each
//! cleans up in `Drop`.

use std::fmt;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use fscache_dir::copy::CopyOptions;
use fscache_dir::digest::Digest;
use fscache_dir::{AnonDir, EntryName, Renamed, DATA};
use fscache_lock::FileLock;

use crate::commit::CommitReport;
use crate::error::{Error, Result};
use crate::handle::FsCache;
use crate::Stored;

/// An anonymous entry (`objects/uuid-*` or `stage/uuid-*`) we created and
/// hold exclusively, through its [`AnonDir`] guard: that removes the
/// directory when it drops, unless it was renamed to a name
/// ([`Anon::rename_to`]). No code here removes it by hand.
pub(crate) struct Anon {
    pub(crate) cache: FsCache,
    /// Relative to the root, e.g. `objects/uuid-<hex>`.
    pub(crate) rel: PathBuf,
    /// The absolute path of its `data/`.
    data: PathBuf,
    // The guard, until the entry is renamed (then `kept` holds its lock).
    held: Option<AnonDir>,
    kept: Option<FileLock<OwnedFd>>,
}

impl Anon {
    /// Create an anonymous entry with an empty `data/` in `parent`.
    pub(crate) fn create(cache: &FsCache, parent: &'static str) -> Result<Self> {
        let dir = cache.dir();
        let held = dir
            .atomic_anon_dir(Path::new(parent))
            .map_err(|e| Error::io("create entry in", dir.abs(Path::new(parent)), e))?;
        let rel = held.rel().to_owned();
        // Through the directory's own descriptor: its path is not resolved
        // again, and `data` is a single component.
        let made = held.create_dir(DATA);
        let anon = Anon {
            cache: cache.clone(),
            data: dir.abs(&rel.join(DATA)),
            rel,
            held: Some(held),
            kept: None,
        };
        // On failure, dropping `anon` removes what was made.
        made.map_err(|e| Error::io("create directory", &anon.data, e))?;
        Ok(anon)
    }

    /// The anonymous name, `uuid-<hex>`.
    pub(crate) fn name(&self) -> &std::ffi::OsStr {
        self.rel.file_name().unwrap_or_default()
    }

    /// The absolute path of `data/`.
    pub(crate) fn data(&self) -> &Path {
        &self.data
    }

    /// Its `data/` directory, opened (`O_RDONLY | O_DIRECTORY`) beneath
    /// the root.
    pub(crate) fn data_dir(&self) -> Result<std::os::fd::OwnedFd> {
        let dir = self.cache.dir();
        let rel = self.rel.join(DATA);
        dir.open_dir(&rel)
            .map_err(|e| Error::io("open directory", dir.abs(&rel), e))
    }

    /// The commit's stamp ([`AnonDir::stamp_committed`]).
    pub(crate) fn stamp_committed(&self) {
        if let Some(held) = &self.held {
            held.stamp_committed();
        }
    }

    /// Rename the entry to `name` in the directory it was made in:
    /// `Ok(true)` when renamed (the lock is kept for
    /// [`Anon::published`]), `Ok(false)` when the name is taken (the entry
    /// stays ours). On error the directory is removed.
    pub(crate) fn rename_to(&mut self, name: &str) -> std::io::Result<bool> {
        let Some(held) = self.held.take() else {
            return Err(std::io::Error::other("lost lock"));
        };
        match held.rename_to(name)? {
            Renamed::Done(lock) => {
                self.kept = Some(lock);
                Ok(true)
            }
            Renamed::Taken(held) => {
                self.held = Some(held);
                Ok(false)
            }
        }
    }

    /// The entry was renamed to its name: hand back the lock (still
    /// exclusive) of its `object.lock`.
    pub(crate) fn published(mut self) -> Option<FileLock<OwnedFd>> {
        self.kept.take()
    }

    /// Remove the entry now, reporting a failure (drop removes quietly).
    pub(crate) fn close(mut self) -> Result<()> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let abs = self.cache.dir().abs(&self.rel);
        held.close().map_err(|e| Error::io("remove", abs, e))
    }
}

/// A loaded entry: read-locked until dropped, so it cannot change or
/// vanish meanwhile.
#[must_use = "the entry is unlocked (and may be evicted) as soon as the guard drops"]
pub struct Entry {
    cache: FsCache,
    /// `ROOT/objects/NAME/data`: the one allocation of a hit, which the
    /// name and the relative path are slices of.
    path: PathBuf,
    /// Where the name is in `path`'s bytes.
    name_at: (usize, usize),
    lock: Option<FileLock<OwnedFd>>,
}

impl Entry {
    /// The entry `name` (a valid name) of `cache`, read-locked by `lock`.
    pub(crate) fn new(cache: FsCache, name: &str, lock: FileLock<OwnedFd>) -> Self {
        let root = cache.dir().root().as_os_str();
        let mut path = std::ffi::OsString::with_capacity(
            root.len() + fscache_dir::OBJECTS.len() + name.len() + DATA.len() + 3,
        );
        path.push(root);
        path.push("/");
        path.push(fscache_dir::OBJECTS);
        path.push("/");
        let start = path.len();
        path.push(name);
        let name_at = (start, path.len());
        path.push("/");
        path.push(DATA);
        Self {
            cache,
            path: PathBuf::from(path),
            name_at,
            lock: Some(lock),
        }
    }

    /// The absolute path of the entry's `data/` directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry's name.
    pub fn name(&self) -> &str {
        let bytes = self.path.as_os_str().as_encoded_bytes();
        // A slice of what was a `&str`.
        std::str::from_utf8(&bytes[self.name_at.0..self.name_at.1]).unwrap_or_default()
    }

    /// Open `data/` as a directory (`O_RDONLY | O_DIRECTORY`), resolved
    /// beneath the cache root, never by its absolute path. Wrap it in your
    /// capability type of choice (e.g. `cap_std::fs::Dir::from_std_file`).
    ///
    /// # Errors
    ///
    /// The open failed.
    pub fn open_dir(&self) -> Result<File> {
        let dir = self.cache.dir();
        let rel = Path::new(fscache_dir::OBJECTS).join(self.name()).join(DATA);
        dir.open_dir(&rel)
            .map(File::from)
            .map_err(|e| Error::io("open directory", &self.path, e))
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // Our own, never duplicated descriptor: closing it releases the
        // read lock (one system call instead of F_UNLCK + close).
        if let Some(lock) = self.lock.take() {
            lock.close();
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name())
            .field("path", &self.path)
            .finish()
    }
}

impl FsCache {
    /// Start storing `name` unless a committed entry of that name is there
    /// already: `None` then, counted as a store discarded because the
    /// name exists ([`Stats::stored_exists`](crate::Stats::stored_exists)),
    /// as a commit that found it would be. For a writer whose tree costs
    /// seconds to make or copy (`fscache store` checks this way first).
    ///
    /// The answer can be stale, as [`FsCache::contains`]'s: another writer
    /// may still commit the name before this guard's commit, which then
    /// reports [`Stored::Exists`].
    ///
    /// # Errors
    ///
    /// As [`FsCache::contains`] and [`FsCache::store`].
    pub fn store_if_absent(&self, name: &str) -> Result<Option<StoreGuard>> {
        if self.contains(name)? {
            self.count(|p| &p.stored_exists, 1);
            return Ok(None);
        }
        self.store(name).map(Some)
    }
}

/// An entry being stored: fill [`StoreGuard::path`], then
/// [`StoreGuard::commit`]. Dropped without commit, it is removed.
///
/// Like `tempfile::TempDir`: `Drop` removes, [`StoreGuard::commit`] and
/// [`StoreGuard::close`] consume, and `close` reports a failed removal.
#[must_use = "dropping the guard without commit() discards the entry"]
pub struct StoreGuard {
    name: EntryName,
    anon: Anon,
    compatible: bool,
    /// The digest and the space of `data/`, known when
    /// [`FsCache::store_tree`] filled it by one copy (taken during the
    /// copy, so the commit needs no second walk).
    pub(crate) copied: Option<CopiedTree>,
    /// A digest the filler vouched for ([`StoreGuard::set_digest`]).
    pub(crate) vouched: Option<Digest>,
}

impl StoreGuard {
    pub(crate) fn new(name: EntryName, anon: Anon, compatible: bool) -> Self {
        Self {
            name,
            anon,
            compatible,
            copied: None,
            vouched: None,
        }
    }

    /// Vouch for the tree digest of what `data/` holds at commit: the
    /// commit records it in `object.info` instead of hashing the tree
    /// again (the way [`StoreGuard::commit_tree`] records the digest its
    /// copy computed). For a filler that already knows it, e.g. a remote
    /// pull that checked every file it wrote against a signed manifest.
    /// The digest is recorded as given: a wrong one makes
    /// [`FsCache::verify`] call the entry corrupt later.
    pub fn set_digest(&mut self, digest: Digest) {
        self.vouched = Some(digest);
    }

    /// The absolute path of the private `data/` directory to fill.
    pub fn path(&self) -> &Path {
        self.anon.data()
    }

    /// The name the entry will be committed as.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Fill `data/` with a copy of the tree at `src`, calling `progress`
    /// with the bytes copied as the copy goes (an error it returns stops
    /// the copy and comes back as this call's error, e.g.
    /// `io::ErrorKind::Interrupted` on Ctrl-C): a directory's contents
    /// become `data/`'s, a file becomes `data/<its name>`. Reflinks where
    /// the file system can, symlinks verbatim, modes, times and hard links
    /// kept. [`FsCache::store_tree`] is `store` → `copy_from` → `commit`.
    ///
    /// # Errors
    ///
    /// The copy failed; the error names the failing path. The guard stays
    /// usable (dropping it removes the partial copy).
    pub fn copy_from(
        &self,
        src: impl AsRef<Path>,
        progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
    ) -> Result<()> {
        self.copy_in(src.as_ref(), &CopyOptions::new(), progress)
            .map(drop)
    }

    /// Copy the tree at `src` into `data/` as one child named like it:
    /// what osbuild's `store_tree` does (`cp -a -- SRC data/`), where
    /// [`StoreGuard::copy_from`] copies a directory's contents. A directory
    /// `src` becomes `data/<its name>/` with its own mode and times, a file
    /// or symlink `data/<its name>` (as `copy_from` does).
    ///
    /// # Errors
    ///
    /// `src` has no final name component (`/`, `..`); creating the child or
    /// the copy failed. The guard stays usable.
    pub fn copy_as_child(
        &self,
        src: impl AsRef<Path>,
        progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
    ) -> Result<()> {
        let src = src.as_ref();
        let is_dir = std::fs::symlink_metadata(src)
            .map_err(|e| Error::io("stat", src, e))?
            .is_dir();
        if !is_dir {
            return self.copy_from(src, progress);
        }
        let child = src.file_name().ok_or_else(|| {
            Error::io(
                "copy",
                src,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no final name component"),
            )
        })?;
        let dir = self.anon.cache.dir();
        let rel = self.anon.rel.join(DATA).join(child);
        fscache_dir::retry_io(|| dir.dir().create_dir(&rel))
            .map_err(|e| Error::io("create directory", dir.abs(&rel), e))?;
        let dst = fscache_dir::retry_io(|| dir.dir().open_dir(&rel))
            .map_err(|e| Error::io("open directory", dir.abs(&rel), e))?;
        fscache_dir::copy::copy_tree_into(src, &dst, progress)
            .map_err(|e| Error::io("copy", src, e))?;
        // The copy gives what is below `src` its metadata; the child itself
        // is ours to give `src`'s mode and times (last: filling it changed
        // its mtime), by name in `data/`: the copy's descriptors are
        // `O_PATH`, which `fchmod` refuses.
        drop(dst);
        let data_rel = self.anon.rel.join(DATA);
        let data = fscache_dir::retry_io(|| dir.dir().open_dir(&data_rel))
            .map_err(|e| Error::io("open directory", dir.abs(&data_rel), e))?;
        fscache_dir::copy_mode_and_times_at(&data, child, src)
            .map_err(|e| Error::io("copy", dir.abs(&rel), e))
    }

    /// Fill the empty `data/` with a copy of `src` (as
    /// [`StoreGuard::copy_from`]) and commit it, recording the tree digest
    /// the copy computed while it copied: nothing can be written in
    /// between, so the digest is the entry's. [`FsCache::store_tree`] is
    /// `store` → `commit_tree`.
    ///
    /// # Errors
    ///
    /// As [`StoreGuard::copy_from`] and [`StoreGuard::commit_report`].
    pub fn commit_tree(
        self,
        src: impl AsRef<Path>,
        progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
    ) -> Result<CommitReport> {
        self.commit_tree_with(src, &CopyOptions::new(), progress)
    }

    /// [`StoreGuard::commit_tree`] with the copy's [`CopyOptions`]: with
    /// [`OnDrop::Fail`](crate::meta::OnDrop::Fail), metadata the copy
    /// cannot keep (an owner as non-root, a set-ID bit on an owner not
    /// kept, an xattr the kernel refuses) is an error and nothing is
    /// stored; by default it is dropped, as `cp -a` does, and counted in
    /// [`CommitReport::dropped`].
    ///
    /// # Errors
    ///
    /// As [`StoreGuard::commit_tree`]; a drop under `OnDrop::Fail`
    /// ([`std::io::ErrorKind::PermissionDenied`] or
    /// [`std::io::ErrorKind::Unsupported`], naming the path and what it
    /// could not keep).
    pub fn commit_tree_with(
        mut self,
        src: impl AsRef<Path>,
        options: &CopyOptions,
        progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
    ) -> Result<CommitReport> {
        self.copied = Some(self.copy_in(src.as_ref(), options, progress)?);
        self.commit_report()
    }

    /// Copy `src` into `data/`, returning the digest and the space of what
    /// was copied
    /// (computed while it copies).
    pub(crate) fn copy_in(
        &self,
        src: &Path,
        options: &CopyOptions,
        progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
    ) -> Result<CopiedTree> {
        let dir = self.anon.cache.dir();
        let rel = self.anon.rel.join(DATA);
        let data = fscache_dir::retry_io(|| dir.dir().open_dir(&rel))
            .map_err(|e| Error::io("open directory", dir.abs(&rel), e))?;
        options
            .copy_with_listing(src, &data, progress)
            .map(|(stats, digest, listing)| CopiedTree {
                digest,
                listing,
                space: stats.space,
                dropped: stats.dropped,
            })
            .map_err(|e| Error::io("copy", src, e))
    }

    /// Commit the entry: measure it, charge the cache (evicting
    /// least-recently-used entries when full), write its `object.info`,
    /// stamp it as used now, and rename it to its name. Returns what
    /// happened; anything but [`Stored::Committed`] discarded the entry.
    ///
    /// # Errors
    ///
    /// A system call failed; the entry is discarded and any charge undone.
    pub fn commit(self) -> Result<Stored> {
        self.commit_report().map(|r| r.stored)
    }

    /// As [`StoreGuard::commit`], also reporting the entries eviction
    /// removed to make room, and the entry's size.
    ///
    /// # Errors
    ///
    /// As [`StoreGuard::commit`].
    pub fn commit_report(self) -> Result<CommitReport> {
        let (report, kept) = self.commit_inner()?;
        if let Kept::Published(lock) = kept {
            // Our own, never duplicated descriptor: closing releases the
            // lock (one system call instead of F_UNLCK + close).
            lock.close();
        }
        Ok(report)
    }

    /// Commit, and hand back the entry read-locked, with no moment between
    /// the rename and the read lock in which another process could evict
    /// it: the exclusive lock of the commit is downgraded to a shared one
    /// in place.
    ///
    /// When another writer committed the name first, its entry is loaded
    /// ([`Obtained::Hit`]). When the cache did not keep the tree (too
    /// large, no space, incompatible, or the other writer's entry vanished
    /// before it could be loaded), the tree is handed back
    /// ([`Obtained::Uncached`]) instead of being deleted, so the work that
    /// built it is not lost.
    ///
    /// # Errors
    ///
    /// As [`StoreGuard::commit`].
    pub fn commit_and_load(self) -> Result<Obtained> {
        let name = self.name.clone();
        let cache = self.anon.cache.clone();
        let (report, kept) = self.commit_inner()?;
        match kept {
            Kept::Published(mut lock) => {
                // Exclusive → shared on the same open file description is
                // one atomic fcntl: no moment without a lock, and never a
                // conflict (only we hold it).
                let rel = PathBuf::from(fscache_dir::OBJECTS).join(name.as_str());
                lock.convert(fscache_lock::LockKind::Shared)
                    .map_err(|e| Error::io("lock", cache.dir().abs(&rel), e))?;
                Ok(Obtained::Built(Entry::new(cache, name.as_str(), lock)))
            }
            Kept::Tree(anon) => {
                if report.stored == Stored::Exists {
                    if let Some(entry) = cache.load(name.as_str())? {
                        return Ok(Obtained::Hit(entry));
                    }
                }
                Ok(Obtained::Uncached(Uncached {
                    stored: report.stored,
                    anon,
                }))
            }
        }
    }

    fn commit_inner(self) -> Result<(CommitReport, Kept)> {
        let cache = self.anon.cache.clone();
        let name = self.name.clone();
        let (report, kept) = if self.compatible {
            cache.commit(&name, self.anon, self.copied, self.vouched)?
        } else {
            let report = CommitReport {
                stored: Stored::Incompatible,
                evicted: Vec::new(),
                size: 0,
                dropped: Default::default(),
            };
            (report, Kept::Tree(self.anon))
        };
        cache.count_commit(&report);
        tracing::debug!(
            name = name.as_str(),
            outcome = ?report.stored,
            size = report.size,
            evicted = report.evicted.len(),
            "commit"
        );
        Ok((report, kept))
    }

    /// Discard the entry now, reporting a failed removal (dropping the
    /// guard discards it too, quietly).
    ///
    /// # Errors
    ///
    /// Removing the entry failed; what is left is unlocked debris that a
    /// sweep removes.
    pub fn close(self) -> Result<()> {
        self.anon.close()
    }
}

impl fmt::Debug for StoreGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreGuard")
            .field("name", &self.name)
            .field("path", &self.path())
            .finish()
    }
}

/// What one copy into an empty `data/` learned of it on the way.
pub(crate) struct CopiedTree {
    pub(crate) digest: Digest,
    /// What the digest covers of each node, for `object.tree`.
    pub(crate) listing: fscache_dir::digest::Listing,
    /// `st_blocks × 512` of `data/` and everything in it.
    pub(crate) space: u64,
    /// What the copy could not keep.
    pub(crate) dropped: fscache_dir::meta::Dropped,
}

/// What a commit left in the caller's hands.
pub(crate) enum Kept {
    /// Renamed to its name; the exclusive lock of its `object.lock`.
    Published(FileLock<OwnedFd>),
    /// Not published: the tree, still private and locked.
    Tree(Anon),
}

/// A private scratch directory, removed completely when dropped (also
/// during a panic unwind).
#[must_use = "the scratch directory is removed as soon as the guard drops"]
pub struct StageGuard {
    anon: Anon,
}

impl StageGuard {
    pub(crate) fn new(anon: Anon) -> Self {
        Self { anon }
    }

    /// The absolute path of the scratch `data/` directory.
    pub fn path(&self) -> &Path {
        self.anon.data()
    }

    /// Remove the scratch directory now, reporting a failure (dropping the
    /// guard removes it too, quietly).
    ///
    /// # Errors
    ///
    /// The removal failed; what is left is unlocked debris that a sweep
    /// removes.
    pub fn close(self) -> Result<()> {
        self.anon.close()
    }
}

impl fmt::Debug for StageGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageGuard")
            .field("path", &self.path())
            .finish()
    }
}

/// A tree that was built for the cache but not kept by it: private to the
/// caller, and removed when dropped, like a [`StageGuard`].
#[must_use = "the tree is removed as soon as the guard drops"]
pub struct Uncached {
    stored: Stored,
    anon: Anon,
}

impl Uncached {
    /// The absolute path of the tree (the `data/` that was filled).
    pub fn path(&self) -> &Path {
        self.anon.data()
    }

    /// Why the cache did not keep it: [`Stored::TooLarge`],
    /// [`Stored::NoSpace`], [`Stored::Incompatible`], or
    /// [`Stored::Exists`] when the entry another writer committed first
    /// could not be loaded.
    pub fn reason(&self) -> Stored {
        self.stored
    }

    /// Remove the tree now, reporting a failure.
    ///
    /// # Errors
    ///
    /// The removal failed; what is left is unlocked debris that a sweep
    /// removes.
    pub fn close(self) -> Result<()> {
        self.anon.close()
    }
}

impl fmt::Debug for Uncached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uncached")
            .field("reason", &self.stored)
            .field("path", &self.path())
            .finish()
    }
}

/// An entry's content, as [`StoreGuard::commit_and_load`] and
/// [`FsCache::load_or_build`] hand it out. Every variant keeps its tree
/// readable and unchanged until dropped.
#[derive(Debug)]
#[must_use = "the content is released as soon as this drops"]
pub enum Obtained {
    /// A committed entry that someone else built (or that was already in
    /// the cache), read-locked.
    Hit(Entry),
    /// The entry this call built and committed, read-locked since the
    /// rename.
    Built(Entry),
    /// The tree this call built, which the cache did not keep (see
    /// [`Uncached::reason`]).
    Uncached(Uncached),
}

impl Obtained {
    /// The absolute path of the content's directory.
    pub fn path(&self) -> &Path {
        match self {
            Obtained::Hit(e) | Obtained::Built(e) => e.path(),
            Obtained::Uncached(u) => u.path(),
        }
    }

    /// The read-locked entry, if the content is in the cache.
    pub fn entry(&self) -> Option<&Entry> {
        match self {
            Obtained::Hit(e) | Obtained::Built(e) => Some(e),
            Obtained::Uncached(_) => None,
        }
    }

    /// Whether the content is in the cache (a hit or a committed build).
    pub fn is_cached(&self) -> bool {
        self.entry().is_some()
    }
}
