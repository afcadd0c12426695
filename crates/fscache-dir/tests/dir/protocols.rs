//! Each protocol step of `CacheDir`, with the races it exists for forced
//! through the test hook at named points.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fscache_dir::{
    CacheDir, HookPoint, LockOptions, Publish, Published, TryLocked, CACHEDIR_TAG,
    CACHEDIR_TAG_CONTENTS, CACHE_INFO, CACHE_LOCK, CACHE_SIZE, OBJECTS, OBJECT_INFO, OBJECT_LOCK,
    STAGE,
};
use fscache_lock::{FileLock, LockKind};

fn fresh() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    (tmp, root)
}

fn open(root: &Path) -> CacheDir {
    let c = CacheDir::open(root).unwrap();
    c.scaffold().unwrap();
    c
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn scaffold_writes_the_format_and_keeps_what_exists() {
    let (_t, root) = fresh();
    let c = open(&root);
    assert_eq!(
        names(&root),
        [
            CACHEDIR_TAG,
            CACHE_INFO,
            CACHE_LOCK,
            CACHE_SIZE,
            OBJECTS,
            STAGE
        ]
    );
    assert_eq!(
        std::fs::read_to_string(root.join(CACHEDIR_TAG)).unwrap(),
        CACHEDIR_TAG_CONTENTS
    );
    assert_eq!(
        std::fs::read(root.join(CACHE_INFO)).unwrap(),
        br#"{"version": 1}"#
    );
    assert_eq!(std::fs::read(root.join(CACHE_SIZE)).unwrap(), b"0");
    assert_eq!(std::fs::read(root.join(CACHE_LOCK)).unwrap(), b"");
    assert!(names(&root.join(OBJECTS)).is_empty());
    std::fs::write(root.join(CACHE_SIZE), b"42").unwrap();
    c.scaffold().unwrap();
    assert_eq!(std::fs::read(root.join(CACHE_SIZE)).unwrap(), b"42");
}

#[test]
fn scaffold_in_parallel_is_safe() {
    let (_t, root) = fresh();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || open(&root))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(names(&root).len(), 6);
    assert!(names(&root.join(OBJECTS)).is_empty(), "no temp debris");
}

#[test]
fn atomic_file_replace_and_no_replace() {
    let (_t, root) = fresh();
    let c = open(&root);
    let obj = Path::new(OBJECTS);
    assert_eq!(
        c.atomic_file(obj, Path::new("f"), b"1", Publish::NoReplace)
            .unwrap(),
        Published::Done
    );
    assert_eq!(
        c.atomic_file(obj, Path::new("f"), b"2", Publish::NoReplace)
            .unwrap(),
        Published::Exists
    );
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"1");
    assert_eq!(
        c.atomic_file(obj, Path::new("f"), b"3", Publish::Replace)
            .unwrap(),
        Published::Done
    );
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"3");
    assert!(names(&root.join(OBJECTS)).is_empty(), "temp names unlinked");
    // A target in a missing directory is an error naming the path, and the
    // temp file is still removed.
    let e = c
        .atomic_file(obj, Path::new("nope/f"), b"x", Publish::NoReplace)
        .unwrap_err();
    assert!(e.to_string().contains("nope/f"), "{e}");
    assert!(names(&root.join(OBJECTS)).is_empty());
}

#[test]
fn atomic_file_from_another_store_into_a_subdirectory() {
    let (_t, root) = fresh();
    let c = open(&root);
    std::fs::create_dir(root.join("sub")).unwrap();
    let stage = Path::new(fscache_dir::STAGE);
    for (how, body) in [(Publish::NoReplace, b"1"), (Publish::Replace, b"2")] {
        assert_eq!(
            c.atomic_file(stage, Path::new("sub/f"), body, how).unwrap(),
            Published::Done
        );
        assert_eq!(std::fs::read(root.join("sub/f")).unwrap(), body);
    }
    assert!(
        names(&root.join(fscache_dir::STAGE)).is_empty(),
        "temp names unlinked"
    );
    assert!(names(&root.join(OBJECTS)).is_empty());
}

