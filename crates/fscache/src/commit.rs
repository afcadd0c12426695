//! The commit of a stored entry: measure → charge (evicting when full) →
//! `object.info` → stamp → rename, and what it reports.

use std::io;
use std::path::{Path, PathBuf};

use fscache_dir::digest::Digest;
use fscache_dir::{EntryName, HookPoint, DATA, OBJECTS, OBJECT_INFO};
use fscache_quota::{MaxSize, ObjectInfo};

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
                let (d, l) = fscache_dir::digest::digest_tree_listed(
                    anon.data_dir()?,
                    &dir.abs(&data_rel),
                    fscache_dir::digest::Version::default(),
                )
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
