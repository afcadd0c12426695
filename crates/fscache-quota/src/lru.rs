//! LRU listing, eviction plans and eviction.

use std::io;
use std::path::{Path, PathBuf};

use fscache_dir::{
    CacheDir, LockOptions, TryLocked, OBJECTS, OBJECT_INFO, OBJECT_LOCK, RESERVED_PREFIX,
};

use crate::counter;
use crate::error::{self, Result};
use crate::objinfo::ObjectInfo;

// Kept here for the crates that name them through this one; they live in
// `fscache_dir::stat`, the one place that normalises `Stat` widths.
pub use fscache_dir::stat::{atime, Inode, Stamp};

/// A committed entry as eviction sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The entry's name (a directory in `objects/`).
    pub name: String,
    /// The atime of its `object.lock`: its last use.
    pub last_use: Stamp,
    /// The size its `object.info` recorded; `None` if that is missing or
    /// corrupt (the entry is invalid: removing it frees no accounted bytes).
    pub size: Option<u64>,
    /// The device and inode of its `object.lock` when listed, if known: a
    /// candidate whose lock file is another inode now was replaced (removed
    /// and stored again) and is not the entry that was listed.
    pub inode: Option<Inode>,
}

impl Candidate {
    /// A candidate named `name`, last used at `last_use`, of recorded
    /// `size`.
    pub fn new(name: impl Into<String>, last_use: Stamp, size: Option<u64>) -> Self {
        Self {
            name: name.into(),
            last_use,
            size,
            inode: None,
        }
    }
}

