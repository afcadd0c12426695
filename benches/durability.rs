//! What `Durability::Committed` costs against `Relaxed`, as ratios, on the
//! disk file system of the build (the target directory: ext4 here) and on
//! tmpfs (`/dev/shm`), for a 4 KiB entry and a 10,000-file `store_tree`.
//!
//! Groups (the file system type is in the group name):
//!
//! * `durable_4k/<fs>`: `baseline_relaxed` and `committed`, one new entry
//!   holding one 4 KiB file per iteration.
//! * `durable_tree/<fs>`: `store_tree` of 10,000 small files in 100
//!   directories (`FSCACHE_BENCH_TREE_FILES` changes the count; 100 under
//!   `cargo test --benches`): `baseline_relaxed`, `committed`, and, to
//!   choose how `Committed` should sync a big tree, a `Relaxed` store
//!   followed by one of the strategies over the committed entry:
//!   `then_fsync_each` (every file and directory in turn: what `Committed`
//!   does), `then_fsync_pool4` (the same on 4 threads), `then_syncfs` (one
//!   `syncfs` of the file system).
//!
//! Each iteration's entry is removed outside the measured time.
//!
//! One run on the shared 2-core development machine (medians, load from
//! other builds: noisy): 4 KiB entry, Committed/Relaxed = 1.3× on tmpfs
//! and 22× on ext4 (a virtio disk, several ms per `fsync`, about eight
//! `fsync`s per commit); 10,000-file tree on tmpfs 1.2×, and with
//! `FSCACHE_BENCH_TREE_FILES=1000` on ext4 1.8×. Both tree ratios are
//! under 3×, so `Committed` keeps one `fsync` per file and directory; the
//! strategy rows are there to measure again where a disk makes it pay.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{tmpfs_dir, FILE_4K};
use criterion::{Criterion, SamplingMode};
use fscache::{CacheInfo, Durability, FsCache, MaxSize, Stored};

use common::disk_dir;

/// The name of the file system `dir` is on.
fn fs_name(dir: &Path) -> &'static str {
    let Ok(st) = rustix::fs::statfs(dir) else {
        return "unknown";
    };
    match i128::from(st.f_type) {
        0xEF53 => "ext4",
        0x0102_1994 => "tmpfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        _ => "other",
    }
}

fn open(root: &Path, durability: Durability) -> FsCache {
    let cache = FsCache::builder("bench-durability")
        .durability(durability)
        .open(root)
        .expect("open cache");
    cache
        .set_info(CacheInfo {
            maximum_size: Some(MaxSize::Unlimited),
            ..Default::default()
        })
        .expect("unlimited");
    cache
}

/// A source tree of `files` small files in 100 directories.
fn source_tree(at: &Path, files: usize) {
    for i in 0..files {
        let d = at.join(format!("d{:02}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&d).expect("mkdir");
        }
        std::fs::write(d.join(format!("f{i}")), format!("file {i}\n").repeat(8)).expect("write");
    }
}

fn tree_files() -> usize {
    if std::env::args().any(|a| a == "--test") {
        return 100;
    }
    std::env::var("FSCACHE_BENCH_TREE_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Every file and directory below `dir`, directories after their contents.
fn all_paths(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        let p = e.path();
        if e.file_type().expect("type").is_dir() {
            all_paths(&p, out);
        } else {
            out.push(p);
        }
    }
    out.push(dir.to_owned());
}

fn fsync(p: &Path) {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .expect("fsync");
}

#[derive(Clone, Copy)]
enum Then {
    Nothing,
    FsyncEach,
    FsyncPool(usize),
    Syncfs,
}

fn after(then: Then, cache: &FsCache, name: &str) {
    if let Then::Nothing = then {
        return;
    }
    let entry = cache.load(name).expect("load").expect("a hit");
    let top = entry.path().parent().expect("entry dir").to_owned();
    match then {
        Then::Nothing => {}
        Then::Syncfs => {
            let fd = std::fs::File::open(&top).expect("open");
            rustix::fs::syncfs(&fd).expect("syncfs");
        }
        Then::FsyncEach => {
            let mut paths = Vec::new();
            all_paths(&top, &mut paths);
            paths.iter().for_each(|p| fsync(p));
        }
        Then::FsyncPool(n) => {
            let mut paths = Vec::new();
            all_paths(&top, &mut paths);
            let chunk = paths.len().div_ceil(n);
            std::thread::scope(|s| {
                for part in paths.chunks(chunk) {
                    s.spawn(move || part.iter().for_each(|p| fsync(p)));
                }
            });
        }
    }
}

fn bench_place(c: &mut Criterion, dir: &Path) {
    let fs = fs_name(dir);
    let n = AtomicU64::new(0);
    let next = || format!("e{}", n.fetch_add(1, Ordering::Relaxed));

    let mut g = c.benchmark_group(format!("durable_4k/{fs}"));
    g.sample_size(20).warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(2));
    for (id, durability) in [
        ("baseline_relaxed", Durability::Relaxed),
        ("committed", Durability::Committed),
    ] {
        let cache = open(&dir.join(id), durability);
        g.bench_function(id, |b| {
            b.iter(|| {
                let w = cache.store(&next()).expect("store");
                std::fs::write(w.path().join("file"), FILE_4K).expect("write");
                assert_eq!(w.commit().expect("commit"), Stored::Committed);
            })
        });
    }
    g.finish();

    let files = tree_files();
    let src = dir.join("src");
    source_tree(&src, files);
    let mut g = c.benchmark_group(format!("durable_tree/{fs}"));
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.warm_up_time(Duration::from_millis(100));
    g.measurement_time(Duration::from_secs(1));
    for (id, durability, then) in [
        ("baseline_relaxed", Durability::Relaxed, Then::Nothing),
        ("committed", Durability::Committed, Then::Nothing),
        ("then_fsync_each", Durability::Relaxed, Then::FsyncEach),
        ("then_fsync_pool4", Durability::Relaxed, Then::FsyncPool(4)),
        ("then_syncfs", Durability::Relaxed, Then::Syncfs),
    ] {
        let cache = open(&dir.join(format!("tree-{id}")), durability);
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let name = next();
                    // Start each from a clean disk state.
                    rustix::fs::sync();
                    let t = Instant::now();
                    let stored = cache.store_tree(&name, &src).expect("store_tree");
                    after(then, &cache, &name);
                    spent += t.elapsed();
                    assert_eq!(stored, Stored::Committed);
                    let _ = cache.remove(&name).expect("remove");
                }
                spent
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let only = std::env::var("FSCACHE_BENCH_FS").ok();
    let disk = disk_dir();
    let shm = tmpfs_dir();
    for dir in [disk.path(), shm.path()] {
        if only.as_deref().is_some_and(|o| o != fs_name(dir)) {
            continue;
        }
        bench_place(&mut c, dir);
    }
    c.final_summary();
}
