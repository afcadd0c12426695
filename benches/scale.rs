//! Criterion benchmarks of the cache at scale, each beside a baseline that
//! runs the same v1 protocol in raw system calls (`benches/common`), so a
//! result reads as a ratio in `cargo xtask bench`:
//!
//! * `evict_worst/N`: a cache of N entries (one 4 KiB file each) filled to
//!   its limit, and no kept eviction list (`cache.evict` removed); a new
//!   handle stores one more entry, the store that hits the limit: its scan
//!   and its removals. `store` beside `raw_store` (which scans, plans down
//!   to the 90 % watermark and removes what it needs). The cache is
//!   refilled to its limit between samples, untimed.
//! * `evict_fresh/N`: the first store of a fresh process into the full
//!   cache, as every `fscache store` and every build step run as its own
//!   process makes it: a new handle, with the kept list an earlier process
//!   planned in `cache.evict`. `store` beside `raw_store`, the floor: a
//!   fresh raw evictor, which scans once and evicts one entry. N is 10,000
//!   and 50,000 (`--test`: 100).
//! * `evict_mean/N`: the mean of N/4 consecutive stores into the full
//!   cache through one new handle (the first pays the scan).
//! * `procs/P`: store and load throughput of P processes at once, as the
//!   time per operation of all of them together (`store`/`raw_store`:
//!   unlimited cache, distinct names; `load`/`raw_load`: hits on one
//!   entry, the baseline the 6-call floor of `benches/cache.rs`).
//! * `tree`: `store_tree` of a generated tree (2,000 files in 20
//!   directories, 40 MiB) beside `cp -a --reflink=auto` of it
//!   (`baseline_cp_a`).
//! * `faithful_tree`, `sparse_10g`, `faithful_remote`: faithful trees, the
//!   real one and a 10 GiB sparse file (module `faithful`, its docs).
//!
//! N is 1,000 and 10,000; `FSCACHE_BENCH_BIG=1` adds N = 100,000 and a
//! 1 GiB tree of 50,000 files (`--test`, as `cargo test --benches` runs
//! each benchmark once: N = 100 and 100 files). Everything lives on tmpfs
//! (`/dev/shm`).
//!
//! The bench binary is also its own worker process: with
//! `FSCACHE_BENCH_WORKER` set it runs one worker (see [`worker`]) instead
//! of criterion. `FSCACHE_BENCH_WORKER=trace-store|trace-load|trace-miss`
//! (or a baseline's: `trace-raw_store`, `trace-raw_load`,
//! `trace-raw_load_osbuild`, `trace-raw_miss`) with
//! `FSCACHE_BENCH_ROOT=DIR` does one operation between two marker
//! writes to stderr, for counting its system calls:
//!
//! ```text
//! FSCACHE_BENCH_WORKER=trace-store FSCACHE_BENCH_ROOT=/dev/shm/t \
//!   strace -f -o /tmp/trace target/release/deps/scale-<hash>
//! sed -n '/@@begin/,/@@end/p' /tmp/trace
//! ```

mod common;
mod faithful;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    floor_load_hit, floor_miss, open_limited, open_unlimited, raw_load_hit, raw_store, tmpfs_dir,
    EntryPaths, FloorPaths, RawEvictor, FILE_4K,
};
use criterion::{black_box, BenchmarkId, Criterion, SamplingMode};
use fscache::{FsCache, MaxSize, Stored};

/// Unique entry names across the whole run.
fn next_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn big() -> bool {
    std::env::var_os("FSCACHE_BENCH_BIG").is_some_and(|v| v != "0")
}

/// Store one 4 KiB file as `name`; the space it was charged.
fn our_store(cache: &FsCache, name: &str) -> u64 {
    let guard = cache.store(name).expect("store");
    std::fs::write(guard.path().join("file"), FILE_4K).expect("write payload");
    let report = guard.commit_report().expect("commit");
    assert_eq!(report.stored, Stored::Committed);
    report.size
}

/// `cache.size` of the cache at `root`.
fn accounted(root: &Path) -> u64 {
    std::fs::read_to_string(root.join("cache.size"))
        .expect("read cache.size")
        .trim()
        .parse()
        .expect("an integer")
}

/// A cache of maximum size `n` + ½ entries, and the space of one entry.
struct Full {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    limit: u64,
    one: u64,
}

