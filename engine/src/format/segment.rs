//! Segment header (first line of every segment) and segment table entry (its mutable state).
//!
//! Segment header, written and persisted when a segment is opened, before its table entry
//! says `Open`:
//! ```text
//! 0   [u8; 8] magic          b"PSTSEGMT"
//! 8   u32     version        SEGMENT_VERSION
//! 12  u32     segment_index
//! 16  u64     segment_gen    globally unique, increasing allocation number
//! 24  u64     pool_nonce
//! 32  u64     segment_size_bytes
//! 40  [u8;20] reserved       zero
//! 60  u32     crc            crc32 of bytes 0..60
//! 64  first record
//! ```
//!
//! Segment table entry: two 64-byte slots (A at +0, B at +64), each one cache line. An update
//! writes the slot not holding the newest valid version, words 1..8 first and `update_seq`
//! last, and persists it, so a torn update leaves the other slot intact and still shows its
//! old counter. The valid slot with the higher `update_seq` wins.
//! ```text
//! 0   u64 update_seq
//! 8   u8  state           SegmentState code
//! 9   u8  version         SEGMENT_VERSION as u8
//! 10  u16 lane            lane that opened the segment (informational)
//! 12  u32 reserved        zero
//! 16  u64 segment_gen
//! 24  u64 sealed_len_bytes  end of the last record (Sealed, Migrating, Cold)
//! 32  u64 record_count      records below sealed_len_bytes (Sealed, Migrating, Cold)
//! 40  u64 cold_id           id of the cold copy (Migrating, Cold)
//! 48  u64 reserved        zero
//! 56  u32 reserved        zero
//! 60  u32 crc             crc32 of bytes 0..60
//! ```

use super::{crc32, le_u16, le_u32, le_u64, put_u16, put_u32, put_u64};

pub const SEGMENT_MAGIC: [u8; 8] = *b"PSTSEGMT";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 64;
pub const SEGMENT_ENTRY_SLOT_BYTES: usize = 64;
pub const SEGMENT_ENTRY_BYTES: usize = 2 * SEGMENT_ENTRY_SLOT_BYTES;

const H_MAGIC_OFFSET: usize = 0;
const H_VERSION_OFFSET: usize = H_MAGIC_OFFSET + 8;
const H_INDEX_OFFSET: usize = H_VERSION_OFFSET + 4;
const H_GEN_OFFSET: usize = H_INDEX_OFFSET + 4;
const H_NONCE_OFFSET: usize = H_GEN_OFFSET + 8;
const H_SIZE_OFFSET: usize = H_NONCE_OFFSET + 8;
const H_RESERVED_OFFSET: usize = H_SIZE_OFFSET + 8;
const H_CRC_OFFSET: usize = 60;
const _: () = assert!(H_RESERVED_OFFSET <= H_CRC_OFFSET);
const _: () = assert!(H_CRC_OFFSET + 4 == SEGMENT_HEADER_BYTES);

const E_UPDATE_SEQ_OFFSET: usize = 0;
const E_STATE_OFFSET: usize = E_UPDATE_SEQ_OFFSET + 8;
const E_VERSION_OFFSET: usize = E_STATE_OFFSET + 1;
const E_LANE_OFFSET: usize = E_VERSION_OFFSET + 1;
const E_RESERVED_A_OFFSET: usize = E_LANE_OFFSET + 2;
const E_GEN_OFFSET: usize = E_RESERVED_A_OFFSET + 4;
const E_SEALED_LEN_OFFSET: usize = E_GEN_OFFSET + 8;
const E_RECORD_COUNT_OFFSET: usize = E_SEALED_LEN_OFFSET + 8;
const E_COLD_ID_OFFSET: usize = E_RECORD_COUNT_OFFSET + 8;
const E_RESERVED_B_OFFSET: usize = E_COLD_ID_OFFSET + 8;
const E_CRC_OFFSET: usize = 60;
const _: () = assert!(E_RESERVED_B_OFFSET <= E_CRC_OFFSET);
const _: () = assert!(E_CRC_OFFSET + 4 == SEGMENT_ENTRY_SLOT_BYTES);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment_index: u32,
    pub segment_gen: u64,
    pub pool_nonce: u64,
    pub segment_size_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentHeaderError {
    Truncated,
    BadMagic,
    UnsupportedVersion(u32),
    ChecksumMismatch,
    /// Checksummed, but bytes documented as zero are not: written by something else.
    ReservedNotZero,
}

