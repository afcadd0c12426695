//! The commit of a stored entry: measure → charge (evicting when full) →
//! `object.info` → stamp → rename, and what it reports.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fscache_dir::digest::Digest;
use fscache_dir::{EntryName, HookPoint, DATA, OBJECTS, OBJECT_INFO};
use fscache_quota::evictlist::{EvictList, ListState};
use fscache_quota::{Candidate, Charge, MaxSize, ObjectInfo, ScanPlan, Tried};

use crate::error::{Error, Result};
use crate::guards::{Anon, CopiedTree, Kept};
use crate::handle::{Durability, FsCache};
use crate::verify::OBJECT_TREE;

/// What a commit did with the entry. Only [`Stored::Committed`] keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a commit may keep nothing: check what happened"]
pub enum Stored {
    /// The entry is in the cache under its name.
    Committed,
    /// Another writer committed the name first; this copy was discarded.
    Exists,
    /// The entry alone is larger than the cache's maximum size (0 unless
    /// configured); discarded.
    TooLarge,
    /// Even after evicting every idle least-recently-used entry, the entry
    /// does not fit; discarded.
    NoSpace,
    /// The cache has a format version this implementation does not use;
    /// the store acted as a stage and was discarded.
    Incompatible,
}

/// What [`StoreGuard::commit_report`](crate::StoreGuard::commit_report)
/// did: the outcome, and what eviction removed to make room (also when the
/// entry did not fit after all).
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a commit may keep nothing: check what happened"]
pub struct CommitReport {
    /// What happened to the entry.
    pub stored: Stored,
    /// Entries eviction removed during this commit, oldest first.
    pub evicted: Vec<String>,
    /// The entry's space (`st_blocks` × 512 of its `data/`), as charged;
    /// 0 when it was not measured (an incompatible cache).
    pub size: u64,
    /// What the copy of [`StoreGuard::commit_tree`](crate::StoreGuard::commit_tree)
    /// could not keep of the source's metadata and dropped, as `cp -a`
    /// does (see [`meta`](crate::meta)); all 0 for any other commit.
    pub dropped: fscache_dir::meta::Dropped,
}

