//! The tree digest (version 1): the identity of a directory tree's content,
//! names and permission bits, as `blake3:<64 hex>`.
//!
//! Use this to record what a cache entry holds and to check it later
//! ([`digest_tree`]), or to learn it while copying a tree in
//! ([`copy_tree_into_with_digest`](crate::copy::copy_tree_into_with_digest),
//! which reads the data once for both).
//!
//! # Encoding
//!
//! BLAKE3 (unkeyed, 32-byte output) throughout. All integers are unsigned
//! little-endian; `u64le(n)` is 8 bytes, `u32le(n)` 4 bytes.
//!
//! * A regular file's **content hash** is `BLAKE3(content)`.
//! * A directory's **digest** is `BLAKE3(TAG ‖ entry₁ ‖ … ‖ entryₙ)` where
//!   `TAG` is the 16 bytes `fscache-tree-v1` followed by one `0x00`, and the
//!   entries are the directory's children (without `.` and `..`) in
//!   increasing order of their names compared as byte strings. An empty
//!   directory's digest is `BLAKE3(TAG)`.
//! * Each entry is
//!
//!   ```text
//!   kind: u8 ‖ perm: u32le ‖ u64le(len(name)) ‖ name ‖ body
//!   ```
//!
//!   where `perm` is `st_mode & 0o7777` from `lstat` (permission,
//!   set-user-ID, set-group-ID and sticky bits), `name` the raw bytes of the
//!   child's name, and `kind` and `body` are
//!
//!   | kind | `kind` byte | `body` |
//!   |---|---|---|
//!   | regular file | `0x01` | `u64le(size) ‖ BLAKE3(content)` (32 bytes) |
//!   | directory | `0x02` | the directory's digest (32 bytes) |
//!   | symbolic link | `0x03` | `u64le(len(target)) ‖ target` (raw bytes, never followed) |
//!   | anything else (FIFO, socket, device) | `0x04` | nothing |
//!
//! * The digest of a tree is the digest of its root directory, written
//!   `blake3:` followed by 64 lowercase hex digits. The root's own name,
//!   mode, owner and times are not part of it.
//!
//! Every entry is self-delimiting (the kind fixes the body's shape, names
//! and targets carry their length), so the concatenation decodes one way
//! only and no two different trees encode alike; the tag keeps these inputs
//! apart from any other use of BLAKE3. Left out on purpose: times, owners,
//! extended attributes, device numbers, and which names are hard links of
//! one inode (each name is an entry of its own). On Linux a symlink's `perm`
//! is always `0o777`.
//!
//! # Test vector
//!
//! A root directory holding, with these permission bits:
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
//! has the digest
//! `blake3:c9ef6f2132b114dcf559ad76562699f7208c2500734eb542c3636e21278c118d`
//! (the test `vector` builds it and checks this literal).
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

use rustix::fs::{FileType, Mode, OFlags, Stat};

use crate::stat;
use crate::walk::{open_dir_nofollow, Frame, HardLinks, Visit, Visitor, Walk};

/// What a [`Digest`] is written with: `blake3:` and 64 hex digits.
pub const PREFIX: &str = "blake3:";

/// The domain tag that starts every directory's encoding.
const TAG: &[u8; 16] = b"fscache-tree-v1\0";

/// Buffer size for reading file content: big enough for BLAKE3's SIMD to
/// hash many chunks at once and for few `read` calls, small enough to stay
/// in the CPU's L2 cache between the read and the hash.
pub(crate) const READ_BUFFER: usize = 256 << 10;

/// A tree digest (version 1): 32 bytes of BLAKE3, written
/// `blake3:<64 hex>` (see the [module docs](self) for what goes in).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest with these bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes of the digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        for b in self.0 {
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

/// A string that is not `blake3:` followed by 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDigestError(());

impl fmt::Display for ParseDigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid digest: expected `{PREFIX}` and 64 hex digits")
    }
}

impl std::error::Error for ParseDigestError {}

impl FromStr for Digest {
    type Err = ParseDigestError;

    /// Parse `blake3:<64 hex>`; upper-case hex digits are accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix(PREFIX)
            .filter(|h| h.len() == 64)
            .ok_or(ParseDigestError(()))?;
        let mut bytes = [0u8; 32];
        for (b, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16).ok_or(ParseDigestError(()));
            *b = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
        }
        Ok(Self(bytes))
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
/// use fscache_dir::digest::{DirHasher, Digest};
///
/// let mut sub = DirHasher::new();
/// sub.file(OsStr::new("f"), 0o644, 2, blake3::hash(b"hi").as_bytes());
/// let mut root = DirHasher::new();
/// root.dir(OsStr::new("sub"), 0o755, &sub.finish());
/// root.symlink(OsStr::new("z"), 0o777, b"sub/f");
/// let d: Digest = root.finish();
/// assert!(d.to_string().starts_with("blake3:"));
/// ```
#[derive(Clone, Debug)]
pub struct DirHasher(blake3::Hasher);

impl Default for DirHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl DirHasher {
    /// An empty directory so far.
    pub fn new() -> Self {
        let mut h = blake3::Hasher::new();
        h.update(TAG);
        Self(h)
    }

    fn head(&mut self, kind: u8, mode: u32, name: &OsStr) {
        let name = name.as_bytes();
        self.0.update(&[kind]);
        self.0.update(&(mode & 0o7777).to_le_bytes());
        self.0.update(&(name.len() as u64).to_le_bytes());
        self.0.update(name);
    }

