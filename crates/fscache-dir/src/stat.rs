//! Width-normalised fields of `rustix::fs::Stat`: the one place that knows
//! the field types differ between targets.
//!
//! `st_dev`, `st_ino`, `st_blocks` and the time fields are `u64`, `i64`,
//! `c_long` or `u32` depending on the architecture, so casts that are
//! no-ops on one target are needed on another. Everything else in the
//! workspace reads a `Stat` through these functions.

// On x86_64 most of the conversions below are identities.
#![allow(clippy::unnecessary_cast, clippy::useless_conversion)]

pub use rustix::fs::Stat;

/// `fstat(fd)`.
///
/// # Errors
///
/// The `fstat` failed (the caller folds in the path it knows).
pub fn fstat(fd: &impl std::os::fd::AsFd) -> std::io::Result<Stat> {
    rustix::io::retry_on_intr(|| rustix::fs::fstat(fd)).map_err(Into::into)
}

/// The identity of an inode: `(st_dev, st_ino)`.
pub type Inode = (u64, u64);

/// A point in time as the file system records it: seconds and nanoseconds
/// since the epoch.
pub type Stamp = (i64, i64);

/// `(st_dev, st_ino)` of `st`.
pub fn inode(st: &Stat) -> Inode {
    (st.st_dev as u64, st.st_ino as u64)
}

/// `st_dev` of `st`: the file system it is on.
pub fn device(st: &Stat) -> u64 {
    st.st_dev as u64
}

/// The access time of `st`.
pub fn atime(st: &Stat) -> Stamp {
    (st.st_atime as i64, st.st_atime_nsec as i64)
}

/// The modification time of `st`.
pub fn mtime(st: &Stat) -> Stamp {
    (st.st_mtime as i64, st.st_mtime_nsec as i64)
}

/// `st_size` as a byte count (0 for the negative sizes no regular file has).
pub fn size(st: &Stat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

/// The space `st` takes: `st_blocks × 512` (`stat(2)` counts 512-byte
/// blocks whatever the file system's block size).
pub fn space(st: &Stat) -> u64 {
    (st.st_blocks as u64).saturating_mul(512)
}

/// Whether other names may share the inode of `st` (`st_nlink > 1`), so a
/// walk must remember it to visit it once.
pub fn is_multiply_linked(st: &Stat) -> bool {
    st.st_nlink > 1
}

/// `clock_gettime(CLOCK_MONOTONIC_COARSE)` in nanoseconds: a vDSO read
/// without a time-stamp counter read, as fine as a clock tick (1–10 ms),
/// for deadlines on hot paths that need no finer clock.
///
/// # References
///
/// * [`clock_gettime(2)`](https://man7.org/linux/man-pages/man2/clock_gettime.2.html)
#[doc(alias = "CLOCK_MONOTONIC_COARSE")]
pub fn coarse_monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn fields_match_std_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, vec![0u8; 5000]).unwrap();
        let st = rustix::fs::stat(&p).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(inode(&st), (m.dev(), m.ino()));
        assert_eq!(device(&st), m.dev());
        assert_eq!(atime(&st), (m.atime(), m.atime_nsec()));
        assert_eq!(mtime(&st), (m.mtime(), m.mtime_nsec()));
        assert_eq!(size(&st), 5000);
        assert_eq!(space(&st), m.blocks() * 512);
        assert!(!is_multiply_linked(&st));
        std::fs::hard_link(&p, tmp.path().join("g")).unwrap();
        assert!(is_multiply_linked(&rustix::fs::stat(&p).unwrap()));
    }
}
