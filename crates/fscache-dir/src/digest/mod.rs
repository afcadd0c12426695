//! The tree digest: the identity of a directory tree, as `blake3v2:<64 hex>`
//! (version 2: types, names, modes, numeric owners, extended attributes,
//! symlink targets, device numbers and content) or `blake3:<64 hex>`
//! (version 1: types, names, modes and content, still read and checked).
//!
//! Use this to record what a cache entry holds and to check it later
//! ([`digest_tree`]), or to learn it while copying a tree in
//! ([`copy_tree_into_with_digest`](crate::copy::copy_tree_into_with_digest),
//! which reads the data once for both).
//!
//! # Encoding (version 2, what new digests are)
//!
//! BLAKE3 (unkeyed, 32-byte output) throughout. All integers are unsigned
//! little-endian; `u64le(n)` is 8 bytes, `u32le(n)` 4 bytes.
//!
//! * A regular file's **content hash** is `BLAKE3(content)`, a hole read as
//!   zeros (a sparse file and its dense copy have one hash).
//! * A directory's **digest** is `BLAKE3(TAG2 ‖ entry₁ ‖ … ‖ entryₙ)` where
//!   `TAG2` is the 16 bytes `fscache-tree-v2` followed by one `0x00`, and the
//!   entries are the directory's children (without `.` and `..`) in
//!   increasing order of their names compared as byte strings. An empty
//!   directory's digest is `BLAKE3(TAG2)`.
//! * Each entry is
//!
//!   ```text
//!   kind: u8 ‖ perm: u32le ‖ uid: u32le ‖ gid: u32le
//!     ‖ u64le(len(name)) ‖ name
//!     ‖ u64le(count) ‖ (u64le(len(xname)) ‖ xname ‖ u64le(len(xvalue)) ‖ xvalue)*
//!     ‖ body
//!   ```
//!
//!   where `perm` is `st_mode & 0o7777` from `lstat` (permission,
//!   set-user-ID, set-group-ID and sticky bits), `uid` and `gid` the numeric
//!   owner, `name` the raw bytes of the child's name, then its `count`
//!   extended attributes sorted by name as bytes (names without the NUL,
//!   `system.posix_acl_*` and `security.capability` among them, as the
//!   kernel lists them), and `kind` and `body` are
//!
//!   | kind | `kind` byte | `body` |
//!   |---|---|---|
//!   | regular file | `0x01` | `u64le(size) ‖ BLAKE3(content)` (32 bytes) |
//!   | directory | `0x02` | the directory's digest (32 bytes) |
//!   | symbolic link | `0x03` | `u64le(len(target)) ‖ target` (raw bytes, never followed) |
//!   | FIFO | `0x04` | nothing |
//!   | socket | `0x05` | nothing |
//!   | character device | `0x06` | `u32le(major) ‖ u32le(minor)` |
//!   | block device | `0x07` | `u32le(major) ‖ u32le(minor)` |
//!
//! * The digest of a tree is the digest of its root directory, written
//!   `blake3v2:` followed by 64 lowercase hex digits. The root's own name,
//!   mode, owner, xattrs and times are not part of it.
//!
//! Every entry is self-delimiting (the kind fixes the body's shape, names,
//! values and targets carry their length), so the concatenation decodes one
//! way only and no two different trees encode alike; the tag keeps these
//! inputs apart from version 1 and any other use of BLAKE3. Left out on
//! purpose: times (two builds of the same bytes have one digest), and which
//! names are hard links of one inode (each name is an entry of its own). On
//! Linux a symlink's `perm` is always `0o777`.
//!
//! # Encoding (version 1)
//!
//! As version 2, with the tag `fscache-tree-v1\0`, entries
//! `kind: u8 ‖ perm: u32le ‖ u64le(len(name)) ‖ name ‖ body` (no owner, no
//! xattrs), and every FIFO, socket or device of kind `0x04` with no body.
//! Written `blake3:` and 64 hex digits.
//!
//! # Test vectors
//!
//! A root directory holding, with these permission bits, all owned by
//! `0:0` and without xattrs:
//!
//! | name | what | perm |
//! |---|---|---|
//! | `a.txt` | file, `hello\n` | `0o644` |
//! | `bin/run` | file, `#!/bin/sh\necho hi\n` | `0o755` |
//! | `bin/` | directory | `0o755` |
//! | `empty/` | empty directory | `0o700` |
//! | `link` | symlink to `a.txt` | `0o777` |
//! | `zero` | empty file | `0o600` |
//!
//! has the version 1 digest
//! `blake3:c9ef6f2132b114dcf559ad76562699f7208c2500734eb542c3636e21278c118d`
//! and, when `a.txt` also has the xattr `user.k` = `v`, the version 2
//! digest
//! `blake3v2:d0ff3af4795a6ff2a0e1229aa2253e0fa238aeae073c618041edf61d9dcc3b60`
//! (the tests `vector` and `vector_v2` build them and check these literals).
//!
//! # Limitations
//!
//! * A tree that changes while it is hashed gives the digest of some
//!   mixture of its states.
//! * Files are hashed one after the other on the calling thread.

