//! `push`: read a local entry under its read lock, each file once
//! (chunked, hashed and compressed in one pass), pack the blobs the
//! remote's index lacks into ~16 MiB packs uploaded while the tree is
//! still being read, then the index object, then the manifest with its
//! locator.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fscache::{Digest, FsCache};
use futures::{StreamExt, TryStreamExt};

use crate::asyncapi::blocking;
use crate::error::{Error, Result};
use crate::index::{IndexedPack, Loc};
use crate::locator::Locator;
use crate::manifest::{Manifest, Node, FORMAT, VERSION};
use crate::pack::{pack_key, Pack};
use crate::remote::{manifest_key, Access, Inner, Remote};
use crate::scan::scan;
use crate::services::link_create_only;

/// FastCDC's minimum, average and maximum chunk sizes.
pub(crate) const CHUNK_MIN: u32 = 64 << 10;
pub(crate) const CHUNK_AVG: u32 = 256 << 10;
pub(crate) const CHUNK_MAX: u32 = 1 << 20;
/// The tree digest version a push writes: the manifest's `digest` and
/// each file node's `hash` are of it.
pub(crate) const DIGEST_VERSION: fscache::DigestVersion = fscache::DigestVersion::V3;
/// zstd's level for blobs. Level 1, not zstd's default 3: compressed one
/// by one, the files of a Python installation (`lib/python3.11`) take 1.44×
/// less CPU at level 1 for 4 % (files under 64 KiB) to 7 % (larger ones)
/// more bytes, and a push is CPU-bound on a small machine (the bench's
/// 10,000-file push on s3s-fs behind 10 ms: 0.83× `tar | zstd -3` plus one
/// PUT at level 3, 0.97× at 2, 1.19× at 1). A reader does not care:
/// every level decodes the same way.
pub(crate) const ZSTD_LEVEL: i32 = 1;

/// What [`Remote::push`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushReport {
    /// Whether this push published the manifest.
    pub outcome: Pushed,
    /// The entry's tree digest as the manifest records it (version 3,
    /// `blake3v3:`, what the local entry records too). For
    /// [`Pushed::Exists`], the local entry's, in version 3 (a manifest
    /// pushed before version 3 records the version 2 one).
    pub digest: Digest,
    /// Nodes in the tree (files, directories, symlinks, FIFOs, sockets,
    /// devices).
    pub nodes: usize,
    /// Distinct blobs the tree's files are made of, with its xattr values
    /// stored as blobs (those over 1 KiB).
    pub blobs: usize,
    /// Blobs this push uploaded (the others were on the remote already).
    pub blobs_uploaded: usize,
    /// Packs this push uploaded.
    pub packs_uploaded: usize,
    /// Bytes this push uploaded: packs, index, intent and manifest.
    pub bytes_uploaded: u64,
    /// Of those, the bytes of the packs (the data itself).
    pub bytes_data: u64,
    /// Uncompressed bytes of the tree's distinct blobs.
    pub bytes_total: u64,
}

/// How far a transfer is, as [`Remote::push_with_progress`] and
/// [`Remote::pull_with_progress`] report it: a pull after each distinct
/// blob is fetched and written, a push after each pack is uploaded and
/// once for the blobs the remote had (a push reads the tree as it
/// uploads, so its totals grow until the tree is read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Distinct blobs done.
    pub blobs_done: usize,
    /// Distinct blobs of the entry.
    pub blobs_total: usize,
    /// Uncompressed bytes of the blobs done.
    pub bytes_done: u64,
    /// Uncompressed bytes of all its distinct blobs.
    pub bytes_total: u64,
}

/// Counts blobs done and calls the observer.
pub(crate) struct Tracker<'a> {
    blobs: std::sync::atomic::AtomicUsize,
    bytes: AtomicU64,
    blobs_total: usize,
    bytes_total: u64,
    observer: &'a (dyn Fn(Progress) + Sync),
}

impl<'a> Tracker<'a> {
    pub(crate) fn new(
        blobs_total: usize,
        bytes_total: u64,
        observer: &'a (dyn Fn(Progress) + Sync),
    ) -> Self {
        Self {
            blobs: Default::default(),
            bytes: AtomicU64::new(0),
            blobs_total,
            bytes_total,
            observer,
        }
    }

