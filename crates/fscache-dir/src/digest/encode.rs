//! The byte encoding of one directory, versions 1 and 2 (the [module
//! docs](super) write it down): [`NodeMeta`] and [`Body`] of each child,
//! fed in name order to a [`DirHasher`].

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{FileType, Stat};

use super::{Digest, Version};
use crate::meta::Xattr;

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

/// An entry's kind and body (see the [module docs](super)).
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// A regular file of `size` bytes whose content hash (of the
    /// hasher's version: [`ContentHasher`](super::ContentHasher)) is `hash`.
    File {
        /// Its size in bytes.
        size: u64,
        /// Its content hash in the hasher's version.
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
/// not on disk (a remote manifest) as much as for [`digest_tree`](super::digest_tree).
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
        h.update(version.tag());
        Self { version, h }
    }

    /// The version this hasher encodes.
    pub fn version(&self) -> Version {
        self.version
    }

    /// One child: its name, metadata and body.
    pub fn entry(&mut self, name: &OsStr, meta: NodeMeta<'_>, body: Body<'_>) {
        let h = &mut self.h;
        encode_entry(self.version, name, meta, body, &mut |b| {
            h.update(b);
        });
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

/// The encoding of one entry in `version` (see the [module docs](super)),
/// given piece by piece to `put`: what [`DirHasher::entry`] hashes.
pub(crate) fn encode_entry(
    version: Version,
    name: &OsStr,
    meta: NodeMeta<'_>,
    body: Body<'_>,
    put: &mut dyn FnMut(&[u8]),
) {
    let v2 = version.has_metadata();
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
    put(&[kind]);
    put(&(meta.perm & 0o7777).to_le_bytes());
    if v2 {
        put(&meta.uid.to_le_bytes());
        put(&meta.gid.to_le_bytes());
    }
    put(&(name.len() as u64).to_le_bytes());
    put(name);
    if v2 {
        put(&(meta.xattrs.len() as u64).to_le_bytes());
        for x in meta.xattrs {
            put(&(x.name.len() as u64).to_le_bytes());
            put(&x.name);
            put(&(x.value.len() as u64).to_le_bytes());
            put(&x.value);
        }
    }
    match body {
        Body::File { size, hash } => {
            put(&size.to_le_bytes());
            put(hash);
        }
        Body::Dir(d) => put(&d.bytes),
        Body::Symlink(target) => {
            put(&(target.len() as u64).to_le_bytes());
            put(target);
        }
        Body::Char(maj, min) | Body::Block(maj, min) if v2 => {
            put(&maj.to_le_bytes());
            put(&min.to_le_bytes());
        }
        _ => {}
    }
}

/// The digest of a directory in `version` whose entries, in order,
/// encode to `entries` (as [`encode_entry`] gives them).
pub(crate) fn digest_of_encoded(version: Version, entries: &[u8]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(version.tag());
    h.update(entries);
    Digest {
        version,
        bytes: *h.finalize().as_bytes(),
    }
}
