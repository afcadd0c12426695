//! `fscache stats`: counters summed exactly over many processes; `fscache
//! verify`: damage found, `--remove-bad` removes it, exit 1; a store of an
//! existing name counted.

use std::sync::Arc;

use std::path::Path;

use crate::util::*;

fn stat(cache: &Path, key: &str) -> u64 {
    let o = fsc!("stats", cache, "--json");
    expect_code(&o, 0);
    json(&o)[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key}: {}", stdout(&o)))
}

#[test]
fn stats_are_exact_across_processes() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 1000);
    // 4 threads × 12 processes, each one operation: a store of a fresh
    // name, a load hit of it, and a load miss.
    let cache = Arc::new(cache);
    let src = Arc::new(src);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (cache, src) = (cache.clone(), src.clone());
            std::thread::spawn(move || {
                for i in 0..4 {
                    let name = format!("t{t}-{i}");
                    expect_code(&store(&cache, &name, &src), 0);
                    expect_code(&fsc!("load", &*cache, &name, "--", "true"), 0);
                    expect_code(&fsc!("load", &*cache, "absent", "--", "true"), 2);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(stat(&cache, "stored"), 16);
    assert_eq!(stat(&cache, "hits"), 16);
    assert_eq!(stat(&cache, "misses-absent"), 16);
    let o = fsc!("stats", &*cache, "--json");
    assert_eq!(json(&o)["hit-rate"].as_f64(), Some(0.5));
    // The totals the text shows are in the JSON too.
    assert_eq!(json(&o)["misses"].as_u64(), Some(16));
    assert_eq!(json(&o)["loads"].as_u64(), Some(32));
    let human = stdout(&fsc!("stats", &*cache));
    assert!(human.contains("hit rate:            50.0 %"), "{human}");
    // --zero resets.
    expect_code(&fsc!("stats", &*cache, "--zero"), 0);
    assert_eq!(stat(&cache, "stored"), 0);
    assert_eq!(stat(&cache, "hits"), 0);
}

#[test]
fn verify_finds_damage_and_removes_it_on_request() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 5000);
    for n in ["good", "bad"] {
        expect_code(&store(&cache, n, &src), 0);
    }
    let o = fsc!("verify", &cache, "--json");
    expect_code(&o, 0);
    assert!(json(&o)
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["state"] == "ok"));
    // Damage one: append a byte to a file.
    let data = cache.join("objects/bad/data");
    let f = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_file())
        .unwrap();
    let mut bytes = std::fs::read(&f).unwrap();
    bytes.push(0);
    std::fs::write(&f, bytes).unwrap();
    let o = fsc!("verify", &cache, "bad", "good");
    expect_error(&o, "1 damaged");
    assert!(stdout(&o).contains("bad: damaged"), "{}", stdout(&o));
    assert!(stdout(&o).contains("good: ok"), "{}", stdout(&o));
    let o = fsc!("verify", &cache, "--remove-bad");
    expect_code(&o, 1);
    assert!(
        stdout(&o).contains("bad: damaged (removed)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(names(&ls_json(&cache)), ["good"]);
    expect_code(&fsc!("verify", &cache), 0);
}

#[test]
fn damaged_entries_are_counted_in_good_grammar_with_a_hint() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    expect_code(&store(&cache, "a", &src), 0);
    std::fs::write(cache.join("objects/a/data/hello.txt"), b"tampered\n").unwrap();
    let o = fsc!("verify", cache);
    expect_error(&o, "1 damaged entry; `fscache verify --remove-bad` removes");
    let o = fsc!("verify", cache, "--remove-bad");
    expect_error(&o, "1 damaged entry (removed)");
    assert!(
        stdout(&o).contains("a: damaged (removed)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn stats_list_removals_by_rm_clear_and_remove_bad() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    for n in ["a", "b", "c"] {
        expect_code(&store(&cache, n, &src), 0);
    }
    expect_code(&fsc!("rm", cache, "a"), 0);
    std::fs::write(cache.join("objects/b/data/hello.txt"), b"tampered\n").unwrap();
    expect_code(&fsc!("verify", cache, "--remove-bad"), 1);
    expect_code(&fsc!("clear", cache), 0);
    let v = json(&fsc!("stats", cache, "--json"));
    let removed: Vec<(String, String)> = v["recent-removals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["why"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for n in ["a", "b", "c"] {
        assert!(
            removed.contains(&(n.to_owned(), "removed".to_owned())),
            "{n} not in {removed:?}"
        );
    }
}

/// The report: `exists already` stayed 0 after CLI stores of an existing
/// name (the CLI skipped the copy without the library counting it).
#[test]
fn a_store_of_an_existing_name_is_counted_as_exists_already() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    expect_code(&store(&cache, "a", &src), 0);
    for _ in 0..2 {
        expect_code(&store(&cache, "a", &src), 0);
    }
    expect_code(&fsc!("store", cache, "a", src, "--fail-if-exists"), 1);
    let v = json(&fsc!("stats", cache, "--json"));
    assert_eq!(
        (v["stored"].as_u64(), v["stored-exists"].as_u64()),
        (Some(1), Some(3)),
        "{v}"
    );
    let text = stdout(&fsc!("stats", cache));
    assert!(text.contains("  exists already:    3"), "{text}");
    // Builds of load_or_build and waits for a builder have lines of their
    // own (the library's tests count them).
    for line in [
        "  built:             0 (load_or_build)",
        "waits for a builder: 0",
    ] {
        assert!(text.contains(line), "{line:?} not in {text}");
    }
    assert_eq!(v["builds"].as_u64(), Some(0), "{v}");
    assert_eq!(v["build-waits"].as_u64(), Some(0), "{v}");
}
