//! Integrity: the tree digest recorded at commit, and `verify` catching
//! every kind of damage to an entry's content.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use fscache::{FsCache, MaxSize, Stored, Verified};

fn cache(root: &Path, record: bool) -> FsCache {
    FsCache::builder("verify-test")
        .max_size_if_unset(MaxSize::Unlimited)
        .record_digests(record)
        .open(root)
        .unwrap()
}

fn source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b"), vec![9u8; 100_000]).unwrap();
    std::os::unix::fs::symlink("a", src.join("link")).unwrap();
    src
}

/// A damage to an entry's data directory, by name.
type Damage = (&'static str, fn(&Path));

/// The damages verify must catch, each applied to a fresh entry.
fn damages() -> Vec<Damage> {
    vec![
        ("flipped byte", |d| {
            let mut b = std::fs::read(d.join("sub/b")).unwrap();
            b[50_000] ^= 1;
            std::fs::write(d.join("sub/b"), b).unwrap();
        }),
        ("truncated file", |d| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("sub/b"))
                .unwrap()
                .set_len(10)
                .unwrap();
        }),
        ("removed file", |d| {
            std::fs::remove_file(d.join("a")).unwrap()
        }),
        ("added file", |d| {
            std::fs::write(d.join("new"), b"").unwrap()
        }),
        ("changed symlink target", |d| {
            std::fs::remove_file(d.join("link")).unwrap();
            std::os::unix::fs::symlink("sub/b", d.join("link")).unwrap();
        }),
        ("changed mode", |d| {
            std::fs::set_permissions(d.join("a"), std::fs::Permissions::from_mode(0o600)).unwrap();
        }),
        ("changed owner", |d| {
            // As root any owner; else a change of group is all a user may
            // make, and the test has one only as root.
            if rustix::process::geteuid().is_root() {
                std::os::unix::fs::lchown(d.join("sub/b"), Some(1234), Some(5678)).unwrap();
            } else {
                std::fs::remove_file(d.join("sub/b")).unwrap();
            }
        }),
        ("added xattr", |d| {
            if rustix::fs::setxattr(d.join("a"), "user.k", b"v", rustix::fs::XattrFlags::empty())
                .is_err()
            {
                // No user xattrs on this file system: damage it otherwise.
                std::fs::remove_file(d.join("a")).unwrap();
            }
        }),
    ]
}

#[test]
fn store_tree_records_a_digest_and_verify_catches_every_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let c = cache(&tmp.path().join("c"), false);
    for (i, (what, damage)) in damages().into_iter().enumerate() {
        let name = format!("e{i}");
        assert_eq!(c.store_tree(&name, &src).unwrap(), Stored::Committed);
        let ok = c.verify(&name).unwrap();
        assert!(matches!(ok, Verified::Ok(_)), "{what}: {ok:?}");
        let info =
            std::fs::read_to_string(c.path().join("objects").join(&name).join("object.info"))
                .unwrap();
        assert!(info.contains("\"digest\":\"blake3v3:"), "{info}");
        damage(&c.path().join("objects").join(&name).join("data"));
        let v = c.verify(&name).unwrap();
        assert!(v.is_bad(), "{what} not caught: {v:?}");
    }
    assert_eq!(c.verify("absent").unwrap(), Verified::Miss);
    let all = c.verify_all(&|_| {}).unwrap();
    assert_eq!(all.len(), damages().len());
    assert!(all.iter().all(|(_, v)| v.as_ref().unwrap().is_bad()));
}

#[test]
fn commits_record_digests_only_when_asked_and_osbuild_entries_are_unverified() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("c");
    let plain = cache(&root, false);
    let w = plain.store("plain").unwrap();
    std::fs::write(w.path().join("f"), b"x").unwrap();
    assert_eq!(w.commit().unwrap(), Stored::Committed);
    assert_eq!(plain.verify("plain").unwrap(), Verified::Unverified);

    let recording = cache(&root, true);
    let w = recording.store("rec").unwrap();
    std::fs::write(w.path().join("f"), b"x").unwrap();
    assert_eq!(w.commit().unwrap(), Stored::Committed);
    let Verified::Ok(d) = recording.verify("rec").unwrap() else {
        panic!("not verified")
    };
    // The same content stored by a copy has the same digest.
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    // Modes must match too: the copy keeps the source's.
    let mode = std::fs::metadata(recording.path().join("objects/rec/data/f"))
        .unwrap()
        .permissions();
    std::fs::set_permissions(src.join("f"), mode).unwrap();
    assert_eq!(plain.store_tree("copied", &src).unwrap(), Stored::Committed);
    assert_eq!(plain.verify("copied").unwrap(), Verified::Ok(d));

    // Verify is not a use: the last-use time stays.
    let lock = root.join("objects/rec/object.lock");
    let before = std::fs::metadata(&lock).unwrap().accessed().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    recording.verify("rec").unwrap();
    assert_eq!(
        std::fs::metadata(&lock).unwrap().accessed().unwrap(),
        before
    );
}

