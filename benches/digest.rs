//! Criterion benchmarks of the tree digest: what computing it during a copy
//! costs beside the copy alone, and what hashing a tree alone costs.
//!
//! One group, `digest`, on a tmpfs tree of 2000 files of mixed sizes in 20
//! directories (about 100 MiB: 1800 × 4 KiB, 180 × 64 KiB, 20 × 4 MiB):
//!
//! * `baseline_copy`: `copy_tree_into` into a fresh directory (the
//!   baseline, as `cargo xtask bench` pairs them);
//! * `copy_with_digest`: `copy_tree_into_with_digest`, the same copy
//!   hashing what it reads;
//! * `digest_tree`: `digest_tree` of the source alone.
//!
//! "tmpfs" is `/dev/shm` where it exists, else the system temp directory.
//! On tmpfs nothing waits for a disk, so the ratios are the CPU cost of
//! hashing at its most visible.

use std::path::Path;
use std::time::{Duration, Instant};

use cap_std::{ambient_authority, fs::Dir};
use criterion::{black_box, Criterion};
use fscache_dir::copy::{copy_tree_into, copy_tree_into_with_digest};
use fscache_dir::digest::{digest_tree, Version};

use fscache_testkit::tmpfs_dir;

/// Fill `src` with the bench tree; returns its content bytes.
fn make_tree(src: &Path) -> u64 {
    let mut total = 0;
    // Content that is not all one byte, so nothing could special-case it.
    let pattern: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for d in 0..20 {
        let dir = src.join(format!("dir{d:02}"));
        std::fs::create_dir(&dir).expect("create a bench directory");
        for f in 0..100 {
            let i = d * 100 + f;
            let size = match i {
                _ if i % 100 == 0 => 4 << 20,
                _ if i % 10 == 0 => 64 << 10,
                _ => 4 << 10,
            };
            let start = i % 4096;
            let end = (start + size).min(pattern.len());
            let mut content = pattern[start..end].to_vec();
            content.resize(size, 0x5a);
            std::fs::write(dir.join(format!("file{f:03}")), &content).expect("write a bench file");
            total += size as u64;
        }
    }
    total
}

/// Time `iters` runs of `copy` from `src` into fresh directories under
/// `scratch`, removing each copy outside the timed part.
fn time_copies(iters: u64, src: &Path, scratch: &Path, copy: impl Fn(&Path, &Dir)) -> Duration {
    let mut elapsed = Duration::ZERO;
    for _ in 0..iters {
        let dst = tempfile::tempdir_in(scratch).expect("create a destination");
        let dir = Dir::open_ambient_dir(dst.path(), ambient_authority()).expect("open it");
        let start = Instant::now();
        copy(src, &dir);
        elapsed += start.elapsed();
        drop(dir);
        drop(dst);
    }
    elapsed
}

fn bench_digest(c: &mut Criterion) {
    let tmp = tmpfs_dir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).expect("create the source");
    let bytes = make_tree(&src);
    assert!(bytes > 90 << 20, "about 100 MiB");
    let scratch = tmp.path();

    let mut g = c.benchmark_group("digest");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("baseline_copy", |b| {
        b.iter_custom(|n| {
            time_copies(n, &src, scratch, |src, dst| {
                black_box(copy_tree_into(src, dst, &mut |_| Ok(())).expect("copy"));
            })
        })
    });
    g.bench_function("copy_with_digest", |b| {
        b.iter_custom(|n| {
            time_copies(n, &src, scratch, |src, dst| {
                black_box(copy_tree_into_with_digest(src, dst, &mut |_| Ok(())).expect("copy"));
            })
        })
    });
    let src_dir = Dir::open_ambient_dir(&src, ambient_authority()).expect("open the source");
    g.bench_function("digest_tree", |b| {
        b.iter(|| black_box(digest_tree(&src_dir, &src, Version::V2).expect("digest")))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_digest(&mut c);
    c.final_summary();
}