impl SegmentHeaderError {
    /// The engine-wide kind of this damage.
    pub fn corrupt_kind(&self) -> crate::error::CorruptKind {
        use crate::error::CorruptKind;
        match self {
            SegmentHeaderError::ChecksumMismatch => CorruptKind::Checksum,
            SegmentHeaderError::Truncated => CorruptKind::BadField {
                field: "segment header length",
            },
            SegmentHeaderError::BadMagic => CorruptKind::BadField { field: "magic" },
            SegmentHeaderError::UnsupportedVersion(_) => CorruptKind::BadField { field: "version" },
            SegmentHeaderError::ReservedNotZero => CorruptKind::BadField { field: "reserved" },
        }
    }
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        bytes[..8].copy_from_slice(&SEGMENT_MAGIC);
        put_u32(&mut bytes, H_VERSION_OFFSET, SEGMENT_VERSION);
        put_u32(&mut bytes, H_INDEX_OFFSET, self.segment_index);
        put_u64(&mut bytes, H_GEN_OFFSET, self.segment_gen);
        put_u64(&mut bytes, H_NONCE_OFFSET, self.pool_nonce);
        put_u64(&mut bytes, H_SIZE_OFFSET, self.segment_size_bytes);
        let crc = crc32(&[&bytes[..H_CRC_OFFSET]]);
        put_u32(&mut bytes, H_CRC_OFFSET, crc);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, SegmentHeaderError> {
        let Some(bytes) = bytes.get(..SEGMENT_HEADER_BYTES) else {
            return Err(SegmentHeaderError::Truncated);
        };
        if bytes[..8] != SEGMENT_MAGIC {
            return Err(SegmentHeaderError::BadMagic);
        }
        let version = le_u32(bytes, H_VERSION_OFFSET);
        if version != SEGMENT_VERSION {
            return Err(SegmentHeaderError::UnsupportedVersion(version));
        }
        if le_u32(bytes, H_CRC_OFFSET) != crc32(&[&bytes[..H_CRC_OFFSET]]) {
            return Err(SegmentHeaderError::ChecksumMismatch);
        }
        if bytes[H_RESERVED_OFFSET..H_CRC_OFFSET]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(SegmentHeaderError::ReservedNotZero);
        }
        Ok(SegmentHeader {
            segment_index: le_u32(bytes, H_INDEX_OFFSET),
            segment_gen: le_u64(bytes, H_GEN_OFFSET),
            pool_nonce: le_u64(bytes, H_NONCE_OFFSET),
            segment_size_bytes: le_u64(bytes, H_SIZE_OFFSET),
        })
    }
}

/// Life cycle of a segment: Free -> Open -> Sealed -> (Migrating -> Cold) -> Scrubbing -> Free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentState {
    /// Zeroed and unused.
    Free,
    /// A lane appends into it; its end is found by scanning.
    Open,
    /// Full; `sealed_len_bytes` and `record_count` are final.
    Sealed,
    /// Being copied to the cold tier; the persistent-memory copy is still authoritative.
    Migrating,
    /// The cold copy `cold_id` is authoritative; this copy is about to be scrubbed.
    Cold,
    /// Every record in it is dead; being zeroed before it becomes Free.
    Scrubbing,
}

impl SegmentState {
    pub fn code(self) -> u8 {
        match self {
            SegmentState::Free => 0x00,
            SegmentState::Open => 0x03,
            SegmentState::Sealed => 0x05,
            SegmentState::Migrating => 0x06,
            SegmentState::Cold => 0x09,
            SegmentState::Scrubbing => 0x0a,
        }
    }

