//! Tests of the native tree copy: content, modes, times, links, fallbacks.

use super::content::Method;
use super::copier::{split_parent, Copier, Target};
use super::lazy::PendingDir;
use super::*;
use std::path::PathBuf;

use crate::digest::{digest_tree, Version};
use cap_std::ambient_authority;
use rustix::fs::Mode;
use rustix::fs::{Timespec, Timestamps};
use rustix::process::{Gid, Uid};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

/// A source and a destination directory under one temporary directory.
struct Fixture {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let dst = tmp.path().join("dst");
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        Fixture {
            _tmp: tmp,
            src,
            dst,
        }
    }

    fn dst_dir(&self) -> Dir {
        Dir::open_ambient_dir(&self.dst, ambient_authority()).unwrap()
    }

    /// Copy `path` into the destination; returns the stats and the sum
    /// of the progress calls.
    fn copy(&self, path: &Path) -> io::Result<(CopyStats, u64, usize)> {
        let (mut sum, mut calls) = (0, 0);
        let stats = copy_tree_into(path, &self.dst_dir(), &mut |n| {
            sum += n;
            calls += 1;
            Ok(())
        })?;
        Ok((stats, sum, calls))
    }
}

/// Set atime and mtime of `path` (not following a symlink) to values
/// with nanoseconds.
fn set_times(path: &Path, sec: i64, nsec: i64) {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: sec - 100,
            tv_nsec: nsec + 1,
        },
        last_modification: Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// (mtime, mtime_nsec, atime, atime_nsec) of `path`, not following it.
fn times(path: &Path) -> (i64, i64, i64, i64) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.mtime(), m.mtime_nsec(), m.atime(), m.atime_nsec())
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn copy_contents_of_files() {
    let f = Fixture::new();
    let big: Vec<u8> = (0..(3 << 20) + 12345)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    fs::write(f.src.join("empty"), b"").unwrap();
    fs::write(f.src.join("small"), b"hello").unwrap();
    fs::create_dir_all(f.src.join("a/b/c")).unwrap();
    fs::write(f.src.join("a/b/c/big"), &big).unwrap();

    let total = tree_content_bytes(&f.src).unwrap();
    let (stats, sum, calls) = f.copy(&f.src).unwrap();

    assert_eq!(fs::read(f.dst.join("empty")).unwrap(), b"");
    assert_eq!(fs::read(f.dst.join("small")).unwrap(), b"hello");
    assert_eq!(fs::read(f.dst.join("a/b/c/big")).unwrap(), big);
    assert_eq!(total, big.len() as u64 + 5);
    assert_eq!(sum, total);
    assert!(calls >= 3, "at least one progress call per file");
    assert_eq!(stats.files, 3);
    assert_eq!(stats.dirs, 3);
    assert_eq!(stats.bytes, total);
    assert_eq!(stats.symlinks + stats.hard_links, 0);
}

