//! What the bench targets share: temporary caches on tmpfs, the payload,
//! and the v1 protocols in raw system calls on absolute paths (docs/format.md,
//! "Protocols"), which are the baselines every facade benchmark is
//! compared with.
//!
//! Each bench target uses a part of this module, so unused items are
//! allowed here.

// The raw-system-call baselines (and the tests that probe the raw
// protocol) are what the root `clippy.toml` routes everything else
// away from: they must make the calls themselves.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)]

pub mod cputime;

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use criterion::black_box;
use fscache::{CacheInfo, FsCache, MaxSize};
use fscache_lock::{set_lock, LockKind, Wait};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, CWD, UTIME_NOW, UTIME_OMIT};
use rustix::io::Errno;

/// The application id of the bench caches.
pub const APPID: &str = "fscache-bench";

/// The payload of a stored entry.
pub const FILE_4K: [u8; 4096] = [0x5a; 4096];

/// A temporary directory on tmpfs (`/dev/shm`) if there is one, else in the
/// system temp directory.
pub use fscache_testkit::tmpfs_dir;

/// A temporary directory under the target directory (beside the bench
/// executable's `deps/`), i.e. on the build's disk file system.
pub fn disk_dir() -> tempfile::TempDir {
    let exe = std::env::current_exe().expect("bench executable path");
    // target/<profile>/deps/<bench>-<hash> → target/<profile>
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
pub fn open_unlimited(root: &Path) -> FsCache {
    open_limited(root, MaxSize::Unlimited)
}

/// Open a cache at `root/cache` with the maximum size `limit`.
pub fn open_limited(root: &Path, limit: MaxSize) -> FsCache {
    let cache = FsCache::open(APPID, root.join("cache")).expect("open cache");
    cache
        .set_info(CacheInfo {
            maximum_size: Some(limit),
            ..Default::default()
        })
        .expect("set maximum size");
    cache
}

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in bench paths")
}

/// Absolute paths of one entry's protocol files, as C strings so the
/// baseline spends nothing on conversions.
pub struct EntryPaths {
    pub lock: CString,
    pub info: CString,
}

impl EntryPaths {
    pub fn new(root: &Path, name: &str) -> Self {
        let entry = root.join("objects").join(name);
        Self {
            lock: cstr(&entry.join("object.lock")),
            info: cstr(&entry.join("object.info")),
        }
    }
}

/// `atime = now, mtime untouched`.
pub const TOUCH_ATIME: Timestamps = Timestamps {
    last_access: Timespec {
        tv_sec: 0,
        tv_nsec: UTIME_NOW,
    },
    last_modification: Timespec {
        tv_sec: 0,
        tv_nsec: UTIME_OMIT,
    },
};

/// One entry's protocol files relative to a held descriptor of
/// `objects/`, and an absent entry's lock file: what the floor of a load
/// needs.
pub struct FloorPaths {
    pub objects: OwnedFd,
    pub lock: CString,
    pub info: CString,
    pub absent: CString,
}

