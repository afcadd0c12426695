//! Tests of the tree digest: the vector, the encoding, and what changes it.

use super::*;
use std::ffi::OsStr;
use std::io;
use std::path::Path;

use rustix::fs::{FileType, Mode};

use crate::meta::Xattr;
use crate::walk::open_dir_nofollow;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;

/// The digest of the tree at `path`.
fn digest(path: &Path) -> Digest {
    let fd = open_dir_nofollow(rustix::fs::CWD, path).unwrap();
    digest_tree(&fd, path, Version::V1).unwrap()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A file with `content` and exactly `mode`, whatever the umask.
fn file(path: &Path, content: &[u8], mode: u32) {
    fs::write(path, content).unwrap();
    chmod(path, mode);
}

fn dir(path: &Path, mode: u32) {
    fs::create_dir(path).unwrap();
    chmod(path, mode);
}

/// The test vector of the module docs, built under `root`.
pub(crate) fn vector_tree(root: &Path) {
    file(&root.join("a.txt"), b"hello\n", 0o644);
    dir(&root.join("bin"), 0o755);
    file(&root.join("bin/run"), b"#!/bin/sh\necho hi\n", 0o755);
    dir(&root.join("empty"), 0o700);
    symlink("a.txt", root.join("link")).unwrap();
    file(&root.join("zero"), b"", 0o600);
}

/// The digest of the module docs' vector: a change to the encoding must
/// fail here (and then be a new version).
pub(crate) const VECTOR: &str =
    "blake3:c9ef6f2132b114dcf559ad76562699f7208c2500734eb542c3636e21278c118d";

/// The version 2 vector of the module docs.
pub(crate) const VECTOR_V2: &str =
    "blake3v2:d0ff3af4795a6ff2a0e1229aa2253e0fa238aeae073c618041edf61d9dcc3b60";

/// The version 3 vector of the module docs (the version 2 vector's tree).
pub(crate) const VECTOR_V3: &str =
    "blake3v3:1828763539469424163d9b059634e68aae53602d10640829693c97615419ab80";

/// Give the vector tree at `root` what version 2's vector has beyond
/// version 1's (owner 0:0 everywhere, `user.k` = `v` on `a.txt`); false
/// where that cannot be done (not root, no user xattrs here).
pub(crate) fn vector_v2_on_disk(root: &Path) -> bool {
    if !rustix::process::geteuid().is_root() {
        return false;
    }
    for p in ["a.txt", "bin", "bin/run", "empty", "link", "zero"] {
        rustix::fs::chownat(
            rustix::fs::CWD,
            root.join(p),
            Some(rustix::process::Uid::ROOT),
            Some(rustix::process::Gid::ROOT),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
    rustix::fs::setxattr(
        root.join("a.txt"),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok()
}

/// The version 3 content hash of `runs`, encoded by hand as the module
/// docs write it: `(Some(bytes), _)` a data run, `(None, n)` a zero run.
fn content_v3_by_hand(runs: &[(Option<&[u8]>, u64)]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"fscache-data-v3\0");
    for (data, n) in runs {
        match data {
            Some(b) => {
                h.update(&[1]);
                h.update(&(b.len() as u64).to_le_bytes());
                h.update(blake3::hash(b).as_bytes());
            }
            None => {
                h.update(&[0]);
                h.update(&n.to_le_bytes());
            }
        }
    }
    *h.finalize().as_bytes()
}

/// The version 2 vector, built by hand with the one encoder.
fn vector_v2_by_hand() -> Digest {
    vector_by_hand(Version::V2, |c| *blake3::hash(c).as_bytes())
}

/// The version 3 vector, built by hand with the one encoder.
fn vector_v3_by_hand() -> Digest {
    vector_by_hand(Version::V3, |c| {
        if c.is_empty() {
            content_v3_by_hand(&[])
        } else {
            content_v3_by_hand(&[(Some(c), 0)])
        }
    })
}

/// The vector tree's digest in `version`, whose files' content hash is
/// `content`.
fn vector_by_hand(version: Version, content: fn(&[u8]) -> [u8; 32]) -> Digest {
    let meta = |perm| NodeMeta {
        perm,
        uid: 0,
        gid: 0,
        xattrs: &[],
    };
    let file = |c: &[u8]| (c.len() as u64, content(c));
    let mut bin = DirHasher::of(version);
    let (n, h) = file(b"#!/bin/sh\necho hi\n");
    bin.entry(
        OsStr::new("run"),
        meta(0o755),
        Body::File { size: n, hash: &h },
    );
    let empty = DirHasher::of(version).finish();
    let mut root = DirHasher::of(version);
    let xattrs = [Xattr {
        name: b"user.k".to_vec(),
        value: b"v".to_vec(),
    }];
    let (n, h) = file(b"hello\n");
    let a = NodeMeta {
        xattrs: &xattrs,
        ..meta(0o644)
    };
    root.entry(OsStr::new("a.txt"), a, Body::File { size: n, hash: &h });
    root.entry(OsStr::new("bin"), meta(0o755), Body::Dir(&bin.finish()));
    root.entry(OsStr::new("empty"), meta(0o700), Body::Dir(&empty));
    root.entry(OsStr::new("link"), meta(0o777), Body::Symlink(b"a.txt"));
    let (n, h) = file(b"");
    root.entry(
        OsStr::new("zero"),
        meta(0o600),
        Body::File { size: n, hash: &h },
    );
    root.finish()
}

/// The vector of `version` (metadata as version 2's vector has it): built
/// by hand it is `literal`, the module docs hold it, and the tree on disk
/// has it.
fn check_vector(version: Version, by_hand: Digest, literal: &str) {
    assert_eq!(by_hand.to_string(), literal);
    assert!(include_str!("mod.rs").contains(&literal[version.prefix().len()..]));
    let tmp = tempfile::tempdir().unwrap();
    vector_tree(tmp.path());
    if !vector_v2_on_disk(tmp.path()) {
        eprintln!("skipped the on-disk half: needs root and user xattrs");
        return;
    }
    let fd = open_dir_nofollow(rustix::fs::CWD, tmp.path()).unwrap();
    let d = digest_tree(&fd, tmp.path(), version).unwrap();
    assert_eq!(d.to_string(), literal);
}

#[test]
fn vector_v2() {
    check_vector(Version::V2, vector_v2_by_hand(), VECTOR_V2);
}

#[test]
fn vector_v3() {
    check_vector(Version::V3, vector_v3_by_hand(), VECTOR_V3);
}

/// Content of five blocks: data, two of zeros, data ending in zeros, and a
/// short last block of zeros; and its runs as the module docs encode them.
fn runs_content() -> (Vec<u8>, [u8; 32]) {
    let b = BLOCK;
    let mut c = vec![0u8; 4 * b + 5];
    c[..b].fill(1);
    c[3 * b..3 * b + 10].fill(2);
    let want = content_v3_by_hand(&[
        (Some(&c[..b]), 0),
        (None, 2 * b as u64),
        (Some(&c[3 * b..4 * b]), 0),
        (None, 5),
    ]);
    (c, want)
}

#[test]
fn content_v3_is_as_documented_however_it_is_fed() {
    let (c, want) = runs_content();
    let all = |feed: &dyn Fn(&mut ContentHasher)| {
        let mut h = ContentHasher::new(Version::V3);
        feed(&mut h);
        *h.finalize().as_bytes()
    };
    assert_eq!(all(&|h| h.update(&c)), want, "in one call");
    for step in [1usize, 7, 4096, BLOCK - 1, BLOCK, BLOCK + 3, 3 * BLOCK] {
        let got = all(&|h| c.chunks(step).for_each(|p| h.update(p)));
        assert_eq!(got, want, "in steps of {step}");
    }
    // The zeros as holes, at unaligned places too.
    let holes = |h: &mut ContentHasher| {
        h.update(&c[..BLOCK + 3]);
        h.zeros(2 * BLOCK as u64 - 3);
        h.update(&c[3 * BLOCK..3 * BLOCK + 10]);
        h.zeros(BLOCK as u64 - 10 + 5);
    };
    assert_eq!(all(&holes), want, "holes");
    // Small cases: empty, only zeros (a zero run), one byte.
    assert_eq!(all(&|_| {}), content_v3_by_hand(&[]));
    assert_eq!(
        all(&|h| h.zeros(10 << 30)),
        content_v3_by_hand(&[(None, 10 << 30)])
    );
    assert_eq!(
        all(&|h| h.update(b"x")),
        content_v3_by_hand(&[(Some(b"x"), 0)])
    );
    // Versions 1 and 2 hash the bytes themselves.
    let mut h = ContentHasher::new(Version::V2);
    holes(&mut h);
    assert_eq!(h.finalize(), blake3::hash(&c));
}

#[test]
fn content_v3_of_a_sparse_file_and_its_dense_copy() {
    use std::os::unix::fs::FileExt;
    let (c, want) = runs_content();
    let tmp = tempfile::tempdir().unwrap();
    let dense = tmp.path().join("dense");
    fs::write(&dense, &c).unwrap();
    let sparse = fs::File::create(tmp.path().join("sparse")).unwrap();
    sparse.set_len(c.len() as u64).unwrap();
    sparse.write_all_at(&c[..BLOCK], 0).unwrap();
    sparse
        .write_all_at(&c[3 * BLOCK..3 * BLOCK + 10], 3 * BLOCK as u64)
        .unwrap();
    // A big hole: version 3 never hashes it (a 64 GiB file in no time).
    let huge = fs::File::create(tmp.path().join("huge")).unwrap();
    huge.set_len(64 << 30).unwrap();
    huge.write_all_at(b"end", (64 << 30) - 3).unwrap();
    let mut buf = Vec::new();
    for p in ["dense", "sparse"] {
        let f = fs::File::open(tmp.path().join(p)).unwrap();
        let (n, h) = hash_content(&f, &mut buf, Version::V3).unwrap();
        assert_eq!((n, *h.as_bytes()), (c.len() as u64, want), "{p}");
    }
    let f = fs::File::open(tmp.path().join("huge")).unwrap();
    let (n, h) = hash_content(&f, &mut buf, Version::V3).unwrap();
    let want = content_v3_by_hand(&[(None, (64 << 30) - BLOCK as u64), (Some(&end_block()), 0)]);
    assert_eq!((n, *h.as_bytes()), (64 << 30, want));
}

/// The last block of the `huge` file above: zeros, then `end`.
fn end_block() -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    b[BLOCK - 3..].copy_from_slice(b"end");
    b
}

#[test]
fn vector() {
    let tmp = tempfile::tempdir().unwrap();
    vector_tree(tmp.path());
    assert_eq!(digest(tmp.path()).to_string(), VECTOR);
    // The literal is also in the module docs.
    assert!(include_str!("mod.rs").contains(&VECTOR[PREFIX.len()..]));
}

/// An independent rendering of the documented encoding for a small tree.
#[test]
fn encoding_is_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    dir(&t.join("d"), 0o750);
    file(&t.join("d/f"), b"x", 0o4644);
    symlink("d/f", t.join("s")).unwrap();

    let le64 = |n: usize| (n as u64).to_le_bytes();
    let mut sub = b"fscache-tree-v1\0".to_vec();
    sub.push(0x01);
    sub.extend(0o4644u32.to_le_bytes());
    sub.extend(le64(1));
    sub.extend(b"f");
    sub.extend(le64(1));
    sub.extend(blake3::hash(b"x").as_bytes());
    let mut top = b"fscache-tree-v1\0".to_vec();
    top.push(0x02);
    top.extend(0o750u32.to_le_bytes());
    top.extend(le64(1));
    top.extend(b"d");
    top.extend(blake3::hash(&sub).as_bytes());
    top.push(0x03);
    top.extend(0o777u32.to_le_bytes());
    top.extend(le64(1));
    top.extend(b"s");
    top.extend(le64(3));
    top.extend(b"d/f");
    let want = Digest::from_bytes(*blake3::hash(&top).as_bytes());
    assert_eq!(digest(t), want);

    let empty = tempfile::tempdir().unwrap();
    let want = Digest::from_bytes(*blake3::hash(b"fscache-tree-v1\0").as_bytes());
    assert_eq!(digest(empty.path()), want);
}

#[test]
fn display_and_parse() {
    let d = Digest::from_bytes(std::array::from_fn(|i| i as u8 * 8));
    let s = d.to_string();
    let hex = "0008101820283038404850586068707880889098a0a8b0b8c0c8d0d8e0e8f0f8";
    assert_eq!(s, format!("blake3:{hex}"));
    assert_eq!(s.parse::<Digest>(), Ok(d));
    assert_eq!(s.to_uppercase().replace("BLAKE3", "blake3").parse(), Ok(d));
    assert_eq!(format!("{d:?}"), format!("Digest({s})"));
    for bad in ["", "blake3:", &s[1..], &s[..s.len() - 1], &format!("{s}0")] {
        assert!(bad.parse::<Digest>().is_err(), "{bad}");
    }
    let not_hex = format!("{}g", &s[..s.len() - 1]);
    assert!(not_hex.parse::<Digest>().is_err());
    assert!(format!("sha256:{}", &s[PREFIX.len()..])
        .parse::<Digest>()
        .is_err());
}

/// Two sibling directories to build a pair of trees in.
struct Pair {
    _tmp: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
}

impl Pair {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        dir(&a, 0o755);
        dir(&b, 0o755);
        Pair { _tmp: tmp, a, b }
    }

    /// Build with `make` in both, then `change` the second; return whether
    /// the digests differ.
    fn differ(make: impl Fn(&Path), change: impl FnOnce(&Path)) -> bool {
        let p = Pair::new();
        make(&p.a);
        make(&p.b);
        assert_eq!(digest(&p.a), digest(&p.b), "equal trees digest alike");
        change(&p.b);
        digest(&p.a) != digest(&p.b)
    }
}

