//! Garbage on the remote: `used` markers (when a name was last pushed or
//! pulled), push intents (the blobs a push in progress relies on),
//! `prune` (old manifests, then unreferenced blobs past a grace period),
//! and `info` (what the remote holds).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::remote::{Access, Inner, Remote};

/// The prefix of blobs.
pub(crate) const BLOBS: &str = "v1/blobs/";
/// The prefix of manifests.
pub(crate) const MANIFESTS: &str = "v1/manifests/";
/// The prefix of `used` markers.
pub(crate) const USED: &str = "v1/used/";
/// The prefix of push intents.
pub(crate) const INTENTS: &str = "v1/intents/";
/// The prefix of prune markers.
pub(crate) const PRUNES: &str = "v1/prunes/";
/// A prune marker older than this is a dead prune's, and ignored.
pub(crate) const PRUNE_LEASE: Duration = Duration::from_secs(3600);

/// The key of the `used` marker of entry `name`.
pub(crate) fn used_key(name: &str) -> String {
    format!("{USED}{name}")
}

/// What a `used` marker holds.
#[derive(Serialize, Deserialize)]
struct UsedJson {
    used: u64,
}

/// What a prune marker holds.
#[derive(Serialize, Deserialize)]
struct PruneJson {
    started: u64,
}

/// What a push intent holds: format 1 named blobs, format 2 names the
/// packs (keys) the push reuses.
#[derive(Serialize, Deserialize)]
struct IntentJson {
    created: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    blobs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    packs: Vec<String>,
}

