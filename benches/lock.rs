//! Criterion benchmarks of `fscache-lock`: beside a raw `fcntl` baseline
//! (the uncontended cost of a lock/unlock cycle, throughput under
//! contention from 1–8 threads), and beside its peers (`peers/…` groups,
//! see [`peers_bench`]), across threads and across processes.
//!
//! Baselines are named `raw_fcntl_<X>` for benchmark `<X>` of the same group
//! and parameter, which is how `cargo xtask bench` pairs them for ratios.
//! The peers' groups are `peers/<scenario>/<threads|procs>`, a function per
//! crate and P as the parameter; `cargo xtask bench lock` prints them as
//! one table of ratios to `fscache-lock`, with the measurements that are
//! not times (fairness, writer starvation) from
//! `fscache-lock-peers.json` in criterion's output directory.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use fscache_lock::{FileLock, LockKind};
use fscache_testkit::open_rw as open;

#[path = "peers/mod.rs"]
mod peers;
#[path = "peers/bench.rs"]
mod peers_bench;

/// The kinds benchmarked, with the name used in benchmark ids.
const KINDS: [(&str, LockKind); 2] = [
    ("shared", LockKind::Shared),
    ("exclusive", LockKind::Exclusive),
];

/// Thread counts of the contention group.
const THREADS: [u64; 4] = [1, 2, 4, 8];

fn l_type(kind: LockKind) -> libc::c_int {
    match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
    }
}

/// The baseline: one raw `fcntl(fd, cmd, &flock)` on the whole file.
#[allow(unsafe_code)]
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
/// own open of `path`; the time from the first thread's start until the
/// last is done, as the threads measure it (on a loaded machine the main
/// thread may run again only after they have finished).
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
                    let start = Instant::now();
                    for _ in 0..n {
                        cycle(&file);
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        barrier.wait();
        let times: Vec<(Instant, Instant)> = workers
            .into_iter()
            .map(|w| w.join().expect("bench thread"))
            .collect();
        let start = times.iter().map(|t| t.0).min().expect("a thread");
        let end = times.iter().map(|t| t.1).max().expect("a thread");
        end - start
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

// What `criterion_group!`/`criterion_main!` expand to, written out so the
// bench binary can be its own worker process first, and the peers' extra
// measurements can follow the groups.
fn main() {
    if let Ok(role) = std::env::var(peers_bench::WORKER_ENV) {
        return peers_bench::worker(&role);
    }
    let mut c = Criterion::default().configure_from_args();
    uncontended(&mut c);
    contention(&mut c);
    peers_bench::groups(&mut c);
    c.final_summary();
    peers_bench::extras(&criterion_home());
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