#[test]
fn copy_keeps_modes_and_fills_read_only_dirs() {
    let f = Fixture::new();
    fs::write(f.src.join("private"), b"p").unwrap();
    fs::write(f.src.join("tool"), b"#!/bin/sh\n").unwrap();
    fs::write(f.src.join("setid"), b"s").unwrap();
    fs::create_dir(f.src.join("ro")).unwrap();
    fs::create_dir(f.src.join("sticky")).unwrap();
    fs::write(f.src.join("ro/inside"), b"i").unwrap();
    fs::create_dir(f.src.join("ro/sub")).unwrap();
    let set = |p: &str, m: u32| {
        fs::set_permissions(f.src.join(p), fs::Permissions::from_mode(m)).unwrap()
    };
    set("private", 0o600);
    set("tool", 0o755);
    set("setid", 0o6755);
    set("ro/inside", 0o444);
    set("ro/sub", 0o500);
    set("ro", 0o555);
    set("sticky", 0o1777);

    f.copy(&f.src).unwrap();

    for (p, m) in [
        ("private", 0o600),
        ("tool", 0o755),
        ("ro/inside", 0o444),
        ("ro/sub", 0o500),
        ("ro", 0o555),
        ("sticky", 0o1777),
    ] {
        assert_eq!(mode(&f.dst.join(p)), m, "{p}");
    }
    // Set-group-ID survives only where the caller is in the group.
    let setid = mode(&f.dst.join("setid"));
    assert_eq!(setid & !0o2000, 0o4755, "{setid:o}");
    // Let the TempDir remove it.
    set("ro", 0o755);
    fs::set_permissions(f.dst.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn copy_keeps_times_with_nanoseconds() {
    let f = Fixture::new();
    fs::create_dir(f.src.join("dir")).unwrap();
    fs::write(f.src.join("dir/file"), b"x").unwrap();
    symlink("file", f.src.join("dir/link")).unwrap();
    set_times(&f.src.join("dir/file"), 1_000_000_000, 123_456_789);
    set_times(&f.src.join("dir/link"), 1_100_000_000, 987_654_321);
    // Last, because writing its children changes a directory's mtime.
    set_times(&f.src.join("dir"), 1_200_000_000, 555_555_555);

    // Before the copy: reading the source moves its atimes.
    let paths = ["dir", "dir/file", "dir/link"];
    let before = paths.map(|p| times(&f.src.join(p)));

    f.copy(&f.src).unwrap();

    for (p, want) in paths.iter().zip(before) {
        assert_eq!(times(&f.dst.join(p)), want, "{p}");
    }
    assert_eq!(
        times(&f.dst.join("dir")),
        (1_200_000_000, 555_555_555, 1_199_999_900, 555_555_556)
    );
}

#[test]
fn copy_keeps_symlinks_verbatim() {
    let f = Fixture::new();
    fs::create_dir(f.src.join("real")).unwrap();
    fs::write(f.src.join("real/file"), b"content").unwrap();
    symlink("real/file", f.src.join("relative")).unwrap();
    symlink("/etc/passwd", f.src.join("absolute")).unwrap();
    symlink("does/not/exist", f.src.join("dangling")).unwrap();
    symlink("real", f.src.join("to_dir")).unwrap();
    symlink("../../../../escape", f.src.join("escape")).unwrap();

    let (stats, _, _) = f.copy(&f.src).unwrap();

    for (name, target) in [
        ("relative", "real/file"),
        ("absolute", "/etc/passwd"),
        ("dangling", "does/not/exist"),
        ("to_dir", "real"),
        ("escape", "../../../../escape"),
    ] {
        let p = f.dst.join(name);
        assert!(fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_link(&p).unwrap(), Path::new(target));
    }
    assert_eq!(stats.symlinks, 5);
    // The symlink to a directory was not followed.
    assert_eq!(stats.dirs, 1);
    assert_eq!(stats.files, 1);
}

#[test]
fn copy_keeps_hard_links() {
    let f = Fixture::new();
    fs::create_dir(f.src.join("d")).unwrap();
    fs::write(f.src.join("a"), b"shared").unwrap();
    fs::hard_link(f.src.join("a"), f.src.join("d/b")).unwrap();
    fs::hard_link(f.src.join("a"), f.src.join("d/c")).unwrap();
    fs::write(f.src.join("lonely"), b"l").unwrap();

    let total = tree_content_bytes(&f.src).unwrap();
    let (stats, sum, _) = f.copy(&f.src).unwrap();

    let ino = |p: &str| fs::metadata(f.dst.join(p)).unwrap().ino();
    assert_eq!(ino("a"), ino("d/b"));
    assert_eq!(ino("a"), ino("d/c"));
    assert_ne!(ino("a"), ino("lonely"));
    assert_eq!(fs::metadata(f.dst.join("a")).unwrap().nlink(), 3);
    assert_eq!(fs::read(f.dst.join("d/c")).unwrap(), b"shared");
    assert_eq!(total, 7);
    assert_eq!(sum, total);
    assert_eq!((stats.files, stats.hard_links, stats.bytes), (2, 2, 7));
}

#[test]
fn copy_single_file_and_symlink_as_named_child() {
    let f = Fixture::new();
    fs::write(f.src.join("one"), b"1").unwrap();
    set_times(&f.src.join("one"), 1_300_000_000, 42);
    symlink("one", f.src.join("link")).unwrap();

    let before = times(&f.src.join("one"));

    let (stats, sum, _) = f.copy(&f.src.join("one")).unwrap();
    assert_eq!((stats.files, sum), (1, 1));
    assert_eq!(times(&f.dst.join("one")), before);
    assert_eq!(fs::read(f.dst.join("one")).unwrap(), b"1");

    let (stats, sum, _) = f.copy(&f.src.join("link")).unwrap();
    assert_eq!((stats.symlinks, sum), (1, 0));
    assert_eq!(fs::read_link(f.dst.join("link")).unwrap(), Path::new("one"));
    assert_eq!(tree_content_bytes(&f.src.join("one")).unwrap(), 1);
    assert_eq!(tree_content_bytes(&f.src.join("link")).unwrap(), 0);
}

#[test]
fn split_parent_of_bare_name_is_cwd() {
    let (parent, name) = split_parent(Path::new("file")).unwrap();
    assert_eq!((parent, name), (Path::new("."), OsStr::new("file")));
    let (parent, name) = split_parent(Path::new("/a/b")).unwrap();
    assert_eq!((parent, name), (Path::new("/a"), OsStr::new("b")));
    let err = split_parent(Path::new("/")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

/// Copy the children `names` of `src` into `dst` with one copier.
fn copy_names(copier: &mut Copier<'_>, src: &Path, dst: &Dir, names: &[&str]) {
    let fd = open_dir_nofollow(CWD, src).unwrap();
    let st = rustix::fs::fstat(&fd).unwrap();
    let target = Target {
        dst: dst.try_clone().unwrap(),
        dst_rel: PathBuf::new(),
        finish: false,
        tree: None,
    };
    let names = names.iter().map(Into::into).collect();
    let root = Frame::with_names(fd, src.to_owned(), st, target, names);
    Walk::new().run(copier, root).unwrap();
}

/// Copy `src/big` to `dst/big` with `method` forced for the source file
/// system, as after a refusal of the cheaper ones.
fn copy_with_method(method: Method) -> (CopyStats, u64) {
    let f = Fixture::new();
    let big: Vec<u8> = (0..(1 << 20) + 999).map(|i| (i % 253) as u8).collect();
    fs::write(f.src.join("big"), &big).unwrap();
    let dev = fs::metadata(&f.src).unwrap().dev();
    let dst = f.dst_dir();
    let mut sum = 0;
    let mut progress = |n| {
        sum += n;
        Ok(())
    };
    let mut copier = Copier::new(&dst, &mut progress, &CopyOptions::new());
    copier.content.methods = HashMap::from([(dev, method)]);
    copy_names(&mut copier, &f.src, &dst, &["big"]);
    assert_eq!(copier.stats.dirs, 0, "a file, not a directory");
    let stats = copier.stats;
    assert_eq!(fs::read(f.dst.join("big")).unwrap(), big);
    (stats, sum)
}

#[test]
fn refused_reflink_is_remembered() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"aaa").unwrap();
    fs::write(f.src.join("b"), b"bbb").unwrap();
    let dev = fs::metadata(&f.src).unwrap().dev();
    let dst = f.dst_dir();
    let mut progress = |_| Ok(());
    let mut copier = Copier::new(&dst, &mut progress, &CopyOptions::new());
    copy_names(&mut copier, &f.src, &dst, &["a", "b"]);
    match copier.stats.reflinked {
        // A file system that clones: nothing refused.
        2 => assert_eq!(copier.content.methods.get(&dev), None),
        0 => assert_ne!(copier.content.methods.get(&dev), None),
        n => panic!("reflinked {n} of 2"),
    }
    assert_eq!(copier.stats.bytes, 6);
}

#[test]
fn copy_file_range_fallback() {
    let (stats, sum) = copy_with_method(Method::CopyFileRange);
    assert_eq!(
        (stats.reflinked, stats.bytes, sum),
        (0, (1 << 20) + 999, (1 << 20) + 999)
    );
}

#[test]
fn read_write_fallback() {
    let (stats, sum) = copy_with_method(Method::ReadWrite);
    assert_eq!(
        (stats.reflinked, stats.bytes, sum),
        (0, (1 << 20) + 999, (1 << 20) + 999)
    );
}

#[test]
fn copy_missing_source_names_it() {
    let f = Fixture::new();
    let missing = f.src.join("nope");
    let err = f.copy(&missing).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    let err = tree_content_bytes(&missing).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn copy_into_existing_name_fails_with_path() {
    let f = Fixture::new();
    fs::create_dir(f.src.join("sub")).unwrap();
    fs::write(f.src.join("sub/file"), b"x").unwrap();
    fs::create_dir(f.dst.join("sub")).unwrap();
    let err = f.copy(&f.src).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("sub"), "{err}");
}

#[test]
fn copy_recreates_fifo() {
    let f = Fixture::new();
    let fifo = f.src.join("pipe");
    rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o640), 0).unwrap();
    fs::set_permissions(&fifo, fs::Permissions::from_mode(0o640)).unwrap();
    set_times(&fifo, 1_400_000_000, 7);

    let (stats, _, _) = f.copy(&f.src).unwrap();

    let copy = f.dst.join("pipe");
    let st = rustix::fs::statat(CWD, &copy, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::Fifo);
    assert_eq!(mode(&copy), 0o640);
    assert_eq!(times(&copy), times(&fifo));
    assert_eq!(stats.files, 1);
}

