//! The manifest of one entry: its tree (each node's kind, content, owner,
//! mtime and xattrs), blob lists and tree digest, and the checks of its
//! shape; the tree digest (version 3, or 2 or 1 for manifests written
//! before it) over a manifest or a directory on disk. The signed envelope it is
//! stored in is `envelope.rs`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::Path;

use fscache::meta::Xattr;
use fscache::{Body, Digest, DigestVersion, DirHasher, NodeMeta};

use crate::node::GivenMap;
use serde::{Deserialize, Serialize};

pub(crate) use crate::envelope::{pack, unpack};
use crate::error::Result;
use crate::keys::unhex;

/// The `format` value of manifests and envelopes.
pub(crate) const FORMAT: &str = "fscache-remote-manifest";
/// The layout version this crate reads and writes.
pub(crate) const VERSION: u64 = 1;

/// One stored object of content: a chunk of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlobRef {
    /// BLAKE3 of the uncompressed chunk, 64 hex digits.
    pub hash: String,
    /// Uncompressed size in bytes.
    pub size: u64,
}

/// One node of the tree, by kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Kind {
    Dir {
        perm: u32,
    },
    File {
        perm: u32,
        size: u64,
        /// BLAKE3 of the whole content (holes read as zeros), 64 hex
        /// digits.
        hash: String,
        /// The chunks, in order; empty for a hard link. For a sparse file
        /// (`data` present) they cover its data ranges one after the
        /// other, and the holes between are not stored.
        #[serde(default)]
        blobs: Vec<BlobRef>,
        /// For the second and later names of one inode: the first name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<String>,
        /// A sparse file's data ranges as `[offset, length]`, increasing
        /// and apart; the rest of its `size` bytes are holes. Absent: the
        /// whole file is data.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Vec<(u64, u64)>>,
    },
    Symlink {
        perm: u32,
        target: String,
    },
    /// A named pipe.
    Fifo {
        perm: u32,
    },
    /// A Unix domain socket's name (nothing listens on it once copied).
    Socket {
        perm: u32,
    },
    /// A character device.
    Char {
        perm: u32,
        major: u32,
        minor: u32,
    },
    /// A block device.
    Block {
        perm: u32,
        major: u32,
        minor: u32,
    },
}

impl Kind {
    /// The node's permission bits (`mode & 0o7777`).
    pub(crate) fn perm(&self) -> u32 {
        match *self {
            Kind::Dir { perm }
            | Kind::File { perm, .. }
            | Kind::Symlink { perm, .. }
            | Kind::Fifo { perm }
            | Kind::Socket { perm }
            | Kind::Char { perm, .. }
            | Kind::Block { perm, .. } => perm,
        }
    }
}

/// One extended attribute of a node: its value inline as hex when it is
/// at most [`XATTR_INLINE_MAX`] bytes, else a reference to a blob stored
/// like a file's chunks (Linux bounds a value at 64 KiB,
/// `XATTR_SIZE_MAX`). Exactly one of `value` and `blob` is present; a
/// manifest written before blobs existed has `value` only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct XattrJson {
    /// The full name with its namespace, e.g. `user.mime_type`.
    pub name: String,
    /// The value's bytes, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value as a blob: BLAKE3 of its bytes and their number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRef>,
}

/// The values of the xattrs a manifest stores as blobs, by blob hash:
/// fetched and checked before a pull writes anything, or read by a push.
pub(crate) type XattrValues = HashMap<String, Vec<u8>>;

impl XattrJson {
    /// The xattr `name` with `value` as a manifest records it: inline up
    /// to [`XATTR_INLINE_MAX`] bytes, else as a blob reference (the bytes
    /// go into `blobs`, by hash, for the push to pack).
    pub(crate) fn of(name: String, value: Vec<u8>, blobs: &mut XattrValues) -> Self {
        if value.len() <= XATTR_INLINE_MAX {
            return Self {
                name,
                value: Some(crate::keys::hex(&value)),
                blob: None,
            };
        }
        let hash = blake3::hash(&value).to_hex().to_string();
        let size = value.len() as u64;
        blobs.entry(hash.clone()).or_insert(value);
        Self {
            name,
            value: None,
            blob: Some(BlobRef { hash, size }),
        }
    }

