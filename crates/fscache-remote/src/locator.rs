//! The locator (format 2): where each blob of one entry's manifest lives
//! (pack and byte range), stored unsigned beside the signed manifest in
//! its envelope; and the read plan a pull makes from it (ranges grouped
//! by pack, merged across small gaps, the waste bounded).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::manifest::{Kind, Manifest};
use crate::pack::pack_key;

/// Ranges of one pack closer than this are read as one (restic's rule).
pub(crate) const MERGE_GAP: u64 = 1 << 20;
/// A merged read never grows past this (bounds the memory of a pull).
pub(crate) const READ_MAX: u64 = 8 << 20;

/// Where the distinct blobs of a manifest are, in the order
/// [`distinct_blobs`] lists them: `[pack index, offset, length]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Locator {
    /// The packs' hashes.
    pub packs: Vec<String>,
    /// Per distinct blob: index into `packs`, offset and length of its
    /// frame.
    pub blobs: Vec<[u64; 3]>,
}

/// The distinct blobs of a manifest, in manifest order (nodes in order,
/// each file's blobs in order, each blob at its first appearance), then
/// those of its xattrs no file has (in [`Manifest::xattr_blobs`] order):
/// `(hash, size)`. The locator's order. The files' blobs come first so
/// that a manifest whose xattrs were put inline
/// ([`Manifest::inline_xattrs`]) lists a prefix of the same locator.
pub(crate) fn distinct_blobs(m: &Manifest) -> Vec<(&str, u64)> {
    distinct_blobs_split(m).0
}

/// [`distinct_blobs`], and how many of them (the first ones) are files'
/// blobs: the others are xattr values only.
pub(crate) fn distinct_blobs_split(m: &Manifest) -> (Vec<(&str, u64)>, usize) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for node in &m.nodes {
        if let Kind::File {
            blobs, link: None, ..
        } = &node.kind
        {
            for b in blobs {
                if seen.insert(b.hash.as_str()) {
                    out.push((b.hash.as_str(), b.size));
                }
            }
        }
    }
    let files = out.len();
    for (hash, size) in m.xattr_blobs() {
        if seen.insert(hash) {
            out.push((hash, size));
        }
    }
    (out, files)
}

impl Locator {
    /// The locator of the blobs at `indexes` of this one's list (its
    /// packs kept as they are): a pull's plan for part of an entry.
    pub(crate) fn subset(&self, indexes: &[usize]) -> Locator {
        Locator {
            packs: self.packs.clone(),
            blobs: indexes
                .iter()
                .filter_map(|&i| self.blobs.get(i).copied())
                .collect(),
        }
    }
}

/// One ranged read of a pack, and the blobs in it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Read {
    /// The pack's key.
    pub key: String,
    /// Byte range `start..end` of the pack.
    pub start: u64,
    pub end: u64,
    /// `(distinct blob index, offset in this read, length)`, by offset.
    pub blobs: Vec<(usize, u64, u64)>,
}

/// The most bytes one blob of `size` bytes can take as a zstd frame
/// (zstd's `ZSTD_compressBound`).
fn frame_bound(size: u64) -> u64 {
    size + (size >> 8)
        + if size < (128 << 10) {
            ((128 << 10) - size) >> 11
        } else {
            0
        }
        + 64
}

