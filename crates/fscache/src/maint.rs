//! Maintenance on a live cache: list entries, remove one, prune, usage.
//!
//! Everything here takes the same locks as `load`, `store` and eviction,
//! so it is safe beside processes that use the cache right now: a reader
//! never loses its entry, a writer never sees a half-removed one.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fscache_dir::{
    CacheDir, EntryName, LockOptions, TryLocked, CACHEDIR_TAG, CACHE_INFO, CACHE_LOCK, CACHE_SIZE,
    OBJECTS, OBJECT_LOCK, STAGE,
};
use fscache_lock::LockKind;
use fscache_quota::{Candidate, Stamp};

use crate::error::{Error, Result};
use crate::handle::FsCache;
use fscache_dir::is_miss;

/// What of the cache root is the cache's: [`FsCache::usage`] measures these
/// and nothing else.
const OWN_PARTS: [&str; 8] = [
    OBJECTS,
    STAGE,
    CACHEDIR_TAG,
    CACHE_INFO,
    CACHE_LOCK,
    CACHE_SIZE,
    crate::stats::CACHE_STATS,
    crate::flight::BUILD_LOCK,
];
/// How long prune, sweep and remove wait for the counter changes in
/// flight before they settle suspect books without them (new changes wait
/// meanwhile): far longer than a commit's charge-to-rename, far shorter
/// than a user notices.
const RECONCILE_PATIENCE: Duration = Duration::from_secs(2);

/// `e` and its sources, `: `-joined, as one line.
pub(crate) fn error_chain(e: &Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A committed entry as [`FsCache::entries`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// The entry's name.
    pub name: String,
    /// The bytes its `object.info` recorded; `None` when that is missing or
    /// corrupt (the entry is being removed, or debris of a crash).
    pub size: Option<u64>,
    /// Its last use: the atime of its `object.lock`.
    pub last_use: SystemTime,
    /// Whether another open file holds a lock on its `object.lock` now: a
    /// reader (or a remover). A snapshot, stale as soon as it is taken.
    pub in_use: bool,
}

/// The iterator of [`FsCache::iter_entries`].
pub struct Entries {
    cache: FsCache,
    list: std::vec::IntoIter<cap_std::fs::DirEntry>,
}

impl Iterator for Entries {
    type Item = Result<EntryInfo>;

    fn next(&mut self) -> Option<Self::Item> {
        let dir = self.cache.dir();
        loop {
            let entry = self.list.next()?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let c = match fscache_quota::candidate(dir, name) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => return Some(Err(e.into())),
            };
            match reader_holds(dir, &c.name) {
                Ok(Some(in_use)) => {
                    return Some(Ok(EntryInfo {
                        last_use: stamp_to_time(c.last_use),
                        name: c.name,
                        size: c.size,
                        in_use,
                    }))
                }
                // Vanished since the listing.
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries").finish_non_exhaustive()
    }
}

/// What [`FsCache::remove`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a removal may remove nothing: check what happened"]
pub enum Removed {
    /// The entry is gone; `freed` bytes were uncharged from `cache.size`
    /// (what its `object.info` recorded, 0 if nothing was recorded).
    Removed {
        /// Bytes uncharged.
        freed: u64,
    },
    /// A reader (or another remover) holds the entry; nothing changed.
    InUse,
    /// There is no entry of that name.
    Missing,
}

/// What [`FsCache::prune`] should remove. With neither `to` nor
/// `unused_for`, it prunes down to the cache's maximum size in force
/// (nothing when that is unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneOptions {
    /// Remove least-recently-used entries until the accounted size is at
    /// most this many bytes.
    pub to: Option<u64>,
    /// Remove every entry whose last use is older than this.
    pub unused_for: Option<Duration>,
    /// Only report what would be removed; remove nothing.
    pub dry_run: bool,
}

impl PruneOptions {
    /// Prune down to the cache's maximum size in force (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Remove least-recently-used entries until at most `bytes` are
    /// accounted.
    pub fn to(mut self, bytes: u64) -> Self {
        self.to = Some(bytes);
        self
    }

    /// Remove every entry whose last use is older than `age`.
    pub fn unused_for(mut self, age: Duration) -> Self {
        self.unused_for = Some(age);
        self
    }

    /// Only report what would be removed (`true`); remove nothing.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// What [`FsCache::prune`] did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// Entries removed (a dry run: that would be removed), oldest first.
    pub removed: Vec<String>,
    /// Entries chosen but kept: a reader holds them, or they were used
    /// since the listing.
    pub skipped: Vec<String>,
    /// Entries chosen that an error kept (still there): their removal
    /// failed before they stopped counting.
    pub failed: Vec<String>,
    /// The first error of the prune, with its causes (`None`: every
    /// removal it tried went through). With an error, `removed` still says
    /// what went; a removal whose uncharge failed is among them, and the
    /// books stay marked suspect until a reconcile succeeds.
    pub error: Option<String>,
    /// Bytes uncharged (a dry run: that would be), as the removed entries'
    /// `object.info` recorded.
    pub freed: u64,
    /// The accounted size (`cache.size`) afterwards (a dry run: now).
    pub accounted: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// What [`FsCache::sweep`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Swept {
    /// `uuid-*` debris (and half-removed named directories) removed.
    pub removed: Vec<String>,
    /// Bytes uncharged: what half-committed entries had been charged.
    pub freed: u64,
}

/// The space a cache uses, from [`FsCache::usage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// Bytes accounted to committed entries (`cache.size`).
    pub accounted: u64,
    /// Bytes the cache's own parts occupy on disk (`st_blocks`): the root
    /// directory itself, `objects/` (entries being stored included),
    /// `stage/` and the protocol files. Anything else an application keeps
    /// under the root (osbuild's `sources/` and `tmp/`) is not counted.
    pub on_disk: u64,
    /// Number of committed entries.
    pub entries: usize,
}

