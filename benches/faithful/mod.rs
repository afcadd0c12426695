//! Criterion benchmarks of faithful trees (issue 17), part of the `scale`
//! bench binary (one link fewer), each beside the outside tool that keeps
//! the same metadata, so a result reads as a ratio in `cargo xtask
//! bench` (alone: `cargo bench --bench scale -- 'faithful|sparse_10g'`):
//!
//! * `faithful_tree/FS`: `store_tree` (the tree digest on, as it always is
//!   for `store_tree`, and recorded) of a real tree beside `cp -a
//!   --reflink=auto` of it (`baseline_cp_a`), the source and the copy on
//!   FS (`tmpfs`: `/dev/shm`; `ext4` or whatever the system temp
//!   directory is on). The tree is `$FSCACHE_BENCH_TREE`, else the
//!   Debian minbase root `cargo xtask faithful` made in
//!   `<target>/faithful/debian-minbase`, else a generated tree of 2,000
//!   files with xattrs, symlinks and hard links.
//! * `sparse_10g/FS`: `store_tree` of one 10 GiB sparse file with 1 MiB of
//!   data in 16 ranges beside `cp -a --reflink=auto`; every copy is
//!   checked to allocate what the source allocates. (A load is a lock
//!   and a path, no copy: nothing to time.)
//! * `faithful_remote/WHAT`: `push` and `pull` (file-system remote on
//!   tmpfs, a fresh bucket and cache each time) of the real tree and of
//!   the sparse file, beside `tar --xattrs --acls --numeric-owner -S |
//!   zstd -1` into a file (`baseline_tar_push`) and its extraction
//!   (`baseline_tar_pull`): the same metadata through the usual tools.
//!
//! `--test` (`cargo test --benches`, each benchmark once): a 200-file
//! tree and a 64 MiB sparse file, on tmpfs only.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use fscache::{CacheInfo, FsCache, MaxSize, Stored};
use fscache_remote::Remote;
use tempfile::TempDir;

use crate::common;

/// Whether criterion runs each benchmark once as a test.
fn quick() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn next_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A cache at `dir` that records digests, unlimited.
fn cache(dir: &Path) -> FsCache {
    let c = FsCache::builder(common::APPID)
        .record_digests(true)
        .open(dir)
        .expect("open cache");
    c.set_info(CacheInfo {
        maximum_size: Some(MaxSize::Unlimited),
        ..Default::default()
    })
    .expect("set maximum size");
    c
}

/// The file system type of `p`, as `stat -f` names it (`ext2/ext3` is
/// how it names ext4).
fn fs_name(p: &Path) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(p)
        .output()
        .expect("stat -f");
    match String::from_utf8_lossy(&out.stdout).trim() {
        "ext2/ext3" => "ext4".into(),
        other => other.into(),
    }
}

/// Where the benches copy: tmpfs, and the system temp directory when it
/// is on another file system (not in `--test`).
fn places() -> Vec<(String, TempDir)> {
    let mut out = vec![];
    let shm = common::tmpfs_dir();
    let shm_fs = fs_name(shm.path());
    out.push((shm_fs.clone(), shm));
    if !quick() {
        let tmp = tempfile::Builder::new()
            .prefix("fscache-bench-")
            .tempdir()
            .expect("temp dir");
        let fs = fs_name(tmp.path());
        if fs != shm_fs {
            out.push((fs, tmp));
        }
    }
    out
}

/// The real tree to copy, if there is one (see the module docs).
fn real_tree() -> Option<PathBuf> {
    if let Some(t) = std::env::var_os("FSCACHE_BENCH_TREE") {
        return Some(t.into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let debian = target.join("faithful/debian-minbase");
    debian.join("etc/debian_version").exists().then_some(debian)
}

/// A generated tree at `root`: `files` files of up to 40 KiB in
/// directories of 100, each tenth with a `user.*` xattr, each
/// twentieth a symlink, each fiftieth a hard link to the one before.
fn make_tree(root: &Path, files: u64) {
    let block = vec![0x5au8; 40 << 10];
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&dir).expect("mkdir");
        }
        let p = dir.join(format!("f{i:05}"));
        match i {
            _ if i % 50 == 49 => fs::hard_link(dir.join(format!("f{:05}", i - 1)), &p),
            _ if i % 20 == 19 => std::os::unix::fs::symlink(format!("f{:05}", i - 1), &p),
            _ => fs::write(&p, &block[..((i * 7919) % 41 * 1024) as usize]),
        }
        .expect("make node");
        if i % 10 == 0 {
            rustix::fs::setxattr(&p, "user.bench", b"v", rustix::fs::XattrFlags::empty())
                .expect("setxattr");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).expect("chmod");
        }
    }
}