    /// The value's bytes: decoded from hex, or looked up in `values` by
    /// its blob's hash (which must hold as many bytes as it says).
    pub(crate) fn bytes(&self, values: &XattrValues) -> Result<Vec<u8>, String> {
        match (&self.value, &self.blob) {
            (Some(v), None) => unhex_vec(v).ok_or_else(|| "malformed xattr value".into()),
            (None, Some(b)) => match values.get(&b.hash) {
                Some(v) if v.len() as u64 == b.size => Ok(v.clone()),
                Some(v) => Err(format!(
                    "xattr blob {} is {} bytes, not {}",
                    b.hash,
                    v.len(),
                    b.size
                )),
                None => Err(format!("the value of xattr blob {} is not at hand", b.hash)),
            },
            _ => Err("an xattr with both or neither of a value and a blob".into()),
        }
    }
}

/// What a node carries besides its kind: owner, modification time and
/// extended attributes. Every field is optional, so manifests written
/// before these existed still read (with nothing to restore).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// Numeric owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Numeric group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Modification time as `[seconds since the epoch, nanoseconds]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<(i64, u32)>,
    /// Extended attributes, sorted by name, each name once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<XattrJson>,
}

/// A node: its path below `data/` (components joined by `/`), kind and
/// metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Node {
    pub path: String,
    #[serde(flatten)]
    pub kind: Kind,
    #[serde(flatten)]
    pub meta: Meta,
}

/// The manifest of one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: String,
    pub version: u64,
    pub name: String,
    /// The tree digest of `data/`, `blake3v3:<64 hex>` (`blake3v2:<64
    /// hex>` or `blake3:<64 hex>` in manifests written before); each file
    /// node's `hash` is the content hash of that version.
    pub digest: String,
    /// Seconds since the Unix epoch when the push published it.
    pub created: u64,
    /// Parents before children.
    pub nodes: Vec<Node>,
}