/// The reads a pull makes for the manifest's distinct blobs
/// (`wanted`, from [`distinct_blobs`]): grouped by pack, sorted by
/// offset, ranges merged across gaps up to [`MERGE_GAP`] while the bytes
/// read in gaps stay under half the blobs' own (or 1 MiB), each read at
/// most [`READ_MAX`] (a larger blob is its own read).
///
/// A locator is not signed, so it is only trusted this far: each frame
/// must be no longer than its blob could compress to, so the plan reads
/// at most about 1.5 times the entry's compressed size; anything else
/// refuses the locator. A frame at the wrong place is caught later, when
/// it does not decode to the blob's hash.
pub(crate) fn plan(wanted: &[(&str, u64)], loc: &Locator) -> Result<Vec<Read>, String> {
    if loc.blobs.len() != wanted.len() {
        return Err(format!(
            "it places {} blobs, the manifest has {}",
            loc.blobs.len(),
            wanted.len()
        ));
    }
    let mut by_pack: BTreeMap<usize, Vec<(u64, u64, usize)>> = BTreeMap::new();
    let mut total = 0u64;
    for (i, (&[pack, offset, length], (hash, size))) in loc.blobs.iter().zip(wanted).enumerate() {
        let p = usize::try_from(pack)
            .ok()
            .filter(|&p| p < loc.packs.len())
            .ok_or_else(|| format!("blob {hash} is in pack {pack}, which it does not name"))?;
        if length > frame_bound(*size) || offset.checked_add(length).is_none() {
            return Err(format!(
                "blob {hash} of {size} bytes is given a {length}-byte frame"
            ));
        }
        total += length;
        by_pack.entry(p).or_default().push((offset, length, i));
    }
    for h in &loc.packs {
        if h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!("malformed pack hash `{h}`"));
        }
    }
    let gap_budget = (total / 2).max(MERGE_GAP);
    let mut gaps = 0u64;
    let mut reads = Vec::new();
    for (p, mut blobs) in by_pack {
        blobs.sort_unstable();
        let key = pack_key(&loc.packs[p]);
        let mut cur: Option<Read> = None;
        for (offset, length, i) in blobs {
            let end = offset + length;
            if let Some(r) = cur.as_mut() {
                let gap = offset.saturating_sub(r.end);
                let fits = end.max(r.end) - r.start <= READ_MAX;
                if offset < r.end || (gap <= MERGE_GAP && fits && gaps + gap <= gap_budget) {
                    // Overlapping frames are a broken locator's; they
                    // cost nothing extra and fail their hash check.
                    gaps += gap;
                    r.blobs.push((i, offset - r.start, length));
                    r.end = r.end.max(end);
                    continue;
                }
            }
            reads.extend(cur.take());
            cur = Some(Read {
                key: key.clone(),
                start: offset,
                end,
                blobs: vec![(i, 0, length)],
            });
        }
        reads.extend(cur);
    }
    Ok(reads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: usize) -> String {
        format!("{i:064x}")
    }

    #[test]
    fn ranges_merge_across_small_gaps_only() {
        let hashes: Vec<String> = (0..5).map(h).collect();
        let wanted: Vec<(&str, u64)> = hashes.iter().map(|h| (h.as_str(), 1 << 20)).collect();
        let loc = Locator {
            packs: vec![h(100), h(101)],
            blobs: vec![
                [0, 0, 1000],
                [0, 1000 + 500, 1000],        // a small gap: merged
                [0, 10 << 20, 1000],          // far away: its own read
                [1, 0, 1000],                 // another pack
                [0, (10 << 20) + 1000, 1000], // adjacent to the far one
            ],
        };
        let reads = plan(&wanted, &loc).unwrap();
        assert_eq!(reads.len(), 3, "{reads:?}");
        assert_eq!((reads[0].start, reads[0].end), (0, 2500));
        assert_eq!(reads[0].blobs, vec![(0, 0, 1000), (1, 1500, 1000)]);
        assert_eq!(reads[1].blobs, vec![(2, 0, 1000), (4, 1000, 1000)]);
        assert_eq!(reads[2].key, pack_key(&h(101)));
    }

    #[test]
    fn a_locator_that_would_waste_bandwidth_is_refused() {
        let hashes: Vec<String> = (0..2).map(h).collect();
        let wanted: Vec<(&str, u64)> = hashes.iter().map(|h| (h.as_str(), 100)).collect();
        let huge = Locator {
            packs: vec![h(9)],
            blobs: vec![[0, 0, 1 << 30], [0, 0, 10]],
        };
        assert!(plan(&wanted, &huge).unwrap_err().contains("frame"));
        let short = Locator {
            packs: vec![h(9)],
            blobs: vec![[0, 0, 10]],
        };
        assert!(plan(&wanted, &short).is_err());
        let no_pack = Locator {
            packs: vec![h(9)],
            blobs: vec![[0, 0, 10], [3, 0, 10]],
        };
        assert!(plan(&wanted, &no_pack).is_err());
        // Tiny blobs spread over a pack: gaps are not read past the budget.
        let many: Vec<String> = (0..100).map(h).collect();
        let wanted: Vec<(&str, u64)> = many.iter().map(|h| (h.as_str(), 100)).collect();
        let spread = Locator {
            packs: vec![h(9)],
            blobs: (0..100).map(|i| [0, i * 1_000_000, 100]).collect(),
        };
        let reads = plan(&wanted, &spread).unwrap();
        let read: u64 = reads.iter().map(|r| r.end - r.start).sum();
        assert!(read <= 100 * 100 + (1 << 20) + 100, "{read}");
    }
}
