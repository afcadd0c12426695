//! A file node's `hash`: the content hash of the manifest's digest
//! version ([`fscache::ContentHasher`]) of zeros and of a file on disk (a
//! file of one chunk takes [`ContentHasher::of_whole`] of its chunk).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use fscache::{ContentHasher, DigestVersion};

use crate::error::{Error, Result};

/// The content hash in `version` of `size` zero bytes (an empty file, or
/// a sparse file that is all hole).
pub(crate) fn of_zeros(version: DigestVersion, size: u64) -> blake3::Hash {
    let mut h = ContentHasher::new(version);
    h.zeros(size);
    h.finalize()
}

/// The content hash in `version` of the file at `path`, read from disk;
/// its holes (if the file system reports them) are fed as zeros, never
/// read.
pub(crate) fn of_file(version: DigestVersion, path: &Path) -> Result<blake3::Hash> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let md = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    let ranges = crate::node::data_ranges(&file, &md, path)?.unwrap_or_else(|| vec![(0, md.len())]);
    let mut h = ContentHasher::new(version);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    for (start, len) in ranges {
        h.zeros(start.saturating_sub(at));
        at = at.max(start);
        let end = start + len;
        while at < end {
            let want = buf
                .len()
                .min(usize::try_from(end - at).unwrap_or(usize::MAX));
            let n = match file.read_at(&mut buf[..want], at) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", path, e)),
            };
            h.update(&buf[..n]);
            at += n as u64;
        }
        if at < end {
            break; // shorter than it was: what was read is the content
        }
    }
    if at < md.len() {
        h.zeros(md.len() - at);
    }
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fscache::DIGEST_BLOCK as BLOCK;

    fn v3(data: &[u8]) -> blake3::Hash {
        let mut h = ContentHasher::new(DigestVersion::V3);
        h.update(data);
        h.finalize()
    }

    #[test]
    fn one_chunk_hash_is_the_content_hashers() {
        let mut big = vec![7u8; 3 * BLOCK + 5];
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            b"hello\n".to_vec(),
            vec![0; 10],
            vec![0; BLOCK],
            vec![1; BLOCK],
            vec![1; BLOCK + 1],
            big.clone(),
        ];
        big[BLOCK..2 * BLOCK].fill(0);
        cases.push(big.clone());
        big[3 * BLOCK..].fill(0);
        cases.push(big);
        for data in cases {
            let hash = blake3::hash(&data);
            assert_eq!(
                ContentHasher::of_whole(DigestVersion::V3, &data, &hash),
                v3(&data),
                "{} bytes",
                data.len()
            );
            assert_eq!(
                ContentHasher::of_whole(DigestVersion::V2, &data, &hash),
                hash
            );
        }
        // The documented shape of a content without a zero block.
        let mut by_hand = blake3::Hasher::new();
        by_hand.update(b"fscache-data-v3\0\x01");
        by_hand.update(&6u64.to_le_bytes());
        by_hand.update(blake3::hash(b"hello\n").as_bytes());
        assert_eq!(v3(b"hello\n"), by_hand.finalize());
    }

    #[test]
    fn a_sparse_file_hashes_as_its_dense_content() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let f = File::create(&p).unwrap();
        f.set_len(5 * BLOCK as u64 + 3).unwrap();
        f.write_all_at(b"data", 2 * BLOCK as u64 + 10).unwrap();
        drop(f);
        let dense = std::fs::read(&p).unwrap();
        for v in [DigestVersion::V2, DigestVersion::V3] {
            let mut h = ContentHasher::new(v);
            h.update(&dense);
            assert_eq!(of_file(v, &p).unwrap(), h.finalize());
        }
        assert_eq!(of_zeros(DigestVersion::V3, 0), v3(b""));
        assert_eq!(of_zeros(DigestVersion::V3, 70_000), v3(&[0; 70_000]));
        assert_eq!(of_zeros(DigestVersion::V2, 9), blake3::hash(&[0; 9]));
    }
}
