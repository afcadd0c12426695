//! A push's one read of the tree: walk it (parents first, names sorted),
//! cut each file into FastCDC chunks, and pack the chunks the remote
//! lacks, handing each full pack to the uploader.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use fastcdc::v2020::StreamCDC;

use crate::error::{Error, Result};
use crate::index::Known;
use crate::manifest::{BlobRef, Kind, Node};
use crate::node;
use crate::pack::PackBuilder;
use crate::push::{Closed, Place, Scanned, CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, ZSTD_LEVEL};

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
