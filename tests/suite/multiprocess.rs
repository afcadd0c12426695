//! Several processes hammer one small cache at once (`fscache-test-helper
//! stress`); afterwards the books must be exact and every entry intact.
//!
//! Also holds the cache-inspection helpers the crash tests share: the
//! counter, the recorded sizes, `uuid-*` debris and content digests.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fscache::{CacheInfo, FsCache, MaxSize};
use fscache_lock::{FileLock, LockKind};

use crate::util::HELPER;

/// A scratch directory for a cache: on `/dev/shm` (tmpfs, fast, and it has
/// nanosecond atimes) when it exists, else the default temp dir.
pub(crate) fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("fscache-test-").clone();
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder.tempdir().expect("create temp dir")
}

/// Run the helper with `args` to the end (at most `limit`, then it is
/// killed and the test fails), capturing stdout.
pub(crate) fn run_helper(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(HELPER)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to spawn helper {args:?}: {e}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for helper") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("helper {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: reader.join().expect("stdout reader"),
        stderr: Vec::new(),
    }
}

/// What `cache.size` holds.
pub(crate) fn counter(root: &Path) -> u64 {
    let text = std::fs::read_to_string(root.join("cache.size")).expect("read cache.size");
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("cache.size is not an integer: {text:?}"))
}

/// The `size` an `object.info` records, if it exists.
pub(crate) fn recorded_size(entry: &Path) -> Option<u64> {
    let bytes = std::fs::read(entry.join("object.info")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("object.info is JSON");
    Some(v["size"].as_u64().expect("object.info has a size"))
}

/// The names in `dir`, sorted.
pub(crate) use fscache_testkit::names;

/// The committed (non-`uuid-*`) names in `objects/`.
pub(crate) fn committed(root: &Path) -> Vec<String> {
    names(&root.join("objects"))
        .into_iter()
        .filter(|n| !n.starts_with("uuid-"))
        .collect()
}

/// The sum of the sizes that committed entries' `object.info` record.
pub(crate) fn recorded_total(root: &Path) -> u64 {
    committed(root)
        .iter()
        .filter_map(|n| recorded_size(&root.join("objects").join(n)))
        .sum()
}

/// The `uuid-*` paths in `objects/` and `stage/`.
pub(crate) fn debris(root: &Path) -> Vec<PathBuf> {
    ["objects", "stage"]
        .iter()
        .flat_map(|d| {
            names(&root.join(d))
                .into_iter()
                .filter(|n| n.starts_with("uuid-"))
                .map(move |n| root.join(d).join(n))
        })
        .collect()
}

/// Whether this process can take an exclusive lock on `path` now.
pub(crate) fn lockable(path: &Path) -> bool {
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
pub(crate) fn digest(data: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for name in names(data).into_iter().filter(|n| n != "DIGEST") {
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
pub(crate) fn assert_entries_intact(root: &Path) -> Vec<String> {
    let mut invalid = Vec::new();
    for name in committed(root) {
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

const LIMIT: u64 = 256 * 1024;
const PROCESSES: u64 = 4;
const SECONDS: &str = "3";

#[test]
fn four_processes_stressing_a_small_cache_keep_exact_books() {
    let tmp = scratch();
    let root = tmp.path().join("cache");
    let cache = FsCache::open("fscache-stress", &root).unwrap();
    cache
        .set_info(CacheInfo {
            maximum_size: Some(MaxSize::Bytes(LIMIT)),
            ..Default::default()
        })
        .unwrap();
    let root_arg = root.to_str().unwrap().to_owned();

    let runs: Vec<_> = (0..PROCESSES)
        .map(|seed| {
            let root = root_arg.clone();
            std::thread::spawn(move || {
                let seed = (seed + 1).to_string();
                run_helper(&["stress", &root, &seed, SECONDS], Duration::from_secs(30))
            })
        })
        .collect();
    let mut totals = serde_json::Map::new();
    for run in runs {
        let out = run.join().expect("helper thread");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "stress failed: {}: {stdout}",
            out.status
        );
        let line = stdout.lines().last().expect("a JSON line");
        let counters: serde_json::Value = serde_json::from_str(line).expect("JSON counters");
        eprintln!("stress: {line}");
        for (k, v) in counters.as_object().unwrap() {
            let sum = totals.get(k).and_then(|t| t.as_u64()).unwrap_or(0) + v.as_u64().unwrap();
            totals.insert(k.clone(), sum.into());
        }
    }
    assert!(totals["hits"].as_u64().unwrap() > 0, "no hits: {totals:?}");
    assert!(
        totals["committed"].as_u64().unwrap() > 0,
        "nothing committed: {totals:?}"
    );

    // Every helper is gone: the books must be exact.
    assert_eq!(debris(&root), Vec::<PathBuf>::new(), "uuid-* debris left");
    let size = counter(&root);
    assert_eq!(
        size,
        recorded_total(&root),
        "cache.size against object.info sizes"
    );
    assert!(size <= LIMIT, "cache.size {size} past the limit {LIMIT}");
    let invalid = assert_entries_intact(&root);
    assert!(
        invalid.is_empty(),
        "entries without object.info: {invalid:?}"
    );
    // Every committed entry loads, and every entry is idle again.
    for name in committed(&root) {
        assert!(cache.load(&name).unwrap().is_some(), "{name} does not load");
        assert!(lockable(
            &root.join("objects").join(&name).join("object.lock")
        ));
    }
}
