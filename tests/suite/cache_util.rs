//! Helpers of the `cache_*` modules: temp caches on tmpfs, opening them,
//! seeded entries. What is on disk is read with [`crate::inspect`].

use std::fs;
use std::path::{Path, PathBuf};

use fscache::{CacheInfo, FsCache, MaxSize};

/// The appid the `cache_*` tests open caches with.
pub const APPID: &str = "fscache-tests";

/// One file system block as the tests count it: sizes are multiples of it
/// so the block math stays predictable.
pub const BLOCK: usize = 4096;

/// A temporary directory, on tmpfs (`/dev/shm`) when it exists, for speed.
pub use fscache_testkit::tmpfs_dir as tmp;

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

/// Bytes of length `len` that differ by `seed` (the model tests' content).
pub use fscache_workspace::model::content;

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
    crate::inspect::recorded(&root, "probe")
}

/// Sleep long enough for the file system's (coarse, jiffy-grained)
/// timestamps to tell two moments apart.
pub fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(15));
}
