//! Garbage collection of packs (format 2), run by `prune` after it has
//! decided which manifests stay: mark (the packs the remaining manifests'
//! locators and the young push intents name) and sweep in two phases. A
//! pack no one names and older than the grace period is *condemned*: a
//! marker `v2/condemned/<hash>` records when, and the index objects that
//! list it are rewritten without it, so no push starts reusing it. A
//! later prune deletes a condemned pack still unnamed once its marker is
//! older than the grace period (the delay must exceed any push: a push
//! that read the index before the condemnation has published, or died,
//! by then). A condemned pack named again (a push reused it meanwhile)
//! is pardoned. Deletes are batched (OpenDAL's deleter: up to 1000 keys
//! per S3 request).

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::{decode, encode, IndexedPack, INDEX};
use crate::pack::{pack_hash, pack_key, PACKS};
use crate::prune::{unix_now, PruneOptions, PruneReport};
use crate::remote::Inner;

/// Where condemned-pack markers are.
pub(crate) const CONDEMNED: &str = "v2/condemned/";

/// What a condemnation marker holds.
#[derive(Serialize, Deserialize)]
pub(crate) struct CondemnedJson {
    pub condemned: u64,
}

impl Inner {
    /// The packs that exist now (listed before anything is read: a pack
    /// written later is never a candidate of this run).
    pub(crate) async fn list_packs(&self) -> Result<Vec<opendal::Entry>> {
        self.list_keys(PACKS).await
    }

    /// Sweep the listed `packs` that `referenced` (pack keys) does not
    /// name, as the module docs say.
    pub(crate) async fn sweep_packs(
        &self,
        packs: Vec<opendal::Entry>,
        referenced: &HashSet<String>,
        opts: PruneOptions,
        report: &mut PruneReport,
    ) -> Result<()> {
        let now = unix_now();
        let horizon = SystemTime::now().checked_sub(opts.grace);
        let mut condemned: HashMap<String, u64> = HashMap::new();
        for e in self.list_keys(CONDEMNED).await? {
            let key = e.path().to_string();
            let Some(hash) = key.strip_prefix(CONDEMNED) else {
                continue;
            };
            let since = match self.read(&key).await? {
                Some(b) => serde_json::from_slice::<CondemnedJson>(&b)
                    .map(|c| c.condemned)
                    .unwrap_or(now),
                None => continue,
            };
            condemned.insert(hash.to_string(), since);
        }
        let (live, dead): (Vec<_>, Vec<_>) = packs
            .into_iter()
            .partition(|e| referenced.contains(e.path()));
        report.packs_referenced = live.len();
        let mut pardoned = Vec::new();
        for e in &live {
            if let Some(h) = pack_hash(e.path()) {
                if condemned.contains_key(h) {
                    pardoned.push(format!("{CONDEMNED}{h}"));
                }
            }
        }
        let mut doomed = Vec::new();
        let mut condemn = Vec::new();
        for b in self.describe_all(dead).await? {
            let Some(hash) = pack_hash(&b.key).map(str::to_string) else {
                continue;
            };
            match condemned.get(&hash) {
                Some(&since) if now.saturating_sub(since) >= opts.grace.as_secs() => {
                    report.packs_removed += 1;
                    report.pack_bytes_removed += b.size;
                    doomed.push(b.key.clone());
                    doomed.push(format!("{CONDEMNED}{hash}"));
                }
                Some(_) => report.packs_condemned_waiting += 1,
                None if matches!((b.modified, horizon), (Some(m), Some(h)) if m < h) => {
                    report.packs_condemned += 1;
                    condemn.push(hash);
                }
                None => report.packs_young += 1,
            }
        }
        if opts.dry_run {
            return Ok(());
        }
        for hash in &condemn {
            self.condemn(hash, now).await?;
        }
        let unlisted: HashSet<&str> = condemn
            .iter()
            .map(String::as_str)
            .chain(doomed.iter().filter_map(|k| pack_hash(k)))
            .collect();
        self.unindex(&unlisted).await?;
        doomed.extend(pardoned);
        self.delete_batch(doomed).await
    }

    /// Rewrite every index object that lists one of `packs` without
    /// them: the new object is written before the old one goes, so a
    /// pusher reading meanwhile sees each other pack at least once.
    pub(crate) async fn unindex(&self, packs: &HashSet<&str>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let mut gone = Vec::new();
        for e in self.list_keys(INDEX).await? {
            let key = e.path().to_string();
            let Some(bytes) = self.read(&key).await? else {
                continue;
            };
            let Some(listed) = decode(&bytes) else {
                continue;
            };
            if !listed.iter().any(|p| packs.contains(p.pack.as_str())) {
                continue;
            }
            let kept: Vec<IndexedPack> = listed
                .into_iter()
                .filter(|p| !packs.contains(p.pack.as_str()))
                .collect();
            if !kept.is_empty() {
                let fresh = Self::random_key(INDEX)?;
                let refs: Vec<&IndexedPack> = kept.iter().collect();
                self.op
                    .write(&fresh, encode(&refs))
                    .await
                    .map_err(|e| Error::remote("write", &fresh, e))?;
            }
            gone.push(key);
        }
        self.delete_batch(gone).await
    }

    /// Write the marker that condemns the pack `hash` as of `now` (Unix
    /// seconds): a later sweep deletes it once the grace period is over.
    pub(crate) async fn condemn(&self, hash: &str, now: u64) -> Result<()> {
        let key = format!("{CONDEMNED}{hash}");
        let body = serde_json::to_vec(&CondemnedJson { condemned: now })
            .expect("a marker always serializes");
        self.op
            .write(&key, body)
            .await
            .map_err(|e| Error::remote("write", &key, e))?;
        Ok(())
    }

    /// Delete `keys` in batches (one request per 1000 keys on S3).
    pub(crate) async fn delete_batch(&self, keys: Vec<String>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.op
            .delete_iter(keys)
            .await
            .map_err(|e| Error::remote("delete", "a batch of keys", e))
    }
}

/// The pack keys a stored manifest's locator names (empty for format 1
/// or an unreadable one).
pub(crate) fn packs_of(bytes: &[u8]) -> Vec<String> {
    crate::manifest::Manifest::open_unchecked_located(bytes)
        .ok()
        .and_then(|(_, l)| l)
        .map(|l| l.packs.iter().map(|h| pack_key(h)).collect())
        .unwrap_or_default()
}