/// A digest the filler vouches for (`StoreGuard::set_digest`) is recorded
/// as given, without hashing the tree: the right one verifies, a wrong
/// one reads as a mismatch later; with or without `record_digests`.
#[test]
fn a_vouched_digest_is_recorded_as_given() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let wrong = fscache::tree_digest(src.join("sub")).unwrap();
    for record in [false, true] {
        let c = cache(&tmp.path().join(format!("cache-{record}")), record);
        let mut right = None;
        for name in ["right", "wrong"] {
            let mut w = c.store(name).unwrap();
            std::fs::write(w.path().join("a"), b"alpha").unwrap();
            std::fs::create_dir(w.path().join("sub")).unwrap();
            std::fs::write(w.path().join("sub/b"), vec![9u8; 100_000]).unwrap();
            std::os::unix::fs::symlink("a", w.path().join("link")).unwrap();
            // What the filler knows of the tree it wrote (here: hashed).
            let known = fscache::tree_digest(w.path()).unwrap();
            if name == "right" {
                right = Some(known);
                w.set_digest(known);
            } else {
                w.set_digest(wrong);
            }
            assert_eq!(w.commit().unwrap(), Stored::Committed);
        }
        let right = right.unwrap();
        assert_eq!(c.verify("right").unwrap(), Verified::Ok(right));
        assert!(
            matches!(c.verify("wrong").unwrap(), Verified::Mismatch { recorded, .. }
                if recorded == wrong),
            "record_digests({record})"
        );
    }
}

/// An entry recorded with a version 1 digest (`blake3:`, before version 2
/// existed) or a version 2 digest (`blake3v2:`, before version 3) still
/// verifies, against its version, and a damage to it is still caught.
#[test]
fn version_1_and_2_records_still_verify() {
    use fscache::DigestVersion;
    for (version, prefix) in [
        (DigestVersion::V1, "blake3:"),
        (DigestVersion::V2, "blake3v2:"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let src = source(tmp.path());
        let c = cache(&tmp.path().join("c"), false);
        assert_eq!(c.store_tree("old", &src).unwrap(), Stored::Committed);
        let entry = c.path().join("objects/old");
        let old = fscache::tree_digest_version(entry.join("data"), version).unwrap();
        assert!(old.to_string().starts_with(prefix));
        let info_path = entry.join("object.info");
        let info = std::fs::read_to_string(&info_path).unwrap();
        let start = info.find("blake3v3:").unwrap();
        let rewritten = format!("{}{}{}", &info[..start], old, &info[start + 9 + 64..]);
        std::fs::write(&info_path, rewritten).unwrap();
        assert_eq!(c.verify("old").unwrap(), Verified::Ok(old), "{prefix}");
        std::fs::write(entry.join("data/a"), b"beta!").unwrap();
        assert!(c.verify("old").unwrap().is_bad(), "{prefix}");
    }
}

/// A mismatch names what changed, path by path, from the record the
/// commit kept beside the digest (`object.tree`).
#[test]
fn verify_changes_names_each_path_and_what_changed() {
    use fscache::Change;
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let c = cache(&tmp.path().join("c"), false);
    assert_eq!(c.store_tree("e", &src).unwrap(), Stored::Committed);
    assert_eq!(c.verify_changes("e").unwrap(), Some(vec![]));
    let data = c.path().join("objects/e/data");
    std::fs::set_permissions(data.join("a"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(data.join("sub/b"), b"other").unwrap();
    std::fs::remove_file(data.join("link")).unwrap();
    std::fs::create_dir(data.join("link")).unwrap();
    let mut want = vec![
        (Path::new("a").to_path_buf(), vec![Change::Mode]),
        (
            Path::new("link").to_path_buf(),
            vec![Change::Type, Change::Mode],
        ),
        (Path::new("sub/b").to_path_buf(), vec![Change::Content]),
    ];
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::lchown(data.join("sub"), Some(7), None).unwrap();
        want.push((Path::new("sub").to_path_buf(), vec![Change::Owner]));
    }
    if rustix::fs::setxattr(
        data.join("sub"),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok()
    {
        match want.iter_mut().find(|(p, _)| p == Path::new("sub")) {
            Some((_, c)) => c.push(Change::Xattr),
            None => want.push((Path::new("sub").to_path_buf(), vec![Change::Xattr])),
        }
    }
    let mut got = c.verify_changes("e").unwrap().unwrap();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(c.verify("e").unwrap().is_bad());
    assert_eq!(c.verify_changes("absent").unwrap(), None);
}
