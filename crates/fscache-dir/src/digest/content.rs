//! A regular file's content hash (holes hashed as zeros, never read) and
//! the reads and data ranges the copy shares with it.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;

use rustix::fs::SeekFrom;
use rustix::io::{retry_on_intr, Errno};

use super::READ_BUFFER;
use crate::stat;

/// Read `file` from its offset to its end through `buf` (grown to
/// [`READ_BUFFER`] first), feeding each chunk to `hasher` if there is one,
/// then to `each` (to write it elsewhere, report progress); returns the
/// byte count.
pub(crate) fn read_chunks(
    mut file: &File,
    buf: &mut Vec<u8>,
    mut hasher: Option<&mut blake3::Hasher>,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    if buf.len() < READ_BUFFER {
        buf.resize(READ_BUFFER, 0);
    }
    let mut total = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&buf[..n]);
        }
        each(&buf[..n])?;
        total += n as u64;
    }
}

/// The data ranges `(offset, length)` of the open regular file `file` of
/// `size` bytes, from `lseek(SEEK_DATA)`/`lseek(SEEK_HOLE)`; `None` when
/// the file system cannot say (the whole file is then data) or when the
/// file has no hole.
pub fn data_ranges(file: impl AsFd, size: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
    let fd = file.as_fd();
    let mut ranges = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match retry_on_intr(|| rustix::fs::seek(fd, SeekFrom::Data(at))) {
            Ok(s) => s,
            // No data past `at`: the rest is a hole.
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::OPNOTSUPP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match retry_on_intr(|| rustix::fs::seek(fd, SeekFrom::Hole(start))) {
            Ok(e) => e.min(size),
            Err(Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if end > start {
            ranges.push((start, end - start));
        }
        at = end;
    }
    retry_on_intr(|| rustix::fs::seek(fd, SeekFrom::Start(0)))?;
    if ranges.len() == 1 && ranges[0] == (0, size) {
        return Ok(None);
    }
    Ok(Some(ranges))
}

/// Feed `n` zero bytes to `hasher` (a hole).
pub(crate) fn hash_zeros(hasher: &mut blake3::Hasher, mut n: u64) {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// The size and content hash of `file` (from its start), read through
/// `buf`; a sparse file's holes are hashed as zeros without reading them.
pub(crate) fn hash_content(file: &File, buf: &mut Vec<u8>) -> io::Result<(u64, blake3::Hash)> {
    let st = retry_on_intr(|| rustix::fs::fstat(file))?;
    let size = stat::size(&st);
    let mut hasher = blake3::Hasher::new();
    if stat::space(&st) < size {
        if let Some(ranges) = data_ranges(file, size)? {
            let mut at = 0;
            for (offset, len) in ranges {
                hash_zeros(&mut hasher, offset - at);
                retry_on_intr(|| rustix::fs::seek(file, SeekFrom::Start(offset)))?;
                let mut part = Read::take(file, len);
                let n = read_part(&mut part, buf, &mut hasher)?;
                at = offset + n;
            }
            hash_zeros(&mut hasher, size.saturating_sub(at));
            retry_on_intr(|| rustix::fs::seek(file, SeekFrom::Start(size)))?;
            // Grown since the fstat: the rest, as a dense file would.
            let n = read_chunks(file, buf, Some(&mut hasher), |_| Ok(()))?;
            return Ok((size.max(at) + n, hasher.finalize()));
        }
    }
    let n = read_chunks(file, buf, Some(&mut hasher), |_| Ok(()))?;
    Ok((n, hasher.finalize()))
}

/// Read all of `part` through `buf` into `hasher`; the bytes read.
fn read_part(
    part: &mut impl Read,
    buf: &mut Vec<u8>,
    hasher: &mut blake3::Hasher,
) -> io::Result<u64> {
    if buf.len() < READ_BUFFER {
        buf.resize(READ_BUFFER, 0);
    }
    let mut total = 0;
    loop {
        match part.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
