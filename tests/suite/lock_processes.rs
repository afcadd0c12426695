//! OFD locks across processes: `fscache-test-helper` and Python's `fcntl`
//! (the way osbuild locks) against `fscache-lock` in this process.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;

use fscache_lock::{conflicting_lock, FileLock, LockKind};
use fscache_testkit::{open_rw as open, temp_file as temp};
use LockKind::{Exclusive, Shared};

use crate::util::{have_python3, helper_lock, Reporter};

/// Whether this process could take a lock of `kind` through a new open.
fn available(path: &Path, kind: LockKind) -> bool {
    FileLock::try_lock(open(path), kind).unwrap().is_some()
}

#[test]
fn a_child_is_excluded_while_the_parent_holds_exclusive() {
    let tmp = temp();
    let path = tmp.path();
    let held = FileLock::lock(open(path), Exclusive).unwrap();

    for kind in ["exclusive", "shared"] {
        let mut child = helper_lock(path, kind, "try");
        child.expect_line("contended");
        child.finish();
    }

    drop(held);
    let mut child = helper_lock(path, "exclusive", "try");
    child.expect_line("locked");
    assert!(!available(path, Shared), "the child's lock excludes us");
    child.finish();
    assert!(available(path, Exclusive), "the child released on exit");
}

#[test]
fn a_child_holding_shared_admits_readers_only() {
    let tmp = temp();
    let path = tmp.path();
    let mut child = helper_lock(path, "shared", "try");
    child.expect_line("locked");

    let probe = open(path);
    assert_eq!(
        conflicting_lock(probe.as_fd(), Exclusive).unwrap(),
        Some(Shared)
    );
    assert!(!available(path, Exclusive), "exclusive beside a reader");
    let mut mine = FileLock::try_lock(open(path), Shared)
        .unwrap()
        .expect("readers coexist across processes");
    assert!(
        !mine.try_convert(Exclusive).unwrap(),
        "the child still reads"
    );

    child.finish();
    assert!(
        mine.try_convert(Exclusive).unwrap(),
        "alone after the child left"
    );
}

#[test]
fn a_waiting_child_acquires_when_the_parent_releases() {
    let tmp = temp();
    let path = tmp.path();
    let held = FileLock::lock(open(path), Exclusive).unwrap();

    let mut child = helper_lock(path, "exclusive", "wait");
    assert!(child
        .next_line()
        .starts_with("waiting for exclusive lock on "));
    child.expect_silence();

    drop(held);
    child.expect_line("locked");
    assert!(!available(path, Shared));
    child.finish();
    assert!(available(path, Exclusive));
}

#[test]
fn a_killed_holder_releases_its_lock() {
    let tmp = temp();
    let path = tmp.path();
    let mut child = helper_lock(path, "exclusive", "try");
    child.expect_line("locked");
    assert!(!available(path, Shared));

    // SIGKILL: no unlock runs; the kernel drops the lock with the last fd.
    let status = child.kill();
    assert!(!status.success());
    assert!(available(path, Exclusive));
}

#[test]
fn helper_rejects_bad_usage() {
    for args in [&[][..], &["frobnicate"], &["lock", "/nonexistent"]] {
        let status = Command::new(crate::util::HELPER)
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}

/// Python's side of the interop tests (also of `lock_peers.rs`): lock `argv[1]` with `F_OFD_SETLK`
/// (kind `argv[2]`), print `locked` or `contended`, hold until stdin EOF.
/// This is how osbuild's `FsCache` locks (`osbuild/util/linux.py`).
const PYTHON_LOCKER: &str = r#"
import errno, fcntl, os, struct, sys
F_OFD_SETLK = 37
path, kind = sys.argv[1], sys.argv[2]
l_type = {"shared": fcntl.F_RDLCK, "exclusive": fcntl.F_WRLCK}[kind]
fd = os.open(path, os.O_RDWR)
# struct flock on 64-bit Linux: short l_type, short l_whence, (pad),
# off_t l_start, off_t l_len, pid_t l_pid, (pad); l_pid must be 0.
arg = struct.pack("hhxxxxqqixxxx", l_type, os.SEEK_SET, 0, 0, 0)
assert len(arg) == 32, len(arg)
try:
    fcntl.fcntl(fd, F_OFD_SETLK, arg)
except OSError as e:
    if e.errno in (errno.EAGAIN, errno.EACCES):
        print("contended", flush=True)
        sys.exit(0)
    raise
print("locked", flush=True)
sys.stdin.read()
"#;

/// Whether the python locker can run here; prints why not.
pub(crate) fn python_ready(test: &str) -> bool {
    if std::mem::size_of::<libc::flock>() != 32 {
        eprintln!("skipping {test}: the python locker assumes a 32-byte struct flock");
        return false;
    }
    have_python3(test)
}

pub(crate) fn python_lock(path: &Path, kind: &str) -> Reporter {
    let mut command = Command::new("python3");
    command.arg("-c").arg(PYTHON_LOCKER).arg(path).arg(kind);
    Reporter::spawn(command)
}

#[test]
fn we_see_python_locks() {
    if !python_ready("we_see_python_locks") {
        return;
    }
    let tmp = temp();
    let path = tmp.path();

    let mut python = python_lock(path, "exclusive");
    python.expect_line("locked");
    assert!(!available(path, Shared));
    assert_eq!(
        conflicting_lock(open(path).as_fd(), Shared).unwrap(),
        Some(Exclusive)
    );
    python.finish();
    assert!(available(path, Exclusive));

    let mut python = python_lock(path, "shared");
    python.expect_line("locked");
    assert!(available(path, Shared));
    assert!(!available(path, Exclusive));
    python.finish();
    assert!(available(path, Exclusive));
}

#[test]
fn python_sees_our_locks() {
    if !python_ready("python_sees_our_locks") {
        return;
    }
    let tmp = temp();
    let path = tmp.path();

    let held = FileLock::lock(open(path), Exclusive).unwrap();
    for kind in ["shared", "exclusive"] {
        let mut python = python_lock(path, kind);
        python.expect_line("contended");
        python.finish();
    }
    drop(held);

    let held = FileLock::lock(open(path), Shared).unwrap();
    let mut python = python_lock(path, "shared");
    python.expect_line("locked");
    python.finish();
    let mut python = python_lock(path, "exclusive");
    python.expect_line("contended");
    python.finish();
    drop(held);

    let mut python = python_lock(path, "exclusive");
    python.expect_line("locked");
    python.finish();
}
