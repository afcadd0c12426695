//! Benchmark of the remote tier against its baselines, one run, printed as
//! a table of times, request counts, peak memory and ratios (run by
//! `cargo xtask bench`, `cargo xtask remote-bench` (which installs s3s-fs
//! and restic first), or `cargo bench -p fscache-remote --bench remote`).
//!
//! A generated tree (CI size: 10 000 files, about 190 MiB, in 100
//! directories: 9000 × 4 KiB, 900 × 64 KiB, 100 × 1 MiB; with
//! `FSCACHE_BENCH_FULL=1`: 50 000 files, about 1 GiB: 45 000 × 4 KiB,
//! 4000 × 64 KiB, 1000 × 640 KiB), of text-like, half-compressible
//! content, unique per file, is stored in a local cache and then, on each
//! service of `FSCACHE_BENCH_SERVICES` (default `fs,moto,s3s`: the `fs`
//! service in a temporary directory, moto's S3 server and `s3s-fs`, each
//! on 127.0.0.1 when it can be started), measured:
//!
//! * `baseline push`: `tar -cf - . | zstd -3 -T0` of the entry, then one
//!   PUT of the archive (through the same OpenDAL operator);
//! * `push`: `Remote::push` of the entry to an empty remote;
//! * `baseline pull`: one GET of the archive, then `zstd -d | tar -x`;
//! * `pull`: `Remote::pull` into an empty cache (checked and committed);
//! * `restic backup` and `restic restore` of the same tree into the same
//!   bucket (S3 services, when `restic` is installed);
//! * `second push`: `Remote::push` of a copy of the entry with 1 % of its
//!   files changed (100 bytes overwritten in each): its bytes as a share
//!   of the first push's (goal ≤ 2 %);
//! * `pull shared`: a pull of that copy into an empty cache, whose blobs
//!   sit in the first push's packs: bytes read over its own compressed
//!   bytes (goal ≤ 1.5×);
//! * `prune`: of a remote of 100 small entries, half of them unused for
//!   two days (then again after the grace period, to delete the condemned
//!   packs);
//! * `load_or_pull` of a local hit beside `fscache::FsCache::load`.
//!
//! On the S3 services every request goes through a latency proxy on
//! 127.0.0.1 (`tests/remote/proxy.rs`) that holds each request
//! `FSCACHE_BENCH_DELAY_MS` (default 10) before passing it on, and counts
//! the requests. Push and pull (ours and the baselines) run as child
//! processes under `/usr/bin/time -v` when it exists, for their peak
//! memory (goal ≤ 256 MiB). `FSCACHE_BENCH_CONCURRENCY=N` sets the
//! requests in flight (default 16).
//!
//! Without `--bench` (as `cargo test --benches` runs it) it runs once on a
//! small tree, as a smoke test.

#[path = "../tests/remote/proxy.rs"]
mod proxy;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fscache::{CacheInfo, FsCache, MaxSize};
use fscache_remote::{PruneOptions, Pushed, RemoteBuilder};
use proxy::{Counts, LatencyProxy};

/// The tree's shape: (files per directory of each size class, size).
struct Shape {
    dirs: usize,
    classes: &'static [(usize, usize)],
}

const CI: Shape = Shape {
    dirs: 100,
    classes: &[(90, 4 << 10), (9, 64 << 10), (1, 1 << 20)],
};
const FULL: Shape = Shape {
    dirs: 500,
    classes: &[(90, 4 << 10), (8, 64 << 10), (2, 640 << 10)],
};
const SMOKE: Shape = Shape {
    dirs: 4,
    classes: &[(10, 4 << 10), (1, 300 << 10)],
};

/// Text-like bytes: 16 letters and spaces from xorshift, so zstd halves
/// them but no two files share a chunk.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = (x >> 32) as u8 & 31;
            if c >= 16 {
                b' '
            } else {
                b'a' + c
            }
        })
        .collect()
}

/// Write the tree; returns (files, bytes) and the paths of the files in
/// creation order.
fn make_tree(root: &Path, shape: &Shape, seed0: u64) -> (u64, Vec<PathBuf>) {
    let mut bytes = 0;
    let mut files = Vec::new();
    let mut seed = seed0;
    for d in 0..shape.dirs {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for &(n, size) in shape.classes {
            for _ in 0..n {
                seed += 1;
                let p = dir.join(format!("f{seed:06}"));
                std::fs::write(&p, content(seed, size)).unwrap();
                bytes += size as u64;
                files.push(p);
            }
        }
    }
    (bytes, files)
}

