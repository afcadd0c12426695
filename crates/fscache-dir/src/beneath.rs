//! `open_beneath`: the one open of a path relative to a directory that never
//! resolves outside it (`openat2(RESOLVE_BENEATH)`, cap-std where missing).

use std::ffi::CStr;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use cap_std::fs::Dir;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Whether `openat2` works in this process. A kernel before 5.6 or a
/// seccomp filter refuses it for every call, so one refusal is remembered
/// for all directories.
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// What to do with an `openat2` failure.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// `openat2` itself is unavailable: fall back, and stop trying it.
    Unavailable,
    /// An answer about this file: report it.
    Answer,
}

/// Classify an `openat2` error. `EPERM` is ambiguous: a seccomp filter
/// answers it for the whole system call, but the kernel also answers it for
/// this file (`O_NOATIME` on a file we do not own, a write open of an
/// immutable file). `probe` opens the directory itself with `openat2`; only
/// when that fails too is the system call the culprit.
fn classify(e: Errno, probe: impl FnOnce() -> rustix::io::Result<OwnedFd>) -> Refusal {
    match e {
        Errno::NOSYS => Refusal::Unavailable,
        Errno::PERM => match probe() {
            Err(Errno::PERM) | Err(Errno::NOSYS) => Refusal::Unavailable,
            _ => Refusal::Answer,
        },
        _ => Refusal::Answer,
    }
}

/// `openat2(dir, rel, flags | O_CLOEXEC | O_NOFOLLOW, RESOLVE_BENEATH |
/// RESOLVE_NO_MAGICLINKS)`—open `rel` beneath `dir`, never following a
/// symlink out of it nor at the last component.
///
/// Where `openat2` is unavailable (`ENOSYS` before Linux 5.6, or a seccomp
/// filter), the open goes through cap-std's sandboxed resolution instead,
/// which walks `rel` one component at a time and refuses to leave `dir`
/// as well: the fallback is never a plain multi-component `openat`.
///
/// # Errors
///
/// The open failed: the OS error itself. `dir` is a bare descriptor whose
/// path this function does not know, so the caller folds in the path it
/// does know (as [`CacheDir::open_raw`](crate::CacheDir::open_raw) does,
/// and `fscache_quota::tree_space`'s caller).
///
/// # References
///
/// * [`openat2(2)`](https://man7.org/linux/man-pages/man2/openat2.2.html)
#[doc(alias = "openat2")]
#[doc(alias = "RESOLVE_BENEATH")]
pub fn open_beneath(dir: &Dir, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    open_beneath_errno(dir, rel, flags, mode).map_err(io::Error::from)
}

/// As [`open_beneath`], the raw errno for callers here that classify it
/// (a miss on the load path builds no `io::Error`).
pub(crate) fn open_beneath_errno(
    dir: &Dir,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
) -> rustix::io::Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    if OPENAT2.load(Ordering::Relaxed) {
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        match rustix::io::retry_on_intr(|| rustix::fs::openat2(dir, rel, flags, mode, resolve)) {
            Err(e) => {
                let probe = || {
                    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
                    rustix::io::retry_on_intr(|| {
                        rustix::fs::openat2(dir, ".", flags, Mode::empty(), resolve)
                    })
                };
                match classify(e, probe) {
                    Refusal::Answer => return Err(e),
                    Refusal::Unavailable => OPENAT2.store(false, Ordering::Relaxed),
                }
            }
            ok => return ok,
        }
    }
    open_sandboxed(dir, rel, flags, mode)
}

