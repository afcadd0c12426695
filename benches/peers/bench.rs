//! `fscache-lock` against its peers under contention, across threads (each
//! with its own open of the file) and across processes (this bench binary
//! started again as a worker, as `benches/scale.rs` does), for P = 1, 2,
//! 4, 8 workers.
//!
//! Criterion groups `peers/<scenario>/<threads|procs>`, a function per
//! crate, P as the parameter; each sample is the time per operation of all
//! workers together:
//!
//! * `uncontended`: lock/unlock cycles, each worker on its own file;
//! * `exclusive`, `shared`: cycles of one kind on one file;
//! * `mix90`, `mix50`: 90 % and 50 % shared, the rest exclusive;
//! * `handoff`: exclusive cycles where each holder stamps the time just
//!   before it unlocks and the next holder (another worker) reads it: the
//!   time from unlock to the waiter's return (P ≥ 2).
//!
//! Outside criterion ([`extras`], written to `fscache-lock-peers.json`):
//!
//! * fairness: Jain's index of the acquisitions per worker of exclusive
//!   cycles in a window, (Σx)² / (n·Σx²): 1 is perfectly fair, 1/n is one
//!   worker taking all;
//! * writer starvation: P − 1 readers hold shared locks that overlap, in a
//!   steady stream, while one writer asks for exclusive locks; the longest
//!   wait of the writer (the window bounds it: the readers stop then).
//!
//! Process-associated POSIX locks (`file-guard`, `rustix`) do not exclude
//! the threads of one process, so they have no contended thread results.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion};
use fscache_lock::LockKind::{Exclusive, Shared};

use crate::open;
use crate::peers::{Family, Peer, Wait, BENCHED};

/// The environment variable that makes the bench binary a worker: its
/// value is the role, `FSCACHE_LOCK_PEER`, `FSCACHE_LOCK_PATH`,
/// `FSCACHE_LOCK_INDEX` and `FSCACHE_LOCK_OPS` the rest.
pub const WORKER_ENV: &str = "FSCACHE_LOCK_WORKER";

/// The fewest operations per worker of one sample (outside test mode), so
/// that starting and stopping the workers, milliseconds for processes on
/// a loaded machine, is a small part of its time.
const MIN_OPS: u64 = 400;

/// Worker counts.
const P: [usize; 4] = [1, 2, 4, 8];

/// The throughput scenarios, as named in the groups.
const SCENARIOS: [&str; 6] = [
    "uncontended",
    "exclusive",
    "shared",
    "mix90",
    "mix50",
    "handoff",
];

/// How the workers run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Threads,
    Procs,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Threads => "threads",
            Mode::Procs => "procs",
        }
    }
}

/// Whether `cargo test --benches` runs this binary (criterion's quick
/// check: no `--bench`, or `--test`): then the extras run with tiny
/// windows.
fn testing() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

/// What one worker did.
#[derive(Clone, Copy, Debug, Default)]
struct Outcome {
    /// Acquisitions.
    count: u64,
    /// Acquisitions that followed another worker's release.
    handoffs: u64,
    /// Their summed latency from the release, in ns.
    handoff_ns: u64,
    /// The longest wait for one acquisition, in ns.
    max_wait_ns: u64,
}

impl Outcome {
    fn line(&self) -> String {
        format!(
            "done {} {} {} {}",
            self.count, self.handoffs, self.handoff_ns, self.max_wait_ns
        )
    }

    fn parse(line: &str) -> Self {
        let n: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|w| w.parse().expect("worker number"))
            .collect();
        assert_eq!(n.len(), 4, "worker said {line:?}");
        Self {
            count: n[0],
            handoffs: n[1],
            handoff_ns: n[2],
            max_wait_ns: n[3],
        }
    }
}