/// A sparse file of `size` bytes at `p` with 1 MiB of data in 16 ranges.
fn make_sparse(p: &Path, size: u64) {
    let mut f = fs::File::create(p).expect("create");
    let piece = vec![0xa5u8; 64 << 10];
    for i in 0..16 {
        f.seek(SeekFrom::Start(i * (size / 16))).expect("seek");
        f.write_all(&piece).expect("write");
    }
    f.set_len(size).expect("truncate");
}

fn cp_a(src: &Path, dst: &Path) {
    let ok = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(src)
        .arg(dst)
        .status()
        .expect("run cp")
        .success();
    assert!(ok, "cp -a failed");
}

fn blocks(p: &Path) -> u64 {
    fs::symlink_metadata(p).expect("stat").blocks()
}

/// Time `f` once per iteration, `undo` untimed after each.
fn timed(iters: u64, mut f: impl FnMut() -> PathBuf, mut undo: impl FnMut(PathBuf)) -> Duration {
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        let t = Instant::now();
        let made = f();
        spent += t.elapsed();
        undo(made);
    }
    spent
}

/// `store_tree` of `src` beside `cp -a` of it, both into `place`, in the
/// group `g` with parameter `param`; `check(copy)` after each copy.
fn store_beside_cp(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    param: &str,
    src: &Path,
    place: &Path,
    check: &dyn Fn(&Path),
) {
    let c = cache(&place.join("cache"));
    g.bench_function(BenchmarkId::new("store_tree", param), |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    let name = next_name("tree");
                    assert_eq!(c.store_tree(&name, src).expect("store"), Stored::Committed);
                    PathBuf::from(name)
                },
                |name| {
                    let name = name.to_str().expect("utf-8").to_owned();
                    check(&c.path().join("objects").join(&name).join("data"));
                    let _ = c.remove(&name).expect("remove");
                },
            )
        })
    });
    g.bench_function(BenchmarkId::new("baseline_cp_a", param), |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    let to = place.join(next_name("cp"));
                    cp_a(src, &to);
                    to
                },
                |to| {
                    check(&to);
                    fs::remove_dir_all(&to).expect("remove copy");
                },
            )
        })
    });
}

/// The `faithful_tree` and `sparse_10g` groups.
pub fn bench_store(c: &mut Criterion) {
    let real = if quick() { None } else { real_tree() };
    let mut g = c.benchmark_group("faithful_tree");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(100));
    for (fs_label, place) in places() {
        // The source on the same file system as the copies.
        let src = place.path().join("src");
        match &real {
            Some(tree) => cp_a(tree, &src),
            None => {
                fs::create_dir(&src).expect("mkdir");
                make_tree(&src, if quick() { 200 } else { 2_000 });
            }
        }
        store_beside_cp(&mut g, &fs_label, &src, place.path(), &|_| {});
        fs::remove_dir_all(&src).expect("remove source");
    }
    g.finish();

    let mut g = c.benchmark_group("sparse_10g");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(100));
    let size = if quick() { 64 << 20 } else { 10 << 30 };
    for (fs_label, place) in places() {
        let src = place.path().join("sparse");
        fs::create_dir(&src).expect("mkdir");
        make_sparse(&src.join("disk.img"), size);
        let want = blocks(&src.join("disk.img"));
        assert!(want * 512 < 2 << 20, "the source is sparse");
        let check = move |copy: &Path| {
            let got = blocks(&copy.join("disk.img"));
            assert_eq!(got, want, "the copy allocates what the source does");
        };
        store_beside_cp(&mut g, &fs_label, &src, place.path(), &check);
    }
    g.finish();
}