impl FsCache {
    /// Commit `anon` as `name`. On success the lock comes back still
    /// exclusive; when the cache did not keep the entry, the tree comes
    /// back (dropping it removes it). On error the tree is removed.
    pub(crate) fn commit(
        &self,
        name: &EntryName,
        mut anon: Anon,
        copied: Option<CopiedTree>,
        vouched: Option<Digest>,
    ) -> Result<(CommitReport, Kept)> {
        let _gate = self
            .inner
            .commit_gate
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let dir = self.dir();
        let data_rel = anon.rel.join(DATA);
        dir.hook(HookPoint::CommitMeasure, &anon.rel);
        // A copy into the empty `data/` measured it as it went: no second
        // walk.
        let (digest, listing, size, dropped) = match copied {
            Some(c) => (Some(c.digest), Some(c.listing), c.space, c.dropped),
            None => (
                None,
                None,
                fscache_quota::tree_space(dir.dir(), &data_rel)
                    .map_err(|e| Error::io("measure", dir.abs(&data_rel), e))?,
                Default::default(),
            ),
        };
        let mut report = CommitReport {
            stored: Stored::Committed,
            evicted: Vec::new(),
            size,
            dropped,
        };
        // The digest, when a copy computed it or the handle asks for it
        // (one more read of the data, before anything is charged).
        let (digest, listing) = match digest.or(vouched) {
            Some(d) => (Some(d), listing),
            None if self.inner.record_digests => {
                let (d, l) =
                    fscache_dir::digest::digest_tree_listed(anon.data_dir()?, &dir.abs(&data_rel))
                        .map_err(|e| Error::io("digest", dir.abs(&data_rel), e))?;
                (Some(d), Some(l))
            }
            None => (None, None),
        };
        // Beside the digest, what it covers of each path, so `verify` can
        // name what changed: `object.tree`, fscache's own, optional, in
        // the entry not yet published (a refused commit removes it too).
        if let Some(listing) = listing {
            let rel = anon.rel.join(OBJECT_TREE);
            fscache_dir::retry_io(|| dir.dir().write(&rel, listing.to_text()))
                .map_err(|e| Error::io("write", dir.abs(&rel), e))?;
        }
        // Another process may have changed the limit since we looked.
        let info = self.current_info()?;
        if !info.is_compatible() {
            return Ok(refused(report, Stored::Incompatible, anon));
        }
        let limit = info.limit();
        // A limit of 0 (also an absent one) keeps nothing, not even an
        // entry that happens to occupy no blocks (an empty tree on tmpfs).
        if limit == MaxSize::Bytes(0) || !limit.admits(size) {
            return Ok(refused(report, Stored::TooLarge, anon));
        }
        dir.hook(HookPoint::CommitCharge, &anon.rel);
        // From the charge to the rename (or its undo) the books are held
        // shared: a live recount waits for this commit to settle.
        let own = anon.name().to_str();
        let mut books = self.inner.books.enter(dir)?;
        let mut charged = self.charge_or_evict(size, limit, &mut report.evicted, own)?;
        if !charged && fscache_quota::is_suspect(dir) {
            // Full, but the books may be over: an evicting commit settles
            // them (if no change is in flight) and tries once more.
            drop(books);
            let settled = self.reconcile(fscache_quota::Patience::Once);
            books = self.inner.books.enter(dir)?;
            if settled {
                charged = self.charge_or_evict(size, limit, &mut report.evicted, own)?;
            }
        }
        if !charged {
            return Ok(refused(report, Stored::NoSpace, anon));
        }
        // From here on, every way out that does not commit undoes the
        // charge of exactly `size`: the guard does it when it drops, unless
        // the entry was published or the undo was made (and reported)
        // below.
        let charge = Charged {
            cache: self,
            info_rel: anon.rel.join(OBJECT_INFO),
            size: Some(size),
        };
        let published = self.publish(name, &mut anon, size, digest);
        if let Ok(true) = published {
            charge.keep();
            let lock = anon.published().ok_or_else(|| {
                Error::io(
                    "rename",
                    dir.abs(Path::new(OBJECTS)),
                    io::Error::other("lost lock"),
                )
            })?;
            drop(books);
            if !report.evicted.is_empty() {
                // The rare evicting commit pays for settling suspect books
                // (one `stat` when they are not).
                self.reconcile(fscache_quota::Patience::Once);
            }
            return Ok((report, Kept::Published(lock)));
        }
        let uncharged = charge.undo();
        if published.is_err() || uncharged.is_err() {
            // Dropping `anon` removes the tree: inside the hold, so that no
            // recount sees it half-removed.
            drop(anon);
            drop(books);
            published?;
            uncharged?;
            unreachable!("one of them is an error");
        }
        drop(books);
        Ok(refused(report, Stored::Exists, anon))
    }

    /// Count a commit's outcome in the statistics.
    pub(crate) fn count_commit(&self, report: &CommitReport) {
        let field: fn(&crate::stats::Pending) -> &std::sync::atomic::AtomicU64 = match report.stored
        {
            Stored::Committed => |p| &p.stored,
            Stored::Exists => |p| &p.stored_exists,
            Stored::TooLarge => |p| &p.stored_too_large,
            Stored::NoSpace => |p| &p.stored_no_space,
            Stored::Incompatible => |p| &p.stored_incompatible,
        };
        self.count(field, 1);
        if report.stored == Stored::Committed {
            self.count(|p| &p.bytes_stored, report.size);
        }
        if !report.evicted.is_empty() {
            self.inner.stats.note_removals(&report.evicted, "evicted");
            self.count(|p| &p.evictions, report.evicted.len() as u64);
        }
    }