/// `openat2(objects, rel, flags | O_CLOEXEC | O_NOFOLLOW,
/// RESOLVE_NO_SYMLINKS)`—open `rel`, a path without any `..` component,
/// below the held `objects/` descriptor of `cache`, following no symlink
/// anywhere on the way, with `rel` already a C string (the load's hot
/// path: one lookup less than from the root, no copy of the path).
///
/// As safe as `RESOLVE_BENEATH` here, and cheaper: a path without `..`
/// only walks down, and with no symlink followed every step is a real
/// directory entry below `objects/`, so it cannot leave it (`EINVAL` for
/// an absolute `rel` or one with a `..` component, before any I/O). `RESOLVE_BENEATH` would
/// also allow symlinks that stay inside, and pays for that at the end of
/// every lookup with a walk up the dentry chain to prove the result is
/// still beneath (`path_is_under` in the kernel's `complete_walk`);
/// `benches/cache.rs`, group `open`, measures both beside plain `openat`.
/// Where `openat2` is unavailable, the same open of `objects/<rel>`
/// beneath the root through cap-std.
pub(crate) fn open_beneath_fd_errno(
    cache: &crate::CacheDir,
    objects: BorrowedFd<'_>,
    rel: &CStr,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    // An absolute path would ignore `objects` altogether.
    let bytes = rel.to_bytes();
    if bytes.first() == Some(&b'/') || bytes.split(|&b| b == b'/').any(|c| c == b"..") {
        return Err(Errno::INVAL);
    }
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    if OPENAT2.load(Ordering::Relaxed) {
        let resolve = ResolveFlags::NO_SYMLINKS;
        match rustix::io::retry_on_intr(|| {
            rustix::fs::openat2(objects, rel, flags, Mode::empty(), resolve)
        }) {
            Err(e) => {
                let probe = || {
                    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
                    rustix::io::retry_on_intr(|| {
                        rustix::fs::openat2(objects, c".", flags, Mode::empty(), resolve)
                    })
                };
                match classify(e, probe) {
                    Refusal::Answer => return Err(e),
                    Refusal::Unavailable => OPENAT2.store(false, Ordering::Relaxed),
                }
            }
            ok => return ok,
        }
    }
    use std::os::unix::ffi::OsStrExt;
    let rel = Path::new(crate::layout::OBJECTS).join(std::ffi::OsStr::from_bytes(rel.to_bytes()));
    open_sandboxed(&cache.dir, &rel, flags, Mode::empty())
}