impl FsCache {
    /// List the committed entries, sorted by name, with their recorded
    /// size, last use and whether someone holds them now. `uuid-*` names
    /// (entries being stored) are skipped, and so are entries that vanish
    /// during the listing.
    ///
    /// Listing does not change any entry's last use: the lock files are
    /// `stat`ed, and opened (to ask the kernel about locks, `F_OFD_GETLK`)
    /// with `O_NOATIME` where permitted; an open never updates atime anyway.
    ///
    /// # Errors
    ///
    /// Reading `objects/` failed, or a lock file could not be opened or
    /// asked for a reason other than it vanishing.
    pub fn entries(&self) -> Result<Vec<EntryInfo>> {
        let mut out = self.iter_entries()?.collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The committed entries one by one, in directory order, as
    /// [`FsCache::entries`] describes them (sweeping debris first): for a
    /// cache of many entries, without holding them all in memory.
    ///
    /// # Errors
    ///
    /// The sweep or opening `objects/` failed; each item is an error if
    /// reading the directory or asking about a lock failed.
    pub fn iter_entries(&self) -> Result<Entries> {
        self.sweep_if_compatible()?;
        let objects = Path::new(OBJECTS);
        let list = self
            .dir()
            .list_dir(objects)
            .map_err(|e| Error::io("read directory", self.dir().abs(objects), e))?
            .into_iter();
        Ok(Entries {
            cache: self.clone(),
            list,
        })
    }

    /// Remove the entry `name` unless someone holds it: its exclusive lock
    /// is taken without waiting, then the entry is removed (`object.info`
    /// first) and exactly the size its `object.info` recorded is uncharged.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] before any I/O; [`Error::Corrupt`] if the
    /// cache's version is not ours (nothing is touched then); locking,
    /// removing or uncharging failed.
    pub fn remove(&self, name: &str) -> Result<Removed> {
        let name = EntryName::new(name)?;
        self.require_compatible()?;
        let removed = {
            let _books = self.inner.books.enter(self.dir())?;
            self.remove_held(&name)?
        };
        self.reconcile(fscache_quota::Patience::Upto(RECONCILE_PATIENCE));
        if let Removed::Removed { .. } = removed {
            self.count(|p| &p.removals, 1);
            // `stats` lists it with evictions and prunes.
            self.inner
                .stats
                .note_removals(&[name.as_str().to_owned()], "removed");
        }
        Ok(removed)
    }

    /// [`FsCache::remove`] inside a hold of the books.
    fn remove_held(&self, name: &EntryName) -> Result<Removed> {
        // An entry damaged from outside (its `object.info` or `object.lock`
        // deleted without the locks) is debris the sweep removes (marking
        // the books suspect when what it was charged is unknown).
        if fscache_quota::sweep(self.dir())?
            .removed
            .iter()
            .any(|n| n == name.as_str())
        {
            return Ok(Removed::Removed { freed: 0 });
        }
        let dir = self.dir();
        let entry = PathBuf::from(OBJECTS).join(name.as_str());
        let lock_rel = entry.join(OBJECT_LOCK);
        let locked = match dir.try_lock(&lock_rel, LockOptions::exclusive()) {
            Ok(TryLocked::Locked(l)) => l,
            Ok(TryLocked::Busy) => return Ok(Removed::InUse),
            Ok(TryLocked::Absent) => return Ok(Removed::Missing),
            Err(e) if is_miss(&e) => return Ok(Removed::Missing),
            Err(e) => return Err(Error::io("lock", dir.abs(&lock_rel), e)),
        };
        // Under the lock nobody can change it now. A missing object.info
        // means the entry was never valid (a crashed removal): it goes, and
        // nothing was accounted to it. An unreadable one is an error, and
        // the entry stays: its charge is unknown.
        // Garbage in object.info (what was charged is unknown) marks the
        // books suspect: the reconcile after the hold recounts them.
        let retired = fscache_quota::retire(dir, &entry)?;
        drop(locked);
        Ok(Removed::Removed {
            freed: retired.freed,
        })
    }

    /// Settle the books if they are marked suspect: a live recount
    /// ([`fscache_quota::reconcile`]) once the changes in flight drained,
    /// as `patience` allows. Whether it recounted; a failure is logged and
    /// leaves the marker for the next try. Never call it inside a hold of
    /// this handle's books.
    pub(crate) fn reconcile(&self, patience: fscache_quota::Patience) -> bool {
        match self.try_reconcile(patience) {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(error = %e, "could not recount the suspect books; the next prune tries again");
                false
            }
        }
    }

