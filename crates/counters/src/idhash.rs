//! A fast hash for identifiers the operator chose (application ids), used where they
//! are hashed for every request or metered frame. The standard library's SipHash
//! resists keys an attacker picks to collide, which these are not: a request reaches
//! the counters only after its credential matched a configured application. Keys a
//! client controls (the `rate_limit` policy's templates) keep SipHash.

use std::hash::{BuildHasher, Hasher};

/// Builds [`IdHasher`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdHash;

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// Multiply-rotate over eight bytes at a time, with a final mix so that both the low
/// bits (bucket index, shard) and the high bits (hashbrown's tags) vary.
#[derive(Debug, Clone, Copy)]
pub struct IdHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl IdHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_ids_hash_alike_and_ids_spread_over_shards() {
        let h = |s: &str| IdHash.hash_one(s);
        assert_eq!(h("app-1"), h("app-1"));
        assert_ne!(h("app-1"), h("app-2"));
        // Lengths that differ only in trailing zero bytes stay apart.
        assert_ne!(h("a"), h("a\0"));
        let mut shards = [0usize; 16];
        for i in 0..16_000 {
            shards[(h(&format!("application-{i}")) as usize) % 16] += 1;
        }
        assert!(shards.iter().all(|&n| (800..1200).contains(&n)), "uneven shards: {shards:?}");
    }
}