#[test]
fn locked_open_retries_when_the_file_is_replaced_before_the_lock() {
    let (_t, root) = fresh();
    let mut c = open(&root);
    let replacer = open(&root);
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    let hook_root = root.clone();
    c.set_hook(Some(Arc::new(move |point: HookPoint, rel: &Path| {
        if point == HookPoint::LockedOpenLock
            && rel == Path::new(CACHE_SIZE)
            && f.fetch_add(1, Ordering::SeqCst) == 0
        {
            // Replace cache.size between our open and our lock.
            replacer
                .atomic_file(
                    Path::new(OBJECTS),
                    Path::new(CACHE_SIZE),
                    b"7",
                    Publish::Replace,
                )
                .unwrap();
            let _ = &hook_root;
        }
    })));
    let locked = c
        .lock(Path::new(CACHE_SIZE), LockOptions::exclusive())
        .unwrap();
    assert_eq!(fired.load(Ordering::SeqCst), 2, "opened twice: the retry");
    // The lock is on the file the path names now.
    let now = std::fs::metadata(root.join(CACHE_SIZE)).unwrap();
    assert_eq!(
        locked.stat.st_ino,
        std::os::unix::fs::MetadataExt::ino(&now)
    );
    assert_eq!(locked.stat.st_size, 1);
}

