//! A small, stable 64-bit hash (FNV-1a) for trace hashes: the same bytes give the same hash
//! on every run and every machine, unlike `std`'s randomly keyed hashers.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Accumulates a trace: operations, crash points and verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHash {
    state: u64,
}

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash {
            state: FNV_OFFSET_BASIS,
        }
    }
}

impl TraceHash {
    pub fn new() -> TraceHash {
        TraceHash::default()
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.state ^= u64::from(byte);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    pub fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    pub fn str(&mut self, value: &str) {
        self.u64(value.len() as u64);
        self.bytes(value.as_bytes());
    }

    /// Folds another hash in (order matters).
    pub fn fold(&mut self, other: u64) {
        self.u64(other);
    }

    pub fn finish(&self) -> u64 {
        self.state
    }
}

/// The hash of one byte string.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash = TraceHash::new();
    hash.bytes(bytes);
    hash.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(hash_bytes(b""), FNV_OFFSET_BASIS);
        assert_eq!(hash_bytes(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(hash_bytes(b"ab"), hash_bytes(b"ba"));
    }
}
