//! The format-2 pull's reads: a plan of ranged GETs of packs from the
//! locator, run with bounded concurrency (first for the xattr values
//! stored as blobs, fetched into memory before anything is written, then
//! for the files); each blob decoded, checked
//! against the signed manifest's hash and written at its offsets as it
//! arrives; each file's content hash checked on the way, a sparse file's
//! holes fed as zeros, never read (no second read
//! unless a file's blobs came out of order). A file of one blob (most
//! small files) is made, written and given its metadata by the same
//! thread that decodes its blob, through one descriptor.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};

use fscache::meta::{Given, OnDrop};
use fscache::{ContentHasher, DigestVersion};

use crate::asyncapi::blocking;
use crate::check::decode_frame;
use crate::content;
use crate::error::{Error, Result};
use crate::locator::{distinct_blobs, distinct_blobs_split, plan, Locator, Read, READ_MAX};
use crate::manifest::{Kind, Manifest, XattrValues};
use crate::node::{self, GivenMap};
use crate::push::Tracker;
use crate::remote::Inner;

/// Ranged reads in flight, at most (each up to 8 MiB in memory).
const READS_IN_FLIGHT: usize = 8;

/// One place a distinct blob goes: a file (index into [`Plan::files`]),
/// the blob's position in that file's list, and the byte offset.
#[derive(Clone, Copy)]
struct Dest {
    file: usize,
    pos: usize,
    offset: u64,
}

/// A file being written, and the check of its content hash.
struct FileState {
    path: PathBuf,
    /// Its node in the manifest.
    node: usize,
    /// What it was given of its metadata, once made by its one blob's
    /// write ([`written_whole`]).
    given: Option<Given>,
    /// The manifest's hash of the whole content (the content hash of its
    /// digest's version).
    hash: String,
    /// The file's size (a sparse file's holes are fed to the running
    /// hash as zeros).
    size: u64,
    /// Number of blobs.
    blobs: usize,
    /// Its hash is its one blob's (version 3: made from it), checked as
    /// that blob is decoded: it is
    /// [`written_whole`], not made before.
    checked: bool,
    /// The next blob position the running hash expects; `None` once one
    /// came out of order (then the file is hashed from disk at the end).
    next: Option<usize>,
    /// The offset the running hash is at (a blob further on is preceded
    /// by a hole: zeros).
    fed: u64,
    /// The running hash, made at the first blob and finalized at the
    /// last, so only files being written have one (a version 3 hasher
    /// holds up to a 64 KiB block: one per file of a 50 000-file tree
    /// would be gigabytes).
    hasher: Option<Box<ContentHasher>>,
    /// The running hash's result, once every blob came in order.
    got: Option<blake3::Hash>,
}

/// Everything a read task needs, shared.
struct Plan {
    /// Per distinct blob: hash and size (from the signed manifest).
    wanted: Vec<(String, u64)>,
    /// Per distinct blob: where it goes.
    dests: Vec<Vec<Dest>>,
    files: Vec<Mutex<FileState>>,
    m: Arc<Manifest>,
    /// The version of the manifest's digest and files' hashes.
    version: DigestVersion,
    on_drop: OnDrop,
}

/// Whether a file node is one blob, all of its content: a format-2 pull
/// makes it only when that blob is decoded, writes it and gives it its
/// metadata at once (the other files are made empty first).
pub(crate) fn written_whole(kind: &Kind) -> bool {
    matches!(kind, Kind::File { size, blobs, link: None, data: None, .. }
        if blobs.len() == 1 && blobs[0].size == *size)
}

/// The content checks a manifest's files allow without any data: an
/// empty file has the hash of nothing; in versions 1 and 2 a file of one
/// blob has that blob's hash (in version 3 it is checked as its blob is
/// decoded: whether a block is all zeros is in the bytes), and in version
/// 3 a sparse file without blobs (all hole) the hash of its zeros. A
/// manifest that breaks them lists a tree no pull could build.
pub(crate) fn check_file_hashes(m: &Manifest) -> Result<(), String> {
    let version = m.digest_version();
    let empty = content::of_zeros(version, 0).to_hex();
    for node in &m.nodes {
        if let Kind::File {
            size,
            hash,
            blobs,
            link: None,
            data,
            ..
        } = &node.kind
        {
            let hole;
            let expected = match (blobs.as_slice(), data) {
                ([], None) if *size == 0 => empty.as_str(),
                ([one], None) if one.size == *size && version != DigestVersion::V3 => {
                    one.hash.as_str()
                }
                ([], Some(_)) if version == DigestVersion::V3 => {
                    hole = content::of_zeros(version, *size).to_hex();
                    hole.as_str()
                }
                _ => continue,
            };
            if hash != expected {
                return Err(format!("`{}` does not hash to its content", node.path));
            }
        }
    }
    Ok(())
}

