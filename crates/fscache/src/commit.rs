//! The commit of a stored entry: measure → charge (evicting when full) →
//! `object.info` → stamp → rename, and what it reports.

use std::collections::{HashSet, VecDeque};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fscache_dir::digest::Digest;
use fscache_dir::{EntryName, HookPoint, DATA, OBJECTS, OBJECT_INFO};
use fscache_quota::{Candidate, Charge, MaxSize, ObjectInfo, Tried};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::guards::{Anon, CopiedTree, Kept};
use crate::handle::{stamp_committed, Durability, FsCache};

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
}

impl FsCache {
    /// Commit `anon` as `name`. On success the lock comes back still
    /// exclusive; when the cache did not keep the entry, the tree comes
    /// back (dropping it removes it). On error the tree is removed.
    pub(crate) fn commit(
        &self,
        name: &EntryName,
        anon: Anon,
        copied: Option<CopiedTree>,
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
        let (digest, size) = match copied {
            Some(c) => (Some(c.digest), c.space),
            None => (
                None,
                fscache_quota::tree_space(dir.dir(), &data_rel)
                    .map_err(|e| Error::io("measure", dir.abs(&data_rel), e))?,
            ),
        };
        let mut report = CommitReport {
            stored: Stored::Committed,
            evicted: Vec::new(),
            size,
        };
        // The digest, when a copy computed it or the handle asks for it
        // (one more read of the data, before anything is charged).
        let digest = match digest {
            Some(d) => Some(d),
            None if self.inner.record_digests => Some(
                fscache_dir::digest::digest_tree(
                    anon.data_dir()?,
                    &dir.abs(&data_rel),
                    fscache_dir::digest::Version::V2,
                )
                .map_err(|e| Error::io("digest", dir.abs(&data_rel), e))?,
            ),
            None => None,
        };
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
        let mut books = self.inner.books.enter(dir)?;
        let mut charged = self.charge_or_evict(size, limit, &mut report.evicted)?;
        if !charged && fscache_quota::is_suspect(dir) {
            // Full, but the books may be over: an evicting commit settles
            // them (if no change is in flight) and tries once more.
            drop(books);
            let settled = self.reconcile(fscache_quota::Patience::Once);
            books = self.inner.books.enter(dir)?;
            if settled {
                charged = self.charge_or_evict(size, limit, &mut report.evicted)?;
            }
        }
        if !charged {
            return Ok(refused(report, Stored::NoSpace, anon));
        }
        // From here on, every way out that does not commit uncharges
        // exactly `size` again.
        let published = self.publish(name, &anon, size, digest);
        if let Ok(true) = published {
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
        let info_rel = anon.rel.join(OBJECT_INFO);
        let unrecorded = match fscache_dir::retry_io(|| dir.dir().remove_file(&info_rel)) {
            Ok(()) => true,
            Err(e) => fscache_dir::gone(&e),
        };
        let uncharged = if unrecorded {
            fscache_quota::uncharge(dir, size).map(drop)
        } else {
            // Still recorded: uncharging now would leave a charged-looking
            // `uuid-*` that a sweep uncharges again. Leave the charge, and
            // let a recount settle whether the tree's removal took the
            // record with it.
            fscache_quota::mark_suspect(dir)
        };
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
    /// The candidates come from the handle's kept list ([`EvictQueue`]):
    /// one directory scan, planned down to the low watermark, serves the
    /// stores that follow. Each store removes only what its own charge
    /// needs, re-checking every candidate under its exclusive lock, so the
    /// store that first hits the limit pays one scan and its own removals,
    /// never the whole batch. The list is rebuilt when it runs out.
    fn charge_or_evict(
        &self,
        size: u64,
        limit: MaxSize,
        evicted: &mut Vec<String>,
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
        let mut round = Round::default();
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
        // Entries a reader held stay candidates, in their place.
        self.inner.evict_queue.put_back(round.busy);
        match round.first_error {
            Some(e) if !outcome && evicted.is_empty() => Err(e),
            _ => Ok(outcome),
        }
    }

    /// Pop candidates off the kept list and remove them until `need` bytes
    /// are freed or the list is empty. Returns the bytes freed.
    fn evict_from_list(
        &self,
        need: u64,
        round: &mut Round,
        evicted: &mut Vec<String>,
    ) -> Result<u64> {
        let dir = self.dir();
        let mut freed = 0u64;
        while freed < need {
            let Some(c) = self.inner.evict_queue.pop() else {
                break;
            };
            match fscache_quota::evict_candidate(dir, &c) {
                Ok(Tried::Removed(bytes)) => {
                    freed = freed.saturating_add(bytes);
                    self.count(|p| &p.evicted_bytes, bytes);
                    round.freed = round.freed.saturating_add(bytes);
                    evicted.push(c.name);
                    round.progress = true;
                }
                // Gone, or used since the scan: no longer a candidate.
                // Once this commit scanned itself, not listed again by it
                // either, so that an entry in constant use cannot keep it
                // scanning; an entry merely used since an older scan is
                // listed again, at its new place.
                Ok(Tried::Stale) => {
                    if round.scanned {
                        round.progress |= round.skipped.insert(c.name);
                    }
                }
                Ok(Tried::Busy) => {
                    round.progress |= round.skipped.insert(c.name.clone());
                    round.busy.push(c);
                }
                // One damaged victim (an unreadable `object.info`) must
                // not stop eviction of the others: skip it for this
                // commit, report the error only if nothing could be freed.
                Err(e) => {
                    round.progress |= round.skipped.insert(c.name.clone());
                    round.first_error.get_or_insert(e.into());
                }
            }
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
        round: &mut Round,
    ) -> Result<Option<bool>> {
        let dir = self.dir();
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
        let plan = fscache_quota::plan_lru(dir, total, size, target, &|name| {
            round.skipped.contains(name)
        })?;
        tracing::debug!(planned = plan.len(), "listed eviction candidates");
        if plan.is_empty() {
            return Ok(Some(matches!(
                fscache_quota::charge(dir, size, limit)?,
                Charge::Accepted { .. }
            )));
        }
        self.inner.evict_queue.replace(plan);
        Ok(None)
    }

    /// Write `object.info` with `O_EXCL`, stamp the entry as used now, and
    /// rename it to its name: `Ok(true)` when renamed, `Ok(false)` when
    /// another writer had the name.
    fn publish(
        &self,
        name: &EntryName,
        anon: &Anon,
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
        let fd = dir
            .open_raw(
                &info_rel,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                Mode::from_raw_mode(0o644),
            )
            .map_err(|e| Error::io("create", dir.abs(&info_rel), e.into()))?;
        let mut file = std::fs::File::from(fd);
        io::Write::write_all(&mut file, &info.to_json_bytes())
            .map_err(|e| Error::io("write", dir.abs(&info_rel), e))?;
        if durable {
            file.sync_all()
                .map_err(|e| Error::io("sync", dir.abs(&info_rel), e))?;
            self.sync_entry(&anon.rel)?;
        }
        drop(file);
        // A fresh entry is the most recently used, however long it took to
        // fill: its last use is now, not when `store` began. Its mtime
        // becomes the commit time: nothing changes the entry's directory
        // after this, so a directory modified later than its lock file was
        // damaged from outside (load's check, `docs/format.md`).
        if let (Some(lock), Some(objects)) = (anon.lock(), anon.parent_fd()) {
            stamp_committed(lock, objects, anon.name());
        }
        dir.hook(HookPoint::CommitRename, &anon.rel);
        // Both names are single components in the directory the entry was
        // made in, whose descriptor the entry holds.
        let objects = Path::new(OBJECTS);
        let objects_fd = anon.parent_fd().ok_or_else(|| {
            Error::io("rename", dir.abs(&anon.rel), io::Error::other("lost lock"))
        })?;
        let mut swept = false;
        loop {
            match rustix::io::retry_on_intr(|| {
                rustix::fs::renameat(objects_fd, anon.name(), objects_fd, name.as_str())
            }) {
                Ok(()) => break,
                // A non-empty directory (or a file) has the name: another
                // writer won, unless it is no entry at all but what a
                // removal that failed or crashed half-way left (no
                // `object.info`). Every store of the name would be refused
                // until the next sweep: sweep now, and try once more.
                Err(Errno::EXIST | Errno::NOTEMPTY | Errno::NOTDIR | Errno::ISDIR) => {
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
                Err(e) => return Err(Error::io("rename", dir.abs(&anon.rel), e.into())),
            }
        }
        if durable {
            // An `O_PATH` descriptor cannot be synced: open the directory.
            dir.sync_dir(objects)
                .map_err(|e| Error::io("sync", dir.abs(objects), e))?;
        }
        Ok(true)
    }

    /// `fsync` every file and directory of the entry at `rel` (its `data/`
    /// tree, and the entry directory itself). Where a file cannot be opened
    /// for it (a mode without read permission), one `syncfs` covers it.
    fn sync_entry(&self, rel: &Path) -> Result<()> {
        let dir = self.dir();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let top = dir
            .open_raw(rel, flags, Mode::empty())
            .map_err(|e| Error::io("open directory", dir.abs(rel), e.into()))?;
        let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(top, rel.to_path_buf())];
        let mut need_syncfs = false;
        while let Some((fd, at)) = stack.pop() {
            let sync_err = |e: Errno, p: &Path| Error::io("sync", dir.abs(p), e.into());
            let list = rustix::fs::Dir::read_from(&fd).map_err(|e| sync_err(e, &at))?;
            for child in list {
                let child = child.map_err(|e| sync_err(e, &at))?;
                let name: &CStr = child.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                let ty = match child.file_type() {
                    FileType::Unknown => rustix::io::retry_on_intr(|| {
                        rustix::fs::statat(&fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    })
                    .map(|st| FileType::from_raw_mode(st.st_mode))
                    .map_err(|e| sync_err(e, &at))?,
                    t => t,
                };
                let open = |extra| {
                    rustix::io::retry_on_intr(|| {
                        rustix::fs::openat(
                            &fd,
                            name,
                            OFlags::RDONLY
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC
                                | OFlags::NONBLOCK
                                | extra,
                            Mode::empty(),
                        )
                    })
                };
                let path = at.join(std::ffi::OsStr::new(
                    std::str::from_utf8(name.to_bytes()).unwrap_or("?"),
                ));
                match ty {
                    FileType::Directory => match open(OFlags::DIRECTORY) {
                        Ok(sub) => stack.push((sub, path)),
                        Err(Errno::ACCESS) => need_syncfs = true,
                        Err(e) => return Err(sync_err(e, &path)),
                    },
                    FileType::RegularFile => match open(OFlags::empty()) {
                        Ok(f) => rustix::io::retry_on_intr(|| rustix::fs::fsync(&f))
                            .map_err(|e| sync_err(e, &path))?,
                        Err(Errno::ACCESS) => need_syncfs = true,
                        Err(e) => return Err(sync_err(e, &path)),
                    },
                    // Symlinks and special files live in their directory's
                    // entries, which the directory's fsync covers.
                    _ => {}
                }
            }
            rustix::io::retry_on_intr(|| rustix::fs::fsync(fd.as_fd()))
                .map_err(|e| sync_err(e, &at))?;
        }
        if need_syncfs {
            rustix::io::retry_on_intr(|| rustix::fs::syncfs(dir.dir()))
                .map_err(|e| Error::io("sync", dir.root(), e.into()))?;
        }
        Ok(())
    }
}

/// The report of a commit that kept nothing, with the tree handed back.
fn refused(mut report: CommitReport, stored: Stored, anon: Anon) -> (CommitReport, Kept) {
    report.stored = stored;
    (report, Kept::Tree(anon))
}

/// What one commit's eviction has seen so far.
#[derive(Default)]
struct Round {
    /// Names skipped in this commit (held, or failing): left out of a
    /// rescan, so that a held old entry does not hide idle younger ones.
    skipped: HashSet<String>,
    /// Candidates a reader held: back on the list when the commit ends.
    busy: Vec<Candidate>,
    /// Whether this commit scanned `objects/` already.
    scanned: bool,
    /// Whether anything was removed or newly skipped since that scan.
    progress: bool,
    /// Bytes uncharged by this commit's removals.
    freed: u64,
    first_error: Option<Error>,
}

/// The kept list of eviction candidates of a handle: least recently used
/// first, as one scan of `objects/` found them, planned down to the low
/// watermark. Commits pop from it; every candidate is checked again under
/// its own lock before it is removed ([`fscache_quota::evict_candidate`]),
/// so a stale list costs a failed try, never a wrong removal.
#[derive(Default)]
pub(crate) struct EvictQueue {
    list: Mutex<VecDeque<Candidate>>,
}

impl EvictQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Candidate>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pop(&self) -> Option<Candidate> {
        self.lock().pop_front()
    }

    fn replace(&self, plan: Vec<Candidate>) {
        *self.lock() = plan.into();
    }

    /// Return candidates that were busy to the list, keeping it in LRU
    /// order.
    fn put_back(&self, busy: Vec<Candidate>) {
        if busy.is_empty() {
            return;
        }
        let mut list = self.lock();
        list.retain(|c| !busy.iter().any(|b| b.name == c.name));
        list.extend(busy);
        list.make_contiguous().sort_by(|a, b| {
            a.last_use
                .cmp(&b.last_use)
                .then_with(|| a.name.cmp(&b.name))
        });
    }
}
