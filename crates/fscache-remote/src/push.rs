//! `push`: read a local entry under its read lock, each file once
//! (chunked, hashed and compressed in one pass), pack the blobs the
//! remote's index lacks into ~16 MiB packs uploaded while the tree is
//! still being read, then the index object, then the manifest with its
//! locator.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fastcdc::v2020::StreamCDC;
use fscache::{Digest, FsCache};
use futures::{StreamExt, TryStreamExt};

use crate::asyncapi::blocking;
use crate::error::{Error, Result};
use crate::index::{IndexedPack, Known, Loc};
use crate::locator::Locator;
use crate::manifest::{BlobRef, Kind, Manifest, Node, FORMAT, VERSION};
use crate::node;
use crate::pack::{pack_key, Pack, PackBuilder};
use crate::remote::{manifest_key, Access, Inner, Remote};

/// FastCDC's minimum, average and maximum chunk sizes.
pub(crate) const CHUNK_MIN: u32 = 64 << 10;
pub(crate) const CHUNK_AVG: u32 = 256 << 10;
pub(crate) const CHUNK_MAX: u32 = 1 << 20;
/// zstd's level for blobs: fast, and most of the gain of higher levels.
const ZSTD_LEVEL: i32 = 3;

/// What [`Remote::push`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushReport {
    /// Whether this push published the manifest.
    pub outcome: Pushed,
    /// The entry's tree digest.
    pub digest: Digest,
    /// Nodes in the tree (files, directories, symlinks, FIFOs, sockets,
    /// devices).
    pub nodes: usize,
    /// Distinct blobs the tree's files are made of.
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
enum Place {
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
struct Scanned {
    nodes: Vec<Node>,
    /// Per distinct blob, in manifest order: its place and size.
    places: Vec<(Place, u64)>,
}

/// A pack finished by the reader, for the uploader.
struct Closed {
    slot: usize,
    pack: Pack,
    /// Uncompressed bytes of its blobs.
    bytes: u64,
}

/// A pack the uploader stored (its bytes are gone from memory).
struct Stored {
    slot: usize,
    listed: IndexedPack,
    /// Its stored size.
    len: u64,
    /// Uncompressed bytes of its blobs.
    bytes: u64,
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
            // Reported: the local entry's digest (one read of the tree,
            // none of it sent).
            let root = entry.path().to_path_buf();
            let digest = blocking(move || {
                fscache::tree_digest(&root).map_err(|e| Error::io("digest", &root, e.into()))
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
        // The reader (a blocking thread) hands closed packs to the
        // uploader through a channel of one: at most PACKS_IN_FLIGHT + 2
        // packs are in memory.
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
            digest: String::new(),
            created,
            nodes: scanned.nodes,
        };
        let digest = manifest.tree_digest().map_err(|why| Error::Unsupported {
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

/// The reader's state: the blobs seen so far and the pack being filled.
struct Packer<'a> {
    known: &'a Known,
    seen: HashSet<String>,
    places: Vec<(Place, u64)>,
    current: PackBuilder,
    current_bytes: u64,
    slot: usize,
    tx: tokio::sync::mpsc::Sender<Closed>,
    zstd: zstd::bulk::Compressor<'static>,
    frame: Vec<u8>,
    target: usize,
}

impl Packer<'_> {
    /// One chunk of a file: a new distinct blob is placed (found in the
    /// index, or compressed into the current pack).
    fn chunk(&mut self, hash: &str, data: &[u8], path: &Path) -> Result<()> {
        if !self.seen.insert(hash.to_string()) {
            return Ok(());
        }
        let size = data.len() as u64;
        if let Some(loc) = self.known.get(hash) {
            self.places.push((Place::Reused(loc.clone()), size));
            return Ok(());
        }
        self.frame.clear();
        self.frame
            .reserve(zstd::zstd_safe::compress_bound(data.len()));
        self.zstd
            .compress_to_buffer(data, &mut self.frame)
            .map_err(|e| Error::io("compress", path, e))?;
        let (offset, length) = self.current.add(hash, size, &self.frame);
        self.current_bytes += size;
        self.places.push((
            Place::New {
                slot: self.slot,
                offset,
                length,
            },
            size,
        ));
        if self.current.full() {
            self.close()?;
        }
        Ok(())
    }

    /// Hand the current pack to the uploader.
    fn close(&mut self) -> Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        let target = self.target;
        let pack = std::mem::replace(&mut self.current, PackBuilder::new(target)).finish();
        let closed = Closed {
            slot: self.slot,
            pack,
            bytes: std::mem::take(&mut self.current_bytes),
        };
        self.slot += 1;
        // A closed channel means the uploader failed: its error is the
        // push's, this one is never seen.
        self.tx.blocking_send(closed).map_err(|_| {
            Error::io(
                "upload",
                "a pack",
                std::io::Error::other("the uploader stopped"),
            )
        })
    }
}

/// Walk the tree at `root` (parents first, names sorted) and read each
/// file once, packing the chunks `known` lacks.
fn scan(
    root: &Path,
    known: &Known,
    target: usize,
    tx: tokio::sync::mpsc::Sender<Closed>,
) -> Result<Scanned> {
    let mut packer = Packer {
        known,
        seen: HashSet::new(),
        places: Vec::new(),
        current: PackBuilder::new(target),
        target,
        current_bytes: 0,
        slot: 0,
        tx,
        zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL)
            .map_err(|e| Error::io("start zstd for", root, e))?,
        frame: Vec::new(),
    };
    let mut nodes: Vec<Node> = Vec::new();
    let mut inodes: HashMap<(u64, u64), usize> = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut kids: Vec<fs::DirEntry> = fs::read_dir(&dir)
            .and_then(|it| it.collect())
            .map_err(|e| Error::io("read directory", &dir, e))?;
        kids.sort_by_key(|k| k.file_name());
        let mut subdirs = Vec::new();
        for k in kids {
            let path = k.path();
            let name = k
                .file_name()
                .into_string()
                .map_err(|_| Error::Unsupported {
                    path: path.clone(),
                    why: "the name is not UTF-8".into(),
                })?;
            let rel_path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let md = fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
            let perm = md.mode() & 0o7777;
            let meta = node::capture(&path, &md)?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                subdirs.push((path, rel_path.clone()));
                Kind::Dir { perm }
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| Error::io("read link", &path, e))?;
                let target =
                    target
                        .into_os_string()
                        .into_string()
                        .map_err(|_| Error::Unsupported {
                            path: path.clone(),
                            why: "the symlink's target is not UTF-8".into(),
                        })?;
                Kind::Symlink { perm, target }
            } else if ft.is_file() {
                let first = (md.nlink() > 1)
                    .then(|| inodes.get(&(md.dev(), md.ino())).copied())
                    .flatten();
                if let Some(first) = first {
                    let Node {
                        path: first_path,
                        kind: Kind::File { size, hash, .. },
                        ..
                    } = &nodes[first]
                    else {
                        unreachable!("a recorded first name is a file node");
                    };
                    Kind::File {
                        perm,
                        size: *size,
                        hash: hash.clone(),
                        blobs: Vec::new(),
                        link: Some(first_path.clone()),
                        data: None,
                    }
                } else {
                    if md.nlink() > 1 {
                        inodes.insert((md.dev(), md.ino()), nodes.len());
                    }
                    let (size, hash, blobs, data) = chunk_file(&path, &md, &mut packer)?;
                    Kind::File {
                        perm,
                        size,
                        hash,
                        blobs,
                        link: None,
                        data,
                    }
                }
            } else if let Some(kind) = node::special(&md, perm) {
                kind
            } else {
                return Err(Error::Unsupported {
                    path,
                    why: "not a file, directory, symlink, FIFO, socket or device".into(),
                });
            };
            nodes.push(Node {
                path: rel_path,
                kind,
                meta,
            });
        }
        // Depth-first, in name order: push in reverse so the first
        // subdirectory is walked next. Any order with parents first works.
        stack.extend(subdirs.into_iter().rev());
    }
    packer.close()?;
    Ok(Scanned {
        nodes,
        places: packer.places,
    })
}

