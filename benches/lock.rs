//! Criterion benchmarks of `fscache-lock`, each beside a raw `fcntl`
//! baseline: the uncontended cost of a lock/unlock cycle, throughput under
//! contention from 1–8 threads, and (outside criterion) a fairness report.
//!
//! Baselines are named `raw_fcntl_<X>` for benchmark `<X>` of the same group
//! and parameter, which is how `cargo xtask bench` pairs them for ratios.
//! The fairness report (acquisitions per thread in a fixed window) goes to
//! `fscache-fairness.json` in criterion's output directory.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use fscache_lock::{FileLock, LockKind};
use fscache_testkit::open_rw as open;

/// The kinds benchmarked, with the name used in benchmark ids.
const KINDS: [(&str, LockKind); 2] = [
    ("shared", LockKind::Shared),
    ("exclusive", LockKind::Exclusive),
];

/// Thread counts of the contention group.
const THREADS: [u64; 4] = [1, 2, 4, 8];

/// The fairness measurement window per configuration.
const FAIRNESS_WINDOW: Duration = Duration::from_millis(300);

fn l_type(kind: LockKind) -> libc::c_int {
    match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
    }
}

/// The baseline: one raw `fcntl(fd, cmd, &flock)` on the whole file.
fn raw_fcntl(file: &File, cmd: libc::c_int, l_type: libc::c_int) {
    let mut lock = libc::flock {
        l_type: l_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: `file` keeps the descriptor open for the call, and `lock` is
    // a valid `struct flock` that the OFD lock commands only read; the
    // kernel keeps no pointer to it.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut lock as *mut libc::flock) };
    assert_ne!(ret, -1, "fcntl: {}", io::Error::last_os_error());
}

/// A raw lock/unlock cycle: `F_OFD_SETLK[W]` then `F_UNLCK`.
fn raw_cycle(file: &File, cmd: libc::c_int, kind: LockKind) {
    raw_fcntl(file, cmd, l_type(kind));
    raw_fcntl(file, libc::F_OFD_SETLK, libc::F_UNLCK);
}

fn uncontended(c: &mut Criterion) {
    let tmp = tempfile::NamedTempFile::new().expect("create bench file");
    let file = open(tmp.path());
    let file = &file;
    let mut group = c.benchmark_group("uncontended");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500));
    for (name, kind) in KINDS {
        group.bench_function(name, |b| {
            b.iter(|| {
                drop(
                    FileLock::try_lock(file, kind)
                        .unwrap()
                        .expect("uncontended"),
                )
            })
        });
        group.bench_function(format!("raw_fcntl_{name}"), |b| {
            b.iter(|| raw_cycle(file, libc::F_OFD_SETLK, kind))
        });
    }
    group.finish();
}

/// Run `total` calls of `cycle` spread over `threads` threads, each with its
/// own open of `path`; the time from a common start until all are done.
fn spread<C: Fn(&File) + Sync>(path: &Path, threads: u64, total: u64, cycle: C) -> Duration {
    let barrier = Barrier::new(threads as usize + 1);
    let (barrier, cycle) = (&barrier, &cycle);
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let n = total / threads + u64::from(i < total % threads);
                let file = open(path);
                s.spawn(move || {
                    barrier.wait();
                    for _ in 0..n {
                        cycle(&file);
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for worker in workers {
            worker.join().expect("bench thread");
        }
        start.elapsed()
    })
}

fn contention(c: &mut Criterion) {
    let tmp = tempfile::NamedTempFile::new().expect("create bench file");
    let path = tmp.path();
    let mut group = c.benchmark_group("contention");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    for threads in THREADS {
        for (name, kind) in KINDS {
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &n| {
                b.iter_custom(|iters| {
                    spread(path, n, iters, |f| drop(FileLock::lock(f, kind).unwrap()))
                })
            });
            let raw = format!("raw_fcntl_{name}");
            group.bench_with_input(BenchmarkId::new(raw, threads), &threads, |b, &n| {
                b.iter_custom(|iters| {
                    spread(path, n, iters, |f| raw_cycle(f, libc::F_OFD_SETLKW, kind))
                })
            });
        }
    }
    group.finish();
}

/// Acquisitions per thread of blocking `FileLock::lock` cycles on separate
/// opens of one file during [`FAIRNESS_WINDOW`].
fn fairness_counts(path: &Path, threads: u64, kind: LockKind) -> Vec<u64> {
    let barrier = Barrier::new(threads as usize + 1);
    let stop = AtomicBool::new(false);
    let (barrier, stop) = (&barrier, &stop);
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let file = open(path);
                s.spawn(move || {
                    let mut count = 0;
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        drop(FileLock::lock(&file, kind).unwrap());
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        barrier.wait();
        thread::sleep(FAIRNESS_WINDOW);
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .map(|w| w.join().expect("fairness thread"))
            .collect()
    })
}

/// Where criterion writes its reports: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `target/criterion` of the workspace.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// Measure fairness and write it as JSON for `cargo xtask bench`.
fn fairness() {
    let tmp = tempfile::NamedTempFile::new().expect("create bench file");
    let mut results = Vec::new();
    for (name, kind) in KINDS {
        for threads in THREADS.into_iter().filter(|&n| n > 1) {
            let counts = fairness_counts(tmp.path(), threads, kind);
            let max = counts.iter().copied().max().unwrap_or(0);
            let min = counts.iter().copied().min().unwrap_or(0);
            let ratio = (min > 0).then(|| max as f64 / min as f64);
            println!("fairness/{name}/{threads}: counts {counts:?}, max/min {ratio:?}");
            results.push(serde_json::json!({
                "kind": name,
                "threads": threads,
                "counts": counts,
                "max_over_min": ratio,
            }));
        }
    }
    let report = serde_json::json!({
        "what": "blocking FileLock::lock/unlock cycles per thread, separate opens of one file",
        "window_ms": FAIRNESS_WINDOW.as_millis() as u64,
        "max_over_min_null_means": "a thread never acquired the lock (starved)",
        "results": results,
    });
    let home = criterion_home();
    let path = home.join("fscache-fairness.json");
    let written = std::fs::create_dir_all(&home)
        .and_then(|()| std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")));
    match written {
        Ok(()) => println!("fairness report written to {}", path.display()),
        Err(e) => eprintln!("failed to write {}: {e}", path.display()),
    }
}

/// Whether to measure fairness: only in `cargo bench` (not when `cargo test`
/// runs this file once as a smoke test), and only when no name filter was
/// given or the filter is part of `contention/fairness`.
fn fairness_wanted() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let listing = args.iter().any(|a| a == "--list");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    bench_mode
        && !listing
        && (filters.is_empty()
            || filters
                .iter()
                .any(|f| "contention/fairness".contains(f.as_str())))
}

// What `criterion_group!`/`criterion_main!` expand to, written out so the
// fairness report can follow the groups (and no undocumented `pub fn`).
fn main() {
    let mut c = Criterion::default().configure_from_args();
    uncontended(&mut c);
    contention(&mut c);
    c.final_summary();
    if fairness_wanted() {
        fairness();
    }
}
