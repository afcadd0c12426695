//! What the test modules share: caches without a limit, small entries,
//! aged files and a listing of the cache's directories.

use std::path::Path;
use std::time::{Duration, SystemTime};

use fscache::{FsCache, MaxSize, Stored};

/// A cache at `root` without a size limit.
pub fn unlimited(root: &Path) -> FsCache {
    FsCache::builder("api-test")
        .max_size_if_unset(MaxSize::Unlimited)
        .open(root)
        .unwrap()
}

/// Store `bytes` bytes under `name` in one file `f`; asserts it committed.
pub fn put(c: &FsCache, name: &str, bytes: usize) {
    let w = c.store(name).unwrap();
    std::fs::write(w.path().join("f"), vec![7u8; bytes]).unwrap();
    assert_eq!(w.commit().unwrap(), Stored::Committed);
}

/// Set a file's atime to `secs_ago` seconds before now.
pub fn age(path: &Path, secs_ago: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    let f = std::fs::File::open(path).unwrap();
    f.set_times(std::fs::FileTimes::new().set_accessed(t))
        .unwrap();
}

/// The names in `objects/` and `stage/` (debris included).
pub fn on_disk(root: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for sub in ["objects", "stage"] {
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            names.push(format!(
                "{sub}/{}",
                e.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    names.sort();
    names
}