    /// Charge `size`; when refused, evict least-recently-used entries until
    /// the charge is accepted, recording what was evicted. `Ok(false)`: no
    /// space.
    ///
    /// The candidates come from the kept list ([`EvictQueue`], shared by
    /// every process through `cache.evict`): one directory scan, planned
    /// down to the low watermark, serves the stores that follow, in this
    /// process and in others. Each store removes only what its own charge
    /// needs, re-checking every candidate under its exclusive lock, so the
    /// store that first hits the limit pays one scan and its own removals,
    /// never the whole batch, and a process that stores once pays no scan
    /// while the list lasts. The list is rebuilt when it runs out.
    fn charge_or_evict(
        &self,
        size: u64,
        limit: MaxSize,
        evicted: &mut Vec<String>,
        own: Option<&str>,
    ) -> Result<bool> {
        let dir = self.dir();
        let mut total = match fscache_quota::charge(dir, size, limit)? {
            Charge::Accepted { .. } => return Ok(true),
            Charge::Refused { total } => total,
        };
        let MaxSize::Bytes(max) = limit else {
            // An unlimited cache never refuses.
            return Ok(true);
        };
        let mut round = Round {
            own,
            ..Round::default()
        };
        let outcome = loop {
            // What this store needs freed, as the counter said last.
            let need = total.saturating_add(size).saturating_sub(max);
            let freed = self.evict_from_list(need, &mut round, evicted)?;
            // What the counter holds now, as far as this commit knows: a
            // rescan plans from it, and the next round needs only the rest.
            total = total.saturating_sub(freed);
            if freed < need {
                // The list ran out short of the need: scan again, unless
                // the last scan (of this commit) led nowhere.
                if round.scanned && !round.progress {
                    break match fscache_quota::charge(dir, size, limit)? {
                        Charge::Accepted { .. } => true,
                        Charge::Refused { .. } => false,
                    };
                }
                if let Some(accepted) = self.rescan(size, limit, total, &mut round)? {
                    break accepted;
                }
                continue;
            }
            match fscache_quota::charge(dir, size, limit)? {
                Charge::Accepted { .. } => break true,
                // Others charged meanwhile: free more.
                Charge::Refused { total: now } => total = now,
            }
        };
        if !evicted.is_empty() || !round.skipped.is_empty() {
            let mut skipped: Vec<&String> = round.skipped.iter().collect();
            skipped.sort();
            tracing::info!(
                removed = ?evicted,
                skipped = ?skipped,
                freed = round.freed,
                need = size,
                "evicted least recently used entries to make room"
            );
        }
        match round.first_error {
            Some(e) if !outcome && evicted.is_empty() => Err(e),
            _ => Ok(outcome),
        }
    }

    /// Take candidates off the kept list, oldest first, and remove them
    /// until `need` bytes are freed or the list has nothing left for this
    /// commit. Returns the bytes freed.
    fn evict_from_list(
        &self,
        need: u64,
        round: &mut Round<'_>,
        evicted: &mut Vec<String>,
    ) -> Result<u64> {
        let dir = self.dir();
        let mut queue = self.inner.evict_queue.lock();
        let Some(list) = queue.current(dir) else {
            return Ok(0);
        };
        let state = list.state();
        // A list kept from an earlier scan is the LRU order only up to its
        // cutoff (see `ScanPlan::cutoff`); the commit that scanned uses all
        // of it.
        let cutoff = if round.own_list { None } else { list.cutoff() };
        round.seen_list = match list {
            KeptList::Shared(l) => Some(l.inode()),
            KeptList::Private { .. } => None,
        };
        let len = match cutoff {
            Some(k) => list.candidates().partition_point(|c| c.last_use <= k),
            None => list.candidates().len(),
        };
        let mut tried: Vec<(usize, bool)> = Vec::new();
        let mut freed = 0u64;
        for i in state.pending(len) {
            if freed >= need {
                break;
            }
            let c = &list.candidates()[i];
            // Skipped earlier in this commit (held, failing, or in constant
            // use): still a candidate for the commits that follow, so a
            // hole, and the records after it can still be consumed.
            if round.skipped.contains(&c.name) {
                tried.push((i, false));
                continue;
            }
            match fscache_quota::evict_candidate(dir, c) {
                Ok(Tried::Removed(bytes)) => {
                    freed = freed.saturating_add(bytes);
                    self.count(|p| &p.evicted_bytes, bytes);
                    round.freed = round.freed.saturating_add(bytes);
                    evicted.push(c.name.clone());
                    round.progress = true;
                    tried.push((i, true));
                }
                // Gone, replaced, or used since the scan: no longer a
                // candidate of this list, for any process. Once this
                // commit scanned itself, not listed again by it either,
                // so that an entry in constant use cannot keep it
                // scanning; an entry merely used since an older scan is
                // listed again, at its new place.
                Ok(Tried::Stale) => {
                    if round.scanned {
                        round.progress |= round.skipped.insert(c.name.clone());
                    }
                    tried.push((i, true));
                }
                // A reader holds it: still a candidate, in its place.
                Ok(Tried::Busy) => {
                    round.progress |= round.skipped.insert(c.name.clone());
                    tried.push((i, false));
                }
                // One damaged victim (an unreadable `object.info`) must
                // not stop eviction of the others: skip it for this
                // commit, report the error only if nothing could be freed.
                Err(e) => {
                    round.progress |= round.skipped.insert(c.name.clone());
                    round.first_error.get_or_insert(e.into());
                    tried.push((i, false));
                }
            }
        }
        let advanced = state.advance(&tried, len);
        if advanced != state {
            list.set_state(&advanced);
        }
        Ok(freed)
    }