pub(crate) fn unix_now() -> u64 {
    secs(SystemTime::now())
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Options of [`Remote::prune`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneOptions {
    /// Remove the manifests of entries last pushed or pulled longer ago
    /// than this.
    pub unused_for: Duration,
    /// Never remove a blob written, or a push intent made, less than this
    /// long ago: it may belong to a push in progress whose manifest is
    /// not published yet. It must exceed the longest push (default 1 h).
    pub grace: Duration,
    /// Report what would be removed; remove nothing.
    pub dry_run: bool,
    /// Repack a pack older than the grace period whose live share (the
    /// bytes the remaining locators point at, over its size) is below
    /// this percentage: its live blobs are copied into new packs, the
    /// locators rewritten, the old pack condemned (default 50; 0 never
    /// repacks).
    pub repack_below: u8,
}

impl PruneOptions {
    /// Remove entries unused for `unused_for`, with the default grace
    /// period of one hour, for real.
    pub fn unused_for(unused_for: Duration) -> Self {
        Self {
            unused_for,
            grace: Duration::from_secs(3600),
            dry_run: false,
            repack_below: 50,
        }
    }

    /// Set the live share (percent) below which a pack is repacked.
    pub fn repack_below(mut self, percent: u8) -> Self {
        self.repack_below = percent.min(100);
        self
    }

    /// Set the grace period of young blobs and intents.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Report only; remove nothing.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// What [`Remote::prune`] removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// The entries whose manifests were removed, sorted.
    pub manifests_removed: Vec<String>,
    /// Manifests kept (used recently enough).
    pub manifests_kept: usize,
    /// Manifests that could not be read as this format's: kept, and the
    /// blobs they may name are unknown (a pull refuses them anyway).
    pub manifests_unreadable: Vec<String>,
    /// Blobs removed: no manifest and no live push intent names them.
    pub blobs_removed: usize,
    /// Stored (compressed) bytes of the blobs removed.
    pub bytes_removed: u64,
    /// Blobs kept because a manifest or a live push intent names them.
    pub blobs_referenced: usize,
    /// Unreferenced blobs kept because they are younger than the grace
    /// period, or the service does not say how old they are.
    pub blobs_young: usize,
    /// Push intents older than the grace period removed (left by pushes
    /// that died).
    pub intents_removed: usize,
    /// Packs kept because a remaining manifest's locator or a live push
    /// intent names them.
    pub packs_referenced: usize,
    /// Unnamed packs condemned by this run (older than the grace
    /// period): taken out of the index, deleted by a prune at least a
    /// grace period later if still unnamed.
    pub packs_condemned: usize,
    /// Packs condemned by an earlier run, not yet for a grace period.
    pub packs_condemned_waiting: usize,
    /// Condemned packs deleted.
    pub packs_removed: usize,
    /// Stored bytes of the packs deleted.
    pub pack_bytes_removed: u64,
    /// Unnamed packs younger than the grace period (a push in progress
    /// may be about to name them).
    pub packs_young: usize,
    /// Packs repacked (their live blobs copied into new packs, then
    /// condemned; in a dry run: that would be).
    pub packs_repacked: usize,
    /// Stored bytes of the new packs a repack wrote.
    pub pack_bytes_written: u64,
    /// Locators a repack rewrote.
    pub locators_rewritten: usize,
}

/// What [`Remote::info`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteInfo {
    /// The URL it was opened with.
    pub url: String,
    /// The newest layout version this crate writes (2: packs; it reads
    /// 1 too).
    pub format_version: u64,
    /// Whether it may write.
    pub access: Access,
    /// Entries (manifests).
    pub manifests: usize,
    /// Blobs.
    pub blobs: usize,
    /// Stored (compressed) bytes of all blobs.
    pub blob_bytes: u64,
    /// Packs (format 2).
    pub packs: usize,
    /// Stored bytes of all packs.
    pub pack_bytes: u64,
    /// Push intents present: pushes in progress, or debris of dead ones.
    pub intents: usize,
    /// Prune markers present: prunes in progress (pushes wait for them),
    /// or debris of dead ones (ignored after an hour).
    pub prunes: usize,
}

/// One listed object: its key, stored size, and when it was last written
/// (`None` when the service does not say).
pub(crate) struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

impl Inner {
    pub(crate) async fn list_keys(&self, prefix: &str) -> Result<Vec<opendal::Entry>> {
        Ok(self
            .op
            .list_with(prefix)
            .recursive(true)
            .await
            .map_err(|e| Error::remote("list", prefix, e))?
            .into_iter()
            .filter(|e| !e.path().ends_with('/'))
            .collect())
    }

    /// A listed object's size and time, `stat`ing it when the listing
    /// did not say (the fs service lists names only).
    async fn describe(&self, e: opendal::Entry) -> Result<Listed> {
        let (key, meta) = e.into_parts();
        let meta = if meta.last_modified().is_some() {
            meta
        } else {
            match self.op.stat(&key).await {
                Ok(m) => m,
                // Removed meanwhile (another prune): size 0, no time.
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => meta,
                Err(e) => return Err(Error::remote("stat", &key, e)),
            }
        };
        Ok(Listed {
            size: meta.content_length(),
            modified: meta.last_modified().map(SystemTime::from),
            key,
        })
    }

    /// [`Inner::describe`] every entry, concurrently.
    pub(crate) async fn describe_all(&self, entries: Vec<opendal::Entry>) -> Result<Vec<Listed>> {
        futures::stream::iter(entries)
            .map(|e| self.describe(e))
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await
    }

    /// Delete `key`; one already gone is no error.
    pub(crate) async fn delete_key(&self, key: &str) -> Result<()> {
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::remote("delete", key, e)),
        }
    }

    /// Record that `name` was used now. Best effort: a failure is ignored
    /// (at worst the entry is pruned earlier than it should be), and a
    /// read-only remote records nothing.
    pub(crate) async fn touch(&self, name: &str) {
        if self.access == Access::ReadOnly {
            return;
        }
        let body =
            serde_json::to_vec(&UsedJson { used: unix_now() }).expect("a marker always serializes");
        let _ = self.op.write(&used_key(name), body).await;
    }

    /// When `name` was last used: its marker, else its manifest's
    /// creation time; `None` if neither can be read.
    async fn last_used(&self, name: &str, manifest: Option<&[u8]>) -> Result<Option<u64>> {
        if let Some(bytes) = self.read(&used_key(name)).await? {
            if let Ok(u) = serde_json::from_slice::<UsedJson>(&bytes) {
                return Ok(Some(u.used));
            }
        }
        Ok(manifest.and_then(|b| Manifest::open_unchecked(b).ok().map(|m| m.created)))
    }

    /// Write a push intent naming the packs (keys) it reuses; returns
    /// its key and size.
    pub(crate) async fn begin_intent(&self, packs: &[String]) -> Result<(String, u64)> {
        let key = Self::random_key(INTENTS)?;
        let body = crate::manifest::pack(
            &serde_json::to_vec(&IntentJson {
                created: unix_now(),
                blobs: Vec::new(),
                packs: packs.to_vec(),
            })
            .expect("an intent always serializes"),
        );
        let n = body.len() as u64;
        self.op
            .write(&key, body)
            .await
            .map_err(|e| Error::remote("write", &key, e))?;
        Ok((key, n))
    }

    /// Remove a push intent; best effort (prune removes stale ones).
    pub(crate) async fn end_intent(&self, key: &str) {
        let _ = self.delete_key(key).await;
    }

    /// The blobs a stored manifest names, or `None` if it cannot be read
    /// as a manifest of this format (its signature is not checked: this
    /// only decides what to keep).
    /// Format 2: also the keys of the packs its locator names.
    /// A format-2 manifest names only its packs: the format-1 blobs of
    /// an entry that [`Remote::migrate`](crate::Remote::migrate)
    /// rewrote are garbage.
    fn blobs_of(bytes: &[u8]) -> Option<Vec<String>> {
        let (m, locator) = Manifest::open_unchecked_located(bytes).ok()?;
        if locator.is_some() {
            return Some(crate::gc::packs_of(bytes));
        }
        // Its files' blobs and its xattrs'.
        let named: Vec<String> = crate::locator::distinct_blobs(&m)
            .into_iter()
            .map(|(h, _)| h.to_string())
            .collect();
        Some(named)
    }

    /// Read the manifests of `names` (concurrently): name → bytes, for
    /// those still present.
    async fn read_manifests(&self, names: Vec<String>) -> Result<HashMap<String, Vec<u8>>> {
        let read: Vec<(String, Option<Vec<u8>>)> = futures::stream::iter(names)
            .map(|n| async move {
                let b = self.read(&format!("{MANIFESTS}{n}")).await?;
                Ok::<_, Error>((n, b))
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        Ok(read
            .into_iter()
            .filter_map(|(n, b)| b.map(|b| (n, b)))
            .collect())
    }

    pub(crate) async fn manifest_names(&self) -> Result<Vec<String>> {
        Ok(self
            .list_keys(MANIFESTS)
            .await?
            .into_iter()
            .filter_map(|e| e.path().strip_prefix(MANIFESTS).map(str::to_string))
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .collect())
    }

    /// Read every intent: the blobs of those younger than the grace
    /// period go into `referenced`; the older ones are returned (stale).
    async fn intents(
        &self,
        now: u64,
        grace: Duration,
        referenced: &mut HashSet<String>,
    ) -> Result<Vec<String>> {
        let mut stale = Vec::new();
        for e in self.list_keys(INTENTS).await? {
            let key = e.path().to_string();
            let Some(bytes) = self.read(&key).await? else {
                continue; // its push finished meanwhile
            };
            let json = crate::manifest::unpack(&bytes).map_err(|_| ());
            match json.and_then(|j| serde_json::from_slice::<IntentJson>(&j).map_err(drop)) {
                Ok(i) if now.saturating_sub(i.created) < grace.as_secs() => {
                    referenced.extend(i.blobs);
                    referenced.extend(i.packs);
                }
                _ => stale.push(key),
            }
        }
        Ok(stale)
    }

    /// A random object name below `prefix`.
    pub(crate) fn random_key(prefix: &str) -> Result<String> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| {
            Error::io(
                "draw a random id for",
                prefix,
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok(format!("{prefix}{}", crate::keys::hex(&id)))
    }

    /// The live prune markers: those younger than their lease. An
    /// unreadable marker's age is its last-modified time (unknown: live).
    async fn live_prunes(&self) -> Result<HashSet<String>> {
        let now = unix_now();
        let mut live = HashSet::new();
        for e in self.list_keys(PRUNES).await? {
            let key = e.path().to_string();
            let Some(bytes) = self.read(&key).await? else {
                continue; // it ended meanwhile
            };
            let since = match serde_json::from_slice::<PruneJson>(&bytes) {
                Ok(m) => Some(m.started),
                Err(_) => self
                    .op
                    .stat(&key)
                    .await
                    .ok()
                    .and_then(|m| m.last_modified())
                    .map(|t| secs(SystemTime::from(t))),
            };
            if since.is_none_or(|s| now.saturating_sub(s) < PRUNE_LEASE.as_secs()) {
                live.insert(key);
            }
        }
        Ok(live)
    }

    /// Wait (up to the remote's prune wait) until every prune running now
    /// has ended: called by a push after it wrote its intent and before it
    /// looks for any blob. A prune whose marker this first listing does
    /// not show wrote it later, so it reads the intent before it removes
    /// anything: only the ones listed now may not have, and only those are
    /// waited for (so prunes run back to back never starve a push).
    ///
    /// Returns whether there was any prune to wait for.
    pub(crate) async fn wait_for_prunes(&self) -> Result<bool> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        let mut waiting_for = self.live_prunes().await?;
        let waited = !waiting_for.is_empty();
        loop {
            let Some(key) = waiting_for.iter().next().cloned() else {
                return Ok(waited);
            };
            if started.elapsed() >= self.prune_wait {
                return Err(Error::PruneInProgress { key });
            }
            tokio::time::sleep(pause.min(self.prune_wait.saturating_sub(started.elapsed()))).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            let live = self.live_prunes().await?;
            waiting_for.retain(|k| live.contains(k));
        }
    }

    /// [`Remote::prune`]: refused on a read-only remote unless a dry run.
    pub(crate) async fn prune_checked(&self, opts: PruneOptions) -> Result<PruneReport> {
        if self.access == Access::ReadOnly && !opts.dry_run {
            return Err(Error::ReadOnly);
        }
        self.prune(opts).await
    }

    async fn prune(&self, opts: PruneOptions) -> Result<PruneReport> {
        if opts.dry_run {
            return self.prune_marked(opts).await;
        }
        // Pushes that begin while this marker exists wait for it to go.
        let marker = Self::random_key(PRUNES)?;
        let body = serde_json::to_vec(&PruneJson {
            started: unix_now(),
        })
        .expect("a marker always serializes");
        self.op
            .write(&marker, body)
            .await
            .map_err(|e| Error::remote("write", &marker, e))?;
        let result = self.prune_marked(opts).await;
        // Best effort: a marker left behind makes pushes wait until its
        // lease passes, never breaks anything.
        let _ = self.delete_key(&marker).await;
        result
    }

    async fn prune_marked(&self, opts: PruneOptions) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let now = unix_now();
        // 1. The blobs that exist now: the only candidates. A blob written
        //    after this listing is never removed by this run.
        let blobs = self.list_keys(BLOBS).await?;
        let packs = self.list_packs().await?;
        // 2. Manifests: remove the unused ones, collect what the others
        //    name.
        let mut referenced: HashSet<String> = HashSet::new();
        let names = self.manifest_names().await?;
        let seen: HashSet<String> = names.iter().cloned().collect();
        let manifests = self.read_manifests(names).await?;
        let unused_for = opts.unused_for.as_secs();
        // Each manifest, concurrently: its marker read, and removed if old.
        type Outcome = (String, Option<(Option<Vec<String>>, Vec<u8>)>);
        let mut outcomes: Vec<Outcome> = futures::stream::iter(manifests)
            .map(|(name, bytes)| async move {
                let used = self.last_used(&name, Some(&bytes)).await?;
                if used.is_some_and(|u| now.saturating_sub(u) >= unused_for) {
                    return Ok::<_, Error>((name, None));
                }
                let blobs = Self::blobs_of(&bytes);
                Ok((name, Some((blobs, bytes))))
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept_manifests = Vec::new();
        for (name, kept) in outcomes {
            match kept {
                None => report.manifests_removed.push(name),
                Some((blobs, bytes)) => {
                    report.manifests_kept += 1;
                    match blobs {
                        Some(b) => referenced.extend(b),
                        None => report.manifests_unreadable.push(name.clone()),
                    }
                    kept_manifests.push((name, bytes));
                }
            }
        }
        // The unused entries go in one batch: manifests, then markers.
        if !opts.dry_run {
            let keys: Vec<String> = report
                .manifests_removed
                .iter()
                .map(|n| format!("{MANIFESTS}{n}"))
                .collect();
            self.delete_batch(keys).await?;
            let keys: Vec<String> = report
                .manifests_removed
                .iter()
                .map(|n| used_key(n))
                .collect();
            self.delete_batch(keys).await?;
        }
        // 3. Just before removing anything: manifests published since
        //    step 2 (their intent may be gone already), and live intents.
        let fresh: Vec<String> = self
            .manifest_names()
            .await?
            .into_iter()
            .filter(|n| {
                !seen.contains(n) || (!opts.dry_run && report.manifests_removed.contains(n))
            })
            .collect();
        for bytes in self.read_manifests(fresh).await?.values() {
            referenced.extend(Self::blobs_of(bytes).unwrap_or_default());
        }
        let mut in_intents = HashSet::new();
        let stale = self.intents(now, opts.grace, &mut in_intents).await?;
        referenced.extend(in_intents.iter().cloned());
        let live_packs: Vec<opendal::Entry> = packs
            .iter()
            .filter(|e| referenced.contains(e.path()))
            .cloned()
            .collect();
        self.sweep_packs(packs, &referenced, opts, &mut report)
            .await?;
        // 3b. Repack the sparse live packs (see `repack`).
        if opts.repack_below > 0 {
            let listed = self.describe_all(live_packs).await?;
            self.repack(&kept_manifests, &listed, &in_intents, opts, &mut report)
                .await?;
        }
        // 4. Unreferenced blobs older than the grace period go.
        let horizon = SystemTime::now().checked_sub(opts.grace);
        let (kept, unreferenced): (Vec<_>, Vec<_>) = blobs
            .into_iter()
            .partition(|e| referenced.contains(e.path().rsplit('/').next().unwrap_or_default()));
        report.blobs_referenced = kept.len();
        let mut doomed = Vec::new();
        for b in self.describe_all(unreferenced).await? {
            if matches!((b.modified, horizon), (Some(m), Some(h)) if m < h) {
                report.blobs_removed += 1;
                report.bytes_removed += b.size;
                doomed.push(b.key);
            } else {
                report.blobs_young += 1;
            }
        }
        if !opts.dry_run {
            doomed.extend(stale.iter().cloned());
            self.delete_batch(doomed).await?;
        }
        report.intents_removed = stale.len();
        Ok(report)
    }
}

impl Remote {
    /// Remove what no one uses: first the manifests of entries not pushed
    /// or pulled for [`PruneOptions::unused_for`] (with their `used`
    /// markers), then every blob no remaining manifest and no live push
    /// intent names, unless it is younger than [`PruneOptions::grace`];
    /// and push intents older than the grace period.
    ///
    /// A push in progress is safe: the blobs it uploads are younger than
    /// the grace period, the ones it found already there are named by
    /// its intent, and a push waits for a prune that was already running
    /// when it wrote its intent (see the [crate docs](crate#garbage)).
    /// While it runs, the prune keeps a marker on the remote.
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`]; a request failed (what was removed before it
    /// stays removed; running it again continues).
    pub fn prune(&self, opts: PruneOptions) -> Result<PruneReport> {
        self.inner.block("prune", self.inner.prune_checked(opts))?
    }

    /// Count what the remote holds: manifests, blobs and their stored
    /// bytes, push intents. Lists everything (and `stat`s every blob on
    /// services whose listing gives no sizes).
    ///
    /// # Errors
    ///
    /// A request failed.
    pub fn info(&self) -> Result<RemoteInfo> {
        let inner = &self.inner;
        inner.block("info", async {
            let blobs = inner.describe_all(inner.list_keys(BLOBS).await?).await?;
            let packs = inner.describe_all(inner.list_packs().await?).await?;
            Ok(RemoteInfo {
                url: inner.url.clone(),
                format_version: 2,
                packs: packs.len(),
                pack_bytes: packs.iter().map(|b| b.size).sum(),
                access: inner.access,
                manifests: inner.manifest_names().await?.len(),
                blob_bytes: blobs.iter().map(|b| b.size).sum(),
                blobs: blobs.len(),
                intents: inner.list_keys(INTENTS).await?.len(),
                prunes: inner.list_keys(PRUNES).await?.len(),
            })
        })?
    }
}
