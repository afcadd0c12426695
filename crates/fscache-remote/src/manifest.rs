//! The manifest of one entry: its tree, blob lists and tree digest, in a
//! signed envelope; and the tree digest (version 1) over a manifest or a
//! directory on disk.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::path::Path;

use fscache::{Digest, DirHasher};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::{hex, unhex, PublicKey, SecretKey};
use crate::locator::Locator;

/// The `format` value of manifests and envelopes.
pub(crate) const FORMAT: &str = "fscache-remote-manifest";
/// The layout version this crate reads and writes.
pub(crate) const VERSION: u64 = 1;
/// What a signature signs, before the manifest's bytes.
const SIGNED_TAG: &[u8] = b"fscache-remote-manifest-v1\0";

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
        /// BLAKE3 of the whole content, 64 hex digits.
        hash: String,
        /// The chunks, in order; empty for a hard link.
        #[serde(default)]
        blobs: Vec<BlobRef>,
        /// For the second and later names of one inode: the first name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<String>,
    },
    Symlink {
        perm: u32,
        target: String,
    },
}

/// A node: its path below `data/` (components joined by `/`) and kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Node {
    pub path: String,
    #[serde(flatten)]
    pub kind: Kind,
}

/// The manifest of one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: String,
    pub version: u64,
    pub name: String,
    /// The tree digest of `data/`, `blake3:<64 hex>`.
    pub digest: String,
    /// Seconds since the Unix epoch when the push published it.
    pub created: u64,
    /// Parents before children.
    pub nodes: Vec<Node>,
}

#[derive(Serialize, Deserialize)]
struct SignatureJson {
    key: String,
    sig: String,
}

/// What is stored at `v1/manifests/NAME`.
#[derive(Serialize, Deserialize)]
struct Envelope {
    format: String,
    version: u64,
    /// The manifest's JSON, verbatim: the signed bytes.
    manifest: String,
    #[serde(default)]
    signatures: Vec<SignatureJson>,
    /// Format 2: where the blobs are (unsigned; see `locator.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locator: Option<Locator>,
}