    /// Scan `objects/` again (clearing the debris of crashed writers on the
    /// way) and refill the kept list, planned down to the watermark,
    /// without the names this commit skipped. `Some(outcome)` when the
    /// commit is decided without the list.
    fn rescan(
        &self,
        size: u64,
        limit: MaxSize,
        total: u64,
        round: &mut Round<'_>,
    ) -> Result<Option<bool>> {
        let dir = self.dir();
        // One commit (of any process) scans at a time; the others wait
        // for it, then take from the list it wrote instead of scanning
        // too. Held until the new list is written.
        let hold = fscache_quota::evictlist::lock_rescan(dir)?;
        if self.inner.evict_queue.lock().adopt_newer(dir, round) {
            tracing::debug!(
                waited = hold.waited,
                "took the kept list another commit wrote"
            );
            return Ok(None);
        }
        dir.hook(HookPoint::EvictScan, Path::new(OBJECTS));
        self.count(|p| &p.eviction_scans, 1);
        round.scanned = true;
        round.progress = false;
        // Full: the scan that eviction needs anyway also clears the debris
        // of crashed writers (unaccounted space, or half-committed charges).
        let swept = fscache_quota::sweep(dir)?;
        if !swept.removed.is_empty() {
            tracing::info!(removed = ?swept.removed, freed = swept.freed, "swept debris");
            if swept.freed > 0 {
                if let Charge::Accepted { .. } = fscache_quota::charge(dir, size, limit)? {
                    return Ok(Some(true));
                }
            }
        }
        let target = limit
            .watermark(self.watermark_percent())
            .unwrap_or(u64::MAX);
        let plan = fscache_quota::scan_plan(
            dir,
            total,
            size,
            target,
            &|name| round.skipped.contains(name),
            round.own,
        )?;
        tracing::debug!(
            planned = plan.candidates.len(),
            "listed eviction candidates"
        );
        if plan.candidates.is_empty() {
            return Ok(Some(matches!(
                fscache_quota::charge(dir, size, limit)?,
                Charge::Accepted { .. }
            )));
        }
        self.inner.evict_queue.lock().replace(dir, plan);
        round.own_list = true;
        drop(hold);
        Ok(None)
    }

    /// Write `object.info` with `O_EXCL`, stamp the entry as used now, and
    /// rename it to its name: `Ok(true)` when renamed, `Ok(false)` when
    /// another writer had the name.
    fn publish(
        &self,
        name: &EntryName,
        anon: &mut Anon,
        size: u64,
        digest: Option<Digest>,
    ) -> Result<bool> {
        let dir = self.dir();
        let durable = self.durability() == Durability::Committed;
        let info_rel = anon.rel.join(OBJECT_INFO);
        let info = ObjectInfo {
            creation_boot_id: Some(self.inner.boot_id.clone()),
            size: Some(size),
            digest: digest.map(|d| d.to_string()),
        };
        let mut file = dir
            .create_new(&info_rel)
            .map_err(|e| Error::io("create", dir.abs(&info_rel), e))?;
        io::Write::write_all(&mut file, &info.to_json_bytes())
            .map_err(|e| Error::io("write", dir.abs(&info_rel), e))?;
        if durable {
            file.sync_all()
                .map_err(|e| Error::io("sync", dir.abs(&info_rel), e))?;
            dir.sync_all(&anon.rel)
                .map_err(|e| Error::io("sync", dir.abs(&anon.rel), e))?;
        }
        drop(file);
        // A fresh entry is the most recently used, however long it took to
        // fill: its last use is now, not when `store` began. Its mtime
        // becomes the commit time: nothing changes the entry's directory
        // after this, so a directory modified later than its lock file was
        // damaged from outside (load's check, `docs/format.md`).
        anon.stamp_committed();
        dir.hook(HookPoint::CommitRename, &anon.rel);
        // Both names are single components in the directory the entry was
        // made in, whose descriptor the entry holds.
        let objects = Path::new(OBJECTS);
        let mut swept = false;
        loop {
            match anon.rename_to(name.as_str()) {
                Ok(true) => break,
                // A non-empty directory (or a file) has the name: another
                // writer won, unless it is no entry at all but what a
                // removal that failed or crashed half-way left (no
                // `object.info`). Every store of the name would be refused
                // until the next sweep: sweep now, and try once more.
                Ok(false) => {
                    let entry = Path::new(OBJECTS).join(name.as_str());
                    let debris = matches!(
                        dir.stat(&entry.join(OBJECT_INFO)),
                        Err(e) if e.kind() == io::ErrorKind::NotFound
                    );
                    if swept || !debris {
                        return Ok(false);
                    }
                    swept = true;
                    let cleared = fscache_quota::sweep(dir)?;
                    tracing::info!(
                        name = name.as_str(),
                        removed = ?cleared.removed,
                        "swept the debris of a failed removal under the name"
                    );
                }
                Err(e) => return Err(Error::io("rename", dir.abs(&anon.rel), e)),
            }
        }
        if durable {
            // An `O_PATH` descriptor cannot be synced: open the directory.
            dir.sync_dir(objects)
                .map_err(|e| Error::io("sync", dir.abs(objects), e))?;
        }
        Ok(true)
    }
}