    fn try_reconcile(&self, patience: fscache_quota::Patience) -> Result<bool> {
        match fscache_quota::reconcile(self.dir(), patience)? {
            fscache_quota::Reconciled::Recounted { before, after } => {
                tracing::info!(?before, after, "recounted the suspect books");
                Ok(true)
            }
            fscache_quota::Reconciled::Busy => {
                tracing::debug!("the suspect books stay for later: changes in flight");
                Ok(false)
            }
            fscache_quota::Reconciled::Clean => Ok(false),
        }
    }

    /// Remove least-recently-used entries down to `opts.to` bytes and/or
    /// every entry unused for `opts.unused_for`, oldest first, skipping any
    /// entry a reader holds or that was used since the listing (the same
    /// rules as eviction). A dry run removes nothing and reports what would
    /// go, an entry a reader holds now as skipped.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if the cache's version is not ours (and this is
    /// not a dry run); listing, reading `cache.size`, removing or
    /// uncharging failed.
    pub fn prune(&self, opts: PruneOptions) -> Result<PruneReport> {
        if !opts.dry_run {
            self.require_compatible()?;
            // Suspect books first, so that the plan starts from the truth.
            // (A failure here is the last try's to report.)
            let _ = self.try_reconcile(fscache_quota::Patience::Upto(RECONCILE_PATIENCE));
            let mut report = {
                let _books = self.inner.books.enter(self.dir())?;
                fscache_quota::sweep(self.dir())?;
                self.prune_held(opts)?
            };
            // A removal of this prune that failed half-way marked them.
            let last = self.try_reconcile(fscache_quota::Patience::Upto(RECONCILE_PATIENCE));
            if let Err(e) = last {
                report.error.get_or_insert_with(|| {
                    format!("failed to recount the suspect books: {}", error_chain(&e))
                });
            }
            if let Ok(now) = fscache_quota::read_size(self.dir()) {
                report.accounted = now;
            }
            return Ok(report);
        }
        self.prune_held(opts)
    }