impl Full {
    /// A cache filled with `n` entries, up to its limit.
    fn new(n: u64) -> Self {
        let tmp = tmpfs_dir();
        let cache = open_unlimited(tmp.path());
        let root = cache.path().to_owned();
        let one = our_store(&cache, &next_name("fill"));
        for _ in 1..n {
            our_store(&cache, &next_name("fill"));
        }
        let limit = n * one + one / 2;
        drop(cache);
        let full = Self {
            _tmp: tmp,
            root,
            limit,
            one,
        };
        let cache = full.handle();
        drop(cache);
        full
    }

    /// A new handle, with the cache's limit set.
    fn handle(&self) -> FsCache {
        open_limited(
            self.root.parent().expect("root/cache"),
            MaxSize::Bytes(self.limit),
        )
    }

    /// Store until the next store would evict (untimed between samples).
    fn refill(&self, store: &mut dyn FnMut(&str)) {
        while accounted(&self.root) + self.one <= self.limit {
            store(&next_name("refill"));
        }
    }
}

/// Whether criterion runs each benchmark once as a test (`cargo test
/// --benches`, `--test`): small sizes then, the code paths are the point.
fn quick() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn sizes() -> Vec<u64> {
    if quick() {
        return vec![100];
    }
    let mut n = vec![1_000, 10_000];
    if big() {
        n.push(100_000);
    }
    n
}

/// The sizes of `evict_fresh`.
fn fresh_sizes() -> Vec<u64> {
    if quick() {
        return vec![100];
    }
    vec![10_000, 50_000]
}

/// Remove the kept eviction list of the cache at `root`.
fn forget_list(root: &Path) {
    match std::fs::remove_file(root.join("cache.evict")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("remove cache.evict: {e}"),
        _ => {}
    }
}

fn bench_evict_fresh(c: &mut Criterion) {
    let mut g = c.benchmark_group("evict_fresh");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(100));
    for n in fresh_sizes() {
        // One cache for both: the floor keeps no state between stores, and
        // refills put the cache back at its limit before every sample.
        let full = Full::new(n);
        // An earlier process's evicting store planned the kept list.
        let cache = full.handle();
        our_store(&cache, &next_name("primer"));
        drop(cache);
        assert!(full.root.join("cache.evict").is_file(), "a kept list");
        g.bench_with_input(BenchmarkId::new("store", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let cache = full.handle();
                    full.refill(&mut |name| {
                        our_store(&cache, name);
                    });
                    drop(cache);
                    let cache = full.handle();
                    let name = next_name("fresh");
                    let t = Instant::now();
                    our_store(&cache, black_box(&name));
                    spent += t.elapsed();
                }
                spent
            })
        });
        g.bench_with_input(BenchmarkId::new("raw_store", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let mut evictor = RawEvictor::default();
                    full.refill(&mut |name| evictor.store(&full.root, name, full.limit));
                    let mut evictor = RawEvictor::default();
                    let name = next_name("fresh");
                    let t = Instant::now();
                    evictor.store(&full.root, black_box(&name), full.limit);
                    spent += t.elapsed();
                }
                spent
            })
        });
    }
    g.finish();
}