impl Manifest {
    /// Check the shape: safe relative paths, each parent a directory
    /// listed before, no duplicates, hard links to earlier files with the
    /// same metadata, blob lists that add up, and every metadata field in
    /// range (permission bits, device numbers, times, xattr names and
    /// values, data ranges): all before a pull writes anything.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut kinds: HashMap<&str, &Node> = HashMap::new();
        for node in &self.nodes {
            let p = node.path.as_str();
            if p.is_empty()
                || p.split('/')
                    .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
            {
                return Err(format!("unsafe path `{p}`"));
            }
            if let Some((parent, _)) = p.rsplit_once('/') {
                if !matches!(kinds.get(parent).map(|n| &n.kind), Some(Kind::Dir { .. })) {
                    return Err(format!("`{p}` comes before its directory"));
                }
            }
            if node.kind.perm() & !0o7777 != 0 {
                return Err(format!(
                    "`{p}` has a malformed mode {:#o}",
                    node.kind.perm()
                ));
            }
            validate_meta(p, &node.meta)?;
            match &node.kind {
                Kind::File {
                    size,
                    hash,
                    blobs,
                    link,
                    data,
                    ..
                } => {
                    if unhex::<32>(hash).is_none() {
                        return Err(format!("`{p}` has a malformed hash"));
                    }
                    if let Some(first) = link {
                        match kinds.get(first.as_str()) {
                            Some(Node {
                                kind:
                                    Kind::File {
                                        link: None,
                                        hash: h,
                                        size: s,
                                        perm,
                                        ..
                                    },
                                meta,
                                ..
                            }) if h == hash
                                && s == size
                                && *perm == node.kind.perm()
                                && *meta == node.meta => {}
                            _ => {
                                return Err(format!(
                                    "`{p}` links to `{first}`, not a file before it with the same metadata"
                                ))
                            }
                        }
                        if !blobs.is_empty() || data.is_some() {
                            return Err(format!("hard link `{p}` lists blobs or data ranges"));
                        }
                    } else {
                        if blobs.iter().any(|b| unhex::<32>(&b.hash).is_none()) {
                            return Err(format!("`{p}` has a malformed blob hash"));
                        }
                        let stored = match data {
                            None => Some(*size),
                            Some(ranges) => data_bytes(ranges, *size)
                                .ok_or_else(|| format!("`{p}` has malformed data ranges"))?
                                .into(),
                        };
                        let total = blobs.iter().try_fold(0u64, |a, b| a.checked_add(b.size));
                        if total != stored {
                            return Err(format!("the blobs of `{p}` do not add up to its data"));
                        }
                        if let Some(ranges) = data {
                            if blob_offsets(ranges, blobs).is_none() {
                                return Err(format!("a blob of `{p}` straddles two data ranges"));
                            }
                        }
                    }
                }
                Kind::Char { major, minor, .. } | Kind::Block { major, minor, .. } => {
                    // The kernel's dev_t: 12 bits of major, 20 of minor.
                    if *major >= 1 << 12 || *minor >= 1 << 20 {
                        return Err(format!("`{p}` has a malformed device number"));
                    }
                }
                Kind::Dir { .. }
                | Kind::Symlink { .. }
                | Kind::Fifo { .. }
                | Kind::Socket { .. } => {}
            }
            if kinds.insert(p, node).is_some() {
                return Err(format!("`{p}` is listed twice"));
            }
        }
        Ok(())
    }

    /// Whether a node's xattr is stored as a blob: then the tree digest
    /// needs the blob's bytes ([`Manifest::tree_digest_with`]).
    pub(crate) fn has_xattr_blobs(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.meta.xattrs.iter().any(|x| x.blob.is_some()))
    }

    /// The distinct blobs its xattrs name, in manifest order (nodes in
    /// order, each node's xattrs in order, each hash at its first
    /// appearance): `(hash, size)`.
    pub(crate) fn xattr_blobs(&self) -> Vec<(&str, u64)> {
        xattr_blobs(&self.nodes)
    }

    /// Put the bytes of each xattr blob inline, from `values` (fetched
    /// and checked against their hashes): the manifest a pull builds the
    /// tree from, as if it had been written with every value inline.
    ///
    /// # Errors
    ///
    /// A blob whose value is missing from `values` or of another size.
    pub(crate) fn inline_xattrs(&mut self, values: &XattrValues) -> Result<(), String> {
        for node in &mut self.nodes {
            for x in &mut node.meta.xattrs {
                if x.blob.is_some() {
                    let bytes = x.bytes(values)?;
                    x.value = Some(crate::keys::hex(&bytes));
                    x.blob = None;
                }
            }
        }
        Ok(())
    }

    /// The version of the tree digest this manifest records (and of its
    /// files' content hashes): version 3 for `blake3v3:`, 1 for `blake3:`
    /// (manifests written before version 2), else 2 (a digest of another
    /// shape then fails the check against the version 2 digest).
    pub(crate) fn digest_version(&self) -> DigestVersion {
        if self.digest.starts_with(DigestVersion::V3.prefix()) {
            DigestVersion::V3
        } else if self.digest.starts_with(fscache_prefix_v1()) {
            DigestVersion::V1
        } else {
            DigestVersion::V2
        }
    }

    /// The tree digest of the tree this manifest lists, in the version its
    /// `digest` names, fed to the one encoder of the digest
    /// ([`fscache::DirHasher`]); the bytes of its xattr blobs (if any) are
    /// looked up in `values`.
    pub(crate) fn tree_digest_with(&self, values: &XattrValues) -> Result<Digest, String> {
        self.digest_of(None, values)
    }

    /// [`tree_digest_with`](Self::tree_digest_with), with each node's owner,
    /// permission bits and xattrs taken from `given` where it names the
    /// node: the digest the tree a pull built must have, when the policy
    /// kept less than the manifest lists (a pull as non-root). Every
    /// xattr must be inline (a pull's manifest, after
    /// [`inline_xattrs`](Self::inline_xattrs)).
    pub(crate) fn tree_digest_given(&self, given: Option<&GivenMap>) -> Result<Digest, String> {
        self.digest_of(given, &XattrValues::new())
    }

    /// The tree digest, each node's metadata from `given` where it names
    /// the node, else from the manifest (xattr blobs from `values`).
    fn digest_of(&self, given: Option<&GivenMap>, values: &XattrValues) -> Result<Digest, String> {
        let version = self.digest_version();
        let mut children: HashMap<&str, Vec<&Node>> = HashMap::new();
        for node in &self.nodes {
            let parent = node.path.rsplit_once('/').map_or("", |(p, _)| p);
            children.entry(parent).or_default().push(node);
        }
        struct Ctx<'a> {
            children: HashMap<&'a str, Vec<&'a Node>>,
            version: DigestVersion,
            given: Option<&'a GivenMap>,
            values: &'a XattrValues,
        }
        fn dir(c: &Ctx<'_>, at: &str) -> Result<Digest, String> {
            let mut kids: Vec<&Node> = c.children.get(at).cloned().unwrap_or_default();
            kids.sort_by(|a, b| base(&a.path).as_bytes().cmp(base(&b.path).as_bytes()));
            let mut h = DirHasher::of(c.version);
            for k in kids {
                let name = OsStr::new(base(&k.path));
                let given = c.given.and_then(|g| g.get(&k.path));
                let (perm, uid, gid, xattrs) = match given {
                    Some(g) => (g.perm, g.uid, g.gid, g.xattrs.clone()),
                    None if c.version == DigestVersion::V1 => (k.kind.perm(), 0, 0, Vec::new()),
                    None => {
                        let (Some(uid), Some(gid)) = (k.meta.uid, k.meta.gid) else {
                            return Err(format!("`{}` has no owner", k.path));
                        };
                        let xattrs = k
                            .meta
                            .xattrs
                            .iter()
                            .map(|x| {
                                Ok(Xattr {
                                    name: x.name.as_bytes().to_vec(),
                                    value: x.bytes(c.values)?,
                                })
                            })
                            .collect::<Result<Vec<_>, String>>()?;
                        (k.kind.perm(), uid, gid, xattrs)
                    }
                };
                let meta = NodeMeta {
                    perm,
                    uid,
                    gid,
                    xattrs: &xattrs,
                };
                let sub;
                let hash;
                let body = match &k.kind {
                    Kind::File { size, hash: hx, .. } => {
                        hash = unhex::<32>(hx).ok_or("malformed hash")?;
                        Body::File {
                            size: *size,
                            hash: &hash,
                        }
                    }
                    Kind::Dir { .. } => {
                        sub = dir(c, &k.path)?;
                        Body::Dir(&sub)
                    }
                    Kind::Symlink { target, .. } => Body::Symlink(target.as_bytes()),
                    Kind::Fifo { .. } => Body::Fifo,
                    Kind::Socket { .. } => Body::Socket,
                    Kind::Char { major, minor, .. } => Body::Char(*major, *minor),
                    Kind::Block { major, minor, .. } => Body::Block(*major, *minor),
                };
                h.entry(name, meta, body);
            }
            Ok(h.finish())
        }
        dir(
            &Ctx {
                children,
                version,
                given,
                values,
            },
            "",
        )
    }
}