fn now_ns() -> u64 {
    // The realtime clock, since a process's `Instant` means nothing to
    // another: hand-off stamps cross processes.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One worker's loop: `role` (a scenario, `reader` or `writer`) with
/// `peer` on `path` (or its own file, `uncontended`), `ops` operations or
/// until `stop`.
fn work(
    role: &str,
    peer: &dyn Peer,
    path: &Path,
    index: usize,
    ops: u64,
    stop: &AtomicBool,
) -> Outcome {
    let own;
    let path = if role == "uncontended" {
        own = path.with_extension(format!("own{index}"));
        drop(File::create(&own).expect("create worker file"));
        own.as_path()
    } else {
        path
    };
    let file = open(path);
    let mut out = Outcome::default();
    let me = index as u64 + 1;
    let mut i = index as u64;
    let stopped = || stop.load(Ordering::Relaxed);
    match role {
        "reader" => {
            // Overlapping shared holds: 200 µs each, back to back.
            while !stopped() {
                let mut hold = || thread::sleep(Duration::from_micros(200));
                peer.with(&file, Shared, Wait::Block, &mut hold)
                    .expect("read lock");
                out.count += 1;
            }
        }
        "writer" => {
            // Let the readers start, then ask again and again until the
            // window ends; the last request may wait until the readers
            // stop, which is the point.
            thread::sleep(Duration::from_millis(5));
            loop {
                let asked = Instant::now();
                let mut waited = 0;
                let mut note = || waited = asked.elapsed().as_nanos() as u64;
                peer.with(&file, Exclusive, Wait::Block, &mut note)
                    .expect("write lock");
                out.max_wait_ns = out.max_wait_ns.max(waited);
                out.count += 1;
                if stopped() {
                    break;
                }
                thread::sleep(Duration::from_millis(2));
            }
        }
        "fairness" => {
            while !stopped() {
                peer.with(&file, Exclusive, Wait::Block, &mut || {})
                    .expect("lock");
                out.count += 1;
            }
        }
        "handoff" => {
            for _ in 0..ops {
                let mut body = || {
                    let mut stamp = [0u8; 16];
                    let _ = file.read_exact_at(&mut stamp, 0);
                    let who = u64::from_le_bytes(stamp[..8].try_into().unwrap());
                    let when = u64::from_le_bytes(stamp[8..].try_into().unwrap());
                    let now = now_ns();
                    if who != 0 && who != me && now >= when {
                        out.handoffs += 1;
                        out.handoff_ns += now - when;
                    }
                    stamp[..8].copy_from_slice(&me.to_le_bytes());
                    stamp[8..].copy_from_slice(&now_ns().to_le_bytes());
                    file.write_all_at(&stamp, 0).expect("stamp");
                };
                peer.with(&file, Exclusive, Wait::Block, &mut body)
                    .expect("lock");
                out.count += 1;
            }
        }
        scenario => {
            let every = match scenario {
                "uncontended" | "exclusive" => 1,
                "shared" => 0,
                "mix90" => 10,
                "mix50" => 2,
                other => panic!("unknown scenario {other}"),
            };
            for _ in 0..ops {
                let kind = if every != 0 && i % every == 0 {
                    Exclusive
                } else {
                    Shared
                };
                peer.with(&file, kind, Wait::Block, &mut || {})
                    .expect("lock");
                i += 1;
                out.count += 1;
            }
        }
    }
    out
}

/// Run one worker per role, all started at once; `window`: stop them
/// after it (else they run their `ops`). The time from the start until
/// all are done, and what each did.
fn run(
    mode: Mode,
    peer: &'static dyn Peer,
    roles: &[&str],
    path: &Path,
    ops: u64,
    window: Option<Duration>,
) -> (Duration, Vec<Outcome>) {
    match mode {
        Mode::Threads => run_threads(peer, roles, path, ops, window),
        Mode::Procs => run_procs(peer, roles, path, ops, window),
    }
}

fn run_threads(
    peer: &'static dyn Peer,
    roles: &[&str],
    path: &Path,
    ops: u64,
    window: Option<Duration>,
) -> (Duration, Vec<Outcome>) {
    let barrier = Barrier::new(roles.len() + 1);
    let stop = AtomicBool::new(false);
    let (barrier, stop) = (&barrier, &stop);
    thread::scope(|s| {
        let workers: Vec<_> = roles
            .iter()
            .enumerate()
            .map(|(index, role)| {
                s.spawn(move || {
                    barrier.wait();
                    // Each worker times itself: on a loaded machine the
                    // main thread may run again only after they are done.
                    let start = Instant::now();
                    let outcome = work(role, peer, path, index, ops, stop);
                    (start, Instant::now(), outcome)
                })
            })
            .collect();
        barrier.wait();
        if let Some(window) = window {
            thread::sleep(window);
            stop.store(true, Ordering::Relaxed);
        }
        let done: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().expect("bench thread"))
            .collect();
        let start = done.iter().map(|d| d.0).min().expect("a worker");
        let end = done.iter().map(|d| d.1).max().expect("a worker");
        (end - start, done.into_iter().map(|d| d.2).collect())
    })
}