fn bench_evict(c: &mut Criterion) {
    let mut g = c.benchmark_group("evict_worst");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(100));
    for n in sizes() {
        let ours = Full::new(n);
        g.bench_with_input(BenchmarkId::new("store", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let cache = ours.handle();
                    ours.refill(&mut |name| {
                        our_store(&cache, name);
                    });
                    drop(cache);
                    // No process planned eviction yet.
                    forget_list(&ours.root);
                    let cache = ours.handle();
                    let name = next_name("worst");
                    let t = Instant::now();
                    our_store(&cache, black_box(&name));
                    spent += t.elapsed();
                }
                spent
            })
        });
        drop(ours);
        let raw = Full::new(n);
        g.bench_with_input(BenchmarkId::new("raw_store", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let mut evictor = RawEvictor::default();
                    raw.refill(&mut |name| evictor.store(&raw.root, name, raw.limit));
                    let mut evictor = RawEvictor::default();
                    let name = next_name("worst");
                    let t = Instant::now();
                    evictor.store(&raw.root, black_box(&name), raw.limit);
                    spent += t.elapsed();
                }
                spent
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("evict_mean");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(100));
    for n in sizes() {
        let batch = n / 4;
        let ours = Full::new(n);
        g.bench_with_input(BenchmarkId::new("store", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let cache = ours.handle();
                    ours.refill(&mut |name| {
                        our_store(&cache, name);
                    });
                    drop(cache);
                    forget_list(&ours.root);
                    let cache = ours.handle();
                    let names: Vec<String> = (0..batch).map(|_| next_name("churn")).collect();
                    let t = Instant::now();
                    for name in &names {
                        our_store(&cache, black_box(name));
                    }
                    spent += t.elapsed() / batch as u32;
                }
                spent
            })
        });
        drop(ours);
        let raw = Full::new(n);
        g.bench_with_input(BenchmarkId::new("raw_store", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let mut evictor = RawEvictor::default();
                    raw.refill(&mut |name| evictor.store(&raw.root, name, raw.limit));
                    let mut evictor = RawEvictor::default();
                    let names: Vec<String> = (0..batch).map(|_| next_name("churn")).collect();
                    let t = Instant::now();
                    for name in &names {
                        evictor.store(&raw.root, black_box(name), raw.limit);
                    }
                    spent += t.elapsed() / batch as u32;
                }
                spent
            })
        });
    }
    g.finish();
}

/// Start `procs` workers of `kind` on the cache at `root`, each doing
/// `ops` operations once all are ready; the wall time from the start
/// signal until all are done.
fn run_workers(kind: &str, root: &Path, procs: u64, ops: u64) -> Duration {
    let exe = std::env::current_exe().expect("bench executable");
    let mut children: Vec<(Child, BufReader<std::process::ChildStdout>)> = (0..procs)
        .map(|_| {
            let mut child = Command::new(&exe)
                .env("FSCACHE_BENCH_WORKER", kind)
                .env("FSCACHE_BENCH_ROOT", root)
                .env("FSCACHE_BENCH_OPS", ops.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn worker");
            let out = BufReader::new(child.stdout.take().expect("piped"));
            (child, out)
        })
        .collect();
    let mut line = String::new();
    for (_, out) in &mut children {
        line.clear();
        out.read_line(&mut line).expect("worker ready");
        assert_eq!(line.trim(), "ready", "worker failed to start");
    }
    let t = Instant::now();
    for (child, _) in &mut children {
        let stdin = child.stdin.as_mut().expect("piped");
        stdin.write_all(b"go\n").expect("start worker");
        stdin.flush().expect("start worker");
    }
    for (_, out) in &mut children {
        line.clear();
        out.read_line(&mut line).expect("worker done");
        assert_eq!(line.trim(), "done", "worker failed");
    }
    let spent = t.elapsed();
    for (mut child, _) in children {
        drop(child.stdin.take());
        assert!(child.wait().expect("wait worker").success());
    }
    spent
}

fn bench_procs(c: &mut Criterion) {
    let mut g = c.benchmark_group("procs");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for procs in [1u64, 2, 4] {
        for kind in ["store", "raw_store", "load", "raw_load"] {
            let tmp = tmpfs_dir();
            let cache = open_unlimited(tmp.path());
            our_store(&cache, "key");
            let root = cache.path().to_owned();
            g.bench_with_input(BenchmarkId::new(kind, procs), &procs, |b, &procs| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(procs);
                    let spent = run_workers(kind, &root, procs, per);
                    // Per operation of the whole group.
                    spent.mul_f64(iters as f64 / (per * procs) as f64)
                })
            });
        }
    }
    g.finish();
}

/// Write a tree of `files` files in directories of 100, sizes cycling
/// through 0..=`max_kib` KiB.
fn make_tree(root: &Path, files: u64, max_kib: u64) {
    let block = vec![0x5au8; (max_kib * 1024) as usize];
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).expect("mkdir");
        }
        let len = ((i * 7919) % (max_kib + 1) * 1024) as usize;
        std::fs::write(dir.join(format!("f{i:05}")), &block[..len]).expect("write");
    }
}

