//! A push's one read of the tree: walk it (parents first, names sorted),
//! cut each file into FastCDC chunks, hash and compress them on a few
//! worker threads, and pack the chunks the remote lacks in tree order,
//! handing each full pack to the uploader; then the xattr values too
//! large to be inline, packed the same way after the files' chunks.
//!
//! Three parts run at once: the walker (directories, `stat`, metadata,
//! hard links) hands each file to the workers and, in tree order, the
//! channel of its chunks to the packer (the calling thread). A worker
//! reads a file once: it cuts, hashes and (unless the remote's index has
//! the chunk) compresses it with its own reused zstd context. The packer
//! takes each file's chunks in tree order, so the packs, the manifest and
//! the locator do not depend on which worker was faster. At most
//! [`FILES_AHEAD`] files are ahead of the packer, each with at most
//! [`CHUNKS_AHEAD`] chunks waiting.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use fastcdc::v2020::FastCDC;
use fscache::ContentHasher;

use crate::error::{Error, Result};
use crate::index::Known;
use crate::manifest::{xattr_blobs, BlobRef, Kind, Node, XattrValues};
use crate::node;
use crate::pack::PackBuilder;
use crate::push::{
    Closed, Place, Scanned, CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, DIGEST_VERSION, ZSTD_LEVEL,
};

/// Files handed to the workers ahead of the one the packer is at.
const FILES_AHEAD: usize = 16;
/// Chunks of one file waiting for the packer, at most (each up to
/// [`CHUNK_MAX`] compressed).
const CHUNKS_AHEAD: usize = 4;
/// Worker threads, at most.
const WORKERS_MAX: usize = 8;

/// One chunk of a file, as a worker hands it to the packer.
struct Chunk {
    hash: String,
    size: u64,
    body: Body,
}

/// What the packer gets of a chunk's bytes.
enum Body {
    /// Nothing: the remote's index lists the chunk.
    Known,
    /// Its zstd frame.
    Frame(Vec<u8>),
    /// Its bytes, uncompressed: another file of the tree has the same
    /// chunk and its worker compressed it; the packer compresses this
    /// copy only if it comes first in tree order.
    Raw(Vec<u8>),
}

/// A worker's message about one file.
enum Msg {
    Chunk(Chunk),
    /// The file is read: its size, hash, blobs and data ranges.
    Done(Result<Chunked>),
}

/// A file for a worker: its path and metadata, and where its chunks go.
struct Job {
    path: PathBuf,
    md: fs::Metadata,
    tx: SyncSender<Msg>,
}

/// The packer's state: the blobs seen so far and the pack being filled.
struct Packer<'a> {
    known: &'a Known,
    seen: HashSet<String>,
    places: Vec<(Place, u64)>,
    current: PackBuilder,
    current_bytes: u64,
    slot: usize,
    tx: tokio::sync::mpsc::Sender<Closed>,
    /// For a [`Body::Raw`] chunk that comes first (rare: made on first use).
    zstd: Option<zstd::bulk::Compressor<'static>>,
    target: usize,
}