    /// [`FsCache::prune`] after its sweep (inside a hold of the books
    /// unless a dry run).
    fn prune_held(&self, opts: PruneOptions) -> Result<PruneReport> {
        let dir = self.dir();
        let candidates = fscache_quota::list_lru(dir)?;
        let total = fscache_quota::read_size(dir)?;
        let to = match (opts.to, opts.unused_for) {
            (None, None) => match self.info().limit() {
                fscache_quota::MaxSize::Bytes(n) => Some(n),
                fscache_quota::MaxSize::Unlimited => None,
            },
            (to, _) => to,
        };
        let victims = choose(&candidates, total, to, opts.unused_for, SystemTime::now());
        if opts.dry_run {
            let mut report = PruneReport {
                accounted: total,
                dry_run: true,
                ..Default::default()
            };
            for v in victims {
                let Some(held) = reader_holds(dir, &v.name)? else {
                    continue;
                };
                if held {
                    report.skipped.push(v.name);
                } else {
                    report.freed = report.freed.saturating_add(v.size.unwrap_or(0));
                    report.removed.push(v.name);
                }
            }
            return Ok(report);
        }
        let evicted = fscache_quota::evict(dir, &victims);
        self.inner.stats.note_removals(&evicted.removed, "pruned");
        self.count(|p| &p.prunes, 1);
        self.count(|p| &p.removals, evicted.removed.len() as u64);
        tracing::info!(
            removed = ?evicted.removed,
            skipped = ?evicted.skipped,
            failed = ?evicted.failed,
            freed = evicted.freed,
            "pruned"
        );
        let mut error = None;
        let mut failed = Vec::new();
        for (name, e) in evicted.failed {
            let gone = evicted.removed.contains(&name);
            let e: Error = e.into();
            error.get_or_insert_with(|| {
                if gone {
                    format!(
                        "removed `{name}`, but failed to uncharge it: {}",
                        error_chain(&e)
                    )
                } else {
                    format!("failed to remove `{name}`: {}", error_chain(&e))
                }
            });
            if !gone {
                failed.push(name);
            }
        }
        let accounted = match fscache_quota::read_size(dir) {
            Ok(n) => n,
            Err(e) => {
                error.get_or_insert_with(|| error_chain(&e.into()));
                total.saturating_sub(evicted.freed)
            }
        };
        Ok(PruneReport {
            removed: evicted.removed,
            skipped: evicted.skipped,
            failed,
            error,
            freed: evicted.freed,
            accounted,
            dry_run: false,
        })
    }

    /// The space the cache uses: accounted bytes (`cache.size`), bytes on
    /// disk of the cache's own parts (see [`Usage::on_disk`]) and the
    /// number of committed entries.
    ///
    /// # Errors
    ///
    /// Reading `cache.size`, walking `objects/` or `stage/` or listing
    /// `objects/` failed.
    pub fn usage(&self) -> Result<Usage> {
        let dir = self.dir();
        let accounted = fscache_quota::read_size(dir)?;
        let on_disk = self.own_space()?;
        let entries = fscache_quota::list_lru(dir)?.len();
        Ok(Usage {
            accounted,
            on_disk,
            entries,
        })
    }

    /// `st_blocks * 512` of the root directory itself and of the parts of
    /// the cache below it, each measured as [`fscache_quota::tree_space`]
    /// does. The root may hold other things: osbuild keeps its store's
    /// `sources/` (downloads) and `tmp/` beside `objects/`, and those are
    /// not the cache's.
    fn own_space(&self) -> Result<u64> {
        let dir = self.dir();
        let root = dir
            .stat(Path::new("."))
            .map_err(|e| Error::io("stat", dir.root(), e))?;
        let mut total = fscache_dir::stat::space(&root);
        for part in OWN_PARTS {
            let rel = Path::new(part);
            match fscache_quota::tree_space(dir.dir(), rel) {
                Ok(n) => total = total.saturating_add(n),
                // Optional parts (`cache.stats`, `build.lock`) may not exist.
                Err(e) if fscache_dir::gone(&e) => {}
                Err(e) => return Err(Error::io("measure", dir.abs(rel), e)),
            }
        }
        Ok(total)
    }