#[cfg(test)]
pub(crate) mod tests;

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::str::FromStr;

use rustix::fs::{FileType, Mode, OFlags, SeekFrom, Stat};
use rustix::io::{retry_on_intr, Errno};

use crate::meta::{self, Xattr};
use crate::stat;
use crate::walk::{open_dir_nofollow, Frame, HardLinks, Visit, Visitor, Walk};

/// What a version 1 [`Digest`] is written with: `blake3:` and 64 hex digits.
pub const PREFIX: &str = "blake3:";
/// What a version 2 [`Digest`] is written with: `blake3v2:` and 64 hex digits.
pub const PREFIX_V2: &str = "blake3v2:";

/// The domain tag that starts every directory's encoding, by version.
const TAG: &[u8; 16] = b"fscache-tree-v1\0";
const TAG2: &[u8; 16] = b"fscache-tree-v2\0";

/// Buffer size for reading file content: big enough for BLAKE3's SIMD to
/// hash many chunks at once and for few `read` calls, small enough to stay
/// in the CPU's L2 cache between the read and the hash.
pub(crate) const READ_BUFFER: usize = 256 << 10;

/// Which encoding a [`Digest`] is of (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// Types, names, modes and content: `blake3:`.
    V1,
    /// Version 1 and numeric owners, xattrs and device numbers:
    /// `blake3v2:`. What new digests are.
    #[default]
    V2,
}

impl Version {
    /// The prefix a digest of this version is written with.
    pub const fn prefix(self) -> &'static str {
        match self {
            Version::V1 => PREFIX,
            Version::V2 => PREFIX_V2,
        }
    }
}

/// A tree digest: 32 bytes of BLAKE3 and the [`Version`] of the encoding
/// they hash, written `blake3v2:<64 hex>` or `blake3:<64 hex>` (see the
/// [module docs](self) for what goes in).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    version: Version,
    bytes: [u8; 32],
}

impl Digest {
    /// The version 1 digest with these bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            version: Version::V1,
            bytes,
        }
    }

    /// The digest of `version` with these bytes.
    pub const fn new(version: Version, bytes: [u8; 32]) -> Self {
        Self { version, bytes }
    }

    /// The 32 bytes of the digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The encoding these bytes hash.
    pub const fn version(&self) -> Version {
        self.version
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.version.prefix())?;
        for b in self.bytes {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A string that is not `blake3:` or `blake3v2:` followed by 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDigestError(());

impl fmt::Display for ParseDigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid digest: expected `{PREFIX_V2}` or `{PREFIX}` and 64 hex digits"
        )
    }
}

impl std::error::Error for ParseDigestError {}

impl FromStr for Digest {
    type Err = ParseDigestError;

