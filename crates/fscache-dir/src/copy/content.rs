//! Moving one file's content: `ioctl(FICLONE)` → `copy_file_range(2)` →
//! `read`/`write`, remembering per source file system what was refused.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};

use rustix::fs::Stat;
use rustix::io::Errno;

use crate::stat;

/// How many bytes one `copy_file_range` call moves at most: small enough for
/// a progress bar to move on big files, big enough to cost nothing.
const RANGE_CHUNK: usize = 8 << 20;

/// Buffer size of the `read`/`write` fallback.
const RW_BUFFER: usize = 256 << 10;

/// Errnos by which `ioctl(FICLONE)` says the file system (or this pair of
/// them) cannot clone: ioctl_ficlone(2) lists EOPNOTSUPP, EXDEV and EINVAL;
/// ENOTTY and EBADF come from file systems without the ioctl.
const CLONE_REFUSALS: &[Errno] = &[
    Errno::OPNOTSUPP,
    Errno::XDEV,
    Errno::INVAL,
    Errno::NOTTY,
    Errno::BADF,
];

/// Errnos by which `copy_file_range(2)` says it cannot copy between these
/// file systems: EXDEV across file systems (before 5.3 and since 5.19),
/// ENOSYS before 4.5, EOPNOTSUPP and EINVAL where a file system does not
/// take part, EBADF on some special files.
const RANGE_REFUSALS: &[Errno] = &[
    Errno::XDEV,
    Errno::NOSYS,
    Errno::OPNOTSUPP,
    Errno::INVAL,
    Errno::BADF,
];

/// How file content is moved; ordered from cheapest to most general.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    /// `ioctl(FICLONE)`: share extents.
    Reflink,
    /// `copy_file_range(2)`: in-kernel copy.
    CopyFileRange,
    /// `read(2)`/`write(2)` through a user-space buffer.
    ReadWrite,
}

/// What moving one file's content did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Moved {
    /// Bytes of content now in the destination.
    pub(super) bytes: u64,
    /// Whether it was cloned (no data copied).
    pub(super) reflinked: bool,
}

/// The content mover of one copy: the progress callback and, per source
/// `st_dev`, the cheapest method not yet refused there.
pub(super) struct Content<'a> {
    pub(super) progress: &'a mut dyn FnMut(u64) -> io::Result<()>,
    pub(super) methods: HashMap<u64, Method>,
}

impl Content<'_> {
    /// Move the content of `src` (whose `fstat` is `st`) into the empty
    /// `dst` with the cheapest method this source file system has not
    /// refused yet.
    pub(super) fn copy(&mut self, src: &File, dst: &File, st: &Stat) -> io::Result<Moved> {
        let size = stat::size(st);
        let dev = stat::device(st);
        let method = match self.methods.get(&dev) {
            // Nothing to clone or copy in the kernel; read(2) still finds the
            // content of a pseudo file that reports size 0.
            _ if size == 0 => Method::ReadWrite,
            Some(&method) => method,
            None => Method::Reflink,
        };
        if method == Method::Reflink {
            match retry_on_intr(|| rustix::fs::ioctl_ficlone(dst, src)) {
                Ok(()) => {
                    (self.progress)(size)?;
                    return Ok(Moved {
                        bytes: size,
                        reflinked: true,
                    });
                }
                Err(e) if CLONE_REFUSALS.contains(&e) => {
                    self.methods.insert(dev, Method::CopyFileRange);
                }
                // Anything else (EPERM on an immutable file, ETXTBSY…) may be
                // about this file only: copy it instead, try cloning again
                // for the next.
                Err(_) => {}
            }
        }
        let mut copied = 0u64;
        if method != Method::ReadWrite {
            loop {
                let chunk = retry_on_intr(|| {
                    rustix::fs::copy_file_range(src, None, dst, None, RANGE_CHUNK)
                });
                match chunk {
                    // Some pseudo file systems report EOF to copy_file_range
                    // although read(2) has data (coreutils guards the same
                    // way): with nothing copied, let read/write have a look.
                    Ok(0) if copied == 0 => break,
                    Ok(0) => {
                        return Ok(Moved {
                            bytes: copied,
                            reflinked: false,
                        })
                    }
                    Ok(n) => {
                        copied += n as u64;
                        (self.progress)(n as u64)?;
                    }
                    // Not supported here: both file offsets moved by exactly
                    // `copied`, so read/write carries on from there.
                    Err(e) if RANGE_REFUSALS.contains(&e) => {
                        self.methods.insert(dev, Method::ReadWrite);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        copied += read_write(src, dst, &mut *self.progress)?;
        if copied == 0 {
            // Every file moves the progress bar at least once.
            (self.progress)(0)?;
        }
        Ok(Moved {
            bytes: copied,
            reflinked: false,
        })
    }
}

/// Copy the rest of `src` into `dst` through a buffer, reporting each chunk;
/// returns the bytes copied.
fn read_write(
    mut src: &File,
    mut dst: &File,
    progress: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; RW_BUFFER];
    let mut copied = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
        copied += n as u64;
        progress(n as u64)?;
    }
}

/// Call `f` again while it fails with `EINTR`.
fn retry_on_intr<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}
