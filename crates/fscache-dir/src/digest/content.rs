//! A regular file's content hash ([`ContentHasher`]: holes fed as zeros,
//! never read) and the reads and data ranges the copy shares with it.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;

use rustix::fs::SeekFrom;
use rustix::io::{retry_on_intr, Errno};

use super::{Version, READ_BUFFER};
use crate::stat;

/// The block of the version 3 content hash: the content is cut into
/// blocks of this many bytes, and a run of all-zero blocks is counted,
/// never hashed.
pub const BLOCK: usize = 64 << 10;

/// The domain tag that starts a version 3 content hash.
const TAG_DATA3: &[u8; 16] = b"fscache-data-v3\0";

/// A regular file's content hash in the encoding of a digest
/// [`Version`] (see the [module docs](super)), fed in order with bytes
/// ([`update`](Self::update)) and holes ([`zeros`](Self::zeros)).
///
/// Versions 1 and 2 hash the content itself, so a hole costs what
/// hashing its zeros costs. Version 3 hashes runs of 64 KiB blocks and
/// only counts the all-zero ones: a hole of any size costs nothing, and
/// a dense file of zeros costs a scan, not a hash. Either way a sparse
/// file and its dense copy have one hash.
///
/// ```
/// use fscache_dir::digest::{ContentHasher, Version};
///
/// let mut dense = ContentHasher::new(Version::V3);
/// dense.update(&vec![0; 1 << 20]);
/// dense.update(b"tail");
/// let mut sparse = ContentHasher::new(Version::V3);
/// sparse.zeros(1 << 20);
/// sparse.update(b"tail");
/// assert_eq!(dense.finalize(), sparse.finalize());
/// ```
#[derive(Clone, Debug)]
pub struct ContentHasher(Inner);

#[derive(Clone, Debug)]
enum Inner {
    /// Versions 1 and 2: BLAKE3 of the content.
    Plain(Box<blake3::Hasher>),
    /// Version 3: runs of blocks.
    Runs(Box<Runs>),
}

/// The state of a version 3 content hash.
#[derive(Clone, Debug)]
struct Runs {
    /// BLAKE3 over the tag and the runs ended so far.
    outer: blake3::Hasher,
    /// BLAKE3 of the data run being fed.
    data: blake3::Hasher,
    /// The run being fed.
    run: Run,
    /// The bytes of the block being filled (fewer than [`BLOCK`]).
    pending: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
enum Run {
    /// Nothing fed yet.
    None,
    /// A run of data blocks of this many bytes.
    Data(u64),
    /// A run of all-zero blocks of this many bytes.
    Zero(u64),
}

impl ContentHasher {
    /// An empty content so far, hashed as `version` hashes a file.
    pub fn new(version: Version) -> Self {
        match version {
            Version::V1 | Version::V2 => ContentHasher(Inner::Plain(Box::default())),
            Version::V3 => {
                let mut outer = blake3::Hasher::new();
                outer.update(TAG_DATA3);
                ContentHasher(Inner::Runs(Box::new(Runs {
                    outer,
                    data: blake3::Hasher::new(),
                    run: Run::None,
                    pending: Vec::new(),
                })))
            }
        }
    }

    /// The content hash in `version` of the whole content `data`, whose
    /// BLAKE3 is `hash` (known already, say from a chunk that is the whole
    /// file): in versions 1 and 2 that is `hash`; in version 3 a content
    /// without an all-zero block is one data run, whose hash needs no
    /// second pass over the bytes, and any other is hashed again.
    pub fn of_whole(version: Version, data: &[u8], hash: &blake3::Hash) -> blake3::Hash {
        if !matches!(version, Version::V3) {
            return *hash;
        }
        if data.is_empty() || data.chunks(BLOCK).any(is_zero) {
            let mut h = ContentHasher::new(version);
            h.update(data);
            return h.finalize();
        }
        let mut outer = blake3::Hasher::new();
        outer.update(TAG_DATA3);
        outer.update(&[0x01]);
        outer.update(&(data.len() as u64).to_le_bytes());
        outer.update(hash.as_bytes());
        outer.finalize()
    }

    /// The next `bytes` of the content.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            Inner::Plain(h) => {
                h.update(bytes);
            }
            Inner::Runs(r) => r.update(bytes),
        }
    }

    /// The next `n` bytes of the content are zeros (a hole).
    pub fn zeros(&mut self, n: u64) {
        match &mut self.0 {
            Inner::Plain(h) => hash_zeros(h, n),
            Inner::Runs(r) => r.zeros(n),
        }
    }

    /// The hash of all that was fed.
    pub fn finalize(self) -> blake3::Hash {
        match self.0 {
            Inner::Plain(h) => h.finalize(),
            Inner::Runs(mut r) => {
                let last = std::mem::take(&mut r.pending);
                r.blocks(&last);
                r.end_run();
                r.outer.finalize()
            }
        }
    }
}

