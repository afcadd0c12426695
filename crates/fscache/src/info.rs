//! `CacheInfo`: the configuration in `cache.info`.

use serde_json::{Map, Value};

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
