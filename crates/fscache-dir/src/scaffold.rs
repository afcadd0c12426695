//! Scaffolding: the directories and files of a cache, each created only
//! when missing, safe on a live cache and in parallel (`docs/format.md`,
//! "Scaffold").

use std::io;
use std::path::Path;

use crate::atomic::Publish;
use crate::layout::{
    CACHEDIR_TAG, CACHEDIR_TAG_CONTENTS, CACHE_INFO, CACHE_LOCK, CACHE_SIZE, OBJECTS, STAGE,
};
use crate::CacheDir;

/// See [`CacheDir::scaffold_created_by`].
pub(crate) fn scaffold_created_by(cache: &CacheDir, boot_id: Option<&str>) -> io::Result<()> {
    let info = match boot_id {
        Some(id) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!(r#"{{"version": 1, "creation-boot-id": "{id}"}}"#)
        }
        _ => r#"{"version": 1}"#.to_owned(),
    };
    let mut made = false;
    for d in [OBJECTS, STAGE] {
        match crate::retry_io(|| cache.dir.create_dir(d)) {
            Ok(()) => made = true,
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(cache.err("create directory", Path::new(d), e))
            }
            Err(_) => {}
        }
    }
    if made {
        // The atomic files below sync the root only when they create
        // something; the new directories' names need it regardless
        // (once per cache, so in every mode, like the files).
        cache.sync_dir(Path::new(""))?;
    }
    let files: [(&str, &[u8]); 4] = [
        (CACHEDIR_TAG, CACHEDIR_TAG_CONTENTS.as_bytes()),
        (CACHE_INFO, info.as_bytes()),
        (CACHE_LOCK, b""),
        (CACHE_SIZE, b"0"),
    ];
    for (name, contents) in files {
        // Skip the temp-file dance when the file is there already: the
        // common case for every open of an existing cache.
        if cache.stat(Path::new(name)).is_ok() {
            continue;
        }
        // Durably in every mode: an empty `cache.info` after a power
        // loss would make the cache unopenable (found on the lazy
        // FUSE file system); this runs once per cache.
        cache.atomic_file_durable(
            Path::new(OBJECTS),
            Path::new(name),
            contents,
            Publish::NoReplace,
        )?;
    }
    Ok(())
}
