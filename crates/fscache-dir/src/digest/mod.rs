//! The tree digest: the identity of a directory tree, as `blake3v3:<64 hex>`
//! (version 3, what new digests are: types, names, modes, numeric owners,
//! extended attributes, symlink targets, device numbers and content, a
//! hole costing nothing to hash), `blake3v2:<64 hex>` (version 2: the same
//! with the content hashed byte by byte) or `blake3:<64 hex>` (version 1:
//! types, names, modes and content). Versions 1 and 2 are still read and
//! checked.
//!
//! Use this to record what a cache entry holds and to check it later
//! ([`digest_tree`]), or to learn it while copying a tree in
//! ([`copy_tree_into_with_digest`](crate::copy::copy_tree_into_with_digest),
//! which hashes the copies on a second thread as it goes).
//!
//! # Encoding (version 3, what new digests are)
//!
//! As version 2 (below), with two differences: the tag of every directory
//! is `TAG3`, the 16 bytes `fscache-tree-v3` followed by one `0x00`, and a
//! regular file's **content hash** is computed over blocks:
//!
//! * The content is cut into blocks of 65,536 bytes ([`BLOCK`]); the last
//!   one may be shorter. A block is a *zero block* when all its bytes are
//!   zero (a hole reads as zeros, so a sparse file and its dense copy
//!   have one hash).
//! * Consecutive blocks of the same sort form a *run*, as long as it goes
//!   (so zero runs and data runs alternate).
//! * The content hash is `BLAKE3(TAGD3 ‖ run₁ ‖ … ‖ runₖ)`, with `TAGD3`
//!   the 16 bytes `fscache-data-v3` followed by one `0x00`, each zero run
//!   written `0x00 ‖ u64le(bytes)` and each data run `0x01 ‖ u64le(bytes)
//!   ‖ BLAKE3(its bytes)`. An empty file's is `BLAKE3(TAGD3)`; a file with
//!   no zero block's is `BLAKE3(TAGD3 ‖ 0x01 ‖ u64le(size) ‖
//!   BLAKE3(content))`.
//!
//! A hole (or a written run of zeros) is counted, never hashed: a 10 GiB
//! disk image with 1 MiB of data costs what hashing 1 MiB costs, where
//! version 2 hashes 10 GiB of zeros. [`ContentHasher`] computes either.
//!
//! # Encoding (version 2)
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
//! and the version 3 digest
//! `blake3v3:1828763539469424163d9b059634e68aae53602d10640829693c97615419ab80`
//! (the tests `vector`, `vector_v2` and `vector_v3` build them and check
//! these literals; `content_v3_is_as_documented_however_it_is_fed` checks
//! the runs of a content with zero blocks against an encoding by hand).
//!
//! # Limitations
//!
//! * A tree that changes while it is hashed gives the digest of some
//!   mixture of its states.
//! * [`digest_tree`] hashes files one after the other on the calling thread
//!   (a copy with the digest hashes them on a second thread: see
//!   [`copy_tree_into_with_digest`](crate::copy::copy_tree_into_with_digest)).

mod content;
mod encode;
mod listing;
#[cfg(test)]
pub(crate) mod tests;
mod tree;

use std::fmt;
use std::str::FromStr;

pub use content::{data_ranges, ContentHasher, BLOCK};
pub(crate) use content::{hash_content, read_chunks};
pub(crate) use encode::{digest_of_encoded, encode_entry};
pub use encode::{Body, DirHasher, NodeMeta};
pub use listing::{compare, Change, Listing, Record};
pub use tree::{digest_tree, digest_tree_listed};

/// What a version 1 [`Digest`] is written with: `blake3:` and 64 hex digits.
pub const PREFIX: &str = "blake3:";
/// What a version 2 [`Digest`] is written with: `blake3v2:` and 64 hex digits.
pub const PREFIX_V2: &str = "blake3v2:";
/// What a version 3 [`Digest`] is written with: `blake3v3:` and 64 hex digits.
pub const PREFIX_V3: &str = "blake3v3:";

/// The domain tag that starts every directory's encoding, by version.
const TAG: &[u8; 16] = b"fscache-tree-v1\0";
const TAG2: &[u8; 16] = b"fscache-tree-v2\0";
const TAG3: &[u8; 16] = b"fscache-tree-v3\0";

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
    /// `blake3v2:`.
    V2,
    /// Version 2 with each file's content hashed in runs of 64 KiB blocks,
    /// all-zero blocks counted and not hashed (a hole costs nothing):
    /// `blake3v3:`. What new digests are.
    #[default]
    V3,
}

impl Version {
    /// The prefix a digest of this version is written with.
    pub const fn prefix(self) -> &'static str {
        match self {
            Version::V1 => PREFIX,
            Version::V2 => PREFIX_V2,
            Version::V3 => PREFIX_V3,
        }
    }

    /// Whether this version covers numeric owners, xattrs and device
    /// numbers (versions 2 and 3).
    pub const fn has_metadata(self) -> bool {
        !matches!(self, Version::V1)
    }

    /// The tag that starts each directory's encoding.
    const fn tag(self) -> &'static [u8; 16] {
        match self {
            Version::V1 => TAG,
            Version::V2 => TAG2,
            Version::V3 => TAG3,
        }
    }
}

/// A tree digest: 32 bytes of BLAKE3 and the [`Version`] of the encoding
/// they hash, written `blake3v3:<64 hex>`, `blake3v2:<64 hex>` or
/// `blake3:<64 hex>` (see the
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

/// A string that is not `blake3:`, `blake3v2:` or `blake3v3:` followed by
/// 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDigestError(());

impl fmt::Display for ParseDigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid digest: expected `{PREFIX_V3}`, `{PREFIX_V2}` or `{PREFIX}` and 64 hex digits"
        )
    }
}

impl std::error::Error for ParseDigestError {}

impl FromStr for Digest {
    type Err = ParseDigestError;

    /// Parse `blake3v3:<64 hex>`, `blake3v2:<64 hex>` or `blake3:<64 hex>`;
    /// upper-case hex digits are accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (version, hex) = if let Some(h) = s.strip_prefix(PREFIX_V3) {
            (Version::V3, h)
        } else if let Some(h) = s.strip_prefix(PREFIX_V2) {
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