fn cache(dir: &Path) -> FsCache {
    let c = FsCache::open("fscache-remote-bench", dir).unwrap();
    c.set_info(CacheInfo {
        maximum_size: Some(MaxSize::Unlimited),
        ..Default::default()
    })
    .unwrap();
    c
}

fn tmp_in_shm() -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("fscache-bench-remote-");
    if Path::new("/dev/shm").is_dir() {
        if let Ok(d) = b.tempdir_in("/dev/shm") {
            return d;
        }
    }
    b.tempdir().unwrap()
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// A server process, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until `port` answers an unsigned `PUT /bench` (bucket creation)
/// with a 200, or (`s3s-fs`, which checks signatures) answers at all.
fn wait_for_bucket(port: u16, any_answer: bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let put = format!(
            "PUT /bench HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let sent = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.write_all(put.as_bytes())?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        match sent {
            Ok(r) if any_answer || r.starts_with("HTTP/1.1 200") => return Ok(()),
            Ok(r) => return Err(format!("the server refused to create the bucket: {r}")),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(format!("the server did not start: {e}")),
        }
    }
}

fn start_moto() -> Result<(Server, u16), String> {
    let port = free_port()?;
    let mut cmd = if have("moto_server", "--help") {
        Command::new("moto_server")
    } else {
        let mut c = Command::new("python3");
        c.args(["-m", "moto.server"]);
        c
    };
    let child = cmd
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run moto: {e}"))?;
    let server = Server(child);
    wait_for_bucket(port, false)?;
    Ok((server, port))
}

/// `s3s-fs` serving `dir` (bucket `bench` made as its directory), with
/// the credentials `bench`/`bench`.
fn start_s3s(dir: &Path) -> Result<(Server, u16), String> {
    if !have("s3s-fs", "--help") {
        return Err("no `s3s-fs` (cargo install s3s-fs --version 0.14.1 --locked --features binary, or cargo xtask remote-bench)".into());
    }
    std::fs::create_dir_all(dir.join("bench")).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let child = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "bench", "--secret-key", "bench"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run s3s-fs: {e}"))?;
    let server = Server(child);
    wait_for_bucket(port, true)?;
    Ok((server, port))
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// What a child process measured: its time, peak memory (when
/// `/usr/bin/time` exists) and stdout.
struct Ran {
    time: Duration,
    peak_kib: Option<u64>,
    stdout: String,
}

/// Run `cmd` (under `/usr/bin/time -v` when it exists); panics when it
/// fails.
fn measured(mut cmd: Command) -> Ran {
    let timing = Path::new("/usr/bin/time").exists();
    let mut full = if timing {
        let mut t = Command::new("/usr/bin/time");
        t.arg("-v").arg(cmd.get_program()).args(cmd.get_args());
        if let Some(d) = cmd.get_current_dir() {
            t.current_dir(d);
        }
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => t.env(k, v),
                None => t.env_remove(k),
            };
        }
        t
    } else {
        std::mem::replace(&mut cmd, Command::new("true"))
    };
    let t = Instant::now();
    let out = full.stderr(Stdio::piped()).output().expect("run the child");
    let time = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{full:?} failed: {stderr}");
    let peak_kib = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok());
    Ran {
        time,
        peak_kib,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// How a child process opens the remote.
#[derive(Clone)]
struct Target {
    url: String,
    s3: bool,
    concurrency: usize,
}

impl Target {
    fn builder(&self) -> RemoteBuilder {
        let b = RemoteBuilder::new(self.url.as_str()).concurrency(self.concurrency);
        if self.s3 {
            b.credentials("bench", "bench")
        } else {
            b
        }
    }

    /// This bench binary, as a child doing `op` (push, pull, put, get) of
    /// `name` in the cache at `cache` (or of the file `name`).
    fn child(&self, op: &str, cache: &Path, name: &str, index: &Path) -> Command {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.env("FSCACHE_BENCH_CHILD", op)
            .env("FSCACHE_BENCH_URL", &self.url)
            .env("FSCACHE_BENCH_S3", if self.s3 { "1" } else { "0" })
            .env("FSCACHE_BENCH_CONCURRENCY", self.concurrency.to_string())
            .env("FSCACHE_BENCH_CACHE", cache)
            .env("FSCACHE_BENCH_INDEX", index)
            .env("FSCACHE_BENCH_NAME", name)
            .stdout(Stdio::piped());
        c
    }
}

/// The child's side of [`Target::child`]: prints what it did.
fn child(op: &str) {
    let var = |k: &str| std::env::var(k).unwrap();
    let target = Target {
        url: var("FSCACHE_BENCH_URL"),
        s3: var("FSCACHE_BENCH_S3") == "1",
        concurrency: var("FSCACHE_BENCH_CONCURRENCY").parse().unwrap(),
    };
    let r = target
        .builder()
        .index_cache(Some(PathBuf::from(var("FSCACHE_BENCH_INDEX"))))
        .open()
        .unwrap();
    let name = var("FSCACHE_BENCH_NAME");
    let cache_dir = PathBuf::from(var("FSCACHE_BENCH_CACHE"));
    match op {
        "push" => {
            let c = FsCache::open("fscache-remote-bench", &cache_dir).unwrap();
            let rep = r.push(&c, &name).unwrap().unwrap();
            assert!(matches!(rep.outcome, Pushed::Published));
            println!(
                "{} {} {} {} {}",
                rep.bytes_uploaded,
                rep.blobs,
                rep.blobs_uploaded,
                rep.packs_uploaded,
                rep.bytes_data
            );
        }
        "pull" => {
            let c = cache(&cache_dir);
            let got = r.pull(&c, &name).unwrap().unwrap();
            assert!(got.is_cached());
        }
        // The baselines: the archive `name` as one object.
        "put" => {
            let bytes = std::fs::read(&name).unwrap();
            r.write_object_unchecked("baseline/archive.tar.zst", bytes)
                .unwrap();
        }
        "get" => {
            let bytes = r.read_object("baseline/archive.tar.zst").unwrap().unwrap();
            std::fs::write(&name, bytes).unwrap();
        }
        other => panic!("unknown child op {other}"),
    }
}

/// The baseline's shell pipelines.
fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    c
}