    /// Report a push's progress as it stands.
    pub(crate) fn set(&self, p: Progress) {
        (self.observer)(p);
    }

    pub(crate) fn done(&self, bytes: u64) {
        let blobs_done = self.blobs.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes_done = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        (self.observer)(Progress {
            blobs_done,
            blobs_total: self.blobs_total,
            bytes_done,
            bytes_total: self.bytes_total,
        });
    }
}

/// Whether a push published its manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The manifest is now on the remote.
    Published,
    /// The remote already had a manifest of that name (published before,
    /// or by a racing pusher): it was left as it is. Blobs this push
    /// uploaded stay, unreferenced until a later push names them.
    Exists,
}

impl Remote {
    /// Push the local entry `name` of `cache` to the remote. Holds the
    /// entry's read lock for the whole push, so it cannot be evicted or
    /// changed meanwhile. Reads each file once: its content-defined
    /// chunks are hashed, and those the remote's index does not list are
    /// compressed into packs of about 16 MiB, uploaded with bounded
    /// concurrency while the tree is still being read. Then one index
    /// object naming the new packs, and last the manifest with its
    /// locator, signed when a signing key is set, create-only where the
    /// service supports it.
    /// `Ok(None)`: the cache has no such entry.
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`]; an invalid name; the tree holds a non-UTF-8
    /// name, symlink target or xattr name ([`Error::Unsupported`]); reading
    /// it or a request failed; [`Error::InsideRuntime`] (use
    /// [`Remote::push_async`]). A failed push never publishes a manifest,
    /// and the local cache is untouched.
    pub fn push(&self, cache: &FsCache, name: &str) -> Result<Option<PushReport>> {
        self.push_with_progress(cache, name, &|_| {})
    }

    /// [`Remote::push`], calling `progress` as packs are uploaded (from
    /// the remote's threads: keep it short).
    ///
    /// # Errors
    ///
    /// As [`Remote::push`].
    pub fn push_with_progress(
        &self,
        cache: &FsCache,
        name: &str,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Option<PushReport>> {
        self.inner
            .block("push", self.inner.push(cache, name, progress))?
    }
}

/// Packs uploaded at once, at most (each up to ~17 MiB in memory, plus
/// one being filled and one waiting).
const PACKS_IN_FLIGHT: usize = 4;

/// Where one distinct blob of the tree is.
pub(crate) enum Place {
    /// In a pack the remote had (from its index).
    Reused(Loc),
    /// In the `slot`-th pack of this push.
    New {
        slot: usize,
        offset: u64,
        length: u64,
    },
}

/// What the reading of the tree found.
pub(crate) struct Scanned {
    pub(crate) nodes: Vec<Node>,
    /// Per distinct blob, in manifest order: its place and size.
    pub(crate) places: Vec<(Place, u64)>,
    /// The bytes of the xattr values stored as blobs, for the digest.
    pub(crate) xattr_values: crate::manifest::XattrValues,
}

/// A pack finished by the reader, for the uploader.
pub(crate) struct Closed {
    pub(crate) slot: usize,
    pub(crate) pack: Pack,
    /// Uncompressed bytes of its blobs.
    pub(crate) bytes: u64,
}

/// A pack the uploader stored (its bytes are gone from memory).
pub(crate) struct Stored {
    pub(crate) slot: usize,
    pub(crate) listed: IndexedPack,
    /// Its stored size.
    pub(crate) len: u64,
    /// Uncompressed bytes of its blobs.
    pub(crate) bytes: u64,
}

impl Inner {
    /// The push itself (see [`Remote::push`]); file work runs on the
    /// blocking pool.
    pub(crate) async fn push(
        &self,
        cache: &FsCache,
        name: &str,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Option<PushReport>> {
        self.push_excluding(cache, name, progress, &HashSet::new(), &HashSet::new())
            .await
    }

    /// [`Inner::push`], reusing no blob of `blobs` (hashes) and nothing
    /// in `packs` (pack keys) that the index lists: a repair's push,
    /// which uploads again what a bad pack held.
    pub(crate) async fn push_excluding(
        &self,
        cache: &FsCache,
        name: &str,
        progress: &(dyn Fn(Progress) + Sync),
        blobs: &HashSet<String>,
        packs: &HashSet<String>,
    ) -> Result<Option<PushReport>> {
        if self.access == Access::ReadOnly {
            return Err(Error::ReadOnly);
        }
        let Some(entry) = cache.load(name)? else {
            return Ok(None);
        };
        let mkey = manifest_key(name);
        if self.exists(&mkey).await? {
            self.touch(name).await;
            // Reported: the local entry's digest in the version a push
            // writes (one read of the tree, none of it sent).
            let root = entry.path().to_path_buf();
            let digest = blocking(move || {
                fscache::tree_digest_version(&root, DIGEST_VERSION)
                    .map_err(|e| Error::io("digest", &root, e.into()))
            })
            .await?;
            return Ok(Some(PushReport {
                outcome: Pushed::Exists,
                digest,
                nodes: 0,
                blobs: 0,
                blobs_uploaded: 0,
                packs_uploaded: 0,
                bytes_uploaded: 0,
                bytes_data: 0,
                bytes_total: 0,
            }));
        }
        let (mut known, pending) = self.sync_index().await?;
        if !(blobs.is_empty() && packs.is_empty()) {
            known.retain(|h, l| !blobs.contains(h) && !packs.contains(&pack_key(&l.pack)));
        }
        let known = Arc::new(known);
        // The reader (a blocking thread and its walker and workers, see
        // scan.rs) hands closed packs to the uploader through a channel
        // of one: at most PACKS_IN_FLIGHT + 2 packs are in memory.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Closed>(1);
        let root = entry.path().to_path_buf();
        let reader = blocking({
            let known = known.clone();
            let target = self.pack_size;
            move || scan(&root, &known, target, tx)
        });
        let tracker = Tracker::new(0, 0, progress);
        let (done_blobs, done_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
        let uploads = futures::stream::poll_fn(|cx| rx.poll_recv(cx))
            .map(|c: Closed| {
                let (done_blobs, done_bytes, tracker) = (&done_blobs, &done_bytes, &tracker);
                async move {
                    let key = pack_key(&c.pack.hash);
                    let Pack {
                        hash,
                        bytes: body,
                        blobs,
                    } = c.pack;
                    let len = body.len() as u64;
                    self.op
                        .write(&key, body)
                        .await
                        .map_err(|e| Error::remote("write", &key, e))?;
                    let b = done_blobs.fetch_add(blobs.len() as u64, Ordering::Relaxed)
                        + blobs.len() as u64;
                    let n = done_bytes.fetch_add(c.bytes, Ordering::Relaxed) + c.bytes;
                    let listed = IndexedPack { pack: hash, blobs };
                    self.record_pending(&listed);
                    tracker.set(Progress {
                        blobs_done: b as usize,
                        blobs_total: b as usize,
                        bytes_done: n,
                        bytes_total: n,
                    });
                    Ok::<_, Error>(Stored {
                        slot: c.slot,
                        listed,
                        len,
                        bytes: c.bytes,
                    })
                }
            })
            .buffer_unordered(PACKS_IN_FLIGHT.min(self.concurrency))
            .try_collect::<Vec<Stored>>();
        let (scanned, mut stored) = futures::future::try_join(reader, uploads).await?;
        stored.sort_by_key(|s| s.slot);

        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            name: name.into(),
            // The version the digest is computed in (its prefix): the
            // files' hashes are of it.
            digest: DIGEST_VERSION.prefix().into(),
            created,
            nodes: scanned.nodes,
        };
        let digest = manifest
            .tree_digest_with(&scanned.xattr_values)
            .map_err(|why| Error::Unsupported {
                path: entry.path().into(),
                why,
            })?;
        manifest.digest = digest.to_string();

        // The locator: reused packs first seen, then this push's, by slot.
        let mut packs: Vec<String> = Vec::new();
        let mut pack_index: HashMap<String, u64> = HashMap::new();
        let mut index_of = |hash: &str, packs: &mut Vec<String>| {
            *pack_index.entry(hash.to_string()).or_insert_with(|| {
                packs.push(hash.to_string());
                packs.len() as u64 - 1
            })
        };
        let mut blobs = Vec::with_capacity(scanned.places.len());
        let mut reused_bytes = 0u64;
        // Packs of an earlier, cut push of this host: reused, and listed
        // in this push's index object.
        let mut unlisted: Vec<&IndexedPack> = Vec::new();
        for (place, size) in &scanned.places {
            blobs.push(match place {
                Place::Reused(l) => {
                    reused_bytes += size;
                    let before = packs.len();
                    let i = index_of(&l.pack, &mut packs);
                    if packs.len() > before {
                        unlisted.extend(pending.get(&l.pack));
                    }
                    [i, l.offset, l.length]
                }
                Place::New {
                    slot,
                    offset,
                    length,
                } => {
                    let s = stored
                        .get(*slot)
                        .filter(|s| s.slot == *slot)
                        .expect("every slot a place names was stored");
                    [index_of(&s.listed.pack, &mut packs), *offset, *length]
                }
            });
        }
        let locator = Locator { packs, blobs };
        let bytes_data: u64 = stored.iter().map(|s| s.len).sum();
        let uploaded_bytes: u64 = stored.iter().map(|s| s.bytes).sum();
        let mut report = PushReport {
            outcome: Pushed::Published,
            digest,
            nodes: manifest.nodes.len(),
            blobs: scanned.places.len(),
            blobs_uploaded: stored.iter().map(|s| s.listed.blobs.len()).sum(),
            packs_uploaded: stored.len(),
            bytes_uploaded: bytes_data,
            bytes_data,
            bytes_total: scanned.places.iter().map(|(_, s)| s).sum(),
        };
        tracker.set(Progress {
            blobs_done: report.blobs,
            blobs_total: report.blobs,
            bytes_done: uploaded_bytes + reused_bytes,
            bytes_total: report.bytes_total,
        });

        // Name every pack the locator names in an intent, so a prune
        // that starts from now on keeps them, and wait for prunes that
        // may not have read it. Such a prune may have removed a pack this
        // push relies on (one found in the index, or uploaded again under
        // the key of a condemned one): then each is checked to be there.
        let all_packs: Vec<String> = locator.packs.iter().map(|h| pack_key(h)).collect();
        let (intent, n) = self.begin_intent(&all_packs).await?;
        report.bytes_uploaded += n;
        let result = async {
            let waited = self.wait_for_prunes().await?;
            let check: &[String] = if waited { &all_packs } else { &[] };
            for key in check {
                if !self.exists(key).await? {
                    return Err(Error::PackMissing { key: key.clone() });
                }
            }
            // The index object names only packs that are stored; the
            // manifest, last, only blobs that are in them.
            let mut listed: Vec<&IndexedPack> = stored.iter().map(|s| &s.listed).collect();
            listed.extend(unlisted.iter().copied());
            report.bytes_uploaded += self.add_index(&listed).await?;
            self.clear_pending(listed.iter().map(|p| p.pack.as_str()));
            let sealed = manifest.seal_located(self.signing_key.as_ref(), Some(locator));
            let n = sealed.len() as u64;
            let created = match &self.fs_root {
                Some(root) => {
                    let (root, key) = (root.clone(), mkey.clone());
                    let sealed = sealed.clone();
                    tokio::task::spawn_blocking(move || link_create_only(&root, &key, &sealed))
                        .await
                        .map_err(|e| Error::io("publish", &mkey, std::io::Error::other(e)))?
                        .map_err(|e| Error::io("publish", &mkey, e))?
                }
                None => None,
            };
            let written = match created {
                Some(created) => Ok(created),
                None => {
                    let conditional = self.op.info().full_capability().write_with_if_not_exists;
                    match self
                        .op
                        .write_with(&mkey, sealed)
                        .if_not_exists(conditional)
                        .await
                    {
                        Ok(_) => Ok(true),
                        Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            };
            match written {
                Ok(true) => report.bytes_uploaded += n,
                Ok(false) => report.outcome = Pushed::Exists,
                Err(e) => return Err(Error::remote("write", &mkey, e)),
            }
            Ok(())
        }
        .await;
        if result.is_ok() {
            self.touch(name).await;
        }
        self.end_intent(&intent).await;
        result?;
        drop(entry);
        Ok(Some(report))
    }
}
