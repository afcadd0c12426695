//! A property test: random operation sequences run against the real cache
//! and a small model, with the books checked after every step.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use fscache::{FsCache, MaxSize, Stored};
use proptest::prelude::*;

use crate::cache_util::*;
use crate::inspect::*;

const NAMES: [&str; 4] = ["n0", "n1", "n2", "n3"];

#[derive(Clone, Debug)]
enum Op {
    /// Store `NAMES[name]` with `blocks` blocks of content and commit.
    Store { name: usize, blocks: usize },
    /// Load `NAMES[name]` and drop the entry.
    Load { name: usize },
    /// Store `NAMES[name]` and drop the guard without commit.
    Drop { name: usize },
    /// Set the maximum size to `blocks` entry blocks.
    SetMax { blocks: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..NAMES.len(), 1..4usize).prop_map(|(name, blocks)| Op::Store { name, blocks }),
        3 => (0..NAMES.len()).prop_map(|name| Op::Load { name }),
        1 => (0..NAMES.len()).prop_map(|name| Op::Drop { name }),
        1 => (0..12u64).prop_map(|blocks| Op::SetMax { blocks }),
    ]
}

/// The content of the single file of each committed entry, by name.
fn on_disk(root: &Path) -> BTreeMap<String, Vec<u8>> {
    entries(root)
        .into_iter()
        .map(|n| {
            let c = fs::read(root.join("objects").join(&n).join("data/f")).unwrap();
            (n, c)
        })
        .collect()
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let (_t, root) = fresh();
    let cache = FsCache::open(APPID, &root).unwrap();
    // The space of the smallest entry (one file of one block) on this file
    // system: a directory costs one block on most file systems, none on
    // tmpfs.
    let dir_space = entry_space(BLOCK) - BLOCK as u64;
    let mut limit = 6 * BLOCK as u64;
    set_max(&cache, MaxSize::Bytes(limit));
    // What was last committed under each name: a hit must return it.
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (step, op) in ops.iter().enumerate() {
        let before = on_disk(&root);
        let total_before = size_file(&root);
        match *op {
            Op::Store { name, blocks } => {
                let n = NAMES[name];
                let data = content(step as u64 + 1, blocks * BLOCK);
                let w = cache.store(n).unwrap();
                fs::write(w.path().join("f"), &data).unwrap();
                let outcome = w.commit().unwrap();
                let size = (blocks * BLOCK) as u64 + dir_space;
                let present = before.contains_key(n);
                match outcome {
                    Stored::Committed => {
                        prop_assert!(size <= limit);
                        prop_assert_eq!(recorded(&root, n), size);
                        model.insert(n.to_owned(), data);
                    }
                    Stored::Exists => {
                        prop_assert!(present, "step {}: Exists for absent {}", step, n)
                    }
                    Stored::TooLarge => prop_assert!(size > limit, "step {}: TooLarge", step),
                    other => prop_assert!(
                        false,
                        "step {}: unexpected {:?} (nothing is held)",
                        step,
                        other
                    ),
                }
                if size <= limit && !present {
                    prop_assert_eq!(outcome, Stored::Committed, "step {}", step);
                }
                let total = size_file(&root);
                prop_assert!(
                    total <= limit || total <= total_before,
                    "step {}: cache.size {} over limit {} and grown from {}",
                    step,
                    total,
                    limit,
                    total_before
                );
            }
            Op::Load { name } => {
                let n = NAMES[name];
                match cache.load(n).unwrap() {
                    Some(e) => {
                        let got = fs::read(e.path().join("f")).unwrap();
                        prop_assert_eq!(Some(&got), model.get(n), "step {}: stale hit", step);
                    }
                    None => prop_assert!(
                        !before.contains_key(n),
                        "step {}: present {} missed",
                        step,
                        n
                    ),
                }
            }
            Op::Drop { name } => {
                let w = cache.store(NAMES[name]).unwrap();
                fs::write(w.path().join("f"), b"dropped").unwrap();
                drop(w);
                prop_assert_eq!(on_disk(&root), before.clone(), "step {}", step);
            }
            Op::SetMax { blocks } => {
                limit = blocks * BLOCK as u64;
                set_max(&cache, MaxSize::Bytes(limit));
            }
        }
        // The books balance, nothing is left over, and whatever is on disk
        // is what was last committed under its name.
        prop_assert_eq!(
            size_file(&root),
            recorded_sum(&root),
            "step {}: {:?}",
            step,
            op
        );
        prop_assert!(
            debris(&root).is_empty(),
            "step {}: debris {:?}",
            step,
            debris(&root)
        );
        for (n, c) in on_disk(&root) {
            prop_assert_eq!(
                Some(&c),
                model.get(&n),
                "step {}: {} on disk is stale",
                step,
                n
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn cache_model_books_balance(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}