/// [`Manifest::xattr_blobs`] of a manifest's `nodes`.
pub(crate) fn xattr_blobs(nodes: &[Node]) -> Vec<(&str, u64)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for node in nodes {
        for b in node.meta.xattrs.iter().filter_map(|x| x.blob.as_ref()) {
            if seen.insert(b.hash.as_str()) {
                out.push((b.hash.as_str(), b.size));
            }
        }
    }
    out
}

/// `blake3:`, the prefix of a version 1 digest.
fn fscache_prefix_v1() -> &'static str {
    DigestVersion::V1.prefix()
}

/// Where each blob of a sparse file goes: the file offset of each, given
/// its data `ranges`; `None` if a blob straddles two ranges or they do not
/// add up.
pub(crate) fn blob_offsets(ranges: &[(u64, u64)], blobs: &[BlobRef]) -> Option<Vec<u64>> {
    let mut out = Vec::with_capacity(blobs.len());
    let mut r = ranges.iter();
    let (mut at, mut left) = match r.next() {
        Some(&(o, l)) => (o, l),
        None => (0, 0),
    };
    for b in blobs {
        while left == 0 {
            let &(o, l) = r.next()?;
            (at, left) = (o, l);
        }
        if b.size > left {
            return None;
        }
        out.push(at);
        at += b.size;
        left -= b.size;
    }
    (left == 0 && r.next().is_none()).then_some(out)
}

fn base(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, b)| b)
}

/// The most bytes one xattr value may have (`XATTR_SIZE_MAX`).
pub(crate) const XATTR_VALUE_MAX: usize = 64 << 10;

