//! The index (format 2): which blobs each pack holds, for push-side
//! dedupe. Append-only: each push that wrote packs adds one immutable
//! object `v2/index/<32 hex>` listing them; nothing rewrites one (a pack
//! GC removes an object only after condemning its packs). Each pusher
//! keeps a copy of every object it has read in a local directory and
//! fetches only the ones it has not seen, so a push costs one listing
//! plus the objects new since its last push.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pack::Packed;
use crate::remote::Inner;

/// Where index objects are.
pub(crate) const INDEX: &str = "v2/index/";
const FORMAT: &str = "fscache-remote-index";

/// One pack as an index object lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IndexedPack {
    /// The pack's hash.
    pub pack: String,
    /// Its blobs: `[hash, offset, length, size]`.
    pub blobs: Vec<Packed>,
}

#[derive(Serialize, Deserialize)]
struct IndexJson {
    format: String,
    version: u64,
    packs: Vec<IndexedPack>,
}

/// Where a blob is: pack hash, offset and length of its frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub pack: String,
    pub offset: u64,
    pub length: u64,
}

/// Every blob the index knows, by hash.
pub(crate) type Known = HashMap<String, Loc>;

/// Packs this host stored that no index object lists yet (its push was
/// cut before the index object): by pack hash.
pub(crate) type Pending = HashMap<String, IndexedPack>;

/// A pending record older than this is forgotten: a prune may remove an
/// unlisted pack once it is older than its grace period (default 1 h).
const PENDING_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1800);

/// The body of an index object listing `packs`.
pub(crate) fn encode(packs: &[&IndexedPack]) -> Vec<u8> {
    let json = IndexJson {
        format: FORMAT.into(),
        version: 2,
        packs: packs.iter().map(|&p| p.clone()).collect(),
    };
    crate::manifest::pack(&serde_json::to_vec(&json).expect("an index always serializes"))
}

/// The packs an index object lists (`None`: not an index object).
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<IndexedPack>> {
    let json = crate::manifest::unpack(bytes).ok()?;
    let i: IndexJson = serde_json::from_slice(&json).ok()?;
    (i.format == FORMAT && i.version == 2).then_some(i.packs)
}

/// The local copy of the index objects of one remote: one file per
/// object, named like it.
fn local_dir(base: &Path, url: &str) -> PathBuf {
    let id = blake3::hash(url.as_bytes()).to_hex();
    base.join(&id.as_str()[..32])
}

impl Inner {
    /// Bring the local copy of the index up to date (one listing, and a
    /// read of each object not seen before; objects no longer listed are
    /// forgotten) and return every blob it knows. The local copy is best
    /// effort: when it cannot be written, every push reads every object.
    pub(crate) async fn sync_index(&self) -> Result<(Known, Pending)> {
        let listed: Vec<String> = self
            .op
            .list_with(INDEX)
            .recursive(true)
            .await
            .map_err(|e| Error::remote("list", INDEX, e))?
            .into_iter()
            .map(|e| e.path().to_string())
            .filter(|k| !k.ends_with('/'))
            .collect();
        let dir = self.index_dir.as_deref().map(|b| local_dir(b, &self.url));
        let names: HashSet<&str> = listed
            .iter()
            .filter_map(|k| k.strip_prefix(INDEX))
            .collect();
        // Forget what the remote no longer lists.
        if let Some(dir) = &dir {
            if let Ok(it) = std::fs::read_dir(dir) {
                for e in it.flatten() {
                    let n = e.file_name();
                    if n != "pending" && n.to_str().is_none_or(|n| !names.contains(n)) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        let objects: Vec<Option<Vec<u8>>> = futures::stream::iter(listed)
            .map(|key| {
                let dir = dir.clone();
                async move {
                    let name = key.strip_prefix(INDEX).unwrap_or(&key).to_string();
                    let local = dir.as_ref().map(|d| d.join(&name));
                    if let Some(bytes) = local.as_ref().and_then(|p| std::fs::read(p).ok()) {
                        return Ok(Some(bytes));
                    }
                    let got = self.read(&key).await?;
                    if let (Some(bytes), Some(p)) = (&got, &local) {
                        let _ = save(p, bytes);
                    }
                    Ok::<_, Error>(got)
                }
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        let mut known = Known::new();
        let add = |known: &mut Known, p: &IndexedPack| {
            for b in &p.blobs {
                known.entry(b.0.clone()).or_insert(Loc {
                    pack: p.pack.clone(),
                    offset: b.1,
                    length: b.2,
                });
            }
        };
        for bytes in objects.into_iter().flatten() {
            for p in decode(&bytes).unwrap_or_default() {
                add(&mut known, &p);
            }
        }
        let mut pending = Pending::new();
        if let Some(dir) = &dir {
            if let Ok(it) = std::fs::read_dir(dir.join("pending")) {
                for e in it.flatten() {
                    let young = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age < PENDING_MAX_AGE);
                    let listed = young
                        .then(|| std::fs::read(e.path()).ok())
                        .flatten()
                        .and_then(|b| decode(&b))
                        .and_then(|mut v| v.pop());
                    match listed {
                        Some(p) => {
                            pending.insert(p.pack.clone(), p);
                        }
                        None => {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
            }
        }
        // A record is not proof: the pack may have been lost since (a
        // server that came back empty, a prune). One `stat` each.
        let mut checked = Pending::new();
        for (hash, p) in pending {
            if self.exists(&crate::pack::pack_key(&hash)).await? {
                add(&mut known, &p);
                checked.insert(hash, p);
            } else {
                self.clear_pending([hash.as_str()]);
            }
        }
        Ok((known, checked))
    }

    /// Note locally that this host stored pack `p` (not yet listed by an
    /// index object), so a later push reuses it even if this one is cut.
    pub(crate) fn record_pending(&self, p: &IndexedPack) {
        if let Some(b) = &self.index_dir {
            let path = local_dir(b, &self.url).join("pending").join(&p.pack);
            let _ = save(&path, &encode(&[p]));
        }
    }

    /// Forget the pending records of packs an index object now lists.
    pub(crate) fn clear_pending<'a>(&self, packs: impl IntoIterator<Item = &'a str>) {
        if let Some(b) = &self.index_dir {
            let dir = local_dir(b, &self.url).join("pending");
            for p in packs {
                let _ = std::fs::remove_file(dir.join(p));
            }
        }
    }

    /// Add one index object listing `packs` (written after they are all
    /// stored), and keep its copy locally. Returns its size.
    pub(crate) async fn add_index(&self, packs: &[&IndexedPack]) -> Result<u64> {
        if packs.is_empty() {
            return Ok(0);
        }
        let key = Self::random_key(INDEX)?;
        let body = encode(packs);
        let n = body.len() as u64;
        self.op
            .write(&key, body.clone())
            .await
            .map_err(|e| Error::remote("write", &key, e))?;
        if let Some(b) = &self.index_dir {
            let _ = save(
                &local_dir(b, &self.url).join(key.strip_prefix(INDEX).unwrap_or(&key)),
                &body,
            );
        }
        Ok(n)
    }
}

/// Write a local copy through a temporary name, so a reader never sees
/// half of one.
fn save(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