#[test]
fn copy_keeps_devices_as_root() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mknod of a device needs root");
        return;
    }
    let f = Fixture::new();
    let dev = rustix::fs::makedev(1, 3);
    rustix::fs::mknodat(
        CWD,
        f.src.join("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o620),
        dev,
    )
    .unwrap();
    rustix::fs::mknodat(
        CWD,
        f.src.join("loop"),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(7, 200),
    )
    .unwrap();
    rustix::fs::chmodat(
        CWD,
        f.src.join("null"),
        Mode::from_raw_mode(0o620),
        AtFlags::empty(),
    )
    .unwrap();
    let (stats, _, _) = f.copy(&f.src).unwrap();
    assert_eq!(stats.specials, 2);
    let st = rustix::fs::lstat(f.dst.join("null")).unwrap();
    assert_eq!(
        FileType::from_raw_mode(st.st_mode),
        FileType::CharacterDevice
    );
    assert_eq!(st.st_rdev, dev);
    assert_eq!(st.st_mode & 0o7777, 0o620);
    let st = rustix::fs::lstat(f.dst.join("loop")).unwrap();
    assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::BlockDevice);
    assert_eq!(st.st_rdev, rustix::fs::makedev(7, 200));
}

#[test]
fn copy_keeps_owner_when_root() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: keeping ownership needs root");
        return;
    }
    let f = Fixture::new();
    fs::create_dir(f.src.join("d")).unwrap();
    fs::write(f.src.join("d/file"), b"x").unwrap();
    symlink("file", f.src.join("d/link")).unwrap();
    let (uid, gid) = (Some(Uid::from_raw(12345)), Some(Gid::from_raw(23456)));
    for p in ["d", "d/file", "d/link"] {
        rustix::fs::chownat(CWD, f.src.join(p), uid, gid, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }
    f.copy(&f.src).unwrap();
    for p in ["d", "d/file", "d/link"] {
        let m = fs::symlink_metadata(f.dst.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (12345, 23456), "{p}");
    }
}