/// `tar` of `src` with every kind of metadata, through `zstd -1`, into
/// `out`.
fn tar_push(src: &Path, out: &Path) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg("tar --xattrs --xattrs-include='*' --acls --numeric-owner -S -C \"$1\" -cf - . | zstd -q -1 -o \"$2\"")
        .args(["sh"])
        .arg(src)
        .arg(out)
        .stderr(Stdio::inherit())
        .status()
        .expect("run tar")
        .success();
    assert!(ok, "tar | zstd failed");
}

/// Extract what [`tar_push`] wrote into the new directory `dst`.
fn tar_pull(archive: &Path, dst: &Path) {
    fs::create_dir(dst).expect("mkdir");
    let ok = Command::new("sh")
        .arg("-c")
        .arg("zstd -q -d -c \"$1\" | tar --xattrs --xattrs-include='*' --acls --numeric-owner -S -C \"$2\" -xpf -")
        .args(["sh"])
        .arg(archive)
        .arg(dst)
        .status()
        .expect("run tar")
        .success();
    assert!(ok, "zstd -d | tar failed");
}

/// The `faithful_remote` group.
pub fn bench_remote(c: &mut Criterion) {
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("zstd") || !have("tar") {
        eprintln!("faithful_remote: skipped, no zstd or tar for the baseline");
        return;
    }
    let mut g = c.benchmark_group("faithful_remote");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(100));
    let place = common::tmpfs_dir();
    let tree = place.path().join("tree");
    match (quick(), real_tree()) {
        (false, Some(real)) => cp_a(&real, &tree),
        _ => {
            fs::create_dir(&tree).expect("mkdir");
            make_tree(&tree, if quick() { 200 } else { 2_000 });
        }
    }
    let sparse = place.path().join("sparse");
    fs::create_dir(&sparse).expect("mkdir");
    make_sparse(
        &sparse.join("disk.img"),
        if quick() { 64 << 20 } else { 10 << 30 },
    );
    for (what, src) in [("tree", &tree), ("sparse_10g", &sparse)] {
        let local = cache(&place.path().join(format!("local-{what}")));
        assert_eq!(
            local.store_tree(what, src).expect("store"),
            Stored::Committed
        );
        let bucket = |dir: &Path| {
            Remote::builder(format!("file://{}", dir.display()))
                .open()
                .expect("open remote")
        };
        // One bucket pushed once, for the pulls.
        let pulled_from = place.path().join(format!("bucket-{what}"));
        bucket(&pulled_from)
            .push(&local, what)
            .expect("push")
            .expect("pushed");
        g.bench_function(BenchmarkId::new("push", what), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || {
                        let dir = place.path().join(next_name("bucket"));
                        bucket(&dir)
                            .push(&local, what)
                            .expect("push")
                            .expect("pushed");
                        dir
                    },
                    |dir| fs::remove_dir_all(dir).expect("remove bucket"),
                )
            })
        });
        g.bench_function(BenchmarkId::new("baseline_tar_push", what), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || {
                        let out = place.path().join(next_name("archive"));
                        tar_push(src, &out);
                        out
                    },
                    |out| fs::remove_file(out).expect("remove archive"),
                )
            })
        });
        let remote = bucket(&pulled_from);
        g.bench_function(BenchmarkId::new("pull", what), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || {
                        let dir = place.path().join(next_name("pulled"));
                        let c = cache(&dir);
                        drop(remote.pull(&c, what).expect("pull").expect("pulled"));
                        dir
                    },
                    |dir| fs::remove_dir_all(dir).expect("remove cache"),
                )
            })
        });
        let archive = place.path().join(format!("archive-{what}"));
        tar_push(src, &archive);
        g.bench_function(BenchmarkId::new("baseline_tar_pull", what), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || {
                        let dst = place.path().join(next_name("untar"));
                        tar_pull(&archive, &dst);
                        dst
                    },
                    |dst| fs::remove_dir_all(dst).expect("remove extraction"),
                )
            })
        });
    }
    g.finish();
}