fn mib_s(bytes: u64, d: Duration) -> String {
    format!(
        "{:8.1} MiB/s",
        bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
    )
}

/// One row of the table.
struct Row {
    what: String,
    time: Duration,
    counts: Option<Counts>,
    peak_kib: Option<u64>,
    note: String,
}

fn print_rows(rows: &[Row], bytes: u64) {
    println!(
        "  {:<22} {:>9} {:>14} {:>9} {:>10}  notes",
        "", "time", "throughput", "requests", "peak RSS"
    );
    for r in rows {
        println!(
            "  {:<22} {:>9.2?} {} {:>9} {:>10}  {}",
            r.what,
            r.time,
            mib_s(bytes, r.time),
            r.counts
                .as_ref()
                .map_or("-".into(), |c| c.requests().to_string()),
            r.peak_kib
                .map_or("-".into(), |k| format!("{} MiB", k.div_ceil(1024))),
            r.note
        );
        if let Some(c) = r.counts.as_ref().filter(|c| c.requests() > 0) {
            println!("  {:<22} {c}", "");
        }
    }
}

/// The proxy's counts while `f` runs.
fn counted<T>(proxy: Option<&LatencyProxy>, f: impl FnOnce() -> T) -> (T, Option<Counts>) {
    let before = proxy.map(LatencyProxy::counts);
    let r = f();
    let counts = proxy.map(|p| p.counts().since(before.as_ref().unwrap()));
    (r, counts)
}

fn ratio(base: Duration, ours: Duration) -> String {
    format!(
        "{:.2}× the baseline's throughput",
        base.as_secs_f64() / ours.as_secs_f64()
    )
}

