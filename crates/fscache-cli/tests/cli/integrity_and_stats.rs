//! `fscache stats`: counters summed exactly over many processes; `fscache
//! verify`: damage found, `--remove-bad` removes it, exit 1.

use std::sync::Arc;

use super::*;

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
