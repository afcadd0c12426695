//! Criterion benchmarks of `FsCache::load` and `store` → `commit`, each
//! beside a baseline that issues the raw system calls of the same protocol
//! steps (DESIGN.md, "Protocols"), so the facade's overhead reads as a ratio.
//!
//! Baselines are named `raw_<X>` for benchmark `<X>` of the same group,
//! which is how `cargo xtask bench` pairs them. Groups:
//!
//! * `load` (tmpfs): `hit`/`raw_hit` on a committed entry, `miss`/`raw_miss`
//!   on an absent one.
//! * `load_disk`: `hit`/`raw_hit` on a cache under the target directory
//!   (the build's own file system, typically ext4).
//! * `store` (tmpfs): `file_4k`/`raw_file_4k`, one new entry holding one
//!   4 KiB file per iteration, under an unlimited maximum size.
//!
//! "tmpfs" is `/dev/shm` where it exists, else the system temp directory.
//! Every cache lives in its own temporary directory, removed at the end.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{black_box, Criterion};
use fscache::{CacheInfo, FsCache, MaxSize, Stored};
use fscache_lock::{set_lock, LockKind, Wait};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, CWD, UTIME_NOW, UTIME_OMIT};
use rustix::io::Errno;
use tempfile::TempDir;

/// The application id of the bench caches.
const APPID: &str = "fscache-bench";

/// The payload of a stored entry.
const FILE_4K: [u8; 4096] = [0x5a; 4096];

/// A temporary directory on tmpfs (`/dev/shm`) if there is one, else in the
/// system temp directory.
fn tmpfs_dir() -> TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("fscache-bench-");
        b
    };
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder.tempdir().expect("create a temporary directory")
}

/// A temporary directory under the target directory (beside the bench
/// executable's `deps/`), i.e. on the build's disk file system.
fn disk_dir() -> TempDir {
    let exe = std::env::current_exe().expect("bench executable path");
    // target/<profile>/deps/cache-<hash> → target/<profile>
    let base = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("fscache-bench-disk-")
        .tempdir_in(base)
        .expect("create a temporary directory under the target directory")
}

/// Open a cache at `root/cache` with no size limit.
fn open_unlimited(root: &Path) -> FsCache {
    let cache = FsCache::open(APPID, root.join("cache")).expect("open cache");
    cache
        .set_info(CacheInfo {
            maximum_size: Some(MaxSize::Unlimited),
            ..Default::default()
        })
        .expect("set maximum size");
    cache
}

/// Open a cache holding a committed entry `key` with one 4 KiB file.
fn cache_with_key(root: &Path) -> FsCache {
    let cache = open_unlimited(root);
    let guard = cache.store("key").expect("store");
    std::fs::write(guard.path().join("file"), FILE_4K).expect("write payload");
    assert_eq!(guard.commit().expect("commit"), Stored::Committed);
    cache
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in bench paths")
}

/// Absolute paths of one entry's protocol files, as C strings so the
/// baseline spends nothing on conversions.
struct EntryPaths {
    lock: CString,
    info: CString,
}

impl EntryPaths {
    fn new(cache: &FsCache, name: &str) -> Self {
        let entry = cache.path().join("objects").join(name);
        Self {
            lock: cstr(&entry.join("object.lock")),
            info: cstr(&entry.join("object.info")),
        }
    }
}

/// `atime = now, mtime untouched`.
const TOUCH_ATIME: Timestamps = Timestamps {
    last_access: Timespec {
        tv_sec: 0,
        tv_nsec: UTIME_NOW,
    },
    last_modification: Timespec {
        tv_sec: 0,
        tv_nsec: UTIME_OMIT,
    },
};

