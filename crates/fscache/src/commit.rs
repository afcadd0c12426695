//! The commit of a stored entry: measure → charge (evicting when full) →
//! `object.info` → stamp → rename, and what it reports.

use std::collections::HashSet;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use fscache_dir::digest::Digest;
use fscache_dir::{EntryName, HookPoint, DATA, OBJECTS, OBJECT_INFO};
use fscache_quota::{Charge, MaxSize, ObjectInfo};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::guards::{Anon, Kept};
use crate::handle::{touch_atime, Durability, FsCache};

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
        digest: Option<Digest>,
    ) -> Result<(CommitReport, Kept)> {
        let _gate = self
            .inner
            .commit_gate
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let dir = self.dir();
        let data_rel = anon.rel.join(DATA);
        dir.hook(HookPoint::CommitMeasure, &anon.rel);
        let size = fscache_quota::tree_space(dir.dir(), &data_rel)
            .map_err(|e| Error::io("measure", dir.abs(&data_rel), e))?;
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
                fscache_dir::digest::digest_tree(anon.data_dir()?, &dir.abs(&data_rel))
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
        let charged = self.charge_or_evict(size, limit, &mut report.evicted)?;
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
            return Ok((report, Kept::Published(lock)));
        }
        let _ = dir.dir().remove_file(anon.rel.join(OBJECT_INFO));
        let uncharged = fscache_quota::uncharge(dir, size);
        // An error: dropping `anon` removes the tree.
        published?;
        uncharged?;
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

    /// Charge `size`; when refused, evict least-recently-used entries down
    /// to the watermark and charge again, recording what was evicted.
    /// `Ok(false)`: no space.
    fn charge_or_evict(
        &self,
        size: u64,
        limit: MaxSize,
        evicted: &mut Vec<String>,
    ) -> Result<bool> {
        let dir = self.dir();
        if let Charge::Accepted { .. } = fscache_quota::charge(dir, size, limit)? {
            return Ok(true);
        }
        // Full: the scan that eviction needs anyway also clears the debris
        // of crashed writers (unaccounted space, or half-committed charges).
        let swept = fscache_quota::sweep(dir)?;
        if !swept.removed.is_empty() {
            tracing::info!(removed = ?swept.removed, freed = swept.freed, "swept debris");
        }
        let target = limit
            .watermark(self.watermark_percent())
            .unwrap_or(u64::MAX);
        // Entries a reader holds (or that were just used) are skipped by
        // eviction; plan again without them, so that a held old entry does
        // not hide idle younger ones. Every round removes something or
        // skips a new name, so this ends.
        let mut skipped = HashSet::new();
        loop {
            let candidates: Vec<_> = fscache_quota::list_lru(dir)?
                .into_iter()
                .filter(|c| !skipped.contains(&c.name))
                .collect();
            let total = fscache_quota::read_size(dir).unwrap_or(u64::MAX);
            let victims = fscache_quota::plan(&candidates, total, size, target);
            let round = fscache_quota::evict(dir, &victims)?;
            self.count(|p| &p.evicted_bytes, round.freed);
            tracing::info!(
                removed = ?round.removed,
                skipped = ?round.skipped,
                freed = round.freed,
                need = size,
                "evicted least recently used entries to make room"
            );
            let removed_any = !round.removed.is_empty();
            evicted.extend(round.removed);
            if let Charge::Accepted { .. } = fscache_quota::charge(dir, size, limit)? {
                return Ok(true);
            }
            let before = skipped.len();
            skipped.extend(round.skipped);
            if !removed_any && skipped.len() == before {
                return Ok(false);
            }
        }
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
        // fill: its last use is now, not when `store` began.
        if let Some(lock) = anon.lock() {
            touch_atime(lock);
        }
        dir.hook(HookPoint::CommitRename, &anon.rel);
        // Both names are single components in `objects/`: resolve it once
        // (beneath the root) instead of cap-std's open + close per side.
        let objects = Path::new(OBJECTS);
        let objects_fd = dir
            .open_raw(objects, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| Error::io("open directory", dir.abs(objects), e.into()))?;
        let mut swept = false;
        loop {
            match rustix::fs::renameat(&objects_fd, anon.name(), &objects_fd, name.as_str()) {
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
            rustix::fs::fsync(&objects_fd)
                .map_err(|e| Error::io("sync", dir.abs(objects), e.into()))?;
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
                    FileType::Unknown => {
                        rustix::fs::statat(&fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                            .map(|st| FileType::from_raw_mode(st.st_mode))
                            .map_err(|e| sync_err(e, &at))?
                    }
                    t => t,
                };
                let open = |extra| {
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
                        Ok(f) => rustix::fs::fsync(&f).map_err(|e| sync_err(e, &path))?,
                        Err(Errno::ACCESS) => need_syncfs = true,
                        Err(e) => return Err(sync_err(e, &path)),
                    },
                    // Symlinks and special files live in their directory's
                    // entries, which the directory's fsync covers.
                    _ => {}
                }
            }
            rustix::fs::fsync(fd.as_fd()).map_err(|e| sync_err(e, &at))?;
        }
        if need_syncfs {
            rustix::fs::syncfs(dir.dir()).map_err(|e| Error::io("sync", dir.root(), e.into()))?;
        }
        Ok(())
    }
}

/// The report of a commit that kept nothing, with the tree handed back.
fn refused(mut report: CommitReport, stored: Stored, anon: Anon) -> (CommitReport, Kept) {
    report.stored = stored;
    (report, Kept::Tree(anon))
}
