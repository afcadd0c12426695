//! `Durability::Committed`: every file and directory of an entry is synced
//! before the rename that publishes it, and the rename is synced (its
//! parent directory) before `commit` returns. Proved by recording the
//! system calls of a commit with `strace` (skips, saying why, where strace
//! is missing).

use std::path::Path;
use std::process::Command;

use fscache::{Durability, FsCache, MaxSize, Stored};

/// Set in the child this test runs under strace.
const CHILD: &str = "FSCACHE_DURABILITY_CHILD";

/// The child's work: one `Committed` store of a small tree, between two
/// markers the log can be cut at.
fn child(root: &Path) {
    let cache = FsCache::builder("durability-test")
        .max_size_if_unset(MaxSize::Unlimited)
        .durability(Durability::Committed)
        .open(root)
        .unwrap();
    let w = cache.store("entry").unwrap();
    std::fs::create_dir_all(w.path().join("a/b")).unwrap();
    std::fs::write(w.path().join("a/b/f"), b"durable").unwrap();
    std::fs::write(w.path().join("top"), b"x").unwrap();
    std::os::unix::fs::symlink("top", w.path().join("link")).unwrap();
    // Marker: the commit starts after this (an access(2) of a path no one
    // has), so the log of the copy above is left out.
    let _ = std::fs::metadata("/fscache-durability-commit-begins");
    assert_eq!(w.commit().unwrap(), Stored::Committed);
    let _ = std::fs::metadata("/fscache-durability-commit-ends");
}

