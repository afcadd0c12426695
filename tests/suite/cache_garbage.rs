//! Garbage on disk: corrupt protocol files, broken and hostile entries.
//! Every case ends in a clear answer, never a panic or an escape.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use fscache::{Error, FsCache, MaxSize, Stored};

use crate::cache_util::*;
use crate::inspect::*;

/// A scaffolded cache whose `cache.info` is then replaced by `info`.
fn with_info(info: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let (t, root) = fresh();
    drop(open(&root));
    fs::write(root.join("cache.info"), info).unwrap();
    (t, root)
}

#[test]
fn cache_info_not_json_is_corrupt() {
    for garbage in [&b"{not json"[..], b"", b"\xff\xfe", b"{\"version\": 1"] {
        let (_t, root) = with_info(garbage);
        match FsCache::open(APPID, &root) {
            Err(e @ Error::Corrupt { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&root.join("cache.info").display().to_string()),
                    "message lacks the path: {msg}"
                );
            }
            other => panic!("{garbage:?}: expected Corrupt, got {other:?}"),
        }
    }
}

/// A cache whose info this implementation cannot use: loads miss, stores
/// act as a stage and report `Incompatible`, nothing is left behind.
#[track_caller]
fn assert_incompatible(root: &Path) {
    let cache = open(root);
    assert!(!cache.info().is_compatible());
    // A committed entry written by someone else is not handed out.
    fs::create_dir_all(root.join("objects/x/data")).unwrap();
    fs::write(root.join("objects/x/object.lock"), b"").unwrap();
    fs::write(root.join("objects/x/object.info"), br#"{"size": 0}"#).unwrap();
    assert!(cache.load("x").unwrap().is_none());
    let w = cache.store("y").unwrap();
    fs::write(w.path().join("f"), b"data").unwrap();
    assert!(w.path().starts_with(root.join("stage")), "{:?}", w.path());
    assert_eq!(w.commit().unwrap(), Stored::Incompatible);
    assert_no_debris(root);
    assert_eq!(entries(root), ["x"]);
    assert_eq!(fs::read(root.join("cache.size")).unwrap(), b"0");
    let src = tmp();
    assert_eq!(
        cache.store_tree("z", src.path()).unwrap(),
        Stored::Incompatible
    );
    assert_no_debris(root);
}

#[test]
fn cache_info_wrong_types_read_as_unset() {
    for info in [
        &br#"[1, 2]"#[..],
        br#"{"version": "1", "maximum-size": 1.5}"#,
        br#"{"maximum-size": "unlimited"}"#,
        br#"7"#,
        br#"null"#,
    ] {
        let (_t, root) = with_info(info);
        let cache = open(&root);
        let got = cache.info();
        assert_eq!(got.version, None, "{}", String::from_utf8_lossy(info));
        if info != br#"{"maximum-size": "unlimited"}"# {
            assert_eq!(got, fscache::CacheInfo::default());
        }
        drop(cache);
        assert_incompatible(&root);
    }
}

#[test]
fn cache_info_other_version_is_incompatible() {
    let (_t, root) = with_info(br#"{"version": 2, "maximum-size": "unlimited"}"#);
    assert_eq!(open(&root).info().version, Some(2));
    assert_incompatible(&root);
    // The file is left as it was.
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("cache.info")).unwrap()).unwrap();
    assert_eq!(v["version"], 2);
}

#[test]
fn cache_size_garbage_is_rebuilt() {
    for (what, garbage) in [
        ("not a number", Some(&b"many"[..])),
        ("negative", Some(b"-4096")),
        ("a float", Some(b"1.5")),
        ("empty", Some(b"")),
        ("missing", None),
    ] {
        let (_t, root) = fresh();
        let cache = open(&root);
        set_max(&cache, MaxSize::Unlimited);
        assert_eq!(store_file(&cache, "old", 1, 2 * BLOCK), Stored::Committed);
        match garbage {
            Some(g) => fs::write(root.join("cache.size"), g).unwrap(),
            None => fs::remove_file(root.join("cache.size")).unwrap(),
        }
        assert_eq!(
            store_file(&cache, "new", 2, BLOCK),
            Stored::Committed,
            "{what}"
        );
        assert_eq!(
            size_file(&root),
            recorded(&root, "old") + recorded(&root, "new"),
            "{what}: counter rebuilt from object.info"
        );
        assert_books_balance(&root);
        assert_no_debris(&root);
        assert!(cache.load("old").unwrap().is_some());
    }
}

