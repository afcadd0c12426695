//! `push`: read a local entry under its read lock, upload the blobs the
//! remote lacks, publish the manifest last.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use fastcdc::v2020::StreamCDC;
use fscache::{Digest, FsCache};
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::manifest::{BlobRef, Kind, Manifest, Node, FORMAT, VERSION};
use crate::node;
use crate::remote::{blob_key, manifest_key, Access, Inner, Remote};

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
    /// Bytes this push uploaded: compressed blobs plus the manifest.
    pub bytes_uploaded: u64,
    /// Uncompressed bytes of the tree's distinct blobs.
    pub bytes_total: u64,
}

/// How far a transfer is, as [`Remote::push_with_progress`] and
/// [`Remote::pull_with_progress`] report it: after each distinct blob is
/// done (uploaded, found on the remote, or fetched and written).
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

/// A distinct blob and where its bytes are in the local entry.
struct Source {
    hash: String,
    path: PathBuf,
    offset: u64,
    size: u64,
}

impl Remote {
    /// Push the local entry `name` of `cache` to the remote. Holds the
    /// entry's read lock for the whole push, so it cannot be evicted or
    /// changed meanwhile. Uploads, in parallel, only the blobs the remote
    /// lacks (known from one listing of the remote's blobs for a tree of
    /// 64 blobs or more, when that costs under a tenth of the `stat`s it
    /// saves; else one `stat` each), then publishes the manifest, signed
    /// when a signing key is set, create-only where the service supports
    /// it.
    /// `Ok(None)`: the cache has no such entry.
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`]; an invalid name; the tree holds a non-UTF-8
    /// name, symlink target or xattr name ([`Error::Unsupported`]); reading it or
    /// a request failed. A failed push never publishes a manifest, and the
    /// local cache is untouched.
    pub fn push(&self, cache: &FsCache, name: &str) -> Result<Option<PushReport>> {
        self.push_with_progress(cache, name, &|_| {})
    }

    /// [`Remote::push`], calling `progress` after each distinct blob is
    /// uploaded or found on the remote (from the remote's threads: keep it
    /// short).
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
        if self.inner.access == Access::ReadOnly {
            return Err(Error::ReadOnly);
        }
        let Some(entry) = cache.load(name)? else {
            return Ok(None);
        };
        let (nodes, sources) = scan(entry.path())?;
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            name: name.into(),
            digest: String::new(),
            created,
            nodes,
        };
        let digest = manifest.tree_digest().map_err(|why| Error::Unsupported {
            path: entry.path().into(),
            why,
        })?;
        manifest.digest = digest.to_string();
        let sealed = manifest.seal(self.inner.signing_key.as_ref());
        let mut report = PushReport {
            outcome: Pushed::Published,
            digest,
            nodes: manifest.nodes.len(),
            blobs: sources.len(),
            blobs_uploaded: 0,
            bytes_uploaded: 0,
            bytes_total: sources.iter().map(|s| s.size).sum(),
        };
        let inner = &self.inner;
        inner.rt.block_on(async {
            let mkey = manifest_key(name);
            if inner.exists(&mkey).await? {
                report.outcome = Pushed::Exists;
                inner.touch(name).await;
                return Ok(());
            }
            // Before looking for any blob: name them all in an intent, so
            // a prune running meanwhile keeps the ones found already there.
            let hashes: Vec<&str> = sources.iter().map(|s| s.hash.as_str()).collect();
            let (intent, n) = inner.begin_intent(&hashes).await?;
            report.bytes_uploaded += n;
            let tracker = Tracker::new(report.blobs, report.bytes_total, progress);
            let result = match inner.wait_for_prunes().await {
                Ok(()) => upload(inner, sources, &mkey, sealed, &mut report, &tracker).await,
                Err(e) => Err(e),
            };
            if result.is_ok() {
                inner.touch(name).await;
            }
            inner.end_intent(&intent).await;
            result
        })?;
        drop(entry);
        Ok(Some(report))
    }
}

/// Upload the blobs the remote lacks, then publish the manifest.
async fn upload(
    inner: &Inner,
    sources: Vec<Source>,
    mkey: &str,
    sealed: Vec<u8>,
    report: &mut PushReport,
    tracker: &Tracker<'_>,
) -> Result<()> {
    let sent = AtomicU64::new(0);
    let uploaded = AtomicU64::new(0);
    let present = inner.listed_blobs(sources.len()).await?;
    futures::stream::iter(sources)
        .map(|s| {
            let (sent, uploaded, present) = (&sent, &uploaded, &present);
            async move {
                let key = blob_key(&s.hash);
                let there = match present {
                    Some(listed) => listed.contains(&s.hash),
                    None => inner.exists(&key).await?,
                };
                let size = s.size;
                if there {
                    tracker.done(size);
                    return Ok(());
                }
                let data = tokio::task::spawn_blocking(move || read_blob(&s))
                    .await
                    .map_err(|e| Error::io("read", &key, std::io::Error::other(e)))??;
                let n = data.len() as u64;
                inner
                    .op
                    .write(&key, data)
                    .await
                    .map_err(|e| Error::remote("write", &key, e))?;
                sent.fetch_add(n, Ordering::Relaxed);
                uploaded.fetch_add(1, Ordering::Relaxed);
                tracker.done(size);
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(inner.concurrency)
        .try_collect::<()>()
        .await?;
    report.blobs_uploaded = uploaded.into_inner() as usize;
    report.bytes_uploaded += sent.into_inner();
    // Last: the manifest, once every blob it names is stored.
    let n = sealed.len() as u64;
    let conditional = inner.op.info().full_capability().write_with_if_not_exists;
    let written = inner
        .op
        .write_with(mkey, sealed)
        .if_not_exists(conditional)
        .await;
    match written {
        Ok(_) => report.bytes_uploaded += n,
        Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => {
            report.outcome = Pushed::Exists;
        }
        Err(e) => return Err(Error::remote("write", mkey, e)),
    }
    Ok(())
}

/// A tree of at least this many blobs asks the remote's listing which it
/// has, instead of one `stat` per blob.
const LIST_FROM: usize = 64;
/// Listing stops (and the push `stat`s each blob instead) past this many
/// listed blobs per blob of the tree: one listed page (1000 keys on S3)
/// then costs at most a tenth of the `stat`s it replaces.
const LISTED_PER_BLOB: usize = 100;

impl Inner {
    /// The hashes of every blob on the remote, from one listing, if that
    /// is cheaper than `wanted` `stat`s: `None` for a small tree, a
    /// service that cannot list, or a remote so large that the listing
    /// would cost more.
    async fn listed_blobs(&self, wanted: usize) -> Result<Option<HashSet<String>>> {
        let cap = self.op.info().full_capability();
        if wanted < LIST_FROM || !(cap.list && cap.list_with_recursive) {
            return Ok(None);
        }
        let prefix = "v1/blobs/";
        let mut lister = self
            .op
            .lister_with(prefix)
            .recursive(true)
            .await
            .map_err(|e| Error::remote("list", prefix, e))?;
        let mut listed = HashSet::new();
        while let Some(e) = lister
            .try_next()
            .await
            .map_err(|e| Error::remote("list", prefix, e))?
        {
            if let Some(hash) = e.path().rsplit('/').next().filter(|h| !h.is_empty()) {
                listed.insert(hash.to_string());
            }
            if listed.len() > wanted.saturating_mul(LISTED_PER_BLOB) {
                return Ok(None);
            }
        }
        Ok(Some(listed))
    }
}

/// Read a blob's bytes from the entry, check them against its hash (the
/// entry is read-locked, so a change means damage), compress them.
fn read_blob(s: &Source) -> Result<Vec<u8>> {
    let f = File::open(&s.path).map_err(|e| Error::io("open", &s.path, e))?;
    let mut buf = vec![0u8; s.size as usize];
    f.read_exact_at(&mut buf, s.offset)
        .map_err(|e| Error::io("read", &s.path, e))?;
    if blake3::hash(&buf).to_hex().as_str() != s.hash {
        return Err(Error::io(
            "read",
            &s.path,
            std::io::Error::other("the file changed while it was pushed"),
        ));
    }
    zstd::bulk::compress(&buf, ZSTD_LEVEL).map_err(|e| Error::io("compress", &s.path, e))
}

/// Walk the tree at `root`: its nodes (parents first, names sorted) and
/// its distinct blobs with where to read them.
fn scan(root: &Path) -> Result<(Vec<Node>, Vec<Source>)> {
    let mut nodes = Vec::new();
    let mut sources: Vec<Source> = Vec::new();
    let mut seen_blobs: HashMap<String, ()> = HashMap::new();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
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
                    .then(|| inodes.get(&(md.dev(), md.ino())).cloned())
                    .flatten();
                if let Some(first) = first {
                    let Some(Node {
                        kind: Kind::File { size, hash, .. },
                        ..
                    }) = nodes.iter().find(|n: &&Node| n.path == first)
                    else {
                        unreachable!("a recorded first name is a file node");
                    };
                    Kind::File {
                        perm,
                        size: *size,
                        hash: hash.clone(),
                        blobs: Vec::new(),
                        link: Some(first),
                        data: None,
                    }
                } else {
                    if md.nlink() > 1 {
                        inodes.insert((md.dev(), md.ino()), rel_path.clone());
                    }
                    let (size, hash, blobs, data) =
                        chunk_file(&path, &md, &mut sources, &mut seen_blobs)?;
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
    Ok((nodes, sources))
}

/// A chunked file: its size, content hash, blobs and data ranges.
type Chunked = (u64, String, Vec<BlobRef>, Option<Vec<(u64, u64)>>);

/// Cut a file into FastCDC chunks: its size, content hash, blob list and
/// (for a sparse file) data ranges; each chunk not seen before becomes a
/// source to upload. A sparse file's data ranges are chunked one by one
/// and its holes hashed as zeros, never read.
fn chunk_file(
    path: &Path,
    md: &fs::Metadata,
    sources: &mut Vec<Source>,
    seen: &mut HashMap<String, ()>,
) -> Result<Chunked> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let ranges = node::data_ranges(&f, md, path)?;
    let mut whole = blake3::Hasher::new();
    let mut blobs = Vec::new();
    let mut size = 0u64;
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
            whole.update(&chunk.data);
            let hash = blake3::hash(&chunk.data).to_hex().to_string();
            let len = chunk.length as u64;
            size += len;
            if seen.insert(hash.clone(), ()).is_none() {
                sources.push(Source {
                    hash: hash.clone(),
                    path: path.to_path_buf(),
                    offset: start + chunk.offset,
                    size: len,
                });
            }
            blobs.push(BlobRef { hash, size: len });
        }
    }
    if ranges.is_some() && size < md.len() {
        hash_zeros(&mut whole, md.len() - size);
        size = md.len();
    }
    Ok((size, whole.finalize().to_hex().to_string(), blobs, ranges))
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
