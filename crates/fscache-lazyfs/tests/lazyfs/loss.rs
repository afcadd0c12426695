//! The lazy file system itself: what a power loss keeps and loses, on a
//! real mount (needs root and `/dev/fuse`; skips with the reason).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use fscache_lazyfs::{LazyFs, Loss};
use fscache_lock::{FileLock, LockKind};

fn mount(tmp: &Path) -> Option<LazyFs> {
    if let Err(why) = LazyFs::available() {
        eprintln!("skipped: {why}");
        return None;
    }
    fs::create_dir_all(tmp.join("backing")).unwrap();
    fs::create_dir_all(tmp.join("mnt")).unwrap();
    Some(LazyFs::mount(&tmp.join("backing"), &tmp.join("mnt")).unwrap())
}

fn sync_dir(p: &Path) {
    fs::File::open(p).unwrap().sync_all().unwrap();
}

#[test]
fn unsynced_names_and_data_are_lost_synced_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(lfs) = mount(tmp.path()) else { return };
    let m = tmp.path().join("mnt");
    // Durable: the name (dir fsync) and the data (file fsync).
    let mut f = fs::File::create(m.join("kept")).unwrap();
    f.write_all(b"kept data").unwrap();
    f.sync_all().unwrap();
    drop(f);
    // The name durable, the data not.
    fs::write(m.join("empty"), b"lost data").unwrap();
    fs::create_dir(m.join("d")).unwrap();
    sync_dir(&m);
    // The name durable by the later fsync of d/, the data never.
    fs::write(m.join("d/gone"), b"x").unwrap();
    // An atomic replace whose temp was synced and renamed, dir synced.
    let mut t = fs::File::create(m.join("tmp")).unwrap();
    t.write_all(b"new").unwrap();
    t.sync_all().unwrap();
    drop(t);
    fs::rename(m.join("tmp"), m.join("kept")).unwrap();
    sync_dir(&m);
    // A rename not synced: lost, the old name stays.
    fs::rename(m.join("empty"), m.join("renamed")).unwrap();
    // A hard link and a symlink, synced.
    fs::hard_link(m.join("kept"), m.join("d/link")).unwrap();
    std::os::unix::fs::symlink("kept", m.join("d/sym")).unwrap();
    sync_dir(&m.join("d"));
    // OFD locks work (kept by the kernel), xattrs pass through.
    let open = || {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(m.join("d/lockfile"))
            .unwrap()
    };
    let held = FileLock::try_lock(open(), LockKind::Exclusive)
        .unwrap()
        .expect("a free lock");
    assert!(
        FileLock::try_lock(open(), LockKind::Shared)
            .unwrap()
            .is_none(),
        "an OFD lock conflicts with another open of the same process"
    );
    drop(held);
    assert!(FileLock::try_lock(open(), LockKind::Shared)
        .unwrap()
        .is_some());
    rustix::fs::setxattr(
        m.join("kept"),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(m.join("kept"), "user.k", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"v");
    let out = tmp.path().join("after");
    let report = lfs.power_loss(Loss::AllUnsynced, &out).unwrap();
    assert!(
        fs::write(m.join("new"), b"x").is_err(),
        "EIO after the loss"
    );
    lfs.unmount().unwrap();
    eprintln!("{report}");
    assert_eq!(fs::read(out.join("kept")).unwrap(), b"new");
    let n = rustix::fs::getxattr(out.join("kept"), "user.k", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"v", "xattrs are kept as they are at the loss");
    assert_eq!(fs::read(out.join("empty")).unwrap(), b"", "{report}");
    assert!(!out.join("renamed").exists());
    assert!(!out.join("tmp").exists());
    assert!(out.join("d").is_dir());
    assert_eq!(fs::read(out.join("d/gone")).unwrap(), b"");
    assert!(
        !out.join("d/lockfile").exists(),
        "created after the last fsync of d/"
    );
    assert_eq!(fs::read(out.join("d/link")).unwrap(), b"new");
    assert_eq!(fs::read_link(out.join("d/sym")).unwrap(), Path::new("kept"));
    // Remount the durable state: it is all durable now.
    fs::create_dir_all(tmp.path().join("mnt2")).unwrap();
    let again = LazyFs::mount(&out, &tmp.path().join("mnt2")).unwrap();
    let m2 = tmp.path().join("mnt2");
    assert_eq!(fs::read(m2.join("kept")).unwrap(), b"new");
    fs::write(m2.join("kept"), b"overwritten, unsynced").unwrap();
    let out2 = tmp.path().join("after2");
    again.power_loss(Loss::AllUnsynced, &out2).unwrap();
    again.unmount().unwrap();
    assert_eq!(fs::read(out2.join("kept")).unwrap(), b"new");
}

#[test]
fn random_loss_respects_barriers_and_replays_from_its_seed() {
    let tmp = tempfile::tempdir().unwrap();
    if LazyFs::available().is_err() {
        eprintln!("skipped: {:?}", LazyFs::available());
        return;
    }
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..6u64 {
        let round = tmp.path().join(format!("r{seed}"));
        let Some(lfs) = mount(&round) else { return };
        let m = round.join("mnt");
        for i in 0..6 {
            fs::write(m.join(format!("f{i}")), vec![b'a' + i as u8; 9000]).unwrap();
        }
        sync_dir(&m);
        for i in 6..12 {
            fs::write(m.join(format!("f{i}")), b"late").unwrap();
        }
        let out = round.join("after");
        lfs.power_loss(Loss::Random { seed }, &out).unwrap();
        lfs.unmount().unwrap();
        let mut names: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for i in 0..6 {
            assert!(
                names.contains(&format!("f{i}")),
                "seed {seed}: synced name lost"
            );
            let data = fs::read(out.join(format!("f{i}"))).unwrap();
            for page in data.chunks(4096) {
                assert!(
                    page.iter().all(|&b| b == b'a' + i as u8 || b == 0),
                    "seed {seed}: a page mixes"
                );
            }
        }
        // The unsynced creations: a prefix of them survives.
        let late: Vec<usize> = (6..12)
            .filter(|i| names.contains(&format!("f{i}")))
            .collect();
        assert_eq!(late, (6..6 + late.len()).collect::<Vec<_>>(), "seed {seed}");
        outcomes.insert(names);
    }
    assert!(outcomes.len() > 1, "random losses differ: {outcomes:?}");
}
