//! A property test of the remote tier against a small model: random
//! sequences of local stores and removals on two hosts' caches, pushes,
//! pulls, read-through loads, entries aged on the remote and prunes without
//! a grace period, two hosts racing to push one name, damage to a pack
//! healed by `check --repair` from one host's cache, and `check`, on one
//! `fs` remote (in format 2: packs, locators, the index). After every step
//! the remote lists exactly the model's names, and everything a host gets
//! has the tree digest of the content the model says it must have.

use std::collections::{BTreeMap, HashMap};

use std::fs;
use std::path::Path;
use std::time::Duration;

use fscache::{CacheInfo, Digest, FsCache, MaxSize, Obtained};
use fscache_remote::{CheckOptions, PruneOptions, Pushed, ReadThrough, Remote};
use proptest::prelude::*;

use crate::util::noise;

const NAMES: [&str; 3] = ["a", "b", "c"];
const CONTENTS: u8 = 3;

#[derive(Clone, Debug)]
enum Op {
    Store {
        host: usize,
        name: usize,
        content: u8,
    },
    Remove {
        host: usize,
        name: usize,
    },
    Push {
        host: usize,
        name: usize,
    },
    Pull {
        host: usize,
        name: usize,
    },
    LoadOrPull {
        host: usize,
        name: usize,
    },
    /// Mark the name as last used 40 days ago on the remote.
    Age {
        name: usize,
    },
    /// Prune entries unused for 30 days, with no grace period for blobs.
    Prune,
    /// Both hosts push the name at once (each from its own handle).
    RacePush {
        name: usize,
    },
    /// Flip a byte of the first blob of the name's entry in its pack,
    /// then `check --read-data --repair` from the host's cache.
    DamageAndRepair {
        host: usize,
        name: usize,
    },
    /// `check --read-data`: clean, every published entry read.
    Check,
}

fn op() -> impl Strategy<Value = Op> {
    let host = 0..2usize;
    let name = 0..NAMES.len();
    prop_oneof![
        (host.clone(), name.clone(), 0..CONTENTS).prop_map(|(host, name, content)| Op::Store {
            host,
            name,
            content
        }),
        (host.clone(), name.clone()).prop_map(|(host, name)| Op::Remove { host, name }),
        (host.clone(), name.clone()).prop_map(|(host, name)| Op::Push { host, name }),
        (host.clone(), name.clone()).prop_map(|(host, name)| Op::Pull { host, name }),
        (host, name.clone()).prop_map(|(host, name)| Op::LoadOrPull { host, name }),
        name.clone().prop_map(|name| Op::Age { name }),
        Just(Op::Prune),
        name.clone().prop_map(|name| Op::RacePush { name }),
        (0..2usize, name).prop_map(|(host, name)| Op::DamageAndRepair { host, name }),
        Just(Op::Check),
    ]
}

/// The tree of content `k`: a file every content shares (so prune must
/// keep a blob another entry still names), one of its own, a symlink.
fn build(root: &Path, k: u8) {
    fs::create_dir_all(root.join("dir")).unwrap();
    fs::write(root.join("dir/common"), noise(1, 90_000)).unwrap();
    fs::write(root.join("own"), noise(100 + u64::from(k), 70_000)).unwrap();
    std::os::unix::fs::symlink("dir/common", root.join("link")).unwrap();
}

fn cache(dir: &Path) -> FsCache {
    let c = FsCache::open("fscache-remote-model", dir).unwrap();
    c.set_info(CacheInfo {
        maximum_size: Some(MaxSize::Unlimited),
        ..Default::default()
    })
    .unwrap();
    c
}

