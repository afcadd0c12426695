//! Packs (format 2): many compressed blobs in one content-addressed
//! object of about 16 MiB, with a trailer that lists them, so a pack
//! describes itself and an index can be rebuilt from the packs alone.
//!
//! ```text
//! frame_0 ‖ frame_1 ‖ … ‖ trailer ‖ trailer length (u64 LE) ‖ "FSCPACK2"
//! ```
//!
//! Each frame is one zstd frame of one blob. The trailer is one zstd frame
//! of `{"format": "fscache-remote-pack", "version": 2, "blobs": [["<hash>",
//! offset, length, size], …]}` (offset and length of the frame in the
//! pack, size of the blob uncompressed). The pack's key is
//! `v2/packs/<h[0..2]>/<h>`, `h` the hex BLAKE3 of all of its bytes.

use serde::{Deserialize, Serialize};

/// Where packs are.
pub(crate) const PACKS: &str = "v2/packs/";
/// A pack is closed once it holds this many bytes.
pub(crate) const PACK_TARGET: usize = 16 << 20;
/// The last bytes of every pack.
const MAGIC: &[u8; 8] = b"FSCPACK2";
/// The fixed tail: trailer length and magic.
#[allow(dead_code)] // read by `check` (next)
pub(crate) const TAIL: usize = 16;
/// The trailer's `format`.
const FORMAT: &str = "fscache-remote-pack";
/// The largest trailer a reader accepts (a pack of 16 MiB of 64-byte
/// blobs lists fewer than 300 000).
#[allow(dead_code)]
const TRAILER_MAX: u64 = 64 << 20;

/// The key of the pack whose bytes hash to `hash`.
pub(crate) fn pack_key(hash: &str) -> String {
    format!("{PACKS}{}/{hash}", &hash[..2])
}

/// The hash of a pack key, if it is one.
pub(crate) fn pack_hash(key: &str) -> Option<&str> {
    let h = key.strip_prefix(PACKS)?.rsplit('/').next()?;
    (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then_some(h)
}

/// One blob in a pack: its hash, where its frame is, its size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Packed(pub String, pub u64, pub u64, pub u64);

#[allow(dead_code)]
impl Packed {
    pub(crate) fn hash(&self) -> &str {
        &self.0
    }
    pub(crate) fn offset(&self) -> u64 {
        self.1
    }
    pub(crate) fn length(&self) -> u64 {
        self.2
    }
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    format: String,
    version: u64,
    blobs: Vec<Packed>,
}

/// A pack being filled.
pub(crate) struct PackBuilder {
    bytes: Vec<u8>,
    blobs: Vec<Packed>,
    target: usize,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new(PACK_TARGET)
    }
}

/// A closed pack, ready to upload.
pub(crate) struct Pack {
    pub hash: String,
    pub bytes: Vec<u8>,
    pub blobs: Vec<Packed>,
}

impl PackBuilder {
    /// An empty pack that is full at `target` bytes.
    pub(crate) fn new(target: usize) -> Self {
        Self {
            bytes: Vec::new(),
            blobs: Vec::new(),
            target,
        }
    }

    /// Append one compressed blob; returns its offset and length.
    pub(crate) fn add(&mut self, hash: &str, size: u64, frame: &[u8]) -> (u64, u64) {
        if self.bytes.capacity() == 0 {
            self.bytes.reserve(self.target + (1 << 20));
        }
        let offset = self.bytes.len() as u64;
        self.bytes.extend_from_slice(frame);
        let length = frame.len() as u64;
        self.blobs.push(Packed(hash.into(), offset, length, size));
        (offset, length)
    }

    /// Whether it is big enough to close.
    pub(crate) fn full(&self) -> bool {
        self.bytes.len() >= self.target
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Close the pack: append the trailer and tail, hash it.
    pub(crate) fn finish(mut self) -> Pack {
        let trailer = Trailer {
            format: FORMAT.into(),
            version: 2,
            blobs: std::mem::take(&mut self.blobs),
        };
        let json = serde_json::to_vec(&trailer).expect("a trailer always serializes");
        let packed = crate::manifest::pack(&json);
        self.bytes.extend_from_slice(&packed);
        self.bytes
            .extend_from_slice(&(packed.len() as u64).to_le_bytes());
        self.bytes.extend_from_slice(MAGIC);
        Pack {
            hash: blake3::hash(&self.bytes).to_hex().to_string(),
            bytes: self.bytes,
            blobs: trailer.blobs,
        }
    }
}

/// The trailer's length from a pack's last [`TAIL`] bytes.
#[allow(dead_code)]
pub(crate) fn trailer_len(tail: &[u8]) -> Result<u64, String> {
    if tail.len() != TAIL || &tail[8..] != MAGIC {
        return Err("not a pack (no FSCPACK2 tail)".into());
    }
    let n = u64::from_le_bytes(tail[..8].try_into().expect("8 bytes"));
    if n > TRAILER_MAX {
        return Err(format!("a trailer of {n} bytes is too large"));
    }
    Ok(n)
}

/// The blobs a pack's trailer lists, checked to lie inside the pack's
/// `size` bytes before the trailer.
#[allow(dead_code)]
pub(crate) fn parse_trailer(trailer: &[u8], size: u64) -> Result<Vec<Packed>, String> {
    let json = crate::manifest::unpack(trailer)?;
    let t: Trailer = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    if t.format != FORMAT || t.version != 2 {
        return Err("not a pack trailer of this format".into());
    }
    let body = size.saturating_sub(TAIL as u64 + trailer.len() as u64);
    for b in &t.blobs {
        if b.offset()
            .checked_add(b.length())
            .is_none_or(|end| end > body)
        {
            return Err(format!("blob {} lies outside the pack", b.hash()));
        }
    }
    Ok(t.blobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_describes_itself() {
        let mut b = PackBuilder::default();
        let frames = [b"one".as_slice(), b"second frame", b""];
        for (i, f) in frames.iter().enumerate() {
            b.add(&format!("{i:064}"), 10, f);
        }
        let p = b.finish();
        assert_eq!(p.hash, blake3::hash(&p.bytes).to_hex().as_str());
        let n = p.bytes.len();
        let tl = trailer_len(&p.bytes[n - TAIL..]).unwrap() as usize;
        let listed = parse_trailer(&p.bytes[n - TAIL - tl..n - TAIL], n as u64).unwrap();
        assert_eq!(listed, p.blobs);
        for (l, f) in listed.iter().zip(frames) {
            let (o, len) = (l.offset() as usize, l.length() as usize);
            assert_eq!(&p.bytes[o..o + len], f);
        }
        assert!(trailer_len(b"0123456789abcdef").is_err());
        assert_eq!(pack_hash(&pack_key(&p.hash)), Some(p.hash.as_str()));
    }
}