#[test]
fn what_changes_the_digest() {
    let two = |t: &Path| {
        file(&t.join("x"), b"one", 0o644);
        file(&t.join("y"), b"two", 0o644);
    };
    assert!(Pair::differ(two, |t| {
        fs::write(t.join("x"), b"two").unwrap();
        fs::write(t.join("y"), b"one").unwrap();
    }));
    assert!(Pair::differ(two, |t| {
        fs::rename(t.join("x"), t.join("z")).unwrap();
        fs::rename(t.join("y"), t.join("x")).unwrap();
        fs::rename(t.join("z"), t.join("y")).unwrap();
    }));
    for bit in [0o1, 0o100, 0o1000, 0o2000, 0o4000] {
        assert!(Pair::differ(two, |t| chmod(&t.join("x"), 0o644 ^ bit)));
    }
    assert!(Pair::differ(two, |t| fs::write(t.join("x"), b"onf").unwrap()));
    assert!(Pair::differ(two, |t| fs::write(t.join("x"), b"on").unwrap()));
    assert!(Pair::differ(two, |t| fs::remove_file(t.join("y")).unwrap()));
    assert!(Pair::differ(two, |t| file(&t.join("w"), b"", 0o644)));
    assert!(Pair::differ(two, |t| dir(&t.join("w"), 0o644)));
    // A file moved into a subdirectory.
    assert!(Pair::differ(
        |t| {
            two(t);
            dir(&t.join("sub"), 0o755);
        },
        |t| fs::rename(t.join("x"), t.join("sub/x")).unwrap()
    ));
    // A directory's own mode.
    assert!(Pair::differ(
        |t| dir(&t.join("sub"), 0o755),
        |t| chmod(&t.join("sub"), 0o750)
    ));
    // A changed symlink target.
    assert!(Pair::differ(
        |t| symlink("x", t.join("l")).unwrap(),
        |t| {
            fs::remove_file(t.join("l")).unwrap();
            symlink("y", t.join("l")).unwrap();
        }
    ));
}