#[allow(clippy::too_many_lines)]
fn run(service: &str, target: &Target, proxy: Option<&LatencyProxy>, shape: &Shape, full: bool) {
    let tmp = tmp_in_shm();
    let src = tmp.path().join("src");
    let index_a = tmp.path().join("index-a");
    let ((bytes, files), gen) = timed(|| make_tree(&src, shape, 0));
    let a_dir = tmp.path().join("a");
    let a = cache(&a_dir);
    assert_eq!(a.store_tree("e", &src).unwrap(), fscache::Stored::Committed);
    // The 1 % changed copy, stored now so its preparation is not timed.
    for p in files.iter().step_by(100) {
        let mut data = std::fs::read(p).unwrap();
        let mid = data.len() / 2;
        data[mid..mid + 100].copy_from_slice(&[b'#'; 100]);
        std::fs::write(p, data).unwrap();
    }
    assert_eq!(
        a.store_tree("e2", &src).unwrap(),
        fscache::Stored::Committed
    );
    std::fs::remove_dir_all(&src).unwrap();
    let entry = a.load("e").unwrap().unwrap();
    let data = entry.path().to_path_buf();
    println!(
        "\nfscache-remote on {service}: {files} files, {:.1} MiB ({} per file on average), generated in {:.1?}",
        bytes as f64 / (1 << 20) as f64,
        fscache::format_bytes(bytes / files.len().max(1) as u64),
        gen,
        files = files.len(),
    );
    if !(have("tar", "--version") && have("zstd", "--version")) {
        println!("  skipped: the baseline needs `tar` and `zstd`");
        return;
    }
    let mut rows = Vec::new();

    // The baseline push: tar | zstd, then one PUT.
    let archive = tmp.path().join("archive.tar.zst");
    let tar = measured(sh(&format!(
        "tar -C '{}' -cf - . | zstd -3 -T0 -q -c > '{}'",
        data.display(),
        archive.display()
    )));
    let (put, put_counts) = counted(proxy, || {
        measured(target.child("put", &a_dir, archive.to_str().unwrap(), &index_a))
    });
    let archive_len = std::fs::metadata(&archive).unwrap().len();
    let base_push = tar.time + put.time;
    rows.push(Row {
        what: "baseline push".into(),
        time: base_push,
        counts: put_counts,
        peak_kib: tar.peak_kib.max(put.peak_kib),
        note: format!(
            "tar|zstd {:.2?} + PUT {:.2?}, archive {}",
            tar.time,
            put.time,
            fscache::format_bytes(archive_len)
        ),
    });

    // Ours.
    let (push, push_counts) = counted(proxy, || {
        measured(target.child("push", &a_dir, "e", &index_a))
    });
    let nums: Vec<u64> = push
        .stdout
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let first_bytes = nums[0];
    rows.push(Row {
        what: "push".into(),
        time: push.time,
        counts: push_counts,
        peak_kib: push.peak_kib,
        note: format!(
            "{} blobs in {} packs, {} uploaded; {}",
            nums[1],
            nums[3],
            fscache::format_bytes(first_bytes),
            ratio(base_push, push.time)
        ),
    });

    // The baseline pull: one GET, then zstd -d | tar -x.
    std::fs::remove_file(&archive).unwrap();
    let (get, get_counts) = counted(proxy, || {
        measured(target.child("get", &a_dir, archive.to_str().unwrap(), &index_a))
    });
    let out = tmp.path().join("untarred");
    std::fs::create_dir_all(&out).unwrap();
    let untar = measured(sh(&format!(
        "zstd -d -q -c '{}' | tar -C '{}' -xf -",
        archive.display(),
        out.display()
    )));
    let base_pull = get.time + untar.time;
    rows.push(Row {
        what: "baseline pull".into(),
        time: base_pull,
        counts: get_counts,
        peak_kib: get.peak_kib.max(untar.peak_kib),
        note: format!("GET {:.2?} + zstd -d|tar -x {:.2?}", get.time, untar.time),
    });
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_file(&archive).unwrap();

    let b_dir = tmp.path().join("b");
    let index_b = tmp.path().join("index-b");
    let (pull, pull_counts) = counted(proxy, || {
        measured(target.child("pull", &b_dir, "e", &index_b))
    });
    rows.push(Row {
        what: "pull".into(),
        time: pull.time,
        counts: pull_counts,
        peak_kib: pull.peak_kib,
        note: ratio(base_pull, pull.time),
    });
    std::fs::remove_dir_all(&b_dir).unwrap();

    // restic, on S3 through the same proxy.
    if let (Some(p), true) = (proxy, target.s3) {
        if have("restic", "version") {
            let repo = format!("s3:http://127.0.0.1:{}/bench/restic", p.port);
            let restic = |args: &[&str]| {
                let mut c = Command::new("restic");
                c.args(["-r", &repo, "--quiet", "--no-cache"])
                    .args(args)
                    .env("RESTIC_PASSWORD", "bench")
                    .env("AWS_ACCESS_KEY_ID", "bench")
                    .env("AWS_SECRET_ACCESS_KEY", "bench")
                    .env("AWS_DEFAULT_REGION", "us-east-1")
                    .stdout(Stdio::null());
                c
            };
            measured(restic(&["init"]));
            let mut backup = restic(&["backup", "."]);
            backup.current_dir(&data);
            let (b, bc) = counted(proxy, || measured(backup));
            rows.push(Row {
                what: "restic backup".into(),
                time: b.time,
                counts: bc,
                peak_kib: b.peak_kib,
                note: format!(
                    "push {:.2}× restic's speed",
                    b.time.as_secs_f64() / push.time.as_secs_f64()
                ),
            });
            let target_dir = tmp.path().join("restored");
            let (r, rc) = counted(proxy, || {
                measured(restic(&[
                    "restore",
                    "latest",
                    "--target",
                    target_dir.to_str().unwrap(),
                ]))
            });
            rows.push(Row {
                what: "restic restore".into(),
                time: r.time,
                counts: rc,
                peak_kib: r.peak_kib,
                note: format!(
                    "pull {:.2}× restic's speed",
                    r.time.as_secs_f64() / pull.time.as_secs_f64()
                ),
            });
            let _ = std::fs::remove_dir_all(&target_dir);
        } else {
            println!("  restic: skipped (no `restic`: apt-get install restic)");
        }
    }

    // The second push, 1 % of the files changed, from the same host.
    let (second, second_counts) = counted(proxy, || {
        measured(target.child("push", &a_dir, "e2", &index_a))
    });
    let nums: Vec<u64> = second
        .stdout
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    rows.push(Row {
        what: "second push (1 %)".into(),
        time: second.time,
        counts: second_counts,
        peak_kib: second.peak_kib,
        note: format!(
            "{} blobs of {} uploaded, {} = {:.2} % of the first push (goal ≤ 2 %); of it {} of packs, {} manifest, index and intent",
            nums[2],
            nums[1],
            fscache::format_bytes(nums[0]),
            nums[0] as f64 * 100.0 / first_bytes as f64,
            fscache::format_bytes(nums[4]),
            fscache::format_bytes(nums[0] - nums[4]),
        ),
    });
    // A pull of the copy, whose blobs are mostly in the first push's packs.
    let (shared, shared_counts) = counted(proxy, || {
        measured(target.child("pull", &tmp.path().join("c"), "e2", &index_b))
    });
    let read = shared_counts.as_ref().map(|c| c.down);
    rows.push(Row {
        what: "pull shared (e2)".into(),
        time: shared.time,
        counts: shared_counts,
        peak_kib: shared.peak_kib,
        note: read.map_or(String::new(), |r| {
            format!(
                "read {} = {:.2}× its own compressed bytes (goal ≤ 1.5×)",
                fscache::format_bytes(r),
                r as f64 / first_bytes as f64
            )
        }),
    });
    let _ = std::fs::remove_dir_all(tmp.path().join("c"));
    print_rows(&rows, bytes);

    // A local hit through load_or_pull beside a plain load.
    let r = target.builder().index_cache(None).open().unwrap();
    let n = if full { 2000 } else { 20 };
    let ((), t_load) = timed(|| {
        for _ in 0..n {
            drop(a.load("e").unwrap().unwrap());
        }
    });
    let ((), t_lop) = timed(|| {
        for _ in 0..n {
            drop(r.load_or_pull(&a, "e").unwrap());
        }
    });
    println!(
        "  {:<22} {:>9.2?} per hit, load {:.2?}: {:.2}× load",
        "load_or_pull (hit)",
        t_lop / n,
        t_load / n,
        t_lop.as_secs_f64() / t_load.as_secs_f64()
    );
    drop(entry);
    prune_bench(target, proxy, tmp.path());
}