    /// A regular file of `size` bytes whose content's BLAKE3 is `hash`.
    pub fn file(&mut self, name: &OsStr, mode: u32, size: u64, hash: &[u8; 32]) {
        self.head(0x01, mode, name);
        self.0.update(&size.to_le_bytes());
        self.0.update(hash);
    }

    /// A directory whose digest is `digest`.
    pub fn dir(&mut self, name: &OsStr, mode: u32, digest: &Digest) {
        self.head(0x02, mode, name);
        self.0.update(&digest.0);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &OsStr, mode: u32, target: &[u8]) {
        self.head(0x03, mode, name);
        self.0.update(&(target.len() as u64).to_le_bytes());
        self.0.update(target);
    }

    /// A FIFO, socket or device: its kind, mode and name only.
    pub fn other(&mut self, name: &OsStr, mode: u32) {
        self.head(0x04, mode, name);
    }

    /// The digest of the directory, all its children fed.
    pub fn finish(&self) -> Digest {
        Digest(*self.0.finalize().as_bytes())
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

/// The size and content hash of `file`, read through `buf` from its offset.
pub(crate) fn hash_content(file: &File, buf: &mut Vec<u8>) -> io::Result<(u64, blake3::Hash)> {
    let mut hasher = blake3::Hasher::new();
    let n = read_chunks(file, buf, Some(&mut hasher), |_| Ok(()))?;
    Ok((n, hasher.finalize()))
}

/// The tree digest (version 1) of the directory `dir`, named `path` in
/// errors.
///
/// The tree is walked with the crate's one [walk](crate::walk): no symlink
/// is followed, each directory's children are read in name order, and a
/// hard-linked inode's content is read once (each of its names is still an
/// entry of its own). A FIFO, socket or device is an entry of kind "other"
/// and is never opened. `dir` itself is not changed: it is reopened for
/// reading (so an `O_PATH` descriptor, as cap-std holds, is fine).
///
/// # Errors
///
/// Any failing `open`, `stat`, `getdents`, `read` or `readlink`, with its
/// [`io::ErrorKind`] kept and the path it concerns (below `path`) named;
/// a file replaced by something else while it is hashed.
///
/// # Example
///
/// ```
/// use std::path::Path;
/// use cap_std::{ambient_authority, fs::Dir};
/// use fscache_dir::digest::{digest_tree, Digest};
///
/// let tmp = tempfile::tempdir()?;
/// let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority())?;
/// let empty: Digest = digest_tree(&dir, tmp.path())?;
/// dir.write("hello", b"hello")?;
/// let one = digest_tree(&dir, tmp.path())?;
/// assert_ne!(empty, one);
/// assert_eq!(one.to_string().parse::<Digest>(), Ok(one));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn digest_tree(dir: impl AsFd, path: &Path) -> io::Result<Digest> {
    let fd = open_dir_nofollow(&dir, ".").map_err(|e| at(path, e))?;
    let root = Frame::new(fd, path.to_path_buf(), DirHasher::new()).map_err(|e| at(path, e))?;
    let mut hasher = TreeHasher {
        links: HardLinks::new(),
        buf: Vec::new(),
        root: None,
    };
    Walk::new().run(&mut hasher, root)?;
    hasher
        .root
        .ok_or_else(|| at(path, io::Error::other("the walk never left the root")))
}

/// State of one [`digest_tree`] walk.
struct TreeHasher {
    /// Multiply-linked inodes → their size and content hash.
    links: HardLinks<(u64, blake3::Hash)>,
    buf: Vec<u8>,
    root: Option<Digest>,
}

impl TreeHasher {
    /// Size and content hash of the regular file `name` in `dirfd`.
    fn file(
        &mut self,
        dirfd: impl AsFd,
        name: &OsStr,
        st: &Stat,
    ) -> io::Result<(u64, blake3::Hash)> {
        if let Some(&known) = self.links.earlier(st) {
            return Ok(known);
        }
        // O_NONBLOCK: should the name have become a FIFO since the `lstat`,
        // the open must not hang; the inode is checked right after.
        let file: File = rustix::fs::openat(
            dirfd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?
        .into();
        let fst = rustix::fs::fstat(&file)?;
        if FileType::from_raw_mode(fst.st_mode) != FileType::RegularFile
            || stat::inode(&fst) != stat::inode(st)
        {
            return Err(io::Error::other("file was replaced while being hashed"));
        }
        let known = hash_content(&file, &mut self.buf)?;
        self.links.note(st, known);
        Ok(known)
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
        let mode = st.st_mode;
        match FileType::from_raw_mode(mode) {
            // Its entry is written when the walk leaves it (`leave`).
            FileType::Directory => return Ok(Visit::Descend(DirHasher::new())),
            FileType::RegularFile => {
                let (size, hash) = self.file(parent.fd(), name, st).map_err(|e| at(path, e))?;
                parent.state_mut().file(name, mode, size, hash.as_bytes());
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(parent.fd(), name, Vec::new())
                    .map_err(|e| at(path, e))?;
                parent.state_mut().symlink(name, mode, target.as_bytes());
            }
            _ => parent.state_mut().other(name, mode),
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
        parent.state_mut().dir(name, dir.stat().st_mode, &digest);
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
