//! Repacking, the last step of a prune: a pack older than the grace
//! period whose live share (the bytes of blobs the remaining locators
//! point at, over its size) fell below
//! [`PruneOptions::repack_below`](crate::PruneOptions::repack_below) has
//! its live blobs (each checked against its hash) copied into new packs;
//! the new packs are indexed; every locator that named the old pack is
//! rewritten to the new places (the manifest and signatures byte for
//! byte: no key is needed; a conditional write where the service has
//! one, so a manifest removed or rewritten meanwhile is left alone); then
//! the old pack is condemned, so it is deleted a grace period later, once
//! pulls that read the old locator are done.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::check::check_frame;
use crate::error::{Error, Result};
use crate::index::IndexedPack;
use crate::locator::Locator;
use crate::manifest::Manifest;
use crate::pack::{pack_hash, pack_key, parse_trailer, trailer_len, PackBuilder, TAIL};
use crate::prune::{unix_now, Listed, PruneOptions, PruneReport, MANIFESTS};
use crate::remote::Inner;

/// A kept manifest: its name and stored envelope.
pub(crate) type Kept = (String, Vec<u8>);

impl Inner {
    /// Repack what [the module docs](self) say, given the manifests the
    /// prune kept, the packs listed and described, and the packs young
    /// intents name (never repacked: a push in progress relies on them).
    pub(crate) async fn repack(
        &self,
        kept: &[Kept],
        packs: &[Listed],
        in_intents: &HashSet<String>,
        opts: PruneOptions,
        report: &mut PruneReport,
    ) -> Result<()> {
        if opts.repack_below == 0 {
            return Ok(());
        }
        // Live bytes per pack key, from the locators: (offset, length) once.
        let mut live: HashMap<String, HashSet<(u64, u64)>> = HashMap::new();
        let mut located: Vec<(&str, &[u8], Locator)> = Vec::new();
        for (name, bytes) in kept {
            let Ok((_, Some(loc))) = Manifest::open_unchecked_located(bytes) else {
                continue;
            };
            for b in &loc.blobs {
                if let Some(p) = loc.packs.get(b[0] as usize) {
                    live.entry(pack_key(p)).or_default().insert((b[1], b[2]));
                }
            }
            located.push((name, bytes, loc));
        }
        let horizon = std::time::SystemTime::now().checked_sub(opts.grace);
        let sparse: Vec<&Listed> = packs
            .iter()
            .filter(|p| live.contains_key(&p.key) && !in_intents.contains(&p.key))
            .filter(|p| matches!((p.modified, horizon), (Some(m), Some(h)) if m < h))
            .filter(|p| {
                let used: u64 = live[&p.key].iter().map(|(_, l)| l).sum();
                used * 100 < p.size * u64::from(opts.repack_below)
            })
            .collect();
        if sparse.is_empty() {
            return Ok(());
        }
        report.packs_repacked = sparse.len();
        if opts.dry_run {
            return Ok(());
        }
        // Copy the live frames, checked, into new packs.
        let mut moved: HashMap<(String, u64), (usize, u64, u64)> = HashMap::new();
        let mut built: Vec<crate::pack::Pack> = Vec::new();
        let mut builder = PackBuilder::new(self.pack_size);
        for p in &sparse {
            let Some(bytes) = self.read(&p.key).await? else {
                continue; // gone meanwhile: its locators fail as before
            };
            let n = bytes.len();
            let listed = match trailer_len(&bytes[n.saturating_sub(TAIL)..]).and_then(|tl| {
                let start = n
                    .checked_sub(TAIL + tl as usize)
                    .ok_or_else(|| "a trailer longer than the pack".to_string())?;
                parse_trailer(&bytes[start..n - TAIL], n as u64)
            }) {
                Ok(l) => l,
                Err(_) => continue, // damaged: `check` reports it; not copied
            };
            let by_place: BTreeMap<(u64, u64), &crate::pack::Packed> = listed
                .iter()
                .map(|b| ((b.offset(), b.length()), b))
                .collect();
            let mut places: Vec<&(u64, u64)> = live[&p.key].iter().collect();
            places.sort();
            for &&(offset, length) in &places {
                let Some(b) = by_place.get(&(offset, length)) else {
                    continue;
                };
                let frame = &bytes[offset as usize..(offset + length) as usize];
                if check_frame(b.hash(), b.3, frame).is_err() {
                    continue; // a bad blob is not copied: `check` heals it
                }
                let (o, l) = builder.add(b.hash(), b.3, frame);
                moved.insert((p.key.clone(), offset), (built.len(), o, l));
                if builder.full() {
                    built.push(
                        std::mem::replace(&mut builder, PackBuilder::new(self.pack_size)).finish(),
                    );
                }
            }
        }
        if !builder.is_empty() {
            built.push(builder.finish());
        }
        let mut indexed = Vec::new();
        for p in built {
            let key = pack_key(&p.hash);
            report.pack_bytes_written += p.bytes.len() as u64;
            self.op
                .write(&key, p.bytes)
                .await
                .map_err(|e| Error::remote("write", &key, e))?;
            indexed.push(IndexedPack {
                pack: p.hash,
                blobs: p.blobs,
            });
        }
        let refs: Vec<&IndexedPack> = indexed.iter().collect();
        self.add_index(&refs).await?;
        // Point every locator that named a sparse pack at the new places.
        let sparse_keys: HashSet<&str> = sparse.iter().map(|p| p.key.as_str()).collect();
        let mut left: HashSet<&str> = HashSet::new();
        let conditional = self.op.info().full_capability().write_with_if_match;
        for (name, bytes, loc) in located {
            if !loc
                .packs
                .iter()
                .any(|h| sparse_keys.contains(pack_key(h).as_str()))
            {
                continue;
            }
            let mut fresh = Locator::default();
            let mut slots: HashMap<String, u64> = HashMap::new();
            let mut slot = |h: &str, l: &mut Locator| {
                *slots.entry(h.to_string()).or_insert_with(|| {
                    l.packs.push(h.to_string());
                    l.packs.len() as u64 - 1
                })
            };
            let mut whole = true;
            for b in &loc.blobs {
                let old = &loc.packs[b[0] as usize];
                let key = pack_key(old);
                match moved.get(&(key.clone(), b[1])) {
                    Some(&(i, o, l)) => {
                        let s = slot(&indexed[i].pack, &mut fresh);
                        fresh.blobs.push([s, o, l]);
                    }
                    None => {
                        if sparse_keys.contains(key.as_str()) {
                            whole = false;
                        }
                        let s = slot(old, &mut fresh);
                        fresh.blobs.push([s, b[1], b[2]]);
                    }
                }
            }
            if !whole {
                // A blob could not be copied: this locator keeps the old
                // pack, which is then not condemned.
                for h in &loc.packs {
                    left.insert(pack_hash_of(&sparse_keys, h));
                }
            }
            let sealed =
                Manifest::relocate(bytes, fresh).map_err(|why| Error::refused(name, why))?;
            let key = format!("{MANIFESTS}{name}");
            let written = if conditional {
                let meta = match self.op.stat(&key).await {
                    Ok(m) => m,
                    Err(e) if e.kind() == opendal::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::remote("stat", &key, e)),
                };
                match (self.read(&key).await?, meta.etag()) {
                    (Some(now), Some(etag)) if now == bytes => {
                        self.op.write_with(&key, sealed).if_match(etag).await
                    }
                    _ => continue, // changed meanwhile: left as it is
                }
            } else {
                self.op.write(&key, sealed).await
            };
            match written {
                Ok(_) => report.locators_rewritten += 1,
                Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => {
                    for h in &loc.packs {
                        left.insert(pack_hash_of(&sparse_keys, h));
                    }
                }
                Err(e) => return Err(Error::remote("write", &key, e)),
            }
        }
        // Condemn the old packs: deleted a grace period later.
        let now = unix_now();
        let mut condemned = HashSet::new();
        for p in &sparse {
            if left.contains(p.key.as_str()) {
                continue;
            }
            let Some(h) = pack_hash(&p.key) else { continue };
            self.condemn(h, now).await?;
            condemned.insert(h);
            report.packs_condemned += 1;
        }
        self.unindex(&condemned).await
    }
}

/// The key (among `sparse`) of pack hash `h`, or "" when it is not one.
fn pack_hash_of<'a>(sparse: &HashSet<&'a str>, h: &str) -> &'a str {
    let k = pack_key(h);
    sparse.get(k.as_str()).copied().unwrap_or("")
}