/// The fallback of [`open_beneath`]: cap-std's `open_with`, which resolves
/// `rel` beneath `dir` component by component.
fn open_sandboxed(dir: &Dir, rel: &Path, flags: OFlags, mode: Mode) -> rustix::io::Result<OwnedFd> {
    use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
    use cap_std::fs::OpenOptionsExt;
    let mut opts = cap_std::fs::OpenOptions::new();
    let acc = flags & (OFlags::RDONLY | OFlags::WRONLY | OFlags::RDWR);
    opts.read(acc != OFlags::WRONLY)
        .write(acc == OFlags::WRONLY || acc == OFlags::RDWR)
        .follow(FollowSymlinks::No)
        .mode(mode.bits());
    if flags.contains(OFlags::CREATE | OFlags::EXCL) {
        opts.create_new(true);
    } else if flags.contains(OFlags::CREATE) {
        opts.create(true);
    }
    let extra = flags
        & !(OFlags::RDONLY
            | OFlags::WRONLY
            | OFlags::RDWR
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC);
    // The remaining bits (O_NOATIME, O_DIRECTORY, O_NONBLOCK…) fit an
    // `i32`, as open(2) takes them.
    opts.custom_flags(extra.bits() as i32);
    let file = dir
        .open_with(rel, &opts)
        // cap-std's one error that is no OS error is its sandbox's refusal
        // of a path leading out of `dir`: what openat2 reports as `EXDEV`
        // under `RESOLVE_BENEATH`, so both paths answer alike.
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::XDEV))?;
    Ok(OwnedFd::from(file.into_std()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::symlink;

    fn fixture() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(tmp.path().join("outside"), b"secret").unwrap();
        std::fs::write(root.join("sub/inside"), b"ok").unwrap();
        symlink(tmp.path().join("outside"), root.join("abs")).unwrap();
        symlink("../outside", root.join("rel")).unwrap();
        symlink(tmp.path(), root.join("sub/dirlink")).unwrap();
        symlink("..", root.join("sub/up")).unwrap();
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority()).unwrap();
        (tmp, dir)
    }

    const ESCAPES: [&str; 6] = [
        "../outside",
        "abs",
        "rel",
        "sub/dirlink/outside",
        "sub/up/../outside",
        "sub/../../outside",
    ];

    #[test]
    fn the_fallback_never_resolves_outside_the_root() {
        let (_tmp, dir) = fixture();
        for rel in ESCAPES {
            let r = open_sandboxed(
                &dir,
                Path::new(rel),
                OFlags::RDONLY | OFlags::NOFOLLOW,
                Mode::empty(),
            );
            assert!(r.is_err(), "{rel} escaped");
        }
        // Multi-component paths beneath the root still open.
        let fd =
            open_sandboxed(&dir, Path::new("sub/inside"), OFlags::RDONLY, Mode::empty()).unwrap();
        assert_eq!(crate::read_small_fd(&fd).unwrap(), b"ok");
        let fd = open_sandboxed(
            &dir,
            Path::new("sub/../sub/inside"),
            OFlags::RDONLY,
            Mode::empty(),
        );
        assert!(fd.is_ok());
    }

    #[test]
    fn open_beneath_never_resolves_outside_the_root() {
        let (_tmp, dir) = fixture();
        for rel in ESCAPES {
            let r = open_beneath_errno(&dir, Path::new(rel), OFlags::RDONLY, Mode::empty());
            assert!(r.is_err(), "{rel} escaped");
        }
        let fd = open_beneath_errno(&dir, Path::new("sub/inside"), OFlags::RDONLY, Mode::empty())
            .unwrap();
        assert_eq!(crate::read_small_fd(&fd).unwrap(), b"ok");
    }

    #[test]
    fn the_objects_open_follows_no_symlink_and_never_climbs() {
        // `root/sub` stands for `objects/`: its `dirlink` and `up` are
        // symlinks leading out, `inside` a file in it.
        let (tmp, _dir) = fixture();
        let cache = crate::CacheDir::open(&tmp.path().join("root")).unwrap();
        std::fs::create_dir(tmp.path().join("root/sub/real")).unwrap();
        std::fs::write(tmp.path().join("root/sub/real/f"), b"ok").unwrap();
        symlink("real", tmp.path().join("root/sub/alias")).unwrap();
        let sub = rustix::fs::open(
            tmp.path().join("root/sub"),
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let open = |rel: &CStr| open_beneath_fd_errno(&cache, sub.as_fd(), rel, OFlags::RDONLY);
        let fd = open(c"real/f").unwrap();
        assert_eq!(crate::read_small_fd(&fd).unwrap(), b"ok");
        // Any symlink on the way, even one that stays inside: ELOOP.
        for rel in [
            c"alias/f",
            c"dirlink/outside",
            c"up/outside",
            c"inside/../inside",
        ] {
            let r = open(rel);
            assert!(
                matches!(r, Err(Errno::LOOP | Errno::INVAL | Errno::NOTDIR)),
                "{rel:?}: {r:?}"
            );
        }
        // `..` or an absolute path: refused before any I/O.
        for rel in [c"../outside", c"real/../../outside", c"..", c"/etc/passwd"] {
            assert_eq!(open(rel).err(), Some(Errno::INVAL), "{rel:?}");
        }
    }

    #[test]
    fn eperm_about_the_file_keeps_openat2() {
        // O_NOATIME on a file we do not own: the probe of the directory
        // succeeds, so the EPERM is the file's answer.
        let (_tmp, dir) = fixture();
        let probe = || {
            open_sandboxed(
                &dir,
                Path::new("."),
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
            )
        };
        assert_eq!(classify(Errno::PERM, probe), Refusal::Answer);
        assert_eq!(classify(Errno::NOENT, || unreachable!()), Refusal::Answer);
    }

    #[test]
    fn eperm_or_enosys_from_the_call_disables_openat2() {
        assert_eq!(
            classify(Errno::NOSYS, || unreachable!()),
            Refusal::Unavailable
        );
        assert_eq!(
            classify(Errno::PERM, || Err(Errno::PERM)),
            Refusal::Unavailable
        );
        assert_eq!(
            classify(Errno::PERM, || Err(Errno::NOSYS)),
            Refusal::Unavailable
        );
    }

    #[test]
    fn o_noatime_eperm_is_reported_and_openat2_stays_on() {
        // As root O_NOATIME is always permitted; elsewhere a root-owned
        // file gives the EPERM for real.
        if rustix::process::geteuid().is_root() {
            eprintln!("skipped: root may use O_NOATIME on any file");
            return;
        }
        let etc = Dir::open_ambient_dir("/etc", cap_std::ambient_authority()).unwrap();
        let r = open_beneath_errno(
            &etc,
            Path::new("passwd"),
            OFlags::RDONLY | OFlags::NOATIME,
            Mode::empty(),
        );
        assert_eq!(r.err(), Some(Errno::PERM));
        assert!(OPENAT2.load(Ordering::Relaxed), "openat2 switched off");
    }
}