#[test]
fn kinds_with_the_same_bytes_differ() {
    // A file and a symlink whose content and target are the same bytes.
    assert!(Pair::differ(
        |t| file(&t.join("n"), b"target", 0o777),
        |t| {
            fs::remove_file(t.join("n")).unwrap();
            symlink("target", t.join("n")).unwrap();
        }
    ));
    // An empty file, an empty directory and a FIFO of the same mode.
    let fifo = |t: &Path| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            t.join("n"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        chmod(&t.join("n"), 0o644);
    };
    let p = Pair::new();
    file(&p.a.join("n"), b"", 0o644);
    dir(&p.b.join("n"), 0o644);
    let (f, d) = (digest(&p.a), digest(&p.b));
    fs::remove_dir(p.b.join("n")).unwrap();
    fifo(&p.b);
    let o = digest(&p.b);
    assert!(f != d && d != o && f != o, "{f} {d} {o}");
}

#[test]
fn names_holding_encoding_bytes_and_non_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let name = |b: &[u8]| std::ffi::OsStr::from_bytes(b).to_owned();
    // "a" then "b" (two entries) against one name that spells the bytes
    // between and around them, kind tags and all.
    let p = Pair::new();
    file(&p.a.join("a"), b"", 0o644);
    file(&p.a.join("b"), b"", 0o644);
    let tricky = name(b"a\x01\xa4\x01\x01b\xff\xfe");
    file(&p.b.join(&tricky), b"", 0o644);
    assert_ne!(digest(&p.a), digest(&p.b));
    // Names are bytes: a non-UTF-8 name is hashed as it is and ordered by
    // its bytes.
    let q = Pair::new();
    file(&q.a.join(name(b"\xff")), b"1", 0o644);
    file(&q.a.join(name(b"\x7f")), b"2", 0o644);
    file(&q.b.join(name(b"\xff")), b"2", 0o644);
    file(&q.b.join(name(b"\x7f")), b"1", 0o644);
    assert_ne!(digest(&q.a), digest(&q.b));
}

