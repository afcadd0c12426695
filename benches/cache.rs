//! Criterion benchmarks of `FsCache::load` and `store` → `commit`, each
//! beside a baseline that issues the raw system calls of the same protocol
//! steps (docs/format.md, "Protocols"), so the facade's overhead reads as a ratio.
//!
//! Baselines are named `raw_<X>` for benchmark `<X>` of the same group,
//! which is how `cargo xtask bench` pairs them. Groups:
//!
//! * `load` (tmpfs): `hit`/`raw_hit` on a committed entry, `miss`/`raw_miss`
//!   on an absent one. The baselines are the floor, the fewest system calls
//!   the protocol allows: a hit is 6 (`openat` of `NAME/object.lock`
//!   relative to a held `objects/` descriptor, `F_OFD_SETLK`, `fstat`,
//!   `fstatat` of `object.info`, `futimens`, `close`), a miss 1 (the
//!   `openat` failing). `raw_hit_osbuild`/`raw_miss_osbuild` are osbuild's
//!   sequence (absolute paths, a second `stat` as the replace check, an
//!   explicit unlock: 8 calls for a hit), a second baseline for reference.
//!   `raw_hit_returned`/`raw_miss_returned` are the floors called as a
//!   function that returns after its system calls, as a library call
//!   must: the floors themselves are inlined into criterion's loop, and
//!   on one guest (an AMD EPYC, `spec_rstack_overflow`: "Safe RET, no
//!   microcode") the first `ret` after a system call once cost about
//!   0.5 µs of thread CPU time. Same calls, same descriptors, same flags:
//!   the only difference is that return (see "Why a miss is above its
//!   floor" below).
//! * `load_disk`: the same hits and misses on a cache under the target
//!   directory (the build's own file system, typically ext4).
//! * `open`: `openat2(RESOLVE_BENEATH)` of `NAME/object.lock` relative to
//!   `objects/` (`beneath`), and `openat2(RESOLVE_NO_SYMLINKS)` of it
//!   (`no_symlinks`, what the load uses: as safe for a path without `..`,
//!   see `fscache_dir`'s `beneath.rs`), beside `openat` with `O_NOFOLLOW`
//!   of a single, validated component (`raw_single`: the entry's
//!   directory, held as an `O_PATH` descriptor, then `object.lock` in it),
//!   and `raw_two` (plain `openat` of the two components, which would
//!   follow a symlink planted as `NAME`: not as safe, the cost floor).
//! * `store` (tmpfs): `file_4k`/`raw_file_4k`, one new entry holding one
//!   4 KiB file per iteration, under an unlimited maximum size.
//!
//! * `commit_mode` (disk): `Durability::Committed` and `record_digests`
//!   beside a relaxed commit of a 4 KiB entry.
//! * `record_digests` (tmpfs, thread CPU time): `store_tree` and
//!   `load_or_build` of a real tree with and without the tree digest (see
//!   [`bench_record_digests`]).
//!
//! `load`, `load_disk` and `open` never block, so they are measured in the
//! thread's CPU time ([`common::cputime::ThreadCpu`]): their ratios stay
//! repeatable on a machine busy with other work. `store` and
//! `commit_mode` are wall time.
//!
//! # Why a miss is above its floor
//!
//! `load` makes the floor's calls (`strace`: the same count and kinds,
//! `openat2(RESOLVE_NO_SYMLINKS)` for `openat(O_NOFOLLOW)`, which would
//! follow a symlink planted as `NAME`). The miss's floor is one failing
//! `openat`, about 0.24 µs on ext4: at 1.05× its budget for everything
//! else is 12 ns, less than validating the name. What `perf record` of
//! `load_disk/miss` showed above the floor, in one run (miss 0.33 µs,
//! `raw_miss` 0.24 µs, 1.36×; tmpfs 0.68 and 0.62 µs, 1.05–1.10×):
//!
//! * the kernel's side of `openat2`: copying `struct open_how` in
//!   (`_copy_from_user`, about 4 % of the samples);
//! * in user space about 14 %: the name check, the path built on the
//!   stack and checked as a C string (`memcpy`, `CStr`), the beneath
//!   check of the path's components, the lock's result moved through
//!   two frames, the stripe's counter and the coarse clock.
//!
//! Gone since the first measurement: the read lock around the held
//! `objects/` descriptor (the first one is borrowed with two plain
//! loads) and the second atomic add of a stats bump (ext4 miss 0.38 →
//! 0.33 µs). `raw_hit_returned`/`raw_miss_returned` once showed a cost of
//! about 0.5 µs for the first `ret` after a system call on this guest
//! (`spec_rstack_overflow`: "Safe RET, no microcode"); on the host of the
//! run above they equal the inlined floors, and they stay as the check.
//!
//! "tmpfs" is `/dev/shm` where it exists, else the system temp directory.
//! Every cache lives in its own temporary directory, removed at the end.

