//! The one on-disk inspection of a cache for the tests of this binary:
//! the books (`cache.size`, `object.info`), the entries, debris, space
//! and the content digests of `fscache-test-helper`.
//!
//! "Debris" means one thing here: what a finished operation must not
//! leave behind, the `uuid-*` names in `objects/` and every name in
//! `stage/` ([`debris`]). A named entry without a valid `object.info` (an
//! interrupted removal's remains) is not debris but an invalid entry
//! ([`assert_entries_intact`] returns them).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use fscache_lock::{FileLock, LockKind};

/// The value of `cache.size` (panics if it is not a non-negative integer).
pub fn size_file(root: &Path) -> u64 {
    let text = fs::read_to_string(root.join("cache.size")).expect("read cache.size");
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Number(n)) if n.is_u64() => n.as_u64().unwrap(),
        _ => panic!("cache.size is not a non-negative JSON integer: {text:?}"),
    }
}

/// The committed entries in `objects/` (everything but `uuid-*`), sorted.
pub fn entries(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = list(&root.join("objects"))
        .into_iter()
        .filter(|n| !n.starts_with("uuid-"))
        .collect();
    out.sort();
    out
}

/// The names in `dir` (empty if it cannot be read).
pub fn list(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The `uuid-*` names in `objects/` and everything in `stage/`: what a
/// finished operation must not leave behind.
pub fn debris(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = list(&root.join("objects"))
        .into_iter()
        .filter(|n| n.starts_with("uuid-"))
        .map(|n| format!("objects/{n}"))
        .collect();
    out.extend(
        list(&root.join("stage"))
            .into_iter()
            .map(|n| format!("stage/{n}")),
    );
    out
}

/// Assert there is no debris.
#[track_caller]
pub fn assert_no_debris(root: &Path) {
    let d = debris(root);
    assert!(d.is_empty(), "debris left in the cache: {d:?}");
}

/// The `object.info` of entry `name`, parsed.
pub fn object_info(root: &Path, name: &str) -> serde_json::Value {
    let p = root.join("objects").join(name).join("object.info");
    let bytes = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
}

/// The `size` recorded in entry `name`'s `object.info`.
pub fn recorded(root: &Path, name: &str) -> u64 {
    object_info(root, name)["size"]
        .as_u64()
        .unwrap_or_else(|| panic!("object.info of {name} has no integer size"))
}

/// The sum of the sizes recorded by the entries' `object.info` files
/// (entries without a readable, valid one count 0).
pub fn recorded_sum(root: &Path) -> u64 {
    entries(root)
        .iter()
        .filter_map(|n| {
            // Only real directories are entries (never follow a symlink).
            let dir = root.join("objects").join(n);
            if !fs::symlink_metadata(&dir).ok()?.is_dir() {
                return None;
            }
            let bytes = fs::read(dir.join("object.info")).ok()?;
            serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["size"].as_u64()
        })
        .sum()
}

/// Assert `cache.size` equals the sum of the recorded sizes.
#[track_caller]
pub fn assert_books_balance(root: &Path) {
    assert_eq!(
        size_file(root),
        recorded_sum(root),
        "cache.size differs from the sum of object.info sizes (entries {:?})",
        entries(root)
    );
}

/// `st_blocks * 512` of `path` and everything below it, symlinks not
/// followed, hard links once: an independent version of the contract's
/// space measure.
pub fn space(path: &Path) -> u64 {
    fn walk(p: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let m = fs::symlink_metadata(p).unwrap();
        let mut total = 0;
        if seen.insert((m.dev(), m.ino())) {
            total += m.blocks() * 512;
        }
        if m.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                total += walk(&e.unwrap().path(), seen);
            }
        }
        total
    }
    walk(path, &mut HashSet::new())
}

/// The `size` an `object.info` records, if it exists.
pub fn recorded_size(entry: &Path) -> Option<u64> {
    let bytes = std::fs::read(entry.join("object.info")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("object.info is JSON");
    Some(v["size"].as_u64().expect("object.info has a size"))
}

/// Whether this process can take an exclusive lock on `path` now.
pub fn lockable(path: &Path) -> bool {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    FileLock::try_lock(file, LockKind::Exclusive)
        .expect("try lock")
        .is_some()
}

/// The digest `fscache-test-helper` writes to `DIGEST`: SHA-256 over the
/// files other than `DIGEST` in name order, each as name, NUL, length (u64
/// little-endian) and content; lower-case hex.
pub fn digest(data: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for name in list(data).into_iter().filter(|n| n != "DIGEST") {
        let content = std::fs::read(data.join(&name)).expect("read entry file");
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update((content.len() as u64).to_le_bytes());
        hash.update(&content);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every valid entry (one with an `object.info`) is whole (`object.lock`,
/// `data/`) and its content matches its `DIGEST`. Returns the invalid
/// names: what a removal interrupted by a crash leaves.
pub fn assert_entries_intact(root: &Path) -> Vec<String> {
    let mut invalid = Vec::new();
    for name in entries(root) {
        let entry = root.join("objects").join(&name);
        if recorded_size(&entry).is_none() {
            invalid.push(name);
            continue;
        }
        assert!(
            entry.join("object.lock").is_file(),
            "{name}: no object.lock"
        );
        let data = entry.join("data");
        let recorded = std::fs::read_to_string(data.join("DIGEST"))
            .unwrap_or_else(|e| panic!("{name}: no DIGEST: {e}"));
        assert_eq!(
            digest(&data),
            recorded,
            "{name}: content does not match DIGEST"
        );
    }
    invalid
}