#[test]
fn times_owners_and_hard_links_do_not_change_it() {
    let make = |t: &Path| {
        file(&t.join("f"), b"same", 0o644);
        file(&t.join("g"), b"same", 0o644);
        dir(&t.join("d"), 0o755);
        symlink("f", t.join("l")).unwrap();
    };
    assert!(!Pair::differ(make, |t| {
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 1,
                tv_nsec: 2,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 3,
                tv_nsec: 4,
            },
        };
        for n in ["f", "d", "l", ""] {
            let flags = rustix::fs::AtFlags::SYMLINK_NOFOLLOW;
            rustix::fs::utimensat(rustix::fs::CWD, t.join(n), &times, flags).unwrap();
        }
    }));
    // `g` becomes a second name of `f`'s inode: same content, same mode.
    assert!(!Pair::differ(make, |t| {
        fs::remove_file(t.join("g")).unwrap();
        fs::hard_link(t.join("f"), t.join("g")).unwrap();
    }));
    // The root's own mode is not part of it.
    assert!(!Pair::differ(make, |t| chmod(t, 0o700)));
    if rustix::process::geteuid().is_root() {
        assert!(!Pair::differ(make, |t| {
            let id = Some(rustix::process::Uid::from_raw(4242));
            let gid = Some(rustix::process::Gid::from_raw(4343));
            for n in ["f", "d", "l"] {
                let flags = rustix::fs::AtFlags::SYMLINK_NOFOLLOW;
                rustix::fs::chownat(rustix::fs::CWD, t.join(n), id, gid, flags).unwrap();
            }
        }));
    } else {
        eprintln!("skipped: changing owners needs root");
    }
}