/// List the committed entries of `objects/`, least recently used first.
/// `uuid-*` names (entries being stored, temporary files) are skipped, and
/// so are names that vanish during the listing.
///
/// # Errors
///
/// Reading `objects/` failed.
pub fn list_lru(cache: &CacheDir) -> Result<Vec<Candidate>> {
    let objects = Path::new(OBJECTS);
    let abs = || cache.abs(objects);
    let mut out = Vec::new();
    for entry in cache
        .list_dir(objects)
        .map_err(|e| error::io("read directory", abs(), e))?
    {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        out.extend(candidate(cache, name)?);
    }
    out.sort_by(|a, b| {
        a.last_use
            .cmp(&b.last_use)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(out)
}

/// The committed entry `name` of `objects/` as eviction sees it; `None`
/// for `uuid-*` names, anything that is not a real directory with an
/// `object.lock`, and names that vanish meanwhile. A garbled `object.info`
/// (not JSON, a directory, a symlink…) gives a candidate without a size.
///
/// # Errors
///
/// A `stat` or read failed for a reason that says nothing about the entry's
/// shape (`EIO`, `EACCES`, …): the caller must not take the entry for
/// absent.
pub fn candidate(cache: &CacheDir, name: &str) -> Result<Option<Candidate>> {
    if name.starts_with(RESERVED_PREFIX) {
        return Ok(None);
    }
    let dir = Path::new(OBJECTS).join(name);
    // Only a real directory can be an entry: a symlink in objects/
    // (garbage, or hostile) is never followed out of the cache, and
    // locking through it would fail (EXDEV) on every eviction.
    match cache.stat(&dir) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() => {}
        Ok(_) => return Ok(None),
        Err(e) if shape_error(&e) => return Ok(None),
        Err(e) => return Err(error::io("stat", cache.abs(&dir), e)),
    }
    let lock = dir.join(OBJECT_LOCK);
    let st = match cache.stat(&lock) {
        Ok(st) => st,
        Err(e) if shape_error(&e) => return Ok(None),
        Err(e) => return Err(error::io("stat", cache.abs(&lock), e)),
    };
    let info = dir.join(OBJECT_INFO);
    let size = match cache.read_small(&info) {
        Ok(b) => ObjectInfo::parse(&b).size,
        Err(e) if shape_error(&e) => None,
        Err(e) => return Err(error::io("read", cache.abs(&info), e)),
    };
    Ok(Some(Candidate::new(name, atime(&st), size)))
}

/// Whether `e` says something about the shape of what is on disk (absent,
/// the wrong kind of file, garbage) rather than that the system failed to
/// tell.
fn shape_error(e: &io::Error) -> bool {
    use rustix::io::Errno;
    fscache_dir::gone(e)
        || e.kind() == io::ErrorKind::InvalidData
        || matches!(
            fscache_dir::raw_os_error(e).map(Errno::from_raw_os_error),
            Some(
                Errno::LOOP
                    | Errno::ISDIR
                    | Errno::INVAL
                    | Errno::NXIO
                    | Errno::XDEV
                    | Errno::STALE
            )
        )
}

/// Choose, oldest first, the entries whose removal brings `total + need`
/// down to `target` bytes (the low watermark), so one directory scan serves
/// many stores. Invalid entries (no recorded size) are always included:
/// they are debris. Returns the chosen entries, oldest first.
///
/// If removing everything cannot reach `target`, everything is chosen.
pub fn plan(candidates: &[Candidate], total: u64, need: u64, target: u64) -> Vec<Candidate> {
    let mut remaining = total.saturating_add(need);
    let mut chosen = Vec::new();
    for c in candidates {
        match c.size {
            None => chosen.push(c.clone()),
            Some(size) if remaining > target => {
                remaining = remaining.saturating_sub(size);
                chosen.push(c.clone());
            }
            Some(_) => {}
        }
    }
    chosen
}

/// One scan of `objects/` for an eviction plan that reads only what the
/// plan needs: the entries' `object.lock` atimes (one `stat` each, the
/// directory check coming free from `getdents`), then, oldest first, the
/// `object.info` sizes until `total + need` comes down to `target`. The
/// result is what [`plan`] over [`list_lru`] would choose, except that an
/// invalid entry (no recorded size) is only chosen when the walk reaches
/// it; `skip` leaves names out.
///
/// At N entries this costs about N + 3·(planned) system calls instead of
/// 5·N: the scan of the store that hits the limit is the one cost of
/// eviction that grows with the cache.
///
/// # Errors
///
/// Reading `objects/`, or a `stat` or read, failed for a reason that says
/// nothing about an entry's shape.
pub fn plan_lru(
    cache: &CacheDir,
    total: u64,
    need: u64,
    target: u64,
    skip: &dyn Fn(&str) -> bool,
) -> Result<Vec<Candidate>> {
    let mut plan = scan_plan(cache, total, need, target, skip, None)?.candidates;
    plan.retain(|c| !skip(&c.name));
    Ok(plan)
}

/// What [`scan_plan`] found: the plan, and up to when it stays the LRU
/// order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPlan {
    /// The chosen candidates, oldest first, each with the inode of its
    /// `object.lock`.
    pub candidates: Vec<Candidate>,
    /// The earlier of the scan's start and the oldest `object.lock` atime
    /// of the stores in flight during the scan (`uuid-*` directories and
    /// temporary files). An entry committed after the scan may be older
    /// than a candidate (a store that does not stamp its entry at commit,
    /// as osbuild's does not, began before the scan), but never older than
    /// the cutoff: a plan kept for later is the LRU order only up to the
    /// candidates last used at the cutoff. The commit that scanned may use
    /// all of it (what is in flight is no entry yet). `None` only when the
    /// clock is unreadable.
    pub cutoff: Option<Stamp>,
}

