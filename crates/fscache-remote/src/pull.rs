//! `pull` and `load_or_pull`: fetch a manifest, check it, fetch and check
//! its blobs, build the tree in a `store` guard, check the tree's digest,
//! commit.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{symlink, DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use fscache::meta::OnDrop;
use fscache::{Entry, FsCache, Obtained};
use futures::{StreamExt, TryStreamExt};

use crate::asyncapi::blocking;
use crate::error::{Error, Result};
use crate::fetch::{fetch_xattr_values, fill_from_packs, written_whole};
use crate::locator::Locator;
use crate::manifest::{blob_offsets, digest_dir, Kind, Manifest};
use crate::node::{self, GivenMap};
use crate::push::{Progress, Tracker};
use crate::remote::{blob_key, manifest_key, Inner, Remote};

/// What [`Remote::load_or_pull`] found.
#[derive(Debug)]
#[must_use = "the entry is released as soon as this drops"]
pub enum ReadThrough {
    /// A local hit, read-locked; the remote was not asked.
    Local(Entry),
    /// Pulled from the remote and committed locally ([`Obtained::Built`]),
    /// or committed by a racing writer first ([`Obtained::Hit`]), or
    /// pulled but not kept by the cache ([`Obtained::Uncached`]: too large,
    /// no space).
    Pulled(Obtained),
    /// Neither has it. `remote_error` says why the remote could not
    /// answer, when it failed rather than lacked the name (down, timed
    /// out, a refused manifest, a corrupt blob): log it, do not fail the
    /// build on it.
    Miss {
        /// The remote's failure, if any.
        remote_error: Option<Error>,
    },
}

impl ReadThrough {
    /// The content's directory, unless a miss.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ReadThrough::Local(e) => Some(e.path()),
            ReadThrough::Pulled(o) => Some(o.path()),
            ReadThrough::Miss { .. } => None,
        }
    }
}

impl Remote {
    /// Pull the entry `name` from the remote into `cache` and hand it back
    /// read-locked. `Ok(None)`: the remote has no such manifest.
    ///
    /// The manifest's signature (when keys are trusted), format, name,
    /// paths and digest are checked before anything is fetched; each blob
    /// must decompress to its size and have its hash; the tree built in a
    /// `store` guard must have the manifest's digest. Then it is committed
    /// (the cache's limit and eviction apply) and loaded with no gap
    /// ([`StoreGuard::commit_and_load`](fscache::StoreGuard::commit_and_load)). The remote is always asked, even
    /// when the cache has the entry (see [`Remote::load_or_pull`]).
    ///
    /// A cache opened with
    /// [`record_digests(true)`](fscache::Builder::record_digests) records
    /// the entry's tree digest in its `object.info`, so
    /// [`FsCache::verify`] can check it later (as `fscache pull` and
    /// `fscache load --remote` do): the pull hands it the digest it
    /// checked ([`fscache::StoreGuard::set_digest`]), so the facade does
    /// not hash the tree again.
    ///
    /// # Errors
    ///
    /// An invalid name; a refused manifest ([`Error::Refused`]), a corrupt
    /// blob ([`Error::CorruptBlob`]), a failed request or local write.
    /// Any failure discards the partial tree: nothing is stored locally.
    pub fn pull(&self, cache: &FsCache, name: &str) -> Result<Option<Obtained>> {
        self.pull_with_progress(cache, name, &|_| {})
    }