#[test]
fn symlinks_are_not_followed_and_special_files_not_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let (t, outside) = (tmp.path().join("t"), tmp.path().join("outside"));
    dir(&t, 0o755);
    dir(&outside, 0o755);
    symlink(&outside, t.join("out")).unwrap();
    // A FIFO that nobody writes: opening it for reading would block.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        t.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(t.join("sock")).unwrap();
    let before = digest(&t);
    file(&outside.join("new"), b"changes nothing inside", 0o644);
    assert_eq!(digest(&t), before);
}

#[test]
fn cap_std_dir_and_errors_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    file(&t.join("f"), b"x", 0o644);
    let cap = cap_std::fs::Dir::open_ambient_dir(t, cap_std::ambient_authority()).unwrap();
    assert_eq!(digest_tree(&cap, t, Version::V1).unwrap(), digest(t));
    if rustix::process::geteuid().is_root() {
        eprintln!("skipped: root reads unreadable files");
        return;
    }
    file(&t.join("secret"), b"x", 0o000);
    let e = digest_tree(&cap, t, Version::V1).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    assert!(e.to_string().contains("secret"), "{e}");
}

#[test]
fn big_files_and_hard_linked_content_read_once() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let big: Vec<u8> = (0..3 * READ_BUFFER + 17).map(|i| (i % 251) as u8).collect();
    file(&t.join("big"), &big, 0o644);
    fs::hard_link(t.join("big"), t.join("big2")).unwrap();
    let fd = open_dir_nofollow(rustix::fs::CWD, t).unwrap();
    let mut h = DirHasher::new();
    let hash = blake3::hash(&big);
    h.file(OsStr::new("big"), 0o644, big.len() as u64, hash.as_bytes());
    h.file(OsStr::new("big2"), 0o644, big.len() as u64, hash.as_bytes());
    assert_eq!(digest_tree(&fd, t, Version::V1).unwrap(), h.finish());
}