// The raw-system-call baselines (and the tests that probe the raw
// protocol) are what the root `clippy.toml` routes everything else
// away from: they must make the calls themselves.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::cputime::ThreadCpu;
use common::{
    cstr, floor_load_hit, floor_miss, open_unlimited, raw_load_hit, raw_store, tmpfs_dir,
    EntryPaths, FloorPaths, FILE_4K,
};
use criterion::{black_box, Criterion};
use fscache::{FsCache, Stored};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use common::disk_dir;

/// Open a cache holding a committed entry `key` with one 4 KiB file.
fn cache_with_key(root: &Path) -> FsCache {
    let cache = open_unlimited(root);
    let guard = cache.store("key").expect("store");
    std::fs::write(guard.path().join("file"), FILE_4K).expect("write payload");
    assert_eq!(guard.commit().expect("commit"), Stored::Committed);
    cache
}

/// Benchmark `hit` beside the floor `raw_hit` and osbuild's
/// `raw_hit_osbuild` (and the same for misses) in a group of `c` on a
/// cache at `root`.
fn bench_hits(c: &mut Criterion<ThreadCpu>, group: &str, root: &Path, with_miss: bool) {
    let cache = cache_with_key(root);
    let paths = EntryPaths::new(cache.path(), "key");
    let floor = FloorPaths::new(cache.path(), "key");
    let absent = cstr(&cache.path().join("objects/absent/object.lock"));
    let mut g = c.benchmark_group(group);
    g.sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    g.bench_function("hit", |b| {
        b.iter(|| {
            let entry = cache.load(black_box("key")).expect("load").expect("hit");
            drop(black_box(entry));
        })
    });
    g.bench_function("raw_hit", |b| b.iter(|| floor_load_hit(black_box(&floor))));
    g.bench_function("raw_hit_osbuild", |b| {
        b.iter(|| raw_load_hit(black_box(&paths)))
    });
    g.bench_function("raw_hit_returned", |b| {
        b.iter(|| floor_load_hit_returned(black_box(&floor)))
    });
    if with_miss {
        g.bench_function("miss", |b| {
            b.iter(|| assert!(cache.load(black_box("absent")).expect("load").is_none()))
        });
        g.bench_function("raw_miss", |b| b.iter(|| floor_miss(black_box(&floor))));
        g.bench_function("raw_miss_returned", |b| {
            b.iter(|| floor_miss_returned(black_box(&floor)))
        });
        g.bench_function("raw_miss_osbuild", |b| {
            b.iter(|| {
                let r = rustix::fs::open(
                    black_box(absent.as_c_str()),
                    OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                );
                assert_eq!(r.err(), Some(Errno::NOENT));
            })
        });
    }
    g.finish();
}

/// [`floor_miss`] as a function that returns to its caller after the
/// system call, as any library call does (`FsCache::load` among them);
/// the floor itself is inlined into criterion's loop, where no `ret`
/// follows the system call before the next one (see the module docs).
#[inline(never)]
fn floor_miss_returned(p: &FloorPaths) {
    floor_miss(p)
}

/// [`floor_load_hit`] as a function that returns to its caller, as
/// [`floor_miss_returned`].
#[inline(never)]
fn floor_load_hit_returned(p: &FloorPaths) {
    floor_load_hit(p)
}