#[test]
fn cache_entry_without_object_info_misses() {
    let (_t, root) = fresh();
    let cache = open(&root);
    set_max(&cache, MaxSize::Unlimited);
    assert_eq!(store_file(&cache, "x", 1, BLOCK), Stored::Committed);
    fs::remove_file(root.join("objects/x/object.info")).unwrap();
    assert!(cache.load("x").unwrap().is_none());
    // A store under the name meets the leftover directory: no entry (a
    // removal that failed or crashed half-way), so it is swept and the
    // store takes the name instead of being refused until some sweep.
    assert_eq!(store_file(&cache, "x", 2, BLOCK), Stored::Committed);
    assert!(cache.load("x").unwrap().is_some());
    assert_eq!(entries(&root), ["x"]);
    assert_no_debris(&root);
}

#[test]
fn cache_garbage_object_info_hits_and_is_evicted_first() {
    let (_t, root) = fresh();
    let cache = open(&root);
    let one = entry_space(BLOCK);
    set_max(&cache, MaxSize::Bytes(3 * one + one / 2));
    assert_eq!(store_file(&cache, "junk", 1, BLOCK), Stored::Committed);
    tick();
    assert_eq!(store_file(&cache, "a", 2, BLOCK), Stored::Committed);
    tick();
    assert_eq!(store_file(&cache, "b", 3, BLOCK), Stored::Committed);
    tick();
    fs::write(root.join("objects/junk/object.info"), b"\x00garbage{").unwrap();
    // load only needs object.info to exist.
    let e = cache
        .load("junk")
        .unwrap()
        .expect("garbage object.info still hits");
    assert_eq!(fs::read(e.path().join("f")).unwrap(), content(1, BLOCK));
    drop(e);
    tick();
    drop(cache.load("a").unwrap().unwrap());
    drop(cache.load("b").unwrap().unwrap());
    tick();
    // Full: the next store evicts; the invalid entry goes (its size is
    // unknown), whatever its age.
    assert_eq!(store_file(&cache, "c", 4, BLOCK), Stored::Committed);
    assert_eq!(store_file(&cache, "d", 5, BLOCK), Stored::Committed);
    let left = entries(&root);
    assert!(!left.contains(&"junk".to_owned()), "{left:?}");
    assert!(left.contains(&"d".to_owned()), "{left:?}");
    assert_no_debris(&root);
}

#[test]
fn cache_symlinked_entry_does_not_escape() {
    let (_t, root) = fresh();
    let outside = tmp();
    // A complete entry outside the cache.
    fs::create_dir_all(outside.path().join("data")).unwrap();
    fs::write(outside.path().join("data/secret"), b"secret").unwrap();
    fs::write(outside.path().join("object.lock"), b"").unwrap();
    fs::write(outside.path().join("object.info"), br#"{"size": 4096}"#).unwrap();
    let snapshot = |p: &Path| {
        (
            list(p),
            list(&p.join("data")),
            fs::read(p.join("data/secret")).unwrap(),
            fs::read(p.join("object.info")).unwrap(),
        )
    };
    let before = snapshot(outside.path());

    let cache = open(&root);
    let one = entry_space(BLOCK);
    set_max(&cache, MaxSize::Bytes(2 * one + one / 2));
    symlink(outside.path(), root.join("objects/evil")).unwrap();
    assert!(
        cache.load("evil").unwrap().is_none(),
        "load followed a symlink out"
    );
    // A store of the name cannot replace or follow it.
    let outcome = store_file(&cache, "evil", 1, BLOCK);
    assert_eq!(outcome, Stored::Exists);
    assert_eq!(snapshot(outside.path()), before);
    // Eviction runs with the symlink present: no escape, no error.
    for (i, n) in ["a", "b", "c", "d"].into_iter().enumerate() {
        assert_eq!(
            store_file(&cache, n, i as u64, BLOCK),
            Stored::Committed,
            "{n}"
        );
        tick();
    }
    assert_eq!(snapshot(outside.path()), before);
    assert!(cache.load("evil").unwrap().is_none());
    assert_no_debris(&root);
    assert_books_balance(&root);
}

#[test]
fn cache_plain_file_entry_misses() {
    let (_t, root) = fresh();
    let cache = open(&root);
    set_max(&cache, MaxSize::Unlimited);
    fs::write(root.join("objects/file"), b"not a dir").unwrap();
    assert!(cache.load("file").unwrap().is_none());
    assert_eq!(store_file(&cache, "file", 1, BLOCK), Stored::Exists);
    assert_eq!(fs::read(root.join("objects/file")).unwrap(), b"not a dir");
    assert_no_debris(&root);
    assert_books_balance(&root);
    // A symlink where object.lock should be is not followed either.
    let (_t2, root2) = fresh();
    let cache2 = open(&root2);
    set_max(&cache2, MaxSize::Unlimited);
    fs::create_dir_all(root2.join("objects/l/data")).unwrap();
    fs::write(root2.join("real.lock"), b"").unwrap();
    symlink(root2.join("real.lock"), root2.join("objects/l/object.lock")).unwrap();
    fs::write(root2.join("objects/l/object.info"), br#"{"size": 0}"#).unwrap();
    assert!(cache2.load("l").unwrap().is_none());
}