/// A chunked file: its size, content hash, blobs and data ranges.
type Chunked = (u64, String, Vec<BlobRef>, Option<Vec<(u64, u64)>>);

/// Read a file once, cutting it into FastCDC chunks: its size, content
/// hash, blob list and (for a sparse file) data ranges; each chunk goes
/// to the packer. A sparse file's data ranges are chunked one by one and
/// its holes hashed as zeros, never read.
fn chunk_file(path: &Path, md: &fs::Metadata, packer: &mut Packer<'_>) -> Result<Chunked> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let ranges = node::data_ranges(&f, md, path)?;
    let mut whole = blake3::Hasher::new();
    let mut blobs = Vec::new();
    let mut size = 0u64;
    // A dense file below the minimum chunk is one chunk: its hash is the
    // chunk's, so it is hashed once.
    let multi = ranges.is_some() || md.len() >= u64::from(CHUNK_MIN);
    let parts = ranges.clone().unwrap_or_else(|| vec![(0, u64::MAX)]);
    for (start, len) in parts {
        if size < start {
            hash_zeros(&mut whole, start - size);
            size = start;
        }
        f.seek(SeekFrom::Start(start))
            .map_err(|e| Error::io("seek", path, e))?;
        let part = (&f).take(len);
        for chunk in StreamCDC::new(part, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX) {
            let chunk = chunk.map_err(|e| Error::io("read", path, std::io::Error::other(e)))?;
            if multi {
                whole.update(&chunk.data);
            }
            let hash = blake3::hash(&chunk.data).to_hex().to_string();
            let len = chunk.length as u64;
            size += len;
            packer.chunk(&hash, &chunk.data, path)?;
            blobs.push(BlobRef { hash, size: len });
        }
    }
    if ranges.is_some() && size < md.len() {
        hash_zeros(&mut whole, md.len() - size);
        size = md.len();
    }
    // A dense file of one chunk hashes to that chunk's hash.
    let hash = match blobs.as_slice() {
        [one] if !multi || (ranges.is_none() && one.size == size) => one.hash.clone(),
        _ => whole.finalize().to_hex().to_string(),
    };
    Ok((size, hash, blobs, ranges))
}