#[test]
fn committed_syncs_everything_before_the_publishing_rename() {
    if let Some(root) = std::env::var_os(CHILD) {
        child(Path::new(&root));
        return;
    }
    let have_strace = Command::new("strace")
        .args(["-qq", "-e", "trace=none", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_strace {
        eprintln!("skipping: strace is missing or cannot trace here (cargo xtask ci installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let log = tmp.path().join("strace.log");
    let me = std::env::current_exe().unwrap();
    let status = Command::new("strace")
        .args(["-f", "-qq", "-y", "-o"])
        .arg(&log)
        .args([
            "-e",
            "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2,newfstatat,statx",
        ])
        .arg(&me)
        .args([
            "--exact",
            "durability::committed_syncs_everything_before_the_publishing_rename",
            "--test-threads=1",
        ])
        .env(CHILD, &root)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("fscache-durability-commit-begins"))
        .take_while(|l| !l.contains("fscache-durability-commit-ends"))
        .collect();
    assert!(!lines.is_empty(), "no commit in the log:\n{text}");
    let publish = lines
        .iter()
        .position(|l| l.contains("rename") && l.contains("\"entry\""))
        .unwrap_or_else(|| panic!("no publishing rename:\n{}", lines.join("\n")));
    let synced_before = |what: &str| {
        lines[..publish]
            .iter()
            .any(|l| l.contains("fsync(") && l.contains(what))
    };
    // Every file and directory of the entry, and object.info.
    for what in [
        "/data/a/b/f>",
        "/data/top>",
        "/data/a/b>",
        "/data/a>",
        "/data>",
        "/object.info>",
    ] {
        assert!(
            synced_before(what),
            "{what} not synced before the rename:\n{}",
            lines.join("\n")
        );
    }
    // The entry directory itself (its name is uuid-…).
    assert!(
        lines[..publish].iter().any(|l| l.contains("fsync(")
            && l.contains("/objects/uuid-")
            && l.ends_with("= 0")
            && !l.contains("/data")
            && !l.contains("object.info")),
        "the entry directory is not synced before the rename:\n{}",
        lines.join("\n")
    );
    // The charge: cache.size replaced durably (temp file synced before its
    // rename, the root after).
    let size_rename = lines
        .iter()
        .position(|l| l.contains("rename") && l.contains("cache.size"))
        .unwrap_or_else(|| panic!("no cache.size update:\n{}", lines.join("\n")));
    assert!(
        lines[..size_rename]
            .iter()
            .any(|l| l.contains("fsync(") && l.contains("/objects/uuid-")),
        "cache.size's temp file not synced before its rename:\n{}",
        lines.join("\n")
    );
    assert!(
        lines[size_rename..]
            .iter()
            .any(|l| l.contains("fsync(") && l.contains("/cache>)") && l.ends_with("= 0")),
        "the root not synced after cache.size's rename:\n{}",
        lines.join("\n")
    );
    // The parent after the rename, before commit returns.
    assert!(
        lines[publish..]
            .iter()
            .any(|l| l.contains("fsync(") && l.contains("/objects>")),
        "objects/ not synced after the rename:\n{}",
        lines.join("\n")
    );
}

/// Set in the child of the `store_tree` test: the cache root, then the
/// source tree after a `:`.
const CHILD_TREE: &str = "FSCACHE_DURABILITY_TREE_CHILD";

/// `store_tree` under `Committed`: the copy's xattrs and times are set
/// before the file and directory they belong to are synced, so a crash
/// after `commit` returns cannot lose them. Proved from strace's log: for
/// each node, its last `fsetxattr` and `utimensat` come before its
/// `fsync`, and that before the publishing rename.
#[test]
fn committed_store_tree_syncs_xattrs_and_times() {
    if let Some(arg) = std::env::var_os(CHILD_TREE) {
        let arg = arg.into_string().unwrap();
        let (root, src) = arg.split_once(':').unwrap();
        let cache = FsCache::builder("durability-test")
            .max_size_if_unset(MaxSize::Unlimited)
            .durability(Durability::Committed)
            .open(root)
            .unwrap();
        let _ = std::fs::metadata("/fscache-durability-commit-begins");
        assert_eq!(cache.store_tree("entry", src).unwrap(), Stored::Committed);
        let _ = std::fs::metadata("/fscache-durability-commit-ends");
        return;
    }
    let have_strace = Command::new("strace")
        .args(["-qq", "-e", "trace=none", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_strace {
        eprintln!("skipping: strace is missing or cannot trace here (cargo xtask ci installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"with metadata").unwrap();
    if rustix::fs::setxattr(
        src.join("d/f"),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .is_err()
    {
        eprintln!("skipping: no user xattrs on this file system");
        return;
    }
    rustix::fs::setxattr(
        src.join("d"),
        "user.dir",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let old = std::fs::FileTimes::new()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(978_307_200));
    std::fs::File::options()
        .write(true)
        .open(src.join("d/f"))
        .unwrap()
        .set_times(old)
        .unwrap();
    let root = tmp.path().join("cache");
    let log = tmp.path().join("strace.log");
    let status = Command::new("strace")
        .args(["-f", "-qq", "-y", "-o"])
        .arg(&log)
        .args([
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2,newfstatat,statx,fsetxattr,utimensat",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability::committed_store_tree_syncs_xattrs_and_times",
            "--test-threads=1",
        ])
        .env(CHILD_TREE, format!("{}:{}", root.display(), src.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("fscache-durability-commit-begins"))
        .take_while(|l| !l.contains("fscache-durability-commit-ends"))
        .collect();
    let all = lines.join("\n");
    let publish = lines
        .iter()
        .position(|l| l.contains("rename") && l.contains("\"entry\""))
        .unwrap_or_else(|| panic!("no publishing rename:\n{all}"));
    for node in ["/data/d/f>", "/data/d>"] {
        let last = |call: &str| {
            lines
                .iter()
                .rposition(|l| l.starts_with_call(call) && l.contains(node))
                .unwrap_or_else(|| panic!("no {call} of {node}:\n{all}"))
        };
        let synced = lines[..publish]
            .iter()
            .rposition(|l| l.starts_with_call("fsync") && l.contains(node))
            .unwrap_or_else(|| panic!("{node} not synced before the rename:\n{all}"));
        assert!(
            last("fsetxattr") < synced,
            "{node}: xattr set after its sync:\n{all}"
        );
        assert!(
            last("utimensat") < synced,
            "{node}: times set after its sync:\n{all}"
        );
    }
}

/// A line of strace's log is a call of `name` (after the pid column).
trait CallLine {
    fn starts_with_call(&self, name: &str) -> bool;
}

impl CallLine for &str {
    fn starts_with_call(&self, name: &str) -> bool {
        self.split_once(' ')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(&format!("{name}(")))
    }
}