/// `openat2(RESOLVE_BENEATH)` of a two-component path beside `openat`
/// with `O_NOFOLLOW` one component at a time, and beside a plain `openat`
/// of both components (see the module docs).
fn bench_open(c: &mut Criterion<ThreadCpu>, root: &Path) {
    use rustix::fs::ResolveFlags;
    let cache = cache_with_key(root);
    let floor = FloorPaths::new(cache.path(), "key");
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let mut g = c.benchmark_group("open");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    g.bench_function("beneath", |b| {
        b.iter(|| {
            let fd = rustix::fs::openat2(
                &floor.objects,
                black_box(floor.lock.as_c_str()),
                flags,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            )
            .expect("openat2");
            drop(black_box(fd));
        })
    });
    g.bench_function("no_symlinks", |b| {
        b.iter(|| {
            let fd = rustix::fs::openat2(
                &floor.objects,
                black_box(floor.lock.as_c_str()),
                flags,
                Mode::empty(),
                ResolveFlags::NO_SYMLINKS,
            )
            .expect("openat2");
            drop(black_box(fd));
        })
    });
    g.bench_function("raw_single", |b| {
        b.iter(|| {
            let dir = rustix::fs::openat(
                &floor.objects,
                black_box(c"key"),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .expect("openat key");
            let fd = rustix::fs::openat(&dir, c"object.lock", flags, Mode::empty())
                .expect("openat object.lock");
            drop(black_box(fd));
        })
    });
    g.bench_function("raw_two", |b| {
        b.iter(|| {
            let fd = rustix::fs::openat(
                &floor.objects,
                black_box(floor.lock.as_c_str()),
                flags,
                Mode::empty(),
            )
            .expect("openat");
            drop(black_box(fd));
        })
    });
    g.finish();
}

fn bench_load(c: &mut Criterion<ThreadCpu>) {
    let tmp = tmpfs_dir();
    bench_hits(c, "load", tmp.path(), true);
    bench_open(c, &tmp.path().join("open"));
    drop(tmp);
    let tmp = disk_dir();
    bench_hits(c, "load_disk", tmp.path(), true);
}

/// Unique entry names across the whole run.
fn next_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn our_store(cache: &FsCache, name: &str) {
    let guard = cache.store(name).expect("store");
    std::fs::write(guard.path().join("file"), FILE_4K).expect("write payload");
    assert_eq!(guard.commit().expect("commit"), Stored::Committed);
}

/// Time `iters` stores into a fresh cache directory (created and removed
/// outside the timed section), so every sample starts from the same state.
fn time_stores(iters: u64, store: impl Fn(&FsCache, &str)) -> Duration {
    let tmp = tmpfs_dir();
    let cache = open_unlimited(tmp.path());
    let names: Vec<String> = (0..iters).map(|_| next_name("entry")).collect();
    let start = Instant::now();
    for name in &names {
        store(&cache, black_box(name));
    }
    let elapsed = start.elapsed();
    drop(cache);
    drop(tmp);
    elapsed
}

fn bench_store(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    g.bench_function("file_4k", |b| b.iter_custom(|n| time_stores(n, our_store)));
    g.bench_function("raw_file_4k", |b| {
        b.iter_custom(|n| time_stores(n, |cache, name| raw_store(cache.path(), name)))
    });
    g.finish();
}

/// The cost of `Durability::Committed` (fsync of every file and directory
/// of the entry, and of the counter) and of recording digests at commit,
/// beside a `Relaxed` commit of the same 4 KiB entry. On the disk (ext4),
/// where fsync costs what it really costs; tmpfs would show nothing.
fn bench_durability(c: &mut Criterion) {
    let mut g = c.benchmark_group("commit_mode");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(300));
    let stores = |durability: fscache::Durability, digests: bool| {
        move |iters: u64| {
            let tmp = disk_dir();
            let cache = FsCache::builder("bench")
                .max_size_if_unset(fscache::MaxSize::Unlimited)
                .durability(durability)
                .record_digests(digests)
                .open(tmp.path())
                .expect("open");
            let names: Vec<String> = (0..iters).map(|_| next_name("entry")).collect();
            let start = Instant::now();
            for name in &names {
                our_store(&cache, black_box(name));
            }
            start.elapsed()
        }
    };
    g.bench_function("baseline_relaxed", |b| {
        b.iter_custom(stores(fscache::Durability::Relaxed, false))
    });
    g.bench_function("relaxed_digest", |b| {
        b.iter_custom(stores(fscache::Durability::Relaxed, true))
    });
    g.bench_function("committed", |b| {
        b.iter_custom(stores(fscache::Durability::Committed, false))
    });
    g.finish();
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): the copy,
/// the hashing and the commit run on it, so this stays repeatable on a
/// busy machine, where wall time of the same work varied twofold.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The thread CPU time of `iters` calls of `one` on fresh names, in a
/// fresh cache on tmpfs with `record_digests(digests)`.
fn time_trees(digests: bool, iters: u64, one: impl Fn(&FsCache, &str)) -> Duration {
    let tmp = tmpfs_dir();
    let cache = FsCache::builder("bench")
        .max_size_if_unset(fscache::MaxSize::Unlimited)
        .record_digests(digests)
        .open(tmp.path())
        .expect("open");
    let names: Vec<String> = (0..iters).map(|_| next_name("tree")).collect();
    let start = thread_cpu();
    for name in &names {
        one(&cache, black_box(name));
    }
    thread_cpu() - start
}

