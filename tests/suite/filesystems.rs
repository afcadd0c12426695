//! The cache on special file systems mounted for the test: a full disk
//! (tiny tmpfs), a `noatime` mount, and btrfs and xfs loop images (reflink,
//! LRU and durable commits on each). These need root to mount, and the
//! images `mkfs.btrfs`/`mkfs.xfs` (`cargo xtask ci` installs them); without
//! them they say why and return.

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

impl Mount {
    /// A loop image of `fstype` (`btrfs`, `xfs`), made and mounted at a
    /// fresh temp directory; `None` (with the reason printed) where this
    /// process may not mount or the mkfs tool is missing.
    fn image(fstype: &str) -> Option<Self> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting a {fstype} image needs root");
            return None;
        }
        let mkfs = format!("mkfs.{fstype}");
        let have = Command::new(&mkfs)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            eprintln!("skipped: {mkfs} is missing (cargo xtask ci installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        // Sparse: only what the file system writes takes space. xfs needs
        // at least 300 MB.
        std::fs::File::create(&image)
            .unwrap()
            .set_len(320 << 20)
            .unwrap();
        let made = Command::new(&mkfs)
            .args(if fstype == "xfs" {
                &["-q", "-f"][..]
            } else {
                &["-q"][..]
            })
            .arg(&image)
            .status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: {mkfs} failed here");
            return None;
        }
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&path)
            .status();
        match mounted {
            Ok(s) if s.success() => Some(Self { _dir: dir, path }),
            _ => {
                eprintln!("skipped: mounting a {fstype} loop image failed here (no loop devices?)");
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

/// Reflink, LRU order and durable commits on a real copy-on-write or
/// journaling file system.
fn reflink_lru_and_durability_on(fstype: &str) {
    let Some(mnt) = Mount::image(fstype) else {
        return;
    };
    // Reflink: a copy within the file system shares the source's extents.
    let src = mnt.path.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("big"), vec![7u8; 1 << 20]).unwrap();
    std::fs::write(src.join("sub/small"), vec![1u8; 64 << 10]).unwrap();
    // A sparse file (64 MiB, two 64 KiB data ranges) and xattrs.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(src.join("sparse")).unwrap();
        for at in [0u64, 32 << 20] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&[9u8; 64 << 10]).unwrap();
        }
        f.set_len(64 << 20).unwrap();
    }
    let user_x = rustix::fs::setxattr(
        src.join("big"),
        "user.origin",
        b"loop image",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    let trusted_x = rustix::fs::setxattr(
        src.join("sub"),
        "trusted.t",
        b"\0\x01",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    let dst = mnt.path.join("dst");
    std::fs::create_dir(&dst).unwrap();
    let dst_dir = cap_std::fs::Dir::open_ambient_dir(&dst, cap_std::ambient_authority()).unwrap();
    let stats = fscache_dir::copy::copy_tree_into(&src, &dst_dir, &mut |_| Ok(())).unwrap();
    assert_eq!(
        (stats.files, stats.reflinked),
        (3, 3),
        "{fstype}: {stats:?}"
    );
    // The sparse file: cloned with its holes, allocating what the source
    // does; the xattrs kept on the file and the directory.
    let blocks = |p: &Path| std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(p).unwrap());
    assert_eq!(
        blocks(&dst.join("sparse")),
        blocks(&src.join("sparse")),
        "{fstype}"
    );
    assert!(
        blocks(&dst.join("sparse")) * 512 < 1 << 20,
        "{fstype}: holes filled"
    );
    let xattrs = |p: &Path| fscache_dir::meta::path_xattrs(p).unwrap();
    assert_eq!(
        xattrs(&dst.join("big")),
        xattrs(&src.join("big")),
        "{fstype}"
    );
    assert_eq!(
        xattrs(&dst.join("sub")),
        xattrs(&src.join("sub")),
        "{fstype}"
    );
    assert!(
        user_x && (trusted_x || !rustix::process::geteuid().is_root()),
        "{fstype}: xattrs refused"
    );
    // Without reflink (the data ranges copied, holes kept): a copy to
    // another file system, the test's temporary directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let other =
        cap_std::fs::Dir::open_ambient_dir(elsewhere.path(), cap_std::ambient_authority()).unwrap();
    let again =
        fscache_dir::copy::copy_tree_into(&src.join("sparse"), &other, &mut |_| Ok(())).unwrap();
    let copied = elsewhere.path().join("sparse");
    if again.sparse == 1 {
        assert!(blocks(&copied) * 512 < 1 << 20, "{fstype}: holes filled");
    }
    assert_eq!(std::fs::metadata(&copied).unwrap().len(), 64 << 20);
    // Seen from outside: filefrag reports the extents as shared.
    if let Ok(out) = Command::new("filefrag")
        .arg("-v")
        .arg(dst.join("big"))
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("shared"),
            "{fstype}: extents not shared:\n{text}"
        );
    }
    assert_eq!(std::fs::read(dst.join("big")).unwrap(), vec![7u8; 1 << 20]);

    // store_tree on it, durable commits, and LRU order.
    let root = mnt.path.join("cache");
    let cache = FsCache::builder("fs-test")
        .max_size_if_unset(MaxSize::Unlimited)
        .durability(fscache::Durability::Committed)
        .open(&root)
        .unwrap();
    assert_eq!(cache.store_tree("tree", &src).unwrap(), Stored::Committed);
    let e = cache.load("tree").unwrap().unwrap();
    assert_eq!(
        std::fs::read(e.path().join("sub/small")).unwrap().len(),
        64 << 10
    );
    drop(e);
    assert!(matches!(
        cache.remove("tree"),
        Ok(fscache::Removed::Removed { .. })
    ));
    cache.set_watermark_percent(100);
    let put = |name: &str| {
        let w = cache.store(name).unwrap();
        std::fs::write(w.path().join("f"), vec![0u8; 8192]).unwrap();
        w.commit().unwrap()
    };
    assert_eq!(put("a"), Stored::Committed);
    let before = accounted(&root);
    assert_eq!(put("b"), Stored::Committed);
    let one = accounted(&root) - before;
    cache
        .set_info(CacheInfo {
            maximum_size: Some(MaxSize::Bytes(before + 2 * one + one / 2)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(put("c"), Stored::Committed);
    drop(cache.load("a").unwrap().expect("hit"));
    assert_eq!(put("d"), Stored::Committed);
    assert!(
        cache.load("a").unwrap().is_some(),
        "{fstype}: a was used last"
    );
    assert!(
        cache.load("b").unwrap().is_none(),
        "{fstype}: b was least recently used"
    );
}

#[test]
fn reflink_lru_and_durability_on_btrfs() {
    reflink_lru_and_durability_on("btrfs");
}

#[test]
fn reflink_lru_and_durability_on_xfs() {
    reflink_lru_and_durability_on("xfs");
}