/// A charge of `cache.size` whose entry is not published yet: dropped,
/// it undoes the charge (best effort; [`Charged::undo`] reports), so every
/// way out of a commit after its charge undoes it by construction.
#[must_use = "dropping the guard undoes the charge at once"]
struct Charged<'a> {
    cache: &'a FsCache,
    /// The entry's `object.info`, relative to the root.
    info_rel: PathBuf,
    // `None` once kept or undone.
    size: Option<u64>,
}

impl Charged<'_> {
    /// The entry was published: the charge stays.
    fn keep(mut self) {
        self.size = None;
    }

    /// Undo the charge now, reporting a failure.
    fn undo(mut self) -> Result<()> {
        match self.size.take() {
            Some(size) => self.undo_charge(size),
            None => Ok(()),
        }
    }

    /// Unlink the entry's `object.info` and uncharge `size`, unless the
    /// record could not be unlinked: then uncharging now would leave a
    /// charged-looking `uuid-*` that a sweep uncharges again, so the charge
    /// stays and the books are marked suspect for a recount to settle.
    fn undo_charge(&self, size: u64) -> Result<()> {
        let dir = self.cache.dir();
        let unrecorded = match fscache_dir::retry_io(|| dir.dir().remove_file(&self.info_rel)) {
            Ok(()) => true,
            Err(e) => fscache_dir::gone(&e),
        };
        if unrecorded {
            fscache_quota::uncharge(dir, size).map(drop)?;
        } else {
            fscache_quota::mark_suspect(dir)?;
        }
        Ok(())
    }
}

impl Drop for Charged<'_> {
    fn drop(&mut self) {
        if let Some(size) = self.size.take() {
            let _ = self.undo_charge(size);
        }
    }
}

/// The report of a commit that kept nothing, with the tree handed back.
fn refused(mut report: CommitReport, stored: Stored, anon: Anon) -> (CommitReport, Kept) {
    report.stored = stored;
    (report, Kept::Tree(anon))
}

/// What one commit's eviction has seen so far.
#[derive(Default)]
struct Round<'a> {
    /// The name of the committing entry's own `uuid-*` directory: in
    /// flight during its own scan, but stamped at commit.
    own: Option<&'a str>,
    /// Names skipped in this commit (held, or failing): left out of a
    /// rescan, so that a held old entry does not hide idle younger ones.
    skipped: HashSet<String>,
    /// Whether this commit scanned `objects/` already.
    scanned: bool,
    /// Whether the list in the queue is the one this commit's own scan
    /// wrote (it then uses all of it, past the cutoff).
    own_list: bool,
    /// The shared list this commit last took candidates from (its file's
    /// device and inode): after waiting for another commit's rescan, a
    /// list in `cache.evict` that is not this one is new.
    seen_list: Option<fscache_quota::Inode>,
    /// Whether anything was removed or newly skipped since that scan.
    progress: bool,
    /// Bytes uncharged by this commit's removals.
    freed: u64,
    first_error: Option<Error>,
}

