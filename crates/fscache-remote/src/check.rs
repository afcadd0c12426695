//! Checking and healing a remote ([`Remote::check`], `fscache remote
//! check [--read-data] [--repair]`), as `restic check` does: every
//! manifest opened and checked, every pack and format-1 blob it needs
//! present, every locator range one its pack's trailer lists; with
//! `read_data`, every pack read whole, its hash and every blob in it
//! checked. `repair` takes every bad pack out of the index (so no push
//! reuses its blobs), removes the damaged entries' manifests and pushes
//! again those the local cache still has; the rest are dropped, and the
//! report says which.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use fscache::FsCache;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::locator::distinct_blobs;
use crate::pack::{pack_hash, pack_key, parse_trailer, trailer_len, PACKS, TAIL};
use crate::pull::Located;
use crate::remote::{blob_key, manifest_key, Access, Inner, Remote};

/// What [`Remote::check`] reads and whether it repairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckOptions {
    /// Read every pack and blob the manifests need, whole, and check
    /// every hash (without it: presence, sizes and the packs' trailers).
    pub read_data: bool,
    /// Heal what was found: see [`Remote::check`].
    pub repair: bool,
}

impl CheckOptions {
    /// Presence and structure only; no repair.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read every pack and blob whole.
    pub fn read_data(mut self, read_data: bool) -> Self {
        self.read_data = read_data;
        self
    }

    /// Heal what was found.
    pub fn repair(mut self, repair: bool) -> Self {
        self.repair = repair;
        self
    }
}

/// One thing wrong with the remote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The object at fault (a manifest, pack or blob key).
    pub key: String,
    /// What is wrong with it.
    pub what: String,
    /// The entries it breaks, sorted.
    pub entries: Vec<String>,
}

/// What [`Remote::check`] found (and, with `repair`, did).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Manifests read.
    pub manifests: usize,
    /// Packs the manifests name, checked.
    pub packs: usize,
    /// Format-1 blobs the manifests name, checked.
    pub blobs: usize,
    /// Bytes read by the check (packs and blobs; manifests not counted).
    pub bytes_read: u64,
    /// Whether signatures were checked (trusted keys were given).
    pub signatures_checked: bool,
    /// Everything wrong, by key.
    pub problems: Vec<Problem>,
    /// The entries that would not pull, sorted.
    pub damaged: Vec<String>,
    /// With `repair`: damaged entries pushed again from the local cache.
    pub repaired: Vec<String>,
    /// With `repair`: damaged entries whose manifests were removed, as
    /// no local copy could heal them.
    pub dropped: Vec<String>,
    /// With `repair`: packs taken out of the index, so no push reuses
    /// their blobs (a prune deletes them once no locator names them).
    pub packs_unindexed: usize,
}

impl CheckReport {
    /// Nothing is wrong (or, after a repair, nothing was left wrong).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One blob an entry needs from a pack: hash, size, offset, length.
type Want = (String, u64, u64, u64);

/// One problem found: the key at fault, what is wrong, the entries it
/// breaks.
type Found1 = (String, String, BTreeSet<String>);

/// Problems gathered while checking.
#[derive(Default)]
struct Found {
    /// key -> (what, entries)
    by_key: BTreeMap<String, (String, BTreeSet<String>)>,
    /// Blobs known bad (never to be reused by a repair's push).
    bad_blobs: HashSet<String>,
    /// Packs known bad (taken out of the index by a repair).
    bad_packs: HashSet<String>,
}

impl Found {
    fn add(
        &mut self,
        key: &str,
        what: impl Into<String>,
        entries: impl IntoIterator<Item = String>,
    ) {
        let e = self
            .by_key
            .entry(key.to_string())
            .or_insert_with(|| (what.into(), BTreeSet::new()));
        e.1.extend(entries);
    }
}

/// Check one frame: it decodes to `size` bytes that hash to `hash`.
pub(crate) fn check_frame(hash: &str, size: u64, frame: &[u8]) -> Result<(), String> {
    decode_frame(hash, size, frame).map(drop)
}

/// Decode one frame: the `size` bytes it must hold, which must hash to
/// `hash`.
pub(crate) fn decode_frame(hash: &str, size: u64, frame: &[u8]) -> Result<Vec<u8>, String> {
    let cap = usize::try_from(size).map_err(|_| "too large".to_string())?;
    let data = zstd::bulk::decompress(frame, cap)
        .map_err(|e| format!("does not decompress to {size} bytes: {e}"))?;
    if data.len() as u64 != size {
        return Err(format!("{} bytes, expected {size}", data.len()));
    }
    let actual = blake3::hash(&data);
    if actual.to_hex().as_str() != hash {
        return Err(format!("its content hashes to {}", actual.to_hex()));
    }
    Ok(data)
}

impl Inner {
    /// Read a pack's trailer (one ranged read of its last 64 KiB, a
    /// second when the trailer is longer).
    async fn read_trailer(
        &self,
        key: &str,
        size: u64,
    ) -> Result<Result<Vec<crate::pack::Packed>, String>> {
        if size < TAIL as u64 {
            return Ok(Err(format!("{size} bytes: too short for a pack")));
        }
        let first = size.min(64 << 10);
        let tail = self
            .op
            .read_with(key)
            .range(size - first..size)
            .await
            .map_err(|e| Error::remote("read", key, e))?
            .to_vec();
        let tl = match trailer_len(&tail[tail.len() - TAIL..]) {
            Ok(n) => n,
            Err(why) => return Ok(Err(why)),
        };
        let need = tl + TAIL as u64;
        if need > size {
            return Ok(Err(format!("a trailer of {tl} bytes in a pack of {size}")));
        }
        let trailer = if need <= first {
            tail[(first - need) as usize..tail.len() - TAIL].to_vec()
        } else {
            self.op
                .read_with(key)
                .range(size - need..size - TAIL as u64)
                .await
                .map_err(|e| Error::remote("read", key, e))?
                .to_vec()
        };
        Ok(parse_trailer(&trailer, size))
    }

