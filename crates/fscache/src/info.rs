//! `CacheInfo`: the configuration in `cache.info`, and the handle's view
//! of it (`FsCache::info`, `set_info`, `reload_info`, the cheap
//! `current_info` check).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::Ordering;

use fscache_dir::{stat, CacheDir, IfMissing, CACHE_INFO};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::FsCache;

pub use fscache_quota::MaxSize;

/// The on-disk format version this implementation reads and writes.
pub const VERSION: u64 = 1;

/// The configuration of a cache, as `cache.info` holds it.
///
/// Every field is optional: `None` means the key is absent (or of the
/// wrong type, which reads as absent). Keys other than these are kept on
/// every update and never shown here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheInfo {
    /// The app boot id of the boot that created the cache (32 hex).
    pub creation_boot_id: Option<String>,
    /// The most bytes the cache accounts to entries; absent means 0.
    pub maximum_size: Option<MaxSize>,
    /// The format version; this implementation uses caches of version 1
    /// only and treats anything else as incompatible.
    pub version: Option<u64>,
}

impl CacheInfo {
    /// Read the fields of a `cache.info` JSON object.
    pub(crate) fn from_map(map: &Map<String, Value>) -> Self {
        Self {
            creation_boot_id: fscache_quota::boot_id_from_json(map.get("creation-boot-id")),
            maximum_size: map.get("maximum-size").and_then(MaxSize::from_json),
            version: map.get("version").and_then(Value::as_u64),
        }
    }

    /// Write the fields that are set into `map`, keeping every other key.
    pub(crate) fn merge_into(&self, map: &mut Map<String, Value>) {
        if let Some(id) = &self.creation_boot_id {
            map.insert("creation-boot-id".into(), Value::from(id.as_str()));
        }
        if let Some(max) = self.maximum_size {
            map.insert("maximum-size".into(), max.to_json());
        }
        if let Some(v) = self.version {
            map.insert("version".into(), Value::from(v));
        }
    }

    /// Whether this implementation can use a cache with this info.
    pub fn is_compatible(&self) -> bool {
        self.version == Some(VERSION)
    }

