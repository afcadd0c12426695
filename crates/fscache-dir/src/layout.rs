//! The layout of a cache directory: the names of its files and
//! directories, and what scaffolding writes into `CACHEDIR.TAG`
//! (`docs/format.md`, "Layout").

/// `objects/`: committed entries and entries being stored.
pub const OBJECTS: &str = "objects";
/// `stage/`: scratch entries.
pub const STAGE: &str = "stage";
/// `cache.info`: the cache's configuration (JSON object).
pub const CACHE_INFO: &str = "cache.info";
/// `cache.lock`: shared by every open handle, exclusive for repair.
pub const CACHE_LOCK: &str = "cache.lock";
/// `cache.size`: bytes accounted to committed entries (JSON integer).
pub const CACHE_SIZE: &str = "cache.size";
/// `CACHEDIR.TAG`: marks the directory as a cache for backup tools.
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
/// `object.info` of an entry: `{"creation-boot-id": …, "size": …}`.
pub const OBJECT_INFO: &str = "object.info";
/// `object.lock` of an entry: locks the entry; its atime is the last use.
pub const OBJECT_LOCK: &str = "object.lock";
/// `data/` of an entry: the caller's content.
pub const DATA: &str = "data";

/// What scaffolding writes to a new `CACHEDIR.TAG`
/// (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG_CONTENTS: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This is a cache directory tag created by fscache (see https://bford.info/cachedir/)\n";