/// As [`plan_lru`], also reading the `object.lock` atime of every store in
/// flight (but the one named `own`, which stamps its entry at commit) for
/// the plan's cutoff (see [`ScanPlan`]). This is the plan that can be
/// kept, in this process or in `cache.evict` for all of them.
///
/// Names for which `uncounted` is true stay in the plan, in their place,
/// but what they would free is not counted toward `target`: a commit
/// passes the entries it found held, so that they do not hide idle
/// younger ones, while they stay candidates for the stores that follow.
///
/// # Errors
///
/// As [`plan_lru`].
pub fn scan_plan(
    cache: &CacheDir,
    total: u64,
    need: u64,
    target: u64,
    uncounted: &dyn Fn(&str) -> bool,
    own: Option<&str>,
) -> Result<ScanPlan> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| (d.as_secs() as i64, i64::from(d.subsec_nanos())));
    let mut cutoff = started;
    let objects = Path::new(OBJECTS);
    let read_err = |e: rustix::io::Errno| error::io("read directory", cache.abs(objects), e.into());
    let fd = cache
        .open_raw(objects, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| error::io("read directory", cache.abs(objects), e))?;
    let mut listed: Vec<(Stamp, String, Inode)> = Vec::new();
    // Read to the end first, and again from the start if a call was
    // interrupted (`read_from` makes an `fcntl(F_GETFL)` and reopens `.`;
    // rustix retries an interrupted `getdents64` itself).
    let raw = rustix::io::retry_on_intr(|| {
        rustix::fs::Dir::read_from(&fd)?
            .map(|e| e.map(|e| (e.file_name().to_owned(), e.file_type())))
            .collect::<rustix::io::Result<Vec<_>>>()
    })
    .map_err(read_err)?;
    for (name, file_type) in &raw {
        let Ok(name) = name.to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let in_flight = name.starts_with(RESERVED_PREFIX);
        if in_flight && own == Some(name) {
            continue;
        }
        // Only a real directory can be an entry (see `candidate`).
        let ty = match *file_type {
            FileType::Unknown => match rustix::io::retry_on_intr(|| {
                rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)
            }) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(e) if shape_error(&e.into()) => continue,
                Err(e) => return Err(error::io("stat", cache.abs(&objects.join(name)), e.into())),
            },
            t => t,
        };
        let lock = match ty {
            FileType::Directory => format!("{name}/{OBJECT_LOCK}"),
            // A temporary lock file of a store about to make its
            // directory (or of an atomic file): its atime is when that
            // store began.
            FileType::RegularFile if in_flight => name.to_owned(),
            _ => continue,
        };
        match rustix::io::retry_on_intr(|| {
            rustix::fs::statat(&fd, lock.as_str(), AtFlags::SYMLINK_NOFOLLOW)
        }) {
            Ok(st) if in_flight => {
                let t = atime(&st);
                cutoff = Some(cutoff.map_or(t, |c| c.min(t)));
            }
            Ok(st) => listed.push((atime(&st), name.to_owned(), fscache_dir::stat::inode(&st))),
            Err(e) if shape_error(&e.into()) => {}
            Err(e) => return Err(error::io("stat", cache.abs(&objects.join(&lock)), e.into())),
        }
    }
    drop(fd);
    listed.sort();
    let mut remaining = total.saturating_add(need);
    let mut chosen = Vec::new();
    for (last_use, name, inode) in listed {
        if remaining <= target {
            break;
        }
        let info = objects.join(&name).join(OBJECT_INFO);
        let size = match cache.read_small(&info) {
            Ok(b) => ObjectInfo::parse(&b).size,
            Err(e) if shape_error(&e) => None,
            Err(e) => return Err(error::io("read", cache.abs(&info), e)),
        };
        if let Some(size) = size.filter(|_| !uncounted(&name)) {
            remaining = remaining.saturating_sub(size);
        }
        let mut c = Candidate::new(name, last_use, size);
        c.inode = Some(inode);
        chosen.push(c);
    }
    Ok(ScanPlan {
        candidates: chosen,
        cutoff,
    })
}

/// What an eviction run did.
#[derive(Debug, Default)]
pub struct Evicted {
    /// Names removed: no entries any more (the ones in `failed` too, if
    /// their `object.info` went before the error).
    pub removed: Vec<String>,
    /// Bytes uncharged (what the removed entries' `object.info` recorded).
    pub freed: u64,
    /// Names skipped: held by a reader or used since they were listed.
    pub skipped: Vec<String>,
    /// Names whose removal or uncharge failed, with the error.
    pub failed: Vec<(String, io::Error)>,
}