    /// Parse `blake3v2:<64 hex>` or `blake3:<64 hex>`; upper-case hex
    /// digits are accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (version, hex) = if let Some(h) = s.strip_prefix(PREFIX_V2) {
            (Version::V2, h)
        } else if let Some(h) = s.strip_prefix(PREFIX) {
            (Version::V1, h)
        } else {
            return Err(ParseDigestError(()));
        };
        if hex.len() != 64 {
            return Err(ParseDigestError(()));
        }
        let mut bytes = [0u8; 32];
        for (b, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16).ok_or(ParseDigestError(()));
            *b = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
        }
        Ok(Self { version, bytes })
    }
}

/// What an entry says besides its kind and body: its permission bits,
/// numeric owner and xattrs (sorted by name). Version 1 uses the bits only.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeMeta<'a> {
    /// `st_mode`; only `& 0o7777` is encoded.
    pub perm: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Extended attributes, sorted by name, each name once.
    pub xattrs: &'a [Xattr],
}

impl<'a> NodeMeta<'a> {
    /// The bits and owner of `st`, with these xattrs.
    pub fn of(st: &Stat, xattrs: &'a [Xattr]) -> Self {
        NodeMeta {
            perm: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            xattrs,
        }
    }
}

/// An entry's kind and body (see the [module docs](self)).
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// A regular file of `size` bytes whose content's BLAKE3 is `hash`.
    File {
        /// Its size in bytes.
        size: u64,
        /// BLAKE3 of its content.
        hash: &'a [u8; 32],
    },
    /// A directory whose digest is this (of the same version).
    Dir(&'a Digest),
    /// A symbolic link to this target.
    Symlink(&'a [u8]),
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
    /// A character device `(major, minor)`.
    Char(u32, u32),
    /// A block device `(major, minor)`.
    Block(u32, u32),
}

impl Body<'_> {
    /// The body of a FIFO, socket or device of `st` (`None` for the other
    /// kinds, whose bodies need content).
    pub fn special(st: &Stat) -> Option<Body<'static>> {
        let (maj, min) = (
            rustix::fs::major(st.st_rdev as _),
            rustix::fs::minor(st.st_rdev as _),
        );
        Some(match FileType::from_raw_mode(st.st_mode) {
            FileType::Fifo => Body::Fifo,
            FileType::Socket => Body::Socket,
            FileType::CharacterDevice => Body::Char(maj, min),
            FileType::BlockDevice => Body::Block(maj, min),
            _ => return None,
        })
    }
}

/// The encoding of one directory (see the module docs), fed to BLAKE3 as
/// its children come: the one definition of the digest, for trees that are
/// not on disk (a remote manifest) as much as for [`digest_tree`].
///
/// Feed the children in the order of their names compared as bytes, each
/// once; a child directory's digest is its own `DirHasher`'s
/// [`finish`](DirHasher::finish).
///
/// ```
/// use std::ffi::OsStr;
/// use fscache_dir::digest::{Body, Digest, DirHasher, NodeMeta, Version};
///
/// let meta = |perm| NodeMeta { perm, uid: 0, gid: 0, xattrs: &[] };
/// let mut sub = DirHasher::of(Version::V2);
/// let hash = blake3::hash(b"hi");
/// sub.entry(OsStr::new("f"), meta(0o644), Body::File { size: 2, hash: hash.as_bytes() });
/// let mut root = DirHasher::of(Version::V2);
/// root.entry(OsStr::new("sub"), meta(0o755), Body::Dir(&sub.finish()));
/// root.entry(OsStr::new("z"), meta(0o777), Body::Symlink(b"sub/f"));
/// let d: Digest = root.finish();
/// assert!(d.to_string().starts_with("blake3v2:"));
/// ```
#[derive(Clone, Debug)]
pub struct DirHasher {
    version: Version,
    h: blake3::Hasher,
}

impl Default for DirHasher {
    fn default() -> Self {
        Self::of(Version::default())
    }
}

impl DirHasher {
    /// An empty directory so far, in version 1 (for the helpers
    /// [`file`](Self::file), [`dir`](Self::dir), [`symlink`](Self::symlink),
    /// [`other`](Self::other) that version 1 callers use).
    pub fn new() -> Self {
        Self::of(Version::V1)
    }

