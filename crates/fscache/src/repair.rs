//! `FsCache::repair`: whole-cache repair while no other handle has the
//! cache open, and `alone`, the exclusive hold of `cache.lock` it runs in.

use std::path::Path;

use fscache_dir::{CACHE_LOCK, OBJECTS, OBJECT_INFO};
use fscache_lock::LockKind;

use crate::error::{Error, Result};
use crate::FsCache;

impl FsCache {
    /// Whole-cache repair after crashes: remove the debris of crashed
    /// writers and removals, and rebuild `cache.size` as the exact sum of
    /// the entries' recorded sizes (a crash between a charge and its commit,
    /// or during eviction, leaves it too high — never too low).
    ///
    /// Runs only while no other handle (in any process, osbuild's included)
    /// has the cache open: it converts this handle's shared `cache.lock` to
    /// exclusive without waiting, and returns `Ok(None)` if others hold it.
    /// Commits of this handle wait meanwhile. To remove debris while others
    /// use the cache, see [`FsCache::sweep`].
    ///
    /// # Errors
    ///
    /// The lock conversion, a removal or the recount failed.
    pub fn repair(&self) -> Result<Option<Repaired>> {
        self.alone(|| {
            self.count(|p| &p.repairs, 1);
            let accounted_before = fscache_quota::read_size(self.dir()).ok();
            let mut swept = fscache_quota::sweep(self.dir())?;
            swept.removed.extend(self.remove_unrecorded()?);
            let accounted = fscache_quota::recount(self.dir())?;
            tracing::info!(
                removed = ?swept.removed,
                before = ?accounted_before,
                accounted,
                "repaired"
            );
            Ok(Repaired {
                removed: swept.removed,
                accounted_before,
                accounted,
            })
        })
    }

    /// Remove the named entries whose `object.info` exists but records no
    /// size (empty or garbled: what a power loss leaves of one written
    /// without `fsync`). They count for nothing, so the books cannot be
    /// exact while they stay; only repair may judge them, alone, since a
    /// writer's entry is never in that state while the cache is open.
    fn remove_unrecorded(&self) -> Result<Vec<String>> {
        let dir = self.dir();
        let objects = Path::new(OBJECTS);
        let list = dir
            .list_dir(objects)
            .map_err(|e| Error::io("read directory", dir.abs(objects), e))?;
        let mut removed = Vec::new();
        for entry in list {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(fscache_dir::RESERVED_PREFIX) {
                continue;
            }
            let rel = objects.join(name);
            let Ok(bytes) = dir.read_small(&rel.join(OBJECT_INFO)) else {
                continue;
            };
            if fscache_quota::ObjectInfo::parse(&bytes).size.is_none() {
                dir.remove_entry(&rel)
                    .map_err(|e| Error::io("remove", dir.abs(&rel), e))?;
                removed.push(name.to_owned());
            }
        }
        Ok(removed)
    }

    /// Run `f` while no other handle has the cache open: this handle's
    /// shared `cache.lock` is converted to exclusive without waiting
    /// (`Ok(None)` if others hold it) and back afterwards. Commits of this
    /// handle wait meanwhile, so a recount never misses a charge in flight.
    pub(crate) fn alone<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
        let _gate = self
            .inner
            .commit_gate
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut lock = self
            .inner
            .cache_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let lock_path = || self.dir().abs(Path::new(CACHE_LOCK));
        if !lock
            .try_convert(LockKind::Exclusive)
            .map_err(|e| Error::io("lock", lock_path(), e))?
        {
            return Ok(None);
        }
        let result = f();
        // Downgrading never conflicts.
        lock.convert(LockKind::Shared)
            .map_err(|e| Error::io("lock", lock_path(), e))?;
        result.map(Some)
    }
}

/// What [`FsCache::repair`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Debris removed: `uuid-*` leftovers of crashed writers and named
    /// directories left half-removed.
    pub removed: Vec<String>,
    /// `cache.size` before the repair (`None` if it was corrupt).
    pub accounted_before: Option<u64>,
    /// `cache.size` after: the exact sum of the entries' recorded sizes.
    pub accounted: u64,
}