impl Runs {
    fn update(&mut self, mut bytes: &[u8]) {
        if !self.pending.is_empty() {
            let take = (BLOCK - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < BLOCK {
                return;
            }
            self.flush_pending();
        }
        let whole = bytes.len() / BLOCK * BLOCK;
        self.blocks(&bytes[..whole]);
        self.pending.extend_from_slice(&bytes[whole..]);
    }

    fn zeros(&mut self, mut n: u64) {
        if !self.pending.is_empty() {
            let take = (BLOCK - self.pending.len()).min(usize::try_from(n).unwrap_or(BLOCK));
            self.pending.resize(self.pending.len() + take, 0);
            n -= take as u64;
            if self.pending.len() < BLOCK {
                return;
            }
            self.flush_pending();
        }
        let whole = n / BLOCK as u64 * BLOCK as u64;
        if whole > 0 {
            self.zero_run(whole);
        }
        // Fewer than BLOCK bytes: they fit in memory.
        self.pending.resize((n - whole) as usize, 0);
    }

    /// Hash the full block in `pending` and empty it (keeping its buffer).
    fn flush_pending(&mut self) {
        let block = std::mem::take(&mut self.pending);
        self.blocks(&block);
        self.pending = block;
        self.pending.clear();
    }

    /// Whole blocks, or the last (shorter) block of the content: each
    /// maximal span of data blocks is hashed with one call.
    fn blocks(&mut self, bytes: &[u8]) {
        let mut start = 0;
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + BLOCK).min(bytes.len());
            if is_zero(&bytes[at..end]) {
                if start < at {
                    self.data_bytes(&bytes[start..at]);
                }
                self.zero_run((end - at) as u64);
                start = end;
            }
            at = end;
        }
        if start < bytes.len() {
            self.data_bytes(&bytes[start..]);
        }
    }

    fn data_bytes(&mut self, bytes: &[u8]) {
        self.run = match self.run {
            Run::Data(n) => Run::Data(n + bytes.len() as u64),
            _ => {
                self.end_run();
                Run::Data(bytes.len() as u64)
            }
        };
        self.data.update(bytes);
    }

    fn zero_run(&mut self, n: u64) {
        self.run = match self.run {
            Run::Zero(z) => Run::Zero(z + n),
            _ => {
                self.end_run();
                Run::Zero(n)
            }
        };
    }

    /// Write the run being fed into `outer`.
    fn end_run(&mut self) {
        match std::mem::replace(&mut self.run, Run::None) {
            Run::None => {}
            Run::Zero(n) => {
                self.outer.update(&[0x00]);
                self.outer.update(&n.to_le_bytes());
            }
            Run::Data(n) => {
                self.outer.update(&[0x01]);
                self.outer.update(&n.to_le_bytes());
                self.outer.update(self.data.finalize().as_bytes());
                self.data.reset();
            }
        }
    }
}

/// Whether every byte of `b` is zero (checked 64 bytes at a time, so the
/// check of data stops at once and a block of zeros is one scan).
fn is_zero(b: &[u8]) -> bool {
    b.chunks(64).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// Read `file` from its offset to its end through `buf` (grown to
/// [`READ_BUFFER`] first), feeding each chunk to `hasher` if there is one,
/// then to `each` (to write it elsewhere, report progress); returns the
/// byte count.
pub(crate) fn read_chunks(
    mut file: &File,
    buf: &mut Vec<u8>,
    mut hasher: Option<&mut ContentHasher>,
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
fn hash_zeros(hasher: &mut blake3::Hasher, mut n: u64) {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// The size and content hash (in `version`) of `file` (from its start),
/// read through `buf`; a sparse file's holes are fed as zeros without
/// reading them.
pub(crate) fn hash_content(
    file: &File,
    buf: &mut Vec<u8>,
    version: Version,
) -> io::Result<(u64, blake3::Hash)> {
    let st = retry_on_intr(|| rustix::fs::fstat(file))?;
    let size = stat::size(&st);
    let mut hasher = ContentHasher::new(version);
    if stat::space(&st) < size {
        if let Some(ranges) = data_ranges(file, size)? {
            let mut at = 0;
            for (offset, len) in ranges {
                hasher.zeros(offset - at);
                retry_on_intr(|| rustix::fs::seek(file, SeekFrom::Start(offset)))?;
                let mut part = Read::take(file, len);
                let n = read_part(&mut part, buf, &mut hasher)?;
                at = offset + n;
            }
            hasher.zeros(size.saturating_sub(at));
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
    hasher: &mut ContentHasher,
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