    /// An empty directory so far, in the encoding of `version`.
    pub fn of(version: Version) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(match version {
            Version::V1 => TAG,
            Version::V2 => TAG2,
        });
        Self { version, h }
    }

    /// The version this hasher encodes.
    pub fn version(&self) -> Version {
        self.version
    }

    /// One child: its name, metadata and body.
    pub fn entry(&mut self, name: &OsStr, meta: NodeMeta<'_>, body: Body<'_>) {
        let v2 = self.version == Version::V2;
        let kind: u8 = match body {
            Body::File { .. } => 0x01,
            Body::Dir(_) => 0x02,
            Body::Symlink(_) => 0x03,
            Body::Fifo => 0x04,
            _ if !v2 => 0x04,
            Body::Socket => 0x05,
            Body::Char(..) => 0x06,
            Body::Block(..) => 0x07,
        };
        let name = name.as_bytes();
        let h = &mut self.h;
        h.update(&[kind]);
        h.update(&(meta.perm & 0o7777).to_le_bytes());
        if v2 {
            h.update(&meta.uid.to_le_bytes());
            h.update(&meta.gid.to_le_bytes());
        }
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name);
        if v2 {
            h.update(&(meta.xattrs.len() as u64).to_le_bytes());
            for x in meta.xattrs {
                h.update(&(x.name.len() as u64).to_le_bytes());
                h.update(&x.name);
                h.update(&(x.value.len() as u64).to_le_bytes());
                h.update(&x.value);
            }
        }
        match body {
            Body::File { size, hash } => {
                h.update(&size.to_le_bytes());
                h.update(hash);
            }
            Body::Dir(d) => {
                h.update(&d.bytes);
            }
            Body::Symlink(target) => {
                h.update(&(target.len() as u64).to_le_bytes());
                h.update(target);
            }
            Body::Char(maj, min) | Body::Block(maj, min) if v2 => {
                h.update(&maj.to_le_bytes());
                h.update(&min.to_le_bytes());
            }
            _ => {}
        }
    }

    fn meta(mode: u32) -> NodeMeta<'static> {
        NodeMeta {
            perm: mode,
            ..NodeMeta::default()
        }
    }

    /// A regular file of `size` bytes whose content's BLAKE3 is `hash`
    /// (owner `0:0`, no xattrs).
    pub fn file(&mut self, name: &OsStr, mode: u32, size: u64, hash: &[u8; 32]) {
        self.entry(name, Self::meta(mode), Body::File { size, hash });
    }

    /// A directory whose digest is `digest` (owner `0:0`, no xattrs).
    pub fn dir(&mut self, name: &OsStr, mode: u32, digest: &Digest) {
        self.entry(name, Self::meta(mode), Body::Dir(digest));
    }

    /// A symbolic link to `target` (owner `0:0`, no xattrs).
    pub fn symlink(&mut self, name: &OsStr, mode: u32, target: &[u8]) {
        self.entry(name, Self::meta(mode), Body::Symlink(target));
    }

    /// A FIFO, socket or device in version 1: its kind, mode and name only.
    pub fn other(&mut self, name: &OsStr, mode: u32) {
        self.entry(name, Self::meta(mode), Body::Fifo);
    }

    /// The digest of the directory, all its children fed.
    pub fn finish(&self) -> Digest {
        Digest {
            version: self.version,
            bytes: *self.h.finalize().as_bytes(),
        }
    }
}

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