/// Feed `n` zero bytes (a hole) to `h`.
fn hash_zeros(h: &mut blake3::Hasher, mut n: u64) {
    let zeros = [0u8; 64 << 10];
    while n > 0 {
        let k = n.min(zeros.len() as u64) as usize;
        h.update(&zeros[..k]);
        n -= k as u64;
    }
}

/// Publish `bytes` at `root/key` only if nothing is there: written whole
/// and synced under `root/.tmp`, then `link`ed into place (`EEXIST`: the
/// name is taken, `Ok(Some(false))`). `Ok(None)`: this file system has no
/// hard links, so the caller falls back to the service's own write.
fn link_create_only(root: &Path, key: &str, bytes: &[u8]) -> std::io::Result<Option<bool>> {
    use std::io::Write;
    let target = root.join(key);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp_dir = root.join(".tmp");
    fs::create_dir_all(&tmp_dir)?;
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = tmp_dir.join(format!("manifest-{}", crate::keys::hex(&id)));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    let linked = written.and_then(|()| match fs::hard_link(&tmp, &target) {
        Ok(()) => Ok(Some(true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Some(false)),
        Err(e)
            if matches!(
                rustix::io::Errno::from_io_error(&e),
                Some(
                    rustix::io::Errno::PERM
                        | rustix::io::Errno::OPNOTSUPP
                        | rustix::io::Errno::XDEV
                )
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    });
    let _ = fs::remove_file(&tmp);
    if let Some(parent) = target.parent() {
        if matches!(linked, Ok(Some(true))) {
            // The new name durable, as OpenDAL's own writes are synced.
            File::open(parent).and_then(|d| d.sync_all())?;
        }
    }
    linked
}
