//! The on-disk layout `FsCache::open` creates, the records a commit
//! writes (`object.info`, `cache.size`) and `cache.info` updates.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Barrier};

use fscache::{CacheInfo, FsCache, MaxSize, Stored};
use serde_json::json;

use crate::cache_util::*;
use crate::inspect::*;

const TAG_SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55\n";

/// The scaffolding of a fresh cache, byte for byte, and nothing else.
#[track_caller]
fn assert_fresh_layout(root: &Path) {
    assert_eq!(
        list(root),
        [
            "CACHEDIR.TAG",
            "cache.info",
            "cache.lock",
            "cache.size",
            "objects",
            "stage"
        ]
    );
    let tag = fs::read_to_string(root.join("CACHEDIR.TAG")).unwrap();
    let comment = tag
        .strip_prefix(TAG_SIGNATURE)
        .unwrap_or_else(|| panic!("CACHEDIR.TAG lacks the signature: {tag:?}"));
    assert!(
        comment.starts_with('#') && comment.ends_with('\n') && comment.matches('\n').count() == 1,
        "CACHEDIR.TAG must be the signature and one comment line: {tag:?}"
    );
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("cache.info")).unwrap()).unwrap();
    // The version, and the app boot id of the boot that created the cache
    // (osbuild's format allows it; osbuild itself writes only the version).
    let id = info["creation-boot-id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{info}"
    );
    assert_eq!(info, json!({"version": 1, "creation-boot-id": id}));
    assert_eq!(fs::read(root.join("cache.lock")).unwrap(), b"");
    assert_eq!(fs::read(root.join("cache.size")).unwrap(), b"0");
    for d in ["objects", "stage"] {
        assert!(root.join(d).is_dir(), "{d}/ is not a directory");
        assert!(list(&root.join(d)).is_empty(), "{d}/ is not empty");
    }
    for f in ["CACHEDIR.TAG", "cache.info", "cache.lock", "cache.size"] {
        assert!(
            fs::symlink_metadata(root.join(f)).unwrap().is_file(),
            "{f} is not a plain file"
        );
    }
}

#[test]
fn cache_open_creates_exact_scaffolding() {
    let (_t, root) = fresh();
    let nested = root.join("a/b");
    let cache = open(&nested);
    assert_eq!(cache.path(), nested);
    assert_fresh_layout(&nested);
    assert_eq!(cache.info().version, Some(1));
    assert_eq!(cache.info().maximum_size, None);
    drop(cache);
    assert_fresh_layout(&nested);
}

#[test]
fn cache_open_twice_and_in_parallel_keeps_everything() {
    let (_t, root) = fresh();
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            let root = root.clone();
            std::thread::spawn(move || {
                barrier.wait();
                FsCache::open(APPID, &root).map(drop)
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().expect("parallel open");
    }
    assert_fresh_layout(&root);

    // A populated cache survives more opens, also while a handle is open.
    let first = open(&root);
    set_max(&first, MaxSize::Unlimited);
    assert_eq!(store_file(&first, "kept", 1, BLOCK), Stored::Committed);
    let snapshot = |root: &Path| {
        ["CACHEDIR.TAG", "cache.info", "cache.size"]
            .map(|f| fs::read(root.join(f)).unwrap())
            .to_vec()
    };
    let before = snapshot(&root);
    let second = open(&root);
    drop(open(&root));
    assert_eq!(snapshot(&root), before);
    assert_eq!(entries(&root), ["kept"]);
    assert_no_debris(&root);
    let e = second.load("kept").unwrap().expect("entry survives reopen");
    assert_eq!(fs::read(e.path().join("f")).unwrap(), content(1, BLOCK));
}

#[test]
fn cache_round_trip_records_size_and_boot_id() {
    let (_t, root) = fresh();
    let cache = open(&root);
    set_max(&cache, MaxSize::Unlimited);
    let boot_id = cache.boot_id().to_owned();
    assert_eq!(boot_id.len(), 32);
    assert!(boot_id
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    assert_eq!(
        boot_id,
        fscache::current_app_boot_id(APPID).unwrap(),
        "the handle's boot id is this boot's app boot id"
    );

    let w = cache.store("rt").unwrap();
    assert!(w.path().is_absolute());
    fs::write(w.path().join("file"), b"payload").unwrap();
    fs::create_dir(w.path().join("sub")).unwrap();
    fs::write(w.path().join("sub/big"), content(7, 3 * BLOCK)).unwrap();
    assert_eq!(w.commit().unwrap(), Stored::Committed);
    assert_no_debris(&root);

    let e = cache.load("rt").unwrap().expect("hit after commit");
    assert!(e.path().is_absolute());
    assert!(e.path().ends_with("objects/rt/data"), "{:?}", e.path());
    assert_eq!(e.path(), root.join("objects/rt/data"));
    assert_eq!(e.name(), "rt");
    assert_eq!(fs::read(e.path().join("file")).unwrap(), b"payload");
    assert_eq!(
        fs::read(e.path().join("sub/big")).unwrap(),
        content(7, 3 * BLOCK)
    );
    let info = object_info(&root, "rt");
    assert_eq!(info["creation-boot-id"], json!(boot_id));
    assert_eq!(info["size"], json!(space(e.path())));
    assert_eq!(fs::read(root.join("objects/rt/object.lock")).unwrap(), b"");
    assert_eq!(
        list(&root.join("objects/rt")),
        ["data", "object.info", "object.lock"]
    );
    drop(e);

    // A second entry, via store_tree; the counter is the sum.
    let src = tmp();
    fs::write(src.path().join("x"), content(9, 2 * BLOCK)).unwrap();
    assert_eq!(
        cache.store_tree("rt2", src.path()).unwrap(),
        Stored::Committed
    );
    let e2 = cache.load("rt2").unwrap().expect("store_tree hit");
    assert_eq!(
        fs::read(e2.path().join("x")).unwrap(),
        content(9, 2 * BLOCK)
    );
    assert_eq!(recorded(&root, "rt2"), space(e2.path()));
    assert_eq!(
        size_file(&root),
        recorded(&root, "rt") + recorded(&root, "rt2")
    );
    assert_books_balance(&root);
}

#[test]
fn cache_set_info_keeps_unknown_keys() {
    let (_t, root) = fresh();
    fs::create_dir_all(&root).unwrap();
    fs::write(
        root.join("cache.info"),
        br#"{"version":1,"future-key":{"a":1}}"#,
    )
    .unwrap();
    let cache = open(&root);
    assert_eq!(cache.info().version, Some(1));
    assert_eq!(cache.info().maximum_size, None);

    set_max(&cache, MaxSize::Unlimited);
    let on_disk = |root: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(root.join("cache.info")).unwrap()).unwrap()
    };
    assert_eq!(
        on_disk(&root),
        json!({"version": 1, "future-key": {"a": 1}, "maximum-size": "unlimited"})
    );
    assert_eq!(
        cache.info(),
        CacheInfo {
            version: Some(1),
            maximum_size: Some(MaxSize::Unlimited),
            creation_boot_id: None
        }
    );

    set_max(&cache, MaxSize::Bytes(12345));
    let v = on_disk(&root);
    assert_eq!(v["maximum-size"], json!(12345));
    assert!(v["maximum-size"].is_u64(), "an integer, not a string");
    assert_eq!(v["future-key"], json!({"a": 1}));
    assert_eq!(cache.info().maximum_size, Some(MaxSize::Bytes(12345)));
    // Another handle reads what was written.
    assert_eq!(open(&root).info(), cache.info());
    assert_no_debris(&root);
}
