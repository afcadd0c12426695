//! Sweeping crash debris: unlocked `uuid-*` entries and temporary files.

use std::path::{Path, PathBuf};

use fscache_dir::stat::{inode, Inode};
use fscache_dir::{
    gone, CacheDir, LockOptions, TryLocked, OBJECTS, OBJECT_INFO, OBJECT_LOCK, RESERVED_PREFIX,
    STAGE,
};
use rustix::fs::FileType;

use crate::error::{self, Result};
use crate::lru::retire;

/// What a sweep removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// `uuid-*` names removed from `objects/` and `stage/`.
    pub removed: Vec<String>,
    /// Bytes uncharged: what the `object.info` of a half-committed entry
    /// (a crash between the charge and the rename) recorded.
    pub freed: u64,
}

/// Remove the `uuid-*` debris of crashed writers from `objects/` and
/// `stage/`: a directory whose `object.lock` nobody holds, and a temporary
/// file nobody holds. Live writers hold their locks, so they are never
/// disturbed. Named directories in `objects/` without an `object.info` (a
/// removal that crashed or failed half-way, or an outside deleter) or
/// without an `object.lock` (an outside deleter) are removed too, once
/// nobody holds them; the latter's recorded size is uncharged.
///
/// A debris directory without a lock file gets one created (`O_CREAT`)
/// before it is locked, as osbuild does: a writer that was about to link its
/// own lock file in then fails with `EEXIST` and retries under a new name.
/// A half-committed entry (its `object.info` written, the crash before the
/// rename) is uncharged by what that file recorded.
///
/// # Errors
///
/// Listing a directory or a removal failed.
pub fn sweep(cache: &CacheDir) -> Result<Swept> {
    let mut out = Swept::default();
    for parent in [OBJECTS, STAGE] {
        let parent = Path::new(parent);
        let list = match cache.list_dir(parent) {
            Ok(l) => l,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(error::io("read directory", cache.abs(parent), e)),
        };
        for entry in list {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let rel = parent.join(name);
            if !name.starts_with(RESERVED_PREFIX) {
                // A named entry without `object.info` is never valid (it is
                // written before the rename and unlinked first on removal):
                // the debris of a removal that crashed or failed half-way,
                // or of a deleter outside the cache's locks. One without
                // `object.lock` can only be the latter: no load or
                // eviction can reach it again.
                if parent == Path::new(OBJECTS) {
                    if let Some(kind) = invalid_dir(cache, &rel) {
                        if sweep_dir(cache, &rel, &mut out.freed, kind)? {
                            out.removed.push(name.to_owned());
                        }
                    }
                }
                continue;
            }
            let Ok(st) = cache.stat(&rel) else { continue };
            let removed = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                sweep_dir(cache, &rel, &mut out.freed, Debris::Anonymous)?
            } else {
                sweep_file(cache, &rel)?
            };
            if removed {
                out.removed.push(name.to_owned());
            }
        }
    }
    Ok(out)
}

/// Whether the named `objects/` directory `rel` is no valid entry, and
/// which kind of debris it is: no `object.info` ([`Debris::Named`]), or
/// `object.info` without `object.lock` ([`Debris::Unlocked`]). Two `stat`s
/// for a valid entry.
fn invalid_dir(cache: &CacheDir, rel: &Path) -> Option<Debris> {
    let absent = |file: &str| matches!(cache.stat(&rel.join(file)), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    let no_info = absent(OBJECT_INFO);
    if !no_info && !absent(OBJECT_LOCK) {
        return None;
    }
    let st = cache.stat(rel).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return None;
    }
    Some(if no_info {
        Debris::Named
    } else {
        Debris::Unlocked(inode(&st))
    })
}

/// Which kind of directory a sweep found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Debris {
    /// `uuid-*`: an entry being stored, or its crash debris.
    Anonymous,
    /// A named directory without `object.info`: a removal that crashed
    /// (or one in progress), or an outside deleter.
    Named,
    /// A named directory with `object.info` but without `object.lock`
    /// (this inode when looked at): deleted from outside.
    Unlocked(Inode),
}