    /// The limit in force: absent means `Bytes(0)`.
    pub fn limit(&self) -> MaxSize {
        self.maximum_size.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_read_as_unset_and_unknown_keys_survive() {
        let v = json!({"version": "1", "maximum-size": 1.5, "creation-boot-id": "short", "x": [1]});
        let mut map = v.as_object().unwrap().clone();
        assert_eq!(CacheInfo::from_map(&map), CacheInfo::default());
        CacheInfo {
            maximum_size: Some(MaxSize::Unlimited),
            ..Default::default()
        }
        .merge_into(&mut map);
        assert_eq!(map["x"], json!([1]));
        assert_eq!(map["maximum-size"], json!("unlimited"));
        assert_eq!(map["version"], json!("1"));
        assert!(!CacheInfo::from_map(&map).is_compatible());
        assert_eq!(CacheInfo::default().limit(), MaxSize::Bytes(0));
    }
}

impl FsCache {
    /// The configuration in force, as read at open, at the last
    /// [`FsCache::set_info`] or [`FsCache::reload_info`], or at a commit
    /// that noticed another process changing it.
    pub fn info(&self) -> CacheInfo {
        self.inner
            .info
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Re-read `cache.info` (another process may have changed it).
    ///
    /// # Errors
    ///
    /// As [`FsCache::open`].
    pub fn reload_info(&self) -> Result<CacheInfo> {
        let (info, id, fd) = read_info(self.dir())?;
        let mut held = self.inner.info.write().unwrap_or_else(|p| p.into_inner());
        self.inner
            .compatible
            .store(info.is_compatible(), Ordering::Relaxed);
        *held = (info.clone(), id, fd);
        drop(held);
        Ok(info)
    }

    /// The configuration as `cache.info` says now: one `stat` when it is
    /// unchanged since we read it, a re-read when another process replaced
    /// it.
    pub(crate) fn current_info(&self) -> Result<CacheInfo> {
        let rel = Path::new(CACHE_INFO);
        let dir = self.dir();
        {
            let cached = self.inner.info.read().unwrap_or_else(|p| p.into_inner());
            // `cache.info` is replaced by rename, never moved: locally, the
            // descriptor it was read through still being linked (an
            // `fstat`, no path lookup) proves it is the file the path
            // names; size and mtime catch writers that edit it in place.
            // On NFS an unlinked open file keeps its link count, so the
            // path is compared there (docs/format.md, "NFS").
            let st = if dir.is_nfs() {
                dir.stat(rel)
                    .map_err(|e| Error::io("stat", dir.abs(rel), e))?
            } else {
                stat::fstat(&cached.2).map_err(|e| Error::io("stat", dir.abs(rel), e))?
            };
            if st.st_nlink > 0 && cached.1 == FileId::of(&st) {
                return Ok(cached.0.clone());
            }
        }
        self.reload_info()
    }

    /// Update `cache.info` with the fields of `info` that are set, keeping
    /// every other key (also ones this implementation does not know), under
    /// the file's exclusive lock by read → temp file → rename.
    ///
    /// # Errors
    ///
    /// Locking, reading or replacing `cache.info` failed, or it holds
    /// something other than a JSON object ([`Error::Corrupt`]).
    pub fn set_info(&self, info: CacheInfo) -> Result<()> {
        self.update_info(|_| Some(info)).map(drop)
    }

    /// Read-modify-write of `cache.info` under its exclusive lock: `change`
    /// sees the configuration on disk and returns the fields to set, or
    /// `None` to leave the file alone. The handle's view is re-read
    /// afterwards.
    pub(crate) fn update_info(
        &self,
        change: impl FnOnce(&CacheInfo) -> Option<CacheInfo>,
    ) -> Result<()> {
        let dir = self.dir();
        let rel = Path::new(CACHE_INFO);
        let abs = dir.abs(rel);
        // Durably in every mode: a `cache.info` torn by a power loss would
        // make the cache unopenable, and updates are rare.
        let corrupt = dir
            .update_durable(rel, IfMissing::Fail, |bytes| {
                let mut map = match serde_json::from_slice::<serde_json::Value>(bytes) {
                    Ok(serde_json::Value::Object(map)) => map,
                    _ => return Ok((None, true)),
                };
                let Some(update) = change(&CacheInfo::from_map(&map)) else {
                    return Ok((None, false));
                };
                tracing::info!(info = ?update, "cache.info updated");
                update.merge_into(&mut map);
                Ok((
                    Some(serde_json::Value::Object(map).to_string().into_bytes()),
                    false,
                ))
            })
            .map_err(|e| Error::io("update", &abs, e))?;
        if corrupt {
            return Err(Error::Corrupt {
                path: abs,
                what: "not a JSON object".into(),
            });
        }
        self.reload_info()?;
        Ok(())
    }
}

/// Read and parse `cache.info`; the descriptor it was read through comes
/// back too.
pub(crate) fn read_info(dir: &CacheDir) -> Result<(CacheInfo, FileId, OwnedFd)> {
    let rel = Path::new(CACHE_INFO);
    let fd = dir
        .open_read(rel)
        .map_err(|e| Error::io("open", dir.abs(rel), e))?;
    let st = stat::fstat(&fd).map_err(|e| Error::io("stat", dir.abs(rel), e))?;
    let bytes = fscache_dir::read_small_fd(&fd).map_err(|e| Error::io("read", dir.abs(rel), e))?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok((CacheInfo::from_map(&map), FileId::of(&st), fd)),
        Ok(_) => Ok((CacheInfo::default(), FileId::of(&st), fd)),
        Err(e) => Err(Error::Corrupt {
            path: dir.abs(rel),
            what: format!("not JSON ({e})"),
        }),
    }
}

/// What identifies one version of `cache.info`: it is only ever replaced
/// by `rename`, so a change is a new inode (and the times and size are
/// compared too, for writers that edit it in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    inode: stat::Inode,
    size: u64,
    mtime: stat::Stamp,
}

impl FileId {
    fn of(st: &stat::Stat) -> Self {
        Self {
            inode: stat::inode(st),
            size: stat::size(st),
            mtime: stat::mtime(st),
        }
    }
}