/// The most bytes an xattr value a push writes inline may have; a larger
/// one is a blob. Inline, a value costs twice its size in hex in a
/// manifest every pull, check and prune reads whole; as a blob, about 100
/// bytes of reference plus a locator entry, and it is compressed and
/// shared across entries. Past 1 KiB the reference is under a twentieth
/// of the hex; the common values (capabilities, SELinux labels, small
/// ACLs, MIME types) are far below and stay inline.
pub(crate) const XATTR_INLINE_MAX: usize = 1 << 10;

/// The bytes a sparse file's data ranges hold, if they are increasing,
/// apart, non-empty and inside `size`.
pub(crate) fn data_bytes(ranges: &[(u64, u64)], size: u64) -> Option<u64> {
    let mut end = 0u64;
    let mut total = 0u64;
    for (i, &(offset, len)) in ranges.iter().enumerate() {
        let stop = offset.checked_add(len)?;
        if len == 0 || (i > 0 && offset <= end) || stop > size {
            return None;
        }
        end = stop;
        total += len;
    }
    Some(total)
}

/// Check one node's owner, time and xattrs.
fn validate_meta(p: &str, meta: &Meta) -> Result<(), String> {
    if meta.uid == Some(u32::MAX) || meta.gid == Some(u32::MAX) {
        // -1 means "leave alone" to chown(2): never an owner.
        return Err(format!("`{p}` has a malformed owner"));
    }
    if let Some((_, ns)) = meta.mtime {
        if ns >= 1_000_000_000 {
            return Err(format!("`{p}` has a malformed time"));
        }
    }
    let mut last: Option<&str> = None;
    for x in &meta.xattrs {
        let n = x.name.as_str();
        let known = ["user.", "trusted.", "security.", "system."]
            .iter()
            .any(|ns| n.len() > ns.len() && n.starts_with(ns));
        if !known || n.len() > 255 || n.contains('\0') {
            return Err(format!("`{p}` has a malformed xattr name `{n}`"));
        }
        if last.is_some_and(|l| l >= n) {
            return Err(format!(
                "the xattrs of `{p}` are not sorted or repeat a name"
            ));
        }
        last = Some(n);
        match (&x.value, &x.blob) {
            (Some(v), None) => {
                if v.len() > 2 * XATTR_VALUE_MAX || unhex_vec(v).is_none() {
                    return Err(format!("`{p}` has a malformed value for xattr `{n}`"));
                }
            }
            (None, Some(b)) => {
                if unhex::<32>(&b.hash).is_none() {
                    return Err(format!("`{p}` has a malformed blob hash for xattr `{n}`"));
                }
                if b.size > XATTR_VALUE_MAX as u64 {
                    return Err(format!(
                        "`{p}` has a blob of {} bytes for xattr `{n}`, over 64 KiB",
                        b.size
                    ));
                }
            }
            (Some(_), Some(_)) => {
                return Err(format!("xattr `{n}` of `{p}` has both a value and a blob"))
            }
            (None, None) => {
                return Err(format!(
                    "xattr `{n}` of `{p}` has neither a value nor a blob"
                ))
            }
        }
    }
    Ok(())
}

/// Lowercase or uppercase hex to bytes; `None` if it is not hex.
pub(crate) fn unhex_vec(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(pair[0])? << 4 | d(pair[1])?) as u8)
        })
        .collect()
}