impl FloorPaths {
    pub fn new(root: &Path, name: &str) -> Self {
        let objects = rustix::fs::open(
            cstr(&root.join("objects")).as_c_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open objects/");
        let c = |s: String| CString::new(s).expect("no NUL");
        Self {
            objects,
            lock: c(format!("{name}/object.lock")),
            info: c(format!("{name}/object.info")),
            absent: c("absent/object.lock".to_owned()),
        }
    }
}

/// The floor of a hit: the fewest system calls the protocol allows, 6.
/// `openat` of `NAME/object.lock` relative to the held `objects/`,
/// `F_OFD_SETLK F_RDLCK`, `fstat` (a link count above 0 is the replace
/// check on a local file system), `fstatat` of `object.info` (validity),
/// `futimens` (atime only), `close` (which releases the lock).
pub fn floor_load_hit(p: &FloorPaths) {
    let fd = rustix::fs::openat(
        &p.objects,
        p.lock.as_c_str(),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .expect("open object.lock");
    assert!(
        set_lock(fd.as_fd(), Some(LockKind::Shared), Wait::NonBlock).expect("lock"),
        "uncontended"
    );
    assert!(rustix::fs::fstat(&fd).expect("fstat").st_nlink > 0);
    black_box(
        rustix::fs::statat(&p.objects, p.info.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .expect("stat object.info"),
    );
    let _ = rustix::fs::futimens(&fd, &TOUCH_ATIME);
    drop(fd);
}

/// The floor of a miss: one `openat` that fails with `ENOENT`.
pub fn floor_miss(p: &FloorPaths) {
    let r = rustix::fs::openat(
        &p.objects,
        p.absent.as_c_str(),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        Mode::empty(),
    );
    assert_eq!(r.err(), Some(Errno::NOENT));
}

/// The load protocol's hit path as osbuild issues it, 8 system calls on
/// absolute paths: open the lock file, `F_OFD_SETLK F_RDLCK`, `fstat(fd)`
/// and `stat(path)` (the classic replace check), `stat(object.info)`
/// (validity), `futimens` (atime only), then `F_UNLCK` and close.
pub fn raw_load_hit(p: &EntryPaths) {
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

/// A fresh `uuid-<32 hex>` name.
pub fn uuid() -> String {
    fscache_dir::anonymous_name()
}

pub fn create_excl(path: &CString, access: OFlags) -> OwnedFd {
    rustix::fs::open(
        path.as_c_str(),
        access | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .expect("create")
}

pub fn write_all(fd: &OwnedFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        let n = rustix::io::write(fd, buf).expect("write");
        assert!(n > 0);
        buf = &buf[n..];
    }
}

pub fn lock_wait(fd: &OwnedFd, kind: LockKind) {
    set_lock(fd.as_fd(), Some(kind), Wait::Block).expect("lock");
}

/// An entry built by [`raw_build`]: its `uuid-*` directory, the held lock
/// of its `object.lock`, and its measured space.
pub struct RawAnon {
    pub anon: PathBuf,
    pub lock: OwnedFd,
    pub size: u64,
}

/// The first half of the store protocol in raw system calls: atomic
/// anonymous dir, `mkdir data`, the caller's 4 KiB file, and the measure.
pub fn raw_build(root: &Path) -> RawAnon {
    let objects = root.join("objects");
    // Atomic anonymous dir: a locked temp lock file linked in as object.lock.
    let tmp = cstr(&objects.join(uuid()));
    let lock = create_excl(&tmp, OFlags::RDWR);
    lock_wait(&lock, LockKind::Exclusive);
    assert!(rustix::fs::fstat(&lock).expect("fstat").st_nlink > 0);
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
    RawAnon { anon, lock, size }
}

/// Update `cache.size` by the raw protocol: locked read → temp → rename.
/// A charge (`delta > 0`) past `limit` is refused: `Err(total)`.
pub fn raw_update_size(root: &Path, delta: i64, limit: Option<u64>) -> Result<u64, u64> {
    let size_c = cstr(&root.join("cache.size"));
    // Locked open: open → lock → still linked? (another process may have
    // replaced the counter between our open and our lock) → retry.
    let size_fd = loop {
        let fd = rustix::fs::open(
            size_c.as_c_str(),
            OFlags::RDWR | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open cache.size");
        lock_wait(&fd, LockKind::Exclusive);
        if rustix::fs::fstat(&fd).expect("fstat").st_nlink > 0 {
            break fd;
        }
    };
    let mut buf = [0u8; 64];
    let n = rustix::io::read(&size_fd, &mut buf).expect("read cache.size");
    let total: u64 = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("cache.size holds an integer");
    let new = total.saturating_add_signed(delta);
    if delta > 0 && limit.is_some_and(|l| new > l) {
        return Err(total);
    }
    let tmp = cstr(&root.join("objects").join(uuid()));
    let new_fd = create_excl(&tmp, OFlags::RDWR);
    lock_wait(&new_fd, LockKind::Exclusive);
    write_all(&new_fd, new.to_string().as_bytes());
    rustix::fs::rename(tmp.as_c_str(), size_c.as_c_str()).expect("rename cache.size");
    drop(new_fd);
    drop(size_fd);
    Ok(new)
}

/// The second half of the store protocol: `object.info` with `O_EXCL`,
/// rename to `name`, unlock.
pub fn raw_publish(root: &Path, built: RawAnon, name: &str) {
    let info = format!(
        r#"{{"creation-boot-id": "{:032x}", "size": {}}}"#,
        0, built.size
    );
    let info_fd = create_excl(&cstr(&built.anon.join("object.info")), OFlags::WRONLY);
    write_all(&info_fd, info.as_bytes());
    drop(info_fd);
    let _ = rustix::fs::futimens(&built.lock, &TOUCH_ATIME);
    // Publish, then release the entry.
    let target = cstr(&root.join("objects").join(name));
    rustix::fs::rename(cstr(&built.anon).as_c_str(), target.as_c_str()).expect("rename entry");
    set_lock(built.lock.as_fd(), None, Wait::NonBlock).expect("unlock");
    drop(built.lock);
}

/// The store protocol in raw system calls under an unlimited maximum size.
pub fn raw_store(root: &Path, name: &str) {
    let built = raw_build(root);
    raw_update_size(root, built.size as i64, None).expect("unlimited");
    raw_publish(root, built, name);
}

/// A committed entry as the raw eviction sees it.
#[derive(Clone, Debug)]
pub struct RawCandidate {
    name: String,
    atime: fscache_dir::stat::Stamp,
    size: u64,
}

/// The raw eviction protocol with a kept candidate list: a scan lists
/// `objects/` (stat of each `object.lock`, read of each `object.info`),
/// sorts it oldest first and plans it down to the 90 % watermark; each
/// store pops and removes only what its own charge needs.
#[derive(Default)]
pub struct RawEvictor {
    queue: VecDeque<RawCandidate>,
}

impl RawEvictor {
    /// A store of one 4 KiB file as `name` into a cache of maximum size
    /// `limit`, evicting as needed.
    pub fn store(&mut self, root: &Path, name: &str, limit: u64) {
        let built = raw_build(root);
        loop {
            let total = match raw_update_size(root, built.size as i64, Some(limit)) {
                Ok(_) => break,
                Err(total) => total,
            };
            let need = (total + built.size).saturating_sub(limit);
            let mut freed = 0;
            let mut scanned = false;
            while freed < need {
                if self.queue.is_empty() {
                    assert!(!scanned || freed > 0, "a scan freed nothing");
                    self.scan(root, total + built.size, limit / 10 * 9);
                    assert!(!self.queue.is_empty(), "nothing to evict");
                    scanned = true;
                }
                let victim = self.queue.pop_front().expect("not empty");
                freed += raw_evict(root, &victim).unwrap_or(0);
            }
        }
        raw_publish(root, built, name);
    }

    /// List, sort and plan down to `target`.
    fn scan(&mut self, root: &Path, mut total: u64, target: u64) {
        let objects = root.join("objects");
        let mut all = Vec::new();
        let dir = rustix::fs::open(
            cstr(&objects).as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open objects");
        for entry in rustix::fs::Dir::read_from(&dir).expect("read objects") {
            let entry = entry.expect("read objects");
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with("uuid-") {
                continue;
            }
            let p = EntryPaths::new(root, &name);
            let Ok(st) = rustix::fs::statat(CWD, p.lock.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            let Some(size) = read_info_size(&p.info) else {
                continue;
            };
            let atime = fscache_dir::stat::atime(&st);
            all.push(RawCandidate { name, atime, size });
        }
        all.sort_by(|a, b| a.atime.cmp(&b.atime).then_with(|| a.name.cmp(&b.name)));
        for c in all {
            if total <= target {
                break;
            }
            total = total.saturating_sub(c.size);
            self.queue.push_back(c);
        }
    }
}

fn read_info_size(info: &CString) -> Option<u64> {
    let fd = rustix::fs::open(
        info.as_c_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 256];
    let n = rustix::io::read(&fd, &mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let at = text.find("\"size\":")? + 7;
    text[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Remove one candidate by the raw protocol: exclusive lock without
/// waiting (`O_NOATIME`), atime re-checked, `object.info` read and
/// unlinked, the size uncharged, then the rest removed. `None`: skipped.
fn raw_evict(root: &Path, c: &RawCandidate) -> Option<u64> {
    let p = EntryPaths::new(root, &c.name);
    // Read-write: F_WRLCK needs a descriptor open for writing.
    let fd = rustix::fs::open(
        p.lock.as_c_str(),
        OFlags::RDWR | OFlags::NOATIME | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    if !set_lock(fd.as_fd(), Some(LockKind::Exclusive), Wait::NonBlock).ok()? {
        return None;
    }
    let st = rustix::fs::fstat(&fd).ok()?;
    if st.st_nlink == 0 || fscache_dir::stat::atime(&st) != c.atime {
        return None;
    }
    let size = read_info_size(&p.info)?;
    rustix::fs::unlink(p.info.as_c_str()).ok()?;
    raw_update_size(root, -(size as i64), None).expect("uncharge");
    let entry = root.join("objects").join(&c.name);
    remove_dir_contents(&entry.join("data"));
    let _ = rustix::fs::rmdir(cstr(&entry.join("data")).as_c_str());
    let _ = rustix::fs::unlink(p.lock.as_c_str());
    let _ = rustix::fs::rmdir(cstr(&entry).as_c_str());
    drop(fd);
    Some(size)
}

/// Unlink every file of the flat directory `dir` (what a bench entry
/// holds).
fn remove_dir_contents(dir: &Path) {
    let Ok(fd) = rustix::fs::open(
        cstr(dir).as_c_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let names: Vec<CString> = rustix::fs::Dir::read_from(&fd)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for n in names {
        match rustix::fs::unlinkat(&fd, n.as_c_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => panic!("unlink: {e}"),
        }
    }
}
