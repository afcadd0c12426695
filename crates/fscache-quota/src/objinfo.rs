//! `object.info`: what a committed entry records of itself.

use serde_json::{json, Value};

/// Read a `creation-boot-id` JSON value (of `object.info` or `cache.info`):
/// a string of 32 characters, anything else reads as unset.
pub fn boot_id_from_json(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| s.len() == 32)
        .map(str::to_owned)
}

/// The parsed `object.info` of an entry. Fields of the wrong type read as
/// unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The app boot id of the boot that created the entry (32 hex).
    pub creation_boot_id: Option<String>,
    /// The bytes accounted to the entry when it was committed.
    pub size: Option<u64>,
    /// The tree digest of its `data/` (`"blake3:<64 hex>"`, see
    /// `fscache_dir::digest`), an extra key osbuild ignores; entries
    /// without it (osbuild's) are unverified, not bad.
    pub digest: Option<String>,
}

impl ObjectInfo {
    /// Parse `object.info` bytes; garbage gives all fields unset.
    pub fn parse(bytes: &[u8]) -> Self {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) else {
            return Self::default();
        };
        Self {
            creation_boot_id: boot_id_from_json(map.get("creation-boot-id")),
            size: map.get("size").and_then(Value::as_u64),
            digest: map
                .get("digest")
                .and_then(Value::as_str)
                .filter(|d| d.len() < 128)
                .map(str::to_owned),
        }
    }

    /// The JSON text to write: the keys osbuild writes, and `digest` when
    /// known.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut map = serde_json::Map::new();
        if let Some(id) = &self.creation_boot_id {
            map.insert("creation-boot-id".into(), json!(id));
        }
        if let Some(size) = self.size {
            map.insert("size".into(), json!(size));
        }
        if let Some(digest) = &self.digest {
            map.insert("digest".into(), json!(digest));
        }
        serde_json::to_vec(&Value::Object(map)).expect("a JSON map always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let info = ObjectInfo {
            creation_boot_id: Some("0123456789abcdef0123456789abcdef".into()),
            size: Some(4096),
            digest: Some(format!("blake3:{}", "0".repeat(64))),
        };
        assert_eq!(ObjectInfo::parse(&info.to_json_bytes()), info);
        // osbuild's keys only: no digest.
        assert_eq!(
            ObjectInfo::parse(br#"{"size": 1}"#),
            ObjectInfo {
                size: Some(1),
                ..Default::default()
            }
        );
        assert_eq!(ObjectInfo::parse(b"nope"), ObjectInfo::default());
        assert_eq!(ObjectInfo::parse(b"[1]"), ObjectInfo::default());
        assert_eq!(
            ObjectInfo::parse(br#"{"size": -1, "creation-boot-id": 5}"#),
            ObjectInfo::default()
        );
    }
}