/// The envelope version: 1 without a locator (blobs are objects of their
/// own), 2 with one (blobs are in packs).
const ENVELOPE_LOCATED: u64 = 2;

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The most a compressed manifest or intent may expand to (a bound
/// against a decompression bomb in a bucket).
const UNPACKED_MAX: u64 = 1 << 30;

/// Compress a manifest envelope or an intent for storage.
pub(crate) fn pack(json: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(json, 3).expect("compressing into memory cannot fail")
}

/// The JSON of a stored manifest envelope or intent: a zstd frame is
/// decompressed (at most 1 GiB), anything else is taken as JSON as it is.
pub(crate) fn unpack(bytes: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    if !bytes.starts_with(&ZSTD_MAGIC) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .map_err(|e| e.to_string())?
        .take(UNPACKED_MAX + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not a zstd frame: {e}"))?;
    if out.len() as u64 > UNPACKED_MAX {
        return Err("larger than 1 GiB once decompressed".into());
    }
    Ok(Cow::Owned(out))
}

/// Parse a stored envelope of either version, without any check of its
/// manifest.
fn envelope(bytes: &[u8]) -> Result<Envelope, String> {
    let env: Envelope = serde_json::from_slice(&unpack(bytes)?).map_err(|e| e.to_string())?;
    if env.format != FORMAT || !(env.version == VERSION || env.version == ENVELOPE_LOCATED) {
        return Err("not this format".into());
    }
    Ok(env)
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNED_TAG.len() + body.len());
    m.extend_from_slice(SIGNED_TAG);
    m.extend_from_slice(body);
    m
}

impl Manifest {
    /// The envelope's bytes (format 1: no locator), signed with `key` if
    /// given.
    #[allow(dead_code)] // format 1 is read, no longer written (but by tests)
    pub(crate) fn seal(&self, key: Option<&SecretKey>) -> Vec<u8> {
        self.seal_located(key, None)
    }

    /// The envelope's bytes, signed with `key` if given, with the
    /// locator of its blobs (format 2) if given. The signature covers the
    /// manifest only, never the locator.
    pub(crate) fn seal_located(
        &self,
        key: Option<&SecretKey>,
        locator: Option<Locator>,
    ) -> Vec<u8> {
        let body = serde_json::to_string(self).expect("a manifest always serializes");
        let signatures = key
            .map(|k| SignatureJson {
                key: k.public_key().to_string(),
                sig: hex(&k.sign(&signed_message(body.as_bytes()))),
            })
            .into_iter()
            .collect();
        let env = Envelope {
            format: FORMAT.into(),
            version: if locator.is_some() {
                ENVELOPE_LOCATED
            } else {
                VERSION
            },
            manifest: body,
            signatures,
            locator,
        };
        pack(&serde_json::to_vec(&env).expect("an envelope always serializes"))
    }

    #[allow(dead_code)] // by `migrate` (next)
    /// Replace the locator of a stored envelope, keeping its manifest and
    /// signatures byte for byte (a repack or a migration: no key needed).
    pub(crate) fn relocate(bytes: &[u8], locator: Locator) -> Result<Vec<u8>, String> {
        let mut env = envelope(bytes)?;
        env.version = ENVELOPE_LOCATED;
        env.locator = Some(locator);
        Ok(pack(
            &serde_json::to_vec(&env).expect("an envelope always serializes"),
        ))
    }

    /// Parse an envelope and its manifest without any check: for prune,
    /// which only needs the blobs a manifest names and when it was made.
    pub(crate) fn open_unchecked(bytes: &[u8]) -> Result<Manifest, String> {
        Self::open_unchecked_located(bytes).map(|(m, _)| m)
    }

    /// [`Manifest::open_unchecked`], with the envelope's locator.
    pub(crate) fn open_unchecked_located(
        bytes: &[u8],
    ) -> Result<(Manifest, Option<Locator>), String> {
        let env = envelope(bytes)?;
        let m = serde_json::from_str(&env.manifest).map_err(|e| e.to_string())?;
        Ok((m, env.locator))
    }

    /// Open an envelope read from `manifests/NAME`: check the signature
    /// against `trusted` (when not empty), the format, the name, the
    /// paths, and that the digest is the one of the tree it describes.
    #[allow(dead_code)] // pulls use `open_located`
    pub(crate) fn open(name: &str, bytes: &[u8], trusted: &[PublicKey]) -> Result<Manifest> {
        Self::open_located(name, bytes, trusted).map(|(m, _)| m)
    }

    /// [`Manifest::open`], with the envelope's locator (format 2; `None`
    /// for format 1). The locator is not checked here: it is not signed,
    /// and every blob it points at is checked as it is read.
    pub(crate) fn open_located(
        name: &str,
        bytes: &[u8],
        trusted: &[PublicKey],
    ) -> Result<(Manifest, Option<Locator>)> {
        let json = unpack(bytes).map_err(|why| Error::refused(name, why))?;
        let env: Envelope = serde_json::from_slice(&json)
            .map_err(|e| Error::refused(name, format!("not a manifest envelope: {e}")))?;
        let known = env.version == VERSION || env.version == ENVELOPE_LOCATED;
        if env.format != FORMAT
            || !known
            || (env.version == ENVELOPE_LOCATED) != env.locator.is_some()
        {
            return Err(Error::refused(
                name,
                format!(
                    "format `{}` version {}, expected `{FORMAT}` version {VERSION} \
                     or {ENVELOPE_LOCATED} (with a locator)",
                    env.format, env.version
                ),
            ));
        }
        if !trusted.is_empty() {
            let message = signed_message(env.manifest.as_bytes());
            let ok = env.signatures.iter().any(|s| {
                let Ok(key) = s.key.parse::<PublicKey>() else {
                    return false;
                };
                let Some(sig) = unhex::<64>(&s.sig) else {
                    return false;
                };
                trusted.contains(&key) && key.verify(&message, &sig)
            });
            if !ok {
                let why = if env.signatures.is_empty() {
                    "unsigned, and trusted keys are configured".to_string()
                } else {
                    "no valid signature by a trusted key".to_string()
                };
                return Err(Error::refused(name, why));
            }
        }
        let m: Manifest = serde_json::from_str(&env.manifest)
            .map_err(|e| Error::refused(name, format!("malformed manifest: {e}")))?;
        if m.format != FORMAT || m.version != VERSION {
            return Err(Error::refused(name, "manifest format or version mismatch"));
        }
        if m.name != name {
            return Err(Error::refused(
                name,
                format!("it is the manifest of `{}`", m.name),
            ));
        }
        m.validate().map_err(|why| Error::refused(name, why))?;
        let computed = m.tree_digest().map_err(|why| Error::refused(name, why))?;
        if computed.to_string() != m.digest {
            return Err(Error::refused(
                name,
                format!(
                    "its digest {} is not the one of the tree it lists ({computed})",
                    m.digest
                ),
            ));
        }
        Ok((m, env.locator))
    }

    /// Check the shape: safe relative paths, each parent a directory
    /// listed before, no duplicates, hard links to earlier files, blob
    /// lists that add up.
    fn validate(&self) -> Result<(), String> {
        let mut kinds: HashMap<&str, &Kind> = HashMap::new();
        for node in &self.nodes {
            let p = node.path.as_str();
            if p.is_empty()
                || p.split('/')
                    .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
            {
                return Err(format!("unsafe path `{p}`"));
            }
            if let Some((parent, _)) = p.rsplit_once('/') {
                if !matches!(kinds.get(parent), Some(Kind::Dir { .. })) {
                    return Err(format!("`{p}` comes before its directory"));
                }
            }
            match &node.kind {
                Kind::File {
                    size,
                    hash,
                    blobs,
                    link,
                    ..
                } => {
                    if unhex::<32>(hash).is_none() {
                        return Err(format!("`{p}` has a malformed hash"));
                    }
                    if let Some(first) = link {
                        match kinds.get(first.as_str()) {
                            Some(Kind::File {
                                link: None,
                                hash: h,
                                size: s,
                                ..
                            }) if h == hash && s == size => {}
                            _ => {
                                return Err(format!(
                                    "`{p}` links to `{first}`, not a file before it"
                                ))
                            }
                        }
                        if !blobs.is_empty() {
                            return Err(format!("hard link `{p}` lists blobs"));
                        }
                    } else {
                        if blobs.iter().any(|b| unhex::<32>(&b.hash).is_none()) {
                            return Err(format!("`{p}` has a malformed blob hash"));
                        }
                        let total = blobs.iter().try_fold(0u64, |a, b| a.checked_add(b.size));
                        if total != Some(*size) {
                            return Err(format!("the blobs of `{p}` do not add up to its size"));
                        }
                    }
                }
                Kind::Dir { .. } | Kind::Symlink { .. } => {}
            }
            if kinds.insert(p, &node.kind).is_some() {
                return Err(format!("`{p}` is listed twice"));
            }
        }
        Ok(())
    }

    /// The tree digest (version 1) of the tree this manifest lists, fed to
    /// the one encoder of the digest ([`fscache::DirHasher`]).
    pub(crate) fn tree_digest(&self) -> Result<Digest, String> {
        let mut children: HashMap<&str, Vec<&Node>> = HashMap::new();
        for node in &self.nodes {
            let parent = node.path.rsplit_once('/').map_or("", |(p, _)| p);
            children.entry(parent).or_default().push(node);
        }
        fn dir(children: &HashMap<&str, Vec<&Node>>, at: &str) -> Result<Digest, String> {
            let mut kids: Vec<&Node> = children.get(at).cloned().unwrap_or_default();
            kids.sort_by(|a, b| base(&a.path).as_bytes().cmp(base(&b.path).as_bytes()));
            let mut h = DirHasher::new();
            for k in kids {
                let name = OsStr::new(base(&k.path));
                match &k.kind {
                    Kind::File {
                        perm, size, hash, ..
                    } => {
                        let hash = unhex::<32>(hash).ok_or("malformed hash")?;
                        h.file(name, *perm, *size, &hash);
                    }
                    Kind::Dir { perm } => h.dir(name, *perm, &dir(children, &k.path)?),
                    Kind::Symlink { perm, target } => h.symlink(name, *perm, target.as_bytes()),
                }
            }
            Ok(h.finish())
        }
        dir(&children, "")
    }
}

fn base(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, b)| b)
}