fn bench_tree(c: &mut Criterion) {
    let mut g = c.benchmark_group("tree");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(100));
    let (files, max_kib) = match (quick(), big()) {
        (true, _) => (100, 4),
        (false, true) => (50_000, 40),
        (false, false) => (2_000, 40),
    };
    let src = tmpfs_dir();
    make_tree(src.path(), files, max_kib);
    let tmp = tmpfs_dir();
    let cache = open_unlimited(tmp.path());
    g.bench_function(BenchmarkId::new("store_tree", files), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let name = next_name("tree");
                let t = Instant::now();
                let stored = cache.store_tree(&name, src.path()).expect("store_tree");
                spent += t.elapsed();
                assert_eq!(stored, Stored::Committed);
                let _ = cache.remove(&name).expect("remove");
            }
            spent
        })
    });
    let dst = tmpfs_dir();
    g.bench_function(BenchmarkId::new("baseline_cp_a", files), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let to = dst.path().join(next_name("tree"));
                let t = Instant::now();
                let status = Command::new("cp")
                    .args(["-a", "--reflink=auto"])
                    .arg(src.path())
                    .arg(&to)
                    .status()
                    .expect("run cp");
                spent += t.elapsed();
                assert!(status.success());
                std::fs::remove_dir_all(&to).expect("remove copy");
            }
            spent
        })
    });
    g.finish();
}

/// The worker side of [`run_workers`] and the traced operations: runs when
/// `FSCACHE_BENCH_WORKER` is set, instead of criterion.
fn worker(kind: &str) {
    let root = PathBuf::from(std::env::var_os("FSCACHE_BENCH_ROOT").expect("FSCACHE_BENCH_ROOT"));
    let ops: u64 = std::env::var("FSCACHE_BENCH_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    if let Some(op) = kind.strip_prefix("trace-") {
        return trace(op, &root, ops);
    }
    let cache = FsCache::open(common::APPID, &root).expect("open cache");
    let pid = std::process::id();
    let names: Vec<String> = (0..ops).map(|i| format!("w{pid}-{i}")).collect();
    let floor = FloorPaths::new(&root, "key");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .expect("stdout");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
    match kind {
        "store" => names.iter().for_each(|n| {
            our_store(&cache, n);
        }),
        "raw_store" => names.iter().for_each(|n| raw_store(&root, n)),
        "load" => {
            for _ in 0..ops {
                drop(black_box(cache.load("key").expect("load").expect("hit")));
            }
        }
        "raw_load" => (0..ops).for_each(|_| floor_load_hit(&floor)),
        other => panic!("unknown worker {other}"),
    }
    writeln!(stdout, "done")
        .and_then(|()| stdout.flush())
        .expect("stdout");
}

/// `ops` operations `op` (`store`, `load`, `miss`, or the raw protocol's
/// `raw_store`, `raw_load`) on a cache at `root`, after one untraced
/// warm-up of the same, between `@@begin` and `@@end` written to stderr
/// (for `strace`; many operations for `perf`).
fn trace(op: &str, root: &Path, ops: u64) {
    let cache = open_unlimited(root);
    our_store(&cache, "key");
    let paths = EntryPaths::new(cache.path(), "key");
    let floor = FloorPaths::new(cache.path(), "key");
    let run = |name: &str| match op {
        "store" => {
            our_store(&cache, name);
        }
        "raw_store" => raw_store(cache.path(), name),
        "load" => drop(cache.load("key").expect("load").expect("hit")),
        "raw_load" => floor_load_hit(&floor),
        "raw_load_osbuild" => raw_load_hit(&paths),
        "raw_miss" => floor_miss(&floor),
        "miss" => assert!(cache.load("absent").expect("load").is_none()),
        other => panic!("unknown trace {other}"),
    };
    run("warm");
    // One `write(2, …)` each: the markers in the trace.
    let mut stderr = std::io::stderr();
    let _ = stderr.write_all(b"@@begin\n");
    for i in 0..ops {
        run(&format!("traced-{i}"));
    }
    let _ = stderr.write_all(b"@@end\n");
}

fn main() {
    if let Ok(kind) = std::env::var("FSCACHE_BENCH_WORKER") {
        return worker(&kind);
    }
    let mut c = Criterion::default().configure_from_args();
    bench_evict(&mut c);
    bench_evict_fresh(&mut c);
    bench_procs(&mut c);
    bench_tree(&mut c);
    faithful::bench_store(&mut c);
    faithful::bench_remote(&mut c);
    c.final_summary();
}