/// Remove `victims`: for each, take the exclusive lock of its
/// `object.lock` without waiting (`O_NOATIME` where permitted), skip it if
/// a reader holds it or its atime changed since the listing (it was just
/// used), else [`retire`] it: its recorded size is uncharged as soon as it
/// stops counting.
///
/// A victim that fails does not stop the others: it is listed in
/// [`Evicted::failed`] with its error. One whose `object.info` went before
/// the error (the uncharge failed) is no entry any more: it is listed in
/// [`Evicted::removed`] too, and the books are marked suspect.
pub fn evict(cache: &CacheDir, victims: &[Candidate]) -> Evicted {
    let mut out = Evicted::default();
    for v in victims {
        match evict_candidate(cache, v) {
            Ok(Tried::Removed(freed)) => {
                out.removed.push(v.name.clone());
                out.freed = out.freed.saturating_add(freed);
            }
            Ok(Tried::Busy | Tried::Stale) => out.skipped.push(v.name.clone()),
            Err(e) => {
                let info = PathBuf::from(OBJECTS).join(&v.name).join(OBJECT_INFO);
                if matches!(cache.stat(&info), Err(ref g) if fscache_dir::gone(g)) {
                    out.removed.push(v.name.clone());
                }
                out.failed.push((v.name.clone(), e));
            }
        }
    }
    out
}

/// What [`evict_candidate`] did with one candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tried {
    /// Removed; the size its `object.info` recorded was uncharged.
    Removed(u64),
    /// A reader (or another remover) holds it now: still a candidate
    /// later, in its place in the LRU order.
    Busy,
    /// Not the entry that was listed any more: gone, replaced, or used
    /// since (its atime changed). No longer a candidate.
    Stale,
}

/// Remove one listed entry if it is idle and unchanged: take the exclusive
/// lock of its `object.lock` without waiting (`O_NOATIME` where
/// permitted), compare its atime with the listing's, and [`retire`] it.
///
/// This is what makes a kept list of candidates safe to use long after
/// the scan that made it: every check that matters is made again under the
/// entry's own lock.
///
/// # Errors
///
/// Locking failed for a reason other than absence, or [`retire`] failed.
pub fn evict_candidate(cache: &CacheDir, v: &Candidate) -> Result<Tried> {
    let dir = PathBuf::from(OBJECTS).join(&v.name);
    let lock_rel = dir.join(OBJECT_LOCK);
    // O_NOATIME: the attempt must not disturb the atime it compares.
    let locked = match cache.try_lock(&lock_rel, LockOptions::exclusive().noatime()) {
        Ok(TryLocked::Locked(l)) => l,
        Ok(TryLocked::Busy) => return Ok(Tried::Busy),
        Ok(TryLocked::Absent) => return Ok(Tried::Stale),
        Err(e) if fscache_dir::gone(&e) => return Ok(Tried::Stale),
        Err(e) => return Err(error::io("lock", cache.abs(&lock_rel), e)),
    };
    if atime(&locked.stat) != v.last_use
        || v.inode
            .is_some_and(|i| i != fscache_dir::stat::inode(&locked.stat))
    {
        return Ok(Tried::Stale);
    }
    let retired = retire(cache, &dir)?;
    // Our own, never duplicated descriptor: closing releases the lock.
    locked.lock.close();
    Ok(Tried::Removed(retired.freed))
}

/// What [`retire`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retired {
    /// Bytes uncharged: what the entry's `object.info` recorded (0 when
    /// it had none: it was never accounted, or was uncharged already).
    pub freed: u64,
    /// Whether the recorded size was known. `false`: `object.info` held
    /// garbage, so what was charged for the entry is unknown and the books
    /// need a recount to be exact again.
    pub size_known: bool,
    /// Whether the directory itself is gone too. `false`: removing the
    /// rest failed after the entry stopped counting; what is left is debris
    /// a sweep removes (a named directory without `object.info`).
    pub removed: bool,
}

