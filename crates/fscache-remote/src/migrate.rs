//! [`Remote::migrate`] (`fscache remote migrate`): rewrite a remote of
//! format 1 (one object per blob) into format 2 (packs and locators).
//! For each manifest without a locator, its blobs are read, checked
//! against their hashes, and written into packs (blobs already in an
//! indexed pack are reused); then the intent, the index object and the
//! envelope with its locator, whose manifest and signatures stay byte for
//! byte what they were (the signed part names no pack). The format-1
//! blobs are left to [prune](crate#garbage), which removes them once no
//! format-1 manifest names them and the grace period has passed.

use std::collections::HashMap;

use fscache::format_bytes;

use crate::check::check_frame;
use crate::error::{Error, Result};
use crate::index::{IndexedPack, Loc};
use crate::locator::{distinct_blobs, Locator};
use crate::manifest::Manifest;
use crate::pack::{pack_key, PackBuilder};
use crate::remote::{blob_key, manifest_key, Access, Inner, Remote};

/// What [`Remote::migrate`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrateReport {
    /// Entries rewritten into format 2, sorted.
    pub migrated: Vec<String>,
    /// Entries that were format 2 already.
    pub already: usize,
    /// Entries left in format 1, and why (a blob missing or corrupt, a
    /// manifest that does not parse). They still pull if they did.
    pub failed: Vec<(String, String)>,
    /// Packs written.
    pub packs_uploaded: usize,
    /// Bytes written (packs, index objects, envelopes).
    pub bytes_uploaded: u64,
}

impl Inner {
    async fn migrate(&self) -> Result<MigrateReport> {
        if self.access == Access::ReadOnly {
            return Err(Error::ReadOnly);
        }
        let mut report = MigrateReport::default();
        let (mut known, _) = self.sync_index().await?;
        let mut names = self.manifest_names().await?;
        names.sort();
        for name in names {
            let key = manifest_key(&name);
            let Some(bytes) = self.read(&key).await? else {
                continue;
            };
            let m = match Manifest::open_unchecked_located(&bytes) {
                Ok((_, Some(_))) => {
                    report.already += 1;
                    continue;
                }
                Ok((m, None)) => m,
                Err(why) => {
                    report
                        .failed
                        .push((name, format!("its manifest does not parse: {why}")));
                    continue;
                }
            };
            match self
                .migrate_one(&m, &bytes, &mut known, &mut report)
                .await?
            {
                Ok(()) => report.migrated.push(name),
                Err(why) => report.failed.push((name, why)),
            }
        }
        Ok(report)
    }