fn run_procs(
    peer: &'static dyn Peer,
    roles: &[&str],
    path: &Path,
    ops: u64,
    window: Option<Duration>,
) -> (Duration, Vec<Outcome>) {
    let exe = std::env::current_exe().expect("bench executable");
    let mut children: Vec<(Child, BufReader<ChildStdout>)> = roles
        .iter()
        .enumerate()
        .map(|(index, role)| {
            let mut child = Command::new(&exe)
                .env(WORKER_ENV, role)
                .env("FSCACHE_LOCK_PEER", peer.name())
                .env("FSCACHE_LOCK_PATH", path)
                .env("FSCACHE_LOCK_INDEX", index.to_string())
                .env("FSCACHE_LOCK_OPS", ops.to_string())
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
    let say = |children: &mut Vec<(Child, BufReader<ChildStdout>)>, what: &[u8]| {
        for (child, _) in children.iter_mut() {
            let stdin = child.stdin.as_mut().expect("piped");
            stdin
                .write_all(what)
                .and_then(|()| stdin.flush())
                .expect("tell worker");
        }
    };
    let start = Instant::now();
    say(&mut children, b"go\n");
    if let Some(window) = window {
        thread::sleep(window);
        say(&mut children, b"stop\n");
    }
    let outcomes = children
        .iter_mut()
        .map(|(_, out)| {
            line.clear();
            out.read_line(&mut line).expect("worker done");
            Outcome::parse(line.trim())
        })
        .collect();
    let spent = start.elapsed();
    for (mut child, _) in children {
        drop(child.stdin.take());
        assert!(child.wait().expect("wait worker").success());
    }
    (spent, outcomes)
}

/// The worker side of [`run_procs`]: `ready`, wait for `go`, work (until
/// `stop` arrives, for the windowed roles), then `done …`.
pub fn worker(role: &str) {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} unset"));
    let peer = crate::peers::by_name(&var("FSCACHE_LOCK_PEER")).expect("known peer");
    let path = PathBuf::from(var("FSCACHE_LOCK_PATH"));
    let index: usize = var("FSCACHE_LOCK_INDEX").parse().expect("index");
    let ops: u64 = var("FSCACHE_LOCK_OPS").parse().expect("ops");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .expect("stdout");
    let mut stdin = BufReader::new(std::io::stdin());
    let mut line = String::new();
    stdin.read_line(&mut line).expect("stdin");
    static STOP: AtomicBool = AtomicBool::new(false);
    thread::spawn(move || {
        // `stop`, or the end of stdin: either ends a windowed role.
        let mut line = String::new();
        let _ = stdin.read_line(&mut line);
        STOP.store(true, Ordering::Relaxed);
    });
    let out = work(role, peer, &path, index, ops, &STOP);
    writeln!(stdout, "{}", out.line())
        .and_then(|()| stdout.flush())
        .expect("stdout");
}

/// Whether `peer` has results in `mode` for `scenario`: POSIX locks do
/// not exclude threads of one process.
fn applies(peer: &dyn Peer, mode: Mode, scenario: &str) -> bool {
    mode == Mode::Procs || peer.family() != Family::Posix || scenario == "uncontended"
}

/// The criterion groups.
pub fn groups(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("bench dir");
    let path = dir.path().join("lock");
    drop(File::create(&path).expect("bench file"));
    for scenario in SCENARIOS {
        for mode in [Mode::Threads, Mode::Procs] {
            let mut g = c.benchmark_group(format!("peers/{scenario}/{}", mode.name()));
            g.sample_size(10)
                .warm_up_time(Duration::from_millis(200))
                .measurement_time(Duration::from_millis(600));
            for p in P {
                if scenario == "handoff" && p == 1 {
                    continue;
                }
                for peer in BENCHED {
                    if !applies(peer, mode, scenario) {
                        continue;
                    }
                    let roles = vec![scenario; p];
                    g.bench_with_input(BenchmarkId::new(peer.name(), p), &p, |b, &p| {
                        b.iter_custom(|iters| {
                            let least = if testing() { 1 } else { MIN_OPS };
                            let per = iters.div_ceil(p as u64).max(least);
                            let (spent, outcomes) = run(mode, peer, &roles, &path, per, None);
                            if scenario == "handoff" {
                                // The mean hand-off latency, per iteration.
                                let (n, ns) = outcomes
                                    .iter()
                                    .fold((0, 0), |(n, ns), o| (n + o.handoffs, ns + o.handoff_ns));
                                Duration::from_nanos(ns / n.max(1) * iters)
                            } else {
                                // Per operation of all workers together.
                                spent.mul_f64(iters as f64 / (per * p as u64) as f64)
                            }
                        })
                    });
                }
            }
            g.finish();
        }
    }
}

/// Jain's fairness index of `counts`: (Σx)² / (n·Σx²).
fn jain(counts: &[u64]) -> f64 {
    let sum: f64 = counts.iter().map(|&x| x as f64).sum();
    let squares: f64 = counts.iter().map(|&x| (x as f64).powi(2)).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (counts.len() as f64 * squares)
}

/// Fairness and writer starvation for every peer, mode and P ≥ 2, written
/// as JSON to `fscache-lock-peers.json` in `home` and printed.
pub fn extras(home: &Path) {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let window = if testing() {
        Duration::from_millis(20)
    } else {
        Duration::from_millis(400)
    };
    let dir = tempfile::tempdir().expect("bench dir");
    let path = dir.path().join("lock");
    drop(File::create(&path).expect("bench file"));
    let mut rows = Vec::new();
    for (metric, unit) in [("fairness", "jain"), ("starvation", "ms")] {
        for mode in [Mode::Threads, Mode::Procs] {
            let group = format!("peers/{metric}/{}", mode.name());
            if !wanted(&group) {
                continue;
            }
            for p in P.into_iter().filter(|&p| p > 1) {
                for peer in BENCHED {
                    if !applies(peer, mode, metric) {
                        continue;
                    }
                    let roles: Vec<&str> = match metric {
                        "fairness" => vec!["fairness"; p],
                        _ => std::iter::once("writer")
                            .chain(vec!["reader"; p - 1])
                            .collect(),
                    };
                    let (_, outcomes) = run(mode, peer, &roles, &path, u64::MAX, Some(window));
                    let value = match metric {
                        "fairness" => jain(&outcomes.iter().map(|o| o.count).collect::<Vec<_>>()),
                        _ => outcomes[0].max_wait_ns as f64 / 1e6,
                    };
                    println!("{group}/{}/{p}: {value:.3} {unit}", peer.name());
                    rows.push(serde_json::json!({
                        "group": group, "peer": peer.name(), "p": p,
                        "value": value, "unit": unit,
                    }));
                }
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    let report = serde_json::json!({
        "window_ms": window.as_millis() as u64,
        "fairness": "Jain's index of exclusive acquisitions per worker (1 = fair)",
        "starvation": "longest wait of one writer among P-1 overlapping readers, ms (the window bounds it)",
        "rows": rows,
    });
    let out = home.join("fscache-lock-peers.json");
    let written = std::fs::create_dir_all(home)
        .and_then(|()| std::fs::write(&out, serde_json::to_string_pretty(&report).expect("json")));
    match written {
        Ok(()) => println!("fairness and starvation written to {}", out.display()),
        Err(e) => eprintln!("failed to write {}: {e}", out.display()),
    }
}