impl Packer<'_> {
    /// One chunk of a file: a new distinct blob is placed (found in the
    /// index, or its frame added to the current pack).
    fn chunk(&mut self, c: Chunk, path: &Path) -> Result<()> {
        if !self.seen.insert(c.hash.clone()) {
            return Ok(());
        }
        if let Some(loc) = self.known.get(&c.hash) {
            self.places.push((Place::Reused(loc.clone()), c.size));
            return Ok(());
        }
        let frame = match c.body {
            Body::Frame(f) => f,
            Body::Raw(data) => {
                let z = match &mut self.zstd {
                    Some(z) => z,
                    None => self.zstd.insert(compressor(path)?),
                };
                compress(z, &data, &mut Vec::new(), path)?
            }
            Body::Known => unreachable!("a chunk sent as known is in the index"),
        };
        let (offset, length) = self.current.add(&c.hash, c.size, &frame);
        self.current_bytes += c.size;
        self.places.push((
            Place::New {
                slot: self.slot,
                offset,
                length,
            },
            c.size,
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

fn compressor(path: &Path) -> Result<zstd::bulk::Compressor<'static>> {
    zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| Error::io("start zstd for", path, e))
}

/// `data` as one zstd frame, in a buffer of its size (`scratch` is reused
/// for the compression itself).
fn compress(
    z: &mut zstd::bulk::Compressor<'static>,
    data: &[u8],
    scratch: &mut Vec<u8>,
    path: &Path,
) -> Result<Vec<u8>> {
    scratch.clear();
    scratch.reserve(zstd::zstd_safe::compress_bound(data.len()));
    z.compress_to_buffer(data, scratch)
        .map_err(|e| Error::io("compress", path, e))?;
    Ok(scratch.as_slice().to_vec())
}

/// The error a stopped push's threads return (never the push's own: the
/// one that stopped it is).
fn stopped() -> Error {
    Error::io(
        "read",
        "the tree",
        std::io::Error::other("the push stopped"),
    )
}

/// Sets the flag when dropped: the packer's way of telling the walker
/// and workers to stop, however it returns.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Walk the tree at `root` (parents first, names sorted) and read each
/// file once, packing the chunks `known` lacks.
pub(crate) fn scan(
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
        zstd: None,
    };
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, WORKERS_MAX);
    let stop = AtomicBool::new(false);
    let claimed = Mutex::new(HashSet::new());
    let (job_tx, job_rx) = sync_channel::<Job>(FILES_AHEAD);
    let job_rx = Mutex::new(job_rx);
    let (order_tx, order_rx) = sync_channel::<(usize, Receiver<Msg>)>(FILES_AHEAD);
    std::thread::scope(|s| {
        let walker = s.spawn(|| walk(root, &stop, job_tx, order_tx));
        for _ in 0..workers {
            s.spawn(|| work(known, &claimed, &stop, &job_rx));
        }
        let packed = {
            let _stop = StopOnDrop(&stop);
            pack_in_order(&mut packer, &order_rx)
        };
        drop(order_rx);
        let walked = walker
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        // The walker's error first: it stopped the packer by ending the
        // order channel, and a packer that ended early is always an error.
        let (mut nodes, links, xattr_values) = walked?;
        let files = packed?;
        // The xattrs' blobs, after every file's: the locator's order
        // (`distinct_blobs`). One a file has too is placed already.
        for (hash, size) in xattr_blobs(&nodes) {
            let data = xattr_values
                .get(hash)
                .cloned()
                .expect("the walker keeps the bytes of every xattr blob it names");
            let chunk = Chunk {
                hash: hash.to_string(),
                size,
                body: Body::Raw(data),
            };
            packer.chunk(chunk, Path::new("an xattr value"))?;
        }
        packer.close()?;
        for (i, chunked) in files {
            let Kind::File {
                size,
                hash,
                blobs,
                data,
                ..
            } = &mut nodes[i].kind
            else {
                unreachable!("a job is a file node");
            };
            (*size, *hash, *blobs, *data) = chunked;
        }
        // A hard link's later names: the first name's size and hash.
        for (i, first) in links {
            let (first_size, first_hash) = match &nodes[first].kind {
                Kind::File { size, hash, .. } => (*size, hash.clone()),
                _ => unreachable!("a recorded first name is a file node"),
            };
            if let Kind::File { size, hash, .. } = &mut nodes[i].kind {
                (*size, *hash) = (first_size, first_hash);
            }
        }
        Ok(Scanned {
            nodes,
            places: std::mem::take(&mut packer.places),
            xattr_values,
        })
    })
}

/// The packer's loop: each file's chunks, in tree order.
fn pack_in_order(
    packer: &mut Packer<'_>,
    order: &Receiver<(usize, Receiver<Msg>)>,
) -> Result<Vec<(usize, Chunked)>> {
    let mut files = Vec::new();
    // Ends when the walker is done (or failed: then its error is the
    // push's).
    for (node, rx) in order.iter() {
        loop {
            match rx.recv() {
                Ok(Msg::Chunk(c)) => packer.chunk(c, Path::new("the tree"))?,
                Ok(Msg::Done(r)) => {
                    files.push((node, r?));
                    break;
                }
                // A worker never drops a job unanswered unless stopped.
                Err(_) => return Err(stopped()),
            }
        }
    }
    Ok(files)
}

/// A worker: read each file it is handed, sending its chunks and result.
fn work(
    known: &Known,
    claimed: &Mutex<HashSet<String>>,
    stop: &AtomicBool,
    jobs: &Mutex<Receiver<Job>>,
) {
    let mut zstd = None;
    let mut buf = Vec::new();
    let mut scratch = Vec::new();
    loop {
        let job = match jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // Stopped: drop the job unanswered, but keep taking jobs until
        // the walker stops, so it never waits on a full queue.
        if stop.load(Ordering::Relaxed) {
            continue;
        }
        let tx = &job.tx;
        let path = &job.path;
        let mut emit = |hash: String, data: &[u8]| -> Result<()> {
            let body = if known.contains_key(&hash) {
                Body::Known
            } else if claimed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(hash.clone())
            {
                let z = match &mut zstd {
                    Some(z) => z,
                    None => zstd.insert(compressor(path)?),
                };
                Body::Frame(compress(z, data, &mut scratch, path)?)
            } else {
                Body::Raw(data.to_vec())
            };
            tx.send(Msg::Chunk(Chunk {
                hash,
                size: data.len() as u64,
                body,
            }))
            .map_err(|_| stopped())
        };
        let r = chunk_file(path, &job.md, &mut buf, &mut emit);
        // Refused: the packer stopped.
        let _ = tx.send(Msg::Done(r));
    }
}