    /// [`Remote::pull`], calling `progress` after each distinct blob is
    /// fetched, checked and written (from the remote's threads: keep it
    /// short).
    ///
    /// # Errors
    ///
    /// As [`Remote::pull`].
    pub fn pull_with_progress(
        &self,
        cache: &FsCache,
        name: &str,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Option<Obtained>> {
        self.inner
            .block("pull", self.inner.pull(cache, name, progress))?
    }

    /// A local hit, else a pull, else a miss: the one call a build needs.
    /// A local hit costs one [`FsCache::load`] and no request. A remote
    /// that is down, slow, or serves something refused is a miss (with the
    /// reason), reached within the [miss
    /// timeout](crate::RemoteBuilder::miss_timeout) for the manifest.
    ///
    /// # Errors
    ///
    /// Only the local cache's: an invalid name, a failed system call; and
    /// [`Error::InsideRuntime`] (use [`Remote::load_or_pull_async`]).
    pub fn load_or_pull(&self, cache: &FsCache, name: &str) -> Result<ReadThrough> {
        if let Some(e) = cache.load(name)? {
            return Ok(ReadThrough::Local(e));
        }
        self.inner
            .block("load_or_pull", self.inner.load_or_pull(cache, name))?
    }
}

impl Inner {
    /// The pull itself (see [`Remote::pull`]).
    pub(crate) async fn pull(
        &self,
        cache: &FsCache,
        name: &str,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Option<Obtained>> {
        cache.contains(name)?; // validates the name before any request
        let Some(located) = self.manifest(name).await? else {
            return Ok(None);
        };
        self.build(cache, name, located, progress).await.map(Some)
    }

    /// The remote half of [`Remote::load_or_pull`], after a local miss.
    pub(crate) async fn load_or_pull(&self, cache: &FsCache, name: &str) -> Result<ReadThrough> {
        let limit = self.miss_timeout;
        let fetched = tokio::time::timeout(limit, self.manifest(name))
            .await
            .unwrap_or(Err(Error::Timeout(limit)));
        let manifest = match fetched {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(ReadThrough::Miss { remote_error: None }),
            Err(e) => {
                return Ok(ReadThrough::Miss {
                    remote_error: Some(e),
                })
            }
        };
        match self.build(cache, name, manifest, &|_| {}).await {
            Ok(o) => Ok(ReadThrough::Pulled(o)),
            Err(e @ Error::Cache(_)) => Err(e),
            Err(e) => Ok(ReadThrough::Miss {
                remote_error: Some(e),
            }),
        }
    }

    /// Build the tree of a checked manifest in a `store` guard and commit
    /// it. A pack missing after a repack gets one more read of the
    /// manifest's locator, then the error.
    async fn build(
        &self,
        cache: &FsCache,
        name: &str,
        located: Located,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Obtained> {
        match self.build_once(cache, name, &located, progress).await {
            Err(Error::PackMissing { key }) if located.1.is_some() => {
                let again = self.manifest(name).await?;
                match again {
                    Some(fresh) if fresh.1 != located.1 => {
                        self.build_once(cache, name, &fresh, progress).await
                    }
                    _ => Err(Error::PackMissing { key }),
                }
            }
            other => other,
        }
    }

    async fn build_once(
        &self,
        cache: &FsCache,
        name: &str,
        (m, loc): &Located,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Obtained> {
        let (distinct, files) = crate::locator::distinct_blobs_split(m);
        let tracker = Tracker::new(
            distinct.len(),
            distinct.iter().map(|(_, size)| size).sum(),
            progress,
        );
        // The xattr values stored as blobs first, into memory, checked
        // against their hashes, and the digest (which covers them) with
        // them: before anything is written. The tree is then built from
        // the manifest with those values inline, whose distinct blobs are
        // the files' (the locator's first `files`).
        let mut resolved = m.clone();
        let mut loc = loc.clone();
        if m.has_xattr_blobs() {
            let values = fetch_xattr_values(self, m, loc.as_ref(), &tracker).await?;
            m.check_digest(&values)
                .map_err(|why| Error::refused(name, why))?;
            resolved
                .inline_xattrs(&values)
                .map_err(|why| Error::refused(name, why))?;
            if let Some(l) = loc.as_mut() {
                l.blobs.truncate(files);
            }
        }
        let shared = Arc::new(resolved);
        let m: &Manifest = &shared;
        let mut guard = cache.store(name)?;
        // Any error below drops the guard, which removes the partial tree.
        let root = guard.path().to_path_buf();
        blocking({
            let (root, m, packed) = (root.clone(), shared.clone(), loc.is_some());
            move || create_tree(&root, &m, packed)
        })
        .await?;
        let early = match &loc {
            Some(loc) => {
                // Format 2: every file's content is checked on the way,
                // so the tree is the manifest's (its digest was checked
                // at open) with what the restore reports it kept: no read
                // to hash it, and the facade takes that digest.
                fill_from_packs(self, &root, &shared, loc, &tracker).await?
            }
            None => {
                fill_from_blobs(self, &root, m, &tracker).await?;
                GivenMap::new()
            }
        };
        let given = blocking({
            let (root, m, on_drop) = (root.clone(), shared.clone(), self.on_drop);
            move || finish_tree(&root, &m, on_drop, early)
        })
        .await?;
        // What the tree must be: the manifest's, with what the policy kept
        // of each node's owner, bits and xattrs (all of it, as root).
        let expected = match m.digest_version() {
            fscache::DigestVersion::V1 => m.digest.clone(),
            _ => m
                .tree_digest_given(Some(&given))
                .map_err(|why| Error::refused(name, why))?
                .to_string(),
        };
        if loc.is_none() {
            // Format 1 (blobs fetched one by one): the tree as built.
            let version = m.digest_version();
            let built = blocking(move || {
                digest_dir(&root, version).map_err(|e| Error::io("digest", &root, e))
            })
            .await?;
            if built.to_string() != expected {
                return Err(Error::refused(
                    name,
                    format!(
                        "the tree built from it has digest {built}, not {}",
                        m.digest
                    ),
                ));
            }
        }
        let digest = expected
            .parse()
            .map_err(|_| Error::refused(name, "malformed digest"))?;
        guard.set_digest(digest);
        let got = blocking(move || guard.commit_and_load().map_err(Error::from)).await?;
        self.touch(name).await;
        Ok(got)
    }
}

/// A checked manifest and its locator (`None`: format 1).
pub(crate) type Located = (Manifest, Option<Locator>);

impl Inner {
    /// Fetch and check the manifest of `name` (one GET: the locator is
    /// in the same envelope).
    pub(crate) async fn manifest(&self, name: &str) -> Result<Option<Located>> {
        let key = manifest_key(name);
        let Some(bytes) = self.read(&key).await? else {
            return Ok(None);
        };
        Manifest::open_located(name, &bytes, &self.trusted).map(Some)
    }
}

/// Where a blob's bytes go: a file and an offset in it.
type Dest = (PathBuf, u64);

/// Where each of a file's blobs starts: one after the other, or in the
/// data ranges of a sparse file (whose holes are never written).
pub(crate) fn file_offsets(
    name: &str,
    data: Option<&[(u64, u64)]>,
    blobs: &[crate::manifest::BlobRef],
) -> Result<Vec<u64>> {
    match data {
        Some(ranges) => blob_offsets(ranges, blobs)
            .ok_or_else(|| Error::refused(name, "a blob straddles two data ranges")),
        None => Ok(blobs
            .iter()
            .scan(0u64, |at, b| {
                let o = *at;
                *at += b.size;
                Some(o)
            })
            .collect()),
    }
}

/// Create the manifest's directories (owner-writable until their
/// children are in) and its files (empty, of their sizes) under `root`;
/// from packs (`packed`), not the files a blob's write makes
/// ([`written_whole`]).
fn create_tree(root: &Path, m: &Manifest, packed: bool) -> Result<()> {
    let mut dirs = fs::DirBuilder::new();
    dirs.mode(0o700);
    for node in &m.nodes {
        if packed && written_whole(&node.kind) {
            continue;
        }
        let p = root.join(&node.path);
        match &node.kind {
            Kind::Dir { .. } => dirs
                .create(&p)
                .map_err(|e| Error::io("create directory", &p, e))?,
            Kind::File {
                size, link: None, ..
            } => {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)
                    .map_err(|e| Error::io("create", &p, e))?;
                if *size > 0 {
                    f.set_len(*size).map_err(|e| Error::io("truncate", &p, e))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Format 1: fetch each distinct blob as its own object, in parallel.
async fn fill_from_blobs(
    inner: &Inner,
    root: &Path,
    m: &Manifest,
    tracker: &Tracker<'_>,
) -> Result<()> {
    let mut wanted: HashMap<String, (u64, Vec<Dest>)> = HashMap::new();
    for node in &m.nodes {
        if let Kind::File {
            blobs,
            link: None,
            data,
            ..
        } = &node.kind
        {
            let p = root.join(&node.path);
            let offsets = file_offsets(&m.name, data.as_deref(), blobs)?;
            for (b, offset) in blobs.iter().zip(offsets) {
                let w = wanted.entry(b.hash.clone()).or_insert((b.size, Vec::new()));
                if w.0 != b.size {
                    return Err(Error::refused(
                        &m.name,
                        format!("blob {} is listed with two sizes", b.hash),
                    ));
                }
                w.1.push((p.clone(), offset));
            }
        }
    }
    futures::stream::iter(wanted)
        .map(|(hash, (size, dests))| async move {
            let key = blob_key(&hash);
            let data = inner.read(&key).await?.ok_or_else(|| Error::CorruptBlob {
                hash: hash.clone(),
                why: "missing from the remote".into(),
            })?;
            blocking(move || place(&hash, size, &data, &dests)).await?;
            tracker.done(size);
            Ok::<_, Error>(())
        })
        .buffer_unordered(inner.concurrency)
        .try_collect::<()>()
        .await
}

/// Each node's metadata, links and special nodes once the content is in
/// (see below), but for the files given theirs as they were written
/// (`early`); returns what each node was given of its metadata (version 2
/// manifests).
fn finish_tree(
    root: &Path,
    m: &Manifest,
    on_drop: OnDrop,
    mut early: GivenMap,
) -> Result<GivenMap> {
    let at = |p: &str| root.join(p);
    // Then each node's metadata (owner, mode, xattrs, mtime: after the
    // content, which would clear set-ID bits and capabilities), links,
    // special nodes, and last the directories', deepest first, so a
    // read-only directory is filled before it closes and its mtime is not
    // moved by its children.
    let v2 = m.digest_version() != fscache::DigestVersion::V1;
    let mut given = GivenMap::new();
    let keep = |given: &mut GivenMap, path: &str, g: fscache::meta::Given| {
        if v2 {
            given.insert(path.to_string(), g);
        }
    };
    for node in &m.nodes {
        let p = at(&node.path);
        match &node.kind {
            Kind::File { link: None, .. } if early.contains_key(&node.path) => {
                let g = early.remove(&node.path).expect("just looked up");
                keep(&mut given, &node.path, g);
            }
            Kind::File { link: None, .. } => keep(
                &mut given,
                &node.path,
                node::restore(&p, &node.kind, &node.meta, on_drop)?,
            ),
            Kind::File {
                link: Some(first), ..
            } => {
                fs::hard_link(at(first), &p).map_err(|e| Error::io("link", &p, e))?;
                if let Some(g) = given.get(first.as_str()).cloned() {
                    given.insert(node.path.clone(), g);
                }
            }
            Kind::Symlink { target, .. } => {
                symlink(target, &p).map_err(|e| Error::io("create symlink", &p, e))?;
                keep(
                    &mut given,
                    &node.path,
                    node::restore(&p, &node.kind, &node.meta, on_drop)?,
                );
            }
            Kind::Fifo { .. } | Kind::Socket { .. } | Kind::Char { .. } | Kind::Block { .. } => {
                node::create_special(&p, &node.kind)?;
                keep(
                    &mut given,
                    &node.path,
                    node::restore(&p, &node.kind, &node.meta, on_drop)?,
                );
            }
            Kind::Dir { .. } => {}
        }
    }
    for node in m.nodes.iter().rev() {
        if let Kind::Dir { .. } = node.kind {
            let p = at(&node.path);
            keep(
                &mut given,
                &node.path,
                node::restore(&p, &node.kind, &node.meta, on_drop)?,
            );
        }
    }
    Ok(given)
}

/// Decompress and check one blob, and write it wherever it goes.
fn place(hash: &str, size: u64, compressed: &[u8], dests: &[Dest]) -> Result<()> {
    let corrupt = |why: String| Error::CorruptBlob {
        hash: hash.into(),
        why,
    };
    let cap = usize::try_from(size).map_err(|_| corrupt("too large".into()))?;
    let data = zstd::bulk::decompress(compressed, cap)
        .map_err(|e| corrupt(format!("does not decompress to {size} bytes: {e}")))?;
    if data.len() as u64 != size {
        return Err(corrupt(format!("{} bytes, expected {size}", data.len())));
    }
    let actual = blake3::hash(&data);
    if actual.to_hex().as_str() != hash {
        return Err(corrupt(format!(
            "its content hashes to {}",
            actual.to_hex()
        )));
    }
    for (path, offset) in dests {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        f.write_all_at(&data, *offset)
            .map_err(|e| Error::io("write", path, e))?;
    }
    Ok(())
}
