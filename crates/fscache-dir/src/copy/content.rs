//! Moving one file's content: `ioctl(FICLONE)` → `copy_file_range(2)` →
//! `read`/`write`, remembering per source file system what was refused.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};

use rustix::fs::Stat;
use rustix::io::Errno;
use std::os::unix::fs::FileExt;

use crate::digest::{self, ContentHasher, Version};
use crate::stat;

/// How many bytes one `copy_file_range` call moves at most: small enough for
/// a progress bar to move on big files, big enough to cost nothing.
const RANGE_CHUNK: usize = 8 << 20;

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
    /// Whether only its data ranges were copied, its holes kept.
    pub(super) sparse: bool,
}

/// The content mover of one copy: the progress callback, per source
/// `st_dev` the cheapest method not yet refused there, and one buffer for
/// every `read`/`write`.
pub(super) struct Content<'a> {
    pub(super) progress: &'a mut dyn FnMut(u64) -> io::Result<()>,
    pub(super) methods: HashMap<u64, Method>,
    pub(super) buf: Vec<u8>,
}

impl<'a> Content<'a> {
    /// A mover that reports to `progress` and has no refusal noted yet.
    pub(super) fn new(progress: &'a mut dyn FnMut(u64) -> io::Result<()>) -> Self {
        Content {
            progress,
            methods: HashMap::new(),
            buf: Vec::new(),
        }
    }

    /// The method to try first for a file of `st`.
    fn first_method(&self, st: &Stat) -> Method {
        match self.methods.get(&stat::device(st)) {
            // Nothing to clone or copy in the kernel; read(2) still finds the
            // content of a pseudo file that reports size 0.
            _ if stat::size(st) == 0 => Method::ReadWrite,
            Some(&method) => method,
            None => Method::Reflink,
        }
    }

    /// `ioctl(FICLONE)` `src` into `dst`; whether it cloned. A refusal for
    /// the whole file system is remembered.
    fn try_reflink(&mut self, src: &File, dst: &File, st: &Stat) -> io::Result<bool> {
        match retry_on_intr(|| rustix::fs::ioctl_ficlone(dst, src)) {
            Ok(()) => {
                (self.progress)(stat::size(st))?;
                Ok(true)
            }
            Err(e) if CLONE_REFUSALS.contains(&e) => {
                self.methods.insert(stat::device(st), Method::CopyFileRange);
                Ok(false)
            }
            // Anything else (EPERM on an immutable file, ETXTBSY…) may be
            // about this file only: copy it instead, try cloning again for
            // the next.
            Err(_) => Ok(false),
        }
    }

    /// Move the content of `src` (whose `fstat` is `st`) into the empty
    /// `dst` with the cheapest method this source file system has not
    /// refused yet.
    pub(super) fn copy(&mut self, src: &File, dst: &File, st: &Stat) -> io::Result<Moved> {
        let method = self.first_method(st);
        if method == Method::Reflink && self.try_reflink(src, dst, st)? {
            return Ok(Moved {
                bytes: stat::size(st),
                reflinked: true,
                sparse: false,
            });
        }
        if let Some(ranges) = sparse_ranges(src, st)? {
            let n = self.copy_ranges(src, dst, st, &ranges, None)?;
            return Ok(Moved {
                bytes: n,
                reflinked: false,
                sparse: true,
            });
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
                            sparse: false,
                        })
                    }
                    Ok(n) => {
                        copied += n as u64;
                        (self.progress)(n as u64)?;
                    }
                    // Not supported here: both file offsets moved by exactly
                    // `copied`, so read/write carries on from there.
                    Err(e) if RANGE_REFUSALS.contains(&e) => {
                        self.methods.insert(stat::device(st), Method::ReadWrite);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        copied += self.read_write(src, dst, None)?;
        if copied == 0 {
            // Every file moves the progress bar at least once.
            (self.progress)(0)?;
        }
        Ok(Moved {
            bytes: copied,
            reflinked: false,
            sparse: false,
        })
    }

    /// [`copy`](Self::copy), and the content hash of what was copied, from
    /// one read of the source: a clone where the file system shares extents
    /// (it costs nothing; the source is then read once to hash it), else
    /// `read`/`write` hashing each buffer between its read and its write.
    /// `copy_file_range` is not used: the data would not pass through the
    /// process, and hashing it would take a second read.
    ///
    /// Returns what was moved, and the count and hash (in `version`) of the
    /// bytes hashed.
    pub(super) fn copy_hashed(
        &mut self,
        src: &File,
        dst: &File,
        st: &Stat,
        version: Version,
    ) -> io::Result<(Moved, u64, blake3::Hash)> {
        if self.first_method(st) == Method::Reflink && self.try_reflink(src, dst, st)? {
            // FICLONE moves neither file offset: `src` is read from its start.
            let (n, hash) = digest::hash_content(src, &mut self.buf, version)?;
            let moved = Moved {
                bytes: stat::size(st),
                reflinked: true,
                sparse: false,
            };
            return Ok((moved, n, hash));
        }
        let mut hasher = ContentHasher::new(version);
        if let Some(ranges) = sparse_ranges(src, st)? {
            let n = self.copy_ranges(src, dst, st, &ranges, Some(&mut hasher))?;
            let moved = Moved {
                bytes: n,
                reflinked: false,
                sparse: true,
            };
            return Ok((moved, n, hasher.finalize()));
        }
        let n = self.read_write(src, dst, Some(&mut hasher))?;
        if n == 0 {
            // Every file moves the progress bar at least once.
            (self.progress)(0)?;
        }
        let moved = Moved {
            bytes: n,
            reflinked: false,
            sparse: false,
        };
        Ok((moved, n, hasher.finalize()))
    }

    /// Copy the rest of `src` into `dst` through the buffer, reporting each
    /// chunk and feeding it to `hasher` if there is one; returns the bytes
    /// copied.
    fn read_write(
        &mut self,
        src: &File,
        mut dst: &File,
        hasher: Option<&mut ContentHasher>,
    ) -> io::Result<u64> {
        let progress = &mut *self.progress;
        digest::read_chunks(src, &mut self.buf, hasher, |chunk| {
            dst.write_all(chunk)?;
            progress(chunk.len() as u64)
        })
    }
}