    /// Every state, in life-cycle order.
    pub const ALL: [SegmentState; 6] = [
        SegmentState::Free,
        SegmentState::Open,
        SegmentState::Sealed,
        SegmentState::Migrating,
        SegmentState::Cold,
        SegmentState::Scrubbing,
    ];

    fn from_code(code: u8) -> Option<SegmentState> {
        SegmentState::ALL
            .into_iter()
            .find(|state| state.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SegmentState::Free => "free",
            SegmentState::Open => "open",
            SegmentState::Sealed => "sealed",
            SegmentState::Migrating => "migrating",
            SegmentState::Cold => "cold",
            SegmentState::Scrubbing => "scrubbing",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentEntry {
    pub update_seq: u64,
    pub state: SegmentState,
    pub lane: u16,
    pub segment_gen: u64,
    pub sealed_len_bytes: u64,
    pub record_count: u64,
    pub cold_id: u64,
}

impl SegmentEntry {
    /// The entry of a never-used segment.
    pub const NEVER_USED: SegmentEntry = SegmentEntry {
        update_seq: 0,
        state: SegmentState::Free,
        lane: 0,
        segment_gen: 0,
        sealed_len_bytes: 0,
        record_count: 0,
        cold_id: 0,
    };

    pub fn encode(&self) -> [u8; SEGMENT_ENTRY_SLOT_BYTES] {
        let mut bytes = [0u8; SEGMENT_ENTRY_SLOT_BYTES];
        put_u64(&mut bytes, E_UPDATE_SEQ_OFFSET, self.update_seq);
        bytes[E_STATE_OFFSET] = self.state.code();
        bytes[E_VERSION_OFFSET] = SEGMENT_VERSION as u8;
        put_u16(&mut bytes, E_LANE_OFFSET, self.lane);
        put_u64(&mut bytes, E_GEN_OFFSET, self.segment_gen);
        put_u64(&mut bytes, E_SEALED_LEN_OFFSET, self.sealed_len_bytes);
        put_u64(&mut bytes, E_RECORD_COUNT_OFFSET, self.record_count);
        put_u64(&mut bytes, E_COLD_ID_OFFSET, self.cold_id);
        let crc = crc32(&[&bytes[..E_CRC_OFFSET]]);
        put_u32(&mut bytes, E_CRC_OFFSET, crc);
        bytes
    }

    /// Decodes one slot: `None` when it is all zero (never written), `Err` when damaged.
    pub fn decode_slot(bytes: &[u8]) -> Result<Option<SegmentEntry>, EntryError> {
        let Some(bytes) = bytes.get(..SEGMENT_ENTRY_SLOT_BYTES) else {
            return Err(EntryError::Truncated);
        };
        if bytes.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        if le_u32(bytes, E_CRC_OFFSET) != crc32(&[&bytes[..E_CRC_OFFSET]]) {
            return Err(EntryError::ChecksumMismatch);
        }
        if u32::from(bytes[E_VERSION_OFFSET]) != SEGMENT_VERSION {
            return Err(EntryError::UnsupportedVersion(bytes[E_VERSION_OFFSET]));
        }
        let Some(state) = SegmentState::from_code(bytes[E_STATE_OFFSET]) else {
            return Err(EntryError::UnknownState(bytes[E_STATE_OFFSET]));
        };
        if le_u32(bytes, E_RESERVED_A_OFFSET) != 0
            || bytes[E_RESERVED_B_OFFSET..E_CRC_OFFSET]
                .iter()
                .any(|&b| b != 0)
        {
            return Err(EntryError::ReservedNotZero);
        }
        Ok(Some(SegmentEntry {
            update_seq: le_u64(bytes, E_UPDATE_SEQ_OFFSET),
            state,
            lane: le_u16(bytes, E_LANE_OFFSET),
            segment_gen: le_u64(bytes, E_GEN_OFFSET),
            sealed_len_bytes: le_u64(bytes, E_SEALED_LEN_OFFSET),
            record_count: le_u64(bytes, E_RECORD_COUNT_OFFSET),
            cold_id: le_u64(bytes, E_COLD_ID_OFFSET),
        }))
    }

    /// Decodes both slots of an entry and picks the newest valid one. Returns the entry and
    /// which slot (0 = A, 1 = B) holds it; the other slot is where the next update goes.
    pub fn decode_pair(bytes: &[u8]) -> Result<(SegmentEntry, usize), EntryError> {
        let Some(bytes) = bytes.get(..SEGMENT_ENTRY_BYTES) else {
            return Err(EntryError::Truncated);
        };
        let halves = [
            &bytes[..SEGMENT_ENTRY_SLOT_BYTES],
            &bytes[SEGMENT_ENTRY_SLOT_BYTES..],
        ];
        let slots = [Self::decode_slot(halves[0]), Self::decode_slot(halves[1])];
        // Updates store the counter word last, and one slot is one cache line, whose stores
        // persist in program order: a slot showing its new counter is complete. So a slot
        // failing its check is an interrupted update only while it still shows its old
        // counter (the other slot's minus one, or zero if never written); otherwise it is
        // damage, and must not silently roll the state back.
        let torn_successor_of = |half: &[u8], other_seq: u64| {
            let seq = le_u64(half, E_UPDATE_SEQ_OFFSET);
            seq == 0 || seq.checked_add(1) == Some(other_seq)
        };
        match (&slots[0], &slots[1]) {
            (Ok(Some(a)), Ok(Some(b))) => match a.update_seq.cmp(&b.update_seq) {
                std::cmp::Ordering::Equal => Err(EntryError::SameUpdateSeq(a.update_seq)),
                std::cmp::Ordering::Greater => Ok((*a, 0)),
                std::cmp::Ordering::Less => Ok((*b, 1)),
            },
            (Ok(None), Ok(None)) => Ok((SegmentEntry::NEVER_USED, 1)),
            (Ok(Some(a)), Ok(None)) => Ok((*a, 0)),
            (Ok(None), Ok(Some(b))) => Ok((*b, 1)),
            (Ok(Some(a)), Err(error)) => {
                if torn_successor_of(halves[1], a.update_seq) {
                    Ok((*a, 0))
                } else {
                    Err(*error)
                }
            }
            (Err(error), Ok(Some(b))) => {
                if torn_successor_of(halves[0], b.update_seq) {
                    Ok((*b, 1))
                } else {
                    Err(*error)
                }
            }
            (Ok(None), Err(error)) => {
                if torn_successor_of(halves[1], 0) {
                    Ok((SegmentEntry::NEVER_USED, 0))
                } else {
                    Err(*error)
                }
            }
            (Err(error), Ok(None)) => {
                if torn_successor_of(halves[0], 0) {
                    Ok((SegmentEntry::NEVER_USED, 1))
                } else {
                    Err(*error)
                }
            }
            (Err(error), Err(_)) => Err(*error),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryError {
    Truncated,
    ChecksumMismatch,
    UnsupportedVersion(u8),
    UnknownState(u8),
    SameUpdateSeq(u64),
    /// Checksummed, but bytes documented as zero are not.
    ReservedNotZero,
}

impl EntryError {
    /// The engine-wide kind of this damage.
    pub fn corrupt_kind(&self) -> crate::error::CorruptKind {
        use crate::error::CorruptKind;
        match self {
            EntryError::ChecksumMismatch => CorruptKind::Checksum,
            EntryError::Truncated => CorruptKind::BadField {
                field: "segment entry length",
            },
            EntryError::UnsupportedVersion(_) => CorruptKind::BadField { field: "version" },
            EntryError::UnknownState(_) => CorruptKind::BadField { field: "state" },
            EntryError::SameUpdateSeq(_) => CorruptKind::BadField {
                field: "update_seq",
            },
            EntryError::ReservedNotZero => CorruptKind::BadField { field: "reserved" },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_flips() {
        let header = SegmentHeader {
            segment_index: 4,
            segment_gen: 77,
            pool_nonce: 5,
            segment_size_bytes: 1 << 20,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        for bit in 0..SEGMENT_HEADER_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&flipped).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn checksummed_header_with_reserved_bytes_set_is_rejected() {
        let header = SegmentHeader {
            segment_index: 1,
            segment_gen: 2,
            pool_nonce: 3,
            segment_size_bytes: 1 << 20,
        };
        for at in H_RESERVED_OFFSET..H_CRC_OFFSET {
            let mut bytes = header.encode();
            bytes[at] = 0xff;
            let crc = crc32(&[&bytes[..H_CRC_OFFSET]]);
            put_u32(&mut bytes, H_CRC_OFFSET, crc);
            assert_eq!(
                SegmentHeader::decode(&bytes),
                Err(SegmentHeaderError::ReservedNotZero),
                "byte {at}"
            );
        }
    }

    #[test]
    fn checksummed_entry_with_reserved_bytes_set_is_rejected() {
        let reserved = (E_RESERVED_A_OFFSET..E_GEN_OFFSET).chain(E_RESERVED_B_OFFSET..E_CRC_OFFSET);
        for at in reserved {
            let mut bytes = entry(3, SegmentState::Sealed).encode();
            bytes[at] = 1;
            let crc = crc32(&[&bytes[..E_CRC_OFFSET]]);
            put_u32(&mut bytes, E_CRC_OFFSET, crc);
            assert_eq!(
                SegmentEntry::decode_slot(&bytes),
                Err(EntryError::ReservedNotZero),
                "byte {at}"
            );
        }
    }

    fn entry(update_seq: u64, state: SegmentState) -> SegmentEntry {
        SegmentEntry {
            update_seq,
            state,
            lane: 1,
            segment_gen: 9,
            sealed_len_bytes: 640,
            record_count: 3,
            cold_id: 0,
        }
    }

    #[test]
    fn pair_picks_newest_valid_slot() {
        let mut pair = [0u8; SEGMENT_ENTRY_BYTES];
        assert_eq!(
            SegmentEntry::decode_pair(&pair),
            Ok((SegmentEntry::NEVER_USED, 1))
        );
        pair[64..].copy_from_slice(&entry(1, SegmentState::Open).encode());
        assert_eq!(
            SegmentEntry::decode_pair(&pair),
            Ok((entry(1, SegmentState::Open), 1))
        );
        pair[..64].copy_from_slice(&entry(2, SegmentState::Sealed).encode());
        assert_eq!(
            SegmentEntry::decode_pair(&pair),
            Ok((entry(2, SegmentState::Sealed), 0))
        );
        // An interrupted update of slot B (new words stored, its counter still the old 1)
        // falls back to A.
        pair[64..].copy_from_slice(&entry(1, SegmentState::Open).encode());
        pair[72..100].copy_from_slice(&entry(3, SegmentState::Sealed).encode()[8..36]);
        assert_eq!(
            SegmentEntry::decode_pair(&pair),
            Ok((entry(2, SegmentState::Sealed), 0))
        );
        // Damage to the newest slot is an error, never a silent roll-back.
        let mut damaged = [0u8; SEGMENT_ENTRY_BYTES];
        damaged[..64].copy_from_slice(&entry(1, SegmentState::Free).encode());
        damaged[64..].copy_from_slice(&entry(2, SegmentState::Open).encode());
        damaged[64 + 20] ^= 0x01;
        assert_eq!(
            SegmentEntry::decode_pair(&damaged),
            Err(EntryError::ChecksumMismatch)
        );
    }

    #[test]
    fn maximal_update_counter_does_not_overflow() {
        // Found by the segment_entry fuzz target: a damaged slot whose counter is u64::MAX.
        let mut pair = [0u8; SEGMENT_ENTRY_BYTES];
        pair[..64].copy_from_slice(&entry(1, SegmentState::Open).encode());
        pair[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
        pair[72] = 0x55;
        assert_eq!(
            SegmentEntry::decode_pair(&pair),
            Err(EntryError::ChecksumMismatch)
        );
    }

    #[test]
    fn every_flipped_bit_in_a_slot_is_rejected() {
        let bytes = entry(5, SegmentState::Cold).encode();
        for bit in 0..SEGMENT_ENTRY_SLOT_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentEntry::decode_slot(&flipped).is_err(), "bit {bit}");
        }
    }
}
