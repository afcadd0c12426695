//! Eviction inside a commit: charge, and when the charge is refused,
//! take least-recently-used candidates from the kept list (`cache.evict`,
//! shared by every process) or rescan, removing only what this charge
//! needs.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use fscache_dir::{HookPoint, OBJECTS};
use fscache_quota::evictlist::{EvictList, ListState};
use fscache_quota::{Candidate, Charge, MaxSize, ScanPlan, Tried};

use crate::error::{Error, Result};
use crate::handle::FsCache;

impl FsCache {
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
    pub(crate) fn charge_or_evict(
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