/// The tree digest of the directory `dir` in `version`, named `path` in
/// errors.
///
/// The tree is walked with the crate's one [walk](crate::walk): no symlink
/// is followed, each directory's children are read in name order, and a
/// hard-linked inode's content is read once (each of its names is still an
/// entry of its own). A FIFO, socket or device is never opened (its xattrs
/// are read by path, without following it). `dir` itself is not changed:
/// it is reopened for reading (so an `O_PATH` descriptor, as cap-std
/// holds, is fine).
///
/// # Errors
///
/// Any failing `open`, `stat`, `getdents`, `read`, `readlink` or
/// `listxattr`, with its [`io::ErrorKind`] kept and the path it concerns
/// (below `path`) named; a file replaced by something else while it is
/// hashed.
///
/// # Example
///
/// ```
/// use std::path::Path;
/// use cap_std::{ambient_authority, fs::Dir};
/// use fscache_dir::digest::{digest_tree, Digest, Version};
///
/// let tmp = tempfile::tempdir()?;
/// let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority())?;
/// let empty: Digest = digest_tree(&dir, tmp.path(), Version::V2)?;
/// dir.write("hello", b"hello")?;
/// let one = digest_tree(&dir, tmp.path(), Version::V2)?;
/// assert_ne!(empty, one);
/// assert_eq!(one.to_string().parse::<Digest>(), Ok(one));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn digest_tree(dir: impl AsFd, path: &Path, version: Version) -> io::Result<Digest> {
    let mut records = None;
    digest_walk(dir, path, version, &mut records)
}

/// [`digest_tree`] in version 2, and the [`Listing`] of every node (what
/// [`compare`] names differences with).
///
/// # Errors
///
/// As [`digest_tree`].
pub fn digest_tree_listed(dir: impl AsFd, path: &Path) -> io::Result<(Digest, Listing)> {
    let mut records = Some(Listing::default());
    let d = digest_walk(dir, path, Version::V2, &mut records)?;
    Ok((d, records.unwrap_or_default()))
}

fn digest_walk(
    dir: impl AsFd,
    path: &Path,
    version: Version,
    records: &mut Option<Listing>,
) -> io::Result<Digest> {
    let fd = open_dir_nofollow(&dir, ".").map_err(|e| at(path, e))?;
    let root =
        Frame::new(fd, path.to_path_buf(), DirHasher::of(version)).map_err(|e| at(path, e))?;
    let mut hasher = TreeHasher {
        version,
        links: HardLinks::new(),
        buf: Vec::new(),
        root: None,
        records: records.take(),
        base: path.to_path_buf(),
    };
    Walk::new().run(&mut hasher, root)?;
    *records = hasher.records.take();
    hasher
        .root
        .ok_or_else(|| at(path, io::Error::other("the walk never left the root")))
}

/// One node of a [`Listing`]: what version 2 of the digest covers of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its path below the root, components joined by `/`.
    pub path: Vec<u8>,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Its extended attributes, sorted: names and the BLAKE3 of each value.
    pub xattrs: Vec<(Vec<u8>, [u8; 32])>,
    /// The body: a file's size and content hash, a symlink's target, a
    /// device's `rdev` (`major:minor`); empty for a directory, FIFO or
    /// socket.
    pub body: Vec<u8>,
}

/// Every node of a tree with what the digest (version 2) covers of it, in
/// walk order: a per-path record beside the root digest, so a mismatch
/// can name the paths and what changed ([`compare`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing(pub Vec<Record>);

/// One way a node differs between two [`Listing`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// In the first listing only.
    Removed,
    /// In the second listing only.
    Added,
    /// Another file type.
    Type,
    /// Other permission bits.
    Mode,
    /// Another owner or group.
    Owner,
    /// Other extended attributes.
    Xattr,
    /// Other content, symlink target or device number.
    Content,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Removed => "removed",
            Change::Added => "added",
            Change::Type => "type",
            Change::Mode => "mode",
            Change::Owner => "owner",
            Change::Xattr => "xattr",
            Change::Content => "content",
        })
    }
}

