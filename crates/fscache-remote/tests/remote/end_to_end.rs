//! `fscache-remote` end to end: two local caches ("hosts") sharing one
//! remote, on the `memory` and `fs` services and on a real S3-compatible
//! server (moto) on 127.0.0.1.

use std::collections::HashMap;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::noise;
use fscache::{CacheInfo, FsCache, MaxSize, Obtained};
use fscache_remote::{
    keygen, Access, CheckOptions, Error, Progress, PruneOptions, Pushed, ReadThrough, Remote,
    RemoteBuilder,
};

fn cache(dir: &Path) -> FsCache {
    let c = FsCache::open("fscache-remote-test", dir).unwrap();
    c.set_info(CacheInfo {
        maximum_size: Some(MaxSize::Unlimited),
        ..Default::default()
    })
    .unwrap();
    c
}

/// A tree with every kind the format carries: nested directories (one
/// read-only, one empty), files of several sizes and modes (one larger
/// than several chunks), a symlink, and a hard link.
fn fill(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("share/doc/deep")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::write(root.join("a.txt"), b"hello\n").unwrap();
    fs::write(root.join("zero"), b"").unwrap();
    fs::write(root.join("bin/run"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("share/doc/deep/big.bin"), noise(7, 5 << 20)).unwrap();
    fs::write(root.join("share/doc/one"), noise(8, 100_000)).unwrap();
    fs::write(root.join("share/doc/two"), noise(9, 1000)).unwrap();
    fs::write(root.join("secret"), b"s").unwrap();
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::hard_link(root.join("share/doc/two"), root.join("two-again")).unwrap();
    symlink("a.txt", root.join("link")).unwrap();
    symlink("/nonexistent/abs", root.join("dangling")).unwrap();
    fs::set_permissions(
        root.join("share/doc/deep"),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();
}

/// Store a tree built by `build` as `name` in `c`.
fn put(c: &FsCache, name: &str, build: impl FnOnce(&Path)) {
    let w = c.store(name).unwrap();
    build(w.path());
    assert_eq!(w.commit().unwrap(), fscache::Stored::Committed);
}

/// Everything about a tree that must survive the trip: per path its
/// kind, mode, content or target, and which paths share an inode.
fn describe(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut inodes: HashMap<u64, String> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut kids: Vec<_> = fs::read_dir(root.join(&rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        kids.sort();
        for k in kids {
            let r = rel.join(&k);
            let p = root.join(&r);
            let md = fs::symlink_metadata(&p).unwrap();
            let mode = md.mode() & 0o7777;
            let d = if md.is_dir() {
                stack.push(r.clone());
                format!("{} dir {mode:o}", r.display())
            } else if md.file_type().is_symlink() {
                format!(
                    "{} -> {}",
                    r.display(),
                    fs::read_link(&p).unwrap().display()
                )
            } else {
                let h = blake3::hash(&fs::read(&p).unwrap());
                let link = if md.nlink() > 1 {
                    inodes
                        .entry(md.ino())
                        .or_insert(r.display().to_string())
                        .clone()
                } else {
                    String::new()
                };
                format!("{} file {mode:o} {} {h} {link}", r.display(), md.len())
            };
            out.push(d);
        }
    }
    out.sort();
    out
}

/// A test world: a remote and two hosts' caches.
struct World {
    _tmp: tempfile::TempDir,
    a: FsCache,
    b: FsCache,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    World {
        a: cache(&tmp.path().join("host-a")),
        b: cache(&tmp.path().join("host-b")),
        _tmp: tmp,
    }
}

/// The suite every service runs. `open` opens the shared remote (each
/// call is another host's handle on the same bucket).
fn suite(open: &dyn Fn(RemoteBuilder) -> Remote, url: &str) {
    round_trip(open, url);
    dedupe(open, url);
    dedupe_many(open, url);
    corrupt_blob_is_refused(open, url);
    check_finds_and_repair_heals(open, url);
    edited_manifest_is_refused(open, url);
    signatures(open, url);
    read_only(open, url);
    racing_pushers(open, url);
}

fn round_trip(open: &dyn Fn(RemoteBuilder) -> Remote, url: &str) {
    let w = world();
    let (ra, rb) = (open(Remote::builder(url)), open(Remote::builder(url)));
    put(&w.a, "tree", fill);
    let first = ra.push(&w.a, "tree").unwrap().unwrap();
    assert_eq!(first.outcome, Pushed::Published);
    assert!(first.blobs_uploaded > 5, "{first:?}");
    assert_eq!(w.a.verify("tree").unwrap(), fscache::Verified::Unverified);
    let again = ra.push(&w.a, "tree").unwrap().unwrap();
    assert_eq!((again.outcome, again.bytes_uploaded), (Pushed::Exists, 0));
    assert!(ra.push(&w.a, "absent").unwrap().is_none());
    assert!(rb.list().unwrap().contains(&"tree".to_string()));

    let got = rb.pull(&w.b, "tree").unwrap().unwrap();
    assert!(matches!(got, Obtained::Built(_)));
    let a = w.a.load("tree").unwrap().unwrap();
    assert_eq!(describe(a.path()), describe(got.path()));
    drop(got);
    // Host B now hits locally; the remote is not needed.
    assert!(matches!(
        rb.load_or_pull(&w.b, "tree").unwrap(),
        ReadThrough::Local(_)
    ));
    // Unknown everywhere: a miss without error.
    assert!(matches!(
        rb.load_or_pull(&w.b, "nowhere").unwrap(),
        ReadThrough::Miss { remote_error: None }
    ));
    assert!(rb.pull(&w.b, "nowhere").unwrap().is_none());
    // The digest B's tree has is the one fscache itself computes.
    let c = FsCache::builder("fscache-remote-test")
        .record_digests(true)
        .open(w._tmp.path().join("host-c"))
        .unwrap();
    c.set_info(CacheInfo {
        maximum_size: Some(MaxSize::Unlimited),
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        rb.load_or_pull(&c, "tree").unwrap(),
        ReadThrough::Pulled(_)
    ));
    assert_eq!(
        c.verify("tree").unwrap(),
        fscache::Verified::Ok(first.digest)
    );
}

fn dedupe(open: &dyn Fn(RemoteBuilder) -> Remote, url: &str) {
    let w = world();
    let r = open(Remote::builder(url));
    put(&w.a, "v1", fill);
    let first = r.push(&w.a, "v1").unwrap().unwrap();
    // One small file differs: exactly its one blob goes up.
    put(&w.a, "v2", |p| {
        fill(p);
        fs::write(p.join("share/doc/one"), noise(99, 100_000)).unwrap();
    });
    let second = r.push(&w.a, "v2").unwrap().unwrap();
    assert_eq!(second.outcome, Pushed::Published);
    assert_eq!(second.blobs_uploaded, 1, "{second:?}");
    // A few bytes changed inside the 5 MiB file: only the chunks around
    // the change go up.
    put(&w.a, "v3", |p| {
        fill(p);
        let big = p.join("share/doc/deep/big.bin");
        fs::set_permissions(p.join("share/doc/deep"), fs::Permissions::from_mode(0o755)).unwrap();
        let mut data = fs::read(&big).unwrap();
        data[2_500_000..2_500_010].copy_from_slice(b"0123456789");
        fs::write(&big, data).unwrap();
    });
    let third = r.push(&w.a, "v3").unwrap().unwrap();
    assert!(third.blobs_uploaded <= 2, "{third:?}");
    assert!(
        third.bytes_uploaded * 4 < first.bytes_total,
        "second push sent {} bytes of {}",
        third.bytes_uploaded,
        first.bytes_total
    );
    // And each still pulls byte-identical.
    for name in ["v2", "v3"] {
        let got = r.pull(&w.b, name).unwrap().unwrap();
        let a = w.a.load(name).unwrap().unwrap();
        assert_eq!(describe(a.path()), describe(got.path()), "{name}");
    }
}

/// A stored manifest's JSON: a zstd frame, decompressed. (A reader also
/// takes plain JSON, which is what the tests that edit one write back.)
fn unpacked(stored: &[u8]) -> Vec<u8> {
    assert!(stored.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "not zstd");
    zstd::stream::decode_all(stored).unwrap()
}

/// A tree of many blobs (where a push lists the remote's blobs instead of
/// asking for each): a copy with one file changed uploads that file only.
fn dedupe_many(open: &dyn Fn(RemoteBuilder) -> Remote, url: &str) {
    let w = world();
    let r = open(Remote::builder(url));
    let many = |p: &Path, changed: u64| {
        for i in 0..150 {
            // Odd seeds: `noise` makes a seed odd, so odd ones all differ.
            let seed = if i == 77 { changed } else { 10_001 + 2 * i };
            fs::write(p.join(format!("f{i}")), noise(seed, 3000)).unwrap();
        }
    };
    put(&w.a, "many-1", |p| many(p, 10_155));
    put(&w.a, "many-2", |p| many(p, 3));
    let first = r.push(&w.a, "many-1").unwrap().unwrap();
    assert_eq!((first.blobs, first.blobs_uploaded), (150, 150), "{first:?}");
    // Progress counts every blob, uploaded or found, up to the totals.
    let seen = std::sync::Mutex::new(Vec::new());
    let record = |p: Progress| seen.lock().unwrap().push(p);
    let second = r
        .push_with_progress(&w.a, "many-2", &record)
        .unwrap()
        .unwrap();
    assert_eq!(second.blobs_uploaded, 1, "{second:?}");
    // A push reports per pack stored and once at the end, a pull per blob.
    let done = |seen: &std::sync::Mutex<Vec<Progress>>, calls: usize| {
        let mut v = std::mem::take(&mut *seen.lock().unwrap());
        v.sort_by_key(|p| p.blobs_done);
        assert!(v.len() >= calls, "{} calls", v.len());
        let last = *v.last().unwrap();
        assert_eq!((last.blobs_done, last.blobs_total), (150, 150), "{last:?}");
        assert_eq!((last.bytes_done, last.bytes_total), (450_000, 450_000));
    };
    done(&seen, 1);
    let got = r
        .pull_with_progress(&w.b, "many-2", &record)
        .unwrap()
        .unwrap();
    done(&seen, 150);
    let a = w.a.load("many-2").unwrap().unwrap();
    assert_eq!(describe(a.path()), describe(got.path()));
}

/// The pack holding `frame` (a compressed blob), its bytes, and where
/// the frame is in it.
fn pack_holding(r: &Remote, frame: &[u8]) -> (String, Vec<u8>, usize) {
    for key in r.list_objects("v2/packs/").unwrap() {
        let bytes = r.read_object(&key).unwrap().unwrap();
        if let Some(at) = bytes.windows(frame.len()).position(|w| w == frame) {
            return (key, bytes, at);
        }
    }
    panic!("no pack holds the frame");
}

/// Nothing of `name` is in the cache, not even a work directory.
fn nothing_stored(c: &FsCache, name: &str) {
    assert!(c.load(name).unwrap().is_none());
    assert!(c.entries().unwrap().is_empty());
    let objects: Vec<_> = fs::read_dir(c.path().join("objects")).unwrap().collect();
    assert!(objects.is_empty(), "left behind: {objects:?}");
}

fn corrupt_blob_is_refused(open: &dyn Fn(RemoteBuilder) -> Remote, url: &str) {
    let w = world();
    let r = open(Remote::builder(url));
    put(&w.a, "damaged", |p| {
        fs::write(p.join("only"), b"the one and only blob of this test").unwrap();
    });
    r.push(&w.a, "damaged").unwrap().unwrap();
    // The pack holding its one blob, its frame replaced by another of
    // the same length.
    let good = zstd::bulk::compress(b"the one and only blob of this test", 3).unwrap();
    let forged = zstd::bulk::compress(b"the one and only blob of THIS test", 3).unwrap();
    assert_eq!(good.len(), forged.len());
    let (pack, mut bytes, at) = pack_holding(&r, &good);
    bytes[at..at + good.len()].copy_from_slice(&forged);
    r.write_object_unchecked(&pack, bytes).unwrap();
    let err = r.pull(&w.b, "damaged").unwrap_err();
    assert!(matches!(err, Error::CorruptBlob { .. }), "{err}");
    match r.load_or_pull(&w.b, "damaged").unwrap() {
        ReadThrough::Miss {
            remote_error: Some(Error::CorruptBlob { .. }),
        } => {}
        other => panic!("{other:?}"),
    }
    nothing_stored(&w.b, "damaged");
}

/// `check` finds a corrupt blob (with `read_data`: its trailer is
/// intact), a missing pack (without) and a manifest that does not open,
/// and names the entries they break; `repair` pushes again the entry the
/// local cache still has (its blobs uploaded anew, not reused from the
/// bad pack, which leaves the index) and drops the ones it cannot heal;
/// then everything left pulls, and a second check is clean. Its own
/// remote: the shared suite bucket holds other tests' damage.
fn check_finds_and_repair_heals(open: &dyn Fn(RemoteBuilder) -> Remote, url: &str) {
    let url = &if url.contains('?') {
        url.replacen('?', "-check?", 1)
    } else {
        format!("{url}-check")
    };
    let w = world();
    let r = open(Remote::builder(url));
    let blob = b"the one blob of the entry a check heals";
    put(&w.a, "healed", |p| fs::write(p.join("only"), blob).unwrap());
    put(&w.a, "fine", fill);
    r.push(&w.a, "healed").unwrap().unwrap();
    r.push(&w.a, "fine").unwrap().unwrap();
    let clean = r.check(None, CheckOptions::new().read_data(true)).unwrap();
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!((clean.manifests, clean.damaged.len()), (2, 0));
    assert!(clean.bytes_read > 0 && clean.packs >= 1);

    // A blob corrupted in place: the trailer still lists it.
    let good = zstd::bulk::compress(blob, 3).unwrap();
    let mut other = blob.to_vec();
    other[4] = b'X';
    let forged = zstd::bulk::compress(&other, 3).unwrap();
    assert_eq!(good.len(), forged.len());
    let (pack, mut bytes, at) = pack_holding(&r, &good);
    bytes[at..at + good.len()].copy_from_slice(&forged);
    r.write_object_unchecked(&pack, bytes).unwrap();
    let shallow = r.check(None, CheckOptions::new()).unwrap();
    assert!(
        shallow.is_clean(),
        "without read_data only structure is read"
    );
    let deep = r.check(None, CheckOptions::new().read_data(true)).unwrap();
    assert_eq!(deep.damaged, ["healed"], "{deep:?}");
    assert!(deep.problems[0].key.starts_with(&pack), "{deep:?}");

    // An entry of another host (not in the local cache), its pack lost;
    // and a manifest that does not open.
    let c = cache(&w._tmp.path().join("host-c"));
    put(&c, "lost", |p| {
        fs::write(p.join("x"), noise(31, 70_000)).unwrap()
    });
    r.push(&c, "lost").unwrap().unwrap();
    let env: serde_json::Value = serde_json::from_slice(&unpacked(
        &r.read_object("v1/manifests/lost").unwrap().unwrap(),
    ))
    .unwrap();
    let h = env["locator"]["packs"][0].as_str().unwrap();
    let lost_pack = format!("v2/packs/{}/{h}", &h[..2]);
    r.write_object_unchecked("v1/manifests/garbled", b"not an envelope".to_vec())
        .unwrap();
    r.write_object_unchecked(&lost_pack, Vec::new()).unwrap();
    let found = r.check(None, CheckOptions::new()).unwrap();
    assert_eq!(found.damaged, ["garbled", "lost"], "{found:?}");

    // Repair: `healed` is in host A's cache, the others are not.
    let fixed = r
        .check(Some(&w.a), CheckOptions::new().read_data(true).repair(true))
        .unwrap();
    assert_eq!(fixed.damaged, ["garbled", "healed", "lost"], "{fixed:?}");
    assert_eq!(fixed.repaired, ["healed"]);
    assert_eq!(fixed.dropped, ["garbled", "lost"]);
    assert!(fixed.is_clean(), "{fixed:?}");
    let got = r.pull(&w.b, "healed").unwrap().unwrap();
    assert_eq!(fs::read(got.path().join("only")).unwrap(), blob);
    assert!(
        r.pull(&w.b, "lost").unwrap().is_none(),
        "dropped: a clean miss"
    );
    assert!(r.pull(&w.b, "fine").unwrap().is_some());
    let after = r.check(None, CheckOptions::new().read_data(true)).unwrap();
    assert!(after.is_clean(), "{after:?}");
    assert_eq!(after.manifests, 2);
}

fn edited_manifest_is_refused(open: &dyn Fn(RemoteBuilder) -> Remote, url: &str) {
    let w = world();
    let r = open(Remote::builder(url));
    put(&w.a, "edited", fill);
    r.push(&w.a, "edited").unwrap().unwrap();
    let key = "v1/manifests/edited";
    let original = r.read_object(key).unwrap().unwrap();
    let mut env: serde_json::Value = serde_json::from_slice(&unpacked(&original)).unwrap();
    let body = env["manifest"].as_str().unwrap();
    // Make the secret world-readable, leaving the digest as it was.
    assert!(body.contains(r#""path":"secret","type":"file","perm":384"#));
    env["manifest"] = body
        .replace(
            r#""path":"secret","type":"file","perm":384"#,
            r#""path":"secret","type":"file","perm":420"#,
        )
        .into();
    r.write_object_unchecked(key, serde_json::to_vec(&env).unwrap())
        .unwrap();
    let err = r.pull(&w.b, "edited").unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    nothing_stored(&w.b, "edited");
    // Replayed under another name: refused too.
    r.write_object_unchecked("v1/manifests/other", original)
        .unwrap();
    let err = r.pull(&w.b, "other").unwrap_err();
    assert!(err.to_string().contains("manifest of `edited`"), "{err}");
    nothing_stored(&w.b, "other");
}

fn signatures(open: &dyn Fn(RemoteBuilder) -> Remote, url: &str) {
    let w = world();
    let (good, evil) = (keygen().unwrap(), keygen().unwrap());
    let honest = open(Remote::builder(url).signing_key(good.clone()));
    let attacker = open(Remote::builder(url).signing_key(evil));
    let unsigned = open(Remote::builder(url));
    let puller = open(Remote::builder(url).trust(good.public_key()));
    put(&w.a, "signed", fill);
    put(&w.a, "forged", fill);
    put(&w.a, "bare", fill);
    honest.push(&w.a, "signed").unwrap().unwrap();
    attacker.push(&w.a, "forged").unwrap().unwrap();
    unsigned.push(&w.a, "bare").unwrap().unwrap();
    for name in ["forged", "bare"] {
        let err = puller.pull(&w.b, name).unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{name}: {err}");
        nothing_stored(&w.b, name);
    }
    // A signed manifest whose body was edited no longer verifies.
    let key = "v1/manifests/signed";
    let original = puller.read_object(key).unwrap().unwrap();
    let mut env: serde_json::Value = serde_json::from_slice(&unpacked(&original)).unwrap();
    env["manifest"] = env["manifest"]
        .as_str()
        .unwrap()
        .replace("\"created\":", "\"created\":1")
        .into();
    puller
        .write_object_unchecked(key, serde_json::to_vec(&env).unwrap())
        .unwrap();
    assert!(matches!(
        puller.pull(&w.b, "signed"),
        Err(Error::Refused { .. })
    ));
    puller.write_object_unchecked(key, original).unwrap();
    let got = puller.pull(&w.b, "signed").unwrap().unwrap();
    assert!(got.is_cached());
}

/// Two hosts push different trees under one name at once: both pushes
/// succeed, and a pull gets one of the two trees whole.
fn racing_pushers(open: &dyn Fn(RemoteBuilder) -> Remote, url: &str) {
    let w = world();
    put(&w.a, "race", fill);
    put(&w.b, "race", |p| {
        fill(p);
        fs::write(p.join("a.txt"), b"host b's version\n").unwrap();
    });
    let (ra, rb) = (open(Remote::builder(url)), open(Remote::builder(url)));
    let barrier = std::sync::Barrier::new(2);
    let (pa, pb) = std::thread::scope(|s| {
        let ta = s.spawn(|| {
            barrier.wait();
            ra.push(&w.a, "race").unwrap().unwrap()
        });
        let tb = s.spawn(|| {
            barrier.wait();
            rb.push(&w.b, "race").unwrap().unwrap()
        });
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert!(
        pa.outcome == Pushed::Published || pb.outcome == Pushed::Published,
        "{pa:?} {pb:?}"
    );
    eprintln!(
        "{url}: racing pushers: {:?} and {:?}",
        pa.outcome, pb.outcome
    );
    let tmp = tempfile::tempdir().unwrap();
    let c = cache(tmp.path());
    let got = ra.pull(&c, "race").unwrap().unwrap();
    let (a, b) = (
        w.a.load("race").unwrap().unwrap(),
        w.b.load("race").unwrap().unwrap(),
    );
    let pulled = describe(got.path());
    assert!(pulled == describe(a.path()) || pulled == describe(b.path()));
}

/// Where push intents are.
const INTENTS: &str = "v1/intents/";

const DAY: Duration = Duration::from_secs(86_400);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Prune removes the manifests of entries unused for long and keeps the
/// others; a pack no remaining manifest names is condemned once older
/// than the grace period (taken out of the index) and deleted by a later
/// prune; a push whose packs are up but whose manifest is not (the state
/// a prune can meet mid-push) survives, and pulls whole. `url` must be a
/// bucket of its own: prune sees everything in it.
fn prune(open: &dyn Fn(RemoteBuilder) -> Remote, url: &str) {
    let w = world();
    let (ra, rb) = (open(Remote::builder(url)), open(Remote::builder(url)));
    // Two trees with no blob in common: each push writes its own pack.
    put(&w.a, "old", |p| {
        fs::write(p.join("only-old"), noise(1001, 30_000)).unwrap();
    });
    put(&w.a, "fresh", fill);
    ra.push(&w.a, "old").unwrap().unwrap();
    let old_packs = ra.list_objects("v2/packs/").unwrap();
    assert_eq!(old_packs.len(), 1);
    ra.push(&w.a, "fresh").unwrap().unwrap();
    // Every push left a `used` marker and no intent.
    assert!(ra.read_object("v1/used/fresh").unwrap().is_some());
    let info = ra.info().unwrap();
    assert_eq!((info.intents, info.packs), (0, 2), "{info:?}");
    // "old" was last used 40 days ago.
    let long_ago = format!(r#"{{"used": {}}}"#, unix_now() - 40 * 86_400);
    ra.write_object_unchecked("v1/used/old", long_ago.into_bytes())
        .unwrap();

    let dry = ra
        .prune(PruneOptions::unused_for(30 * DAY).dry_run(true))
        .unwrap();
    assert_eq!(dry.manifests_removed, ["old"]);
    assert_eq!(ra.list().unwrap(), ["fresh", "old"]);

    // The default grace period keeps the pack only "old" named: it was
    // written a moment ago.
    let r = ra.prune(PruneOptions::unused_for(30 * DAY)).unwrap();
    assert_eq!(r.manifests_removed, ["old"], "{r:?}");
    assert_eq!(
        (r.manifests_kept, r.packs_referenced, r.packs_young),
        (1, 1, 1),
        "{r:?}"
    );
    assert_eq!(ra.list().unwrap(), ["fresh"]);
    assert!(ra.read_object("v1/used/old").unwrap().is_none());

    // Without a grace period it is condemned (still there, no longer in
    // the index), and the next prune deletes it.
    let r = ra
        .prune(PruneOptions::unused_for(30 * DAY).grace(Duration::ZERO))
        .unwrap();
    assert_eq!((r.packs_condemned, r.packs_removed), (1, 0), "{r:?}");
    assert!(ra.read_object(&old_packs[0]).unwrap().is_some());
    let r = ra
        .prune(PruneOptions::unused_for(30 * DAY).grace(Duration::ZERO))
        .unwrap();
    assert_eq!((r.packs_removed, r.packs_referenced), (1, 1), "{r:?}");
    assert!(r.pack_bytes_removed > 0, "{r:?}");
    assert!(ra.read_object(&old_packs[0]).unwrap().is_none());
    assert_eq!(ra.info().unwrap().packs, 1);
    let got = rb.pull(&w.b, "fresh").unwrap().unwrap();
    let a = w.a.load("fresh").unwrap().unwrap();
    assert_eq!(describe(a.path()), describe(got.path()));
    drop((a, got));
    assert!(rb.pull(&w.b, "old").unwrap().is_none());
    // Pushed again, "old" uploads its blobs again (the index no longer
    // lists the deleted pack) and pulls whole.
    let again = ra.push(&w.a, "old").unwrap().unwrap();
    assert_eq!(again.blobs_uploaded, 1, "{again:?}");
    let got = rb.pull(&w.b, "old").unwrap().unwrap();
    assert_eq!(
        fs::read(got.path().join("only-old")).unwrap(),
        noise(1001, 30_000)
    );
    drop(got);

    // A push caught between its last pack and its manifest: here made by
    // pruning everything unused for 0 s, which removes the manifest and
    // leaves the pack (younger than the grace period).
    put(&w.a, "caught", |p| {
        fill(p);
        fs::write(p.join("extra"), noise(1002, 200_000)).unwrap();
    });
    ra.push(&w.a, "caught").unwrap().unwrap();
    let r = ra.prune(PruneOptions::unused_for(Duration::ZERO)).unwrap();
    assert!(r.manifests_removed.contains(&"caught".to_string()), "{r:?}");
    assert_eq!((r.packs_condemned, r.packs_removed), (0, 0), "{r:?}");
    // Its manifest published now finds every blob it names.
    let again = rb.push(&w.a, "caught").unwrap().unwrap();
    assert_eq!(
        (again.outcome, again.blobs_uploaded),
        (Pushed::Published, 0)
    );
    let tmp = tempfile::tempdir().unwrap();
    let c = cache(tmp.path());
    let got = rb.pull(&c, "caught").unwrap().unwrap();
    let a = w.a.load("caught").unwrap().unwrap();
    assert_eq!(describe(a.path()), describe(got.path()));
}

/// A prune running again and again while a push goes on never breaks it:
/// the pushed entry pulls whole.
fn prune_racing_a_push(open: &dyn Fn(RemoteBuilder) -> Remote, url: &str) {
    let w = world();
    put(&w.a, "racer", |p| {
        fill(p);
        for i in 0..40 {
            fs::write(p.join(format!("f{i}")), noise(2000 + i, 70_000)).unwrap();
        }
    });
    let (ra, rb) = (open(Remote::builder(url)), open(Remote::builder(url)));
    let done = std::sync::atomic::AtomicBool::new(false);
    let prunes = std::thread::scope(|s| {
        let pruner = s.spawn(|| {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let r = rb.prune(PruneOptions::unused_for(30 * DAY)).unwrap();
                assert_eq!(
                    (r.blobs_removed, r.packs_condemned, r.packs_removed),
                    (0, 0, 0),
                    "{r:?}"
                );
                n += 1;
            }
            n
        });
        let pushed = ra.push(&w.a, "racer");
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(pushed.unwrap().unwrap().outcome, Pushed::Published);
        pruner.join().unwrap()
    });
    eprintln!("{url}: {prunes} prunes ran during the push");
    let got = rb.pull(&w.b, "racer").unwrap().unwrap();
    let a = w.a.load("racer").unwrap().unwrap();
    assert_eq!(describe(a.path()), describe(got.path()));
}

fn read_only(open: &dyn Fn(RemoteBuilder) -> Remote, url: &str) {
    let w = world();
    let r = open(Remote::builder(url).access(Access::ReadOnly));
    put(&w.a, "ro", fill);
    assert!(matches!(r.push(&w.a, "ro"), Err(Error::ReadOnly)));
}

#[test]
fn memory_service() {
    // `memory://NAME`: every open of the name shares one in-process store.
    suite(&|b| b.open().unwrap(), "memory://suite");
}

#[test]
fn fs_service() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("bucket").display());
    suite(&|b| b.open().unwrap(), &url);
    // Every write went through the temporary directory and a rename:
    // nothing but blobs, manifests and `used` markers is left in the
    // layout (every push removed its intent).
    let r = Remote::open(&url).unwrap();
    for key in r.list_objects("").unwrap() {
        assert!(
            ["v2/packs/", "v2/index/", "v1/manifests/", "v1/used/"]
                .iter()
                .any(|p| key.starts_with(p)),
            "{key}"
        );
    }
    let url = format!("file://{}", tmp.path().join("pruned").display());
    prune(&|b| b.open().unwrap(), &url);
    prune_racing_a_push(&|b| b.open().unwrap(), &url);
}

/// A pack mostly dead is repacked: its live blobs move to a new pack,
/// the locators naming it are rewritten (the signed manifest kept), the
/// old pack is condemned, then deleted by the next prune; the entry that
/// shared it pulls before and after, and a check is clean.
#[test]
fn prune_repacks_a_sparse_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("bucket").display());
    let key = keygen().unwrap();
    let r = Remote::builder(&url)
        .signing_key(key.clone())
        .trust(key.public_key())
        .index_cache(None)
        .open()
        .unwrap();
    let w = world();
    let keep = noise(501, 40_000);
    put(&w.a, "old", |p| {
        fs::write(p.join("keep"), &keep).unwrap();
        fs::write(p.join("dead"), noise(502, 600_000)).unwrap();
    });
    put(&w.a, "new", |p| {
        fs::write(p.join("keep"), &keep).unwrap();
        fs::write(p.join("own"), noise(503, 30_000)).unwrap();
    });
    r.push(&w.a, "old").unwrap().unwrap();
    let second = r.push(&w.a, "new").unwrap().unwrap();
    assert_eq!(second.blobs_uploaded, 1, "`keep` is reused from old's pack");
    let before: serde_json::Value = serde_json::from_slice(&unpacked(
        &r.read_object("v1/manifests/new").unwrap().unwrap(),
    ))
    .unwrap();
    assert_eq!(before["locator"]["packs"].as_array().unwrap().len(), 2);
    let long_ago = unix_now() - 40 * 86_400;
    r.write_object_unchecked(
        "v1/used/old",
        format!(r#"{{"used": {long_ago}}}"#).into_bytes(),
    )
    .unwrap();
    let opts = PruneOptions::unused_for(Duration::from_secs(30 * 86_400)).grace(Duration::ZERO);
    let p = r.prune(opts).unwrap();
    assert_eq!(p.manifests_removed, ["old"]);
    assert_eq!((p.packs_repacked, p.locators_rewritten), (1, 1), "{p:?}");
    assert!(
        p.pack_bytes_written > 0 && p.pack_bytes_written < 100_000,
        "{p:?}"
    );
    let after: serde_json::Value = serde_json::from_slice(&unpacked(
        &r.read_object("v1/manifests/new").unwrap().unwrap(),
    ))
    .unwrap();
    assert_eq!(
        after["manifest"], before["manifest"],
        "the signed part is kept"
    );
    assert_eq!(after["signatures"], before["signatures"]);
    assert_ne!(after["locator"], before["locator"]);
    let got = r.pull(&w.b, "new").unwrap().unwrap();
    assert_eq!(fs::read(got.path().join("keep")).unwrap(), keep);
    drop(got);
    // The next prune deletes the condemned pack; everything still pulls.
    let p = r.prune(opts).unwrap();
    assert!(p.packs_removed >= 1, "{p:?}");
    let c = cache(&w._tmp.path().join("host-c"));
    // A pull that still has the locator from before the repack (here: put
    // back in the bucket) finds the old pack gone, reads the locator
    // again, gets the same: a miss, nothing stored, never a wrong tree.
    let repacked = r.read_object("v1/manifests/new").unwrap().unwrap();
    let stale = serde_json::to_vec(&before).unwrap();
    r.write_object_unchecked("v1/manifests/new", stale).unwrap();
    let err = r.pull(&c, "new").unwrap_err();
    assert!(matches!(err, Error::PackMissing { .. }), "{err}");
    nothing_stored(&c, "new");
    r.write_object_unchecked("v1/manifests/new", repacked)
        .unwrap();
    let got = r.pull(&c, "new").unwrap().unwrap();
    assert_eq!(fs::read(got.path().join("keep")).unwrap(), keep);
    let checked = r.check(None, CheckOptions::new().read_data(true)).unwrap();
    assert!(checked.is_clean(), "{checked:?}");
    let stored: u64 = r
        .list_objects("v2/packs/")
        .unwrap()
        .iter()
        .map(|k| r.read_object(k).unwrap().unwrap().len() as u64)
        .sum();
    assert!(stored < 200_000, "the dead blob's bytes are gone: {stored}");
}

/// A push that finds a prune running waits for it to end (a prune that
/// started before the push's intent may not have read it), and fails
/// without publishing when it waits too long; a dead prune's marker
/// (older than its lease) is ignored; a finished prune leaves no marker.
#[test]
fn a_push_waits_for_a_running_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let url = format!("file://{}", bucket.display());
    let w = world();
    put(&w.a, "e", fill);
    let r = Remote::open(&url).unwrap();
    r.prune(PruneOptions::unused_for(30 * DAY)).unwrap();
    assert!(r.list_objects("v1/prunes/").unwrap().is_empty());

    let marker = |started: u64| format!(r#"{{"started": {started}}}"#).into_bytes();
    r.write_object_unchecked("v1/prunes/running", marker(unix_now()))
        .unwrap();
    let impatient = Remote::builder(&url)
        .prune_wait(Duration::from_millis(300))
        .open()
        .unwrap();
    let err = impatient.push(&w.a, "e").unwrap_err();
    assert!(matches!(err, Error::PruneInProgress { .. }), "{err}");
    assert!(r.list().unwrap().is_empty());
    assert!(w.a.load("e").unwrap().is_some());

    // The prune ends while the push waits: the push goes on. A prune that
    // began after the push looked reads its intent: the push does not
    // wait for that one (or prunes back to back would starve it).
    let running = bucket.join("v1/prunes/running");
    let patient = Remote::builder(&url)
        .prune_wait(Duration::from_secs(5))
        .open()
        .unwrap();
    let push = std::thread::scope(|s| {
        let pusher = s.spawn(|| patient.push(&w.a, "e"));
        // Once its intent is written, the push lists the prune markers
        // (and then waits for `running`).
        while r.list_objects(INTENTS).unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(r.list().unwrap().is_empty(), "published during a prune");
        r.write_object_unchecked("v1/prunes/later", marker(unix_now()))
            .unwrap();
        fs::remove_file(&running).unwrap();
        pusher.join().unwrap()
    });
    assert_eq!(push.unwrap().unwrap().outcome, Pushed::Published);
    fs::remove_file(bucket.join("v1/prunes/later")).unwrap();

    // A dead prune's marker does not stop anyone.
    r.write_object_unchecked("v1/prunes/dead", marker(unix_now() - 7200))
        .unwrap();
    put(&w.a, "f", fill);
    let report = impatient.push(&w.a, "f").unwrap().unwrap();
    assert_eq!(report.outcome, Pushed::Published);
}

/// The race prune markers close, step by step: a prune that began before
/// a push wrote its intent (so it did not read it) is about to remove an
/// old pack that push reuses (from the index). The push waits for that
/// prune to end, then checks that every pack it names is there: it finds
/// one gone and publishes nothing; pushed again, it uploads the blobs
/// again, and what it publishes pulls whole. (On the fs service, where
/// the test can play the earlier prune's part by removing files.)
#[test]
fn a_push_does_not_reuse_packs_a_running_prune_removes() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let url = format!("file://{}", bucket.display());
    let r = Remote::builder(&url)
        .index_cache(Some(tmp.path().join("index")))
        .open()
        .unwrap();
    let w = world();
    let tree = |p: &Path| {
        for f in 0..80 {
            fs::write(p.join(format!("f{f}")), noise(2 * f + 7001, 4000)).unwrap();
        }
    };
    put(&w.a, "old", tree);
    put(&w.a, "new", tree);
    r.push(&w.a, "old").unwrap().unwrap();
    let packs = r.list_objects("v2/packs/").unwrap();
    assert_eq!(packs.len(), 1);
    // A prune is running: it has read the intents (none) and will remove
    // "old" and its pack (unindexed first, as a prune condemns it).
    let started = format!(r#"{{"started": {}}}"#, unix_now());
    r.write_object_unchecked("v1/prunes/earlier", started.into_bytes())
        .unwrap();
    let pushed = std::thread::scope(|s| {
        let pusher = s.spawn(|| r.push(&w.a, "new"));
        while r.list_objects(INTENTS).unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(r.list().unwrap(), ["old"], "published during a prune");
        // The prune removes what it decided to, and ends.
        fs::remove_file(bucket.join("v1/manifests/old")).unwrap();
        for key in r.list_objects("v2/index/").unwrap() {
            fs::remove_file(bucket.join(key)).unwrap();
        }
        fs::remove_file(bucket.join(&packs[0])).unwrap();
        fs::remove_file(bucket.join("v1/prunes/earlier")).unwrap();
        pusher.join().unwrap()
    });
    assert!(
        matches!(pushed, Err(Error::PackMissing { .. })),
        "{pushed:?}"
    );
    assert!(r.list().unwrap().is_empty());
    let pushed = r.push(&w.a, "new").unwrap().unwrap();
    assert_eq!(pushed.outcome, Pushed::Published);
    assert_eq!(pushed.blobs_uploaded, 80, "{pushed:?}");
    let got = r.pull(&w.b, "new").unwrap().unwrap();
    let a = w.a.load("new").unwrap().unwrap();
    assert_eq!(describe(a.path()), describe(got.path()));
}

/// On the fs service a pack's age can be set: a pack a live push intent
/// names is kept however old, the others past the grace period are
/// condemned (and taken out of the index), and an intent older than the
/// grace period (a dead push's) is removed.
#[test]
fn prune_keeps_what_a_live_intent_names() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let url = format!("file://{}", bucket.display());
    let r = Remote::open(&url).unwrap();
    let w = world();
    put(&w.a, "kept", |p| {
        fs::write(p.join("kept"), noise(3001, 20_000)).unwrap()
    });
    r.push(&w.a, "kept").unwrap().unwrap();
    let kept = r.list_objects("v2/packs/").unwrap();
    put(&w.a, "lost", |p| {
        fs::write(p.join("lost"), noise(3002, 20_000)).unwrap()
    });
    r.push(&w.a, "lost").unwrap().unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    for key in r.list_objects("v2/packs/").unwrap() {
        fs::File::options()
            .write(true)
            .open(bucket.join(&key))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let live = format!(r#"{{"created": {}, "packs": ["{}"]}}"#, unix_now(), kept[0]);
    r.write_object_unchecked("v1/intents/live", live.into_bytes())
        .unwrap();
    let dead = format!(r#"{{"created": {}, "blobs": []}}"#, unix_now() - 7200);
    r.write_object_unchecked("v1/intents/dead", dead.into_bytes())
        .unwrap();
    // The entries were pushed 0 s ago; unused for 0 s removes them.
    let report = r.prune(PruneOptions::unused_for(Duration::ZERO)).unwrap();
    assert_eq!(report.manifests_removed, ["kept", "lost"]);
    assert_eq!(
        (
            report.packs_condemned,
            report.packs_referenced,
            report.intents_removed
        ),
        (1, 1, 1),
        "{report:?}"
    );
    assert_eq!(r.list_objects("v1/intents/").unwrap(), ["v1/intents/live"]);
    let condemned = r.list_objects("v2/condemned/").unwrap();
    assert_eq!(condemned.len(), 1);
    assert!(!kept[0].ends_with(condemned[0].rsplit('/').next().unwrap()));
    // The index lists only the kept pack now: pushing "lost" again
    // uploads its blob, pushing "kept" again does not.
    let again = r.push(&w.a, "lost").unwrap().unwrap();
    assert_eq!(again.blobs_uploaded, 1, "{again:?}");
    let again = r.push(&w.a, "kept").unwrap().unwrap();
    assert_eq!(again.blobs_uploaded, 0, "{again:?}");
    let ro = Remote::builder(&url)
        .access(Access::ReadOnly)
        .open()
        .unwrap();
    assert!(matches!(
        ro.prune(PruneOptions::unused_for(Duration::ZERO)),
        Err(Error::ReadOnly)
    ));
}

#[test]
fn remote_down_is_a_miss_within_the_timeout() {
    let port = free_port();
    let w = world();
    let r = Remote::builder(format!(
        "s3://bucket/p?endpoint=http://127.0.0.1:{port}&region=auto"
    ))
    .credentials("test", "test")
    .miss_timeout(Duration::from_secs(3))
    .timeout(Duration::from_secs(1))
    .open()
    .unwrap();
    // How long it takes is bounded by the miss timeout, which
    // `a_hung_server_is_a_miss_at_the_miss_timeout` shows without timing.
    let t = Instant::now();
    match r.load_or_pull(&w.b, "x").unwrap() {
        ReadThrough::Miss {
            remote_error: Some(e),
        } => eprintln!("miss as expected after {:?}: {e}", t.elapsed()),
        other => panic!("{other:?}"),
    }
    put(&w.a, "x", fill);
    assert!(r.push(&w.a, "x").is_err());
    assert!(
        w.a.load("x").unwrap().is_some(),
        "a failed push leaves the local entry"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// moto's S3 server, killed on drop.
struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Find `moto_server`, installing `moto[server]` with pip if it is
/// missing; `Err(why)` when neither works.
fn moto_command() -> Result<Command, String> {
    let works = |c: &str, args: &[&str]| {
        Command::new(c)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works("moto_server", &["--help"]) {
        return Ok(Command::new("moto_server"));
    }
    if !works("python3", &["-c", "import moto.server"]) {
        let pip = |extra: &[&str]| {
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet"])
                .args(extra)
                .arg("moto[server]")
                .output()
        };
        let mut out = pip(&[]).map_err(|e| format!("python3 is not runnable: {e}"))?;
        // A distribution's own Python refuses pip installs (PEP 668)
        // unless told that this machine is a throwaway test machine.
        if !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("externally-managed")
        {
            out = pip(&["--break-system-packages"])
                .map_err(|e| format!("python3 is not runnable: {e}"))?;
        }
        if !out.status.success() {
            return Err(format!(
                "`pip install 'moto[server]'` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let mut c = Command::new("python3");
    c.args(["-m", "moto.server"]);
    Ok(c)
}

/// Send one unsigned HTTP request (moto does not check signatures).
fn http(port: u16, request: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(request.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Start moto's S3 server on `port` with an empty bucket `bucket`; `Err`
/// (why) when there is no moto to run.
fn start_moto(port: u16) -> Result<Moto, String> {
    let mut cmd = moto_command()?;
    let child = cmd
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let created = loop {
        let put = format!(
            "PUT /bucket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        match http(port, &put) {
            Ok(resp) => break resp,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("moto did not start on port {port}: {e}"),
        }
    };
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    Ok(moto)
}

#[test]
fn s3_service_on_moto() {
    let port = free_port();
    let _moto = match start_moto(port) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipping the S3 test: no moto server ({why})");
            return;
        }
    };
    let url = format!("s3://bucket/team/cache?endpoint=http://127.0.0.1:{port}&region=auto");
    let open = |b: RemoteBuilder| b.credentials("testing", "testing").open().unwrap();
    suite(&open, &url);
    let url = format!("s3://bucket/pruned?endpoint=http://127.0.0.1:{port}&region=auto");
    prune(&open, &url);
    prune_racing_a_push(&open, &url);
    requests_do_not_grow_with_files(port);
}

/// The suite on `s3s-fs` (a fast S3 server from crates.io, the one the
/// remote benchmark uses), behind the latency proxy at 1 ms. `cargo xtask
/// ci` and `cargo xtask remote-bench` install it when it is missing; a
/// plain `cargo test` without it says so and skips.
#[test]
fn s3_service_on_s3s_fs() {
    let works = Command::new("s3s-fs")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!("skipping the s3s-fs test: no `s3s-fs` (cargo install s3s-fs --version 0.14.1 --locked --features binary)");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    fs::create_dir(data.path().join("bucket")).unwrap();
    let port = free_port();
    let child = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "testing", "--secret-key", "testing"])
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s3s-fs starts");
    let _server = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let proxy = crate::proxy::LatencyProxy::start(port, Duration::from_millis(1), None).unwrap();
    let url = format!(
        "s3://bucket/suite?endpoint=http://127.0.0.1:{}&region=us-east-1",
        proxy.port
    );
    let open = |b: RemoteBuilder| b.credentials("testing", "testing").open().unwrap();
    suite(&open, &url);
    assert!(proxy.counts().requests() > 0);
}

/// Requests are counted by the latency proxy (no delay here: counts are
/// deterministic, times are not): a first push of 600 files, its pull,
/// and a second push with one file changed each take a handful of
/// requests, not one per file or blob (format 1 took over 600 each).
fn requests_do_not_grow_with_files(moto: u16) {
    let proxy = crate::proxy::LatencyProxy::start(moto, Duration::ZERO, None).unwrap();
    let url = format!(
        "s3://bucket/counted?endpoint=http://127.0.0.1:{}&region=auto",
        proxy.port
    );
    let r = RemoteBuilder::new(url.as_str())
        .credentials("testing", "testing")
        .index_cache(None)
        .open()
        .unwrap();
    let w = world();
    let tree = |p: &Path, changed: u64| {
        for d in 0..6 {
            fs::create_dir(p.join(format!("d{d}"))).unwrap();
            for f in 0..100u64 {
                let seed = 10_000 + d * 100 + f + if d * 100 + f == 7 { changed } else { 0 };
                fs::write(p.join(format!("d{d}/f{f}")), noise(seed, 3000)).unwrap();
            }
        }
    };
    put(&w.a, "many", |p| tree(p, 0));
    put(&w.a, "many-2", |p| tree(p, 1_000_000));
    proxy.reset();
    let first = r.push(&w.a, "many").unwrap().unwrap();
    let pushed = proxy.counts();
    assert_eq!((first.blobs, first.packs_uploaded), (600, 1));
    assert!(pushed.requests() <= 12, "first push: {pushed}");
    assert_eq!(
        pushed.of("PUT"),
        5,
        "pack, intent, index, manifest, used: {pushed}"
    );
    proxy.reset();
    drop(r.pull(&w.b, "many").unwrap().unwrap());
    let pulled = proxy.counts();
    assert!(pulled.requests() <= 4, "pull: {pulled}");
    assert_eq!(
        pulled.of("GET range"),
        1,
        "one ranged read of one pack: {pulled}"
    );
    proxy.reset();
    let second = r.push(&w.a, "many-2").unwrap().unwrap();
    let again = proxy.counts();
    assert_eq!(second.blobs_uploaded, 1);
    assert!(again.requests() <= 12, "second push: {again}");
    assert!(
        second.bytes_uploaded * 10 < first.bytes_uploaded,
        "{} of {}",
        second.bytes_uploaded,
        first.bytes_uploaded
    );
    eprintln!("requests: first push {pushed}; pull {pulled}; second push {again}");
}

/// A TCP proxy in front of a server: to the client it is the server, and
/// it dies like one (every connection cut, the port refusing) once the
/// client has sent `trip_after` bytes through it.
struct Proxy {
    port: u16,
    dead: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    fn start(port: u16, upstream: u16, trip_after: u64) -> Proxy {
        Self::start_with(port, upstream, trip_after, Box::new(|| {}))
    }

    /// As [`Proxy::start`], running `on_trip` (once) when it trips, before
    /// it cuts the connections.
    fn start_with(
        port: u16,
        upstream: u16,
        trip_after: u64,
        on_trip: Box<dyn Fn() + Send + Sync>,
    ) -> Proxy {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("the proxy's port is free");
        let port = listener.local_addr().unwrap().port();
        let dead = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let on_trip: Arc<dyn Fn() + Send + Sync> = Arc::from(on_trip);
        let kill = {
            let (dead, conns) = (dead.clone(), conns.clone());
            move || {
                if !dead.swap(true, Ordering::SeqCst) {
                    on_trip();
                    // Wake the accept loop so it drops the listener.
                    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
                }
                for c in conns.lock().unwrap().drain(..) {
                    let _ = c.shutdown(std::net::Shutdown::Both);
                }
            }
        };
        let d = dead.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if d.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                {
                    let mut c = conns.lock().unwrap();
                    c.push(client.try_clone().unwrap());
                    c.push(server.try_clone().unwrap());
                }
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (sent, kill) = (sent.clone(), kill.clone());
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 16 << 10];
                    while let Ok(n @ 1..) = c_in.read(&mut buf) {
                        if sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > trip_after {
                            kill();
                            return;
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_in, &mut c_out);
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
            // The listener drops here: the port refuses connections.
        });
        Proxy { port, dead }
    }

    fn is_dead(&self) -> bool {
        self.dead.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The server dies in the middle of a push (moto behind a proxy that cuts
/// every connection and closes its port after 2 MiB of upload): the push
/// fails, no manifest is visible, the local entry is untouched; the
/// server back on the same port (moto kept its data: only the proxy
/// died), the same push completes and pulls whole.
///
/// moto keeps its state in memory, so killing moto itself loses the
/// bucket (`s3_server_killed_mid_push_publishes_nothing` does that): here
/// the proxy stands in for a server that dies and comes back with its data.
/// The entry `big` in `cache`: the usual tree plus 8 MiB of noise from
/// seeds `seed..seed + 8`, so a push takes long enough to be cut off.
fn put_big(cache: &FsCache, seed: u64) {
    put(cache, "big", |p| {
        fill(p);
        for i in 0..8 {
            fs::write(p.join(format!("part{i}")), noise(seed + i, 1 << 20)).unwrap();
        }
    });
}

#[test]
fn s3_server_dying_mid_push_publishes_nothing() {
    let moto_port = free_port();
    let _moto = match start_moto(moto_port) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipping the S3 fault test: no moto server ({why})");
            return;
        }
    };
    let w = world();
    put_big(&w.a, 4000);
    let proxy = Proxy::start(0, moto_port, 2 << 20);
    let url =
        |port: u16| format!("s3://bucket/faults?endpoint=http://127.0.0.1:{port}&region=auto");
    // Packs of 1 MiB, one upload at a time: the first packs are stored
    // before the server dies in the middle of another.
    let index = tempfile::tempdir().unwrap();
    let open = |port: u16| {
        Remote::builder(url(port))
            .credentials("testing", "testing")
            .timeout(Duration::from_secs(5))
            .concurrency(1)
            .pack_size(1 << 20)
            .index_cache(Some(index.path().into()))
            .open()
            .unwrap()
    };
    let through_proxy = open(proxy.port);
    let err = through_proxy.push(&w.a, "big").unwrap_err();
    assert!(
        proxy.is_dead(),
        "the push failed before the server died: {err}"
    );
    eprintln!("push with the server dying: {err}");
    // Seen from the server itself: blobs perhaps, but no manifest.
    let direct = open(moto_port);
    assert!(direct.list().unwrap().is_empty());
    assert!(direct.read_object("v1/manifests/big").unwrap().is_none());
    assert!(w.a.load("big").unwrap().is_some());
    // The server is back on the same port.
    let _back = Proxy::start(proxy.port, moto_port, u64::MAX);
    let report = through_proxy.push(&w.a, "big").unwrap().unwrap();
    assert_eq!(report.outcome, Pushed::Published);
    assert!(
        report.blobs_uploaded < report.blobs,
        "packs stored before the death are reused: {report:?}"
    );
    let got = direct.pull(&w.b, "big").unwrap().unwrap();
    let a = w.a.load("big").unwrap().unwrap();
    assert_eq!(describe(a.path()), describe(got.path()));
    // The dead push's intent is debris a prune removes once stale.
    let pruned = direct
        .prune(PruneOptions::unused_for(30 * DAY).grace(Duration::ZERO))
        .unwrap();
    assert!(pruned.intents_removed <= 1, "{pruned:?}");
    assert_eq!(direct.info().unwrap().intents, 0);
}

/// moto itself killed in the middle of a push (when 2 MiB have gone
/// through a proxy in front of it), then started again on the same port.
/// moto keeps its state in memory only, so it comes back empty (its
/// bucket created again): no manifest is visible, and the push, done
/// again, uploads everything and completes.
#[test]
fn s3_server_killed_mid_push_publishes_nothing() {
    let moto_port = free_port();
    let first = match start_moto(moto_port) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipping the S3 fault test: no moto server ({why})");
            return;
        }
    };
    let w = world();
    put_big(&w.a, 6000);
    let moto = std::sync::Mutex::new(Some(first));
    let moto = std::sync::Arc::new(moto);
    let killer = moto.clone();
    let proxy = Proxy::start_with(
        0,
        moto_port,
        2 << 20,
        Box::new(move || drop(killer.lock().unwrap().take())),
    );
    let open = |port: u16| {
        Remote::builder(format!(
            "s3://bucket/killed?endpoint=http://127.0.0.1:{port}&region=auto"
        ))
        .credentials("testing", "testing")
        .timeout(Duration::from_secs(5))
        .concurrency(4)
        .open()
        .unwrap()
    };
    let through_proxy = open(proxy.port);
    let err = through_proxy.push(&w.a, "big").unwrap_err();
    assert!(
        proxy.is_dead(),
        "the push failed before the server died: {err}"
    );
    assert!(moto.lock().unwrap().is_none(), "moto was killed");
    eprintln!("push with the server killed: {err}");
    assert!(w.a.load("big").unwrap().is_some());
    // Back on the same port.
    let _moto = start_moto(moto_port).expect("moto starts again");
    let _back = Proxy::start(proxy.port, moto_port, u64::MAX);
    let direct = open(moto_port);
    assert!(direct.list().unwrap().is_empty());
    assert!(direct.read_object("v1/manifests/big").unwrap().is_none());
    let report = through_proxy.push(&w.a, "big").unwrap().unwrap();
    assert_eq!(report.outcome, Pushed::Published);
    assert_eq!(report.blobs_uploaded, report.blobs, "{report:?}");
    let got = direct.pull(&w.b, "big").unwrap().unwrap();
    let a = w.a.load("big").unwrap().unwrap();
    assert_eq!(describe(a.path()), describe(got.path()));
}

/// A server that accepts connections and never answers: `load_or_pull`
/// gives up at the miss timeout (the request timeout is far longer), a
/// miss that says so.
#[test]
fn a_hung_server_is_a_miss_at_the_miss_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        // Hold every connection open, silent, until the test ends.
        let mut conns = Vec::new();
        for c in listener.incoming().take(8) {
            conns.push(c);
        }
    });
    let w = world();
    let r = Remote::builder(format!(
        "s3://bucket/p?endpoint=http://127.0.0.1:{port}&region=auto"
    ))
    .credentials("test", "test")
    .timeout(Duration::from_secs(600))
    .miss_timeout(Duration::from_millis(500))
    .open()
    .unwrap();
    match r.load_or_pull(&w.b, "x").unwrap() {
        ReadThrough::Miss {
            remote_error: Some(Error::Timeout(t)),
        } => assert_eq!(t, Duration::from_millis(500)),
        other => panic!("{other:?}"),
    }
    drop(held);
}

/// The async API runs on the remote's own runtime, so its futures can be
/// awaited from any executor: a plain `futures` executor (no tokio
/// context at all) and the caller's own tokio runtime.
#[test]
fn async_api_from_any_executor() {
    let w = world();
    put(&w.a, "e", fill);
    let r = Remote::open("memory://").unwrap();
    let pushed = futures::executor::block_on(r.push_async(&w.a, "e"))
        .unwrap()
        .unwrap();
    assert_eq!(pushed.outcome, Pushed::Published);
    let a = describe(w.a.load("e").unwrap().unwrap().path());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let got = r.pull_async(&w.b, "e").await.unwrap().unwrap();
        assert_eq!(describe(got.path()), a);
        drop(got);
        match r.load_or_pull_async(&w.b, "e").await.unwrap() {
            ReadThrough::Local(e) => assert_eq!(describe(e.path()), a),
            other => panic!("not a local hit: {other:?}"),
        }
        assert!(r.pull_async(&w.b, "absent").await.unwrap().is_none());
        assert!(matches!(
            r.load_or_pull_async(&w.b, "absent").await.unwrap(),
            ReadThrough::Miss { remote_error: None }
        ));
        // Nothing is unused yet: prune keeps the entry.
        let report = r
            .prune_async(PruneOptions::unused_for(30 * DAY))
            .await
            .unwrap();
        assert_eq!(report.manifests_kept, 1);
        // A second push finds it there.
        let again = r.push_async(&w.a, "e").await.unwrap().unwrap();
        assert_eq!(again.outcome, Pushed::Exists);
    });
}

/// Every blocking method called inside a tokio runtime (a task, or a
/// `spawn_blocking` closure) returns `Error::InsideRuntime` naming its
/// async twin, instead of tokio's panic; a local hit of `load_or_pull`
/// needs no runtime and still answers.
#[test]
fn blocking_api_inside_a_runtime_is_an_error() {
    let w = world();
    put(&w.a, "e", fill);
    let r = Remote::open("memory://").unwrap();
    let inside = |what: &str, e: Error| {
        assert!(matches!(e, Error::InsideRuntime(_)), "{what}: {e:?}");
        assert!(e.to_string().contains("_async"), "{e}");
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        inside("push", r.push(&w.a, "e").unwrap_err());
        inside("pull", r.pull(&w.b, "e").unwrap_err());
        inside("load_or_pull", r.load_or_pull(&w.b, "e").unwrap_err());
        inside("prune", r.prune(PruneOptions::unused_for(DAY)).unwrap_err());
        inside("list", r.list().unwrap_err());
        inside("info", r.info().unwrap_err());
        assert!(matches!(
            r.load_or_pull(&w.a, "e").unwrap(),
            ReadThrough::Local(_)
        ));
        let (r2, a) = (r.clone(), w.a.clone());
        let e = tokio::task::spawn_blocking(move || r2.push(&a, "e"))
            .await
            .unwrap()
            .unwrap_err();
        inside("push in spawn_blocking", e);
    });
    // Outside, the same calls work.
    assert_eq!(
        r.push(&w.a, "e").unwrap().unwrap().outcome,
        Pushed::Published
    );
}

/// Dropping the last `Remote` is safe anywhere: inside an async task
/// (after async calls), inside `spawn_blocking` (after blocking calls),
/// and when a cancelled async call's task held the last clone on the
/// remote's own runtime.
#[test]
fn dropping_the_last_remote_anywhere_is_safe() {
    let w = world();
    put(&w.a, "e", fill);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = Remote::open("memory://drop-a").unwrap();
        r.push_async(&w.a, "e").await.unwrap().unwrap();
        drop(r); // the last clone, in a task
    });
    let r = Remote::open("memory://drop-a").unwrap();
    rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            drop(r); // the last clone, on a blocking thread
        })
        .await
        .unwrap();
    });
    let b2 = w.b.clone();
    rt.block_on(async move {
        let r = Remote::open("memory://drop-a").unwrap();
        // Poll once so the task starts, then cancel it and drop the
        // handle: the task, still running, holds the last clone, and
        // drops it on the remote's own runtime.
        let _ = tokio::time::timeout(Duration::from_micros(1), r.pull_async(&b2, "e")).await;
        drop(r);
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    // The cancelled pull stored all of the entry or none of it.
    let a = describe(w.a.load("e").unwrap().unwrap().path());
    if let Some(got) = w.b.load("e").unwrap() {
        assert_eq!(describe(got.path()), a);
    }
}

/// A remote written in format 1 (one object per blob, an envelope of
/// version 1 without a locator), laid out by hand here as the crate docs
/// describe it, still pulls.
#[test]
fn a_format_1_remote_still_pulls() {
    let w = world();
    let big = noise(4242, 300_000); // several chunks in format 1 terms
    put(&w.a, "old", |p| {
        fs::create_dir(p.join("d")).unwrap();
        fs::write(p.join("d/small"), b"small file\n").unwrap();
        fs::write(p.join("big"), &big).unwrap();
        fs::write(p.join("empty"), b"").unwrap();
        symlink("d/small", p.join("link")).unwrap();
    });
    let a = w.a.load("old").unwrap().unwrap();
    let r = Remote::open("memory://").unwrap();
    let blob = |data: &[u8]| {
        let h = blake3::hash(data).to_hex().to_string();
        let key = format!("v1/blobs/{}/{h}", &h[..2]);
        r.write_object_unchecked(&key, zstd::bulk::compress(data, 3).unwrap())
            .unwrap();
        serde_json::json!({"hash": h, "size": data.len()})
    };
    let file = |path: &str, data: &[u8], blobs: Vec<serde_json::Value>| {
        serde_json::json!({
            "path": path, "type": "file", "perm": 0o644, "size": data.len(),
            "hash": blake3::hash(data).to_hex().to_string(), "blobs": blobs,
        })
    };
    // Format 1 never packs: the big file as two blobs of its own.
    let (b1, b2) = big.split_at(200_000);
    let nodes = serde_json::json!([
        {"path": "d", "type": "dir", "perm": 0o755},
        file("d/small", b"small file\n", vec![blob(b"small file\n")]),
        file("big", &big, vec![blob(b1), blob(b2)]),
        file("empty", b"", vec![]),
        {"path": "link", "type": "symlink", "perm": 0o777, "target": "d/small"},
    ]);
    let perms = |p: &str| fs::symlink_metadata(a.path().join(p)).unwrap().mode() & 0o7777;
    assert_eq!(perms("d"), 0o755);
    assert_eq!(perms("big"), 0o644);
    let manifest = serde_json::json!({
        "format": "fscache-remote-manifest", "version": 1, "name": "old",
        "digest": fscache::tree_digest_version(a.path(), fscache::DigestVersion::V1)
            .unwrap()
            .to_string(),
        "created": unix_now(), "nodes": nodes,
    });
    let envelope = serde_json::json!({
        "format": "fscache-remote-manifest", "version": 1,
        "manifest": manifest.to_string(), "signatures": [],
    });
    r.write_object_unchecked("v1/manifests/old", envelope.to_string().into_bytes())
        .unwrap();
    let got = r.pull(&w.b, "old").unwrap().unwrap();
    assert_eq!(describe(a.path()), describe(got.path()));
    drop(got);

    // `check` reads format 1 too; `migrate` rewrites it into packs with
    // the manifest (and so any signature) byte for byte as it was.
    let checked = r.check(None, CheckOptions::new().read_data(true)).unwrap();
    assert!(checked.is_clean(), "{checked:?}");
    assert_eq!((checked.blobs, checked.packs), (3, 0));
    let before: serde_json::Value =
        serde_json::from_slice(&r.read_object("v1/manifests/old").unwrap().unwrap()).unwrap();
    let m = r.migrate().unwrap();
    assert_eq!(m.migrated, ["old"], "{m:?}");
    assert_eq!((m.packs_uploaded, m.already), (1, 0));
    let after: serde_json::Value = serde_json::from_slice(&unpacked(
        &r.read_object("v1/manifests/old").unwrap().unwrap(),
    ))
    .unwrap();
    assert_eq!(after["version"], 2);
    assert_eq!(
        after["manifest"], before["manifest"],
        "the signed text is kept"
    );
    assert_eq!(after["signatures"], before["signatures"]);
    assert_eq!(
        r.migrate().unwrap().already,
        1,
        "a second migrate does nothing"
    );
    let checked = r.check(None, CheckOptions::new().read_data(true)).unwrap();
    assert!(checked.is_clean(), "{checked:?}");
    assert_eq!((checked.blobs, checked.packs), (0, 1));
    // The format-1 blobs are now garbage: remove them, it still pulls.
    for key in r.list_objects("v1/blobs/").unwrap() {
        r.write_object_unchecked(&key, b"gone".to_vec()).unwrap();
    }
    let c = cache(&w._tmp.path().join("host-c"));
    let got = r.pull(&c, "old").unwrap().unwrap();
    assert_eq!(describe(a.path()), describe(got.path()));
}

/// A locator (unsigned) changed in the bucket costs at most a refused
/// pull, never trust: frames swapped between two blobs fail their hash
/// checks, a frame far longer than its blob could need is refused before
/// any read, a missing pack is a miss after one more read of the
/// locator; nothing is stored locally.
#[test]
fn a_changed_locator_is_refused() {
    let w = world();
    let r = Remote::open("memory://").unwrap();
    put(&w.a, "e", fill);
    r.push(&w.a, "e").unwrap().unwrap();
    let key = "v1/manifests/e";
    let original = r.read_object(key).unwrap().unwrap();
    let env: serde_json::Value = serde_json::from_slice(&unpacked(&original)).unwrap();
    assert_eq!(env["version"], 2);
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut e = env.clone();
        f(&mut e["locator"]);
        r.write_object_unchecked(key, serde_json::to_vec(&e).unwrap())
            .unwrap();
    };
    edit(&|l| {
        let blobs = l["blobs"].as_array_mut().unwrap();
        let (x, y) = (blobs[0].clone(), blobs[1].clone());
        blobs[0] = y;
        blobs[1] = x;
    });
    match r.load_or_pull(&w.b, "e").unwrap() {
        ReadThrough::Miss {
            remote_error: Some(Error::CorruptBlob { .. }),
        } => {}
        other => panic!("{other:?}"),
    }
    nothing_stored(&w.b, "e");
    edit(&|l| l["blobs"][0][2] = serde_json::json!(1u64 << 40));
    let err = r.pull(&w.b, "e").unwrap_err();
    assert!(err.to_string().contains("locator"), "{err}");
    nothing_stored(&w.b, "e");
    edit(&|l| l["packs"][0] = serde_json::json!("ab".repeat(32)));
    let err = r.pull(&w.b, "e").unwrap_err();
    assert!(matches!(err, Error::PackMissing { .. }), "{err}");
    nothing_stored(&w.b, "e");
    // Put back as pushed, it pulls.
    r.write_object_unchecked(key, original).unwrap();
    let got = r.pull(&w.b, "e").unwrap().unwrap();
    let a = w.a.load("e").unwrap().unwrap();
    assert_eq!(describe(a.path()), describe(got.path()));
}

/// A pull into a cache that records digests hands the digest it checked
/// to the facade (no third hash of the tree): `object.info` has it and
/// `verify` agrees.
#[test]
fn a_pulled_entry_records_its_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let a = cache(&tmp.path().join("a"));
    let b = FsCache::builder("fscache-remote-test")
        .record_digests(true)
        .open(tmp.path().join("b"))
        .unwrap();
    b.set_info(CacheInfo {
        maximum_size: Some(MaxSize::Unlimited),
        ..Default::default()
    })
    .unwrap();
    put(&a, "e", fill);
    let r = Remote::open("memory://").unwrap();
    let pushed = r.push(&a, "e").unwrap().unwrap();
    drop(r.pull(&b, "e").unwrap().unwrap());
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(b.path().join("objects/e/object.info")).unwrap()).unwrap();
    assert_eq!(info["digest"], pushed.digest.to_string());
    assert_eq!(b.verify("e").unwrap(), fscache::Verified::Ok(pushed.digest));
}