fn sweep_dir(cache: &CacheDir, rel: &Path, freed: &mut u64, kind: Debris) -> Result<bool> {
    let lock_rel: PathBuf = rel.join(OBJECT_LOCK);
    // The claim checks that the lock it holds is the one `rel` names now: a
    // stale one (unlinked by a racing cleanup, its directory since reused
    // by a live writer) would let us delete that writer's files.
    let lock = match cache
        .try_claim(&lock_rel)
        .map_err(|e| error::io("lock", cache.abs(&lock_rel), e))?
    {
        TryLocked::Locked(lock) => lock,
        TryLocked::Busy | TryLocked::Absent => return Ok(false),
    };
    if kind == Debris::Named && cache.stat(&rel.join(OBJECT_INFO)).is_ok() {
        // Between our look and our lock, a writer renamed its finished
        // entry over the emptied directory (rename(2) replaces an empty
        // directory): this is a committed entry now, not debris. Removing
        // it would lose it and leave its charge on the books.
        return Ok(false);
    }
    if let Debris::Unlocked(seen) = kind {
        // The lock we claimed is one we created in the directory we saw,
        // unless that one was removed meanwhile and a writer's finished
        // entry took its name: then it is not ours to remove.
        if !cache.stat(rel).is_ok_and(|st| inode(&st) == seen) {
            return Ok(false);
        }
    }
    // A writer that died between its charge and its `object.info` left
    // a charge nothing records: only a recount can tell, so an anonymous
    // directory in `objects/` without `object.info` marks the books
    // suspect (a stage is never charged).
    if kind == Debris::Anonymous
        && rel.starts_with(OBJECTS)
        && matches!(cache.stat(&rel.join(OBJECT_INFO)), Err(ref e) if gone(e))
    {
        crate::books::mark_suspect(cache)?;
    }
    // A named directory without `object.info` was a committed entry, so
    // charged: deleted from outside, or a removal that died before its
    // uncharge. What it was charged is unknown: a recount tells.
    if kind == Debris::Named {
        crate::books::mark_suspect(cache)?;
    }
    // A half-committed entry's charge is undone the moment it stops
    // counting, before the rest is removed.
    let retired = retire(cache, rel)?;
    *freed = freed.saturating_add(retired.freed);
    drop(lock);
    Ok(retired.removed)
}