/// What differs between the listings `was` and `now`, per path (sorted by
/// path), each path with the ways it differs.
pub fn compare(was: &Listing, now: &Listing) -> Vec<(Vec<u8>, Vec<Change>)> {
    use std::collections::BTreeMap;
    let a: BTreeMap<&[u8], &Record> = was.0.iter().map(|r| (&r.path[..], r)).collect();
    let b: BTreeMap<&[u8], &Record> = now.0.iter().map(|r| (&r.path[..], r)).collect();
    let mut out = Vec::new();
    let mut paths: Vec<&[u8]> = a.keys().chain(b.keys()).copied().collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        let changes = match (a.get(p), b.get(p)) {
            (Some(_), None) => vec![Change::Removed],
            (None, Some(_)) => vec![Change::Added],
            (Some(x), Some(y)) => {
                let mut c = Vec::new();
                if x.mode & 0o170000 != y.mode & 0o170000 {
                    c.push(Change::Type);
                }
                if x.mode & 0o7777 != y.mode & 0o7777 {
                    c.push(Change::Mode);
                }
                if (x.uid, x.gid) != (y.uid, y.gid) {
                    c.push(Change::Owner);
                }
                if x.xattrs != y.xattrs {
                    c.push(Change::Xattr);
                }
                if x.body != y.body && x.mode & 0o170000 == y.mode & 0o170000 {
                    c.push(Change::Content);
                }
                c
            }
            (None, None) => Vec::new(),
        };
        if !changes.is_empty() {
            out.push((p.to_vec(), changes));
        }
    }
    out
}

impl Listing {
    /// The listing as text, one node a line: `MODE UID GID PATH BODY
    /// [XATTR=HASH…]` with the path and body hex-free where printable.
    /// What `fscache` stores beside an entry's digest.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for r in &self.0 {
            s.push_str(&format!(
                "{:o} {} {} {} {}",
                r.mode,
                r.uid,
                r.gid,
                hex(&r.path),
                hex(&r.body)
            ));
            for (n, v) in &r.xattrs {
                s.push_str(&format!(" {}={}", hex(n), hex(v)));
            }
            s.push('\n');
        }
        s
    }

    /// Parse [`to_text`](Self::to_text); `None` if it is not that.
    pub fn from_text(text: &str) -> Option<Listing> {
        let mut out = Vec::new();
        for line in text.lines() {
            let mut f = line.split(' ');
            let mode = u32::from_str_radix(f.next()?, 8).ok()?;
            let uid = f.next()?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            let path = unhex(f.next()?)?;
            let body = unhex(f.next()?)?;
            let mut xattrs = Vec::new();
            for x in f {
                let (n, v) = x.split_once('=')?;
                xattrs.push((unhex(n)?, unhex(v)?.try_into().ok()?));
            }
            out.push(Record {
                path,
                mode,
                uid,
                gid,
                xattrs,
                body,
            });
        }
        Some(Listing(out))
    }
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(p[0])? << 4 | d(p[1])?) as u8)
        })
        .collect()
}

/// State of one [`digest_tree`] walk.
struct TreeHasher {
    version: Version,
    /// Multiply-linked inodes → their size and content hash.
    links: HardLinks<(u64, blake3::Hash)>,
    buf: Vec<u8>,
    root: Option<Digest>,
    /// The listing being made, when asked for.
    records: Option<Listing>,
    /// The root's path, to make records' paths relative.
    base: std::path::PathBuf,
}

impl TreeHasher {
    /// Size, content hash and (in version 2) xattrs of the regular file
    /// `name` in `dirfd`.
    fn file(
        &mut self,
        dirfd: impl AsFd,
        name: &OsStr,
        st: &Stat,
    ) -> io::Result<(u64, blake3::Hash, Vec<Xattr>)> {
        let want_xattrs = self.version == Version::V2;
        if let Some(&known) = self.links.earlier(st) {
            let xattrs = if want_xattrs {
                meta::symlink_xattrs(&dirfd, name)?
            } else {
                Vec::new()
            };
            return Ok((known.0, known.1, xattrs));
        }
        // O_NONBLOCK: should the name have become a FIFO since the `lstat`,
        // the open must not hang; the inode is checked right after.
        let file: File = retry_on_intr(|| {
            rustix::fs::openat(
                &dirfd,
                name,
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NOCTTY
                    | OFlags::NONBLOCK
                    | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })?
        .into();
        let fst = retry_on_intr(|| rustix::fs::fstat(&file))?;
        if FileType::from_raw_mode(fst.st_mode) != FileType::RegularFile
            || stat::inode(&fst) != stat::inode(st)
        {
            return Err(io::Error::other("file was replaced while being hashed"));
        }
        let xattrs = if want_xattrs {
            meta::fd_xattrs(&file)?
        } else {
            Vec::new()
        };
        let known = hash_content(&file, &mut self.buf)?;
        self.links.note(st, known);
        Ok((known.0, known.1, xattrs))
    }

    fn record(&mut self, path: &Path, st: &Stat, xattrs: &[Xattr], body: Vec<u8>) {
        let Some(records) = self.records.as_mut() else {
            return;
        };
        let rel = path.strip_prefix(&self.base).unwrap_or(path);
        records.0.push(Record {
            path: rel.as_os_str().as_bytes().to_vec(),
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            xattrs: xattrs
                .iter()
                .map(|x| (x.name.clone(), *blake3::hash(&x.value).as_bytes()))
                .collect(),
            body,
        });
    }
}

impl Visitor for TreeHasher {
    type State = DirHasher;