/// Fill the files of `m` under `root` from the packs `loc` points at:
/// those [`written_whole`] are made and given their metadata here (what
/// they were given is returned, by path), the others were made before, of
/// their sizes.
///
/// # Errors
///
/// [`Error::Refused`] for a locator whose plan is refused;
/// [`Error::PackMissing`] when a pack is gone (a repack moved its blobs:
/// the caller reads the locator again); [`Error::CorruptBlob`] when bytes
/// do not decode to the manifest's hash; a request or a write failed.
pub(crate) async fn fill_from_packs(
    inner: &Inner,
    root: &Path,
    m: &Arc<Manifest>,
    loc: &Locator,
    tracker: &Tracker<'_>,
) -> Result<GivenMap> {
    check_file_hashes(m).map_err(|why| Error::refused(&m.name, why))?;
    let wanted = distinct_blobs(m);
    let reads =
        plan(&wanted, loc).map_err(|why| Error::refused(&m.name, format!("its locator: {why}")))?;
    let index: std::collections::HashMap<&str, usize> = wanted
        .iter()
        .enumerate()
        .map(|(i, (h, _))| (*h, i))
        .collect();
    let mut dests: Vec<Vec<Dest>> = vec![Vec::new(); wanted.len()];
    let mut files = Vec::new();
    for (n, node) in m.nodes.iter().enumerate() {
        if let Kind::File {
            size,
            hash,
            blobs,
            link: None,
            data,
            ..
        } = &node.kind
        {
            if blobs.is_empty() {
                continue;
            }
            let file = files.len();
            let offsets = crate::pull::file_offsets(&m.name, data.as_deref(), blobs)?;
            for ((pos, b), offset) in blobs.iter().enumerate().zip(offsets) {
                dests[index[b.hash.as_str()]].push(Dest { file, pos, offset });
            }
            // A sparse file's holes are not in its blobs: they are fed
            // to its running hash as zeros.
            let single = written_whole(&node.kind);
            files.push(Mutex::new(FileState {
                path: root.join(&node.path),
                node: n,
                given: None,
                hash: hash.clone(),
                size: *size,
                checked: single,
                next: (!single).then_some(0),
                fed: 0,
                blobs: blobs.len(),
                hasher: None,
                got: None,
            }));
        }
    }
    // Sizes must agree wherever a blob is listed (the digest covers file
    // sizes, not blob sizes).
    let mut sizes = std::collections::HashMap::new();
    for node in &m.nodes {
        if let Kind::File { blobs, .. } = &node.kind {
            for b in blobs {
                if *sizes.entry(b.hash.as_str()).or_insert(b.size) != b.size {
                    return Err(Error::refused(
                        &m.name,
                        format!("blob {} is listed with two sizes", b.hash),
                    ));
                }
            }
        }
    }
    let shared = Arc::new(Plan {
        wanted: wanted.iter().map(|(h, s)| (h.to_string(), *s)).collect(),
        dests,
        files,
        m: m.clone(),
        version: m.digest_version(),
        on_drop: inner.on_drop,
    });
    futures::stream::iter(reads)
        .map(|r| {
            let shared = shared.clone();
            async move {
                // No copy when the body came in one piece.
                let bytes = read_range(inner, &r).await?;
                let sizes: Vec<u64> = r
                    .blobs
                    .iter()
                    .map(|&(i, _, _)| shared.wanted[i].1)
                    .collect();
                let task = shared.clone();
                blocking(move || decode_read(&task, &r, &bytes)).await?;
                for s in sizes {
                    tracker.done(s);
                }
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(READS_IN_FLIGHT.min(inner.concurrency))
        .try_collect::<()>()
        .await?;
    let shared = Arc::into_inner(shared).expect("every read task is done");
    let mut files = shared.files;
    let mut given = GivenMap::new();
    for f in &mut files {
        let f = f.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = f.given.take() {
            given.insert(m.nodes[f.node].path.clone(), g);
        }
    }
    let (name, version) = (m.name.clone(), m.digest_version());
    blocking(move || finish_hashes(&name, version, files)).await?;
    Ok(given)
}

/// One ranged read of a pack: all of its bytes, or [`Error::PackMissing`]
/// when the pack is gone or shorter (a repack moved its blobs).
async fn read_range(inner: &Inner, r: &Read) -> Result<Vec<u8>> {
    let missing = |e: opendal::Error| {
        if e.kind() == opendal::ErrorKind::NotFound {
            Error::PackMissing { key: r.key.clone() }
        } else {
            Error::remote("read", &r.key, e)
        }
    };
    let expected = r.end - r.start;
    // Into one buffer, as the body comes: the frames are freed as they are
    // copied, so a read holds its bytes once (with `read` and `to_bytes`,
    // twice: the frames and their concatenation). Sized up front to at
    // most a merged read's limit: a larger range is one frame whose size
    // an unsigned locator claims, and it grows only with what arrives.
    let mut bytes = Vec::with_capacity(expected.min(READ_MAX) as usize);
    let reader = inner.op.reader_with(&r.key).await.map_err(missing)?;
    reader
        .read_into(&mut bytes, r.start..r.end)
        .await
        .map_err(missing)?;
    if bytes.len() as u64 != expected {
        return Err(Error::PackMissing {
            key: format!("{} (only {} of {expected} bytes)", r.key, bytes.len()),
        });
    }
    Ok(bytes)
}

/// Fetch and check the values of the xattrs `m` stores as blobs, by
/// hash: from the packs `loc` points at (format 2: the same plan of
/// ranged reads, bounded the same way, as the files' blobs), or as
/// objects of their own (format 1). Reports to `tracker` the blobs no
/// file has (the others are counted as the files are filled). Nothing is
/// written: a pull calls this before it makes anything.
///
/// # Errors
///
/// [`Error::Refused`] for a locator that does not fit the manifest;
/// [`Error::PackMissing`]; [`Error::CorruptBlob`] when bytes do not
/// decode to the manifest's hash; a failed request.
pub(crate) async fn fetch_xattr_values(
    inner: &Inner,
    m: &Manifest,
    loc: Option<&Locator>,
    tracker: &Tracker<'_>,
) -> Result<XattrValues> {
    let (all, files) = distinct_blobs_split(m);
    let index: std::collections::HashMap<&str, usize> =
        all.iter().enumerate().map(|(i, (h, _))| (*h, i)).collect();
    let wanted = m.xattr_blobs();
    let report = |hash: &str, size: u64| {
        if index.get(hash).is_some_and(|&i| i >= files) {
            tracker.done(size);
        }
    };
    let corrupt = |hash: &str, why: String| Error::CorruptBlob {
        hash: hash.into(),
        why,
    };
    let got: Vec<(String, Vec<u8>)> = match loc {
        None => {
            let owned: Vec<(String, u64)> =
                wanted.iter().map(|&(h, s)| (h.to_string(), s)).collect();
            futures::stream::iter(owned)
                .map(|(hash, size)| async move {
                    let key = crate::remote::blob_key(&hash);
                    let Some(frame) = inner.read(&key).await? else {
                        return Err(corrupt(&hash, "missing from the remote".into()));
                    };
                    let data = blocking({
                        let hash = hash.clone();
                        move || {
                            decode_frame(&hash, size, &frame)
                                .map_err(|why| Error::CorruptBlob { hash, why })
                        }
                    })
                    .await?;
                    report(&hash, size);
                    Ok::<_, Error>((hash, data))
                })
                .buffer_unordered(inner.concurrency)
                .try_collect()
                .await?
        }
        Some(loc) => {
            if loc.blobs.len() != all.len() {
                return Err(Error::refused(
                    &m.name,
                    format!(
                        "its locator: it places {} blobs, the manifest has {}",
                        loc.blobs.len(),
                        all.len()
                    ),
                ));
            }
            let at: Vec<usize> = wanted.iter().map(|(h, _)| index[h]).collect();
            let reads = plan(&wanted, &loc.subset(&at))
                .map_err(|why| Error::refused(&m.name, format!("its locator: {why}")))?;
            let wanted = &wanted;
            let per_read: Vec<Vec<(String, Vec<u8>)>> = futures::stream::iter(reads)
                .map(|r| async move {
                    let bytes = read_range(inner, &r).await?;
                    let blobs: Vec<(String, u64, u64, u64)> = r
                        .blobs
                        .iter()
                        .map(|&(i, at, len)| (wanted[i].0.to_string(), wanted[i].1, at, len))
                        .collect();
                    let values = blocking(move || {
                        blobs
                            .into_iter()
                            .map(|(hash, size, at, len)| {
                                let frame = &bytes[at as usize..(at + len) as usize];
                                match decode_frame(&hash, size, frame) {
                                    Ok(data) => Ok((hash, data)),
                                    Err(why) => Err(Error::CorruptBlob { hash, why }),
                                }
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                    .await?;
                    for (hash, data) in &values {
                        report(hash, data.len() as u64);
                    }
                    Ok::<_, Error>(values)
                })
                .buffer_unordered(READS_IN_FLIGHT.min(inner.concurrency))
                .try_collect()
                .await?;
            per_read.into_iter().flatten().collect()
        }
    };
    Ok(got.into_iter().collect())
}

/// Decode, check and write every blob of one read.
fn decode_read(plan: &Plan, r: &Read, bytes: &[u8]) -> Result<()> {
    let mut z =
        zstd::bulk::Decompressor::new().map_err(|e| Error::io("start zstd for", &r.key, e))?;
    let mut done = HashSet::new();
    for &(i, at, len) in &r.blobs {
        if !done.insert(i) {
            continue;
        }
        let (hash, size) = &plan.wanted[i];
        let corrupt = |why: String| Error::CorruptBlob {
            hash: hash.clone(),
            why,
        };
        let frame = &bytes[at as usize..(at + len) as usize];
        let cap = usize::try_from(*size).map_err(|_| corrupt("too large".into()))?;
        let data = z
            .decompress(frame, cap)
            .map_err(|e| corrupt(format!("does not decompress to {size} bytes: {e}")))?;
        if data.len() as u64 != *size {
            return Err(corrupt(format!("{} bytes, expected {size}", data.len())));
        }
        let actual = blake3::hash(&data);
        if actual.to_hex().as_str() != hash {
            return Err(corrupt(format!(
                "the bytes its locator points at hash to {}",
                actual.to_hex()
            )));
        }
        for d in &plan.dests[i] {
            let mut f = plan.files[d.file].lock().unwrap_or_else(|p| p.into_inner());
            if f.checked {
                // Its hash: its one blob's, or (version 3) made from it.
                let got = fscache::ContentHasher::of_whole(plan.version, &data, &actual);
                if got.to_hex().as_str() != f.hash {
                    return Err(Error::refused(
                        &plan.m.name,
                        format!(
                            "`{}` built from its blob hashes to {}, not {}",
                            f.path.display(),
                            got.to_hex(),
                            f.hash
                        ),
                    ));
                }
                // Made, written and given its metadata through one
                // descriptor (after the content, which would clear
                // set-ID bits and capabilities).
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&f.path)
                    .map_err(|e| Error::io("create", &f.path, e))?;
                file.write_all_at(&data, d.offset)
                    .map_err(|e| Error::io("write", &f.path, e))?;
                let node = &plan.m.nodes[f.node];
                f.given = Some(node::restore_file(
                    &file,
                    &f.path,
                    &node.kind,
                    &node.meta,
                    plan.on_drop,
                )?);
                continue;
            }
            let file = OpenOptions::new()
                .write(true)
                .open(&f.path)
                .map_err(|e| Error::io("open", &f.path, e))?;
            file.write_all_at(&data, d.offset)
                .map_err(|e| Error::io("write", &f.path, e))?;
            let f = &mut *f;
            if f.next == Some(d.pos) && d.offset >= f.fed {
                let h = f
                    .hasher
                    .get_or_insert_with(|| Box::new(ContentHasher::new(plan.version)));
                h.zeros(d.offset - f.fed);
                h.update(&data);
                f.fed = d.offset + data.len() as u64;
                f.next = Some(d.pos + 1);
                if d.pos + 1 == f.blobs {
                    let mut h = f.hasher.take().expect("just made");
                    h.zeros(f.size.saturating_sub(f.fed));
                    f.got = Some(h.finalize());
                }
            } else {
                f.next = None;
                f.hasher = None;
            }
        }
    }
    Ok(())
}

/// Check the content hash of every file not [`written_whole`]: from the
/// running hash when its blobs came in order, else from disk (its holes
/// skipped).
fn finish_hashes(name: &str, version: DigestVersion, files: Vec<Mutex<FileState>>) -> Result<()> {
    for f in files {
        let f = f.into_inner().unwrap_or_else(|p| p.into_inner());
        if f.checked {
            continue; // its one blob's hash, checked as it was decoded
        }
        let got = match f.got {
            Some(got) if f.next == Some(f.blobs) => got,
            _ => content::of_file(version, &f.path)?,
        };
        if got.to_hex().as_str() != f.hash {
            return Err(Error::refused(
                name,
                format!(
                    "`{}` built from its blobs hashes to {}, not {}",
                    f.path.display(),
                    got.to_hex(),
                    f.hash
                ),
            ));
        }
    }
    Ok(())
}