impl Content<'_> {
    /// Copy only the data `ranges` of the sparse `src` into `dst` at the
    /// same offsets (`copy_file_range` with explicit offsets, or
    /// `pread`/`pwrite` when hashing or where it is refused), then set
    /// `dst`'s length to the source's, so its holes stay holes. Holes count
    /// as progress and are hashed as zeros. Returns the file's size.
    fn copy_ranges(
        &mut self,
        src: &File,
        dst: &File,
        st: &Stat,
        ranges: &[(u64, u64)],
        mut hasher: Option<&mut ContentHasher>,
    ) -> io::Result<u64> {
        let size = stat::size(st);
        let mut at = 0u64;
        if self.buf.len() < digest::READ_BUFFER {
            self.buf.resize(digest::READ_BUFFER, 0);
        }
        for &(offset, len) in ranges {
            if let Some(h) = hasher.as_deref_mut() {
                h.zeros(offset - at);
            }
            (self.progress)(offset - at)?;
            let end = offset + len;
            let mut pos = offset;
            if hasher.is_none() && self.first_method(st) != Method::ReadWrite {
                while pos < end {
                    let (mut off_in, mut off_out) = (pos, pos);
                    let want = (end - pos).min(RANGE_CHUNK as u64) as usize;
                    match retry_on_intr(|| {
                        rustix::fs::copy_file_range(
                            src,
                            Some(&mut off_in),
                            dst,
                            Some(&mut off_out),
                            want,
                        )
                    }) {
                        Ok(0) => break,
                        Ok(n) => {
                            pos += n as u64;
                            (self.progress)(n as u64)?;
                        }
                        Err(e) if RANGE_REFUSALS.contains(&e) => {
                            self.methods.insert(stat::device(st), Method::ReadWrite);
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            while pos < end {
                let want = (end - pos).min(self.buf.len() as u64) as usize;
                let n = match src.read_at(&mut self.buf[..want], pos) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                let chunk = &self.buf[..n];
                if let Some(h) = hasher.as_deref_mut() {
                    h.update(chunk);
                }
                dst.write_all_at(chunk, pos)?;
                pos += n as u64;
                (self.progress)(n as u64)?;
            }
            if pos < end {
                return Err(io::Error::other("file shrank while being copied"));
            }
            at = end;
        }
        if let Some(h) = hasher {
            h.zeros(size - at);
        }
        (self.progress)(size - at)?;
        crate::retry_io(|| dst.set_len(size))?;
        Ok(size)
    }
}

/// The data ranges of `src` if it is sparse (allocates less than its
/// size) and its file system can say where its data is.
fn sparse_ranges(src: &File, st: &Stat) -> io::Result<Option<Vec<(u64, u64)>>> {
    let size = stat::size(st);
    if size == 0 || stat::space(st) >= size {
        return Ok(None);
    }
    digest::data_ranges(src, size)
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