/// Prune of 100 small entries, half of them unused for two days.
fn prune_bench(target: &Target, proxy: Option<&LatencyProxy>, tmp: &Path) {
    let c = cache(&tmp.join("p"));
    // Its own prefix of the bucket.
    let url = if target.s3 {
        target.url.replace("/remote?", "/prune?")
    } else {
        format!("{}-prune", target.url)
    };
    let r = Target {
        url,
        ..target.clone()
    }
    .builder()
    .index_cache(None)
    .pack_size(256 << 10)
    .open()
    .unwrap();
    let ((), t_push) = timed(|| {
        for i in 0..100u64 {
            let src = tmp.join("prune-src");
            let _ = std::fs::remove_dir_all(&src);
            std::fs::create_dir_all(&src).unwrap();
            for f in 0..10 {
                std::fs::write(
                    src.join(format!("f{f}")),
                    content(1_000_000 + i * 10 + f, 40 << 10),
                )
                .unwrap();
            }
            let _ = c.store_tree(&format!("p{i:03}"), &src).unwrap();
            r.push(&c, &format!("p{i:03}")).unwrap();
        }
    });
    let two_days_ago = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 2 * 86_400;
    for i in (0..100).step_by(2) {
        r.write_object_unchecked(
            &format!("v1/used/p{i:03}"),
            format!("{{\"used\": {two_days_ago}}}").into_bytes(),
        )
        .unwrap();
    }
    let opts = PruneOptions::unused_for(Duration::from_secs(86_400)).grace(Duration::ZERO);
    let (first, c1) = counted(proxy, || timed(|| r.prune(opts).unwrap()));
    let (second, c2) = counted(proxy, || timed(|| r.prune(opts).unwrap()));
    println!(
        "  {:<22} 100 entries pushed in {:.2?}; prune {:.2?}: {} manifests removed, {} packs condemned, {} repacked{}; again {:.2?}: {} packs ({}) deleted{}",
        "prune (100, half old)",
        t_push,
        first.1,
        first.0.manifests_removed.len(),
        first.0.packs_condemned,
        first.0.packs_repacked,
        c1.map_or(String::new(), |c| format!(", {c}")),
        second.1,
        second.0.packs_removed,
        fscache::format_bytes(second.0.pack_bytes_removed),
        c2.map_or(String::new(), |c| format!(", {c}")),
    );
}