fn sweep_file(cache: &CacheDir, rel: &Path) -> Result<bool> {
    // Best effort, as debris goes: a temp file we cannot open is left.
    let lock = match cache.try_lock(rel, LockOptions::exclusive()) {
        Ok(TryLocked::Locked(lock)) => lock,
        Ok(TryLocked::Busy | TryLocked::Absent) | Err(_) => return Ok(false),
    };
    match fscache_dir::retry_io(|| cache.dir().remove_file(rel)) {
        Err(e) if !gone(&e) => return Err(error::io("remove", cache.abs(rel), e)),
        _ => {}
    }
    drop(lock);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter;

    #[test]
    fn removes_unlocked_debris_and_keeps_live_writers() {
        let tmp = tempfile::tempdir().unwrap();
        let c = CacheDir::open(&tmp.path().join("c")).unwrap();
        c.scaffold().unwrap();
        let root = c.root().to_owned();
        // Live writer: held lock.
        let live = c.atomic_anon_dir(Path::new(OBJECTS)).unwrap();
        // Crash debris: a released anon dir with a half-committed info.
        let dead = c.atomic_anon_dir(Path::new(OBJECTS)).unwrap();
        std::fs::write(
            root.join(OBJECTS).join(dead.name()).join(OBJECT_INFO),
            br#"{"size": 10}"#,
        )
        .unwrap();
        let dead_name = dead.name().to_owned();
        dead.keep();
        counter::charge(&c, 10, crate::MaxSize::Unlimited).unwrap();
        // A lock-less anon dir in stage/ and a stray temp file.
        std::fs::create_dir(root.join(STAGE).join("uuid-0")).unwrap();
        std::fs::write(root.join(OBJECTS).join("uuid-f"), b"").unwrap();
        // A committed entry is never touched; a lock-less named dir is
        // debris of a crashed removal.
        std::fs::create_dir(root.join(OBJECTS).join("keep")).unwrap();
        std::fs::write(root.join(OBJECTS).join("keep").join(OBJECT_LOCK), b"").unwrap();
        std::fs::write(root.join(OBJECTS).join("keep").join(OBJECT_INFO), b"{}").unwrap();
        std::fs::create_dir(root.join(OBJECTS).join("half-removed")).unwrap();
        // A removal that failed after unlinking object.info: the lock file
        // and some data are left.
        let failed = root.join(OBJECTS).join("failed-removal");
        fscache_dir::retry_io(|| std::fs::create_dir_all(failed.join("data"))).unwrap();
        std::fs::write(failed.join(OBJECT_LOCK), b"").unwrap();

        let mut swept = sweep(&c).unwrap();
        swept.removed.sort();
        let mut expect = vec![
            dead_name,
            "failed-removal".to_owned(),
            "half-removed".to_owned(),
            "uuid-0".to_owned(),
            "uuid-f".to_owned(),
        ];
        expect.sort();
        assert_eq!(swept.removed, expect);
        assert_eq!(swept.freed, 10);
        assert_eq!(counter::read_size(&c).unwrap(), 0);
        assert!(root
            .join(OBJECTS)
            .join(live.name())
            .join(OBJECT_LOCK)
            .exists());
        assert!(root.join(OBJECTS).join("keep").exists());
    }

    #[test]
    fn a_committed_entry_that_replaced_an_emptied_directory_is_kept() {
        // The race: the sweep saw `objects/n` without a lock file (a
        // removal in progress), then a writer renamed its entry over the
        // emptied directory. Once the sweep holds the new entry's lock, it
        // must see a committed entry, not debris.
        let tmp = tempfile::tempdir().unwrap();
        let c = CacheDir::open(&tmp.path().join("c")).unwrap();
        c.scaffold().unwrap();
        let n = c.root().join(OBJECTS).join("n");
        fscache_dir::retry_io(|| std::fs::create_dir_all(n.join("data"))).unwrap();
        std::fs::write(n.join(OBJECT_LOCK), b"").unwrap();
        std::fs::write(n.join(OBJECT_INFO), br#"{"size": 4096}"#).unwrap();
        counter::charge(&c, 4096, crate::MaxSize::Unlimited).unwrap();
        let mut freed = 0;
        let rel = Path::new(OBJECTS).join("n");
        assert!(!sweep_dir(&c, &rel, &mut freed, Debris::Named).unwrap());
        assert_eq!(freed, 0);
        assert!(n.join(OBJECT_INFO).exists() && n.join("data").exists());
        assert_eq!(counter::read_size(&c).unwrap(), 4096);
    }

    #[test]
    fn a_live_writer_in_a_directory_a_racing_cleanup_emptied_is_kept() {
        // The 1-hour stress failure: two sweeps met a lock-less anonymous
        // directory. The first created its lock file, removed it, and was
        // about to remove the directory; a writer then linked its own lock
        // file in and filled `data/`. The second sweep had opened the
        // first one's lock file before it was unlinked: locking that stale
        // descriptor must not let it delete the writer's files.
        use fscache_lock::{FileLock, LockKind};
        use std::sync::{Arc, Mutex};

        let tmp = tempfile::tempdir().unwrap();
        let mut c = CacheDir::open(&tmp.path().join("c")).unwrap();
        c.scaffold().unwrap();
        let dir = c.root().join(OBJECTS).join("uuid-0");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(OBJECT_LOCK), b"").unwrap();
        let writer: Arc<Mutex<Option<FileLock<std::fs::File>>>> = Arc::default();
        let w = writer.clone();
        let d = dir.clone();
        c.set_hook(Some(Arc::new(move |point, _: &Path| {
            if point == fscache_dir::HookPoint::LockedOpenLock && w.lock().unwrap().is_none() {
                std::fs::remove_file(d.join(OBJECT_LOCK)).unwrap();
                let f = std::fs::File::create(d.join(OBJECT_LOCK)).unwrap();
                *w.lock().unwrap() = Some(FileLock::lock(f, LockKind::Exclusive).unwrap());
                std::fs::create_dir(d.join("data")).unwrap();
                std::fs::write(d.join("data/f"), b"the writer's").unwrap();
            }
        })));
        let swept = sweep(&c).unwrap();
        assert!(swept.removed.is_empty(), "{swept:?}");
        assert_eq!(std::fs::read(dir.join("data/f")).unwrap(), b"the writer's");
        // The writer gone, its directory is debris.
        drop(writer.lock().unwrap().take());
        c.set_hook(None);
        assert_eq!(sweep(&c).unwrap().removed, ["uuid-0"]);
        assert!(!dir.exists());
    }
}
