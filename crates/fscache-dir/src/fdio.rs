//! Small-file I/O on descriptors: reading a protocol file (bounded),
//! writing all of a buffer, `stat` and `fsync` of a directory, each
//! retrying `EINTR`.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::CacheDir;

/// See [`CacheDir::stat`].
pub(crate) fn stat(cache: &CacheDir, rel: &Path) -> io::Result<Stat> {
    rustix::fs::statat(&cache.dir, rel, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| cache.err("stat", rel, e))
}

/// See [`CacheDir::read_small`].
pub(crate) fn read_small(cache: &CacheDir, rel: &Path) -> io::Result<Vec<u8>> {
    // O_NONBLOCK: a FIFO planted where a protocol file belongs must not
    // hang the open; on a regular file it changes nothing.
    let fd = cache
        .open_raw(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())
        .map_err(|e| cache.err("open", rel, e))?;
    read_small_fd(&fd).map_err(|e| cache.err("read", rel, e))
}

/// See [`CacheDir::sync_dir`].
pub(crate) fn sync_dir(cache: &CacheDir, rel: &Path) -> io::Result<()> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let fd = cache
        .open_raw(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| cache.err("open directory", rel, e))?;
    rustix::fs::fsync(&fd).map_err(|e| cache.err("sync", rel, e))
}

/// Read all of a protocol file through `fd` (from its current offset),
/// refusing more than 1 MiB.
///
/// # Errors
///
/// The read failed, or the file is larger than 1 MiB (`InvalidData`).
pub fn read_small_fd(fd: &impl AsFd) -> io::Result<Vec<u8>> {
    const LIMIT: usize = 1 << 20;
    const CHUNK: usize = 4096;
    let mut buf = Vec::new();
    loop {
        let start = buf.len();
        buf.resize(start + CHUNK, 0);
        let n = match rustix::io::read(fd, &mut buf[start..]) {
            Ok(n) => n,
            Err(Errno::INTR) => {
                buf.truncate(start);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        buf.truncate(start + n);
        // A regular file reads short only at its end: no second read to
        // see 0 (protocol files are tiny, so this is one read in all).
        if n < CHUNK {
            return Ok(buf);
        }
        if buf.len() > LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "protocol file larger than 1 MiB",
            ));
        }
    }
}

pub(crate) fn write_all_fd(fd: &impl AsFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
