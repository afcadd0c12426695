//! Benchmark of the remote tier against its baseline, one run, printed as
//! a table of throughputs and ratios (run by `cargo xtask bench`, or
//! `cargo bench -p fscache-remote --bench remote`).
//!
//! A generated tree (CI size: 10 000 files, about 190 MiB, in 100
//! directories: 9000 × 4 KiB, 900 × 64 KiB, 100 × 1 MiB; with
//! `FSCACHE_BENCH_FULL=1`: 50 000 files, about 1 GiB: 45 000 × 4 KiB,
//! 4000 × 64 KiB, 1000 × 640 KiB), of text-like,
//! half-compressible content, unique per file, is stored in a local cache
//! and then, on each service (the `fs` service in a temporary directory,
//! and moto's S3 server on 127.0.0.1 when it can be started; choose with
//! `FSCACHE_BENCH_SERVICES=fs,s3`; `FSCACHE_BENCH_CONCURRENCY=N` sets the
//! requests in flight on s3, default 16):
//!
//! * `baseline push`: `tar -cf - . | zstd -3 -T0` of the entry, then one
//!   PUT of the archive (through the same OpenDAL operator);
//! * `push`: [`Remote::push`] of the entry to an empty remote;
//! * `baseline pull`: one GET of the archive, then `zstd -d | tar -x`;
//! * `pull`: [`Remote::pull`] into an empty cache (checked and committed);
//! * `second push`: the bytes [`Remote::push`] uploads for a copy of the
//!   entry with 1 % of its files changed (100 bytes overwritten in each),
//!   as a share of the first push's bytes (goal: ≤ 3 %);
//! * `load_or_pull` of a local hit beside [`fscache::FsCache::load`].
//!
//! Without `--bench` (as `cargo test --benches` runs it) it runs once on a
//! small tree, as a smoke test.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fscache::{CacheInfo, FsCache, MaxSize};
use fscache_remote::{Pushed, Remote, RemoteBuilder};

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
fn make_tree(root: &Path, shape: &Shape) -> (u64, Vec<std::path::PathBuf>) {
    let mut bytes = 0;
    let mut files = Vec::new();
    let mut seed = 0u64;
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

/// moto's S3 server, killed on drop.
struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto() -> Result<(Moto, u16), String> {
    use std::io::Read;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut cmd = if Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
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
    let moto = Moto(child);
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
            Ok(r) if r.starts_with("HTTP/1.1 200") => return Ok((moto, port)),
            Ok(r) => return Err(format!("moto refused to create the bucket: {r}")),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(format!("moto did not start: {e}")),
        }
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// `tar -C dir -cf - . | zstd -3 -T0 -c`, into memory.
fn tar_zstd(dir: &Path) -> Vec<u8> {
    let mut tar = Command::new("tar")
        .args(["-C"])
        .arg(dir)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tar");
    let z = Command::new("zstd")
        .args(["-3", "-T0", "-q", "-c"])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .expect("run zstd");
    assert!(tar.wait().unwrap().success() && z.status.success());
    z.stdout
}

/// `zstd -d -c | tar -C dir -xf -`, from memory.
fn untar_zstd(archive: &[u8], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut z = Command::new("zstd")
        .args(["-d", "-q", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run zstd");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["-xf", "-"])
        .stdin(z.stdout.take().unwrap())
        .spawn()
        .expect("run tar");
    z.stdin.take().unwrap().write_all(archive).unwrap();
    assert!(z.wait().unwrap().success());
    assert!(tar.wait_with_output().unwrap().status.success());
}

fn mib_s(bytes: u64, d: Duration) -> String {
    format!(
        "{:8.1} MiB/s",
        bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
    )
}

fn run(service: &str, open: &dyn Fn(&str) -> Remote, shape: &Shape, full_report: bool) {
    let tmp = tmp_in_shm();
    let src = tmp.path().join("src");
    let ((bytes, files), gen) = timed(|| make_tree(&src, shape));
    let a = cache(&tmp.path().join("a"));
    assert_eq!(a.store_tree("e", &src).unwrap(), fscache::Stored::Committed);
    // The 1 % changed copy, stored now so its preparation is not timed.
    let step = 100;
    for p in files.iter().step_by(step) {
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
    let r = open(service);

    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !(have("tar") && have("zstd")) {
        println!("\nfscache-remote on {service}: skipped: the baseline needs `tar` and `zstd`");
        return;
    }
    let (archive, t_tar) = timed(|| tar_zstd(&data));
    let ((), t_put) = timed(|| {
        r.write_object_unchecked("baseline/archive.tar.zst", archive.clone())
            .unwrap()
    });
    let base_push = t_tar + t_put;
    let (report, t_push) = timed(|| r.push(&a, "e").unwrap().unwrap());
    assert_eq!(report.outcome, Pushed::Published);

    let out = tmp.path().join("untarred");
    let (got, t_get) = timed(|| r.read_object("baseline/archive.tar.zst").unwrap().unwrap());
    let ((), t_untar) = timed(|| untar_zstd(&got, &out));
    let base_pull = t_get + t_untar;
    std::fs::remove_dir_all(&out).unwrap();
    drop(got);
    let b = cache(&tmp.path().join("b"));
    let (pulled, t_pull) = timed(|| r.pull(&b, "e").unwrap().unwrap());
    assert!(pulled.is_cached());
    drop(pulled);

    let (second, t_second) = timed(|| r.push(&a, "e2").unwrap().unwrap());
    let share = second.bytes_uploaded as f64 / report.bytes_uploaded as f64;

    // A local hit through load_or_pull beside a plain load.
    let n = if full_report { 2000 } else { 20 };
    let ((), t_load) = timed(|| {
        for _ in 0..n {
            drop(b.load("e").unwrap().unwrap());
        }
    });
    let ((), t_lop) = timed(|| {
        for _ in 0..n {
            drop(r.load_or_pull(&b, "e").unwrap());
        }
    });

    println!(
        "\nfscache-remote on {service}: {files} files, {:.1} MiB ({} per file on average), generated in {:.1?}",
        bytes as f64 / (1 << 20) as f64,
        fscache::format_bytes(bytes / files.len().max(1) as u64),
        gen,
        files = files.len(),
    );
    let row = |what: &str, d: Duration, base: Option<Duration>| {
        let ratio = base.map_or(String::new(), |b| {
            format!(
                "  {:.2}× the baseline's throughput",
                b.as_secs_f64() / d.as_secs_f64()
            )
        });
        println!("  {what:<16} {:>9.2?}  {}{ratio}", d, mib_s(bytes, d));
    };
    row("baseline push", base_push, None);
    println!(
        "  {:<16} tar|zstd {:.2?} + PUT {:.2?}, archive {}",
        "",
        t_tar,
        t_put,
        fscache::format_bytes(archive.len() as u64)
    );
    row("push", t_push, Some(base_push));
    println!(
        "  {:<16} {} blobs, {} uploaded",
        "",
        report.blobs,
        fscache::format_bytes(report.bytes_uploaded)
    );
    row("baseline pull", base_pull, None);
    println!(
        "  {:<16} GET {:.2?} + zstd -d|tar -x {:.2?}",
        "", t_get, t_untar
    );
    row("pull", t_pull, Some(base_pull));
    println!(
        "  {:<16} {:>9.2?}  {} blobs, {} uploaded = {:.2} % of the first push (goal ≤ 3 %)",
        "second push",
        t_second,
        second.blobs_uploaded,
        fscache::format_bytes(second.bytes_uploaded),
        share * 100.0
    );
    println!(
        "  {:<16} {:>9.2?} per hit, load {:.2?}: {:.2}× load",
        "load_or_pull",
        t_lop / n,
        t_load / n,
        t_lop.as_secs_f64() / t_load.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let filter = args.iter().find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !"remote".contains(f.as_str()) && !f.contains("remote")) {
        return;
    }
    if !benching {
        // `cargo test --benches`: once, small, on the fs service.
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("file://{}", tmp.path().display());
        run("fs", &|_| Remote::open(&url).unwrap(), &SMOKE, false);
        return;
    }
    let full = std::env::var("FSCACHE_BENCH_FULL").is_ok_and(|v| v == "1");
    let shape = if full { &FULL } else { &CI };
    let services = std::env::var("FSCACHE_BENCH_SERVICES").unwrap_or_else(|_| "fs,s3".into());
    for service in services.split(',') {
        match service {
            "fs" => {
                let bucket = tmp_in_shm();
                let url = format!("file://{}", bucket.path().display());
                run("fs", &|_| Remote::open(&url).unwrap(), shape, true);
            }
            "s3" => match start_moto() {
                Ok((_moto, port)) => {
                    let url =
                        format!("s3://bench/remote?endpoint=http://127.0.0.1:{port}&region=auto");
                    let concurrency = std::env::var("FSCACHE_BENCH_CONCURRENCY")
                        .ok()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(16);
                    let open = |_: &str| {
                        RemoteBuilder::new(url.as_str())
                            .credentials("bench", "bench")
                            .concurrency(concurrency)
                            .open()
                            .unwrap()
                    };
                    run("s3 (moto on 127.0.0.1)", &open, shape, true);
                }
                Err(why) => println!("\nfscache-remote on s3: skipped ({why})"),
            },
            other => println!("\nunknown service `{other}` in FSCACHE_BENCH_SERVICES (fs, s3)"),
        }
    }
}
