//! The cache on special file systems mounted for the test: a full disk
//! (tiny tmpfs) and a `noatime` mount. These need root to mount; without it
//! they say why and return.

use std::path::{Path, PathBuf};
use std::process::Command;

use fscache::{CacheInfo, FsCache, MaxSize, Stored};
use fscache_testkit::names as entries;

/// A tmpfs mounted at a fresh temp directory, unmounted on drop.
struct Mount {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Mount {
    /// Mount a tmpfs with `options`, or `None` (with the reason printed)
    /// where this process may not mount.
    fn tmpfs(options: &str) -> Option<Self> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "fscache-test"])
            .arg(&path)
            .status();
        match status {
            Ok(s) if s.success() => Some(Self { _dir: dir, path }),
            other => {
                eprintln!("skipped: `mount -t tmpfs -o {options}` failed here ({other:?})");
                None
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn accounted(root: &Path) -> u64 {
    std::fs::read_to_string(root.join("cache.size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_nothing_behind() {
    let Some(mnt) = Mount::tmpfs("size=1m") else {
        return;
    };
    let root = mnt.path.join("cache");
    let cache = FsCache::open("fs-test", &root).unwrap();
    cache
        .set_info(CacheInfo {
            maximum_size: Some(MaxSize::Unlimited),
            ..Default::default()
        })
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("big"), vec![1u8; 4 << 20]).unwrap();

    let err = cache.store_tree("big", src.path()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("copy"), "{msg}");
    assert!(msg.contains("big"), "the failing path is named: {msg}");
    // The OS error itself is the source, errno intact, said once.
    let source = std::error::Error::source(&err)
        .map(|s| s.to_string())
        .unwrap_or_default();
    assert!(
        !source.contains("big"),
        "the path is not repeated: {source}"
    );
    assert_eq!(
        err.io_error().and_then(std::io::Error::raw_os_error),
        Some(28),
        "ENOSPC"
    );

    // Nothing partial, nothing charged.
    assert!(entries(&root.join("objects")).is_empty());
    assert!(entries(&root.join("stage")).is_empty());
    assert_eq!(accounted(&root), 0);
    assert!(cache.load("big").unwrap().is_none());

    // Writing into a store guard by hand until the disk is full, then
    // committing: the commit works or fails cleanly, never half.
    let w = cache.store("manual").unwrap();
    let _ = std::fs::write(w.path().join("fill"), vec![2u8; 4 << 20]);
    match w.commit() {
        Ok(Stored::Committed) => assert!(cache.load("manual").unwrap().is_some()),
        Ok(other) => panic!("unexpected outcome {other:?}"),
        Err(e) => {
            assert!(cache.load("manual").unwrap().is_none(), "{e}");
            assert_eq!(accounted(&root), 0);
        }
    }
    let names: Vec<_> = entries(&root.join("objects"))
        .into_iter()
        .filter(|n| n.starts_with("uuid-"))
        .collect();
    assert!(names.is_empty(), "debris: {names:?}");

    // Space freed: the cache works again.
    drop(cache);
    let cache = FsCache::open("fs-test", &root).unwrap();
    let w = cache.store("small").unwrap();
    std::fs::write(w.path().join("f"), b"x").unwrap();
    assert_eq!(w.commit().unwrap(), Stored::Committed);
}

#[test]
fn lru_order_holds_on_a_noatime_mount() {
    let Some(mnt) = Mount::tmpfs("size=16m,noatime") else {
        return;
    };
    let root = mnt.path.join("cache");
    let cache = FsCache::open("fs-test", &root).unwrap();
    // Free only what is needed, so exactly one entry goes.
    cache.set_watermark_percent(100);
    let put = |name: &str| {
        let w = cache.store(name).unwrap();
        std::fs::write(w.path().join("f"), vec![0u8; 8192]).unwrap();
        w.commit().unwrap()
    };
    // Learn what one entry costs here, then leave room for three, not four.
    cache
        .set_info(CacheInfo {
            maximum_size: Some(MaxSize::Unlimited),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(put("a"), Stored::Committed);
    let one = accounted(&root);
    assert!(one >= 8192);
    cache
        .set_info(CacheInfo {
            maximum_size: Some(MaxSize::Bytes(3 * one + one / 2)),
            ..Default::default()
        })
        .unwrap();
    for n in ["b", "c"] {
        assert_eq!(put(n), Stored::Committed);
    }
    // The explicit atime touch of a load works even where the kernel never
    // updates atimes by itself.
    drop(cache.load("a").unwrap().expect("hit"));
    assert_eq!(put("d"), Stored::Committed);
    assert!(cache.load("a").unwrap().is_some(), "a was used last: kept");
    assert!(
        cache.load("b").unwrap().is_none(),
        "b was least recently used"
    );
}