#[test]
fn copy_deep_tree() {
    // Deeper than a recursive walk on a small test thread stack would
    // like, shallower than the fd limit (two fds per level).
    let f = Fixture::new();
    let levels = 200;
    let src_dir = Dir::open_ambient_dir(&f.src, ambient_authority()).unwrap();
    let mut rel = PathBuf::new();
    for _ in 0..levels {
        rel.push("d");
        src_dir.create_dir(&rel).unwrap();
    }
    src_dir.write(rel.join("leaf"), b"deep").unwrap();
    let (stats, sum, _) = f.copy(&f.src).unwrap();
    assert_eq!((stats.dirs, stats.files, sum), (levels, 1, 4));
    let dst = f.dst_dir();
    assert_eq!(dst.read(rel.join("leaf")).unwrap(), b"deep");
}

#[test]
fn content_bytes_skip_symlinks_and_count_hard_links_once() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), vec![1u8; 1000]).unwrap();
    fs::hard_link(f.src.join("a"), f.src.join("b")).unwrap();
    symlink("/etc/passwd", f.src.join("c")).unwrap();
    fs::create_dir(f.src.join("d")).unwrap();
    fs::write(f.src.join("d/e"), vec![2u8; 24]).unwrap();
    assert_eq!(tree_content_bytes(&f.src).unwrap(), 1024);
}