    /// Migrate one entry; `Ok(Err(why))` when its blobs do not allow it.
    async fn migrate_one(
        &self,
        m: &Manifest,
        envelope: &[u8],
        known: &mut HashMap<String, Loc>,
        report: &mut MigrateReport,
    ) -> Result<std::result::Result<(), String>> {
        let wanted: Vec<(String, u64)> = distinct_blobs(m)
            .into_iter()
            .map(|(h, s)| (h.to_string(), s))
            .collect();
        let mut packs: Vec<IndexedPack> = Vec::new();
        let mut builder = PackBuilder::new(self.pack_size);
        // Per distinct blob: a known place, or (slot, offset, length) in
        // a pack of this entry.
        let mut places: Vec<std::result::Result<Loc, (usize, u64, u64)>> = Vec::new();
        let mut uploads = Vec::new();
        for (hash, size) in &wanted {
            if let Some(l) = known.get(hash) {
                places.push(Ok(l.clone()));
                continue;
            }
            let key = blob_key(hash);
            let Some(frame) = self.read(&key).await? else {
                return Ok(Err(format!("blob `{key}` is missing")));
            };
            if let Err(why) = check_frame(hash, *size, &frame) {
                return Ok(Err(format!("blob `{key}` is corrupt: {why}")));
            }
            let (offset, length) = builder.add(hash, *size, &frame);
            places.push(Err((uploads.len(), offset, length)));
            if builder.full() {
                uploads.push(
                    std::mem::replace(&mut builder, PackBuilder::new(self.pack_size)).finish(),
                );
            }
        }
        if !builder.is_empty() {
            uploads.push(builder.finish());
        }
        let mut hashes = Vec::new();
        for p in uploads {
            let key = pack_key(&p.hash);
            report.bytes_uploaded += p.bytes.len() as u64;
            self.op
                .write(&key, p.bytes)
                .await
                .map_err(|e| Error::remote("write", &key, e))?;
            report.packs_uploaded += 1;
            hashes.push(p.hash.clone());
            packs.push(IndexedPack {
                pack: p.hash,
                blobs: p.blobs,
            });
        }
        let mut locator = Locator::default();
        let mut index: HashMap<String, u64> = HashMap::new();
        let mut slot = |pack: &str, locator: &mut Locator| {
            *index.entry(pack.to_string()).or_insert_with(|| {
                locator.packs.push(pack.to_string());
                locator.packs.len() as u64 - 1
            })
        };
        for place in &places {
            let b = match place {
                Ok(l) => [slot(&l.pack, &mut locator), l.offset, l.length],
                Err((s, offset, length)) => [slot(&hashes[*s], &mut locator), *offset, *length],
            };
            locator.blobs.push(b);
        }
        let all: Vec<String> = locator.packs.iter().map(|h| pack_key(h)).collect();
        let (intent, n) = self.begin_intent(&all).await?;
        report.bytes_uploaded += n;
        let result = async {
            self.wait_for_prunes().await?;
            for key in &all {
                if !self.exists(key).await? {
                    return Err(Error::PackMissing { key: key.clone() });
                }
            }
            let refs: Vec<&IndexedPack> = packs.iter().collect();
            report.bytes_uploaded += self.add_index(&refs).await?;
            let sealed = Manifest::relocate(envelope, locator)
                .map_err(|why| Error::refused(&m.name, why))?;
            report.bytes_uploaded += sealed.len() as u64;
            let key = manifest_key(&m.name);
            self.op
                .write(&key, sealed)
                .await
                .map_err(|e| Error::remote("write", &key, e))?;
            Ok(())
        }
        .await;
        self.end_intent(&intent).await;
        result?;
        for p in packs {
            for b in &p.blobs {
                known.entry(b.0.clone()).or_insert(Loc {
                    pack: p.pack.clone(),
                    offset: b.1,
                    length: b.2,
                });
            }
        }
        Ok(Ok(()))
    }
}

impl MigrateReport {
    /// One line: what was migrated, written and left.
    pub fn summary(&self) -> String {
        format!(
            "{} entries migrated ({} packs, {} written), {} already in format 2, {} left in format 1",
            self.migrated.len(),
            self.packs_uploaded,
            format_bytes(self.bytes_uploaded),
            self.already,
            self.failed.len()
        )
    }
}

impl Remote {
    /// Rewrite every format-1 entry of the remote into format 2 (see
    /// the [module](crate#the-remote-format-version-2-packs) docs): its
    /// blobs into packs, a locator into its envelope; its manifest and
    /// signatures unchanged, so they stay valid. Entries in format 2 are
    /// left alone; an entry whose blobs are missing or corrupt stays in
    /// format 1 and is reported. Run [`Remote::prune`] after the grace
    /// period to remove the format-1 blobs.
    ///
    /// # Errors
    ///
    /// The remote is read-only, a request failed, or a prune ran for
    /// longer than the push may wait.
    pub fn migrate(&self) -> Result<MigrateReport> {
        self.inner.block("migrate", self.inner.migrate())?
    }

    /// [`Remote::migrate`], awaitable from any executor.
    ///
    /// # Errors
    ///
    /// As [`Remote::migrate`].
    pub async fn migrate_async(&self) -> Result<MigrateReport> {
        let inner = self.inner.clone();
        self.inner
            .spawn(async move { inner.migrate().await })
            .await?
    }
}