/// The kept list of eviction candidates: least recently used first, as
/// one scan of `objects/` found them, planned down to the low watermark,
/// and shared by every process through `cache.evict`
/// ([`fscache_quota::evictlist`]); where that file cannot be written, this
/// handle's own. Commits take candidates from it; every candidate is
/// checked again under its own lock before it is removed
/// ([`fscache_quota::evict_candidate`]), so a stale or damaged list costs a
/// failed try, never a wrong removal.
#[derive(Default)]
pub(crate) struct EvictQueue {
    list: Mutex<Option<KeptList>>,
}

/// A kept list: the shared file, or this handle's own.
pub(crate) enum KeptList {
    Shared(EvictList),
    Private {
        candidates: Vec<Candidate>,
        cutoff: Option<fscache_quota::Stamp>,
        state: Mutex<ListState>,
    },
}

impl KeptList {
    fn candidates(&self) -> &[Candidate] {
        match self {
            KeptList::Shared(l) => &l.candidates,
            KeptList::Private { candidates, .. } => candidates,
        }
    }

    fn cutoff(&self) -> Option<fscache_quota::Stamp> {
        match self {
            KeptList::Shared(l) => l.cutoff,
            KeptList::Private { cutoff, .. } => *cutoff,
        }
    }

    fn state(&self) -> ListState {
        match self {
            KeptList::Shared(l) => l.state(),
            KeptList::Private { state, .. } => {
                state.lock().unwrap_or_else(|p| p.into_inner()).clone()
            }
        }
    }

    fn set_state(&self, new: &ListState) {
        match self {
            KeptList::Shared(l) => l.set_state(new),
            KeptList::Private { state, .. } => {
                *state.lock().unwrap_or_else(|p| p.into_inner()) = new.clone();
            }
        }
    }
}

/// The kept list, locked for one commit's tries: the commits of one
/// handle take turns, so they do not race each other for the same
/// candidates (those of other processes may; the entry locks decide).
pub(crate) struct QueueGuard<'a>(std::sync::MutexGuard<'a, Option<KeptList>>);

impl EvictQueue {
    fn lock(&self) -> QueueGuard<'_> {
        QueueGuard(self.list.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl QueueGuard<'_> {
    /// The list in force: the one held, while `cache.evict` still is that
    /// file (one `fstat`), else `cache.evict` read again (a damaged or
    /// missing file is no list). A private list stays until a rescan.
    fn current(&mut self, dir: &fscache_dir::CacheDir) -> Option<&KeptList> {
        let fresh = match &*self.0 {
            Some(KeptList::Shared(l)) => l.is_current(),
            Some(KeptList::Private { .. }) => true,
            None => false,
        };
        if !fresh {
            *self.0 = match EvictList::open(dir) {
                Ok(Some(l)) => Some(KeptList::Shared(l)),
                Ok(None) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "kept eviction list unreadable: ignored");
                    None
                }
            };
        }
        self.0.as_ref()
    }

    /// Take the list in `cache.evict` when it is not the one `round` last
    /// took from and still has a candidate for it (another commit's scan
    /// wrote it while this one waited for the rescan lock, or just
    /// before): `true` when it is now the list in force.
    fn adopt_newer(&mut self, dir: &fscache_dir::CacheDir, round: &mut Round<'_>) -> bool {
        let list = match EvictList::open(dir) {
            Ok(Some(l)) if Some(l.inode()) != round.seen_list => l,
            _ => return false,
        };
        let len = match list.cutoff {
            Some(k) => list.candidates.partition_point(|c| c.last_use <= k),
            None => list.candidates.len(),
        };
        let useful = list
            .state()
            .pending(len)
            .any(|i| !round.skipped.contains(&list.candidates[i].name));
        if useful {
            *self.0 = Some(KeptList::Shared(list));
            round.own_list = false;
        }
        useful
    }

    /// Keep `plan` as the list: written to `cache.evict` for every process,
    /// or, where that fails, for this handle only.
    fn replace(&mut self, dir: &fscache_dir::CacheDir, plan: ScanPlan) {
        *self.0 = Some(
            match fscache_quota::evictlist::write_list(dir, &plan.candidates, plan.cutoff) {
                Ok(l) => KeptList::Shared(l),
                Err(e) => {
                    tracing::debug!(error = %e, "kept eviction list not shared");
                    KeptList::Private {
                        candidates: plan.candidates,
                        cutoff: plan.cutoff,
                        state: Mutex::new(ListState::default()),
                    }
                }
            },
        );
    }
}
