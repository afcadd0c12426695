//! Single flight across processes: of several processes that miss on one
//! name at once, one builds and the others load its entry.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::util::HELPER;

#[test]
fn four_processes_build_a_missing_entry_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let log = tmp.path().join("builds.log");
    let mut children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(HELPER)
                .args([
                    "build-once",
                    root.to_str().unwrap(),
                    "step",
                    log.to_str().unwrap(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Let them all start before any looks (each opens the cache first).
    std::thread::sleep(std::time::Duration::from_millis(200));
    for c in &mut children {
        c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let mut outcomes = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let lines: Vec<String> = BufReader::new(&out.stdout[..])
            .lines()
            .map(Result::unwrap)
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[1].starts_with("built by "), "{lines:?}");
        outcomes.push((lines[0].clone(), lines[1].clone()));
    }
    let builds = std::fs::read_to_string(&log).unwrap();
    assert_eq!(builds.lines().count(), 1, "one build: {builds}");
    let built: Vec<_> = outcomes.iter().filter(|(o, _)| o == "built").collect();
    assert_eq!(built.len(), 1, "{outcomes:?}");
    // Everyone read the one builder's content.
    assert!(
        outcomes.iter().all(|(_, c)| c == &built[0].1),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|(o, _)| o == "hit").count(),
        3,
        "{outcomes:?}"
    );
    // The statistics count what each caller got (the user trial's hit
    // rate counted each waiter's first probe as a miss, the builder's
    // twice): 3 hits, 1 build, no miss.
    let cache = fscache::FsCache::open("single-flight-test", &root).unwrap();
    let s = cache.stats().unwrap();
    assert_eq!((s.hits, s.built, s.misses()), (3, 1, 0), "{s:?}");
    assert_eq!(s.hit_rate(), Some(0.75));
    assert!(s.build_waits <= 3, "{s:?}");
}