    /// Remove the debris of dead writers now: `uuid-*` entries and
    /// temporary files in `objects/` and `stage/` that nobody holds locked
    /// (a live writer always holds its lock, so only the leftovers of
    /// crashed or killed processes go), and named directories left
    /// half-removed. A half-committed entry's charge is undone.
    ///
    /// Unlike [`FsCache::repair`], this runs while other handles and
    /// processes use the cache. [`FsCache::prune`], [`FsCache::remove`] and
    /// [`FsCache::entries`] sweep too, and so does a commit that must
    /// evict.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] if the cache's version is not ours (nothing
    /// is touched then); listing a directory, a removal or the uncharge
    /// failed.
    pub fn sweep(&self) -> Result<Swept> {
        self.require_compatible()?;
        let swept = {
            let _books = self.inner.books.enter(self.dir())?;
            fscache_quota::sweep(self.dir())?
        };
        self.try_reconcile(fscache_quota::Patience::Upto(RECONCILE_PATIENCE))?;
        if !swept.removed.is_empty() {
            tracing::info!(removed = ?swept.removed, freed = swept.freed, "swept debris");
        }
        Ok(Swept {
            removed: swept.removed,
            freed: swept.freed,
        })
    }

    /// Sweep if the cache is ours to modify; skip quietly if not.
    fn sweep_if_compatible(&self) -> Result<()> {
        if self.compatible() {
            {
                let _books = self.inner.books.enter(self.dir())?;
                fscache_quota::sweep(self.dir())?;
            }
            // Debris whose charge is unknown (a damaged entry) marked the
            // books suspect.
            self.reconcile(fscache_quota::Patience::Upto(RECONCILE_PATIENCE));
        }
        Ok(())
    }

    /// Refuse to modify a cache whose format version is not ours.
    fn require_compatible(&self) -> Result<()> {
        let info = self.reload_info()?;
        if info.is_compatible() {
            return Ok(());
        }
        Err(Error::Incompatible {
            path: self.path().to_owned(),
            version: info.version,
        })
    }
}

/// The entries to remove, oldest first: those last used before
/// `now - unused_for`, then as many more as bring `total` down to `to`.
/// Entries without a recorded size are debris and always chosen when any
/// criterion is given.
fn choose(
    candidates: &[Candidate],
    total: u64,
    to: Option<u64>,
    unused_for: Option<Duration>,
    now: SystemTime,
) -> Vec<Candidate> {
    let mut chosen: Vec<Candidate> = Vec::new();
    let mut rest: Vec<Candidate> = Vec::new();
    let mut remaining = total;
    match unused_for {
        Some(d) => {
            // A duration reaching before the epoch selects nothing by age.
            let cutoff = now.checked_sub(d);
            for c in candidates {
                if cutoff.is_some_and(|cut| stamp_to_time(c.last_use) < cut) {
                    remaining = remaining.saturating_sub(c.size.unwrap_or(0));
                    chosen.push(c.clone());
                } else {
                    rest.push(c.clone());
                }
            }
        }
        None => rest = candidates.to_vec(),
    }
    if let Some(to) = to {
        chosen.extend(fscache_quota::plan(&rest, remaining, 0, to));
    } else if unused_for.is_some() {
        chosen.extend(rest.into_iter().filter(|c| c.size.is_none()));
    }
    chosen.sort_by(|a, b| {
        a.last_use
            .cmp(&b.last_use)
            .then_with(|| a.name.cmp(&b.name))
    });
    chosen
}

/// A file system time stamp as a `SystemTime`.
/// Whether another open file holds a lock on entry `name` now (asked with
/// `F_OFD_GETLK`, without taking one or touching its atime); `None` when the
/// entry is gone.
fn reader_holds(dir: &CacheDir, name: &str) -> Result<Option<bool>> {
    let lock_rel = PathBuf::from(OBJECTS).join(name).join(OBJECT_LOCK);
    match dir.open_noatime(&lock_rel) {
        Ok(fd) => Ok(Some(
            fscache_lock::conflicting_lock(std::os::fd::AsFd::as_fd(&fd), LockKind::Exclusive)
                .map_err(|e| Error::io("query lock of", dir.abs(&lock_rel), e))?
                .is_some(),
        )),
        Err(e) if is_miss(&e) => Ok(None),
        Err(e) => Err(Error::io("open", dir.abs(&lock_rel), e)),
    }
}

fn stamp_to_time((secs, nsecs): Stamp) -> SystemTime {
    let nsecs = nsecs.clamp(0, 999_999_999) as u32;
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::new(0, nsecs)
    }
}

#[cfg(test)]
mod tests;