fn main() {
    if let Ok(op) = std::env::var("FSCACHE_BENCH_CHILD") {
        child(&op);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let filter = args.iter().find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !"remote".contains(f.as_str()) && !f.contains("remote")) {
        return;
    }
    let concurrency = std::env::var("FSCACHE_BENCH_CONCURRENCY")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(16);
    if !benching {
        // `cargo test --benches`: once, small, on the fs service.
        let tmp = tempfile::tempdir().unwrap();
        let target = Target {
            url: format!("file://{}/bucket", tmp.path().display()),
            s3: false,
            concurrency,
        };
        run("fs", &target, None, &SMOKE, false);
        return;
    }
    let full = std::env::var("FSCACHE_BENCH_FULL").is_ok_and(|v| v == "1");
    let shape = if full { &FULL } else { &CI };
    let delay = Duration::from_millis(
        std::env::var("FSCACHE_BENCH_DELAY_MS")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(10),
    );
    let services = std::env::var("FSCACHE_BENCH_SERVICES").unwrap_or_else(|_| "fs,moto,s3s".into());
    for service in services.split(',') {
        let s3 = |name: &str, started: Result<(Server, u16), String>| match started {
            Ok((_server, port)) => {
                let proxy = LatencyProxy::start(port, delay, None).unwrap();
                let target = Target {
                    url: format!(
                        "s3://bench/remote?endpoint=http://127.0.0.1:{}&region=us-east-1",
                        proxy.port
                    ),
                    s3: true,
                    concurrency,
                };
                run(
                    &format!("{name} behind a {delay:?} proxy"),
                    &target,
                    Some(&proxy),
                    shape,
                    true,
                );
            }
            Err(why) => println!("\nfscache-remote on {name}: skipped ({why})"),
        };
        match service {
            "fs" => {
                let bucket = tmp_in_shm();
                let target = Target {
                    url: format!("file://{}/bucket", bucket.path().display()),
                    s3: false,
                    concurrency,
                };
                run("fs", &target, None, shape, true);
            }
            "s3" | "moto" => s3("s3 (moto on 127.0.0.1)", start_moto()),
            "s3s" => {
                let dir = tmp_in_shm();
                s3("s3 (s3s-fs on 127.0.0.1)", start_s3s(dir.path()));
            }
            other => {
                println!("\nunknown service `{other}` in FSCACHE_BENCH_SERVICES (fs, moto, s3s)")
            }
        }
    }
}