/// The walker: the nodes in tree order (files without their content yet)
/// and the hard links' later names with their first; each file's job goes
/// to the workers, and its channel, in order, to the packer.
fn walk(
    root: &Path,
    stop: &AtomicBool,
    jobs: SyncSender<Job>,
    order: SyncSender<(usize, Receiver<Msg>)>,
) -> Result<Walked> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut links: Vec<(usize, usize)> = Vec::new();
    let mut inodes: HashMap<(u64, u64), usize> = HashMap::new();
    let mut xattr_values = XattrValues::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        if stop.load(Ordering::Relaxed) {
            return Err(stopped());
        }
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
            let meta = node::capture(&path, &md, &mut xattr_values)?;
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
                let link = match first {
                    Some(first) => {
                        links.push((nodes.len(), first));
                        Some(nodes[first].path.clone())
                    }
                    None => {
                        if md.nlink() > 1 {
                            inodes.insert((md.dev(), md.ino()), nodes.len());
                        }
                        let (tx, rx) = sync_channel(CHUNKS_AHEAD);
                        // Its place in the packer's order first, then the
                        // job: a worker never waits on a file the packer
                        // will not reach.
                        let node = nodes.len();
                        order.send((node, rx)).map_err(|_| stopped())?;
                        jobs.send(Job { path, md, tx }).map_err(|_| stopped())?;
                        None
                    }
                };
                // Filled in once read (a later name: from the first).
                Kind::File {
                    perm,
                    size: 0,
                    hash: String::new(),
                    blobs: Vec::new(),
                    link,
                    data: None,
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
    Ok((nodes, links, xattr_values))
}

/// What the walker found: the nodes in tree order, each hard link's
/// later name with its first (node indexes), and the bytes of the xattr
/// values too large to be inline.
type Walked = (Vec<Node>, Vec<(usize, usize)>, XattrValues);

/// A chunked file: its size, content hash, blobs and data ranges.
type Chunked = (u64, String, Vec<BlobRef>, Option<Vec<(u64, u64)>>);

/// Read a file once, cutting it into FastCDC chunks: its size, content
/// hash (of [`DIGEST_VERSION`]), blob list and (for a sparse file) data
/// ranges; each chunk and its hash go to `emit`. A sparse file's data
/// ranges are chunked one by one and its holes fed to the content hash
/// as zeros, never read (in version 3 a hole costs nothing to hash).
/// `buf` is reused from file to file.
fn chunk_file(
    path: &Path,
    md: &fs::Metadata,
    buf: &mut Vec<u8>,
    emit: &mut dyn FnMut(String, &[u8]) -> Result<()>,
) -> Result<Chunked> {
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let ranges = node::data_ranges(&f, md, path)?;
    let mut whole = ContentHasher::new(DIGEST_VERSION);
    let mut blobs = Vec::new();
    let mut size = 0u64;
    // A dense file below the minimum chunk is one chunk: its content hash
    // is made from the chunk's hash, so it is hashed once.
    let multi = ranges.is_some() || md.len() >= u64::from(CHUNK_MIN);
    let mut single = None;
    // A dense file is read to its size (an entry is not written while
    // read-locked), so no read is spent to find its end.
    let parts = ranges.clone().unwrap_or_else(|| vec![(0, md.len())]);
    let max = CHUNK_MAX as usize;
    if buf.len() < 2 * max {
        buf.resize(2 * max, 0);
    }
    for (start, len) in parts {
        if size < start {
            whole.zeros(start - size);
            size = start;
        }
        // `buf[lo..hi]` is read and not yet cut; a cut looks at up to
        // CHUNK_MAX bytes, so the buffer is refilled below that.
        let (mut pos, end) = (start, start.saturating_add(len));
        let (mut lo, mut hi, mut eof) = (0usize, 0usize, false);
        loop {
            if !eof && hi - lo < max {
                if lo >= max {
                    buf.copy_within(lo..hi, 0);
                    (lo, hi) = (0, hi - lo);
                }
                while !eof && hi < buf.len() {
                    let want = ((buf.len() - hi) as u64).min(end - pos) as usize;
                    if want == 0 {
                        eof = true;
                        break;
                    }
                    let n = match f.read_at(&mut buf[hi..hi + want], pos) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(Error::io("read", path, e)),
                    };
                    eof = n == 0 || pos + n as u64 == end;
                    hi += n;
                    pos += n as u64;
                }
            }
            if lo == hi {
                break;
            }
            let (_, cut) =
                FastCDC::new(&buf[lo..hi], CHUNK_MIN, CHUNK_AVG, CHUNK_MAX).cut(0, hi - lo);
            let chunk = &buf[lo..lo + cut];
            lo += cut;
            let hash = blake3::hash(chunk);
            if multi {
                whole.update(chunk);
            } else {
                single = Some(fscache::ContentHasher::of_whole(
                    DIGEST_VERSION,
                    chunk,
                    &hash,
                ));
            }
            let hash = hash.to_hex().to_string();
            let n = chunk.len() as u64;
            size += n;
            blobs.push(BlobRef {
                hash: hash.clone(),
                size: n,
            });
            emit(hash, chunk)?;
        }
    }
    if ranges.is_some() && size < md.len() {
        whole.zeros(md.len() - size);
        size = md.len();
    }
    // A dense file below CHUNK_MIN is read to its size, so it is one
    // chunk (`single`) or empty (nothing fed to `whole`).
    let hash = single.unwrap_or_else(|| whole.finalize());
    Ok((size, hash.to_hex().to_string(), blobs, ranges))
}
