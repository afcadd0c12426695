//! ed25519 keys: who may publish manifests a pull accepts.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::error::{Error, Result};

/// How a [`PublicKey`] is written: `ed25519:` and 64 hex digits.
pub const PUBLIC_PREFIX: &str = "ed25519:";
/// How a [`SecretKey`] is written: `ed25519-secret:` and 64 hex digits
/// (the 32-byte seed).
pub const SECRET_PREFIX: &str = "ed25519-secret:";

/// A secret ed25519 key that signs the manifests a [`Remote`](crate::Remote)
/// pushes. Written `ed25519-secret:<64 hex>`; its `Debug` hides the key.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

/// A public ed25519 key that a pull trusts. Written `ed25519:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

/// Make a new key pair from the operating system's random source
/// (`getrandom`). Keep the secret key on the hosts that push; give the
/// public key ([`SecretKey::public_key`]) to every host that pulls.
///
/// # Errors
///
/// The random source failed.
pub fn keygen() -> Result<SecretKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Key(format!("no random source: {e}")))?;
    Ok(SecretKey(SigningKey::from_bytes(&seed)))
}

impl SecretKey {
    /// The public half, to hand to pullers.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl PublicKey {
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(signature) else {
            return false;
        };
        self.0.verify(message, &sig).is_ok()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}{}", hex(&self.0.to_bytes()))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public: {})", self.public_key())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for SecretKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let seed = s
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .and_then(unhex::<32>)
            .ok_or_else(|| Error::Key(format!("expected `{SECRET_PREFIX}` and 64 hex digits")))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }
}

impl FromStr for PublicKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bytes = s
            .trim()
            .strip_prefix(PUBLIC_PREFIX)
            .and_then(unhex::<32>)
            .ok_or_else(|| Error::Key(format!("expected `{PUBLIC_PREFIX}` and 64 hex digits")))?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| Error::Key("not a point on the ed25519 curve".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sign() {
        let sk = keygen().unwrap();
        let sk2: SecretKey = sk.to_string().parse().unwrap();
        let pk: PublicKey = sk.public_key().to_string().parse().unwrap();
        assert_eq!(sk2.public_key(), pk);
        let sig = sk.sign(b"msg");
        assert!(pk.verify(b"msg", &sig));
        assert!(!pk.verify(b"msh", &sig));
        assert!(!keygen().unwrap().public_key().verify(b"msg", &sig));
        assert!(!format!("{sk:?}").contains(&sk.to_string()));
        assert!("ed25519:zz".parse::<PublicKey>().is_err());
    }
}