/// Remove the entry directory `rel`, whose exclusive lock the caller
/// holds, keeping the books exact at every step: read the size its
/// `object.info` recorded, unlink `object.info` (the entry stops counting),
/// uncharge that size at once, then remove the rest. A failure after the
/// uncharge leaves debris, never an over-count.
///
/// # Errors
///
/// `object.info` could not be read for a reason other than its absence
/// (nothing is changed then: an entry of unknown size is not removed),
/// unlinking it or the uncharge failed.
pub fn retire(cache: &CacheDir, rel: &Path) -> Result<Retired> {
    let info = rel.join(OBJECT_INFO);
    let (freed, size_known) = match cache.read_small(&info) {
        Ok(b) => match ObjectInfo::parse(&b).size {
            Some(size) => (size, true),
            None => (0, false),
        },
        Err(e) if fscache_dir::gone(&e) => (0, true),
        Err(e) => return Err(error::io("read", cache.abs(&info), e)),
    };
    match fscache_dir::retry_io(|| cache.dir().remove_file(&info)) {
        Err(e) if !fscache_dir::gone(&e) && e.kind() != io::ErrorKind::IsADirectory => {
            return Err(error::io("remove", cache.abs(&info), e))
        }
        // Durably, the entry is invalid before its uncharge and before any
        // of its tree goes (see `CacheDir::remove_entry`): otherwise a
        // power loss can keep an uncounted entry, or `object.info` beside
        // a half-removed `data/`.
        Ok(()) if cache.is_durable() => {
            cache
                .sync_dir(rel)
                .map_err(|e| error::io("sync", cache.abs(rel), e))?;
        }
        _ => {}
    }
    if !size_known {
        // What was charged for it is unknown: only a recount can tell.
        crate::books::mark_suspect(cache)?;
    }
    if freed > 0 {
        // A failure marks the books suspect (see `counter`): the entry is
        // gone, its charge is not, until the next reconcile.
        counter::uncharge(cache, freed)?;
    }
    let removed = cache.remove_entry(rel).is_ok();
    Ok(Retired {
        freed,
        size_known,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, t: i64, size: Option<u64>) -> Candidate {
        Candidate::new(name, (t, 0), size)
    }

    #[test]
    fn plan_frees_down_to_the_watermark_oldest_first() {
        let cands = [
            c("a", 1, Some(30)),
            c("b", 2, Some(30)),
            c("c", 3, Some(30)),
        ];
        // total 90 + need 20 = 110 → must reach 90: removing a (30) gives 80.
        let p = plan(&cands, 90, 20, 90);
        assert_eq!(p.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a"]);
        // Down to 50: a and b.
        let p = plan(&cands, 90, 20, 50);
        assert_eq!(p.len(), 2);
        // Unreachable: everything.
        assert_eq!(plan(&cands, 90, 20, 0).len(), 3);
        // Nothing needed.
        assert!(plan(&cands, 10, 10, 90).is_empty());
    }

    #[test]
    fn plan_lru_reads_only_what_the_plan_needs() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CacheDir::open(&tmp.path().join("c")).unwrap();
        cache.scaffold().unwrap();
        let objects = cache.abs(Path::new(OBJECTS));
        for (i, name) in ["c", "a", "b", "uuid-x"].iter().enumerate() {
            let dir = objects.join(name);
            std::fs::create_dir(&dir).unwrap();
            let lock = dir.join(OBJECT_LOCK);
            std::fs::write(&lock, b"").unwrap();
            let t =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(&lock)
                .unwrap()
                .set_times(std::fs::FileTimes::new().set_accessed(t))
                .unwrap();
            std::fs::write(dir.join(OBJECT_INFO), br#"{"size": 30}"#).unwrap();
        }
        // The youngest entry's info is garbage, never read for this plan.
        std::fs::write(objects.join("b").join(OBJECT_INFO), b"junk").unwrap();
        std::os::unix::fs::symlink("/", objects.join("link")).unwrap();
        let names = |v: Vec<Candidate>| v.into_iter().map(|c| c.name).collect::<Vec<_>>();
        let none = |_: &str| false;
        assert_eq!(names(plan_lru(&cache, 90, 20, 90, &none).unwrap()), ["c"]);
        assert_eq!(
            names(plan_lru(&cache, 90, 20, 50, &none).unwrap()),
            ["c", "a"]
        );
        let all = plan_lru(&cache, 90, 20, 0, &none).unwrap();
        assert_eq!(all.last().map(|c| c.size), Some(None), "{all:?}");
        let skip_c = |n: &str| n == "c";
        assert_eq!(names(plan_lru(&cache, 90, 20, 90, &skip_c).unwrap()), ["a"]);
    }

    #[test]
    fn plan_always_takes_invalid_entries() {
        let cands = [c("junk", 9, None), c("a", 1, Some(10))];
        let p = plan(&cands, 10, 0, 100);
        assert_eq!(
            p.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["junk"]
        );
    }
}