#[test]
fn reflink_on_btrfs_when_available() {
    // A loop-mounted btrfs needs root, mkfs.btrfs and mount; skip
    // otherwise. The generic fallbacks are covered by every other test.
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: a loop-mounted btrfs needs root");
        return;
    }
    let have = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok()
    };
    if !have("mkfs.btrfs") {
        eprintln!("skipped: mkfs.btrfs not found");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("btrfs.img");
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    fs::File::create(&image)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    let ok =
        |cmd: &mut std::process::Command| cmd.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok(std::process::Command::new("mkfs.btrfs")
        .arg("-q")
        .arg(&image))
    {
        eprintln!("skipped: mkfs.btrfs failed");
        return;
    }
    if !ok(std::process::Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&mnt))
    {
        eprintln!("skipped: cannot loop-mount btrfs here");
        return;
    }
    let result = (|| -> io::Result<CopyStats> {
        let src = mnt.join("src");
        let dst = mnt.join("dst");
        fs::create_dir(&src)?;
        fs::create_dir(&dst)?;
        fs::write(src.join("f1"), vec![3u8; 100_000])?;
        fs::write(src.join("f2"), b"two")?;
        let dst_dir = Dir::open_ambient_dir(&dst, ambient_authority())?;
        let stats = copy_tree_into(&src, &dst_dir, &mut |_| Ok(()))?;
        assert_eq!(fs::read(dst.join("f1"))?, vec![3u8; 100_000]);
        // The digest of a cloned copy: the source read once to hash it.
        let hashed = mnt.join("hashed");
        fs::create_dir(&hashed)?;
        let hashed_dir = Dir::open_ambient_dir(&hashed, ambient_authority())?;
        let (again, digest) = copy_tree_into_with_digest(&src, &hashed_dir, &mut |_| Ok(()))?;
        assert_eq!(again.reflinked, 2);
        assert_eq!(
            digest,
            digest_tree(&hashed_dir, &hashed, Version::default())?
        );
        assert_eq!(digest, digest_tree(&dst_dir, &dst, Version::default())?);
        Ok(stats)
    })();
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    let stats = result.unwrap();
    assert_eq!(stats.reflinked, 2);
}

#[test]
fn a_progress_error_stops_the_copy_and_is_returned() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..10 {
        std::fs::write(src.join(format!("f{i}")), b"x").unwrap();
    }
    std::fs::create_dir(&dst).unwrap();
    let dst_dir = Dir::open_ambient_dir(&dst, cap_std::ambient_authority()).unwrap();
    let mut calls = 0;
    let e = copy_tree_into(&src, &dst_dir, &mut |_| {
        calls += 1;
        if calls == 3 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        Ok(())
    })
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Interrupted);
    assert_eq!(calls, 3, "nothing is copied after the stop");
    assert!(std::fs::read_dir(&dst).unwrap().count() <= 3);
}

/// The digest of the tree at `path`.
fn digest_of(path: &Path) -> Digest {
    let dir = Dir::open_ambient_dir(path, ambient_authority()).unwrap();
    digest_tree(&dir, path, Version::default()).unwrap()
}

