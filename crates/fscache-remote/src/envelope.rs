//! The manifest envelope: what is stored at `v1/manifests/NAME` (the
//! manifest's JSON verbatim, its ed25519 signatures and, in format 2, the
//! unsigned locator), its zstd framing, sealing (signing) and opening
//! (the signature, format, name and digest checks a pull relies on; the
//! digest of a manifest with xattr blobs is checked once they are
//! fetched).

use std::borrow::Cow;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::{hex, unhex, PublicKey, SecretKey};
use crate::locator::Locator;
use crate::manifest::{Manifest, XattrValues, FORMAT, VERSION};

/// What a signature signs, before the manifest's bytes.
const SIGNED_TAG: &[u8] = b"fscache-remote-manifest-v1\0";

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
    /// paths, and that the digest is the one of the tree it describes
    /// (for a manifest with xattr blobs, whose bytes are not in it, the
    /// pull checks the digest once it has them:
    /// [`Manifest::check_digest`]).
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
        if !m.has_xattr_blobs() {
            m.check_digest(&XattrValues::new())
                .map_err(|why| Error::refused(name, why))?;
        }
        Ok((m, env.locator))
    }

    /// Check that the digest is the one of the tree the manifest lists,
    /// the bytes of its xattr blobs taken from `values`: at open, or for a
    /// manifest with xattr blobs once a pull has fetched them (before it
    /// writes anything).
    pub(crate) fn check_digest(&self, values: &XattrValues) -> Result<(), String> {
        let computed = self.tree_digest_with(values)?;
        if computed.to_string() != self.digest {
            return Err(format!(
                "its digest {} is not the one of the tree it lists ({computed})",
                self.digest
            ));
        }
        Ok(())
    }
}