fn run(ops: Vec<Op>) {
    let tmp = tempfile::tempdir().unwrap();
    let digests: Vec<Digest> = (0..CONTENTS)
        .map(|k| {
            let d = tmp.path().join(format!("content-{k}"));
            build(&d, k);
            fscache::tree_digest(&d).unwrap()
        })
        .collect();
    // What a push reports: the manifest's digest, version 3 as the local
    // entry's.
    let manifest_digests: Vec<Digest> = (0..CONTENTS)
        .map(|k| {
            let d = tmp.path().join(format!("content-{k}"));
            fscache::tree_digest_version(&d, fscache::DigestVersion::V3).unwrap()
        })
        .collect();
    assert_eq!(manifest_digests, digests);
    let url = format!("file://{}", tmp.path().join("bucket").display());
    let remote = Remote::open(&url).unwrap();
    let hosts = [
        cache(&tmp.path().join("host-0")),
        cache(&tmp.path().join("host-1")),
    ];
    let mut local: [HashMap<usize, u8>; 2] = Default::default();
    let mut published: BTreeMap<usize, u8> = BTreeMap::new();
    // Published names last used (as the remote records it) 40 days ago.
    let mut aged: std::collections::BTreeSet<usize> = Default::default();
    let check = |path: &Path, k: u8, what: &str| {
        assert_eq!(
            fscache::tree_digest(path).unwrap(),
            digests[usize::from(k)],
            "{what}"
        );
    };
    for op in ops {
        match op {
            Op::Store {
                host,
                name,
                content,
            } => {
                if !local[host].contains_key(&name) {
                    let w = hosts[host].store(NAMES[name]).unwrap();
                    build(w.path(), content);
                    assert_eq!(w.commit().unwrap(), fscache::Stored::Committed);
                    local[host].insert(name, content);
                }
            }
            Op::Remove { host, name } => {
                let removed = hosts[host].remove(NAMES[name]).unwrap();
                match local[host].remove(&name) {
                    Some(_) => assert!(matches!(removed, fscache::Removed::Removed { .. })),
                    None => assert_eq!(removed, fscache::Removed::Missing),
                }
            }
            Op::Push { host, name } => {
                let got = remote.push(&hosts[host], NAMES[name]).unwrap();
                match (local[host].get(&name), got) {
                    (None, None) => {}
                    (Some(&k), Some(r)) => {
                        assert_eq!(r.digest, manifest_digests[usize::from(k)]);
                        let expected = if published.contains_key(&name) {
                            Pushed::Exists
                        } else {
                            Pushed::Published
                        };
                        assert_eq!(r.outcome, expected);
                        published.entry(name).or_insert(k);
                        aged.remove(&name);
                    }
                    (l, g) => panic!("push of {}: local {l:?}, got {g:?}", NAMES[name]),
                }
            }
            Op::Pull { host, name } => {
                let got = remote.pull(&hosts[host], NAMES[name]).unwrap();
                match (published.get(&name), got) {
                    (None, None) => {}
                    (Some(&k), Some(o)) => {
                        // A name the cache has already stays as it is.
                        let want = *local[host].entry(name).or_insert(k);
                        aged.remove(&name);
                        assert!(matches!(o, Obtained::Built(_) | Obtained::Hit(_)));
                        check(o.path(), want, "pulled");
                    }
                    (p, g) => panic!("pull of {}: published {p:?}, got {g:?}", NAMES[name]),
                }
            }
            Op::LoadOrPull { host, name } => {
                let got = remote.load_or_pull(&hosts[host], NAMES[name]).unwrap();
                match (local[host].get(&name).copied(), published.get(&name), got) {
                    (Some(k), _, ReadThrough::Local(e)) => check(e.path(), k, "local hit"),
                    (None, Some(&k), ReadThrough::Pulled(o)) => {
                        check(o.path(), k, "read through");
                        local[host].insert(name, k);
                        aged.remove(&name);
                    }
                    (None, None, ReadThrough::Miss { remote_error: None }) => {}
                    (l, p, g) => panic!("load_or_pull: local {l:?}, published {p:?}, got {g:?}"),
                }
            }
            Op::Age { name } => {
                if published.contains_key(&name) {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let marker = format!(r#"{{"used": {}}}"#, now - 40 * 86_400);
                    remote
                        .write_object_unchecked(
                            &format!("v1/used/{}", NAMES[name]),
                            marker.into_bytes(),
                        )
                        .unwrap();
                    aged.insert(name);
                }
            }
            Op::Prune => {
                let r = remote
                    .prune(
                        PruneOptions::unused_for(Duration::from_secs(30 * 86_400))
                            .grace(Duration::ZERO),
                    )
                    .unwrap();
                let expected: Vec<&str> = aged.iter().map(|&i| NAMES[i]).collect();
                assert_eq!(r.manifests_removed, expected, "{r:?}");
                for i in std::mem::take(&mut aged) {
                    published.remove(&i);
                }
                // Every blob left is named by a remaining entry: pull each
                // into a fresh cache and check it.
                let scratch = tempfile::tempdir().unwrap();
                let c = cache(scratch.path());
                for (&name, &k) in &published {
                    let o = remote.pull(&c, NAMES[name]).unwrap().unwrap();
                    check(o.path(), k, "after prune");
                }
            }
            Op::RacePush { name } => {
                let (Some(&k0), Some(&k1)) = (local[0].get(&name), local[1].get(&name)) else {
                    continue;
                };
                let was = published.contains_key(&name);
                let reports: Vec<_> = std::thread::scope(|s| {
                    let racers: Vec<_> = (0..2)
                        .map(|h| {
                            let (hosts, url) = (&hosts, &url);
                            s.spawn(move || {
                                let r = Remote::open(url).unwrap();
                                r.push(&hosts[h], NAMES[name]).unwrap().unwrap()
                            })
                        })
                        .collect();
                    racers.into_iter().map(|t| t.join().unwrap()).collect()
                });
                let won: Vec<usize> = (0..2)
                    .filter(|&h| reports[h].outcome == Pushed::Published)
                    .collect();
                if was {
                    assert!(won.is_empty(), "a published name is never replaced");
                } else {
                    // The `fs` service writes manifests create-only.
                    assert_eq!(won.len(), 1, "{reports:?}");
                    published.insert(name, [k0, k1][won[0]]);
                }
                aged.remove(&name);
            }
            Op::DamageAndRepair { host, name } => {
                let Some(&k) = published.get(&name) else {
                    continue;
                };
                let env = remote
                    .read_object(&format!("v1/manifests/{}", NAMES[name]))
                    .unwrap()
                    .unwrap();
                let env: serde_json::Value =
                    serde_json::from_slice(&zstd::decode_all(&env[..]).unwrap()).unwrap();
                let loc = &env["locator"];
                let first = &loc["blobs"][0];
                let pack = loc["packs"][first[0].as_u64().unwrap() as usize]
                    .as_str()
                    .unwrap()
                    .to_string();
                let key = format!("v2/packs/{}/{pack}", &pack[..2]);
                let mut bytes = remote.read_object(&key).unwrap().unwrap();
                let at = first[1].as_u64().unwrap() + first[2].as_u64().unwrap() / 2;
                bytes[at as usize] ^= 0x55;
                remote.write_object_unchecked(&key, bytes).unwrap();
                let r = remote
                    .check(
                        Some(&hosts[host]),
                        CheckOptions::new().read_data(true).repair(true),
                    )
                    .unwrap();
                assert!(r.damaged.contains(&NAMES[name].to_string()), "{r:?}");
                assert!(r.is_clean(), "{r:?}");
                for d in &r.damaged {
                    let i = NAMES.iter().position(|n| n == d).unwrap();
                    assert!(published.contains_key(&i), "{d} was not published");
                    match local[host].get(&i) {
                        Some(&l) => {
                            assert!(r.repaired.contains(d), "{r:?}");
                            published.insert(i, l);
                        }
                        None => {
                            assert!(r.dropped.contains(d), "{r:?}");
                            published.remove(&i);
                        }
                    }
                    aged.remove(&i);
                }
                let _ = k;
            }
            Op::Check => {
                let r = remote
                    .check(None, CheckOptions::new().read_data(true))
                    .unwrap();
                assert!(r.is_clean(), "{r:?}");
                assert_eq!(r.manifests, published.len());
            }
        }
        let listed = remote.list().unwrap();
        let expected: Vec<&str> = published.keys().map(|&i| NAMES[i]).collect();
        assert_eq!(listed, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn push_pull_prune_and_local_operations(ops in prop::collection::vec(op(), 1..24)) {
        run(ops);
    }
}
