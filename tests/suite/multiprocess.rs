//! Several processes hammer one small cache at once (`fscache-test-helper
//! stress`); afterwards the books must be exact and every entry intact.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::inspect::{assert_entries_intact, debris, entries, lockable, recorded_sum, size_file};
use crate::util::HELPER;
use fscache::{CacheInfo, FsCache, MaxSize};

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

const LIMIT: u64 = 256 * 1024;
const PROCESSES: u64 = 4;
const SECONDS: &str = "3";

#[test]
fn four_processes_stressing_a_small_cache_keep_exact_books() {
    let tmp = fscache_testkit::tmpfs_dir();
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
    assert_eq!(debris(&root), Vec::<String>::new(), "debris left");
    let size = size_file(&root);
    assert_eq!(
        size,
        recorded_sum(&root),
        "cache.size against object.info sizes"
    );
    assert!(size <= LIMIT, "cache.size {size} past the limit {LIMIT}");
    let invalid = assert_entries_intact(&root);
    assert!(
        invalid.is_empty(),
        "entries without object.info: {invalid:?}"
    );
    // Every committed entry loads, and every entry is idle again.
    for name in entries(&root) {
        assert!(cache.load(&name).unwrap().is_some(), "{name} does not load");
        assert!(lockable(
            &root.join("objects").join(&name).join("object.lock")
        ));
    }
}
