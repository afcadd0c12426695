//! What the remote tier's test modules share.

/// Deterministic pseudo-random bytes (xorshift), so chunks differ: no two
/// seeds give the same bytes (the seed is spread by an odd multiplier
/// before the low bit is set, so `2k` and `2k + 1` stay apart).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