/// The tree digest (version 1) of the directory at `path`, read from disk
/// without following symlinks: what a pull checks the tree it built
/// against.
pub(crate) fn digest_dir(path: &Path) -> io::Result<Digest> {
    fscache::tree_digest(path).map_err(io::Error::from)
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
        assert_eq!(digest_dir(r).unwrap().to_string(), EXPECTED);

        let file = |path: &str, perm, c: &[u8]| Node {
            path: path.into(),
            kind: Kind::File {
                perm,
                size: c.len() as u64,
                hash: blake3::hash(c).to_hex().to_string(),
                blobs: vec![],
                link: None,
            },
        };
        let m = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            name: "x".into(),
            digest: String::new(),
            created: 0,
            nodes: vec![
                file("zero", 0o600, b""),
                Node {
                    path: "bin".into(),
                    kind: Kind::Dir { perm: 0o755 },
                },
                file("bin/run", 0o755, b"#!/bin/sh\necho hi\n"),
                Node {
                    path: "link".into(),
                    kind: Kind::Symlink {
                        perm: 0o777,
                        target: "a.txt".into(),
                    },
                },
                Node {
                    path: "empty".into(),
                    kind: Kind::Dir { perm: 0o700 },
                },
                file("a.txt", 0o644, b"hello\n"),
            ],
        };
        assert_eq!(m.tree_digest().unwrap().to_string(), EXPECTED);
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
                    },
                    Node {
                        path: bad.into(),
                        kind: Kind::Dir { perm: 0o755 },
                    },
                ],
            };
            assert!(m.validate().is_err(), "{bad}");
        }
    }
}