/// The load protocol's hit path in raw system calls: open the lock file,
/// `F_OFD_SETLK F_RDLCK`, `fstat(fd)` + `stat(path)` (the classic replace
/// check), `stat(object.info)` (validity), `futimens` (atime only), then
/// `F_UNLCK` and close.
fn raw_load_hit(p: &EntryPaths) {
    let fd = rustix::fs::open(
        p.lock.as_c_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open object.lock");
    assert!(
        set_lock(fd.as_fd(), Some(LockKind::Shared), Wait::NonBlock).expect("lock"),
        "uncontended"
    );
    let st = rustix::fs::fstat(&fd).expect("fstat");
    let sp = rustix::fs::stat(p.lock.as_c_str()).expect("stat");
    assert!(st.st_dev == sp.st_dev && st.st_ino == sp.st_ino);
    black_box(rustix::fs::stat(p.info.as_c_str()).expect("stat object.info"));
    let _ = rustix::fs::futimens(&fd, &TOUCH_ATIME);
    set_lock(fd.as_fd(), None, Wait::NonBlock).expect("unlock");
    drop(fd);
}

/// Benchmark `hit` and `raw_hit` in a group of `c` on a cache at `root`.
fn bench_hits(c: &mut Criterion, group: &str, root: &Path, with_miss: bool) {
    let cache = cache_with_key(root);
    let paths = EntryPaths::new(&cache, "key");
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
    g.bench_function("raw_hit", |b| b.iter(|| raw_load_hit(black_box(&paths))));
    if with_miss {
        g.bench_function("miss", |b| {
            b.iter(|| assert!(cache.load(black_box("absent")).expect("load").is_none()))
        });
        g.bench_function("raw_miss", |b| {
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

fn bench_load(c: &mut Criterion) {
    let tmp = tmpfs_dir();
    bench_hits(c, "load", tmp.path(), true);
    drop(tmp);
    let tmp = disk_dir();
    bench_hits(c, "load_disk", tmp.path(), false);
}

/// Unique entry names across the whole run.
fn next_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A fresh `uuid-<32 hex>` name.
fn uuid() -> String {
    fscache_dir::anonymous_name()
}

fn create_excl(path: &CString, access: OFlags) -> OwnedFd {
    rustix::fs::open(
        path.as_c_str(),
        access | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .expect("create")
}

fn write_all(fd: &OwnedFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        let n = rustix::io::write(fd, buf).expect("write");
        assert!(n > 0);
        buf = &buf[n..];
    }
}

fn lock_wait(fd: &OwnedFd, kind: LockKind) {
    set_lock(fd.as_fd(), Some(kind), Wait::Block).expect("lock");
}

/// The store protocol in raw system calls, on absolute paths below the
/// cache root `root`: atomic anonymous dir, `mkdir data`, the 4 KiB file,
/// measure, charge `cache.size`, `object.info`, rename, unlock.
fn raw_store(root: &Path, name: &str) {
    let objects = root.join("objects");
    // Atomic anonymous dir: a locked temp lock file linked in as object.lock.
    let tmp = cstr(&objects.join(uuid()));
    let lock_fd = create_excl(&tmp, OFlags::RDWR);
    lock_wait(&lock_fd, LockKind::Exclusive);
    assert!(rustix::fs::fstat(&lock_fd).expect("fstat").st_nlink > 0);
    let anon = objects.join(uuid());
    rustix::fs::mkdir(cstr(&anon).as_c_str(), Mode::from_raw_mode(0o755)).expect("mkdir");
    rustix::fs::link(tmp.as_c_str(), cstr(&anon.join("object.lock")).as_c_str()).expect("link");
    rustix::fs::unlink(tmp.as_c_str()).expect("unlink temp");
    let data = anon.join("data");
    let data_c = cstr(&data);
    rustix::fs::mkdir(data_c.as_c_str(), Mode::from_raw_mode(0o755)).expect("mkdir data");
    // The caller's content.
    let file_c = cstr(&data.join("file"));
    let fd = rustix::fs::open(
        file_c.as_c_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .expect("create file");
    write_all(&fd, &FILE_4K);
    drop(fd);
    // Measure.
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    let d = rustix::fs::statat(CWD, data_c.as_c_str(), nofollow).expect("stat data");
    let f = rustix::fs::statat(CWD, file_c.as_c_str(), nofollow).expect("stat file");
    let size = (d.st_blocks as u64 + f.st_blocks as u64) * 512;
    // Charge cache.size: locked read → temp → rename.
    let size_c = cstr(&root.join("cache.size"));
    let size_fd = rustix::fs::open(
        size_c.as_c_str(),
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open cache.size");
    lock_wait(&size_fd, LockKind::Exclusive);
    assert!(rustix::fs::fstat(&size_fd).expect("fstat").st_nlink > 0);
    let mut buf = [0u8; 64];
    let n = rustix::io::read(&size_fd, &mut buf).expect("read cache.size");
    let total: u64 = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("cache.size holds an integer");
    let tmp = cstr(&objects.join(uuid()));
    let new_fd = create_excl(&tmp, OFlags::RDWR);
    lock_wait(&new_fd, LockKind::Exclusive);
    write_all(&new_fd, (total + size).to_string().as_bytes());
    rustix::fs::rename(tmp.as_c_str(), size_c.as_c_str()).expect("rename cache.size");
    drop(new_fd);
    drop(size_fd);
    // object.info with O_EXCL.
    let info = format!(r#"{{"creation-boot-id": "{:032x}", "size": {size}}}"#, 0);
    let info_fd = create_excl(&cstr(&anon.join("object.info")), OFlags::WRONLY);
    write_all(&info_fd, info.as_bytes());
    drop(info_fd);
    // Publish, then release the entry.
    let target = cstr(&objects.join(name));
    rustix::fs::rename(cstr(&anon).as_c_str(), target.as_c_str()).expect("rename entry");
    set_lock(lock_fd.as_fd(), None, Wait::NonBlock).expect("unlock");
    drop(lock_fd);
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

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_load(&mut c);
    bench_store(&mut c);
    bench_durability(&mut c);
    c.final_summary();
}