/// The cost of [`fscache::Builder::record_digests`] on a real tree (this
/// workspace's `crates/`: source files of real sizes, about 130 of them),
/// on tmpfs, in thread CPU time (the digest's cost is CPU: one more read
/// and the hashing). Each is paired with its `raw_` baseline, the same
/// work without a digest:
///
/// * `store_tree`: the library's copy, which hashes each copy on a second
///   thread (in thread CPU time: what the calling thread spends), whatever
///   `record_digests` says; `raw_store_tree`: `store` → the plain copy
///   (`CopyOptions::copy`, no hashing) → `commit`, digests off.
/// * `load_or_build`: a miss whose build copies the tree (the plain copy),
///   digests on (the commit reads the tree once more); `raw_load_or_build`:
///   digests off.
fn bench_record_digests(c: &mut Criterion) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    let mut g = c.benchmark_group("record_digests");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(300));
    let plain_copy = |src: &Path, dst: &Path| {
        let dir = cap_std::fs::Dir::open_ambient_dir(dst, cap_std::ambient_authority())
            .expect("open data/");
        fscache::CopyOptions::new()
            .copy(src, &dir, &mut |_| Ok(()))
            .expect("copy");
    };
    g.bench_function("store_tree", |b| {
        b.iter_custom(|n| {
            time_trees(false, n, |cache, name| {
                let r = cache.store_tree(name, &src).expect("store_tree");
                assert_eq!(r, Stored::Committed);
            })
        })
    });
    g.bench_function("raw_store_tree", |b| {
        b.iter_custom(|n| {
            time_trees(false, n, |cache, name| {
                let guard = cache.store(name).expect("store");
                plain_copy(&src, guard.path());
                assert_eq!(guard.commit().expect("commit"), Stored::Committed);
            })
        })
    });
    let build = |cache: &FsCache, name: &str| {
        let got = cache
            .load_or_build(name, |dir| -> Result<(), fscache::Error> {
                plain_copy(&src, dir);
                Ok(())
            })
            .expect("load_or_build");
        assert!(matches!(got, fscache::Obtained::Built(_)));
    };
    g.bench_function("load_or_build", |b| {
        b.iter_custom(|n| time_trees(true, n, build))
    });
    g.bench_function("raw_load_or_build", |b| {
        b.iter_custom(|n| time_trees(false, n, build))
    });
    g.finish();
}

fn main() {
    let mut cpu = Criterion::default()
        .with_measurement(ThreadCpu)
        .configure_from_args();
    bench_load(&mut cpu);
    cpu.final_summary();
    let mut c = Criterion::default().configure_from_args();
    bench_store(&mut c);
    bench_durability(&mut c);
    bench_record_digests(&mut c);
    c.final_summary();
}