/// The tree digest in `version` of the directory at `path`, read from disk
/// without following symlinks: what a pull checks the tree it built
/// against.
pub(crate) fn digest_dir(path: &Path, version: DigestVersion) -> io::Result<Digest> {
    fscache::tree_digest_version(path, version).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// The vector of `fscache::Digest`'s documentation, built on disk and
    /// as a manifest: both must give its literal.
    #[test]
    fn digest_vector() {
        const EXPECTED: &str =
            "blake3:c9ef6f2132b114dcf559ad76562699f7208c2500734eb542c3636e21278c118d";
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let put = |p: &str, c: &[u8], m: u32| {
            fs::write(r.join(p), c).unwrap();
            fs::set_permissions(r.join(p), fs::Permissions::from_mode(m)).unwrap();
        };
        fs::create_dir(r.join("bin")).unwrap();
        fs::create_dir(r.join("empty")).unwrap();
        put("a.txt", b"hello\n", 0o644);
        put("bin/run", b"#!/bin/sh\necho hi\n", 0o755);
        put("zero", b"", 0o600);
        fs::set_permissions(r.join("bin"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(r.join("empty"), fs::Permissions::from_mode(0o700)).unwrap();
        symlink("a.txt", r.join("link")).unwrap();
        assert_eq!(
            digest_dir(r, DigestVersion::V1).unwrap().to_string(),
            EXPECTED
        );

        let file = |path: &str, perm, c: &[u8]| Node {
            path: path.into(),
            kind: Kind::File {
                perm,
                size: c.len() as u64,
                hash: blake3::hash(c).to_hex().to_string(),
                blobs: vec![],
                link: None,
                data: None,
            },
            meta: Meta::default(),
        };
        let m = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            name: "x".into(),
            digest: "blake3:".into(),
            created: 0,
            nodes: vec![
                file("zero", 0o600, b""),
                Node {
                    path: "bin".into(),
                    kind: Kind::Dir { perm: 0o755 },
                    meta: Meta::default(),
                },
                file("bin/run", 0o755, b"#!/bin/sh\necho hi\n"),
                Node {
                    path: "link".into(),
                    kind: Kind::Symlink {
                        perm: 0o777,
                        target: "a.txt".into(),
                    },
                    meta: Meta::default(),
                },
                Node {
                    path: "empty".into(),
                    kind: Kind::Dir { perm: 0o700 },
                    meta: Meta::default(),
                },
                file("a.txt", 0o644, b"hello\n"),
            ],
        };
        assert_eq!(
            m.tree_digest_with(&XattrValues::new()).unwrap().to_string(),
            EXPECTED
        );
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in ["../x", "a/../../x", "/etc", "a//b", ".", "link/x"] {
            let m = Manifest {
                format: FORMAT.into(),
                version: VERSION,
                name: "x".into(),
                digest: String::new(),
                created: 0,
                nodes: vec![
                    Node {
                        path: "link".into(),
                        kind: Kind::Symlink {
                            perm: 0o777,
                            target: "/".into(),
                        },
                        meta: Meta::default(),
                    },
                    Node {
                        path: bad.into(),
                        kind: Kind::Dir { perm: 0o755 },
                        meta: Meta::default(),
                    },
                ],
            };
            assert!(m.validate().is_err(), "{bad}");
        }
    }

    /// The node metadata of the schema: every field round-trips, a node
    /// without any (as written before they existed) still reads, and a
    /// malformed field is refused by `validate` (or by the parse itself).
    #[test]
    fn node_metadata_schema() {
        let old = r#"{"path":"f","type":"file","perm":420,"size":0,
            "hash":"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262","blobs":[]}"#;
        let n: Node = serde_json::from_str(old).unwrap();
        assert_eq!(n.meta, Meta::default());
        let full = r#"{"path":"dev","type":"char","perm":420,"major":1,"minor":3,
            "uid":1234,"gid":5678,"mtime":[978307200,5],
            "xattrs":[{"name":"security.capability","value":"00"},{"name":"user.a","value":""}]}"#;
        let n: Node = serde_json::from_str(full).unwrap();
        assert_eq!(n.meta.uid, Some(1234));
        assert_eq!(n.meta.mtime, Some((978307200, 5)));
        let again: Node = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(again, n);
        let manifest = |nodes: Vec<Node>| Manifest {
            format: FORMAT.into(),
            version: VERSION,
            name: "x".into(),
            digest: String::new(),
            created: 0,
            nodes,
        };
        assert_eq!(manifest(vec![n.clone()]).validate(), Ok(()));
        for bad in [
            r#""uid":-1"#,
            r#""uid":4294967296"#,
            r#""gid":"0""#,
            r#""mode":1"#,
        ] {
            let json = full.replace(r#""uid":1234"#, bad);
            let parsed = serde_json::from_str::<Node>(&json);
            // "mode" is an unknown key: it parses, and means nothing.
            if bad.contains("mode") {
                assert!(parsed.is_ok());
            } else {
                assert!(parsed.is_err(), "{bad}");
            }
        }
        let refuse = |edit: &dyn Fn(&mut Node)| {
            let mut m = n.clone();
            edit(&mut m);
            assert!(manifest(vec![m.clone()]).validate().is_err(), "{m:?}");
        };
        refuse(&|m| {
            m.kind = Kind::Char {
                perm: 0o10644,
                major: 1,
                minor: 3,
            }
        });
        refuse(&|m| {
            m.kind = Kind::Block {
                perm: 0o644,
                major: 1 << 12,
                minor: 0,
            }
        });
        refuse(&|m| {
            m.kind = Kind::Char {
                perm: 0o644,
                major: 1,
                minor: 1 << 20,
            }
        });
        refuse(&|m| m.meta.uid = Some(u32::MAX));
        refuse(&|m| m.meta.mtime = Some((0, 1_000_000_000)));
        refuse(&|m| m.meta.xattrs.reverse());
        refuse(&|m| m.meta.xattrs[0].name = "bogus.x".into());
        refuse(&|m| m.meta.xattrs[0].name = "user.".into());
        refuse(&|m| m.meta.xattrs[0].value = Some("0g".into()));
        refuse(&|m| m.meta.xattrs[0].value = Some("0".repeat(2 * XATTR_VALUE_MAX + 2)));
        // A value as a blob: well formed, it validates (its bytes are
        // fetched later); a bad hash, a size over 64 KiB, both a value
        // and a blob, or neither are refused.
        let blob = |hash: String, size: u64| Some(BlobRef { hash, size });
        let mut as_blob = n.clone();
        as_blob.meta.xattrs[0].value = None;
        as_blob.meta.xattrs[0].blob = blob("ab".repeat(32), 10 << 10);
        assert_eq!(manifest(vec![as_blob.clone()]).validate(), Ok(()));
        let again: Node = serde_json::from_str(&serde_json::to_string(&as_blob).unwrap()).unwrap();
        assert_eq!(again, as_blob);
        assert!(serde_json::to_string(&as_blob).unwrap().contains(&format!(
            r#"{{"name":"security.capability","blob":{{"hash":"{}","size":10240}}}}"#,
            "ab".repeat(32)
        )));
        refuse(&|m| {
            m.meta.xattrs[0].value = None;
            m.meta.xattrs[0].blob = blob("ab".repeat(31), 2000);
        });
        refuse(&|m| {
            m.meta.xattrs[0].value = None;
            m.meta.xattrs[0].blob = blob("xy".repeat(32), 2000);
        });
        refuse(&|m| {
            m.meta.xattrs[0].value = None;
            m.meta.xattrs[0].blob = blob("ab".repeat(32), XATTR_VALUE_MAX as u64 + 1);
        });
        refuse(&|m| m.meta.xattrs[0].blob = blob("ab".repeat(32), 2000));
        refuse(&|m| m.meta.xattrs[0].value = None);
        // A blob reference that is not `{"hash", "size"}` does not parse.
        for bad in [
            r#""blob":"ab""#,
            r#""blob":{"hash":"ab"}"#,
            r#""blob":{"size":1}"#,
        ] {
            let json = full.replace(r#""value":"00""#, bad);
            assert!(serde_json::from_str::<Node>(&json).is_err(), "{bad}");
        }
        let sparse = |data: Vec<(u64, u64)>, blobs: &[u64]| Node {
            path: "s".into(),
            kind: Kind::File {
                perm: 0o644,
                size: 100,
                hash: "00".repeat(32),
                blobs: blobs
                    .iter()
                    .map(|&size| BlobRef {
                        hash: "00".repeat(32),
                        size,
                    })
                    .collect(),
                link: None,
                data: Some(data),
            },
            meta: Meta::default(),
        };
        assert_eq!(
            manifest(vec![sparse(vec![(0, 10), (50, 10)], &[10, 10])]).validate(),
            Ok(())
        );
        for (data, blob) in [
            (vec![(0, 10), (50, 10)], &[10, 11][..]),
            (vec![(0, 10), (50, 10)], &[20]),
            (vec![(0, 10), (50, 10)], &[5, 10, 5]),
            (vec![(50, 10), (0, 10)], &[10, 10]),
            (vec![(0, 10), (5, 10)], &[10, 10]),
            (vec![(95, 10)], &[10]),
            (vec![(0, 0)], &[]),
            (vec![(u64::MAX, 1)], &[1]),
        ] {
            assert!(
                manifest(vec![sparse(data.clone(), blob)])
                    .validate()
                    .is_err(),
                "{data:?}"
            );
        }
    }
}
