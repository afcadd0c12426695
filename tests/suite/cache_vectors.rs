//! Compatibility with osbuild: its app boot ids, and a cache directory
//! osbuild wrote (`tests/data/osbuild-cache.tar`) opened, read and updated.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use fscache::{CacheInfo, MaxSize, Stored};
use serde_json::json;

use crate::cache_util::*;
use crate::inspect::*;

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file)
}

#[test]
fn cache_app_boot_id_matches_osbuild() {
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(data("boot-id.json")).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 10, "too few cases: {}", cases.len());
    for c in cases {
        let kernel = c["kernel_boot_id"].as_str().unwrap();
        let appid = c["appid"].as_str().unwrap();
        let want = c["app_boot_id"].as_str().unwrap();
        assert_eq!(
            fscache::app_boot_id(kernel, appid),
            want,
            "kernel {kernel:?}, appid {appid:?}"
        );
    }
}

/// Every file under `root` (relative path → contents; symlinks as their
/// target, directories as empty).
fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, p: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let m = fs::symlink_metadata(p).unwrap();
        if m.file_type().is_symlink() {
            out.push((
                rel,
                fs::read_link(p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            ));
        } else if m.is_dir() {
            out.push((format!("{rel}/"), Vec::new()));
            for e in fs::read_dir(p).unwrap() {
                walk(root, &e.unwrap().path(), out);
            }
        } else {
            out.push((rel, fs::read(p).unwrap()));
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn cache_osbuild_cache_opens_loads_and_updates() {
    let t = tmp();
    let status = Command::new("tar")
        .arg("-xpf")
        .arg(data("osbuild-cache.tar"))
        .arg("-C")
        .arg(t.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "tar failed: {status}");
    let root = t.path().join("osbuild-cache");
    let osbuild_files: Vec<_> = snapshot(&root)
        .into_iter()
        .filter(|(p, _)| p != "cache.size" && p != "cache.info")
        .collect();
    let osbuild_size = size_file(&root);
    assert_eq!(
        osbuild_size,
        recorded_sum(&root),
        "osbuild's own books balance"
    );

    let cache = open(&root);
    assert_eq!(
        cache.info(),
        CacheInfo {
            version: Some(1),
            maximum_size: Some(MaxSize::Bytes(10 * 1024 * 1024)),
            creation_boot_id: None
        }
    );

    let plain = cache.load("plain").unwrap().expect("plain");
    assert_eq!(
        fs::read(plain.path().join("hello.txt")).unwrap(),
        b"hello from osbuild\n"
    );
    let tree = cache.load("tree").unwrap().expect("tree");
    let a = tree.path().join("sub/a.txt");
    assert_eq!(fs::read(&a).unwrap(), b"a\n");
    assert_eq!(
        fs::metadata(&a).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let want: Vec<u8> = (0..=255u8).collect::<Vec<_>>().repeat(16);
    assert_eq!(
        fs::read(tree.path().join("sub/deeper/b.bin")).unwrap(),
        want
    );
    assert_eq!(
        fs::read_link(tree.path().join("link-to-a")).unwrap(),
        Path::new("sub/a.txt")
    );
    let empty = cache.load("empty").unwrap().expect("empty");
    assert!(empty.path().is_dir());
    assert!(list(empty.path()).is_empty());
    assert!(cache.load("missing").unwrap().is_none());
    drop((plain, tree, empty));

    // Update the info: osbuild's unknown key survives.
    cache
        .set_info(CacheInfo {
            maximum_size: Some(MaxSize::Bytes(20 * 1024 * 1024)),
            ..Default::default()
        })
        .unwrap();
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("cache.info")).unwrap()).unwrap();
    assert_eq!(
        info,
        json!({"version": 1, "maximum-size": 20 * 1024 * 1024, "future-key": {"kept": true}})
    );

    // Store next to osbuild's entries: the counter goes on from osbuild's.
    assert_eq!(store_file(&cache, "ours", 1, 2 * BLOCK), Stored::Committed);
    let ours = recorded(&root, "ours");
    assert_eq!(size_file(&root), osbuild_size + ours);
    assert_books_balance(&root);
    assert_eq!(entries(&root), ["empty", "ours", "plain", "tree"]);
    assert_no_debris(&root);
    drop(cache);

    // Everything osbuild wrote is still there, unchanged (the lock files'
    // atimes changed; their contents did not).
    let now = snapshot(&root);
    for f in &osbuild_files {
        assert!(now.contains(f), "osbuild's {:?} changed or vanished", f.0);
    }
}