    /// The check itself (see [`Remote::check`]).
    pub(crate) async fn check(
        &self,
        cache: Option<&FsCache>,
        opts: CheckOptions,
    ) -> Result<CheckReport> {
        if opts.repair && self.access == Access::ReadOnly {
            return Err(Error::ReadOnly);
        }
        let mut report = CheckReport {
            signatures_checked: !self.trusted.is_empty(),
            ..CheckReport::default()
        };
        let mut found = Found::default();
        let names: Vec<String> = self
            .list_keys(crate::prune::MANIFESTS)
            .await?
            .into_iter()
            .filter_map(|e| {
                e.path()
                    .strip_prefix(crate::prune::MANIFESTS)
                    .map(str::to_string)
            })
            .filter(|n| !n.is_empty())
            .collect();
        let opened: Vec<(String, Result<Option<Located>>)> = futures::stream::iter(names)
            .map(|name| async move {
                let r = self.manifest(&name).await;
                (name, r)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        // pack key -> what each entry needs from it; blob key -> entries.
        let mut packs: BTreeMap<String, Vec<(String, Want)>> = BTreeMap::new();
        let mut blobs: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
        for (name, r) in opened {
            report.manifests += 1;
            let (m, locator) = match r {
                Ok(Some(l)) => l,
                Ok(None) => continue, // removed since the listing
                Err(e @ (Error::Refused { .. } | Error::CorruptBlob { .. })) => {
                    found.add(&manifest_key(&name), e.to_string(), [name.clone()]);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match locator {
                Some(loc) => {
                    let wanted = distinct_blobs(&m);
                    let fits = loc.blobs.len() == wanted.len()
                        && loc.blobs.iter().all(|b| (b[0] as usize) < loc.packs.len());
                    if !fits {
                        found.add(
                            &manifest_key(&name),
                            "its locator does not match its manifest",
                            [name.clone()],
                        );
                        continue;
                    }
                    for ((hash, size), b) in wanted.iter().zip(&loc.blobs) {
                        packs
                            .entry(pack_key(&loc.packs[b[0] as usize]))
                            .or_default()
                            .push((name.clone(), (hash.to_string(), *size, b[1], b[2])));
                    }
                }
                None => {
                    // Its files' blobs and its xattrs'.
                    for (hash, size) in distinct_blobs(&m) {
                        blobs
                            .entry(blob_key(hash))
                            .or_insert_with(|| (size, BTreeSet::new()))
                            .1
                            .insert(name.clone());
                    }
                }
            }
        }
        report.packs = packs.len();
        report.blobs = blobs.len();

        // What exists, with sizes: one listing each.
        let mut sizes: HashMap<String, u64> = HashMap::new();
        for e in self.describe_all(self.list_keys(PACKS).await?).await? {
            sizes.insert(e.key, e.size);
        }
        if !blobs.is_empty() {
            for e in self
                .describe_all(self.list_keys("v1/blobs/").await?)
                .await?
            {
                sizes.insert(e.key, e.size);
            }
        }

        let read_data = opts.read_data;
        let checked: Vec<(String, u64, Vec<Found1>)> = futures::stream::iter(packs)
            .map(|(key, wants)| {
                let size = sizes.get(&key).copied();
                async move {
                    self.check_pack(&key, size, &wants, read_data)
                        .await
                        .map(|(n, p)| (key, n, p))
                }
            })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<Result<_>>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        for (key, n, problems) in checked {
            report.bytes_read += n;
            for (k, what, entries) in problems {
                found.bad_packs.insert(key.clone());
                if let Some((_, h)) = k.split_once('#') {
                    found.bad_blobs.insert(h.to_string());
                }
                found.add(&k, what, entries);
            }
        }
        for (key, (size, entries)) in blobs {
            let hash = key.rsplit('/').next().unwrap_or_default().to_string();
            if !sizes.contains_key(&key) {
                found.bad_blobs.insert(hash);
                found.add(&key, "missing", entries);
                continue;
            }
            if !read_data {
                continue;
            }
            let Some(bytes) = self.read(&key).await? else {
                found.bad_blobs.insert(hash);
                found.add(&key, "missing", entries);
                continue;
            };
            report.bytes_read += bytes.len() as u64;
            if let Err(why) = check_frame(&hash, size, &bytes) {
                found.bad_blobs.insert(hash);
                found.add(&key, format!("corrupt: {why}"), entries);
            }
        }

        let damaged: BTreeSet<String> = found
            .by_key
            .values()
            .flat_map(|(_, e)| e.iter().cloned())
            .collect();
        report.damaged = damaged.iter().cloned().collect();
        report.problems = found
            .by_key
            .iter()
            .map(|(k, (what, e))| Problem {
                key: k.clone(),
                what: what.clone(),
                entries: e.iter().cloned().collect(),
            })
            .collect();
        if opts.repair && !damaged.is_empty() {
            self.repair(cache, &found, &damaged, &mut report).await?;
        }
        Ok(report)
    }

    /// Check one pack for the blobs `wants` names; returns the bytes read
    /// and the problems `(key, what, entries)`.
    async fn check_pack(
        &self,
        key: &str,
        size: Option<u64>,
        wants: &[(String, Want)],
        read_data: bool,
    ) -> Result<(u64, Vec<Found1>)> {
        let everyone = || {
            wants
                .iter()
                .map(|(e, _)| e.clone())
                .collect::<BTreeSet<_>>()
        };
        let Some(size) = size else {
            return Ok((0, vec![(key.to_string(), "missing".into(), everyone())]));
        };
        let trailer = if read_data {
            None
        } else {
            match self.read_trailer(key, size).await? {
                Ok(t) => Some(t),
                Err(why) => {
                    return Ok((
                        0,
                        vec![(key.to_string(), format!("corrupt: {why}"), everyone())],
                    ));
                }
            }
        };
        let mut problems = Vec::new();
        let mut bad_blob = |hash: &str, what: String, entry: &str| {
            problems.push((
                format!("{key}#{hash}"),
                what,
                BTreeSet::from([entry.to_string()]),
            ));
        };
        let mut read = 0;
        if let Some(listed) = trailer {
            let at: HashMap<(&str, u64, u64), u64> = listed
                .iter()
                .map(|p| ((p.hash(), p.offset(), p.length()), p.3))
                .collect();
            for (entry, (hash, size, offset, length)) in wants {
                match at.get(&(hash.as_str(), *offset, *length)) {
                    Some(s) if s == size => {}
                    Some(s) => bad_blob(
                        hash,
                        format!("the trailer gives size {s}, the manifest {size}"),
                        entry,
                    ),
                    None => bad_blob(
                        hash,
                        "not in the pack's trailer at the locator's range".into(),
                        entry,
                    ),
                }
            }
            return Ok((read, merge(problems)));
        }
        let Some(bytes) = self.read(key).await? else {
            return Ok((0, vec![(key.to_string(), "missing".into(), everyone())]));
        };
        read = bytes.len() as u64;
        let actual = blake3::hash(&bytes);
        if pack_hash(key) != Some(actual.to_hex().as_str()) {
            return Ok((
                read,
                vec![(
                    key.to_string(),
                    format!("corrupt: its bytes hash to {}", actual.to_hex()),
                    everyone(),
                )],
            ));
        }
        let checked = crate::asyncapi::blocking({
            let wants = wants.to_vec();
            move || {
                let mut out = Vec::new();
                for (entry, (hash, size, offset, length)) in &wants {
                    let frame = offset
                        .checked_add(*length)
                        .filter(|end| *end <= bytes.len() as u64)
                        .map(|end| &bytes[*offset as usize..end as usize]);
                    let r = match frame {
                        Some(f) => check_frame(hash, *size, f),
                        None => Err("its locator range lies outside the pack".into()),
                    };
                    if let Err(why) = r {
                        out.push((entry.clone(), hash.clone(), why));
                    }
                }
                Ok(out)
            }
        })
        .await?;
        for (entry, hash, why) in checked {
            bad_blob(&hash, format!("corrupt: {why}"), &entry);
        }
        Ok((read, merge(problems)))
    }

    /// Heal: see the module docs.
    async fn repair(
        &self,
        cache: Option<&FsCache>,
        found: &Found,
        damaged: &BTreeSet<String>,
        report: &mut CheckReport,
    ) -> Result<()> {
        let bad_packs: HashSet<&str> = found
            .bad_packs
            .iter()
            .filter_map(|k| pack_hash(k))
            .collect();
        report.packs_unindexed = bad_packs.len();
        self.unindex(&bad_packs).await?;
        self.clear_pending(bad_packs.iter().copied());
        for name in damaged {
            self.delete_key(&manifest_key(name)).await?;
            let local = match cache {
                Some(c) => c.load(name)?.is_some(),
                None => false,
            };
            if local {
                let c = cache.expect("checked above");
                let pushed = self
                    .push_excluding(c, name, &|_| {}, &found.bad_blobs, &found.bad_packs)
                    .await?;
                if pushed.is_some() {
                    report.repaired.push(name.clone());
                    continue;
                }
            }
            report.dropped.push(name.clone());
        }
        // What is left wrong: problems whose every entry was healed go.
        let healed: HashSet<&String> = report.repaired.iter().chain(&report.dropped).collect();
        report
            .problems
            .retain(|p| p.entries.iter().any(|e| !healed.contains(e)));
        Ok(())
    }
}

/// Merge problems of one key (a blob several entries need).
fn merge(problems: Vec<Found1>) -> Vec<Found1> {
    let mut by: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for (k, what, e) in problems {
        by.entry(k)
            .or_insert_with(|| (what, BTreeSet::new()))
            .1
            .extend(e);
    }
    by.into_iter().map(|(k, (w, e))| (k, w, e)).collect()
}

impl Remote {
    /// Check the remote, as `restic check [--read-data]` does: every
    /// manifest opens (signature against the trusted keys when there are
    /// any, format, name, digest), the locator fits its manifest, every
    /// pack and format-1 blob it needs exists, and every locator range is
    /// one its pack's trailer lists with that blob's hash and size. With
    /// [`CheckOptions::read_data`], every needed pack is read whole: its
    /// hash and every blob's are checked.
    ///
    /// With [`CheckOptions::repair`] (read-write only) it heals what it
    /// found: every bad pack leaves the index (no later push reuses its
    /// blobs; a prune deletes it once no locator names it); each damaged
    /// entry's manifest is removed and, when `cache` holds the entry,
    /// pushed again, uploading the blobs the bad packs held
    /// ([`CheckReport::repaired`]); the others stay removed
    /// ([`CheckReport::dropped`]), so a pull of them is a clean miss.
    ///
    /// # Errors
    ///
    /// A request failed, the remote is read-only and `repair` was asked
    /// for, or a repair's push failed. What is wrong with the remote is
    /// the report, not an error.
    pub fn check(&self, cache: Option<&FsCache>, opts: CheckOptions) -> Result<CheckReport> {
        self.inner.block("check", self.inner.check(cache, opts))?
    }

    /// [`Remote::check`], awaitable from any executor.
    ///
    /// # Errors
    ///
    /// As [`Remote::check`].
    pub async fn check_async(
        &self,
        cache: Option<&FsCache>,
        opts: CheckOptions,
    ) -> Result<CheckReport> {
        let (inner, cache) = (self.inner.clone(), cache.cloned());
        self.inner
            .spawn(async move { inner.check(cache.as_ref(), opts).await })
            .await?
    }
}