    fn visit(
        &mut self,
        parent: &mut Frame<DirHasher>,
        name: &OsStr,
        path: &Path,
        st: &Stat,
    ) -> io::Result<Visit<DirHasher>> {
        let v2 = self.version == Version::V2;
        match FileType::from_raw_mode(st.st_mode) {
            // Its entry is written when the walk leaves it (`leave`).
            FileType::Directory => return Ok(Visit::Descend(DirHasher::of(self.version))),
            FileType::RegularFile => {
                let (size, hash, xattrs) =
                    self.file(parent.fd(), name, st).map_err(|e| at(path, e))?;
                let body = Body::File {
                    size,
                    hash: hash.as_bytes(),
                };
                parent
                    .state_mut()
                    .entry(name, NodeMeta::of(st, &xattrs), body);
                let mut b = size.to_le_bytes().to_vec();
                b.extend_from_slice(hash.as_bytes());
                self.record(path, st, &xattrs, b);
            }
            FileType::Symlink => {
                let target =
                    retry_on_intr(|| rustix::fs::readlinkat(parent.fd(), name, Vec::new()))
                        .map_err(|e| at(path, e))?;
                let xattrs = if v2 {
                    meta::symlink_xattrs(parent.fd(), name).map_err(|e| at(path, e))?
                } else {
                    Vec::new()
                };
                let target = target.into_bytes();
                parent
                    .state_mut()
                    .entry(name, NodeMeta::of(st, &xattrs), Body::Symlink(&target));
                self.record(path, st, &xattrs, target);
            }
            _ => {
                let xattrs = if v2 {
                    meta::symlink_xattrs(parent.fd(), name).map_err(|e| at(path, e))?
                } else {
                    Vec::new()
                };
                let body = Body::special(st).unwrap_or(Body::Fifo);
                parent
                    .state_mut()
                    .entry(name, NodeMeta::of(st, &xattrs), body);
                let rdev = match body {
                    Body::Char(a, b) | Body::Block(a, b) => format!("{a}:{b}").into_bytes(),
                    _ => Vec::new(),
                };
                self.record(path, st, &xattrs, rdev);
            }
        }
        Ok(Visit::Skip)
    }

    fn leave(
        &mut self,
        dir: Frame<DirHasher>,
        parent: Option<&mut Frame<DirHasher>>,
    ) -> io::Result<()> {
        let digest = dir.state().finish();
        let Some(parent) = parent else {
            self.root = Some(digest);
            return Ok(());
        };
        let name = dir
            .path()
            .file_name()
            .ok_or_else(|| at(dir.path(), io::Error::other("walked directory has no name")))?;
        let xattrs = if self.version == Version::V2 {
            meta::fd_xattrs(dir.fd()).map_err(|e| at(dir.path(), e))?
        } else {
            Vec::new()
        };
        parent
            .state_mut()
            .entry(name, NodeMeta::of(dir.stat(), &xattrs), Body::Dir(&digest));
        self.record(dir.path(), dir.stat(), &xattrs, Vec::new());
        Ok(())
    }

    fn error(&self, path: &Path, e: io::Error) -> io::Error {
        at(path, e)
    }
}

/// Fold `path` into `e`, keeping its kind and errno.
fn at(path: &Path, e: impl Into<io::Error>) -> io::Error {
    crate::with_path("digest", path, e.into())
}