/// A tree with every kind the copy keeps: hard links (within and across
/// directories), symlinks (relative, absolute, dangling), empty files and
/// directories, a FIFO, odd permission bits, non-UTF-8 names, a file
/// bigger than the read buffer.
fn odd_tree(t: &Path) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileExt;
    let set =
        |p: &str, m: u32| fs::set_permissions(t.join(p), fs::Permissions::from_mode(m)).unwrap();
    fs::create_dir_all(t.join("d/e/empty")).unwrap();
    fs::create_dir(t.join("sticky")).unwrap();
    fs::create_dir(t.join("setgid")).unwrap();
    fs::create_dir(t.join("ro")).unwrap();
    let big: Vec<u8> = (0..(1 << 20) + 4321).map(|i| (i % 241) as u8).collect();
    fs::write(t.join("big"), &big).unwrap();
    // Holes at unaligned offsets, and zeros written out: runs of zero
    // blocks in the version 3 content hash, either way.
    let holes = fs::File::create(t.join("holes")).unwrap();
    holes.set_len(3 << 20).unwrap();
    holes.write_all_at(&[7; 5000], 100_000).unwrap();
    holes.write_all_at(&[9; 1000], (2 << 20) + 7).unwrap();
    let mut zeros = vec![0u8; 270 << 10];
    zeros[200 << 10] = b'x';
    fs::write(t.join("d/zeros"), &zeros).unwrap();
    fs::write(t.join("d/e/file"), b"file").unwrap();
    fs::write(t.join("empty"), b"").unwrap();
    fs::write(t.join("ro/inside"), b"inside").unwrap();
    fs::hard_link(t.join("d/e/file"), t.join("link-across")).unwrap();
    fs::hard_link(t.join("d/e/file"), t.join("d/e/link-beside")).unwrap();
    fs::hard_link(t.join("empty"), t.join("d/empty-again")).unwrap();
    symlink("e/file", t.join("d/rel")).unwrap();
    symlink("/nonexistent/abs", t.join("abs")).unwrap();
    symlink("nowhere", t.join("d/e/dangling")).unwrap();
    rustix::fs::mknodat(
        CWD,
        t.join("d/fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let weird = OsStr::from_bytes(b"\xff\x01\x02name\x04\xfe");
    fs::write(t.join(weird), b"non-utf8").unwrap();
    fs::create_dir(t.join("d").join(weird)).unwrap();
    fs::write(t.join("suid"), b"s").unwrap();
    set("suid", 0o4751);
    set("d/fifo", 0o1640);
    set("empty", 0o000);
    set("sticky", 0o1777);
    set("setgid", 0o2750);
    set("ro/inside", 0o444);
    set("ro", 0o555);
    set("d/e/empty", 0o701);
}

#[test]
fn copy_with_digest_is_the_digest_of_the_copy() {
    let f = Fixture::new();
    odd_tree(&f.src);
    let total = tree_content_bytes(&f.src).unwrap();
    let mut sum = 0;
    let (stats, digest) = copy_tree_into_with_digest(&f.src, &f.dst_dir(), &mut |n| {
        sum += n;
        Ok(())
    })
    .unwrap();
    assert_eq!(digest, digest_of(&f.dst));
    assert_eq!(digest, digest_of(&f.src));
    assert_eq!(sum, total);
    // The same copy as without the digest.
    let plain = Fixture::new();
    let plain_stats = copy_tree_into(&f.src, &plain.dst_dir(), &mut |_| Ok(())).unwrap();
    assert_eq!(stats, plain_stats);
    assert_eq!(digest_of(&plain.dst), digest);
    assert_eq!((stats.hard_links, stats.symlinks), (3, 3));
}

#[test]
fn copy_with_digest_of_the_vector() {
    let f = Fixture::new();
    crate::digest::tests::vector_tree(&f.src);
    let v2 = crate::digest::tests::vector_v2_on_disk(&f.src);
    let (_, digest) = copy_tree_into_with_digest(&f.src, &f.dst_dir(), &mut |_| Ok(())).unwrap();
    if v2 {
        assert_eq!(digest.to_string(), crate::digest::tests::VECTOR_V3);
        let d2 = digest_tree(f.dst_dir(), &f.dst, Version::V2).unwrap();
        assert_eq!(d2.to_string(), crate::digest::tests::VECTOR_V2);
    }
    assert_eq!(digest_of(&f.dst), digest);
    let d1 = digest_tree(f.dst_dir(), &f.dst, Version::V1).unwrap();
    assert_eq!(d1.to_string(), crate::digest::tests::VECTOR);
}

#[test]
fn copy_with_digest_of_a_single_file_or_symlink() {
    for make in [
        (|p: &Path| fs::write(p, b"alone").unwrap()) as fn(&Path),
        |p: &Path| symlink("target", p).unwrap(),
    ] {
        let f = Fixture::new();
        let one = f.src.join("one");
        make(&one);
        let (_, digest) = copy_tree_into_with_digest(&one, &f.dst_dir(), &mut |_| Ok(())).unwrap();
        assert_eq!(digest, digest_of(&f.dst));
    }
}

#[test]
fn copy_with_digest_under_every_method() {
    let methods = [Method::Reflink, Method::CopyFileRange, Method::ReadWrite];
    let cases = methods.into_iter().flat_map(|m| {
        [
            (m, Version::V2, true),
            (m, Version::V3, true),
            (m, Version::V3, false),
        ]
    });
    for (method, version, threaded) in cases {
        let f = Fixture::new();
        odd_tree(&f.src);
        let dev = fs::metadata(&f.src).unwrap().dev();
        let dst = f.dst_dir();
        let mut sum = 0;
        let mut progress = |n| {
            sum += n;
            Ok(())
        };
        let mut copier = Copier::new(&dst, &mut progress, &CopyOptions::new());
        copier.content.methods = HashMap::from([(dev, method)]);
        if !threaded {
            copier.hashes.without_thread();
        }
        let fd = open_dir_nofollow(CWD, &f.src).unwrap();
        let target = Target {
            dst: dst.try_clone().unwrap(),
            dst_rel: PathBuf::new(),
            finish: false,
            tree: Some(PendingDir::new(version)),
        };
        let root = Frame::new(fd, f.src.clone(), target).unwrap();
        let big_times = times_of(&f.src.join("big"));
        let holes_times = times_of(&f.src.join("holes"));
        Walk::new().run(&mut copier, root).unwrap();
        let root = copier.root.expect("the root was left");
        let digest = copier.hashes.finish(root).unwrap();
        // Read back for the hash without changing the copies' times.
        assert_eq!(big_times, times_of(&f.dst.join("big")), "{method:?}");
        assert_eq!(holes_times, times_of(&f.dst.join("holes")), "{method:?}");
        let walked = digest_tree(f.dst_dir(), &f.dst, version).unwrap();
        assert_eq!(digest, walked, "{method:?} {version:?} threaded {threaded}");
        assert_eq!(sum, tree_content_bytes(&f.src).unwrap(), "{method:?}");
    }
}

#[test]
fn sockets_are_copied_with_the_digest() {
    let f = Fixture::new();
    let _socket = std::os::unix::net::UnixListener::bind(f.src.join("sock")).unwrap();
    let (stats, digest) =
        copy_tree_into_with_digest(&f.src, &f.dst_dir(), &mut |_| Ok(())).unwrap();
    assert_eq!(stats.specials, 1);
    let st = rustix::fs::lstat(f.dst.join("sock")).unwrap();
    assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::Socket);
    assert_eq!(digest, digest_of(&f.dst));
}

