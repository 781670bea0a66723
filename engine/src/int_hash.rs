//! A multiplicative hasher for maps keyed by small integers the engine and its tiers choose
//! themselves (stream ids, segment generations, block numbers): far cheaper than SipHash on
//! paths that look such keys up per record or per block, and safe there because the keys are
//! not attacker-chosen in numbers that could degrade the table.

use std::hash::{BuildHasherDefault, Hasher};

/// Feeds each integer through a rotate, xor and golden-ratio multiply (Fibonacci hashing).
#[derive(Debug, Default, Clone, Copy)]
pub struct IntHasher(u64);

/// [`IntHasher`] for `HashMap::with_hasher` / `HashMap::default`.
pub type IntBuildHasher = BuildHasherDefault<IntHasher>;

impl Hasher for IntHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        // The table takes bucket bits from the low end and tag bits from the top: fold the
        // well-mixed high half of the product into the low one.
        self.0 ^ (self.0 >> 29)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    /// Consecutive keys (as stream ids and block numbers are) spread over the low bits a
    /// table uses for its buckets.
    #[test]
    fn consecutive_keys_spread_over_the_low_bits() {
        let build = IntBuildHasher::default();
        let buckets: HashSet<u64> = (0..256u64).map(|key| build.hash_one(key) & 255).collect();
        assert!(buckets.len() > 150, "{} of 256 buckets used", buckets.len());
        let tuples: HashSet<u64> = (0..256u32)
            .map(|block_no| build.hash_one((7u64, block_no)) & 255)
            .collect();
        assert!(tuples.len() > 150, "{} of 256 buckets used", tuples.len());
    }
}