#[test]
fn locked_open_of_a_file_unlinked_before_the_lock_is_not_found() {
    let (_t, root) = fresh();
    let mut c = open(&root);
    std::fs::write(root.join("victim"), b"").unwrap();
    let r = root.clone();
    c.set_hook(Some(Arc::new(move |point: HookPoint, _rel: &Path| {
        if point == HookPoint::LockedOpenLock {
            let _ = std::fs::remove_file(r.join("victim"));
        }
    })));
    let e = c
        .lock(Path::new("victim"), LockOptions::shared())
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn locked_open_contended_is_none_and_never_creates() {
    let (_t, root) = fresh();
    let c = open(&root);
    let held = c
        .lock(Path::new(CACHE_LOCK), LockOptions::exclusive())
        .unwrap();
    assert!(matches!(
        c.try_lock(Path::new(CACHE_LOCK), LockOptions::shared())
            .unwrap(),
        TryLocked::Busy
    ));
    drop(held);
    assert!(matches!(
        c.try_lock(Path::new(CACHE_LOCK), LockOptions::shared())
            .unwrap(),
        TryLocked::Locked(_)
    ));
    assert!(matches!(
        c.try_lock(Path::new("absent"), LockOptions::shared())
            .unwrap(),
        TryLocked::Absent
    ));
    let e = c
        .lock(Path::new("absent"), LockOptions::shared())
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(!root.join("absent").exists());
}

#[test]
fn locked_open_does_not_follow_symlinks_out_of_the_root() {
    let (t, root) = fresh();
    let c = open(&root);
    std::fs::write(t.path().join("outside"), b"secret").unwrap();
    std::os::unix::fs::symlink(t.path().join("outside"), root.join("link")).unwrap();
    std::os::unix::fs::symlink(t.path(), root.join(OBJECTS).join("dirlink")).unwrap();
    assert!(c
        .try_lock(Path::new("link"), LockOptions::shared())
        .is_err());
    assert!(c
        .try_lock(Path::new("objects/dirlink/outside"), LockOptions::shared())
        .is_err());
    assert!(c.read_small(Path::new("objects/dirlink/outside")).is_err());
}

#[test]
fn anon_dir_retries_when_a_racing_cleanup_removes_it() {
    let (_t, root) = fresh();
    let mut c = open(&root);
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    let r = root.clone();
    c.set_hook(Some(Arc::new(move |point: HookPoint, rel: &Path| {
        if point == HookPoint::AtomicDirLink && f.fetch_add(1, Ordering::SeqCst) == 0 {
            std::fs::remove_dir(r.join(rel)).unwrap();
        }
    })));
    let anon = c.atomic_anon_dir(Path::new(OBJECTS)).unwrap();
    assert_eq!(fired.load(Ordering::SeqCst), 2);
    assert_eq!(names(&root.join(OBJECTS)), vec![anon.name().to_owned()]);
    assert_eq!(names(&root.join(OBJECTS).join(anon.name())), [OBJECT_LOCK]);
    // The lock is held: another open description cannot take it.
    let lock = root.join(OBJECTS).join(anon.name()).join(OBJECT_LOCK);
    let other = std::fs::File::open(&lock).unwrap();
    assert!(FileLock::try_lock(other, LockKind::Shared)
        .unwrap()
        .is_none());
}

#[test]
fn remove_entry_order_and_racing_removal() {
    let (_t, root) = fresh();
    let mut c = open(&root);
    let anon = c.atomic_anon_dir(Path::new(OBJECTS)).unwrap();
    let rel = PathBuf::from(OBJECTS).join(anon.name());
    let abs = root.join(&rel);
    std::fs::create_dir_all(abs.join("data/deep/er")).unwrap();
    std::fs::write(abs.join("data/deep/er/f"), b"x").unwrap();
    std::fs::write(abs.join(OBJECT_INFO), b"{}").unwrap();
    std::os::unix::fs::symlink("/", abs.join("data/root-link")).unwrap();
    // A read-only directory inside data/ must not stop removal.
    std::fs::set_permissions(
        abs.join("data/deep"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let a = abs.clone();
    c.set_hook(Some(Arc::new(move |point: HookPoint, _rel: &Path| {
        if point == HookPoint::RemoveRmdir {
            // By now only the directory itself is left.
            s.lock()
                .unwrap()
                .push(std::fs::read_dir(&a).unwrap().count());
            // A racing cleanup removes it first: tolerated.
            std::fs::remove_dir(&a).unwrap();
        }
    })));
    c.remove_entry(&rel).unwrap();
    assert_eq!(*seen.lock().unwrap(), [0]);
    assert!(!abs.exists());
    // Removing what is gone is fine.
    c.remove_entry(&rel).unwrap();
    drop(anon);
}

#[test]
fn remove_entry_of_a_symlink_removes_the_link_only() {
    let (t, root) = fresh();
    let c = open(&root);
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join(OBJECT_INFO), b"keep").unwrap();
    std::os::unix::fs::symlink(&outside, root.join(OBJECTS).join("x")).unwrap();
    c.remove_entry(Path::new("objects/x")).unwrap();
    assert!(!root.join(OBJECTS).join("x").exists());
    assert_eq!(std::fs::read(outside.join(OBJECT_INFO)).unwrap(), b"keep");
}

#[test]
fn try_lock_answers_locked_busy_or_absent_and_never_creates() {
    let (_t, root) = fresh();
    let c = open(&root);
    let held = c
        .lock(Path::new(CACHE_LOCK), LockOptions::exclusive())
        .unwrap();
    assert!(matches!(
        c.try_lock(Path::new(CACHE_LOCK), LockOptions::shared())
            .unwrap(),
        TryLocked::Busy
    ));
    drop(held);
    let TryLocked::Locked(shared) = c
        .try_lock(Path::new(CACHE_LOCK), LockOptions::shared())
        .unwrap()
    else {
        panic!("uncontended");
    };
    // Shared locks share; an exclusive one is busy while one is held.
    assert!(c
        .try_lock(Path::new(CACHE_LOCK), LockOptions::shared())
        .unwrap()
        .locked()
        .is_some());
    assert!(matches!(
        c.try_lock(Path::new(CACHE_LOCK), LockOptions::exclusive().noatime())
            .unwrap(),
        TryLocked::Busy
    ));
    drop(shared);
    for absent in ["absent", "objects/absent/object.lock", "cache.size/below"] {
        assert!(
            matches!(
                c.try_lock(Path::new(absent), LockOptions::shared())
                    .unwrap(),
                TryLocked::Absent
            ),
            "{absent}"
        );
    }
    assert!(!root.join("absent").exists());
    // The blocking form reports absence as an error.
    let e = c
        .lock(Path::new("absent"), LockOptions::shared())
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn read_write_shared_lock_converts_in_place() {
    let (_t, root) = fresh();
    let c = open(&root);
    let locked = c
        .lock(Path::new(CACHE_LOCK), LockOptions::shared().read_write())
        .unwrap();
    let flags = rustix::fs::fcntl_getfl(locked.lock.get_ref()).unwrap();
    assert!(flags.contains(rustix::fs::OFlags::RDWR));
    let mut lock = locked.lock;
    lock.convert(LockKind::Exclusive).unwrap();
    lock.convert(LockKind::Shared).unwrap();
    let ro = c
        .lock(Path::new(CACHE_LOCK), LockOptions::shared())
        .unwrap();
    let flags = rustix::fs::fcntl_getfl(&ro.lock).unwrap();
    assert!(!flags.contains(rustix::fs::OFlags::RDWR));
}

#[test]
fn noatime_locks_leave_the_atime_alone() {
    let (_t, root) = fresh();
    let c = open(&root);
    let p = root.join(CACHE_LOCK);
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_accessed(old))
        .unwrap();
    let locked = c
        .lock(Path::new(CACHE_LOCK), LockOptions::exclusive().noatime())
        .unwrap();
    let mut buf = [0u8; 1];
    let _ = rustix::io::read(&locked.lock, &mut buf);
    assert_eq!(std::fs::metadata(&p).unwrap().accessed().unwrap(), old);
    let fd = c.open_noatime(Path::new(CACHE_LOCK)).unwrap();
    let _ = rustix::io::read(&fd, &mut buf);
    assert_eq!(std::fs::metadata(&p).unwrap().accessed().unwrap(), old);
}

/// The sweep's claim of a lock-less directory: the descriptor it opened
/// can go stale before it locks (a racing cleanup unlinks the file it
/// created, and a new writer links its own lock file in its place). The
/// claim must then not hold "the lock" of the writer's directory.
#[test]
fn a_claim_never_holds_a_stale_lock_file() {
    let (_t, root) = fresh();
    let mut c = open(&root);
    let dir = root.join(OBJECTS).join("uuid-0");
    std::fs::create_dir(&dir).unwrap();
    let writer: Arc<Mutex<Option<FileLock<std::fs::File>>>> = Arc::default();
    let w = writer.clone();
    let d = dir.clone();
    c.set_hook(Some(Arc::new(move |point: HookPoint, _: &Path| {
        if point == HookPoint::LockedOpenLock && w.lock().unwrap().is_none() {
            // The cleanup that created the file we opened removes it; a
            // writer links its own, held, lock file in and starts filling.
            std::fs::remove_file(d.join(OBJECT_LOCK)).unwrap();
            let f = std::fs::File::create(d.join(OBJECT_LOCK)).unwrap();
            *w.lock().unwrap() = Some(FileLock::lock(f, LockKind::Exclusive).unwrap());
            std::fs::create_dir(d.join("data")).unwrap();
        }
    })));
    let rel = PathBuf::from(OBJECTS).join("uuid-0").join(OBJECT_LOCK);
    assert!(matches!(c.try_claim(&rel).unwrap(), TryLocked::Busy));
    assert!(dir.join("data").is_dir());
    // Once the writer is gone, the claim holds the lock file `rel` names.
    drop(writer.lock().unwrap().take());
    c.set_hook(None);
    let TryLocked::Locked(held) = c.try_claim(&rel).unwrap() else {
        panic!("an unheld lock file is claimed");
    };
    let on_disk = std::fs::metadata(dir.join(OBJECT_LOCK)).unwrap();
    assert_eq!(
        held.stat.st_ino,
        std::os::unix::fs::MetadataExt::ino(&on_disk)
    );
    // A missing lock file is created and claimed; a missing directory is
    // absent.
    std::fs::remove_file(dir.join(OBJECT_LOCK)).unwrap();
    drop(held);
    assert!(matches!(c.try_claim(&rel).unwrap(), TryLocked::Locked(_)));
    assert!(matches!(
        c.try_claim(&PathBuf::from(OBJECTS).join("uuid-1").join(OBJECT_LOCK))
            .unwrap(),
        TryLocked::Absent
    ));
}

/// The load's hot path borrows the first `objects/` descriptor without a
/// lock; once `objects_checked` finds the path naming another directory,
/// every later lock goes through the new one (never the old, replaced
/// directory's).
#[test]
fn try_lock_object_follows_a_replaced_objects_directory() {
    let (_t, root) = fresh();
    let c = open(&root);
    let rel = c"e/object.lock";
    let lock_e = |c: &CacheDir| c.try_lock_object(rel, LockOptions::shared()).unwrap();
    // Held from the first use: absent in the first `objects/`.
    assert!(matches!(lock_e(&c), TryLocked::Absent));
    // Another `objects/` takes its place, holding the entry's lock file.
    std::fs::rename(root.join("objects"), root.join("objects.old")).unwrap();
    std::fs::create_dir_all(root.join("objects/e")).unwrap();
    std::fs::write(root.join("objects/e/object.lock"), b"").unwrap();
    // Until the path is checked, the held descriptor still answers.
    assert!(matches!(lock_e(&c), TryLocked::Absent));
    c.objects_checked().unwrap();
    assert!(lock_e(&c).locked().is_some(), "the new objects/ answers");
    // And keeps answering, from the slow path, after a second swap back.
    std::fs::remove_dir_all(root.join("objects")).unwrap();
    std::fs::rename(root.join("objects.old"), root.join("objects")).unwrap();
    c.objects_checked().unwrap();
    assert!(matches!(lock_e(&c), TryLocked::Absent));
}
