//! Helpers of the `cache_*` modules: temp caches on tmpfs, reading the
//! on-disk books (`cache.size`, `object.info`) and listing debris.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fscache::{CacheInfo, FsCache, MaxSize};

/// The appid the `cache_*` tests open caches with.
pub const APPID: &str = "fscache-tests";

/// One file system block as the tests count it: sizes are multiples of it
/// so the block math stays predictable.
pub const BLOCK: usize = 4096;

/// A temporary directory, on tmpfs (`/dev/shm`) when it exists, for speed.
pub fn tmp() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(t) = tempfile::Builder::new().prefix("fscache-t").tempdir_in(shm) {
            return t;
        }
    }
    tempfile::tempdir().expect("create a temp dir")
}

/// A fresh cache in a temp dir: the dir guard and the cache root.
pub fn fresh() -> (tempfile::TempDir, PathBuf) {
    let t = tmp();
    let root = t.path().join("cache");
    (t, root)
}

/// Open the cache at `root` with [`APPID`].
pub fn open(root: &Path) -> FsCache {
    FsCache::open(APPID, root).unwrap_or_else(|e| panic!("open {}: {e}", root.display()))
}

/// Set the cache's maximum size.
pub fn set_max(cache: &FsCache, max: MaxSize) {
    cache
        .set_info(CacheInfo {
            maximum_size: Some(max),
            ..Default::default()
        })
        .expect("set_info");
}

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

/// Bytes of length `len` that differ by `seed`.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut v = seed.to_le_bytes().repeat(len / 8 + 1);
    v.truncate(len);
    v
}

/// Store `name` with one file `f` of `len` bytes (seeded), committing it.
pub fn store_file(cache: &FsCache, name: &str, seed: u64, len: usize) -> fscache::Stored {
    let w = cache.store(name).expect("store");
    fs::write(w.path().join("f"), content(seed, len)).expect("fill entry");
    w.commit().expect("commit")
}

/// The space one entry of a single `len`-byte file takes on this file
/// system, measured by committing a probe into a separate unlimited cache.
pub fn entry_space(len: usize) -> u64 {
    let (_t, root) = fresh();
    let cache = open(&root);
    set_max(&cache, MaxSize::Unlimited);
    assert_eq!(
        store_file(&cache, "probe", 0, len),
        fscache::Stored::Committed
    );
    recorded(&root, "probe")
}

/// Sleep long enough for the file system's (coarse, jiffy-grained)
/// timestamps to tell two moments apart.
pub fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(15));
}
