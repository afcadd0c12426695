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
pub use fscache_dir::stat::{atime, Stamp};

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
}

impl Candidate {
    /// A candidate named `name`, last used at `last_use`, of recorded
    /// `size`.
    pub fn new(name: impl Into<String>, last_use: Stamp, size: Option<u64>) -> Self {
        Self {
            name: name.into(),
            last_use,
            size,
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
        .dir()
        .read_dir(objects)
        .map_err(|e| error::io("read directory", abs(), e))?
    {
        let entry = entry.map_err(|e| error::io("read directory", abs(), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        out.extend(candidate(cache, name));
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
/// `object.lock`, and names that vanish meanwhile.
pub fn candidate(cache: &CacheDir, name: &str) -> Option<Candidate> {
    if name.starts_with(RESERVED_PREFIX) {
        return None;
    }
    let dir = Path::new(OBJECTS).join(name);
    // Only a real directory can be an entry: a symlink in objects/
    // (garbage, or hostile) is never followed out of the cache, and
    // locking through it would fail (EXDEV) on every eviction.
    match cache.stat(&dir) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() => {}
        _ => return None,
    }
    let st = cache.stat(&dir.join(OBJECT_LOCK)).ok()?;
    let size = cache
        .read_small(&dir.join(OBJECT_INFO))
        .ok()
        .and_then(|b| ObjectInfo::parse(&b).size);
    Some(Candidate::new(name, atime(&st), size))
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

/// What an eviction run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Names removed.
    pub removed: Vec<String>,
    /// Bytes uncharged (what the removed entries' `object.info` recorded).
    pub freed: u64,
    /// Names skipped: held by a reader or used since they were listed.
    pub skipped: Vec<String>,
}

/// Remove `victims`: for each, take the exclusive lock of its
/// `object.lock` without waiting (`O_NOATIME` where permitted), skip it if
/// a reader holds it or its atime changed since the listing (it was just
/// used), else read its recorded size under the lock, remove it, and
/// uncharge exactly that.
///
/// # Errors
///
/// A removal or the uncharge failed; what was removed before is uncharged.
pub fn evict(cache: &CacheDir, victims: &[Candidate]) -> Result<Evicted> {
    let mut out = Evicted::default();
    let mut result = Ok(());
    for v in victims {
        match evict_one(cache, v) {
            Ok(Some(freed)) => {
                out.removed.push(v.name.clone());
                out.freed = out.freed.saturating_add(freed);
            }
            Ok(None) => out.skipped.push(v.name.clone()),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if out.freed > 0 {
        counter::uncharge(cache, out.freed)?;
    }
    result.map(|()| out)
}

/// Remove one entry if it is idle and unchanged; `Some(recorded size)`.
fn evict_one(cache: &CacheDir, v: &Candidate) -> Result<Option<u64>> {
    let dir = PathBuf::from(OBJECTS).join(&v.name);
    let lock_rel = dir.join(OBJECT_LOCK);
    // O_NOATIME: the attempt must not disturb the atime it compares.
    let locked = match cache.try_lock(&lock_rel, LockOptions::exclusive().noatime()) {
        Ok(TryLocked::Locked(l)) => l,
        Ok(TryLocked::Busy | TryLocked::Absent) => return Ok(None),
        Err(e) if fscache_dir::gone(&e) => return Ok(None),
        Err(e) => return Err(error::io("lock", cache.abs(&lock_rel), e)),
    };
    if atime(&locked.stat) != v.last_use {
        return Ok(None);
    }
    let size = match cache.read_small(&dir.join(OBJECT_INFO)) {
        Ok(b) => ObjectInfo::parse(&b).size.unwrap_or(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(_) => 0,
    };
    cache
        .remove_entry(&dir)
        .map_err(|e| error::io("remove", cache.abs(&dir), e))?;
    drop(locked);
    Ok(Some(size))
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
    fn plan_always_takes_invalid_entries() {
        let cands = [c("junk", 9, None), c("a", 1, Some(10))];
        let p = plan(&cands, 10, 0, 100);
        assert_eq!(
            p.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["junk"]
        );
    }
}