/// `st_blocks × 512` of `root` and everything below it, each inode once,
/// never following a symlink: the definition of an entry's space.
fn walked_space(root: &Path) -> u64 {
    fn go(p: &Path, seen: &mut std::collections::HashSet<(u64, u64)>, total: &mut u64) {
        let m = fs::symlink_metadata(p).unwrap();
        if seen.insert((m.dev(), m.ino())) {
            *total += m.blocks() * 512;
        }
        if m.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                go(&e.unwrap().path(), seen, total);
            }
        }
    }
    let mut total = 0;
    go(root, &mut Default::default(), &mut total);
    total
}

#[test]
fn copy_measures_the_space_of_what_it_made() {
    let f = Fixture::new();
    fs::create_dir_all(f.src.join("a/b")).unwrap();
    fs::write(f.src.join("a/big"), vec![7u8; 100_000]).unwrap();
    fs::write(f.src.join("a/b/small"), b"x").unwrap();
    fs::write(f.src.join("empty"), b"").unwrap();
    fs::hard_link(f.src.join("a/big"), f.src.join("big-again")).unwrap();
    symlink("a/b/small", f.src.join("link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        f.src.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let (stats, _, _) = f.copy(&f.src).unwrap();
    assert_eq!(stats.space, walked_space(&f.dst));
    assert!(stats.space >= 100_000);
    // A single file: its copy and `dst` itself.
    let g = Fixture::new();
    fs::write(g.src.join("one"), vec![1u8; 10_000]).unwrap();
    let (stats, _, _) = g.copy(&g.src.join("one")).unwrap();
    assert_eq!(stats.space, walked_space(&g.dst));
}

/// The listing a copy makes is the one a walk of the copy makes: what
/// `verify` later compares, path by path.
#[test]
fn copy_listing_is_the_walks() {
    let f = Fixture::new();
    odd_tree(&f.src);
    let (_, digest, mut listing) = CopyOptions::new()
        .copy_with_listing(&f.src, &f.dst_dir(), &mut |_| Ok(()))
        .unwrap();
    let (walked_digest, mut walked) =
        crate::digest::digest_tree_listed(f.dst_dir(), &f.dst, Version::default()).unwrap();
    assert_eq!(digest, walked_digest);
    listing.0.sort_by(|a, b| a.path.cmp(&b.path));
    walked.0.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(listing, walked);
    let text = listing.to_text();
    assert_eq!(
        crate::digest::Listing::from_text(&text),
        Some(listing.clone())
    );
    // A change of mode, content and owner, each named at its path.
    let mut changed = listing.clone();
    changed.0[0].mode ^= 0o001;
    changed.0[1].uid += 1;
    let diff = crate::digest::compare(&listing, &changed);
    assert_eq!(diff.len(), 2, "{diff:?}");
}

/// A node replaced by another type between the walk's `lstat` and its
/// copy is a clear error naming it, and the copy made nothing for it.
#[test]
fn a_node_replaced_by_another_type_is_an_error() {
    let f = Fixture::new();
    let dst = f.dst_dir();
    let mut progress = |_| Ok(());
    let sfd = open_dir_nofollow(CWD, &f.src).unwrap();
    // A file that became a FIFO.
    fs::write(f.src.join("was-file"), b"x").unwrap();
    let stale = rustix::fs::lstat(f.src.join("was-file")).unwrap();
    fs::remove_file(f.src.join("was-file")).unwrap();
    rustix::fs::mknodat(CWD, f.src.join("was-file"), FileType::Fifo, Mode::RUSR, 0).unwrap();
    let mut copier = Copier::new(&dst, &mut progress, &CopyOptions::new());
    let e = copier
        .copy_file(
            &sfd,
            &dst,
            OsStr::new("was-file"),
            &stale,
            PathBuf::from("was-file"),
            None,
        )
        .err()
        .expect("an error");
    assert!(e.to_string().contains("replaced"), "{e}");
    // A FIFO that became a directory.
    rustix::fs::mknodat(CWD, f.src.join("was-fifo"), FileType::Fifo, Mode::RUSR, 0).unwrap();
    let stale = rustix::fs::lstat(f.src.join("was-fifo")).unwrap();
    fs::remove_file(f.src.join("was-fifo")).unwrap();
    fs::create_dir(f.src.join("was-fifo")).unwrap();
    let e = copier
        .copy_special(&sfd, &dst, OsStr::new("was-fifo"), &stale)
        .err()
        .expect("an error");
    assert!(e.to_string().contains("replaced"), "{e}");
    assert_eq!(
        fs::read_dir(&f.dst).unwrap().count(),
        0,
        "nothing left behind"
    );
}

/// The access and modification times of `p`, not following a symlink.
fn times_of(p: &Path) -> (i64, i64, i64, i64) {
    let st = rustix::fs::statat(CWD, p, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
    (
        st.st_atime as i64,
        st.st_atime_nsec as i64,
        st.st_mtime as i64,
        st.st_mtime_nsec as i64,
    )
}
