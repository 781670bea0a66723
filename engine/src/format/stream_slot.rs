//! Stream slot: one cache line per stream in the stream table.
//!
//! ```text
//! 0   u64 state_word   incarnation u32 | state u8 << 32 | version u8 << 40 | zero u16
//!                      state: 0x00 free, 0x03 live, 0x05 deleted
//! 8   u64 trim_word    first_seq (low 48 bits) | check u16 (high 16 bits)
//! 16  u64 reserved     zero
//! 24  u8  label_len    at most MAX_LABEL_BYTES
//! 25  [u8; 31] label
//! 56  u32 reserved     zero
//! 60  u32 body_crc     crc32(incarnation, bytes 16..60)
//! ```
//! Create writes the body, persists it, then flips `state_word` to live with one atomic
//! store and persists that: a crash in between leaves the slot free. Delete is one atomic
//! store of `state_word`; trim one atomic store of `trim_word`, which carries its own check
//! bits because it changes after the body crc was written.

use super::{crc32, le_u32, le_u64, put_u32, put_u64};

pub const STREAM_SLOT_BYTES: usize = 64;
pub const MAX_LABEL_BYTES: usize = 31;
pub const STREAM_SLOT_VERSION: u8 = 1;
/// Sequence numbers stay below 2^48 so the trim word has room for its check bits.
pub const SEQ_LIMIT: u64 = 1 << 48;

pub const STATE_WORD_OFFSET: usize = 0;
pub const TRIM_WORD_OFFSET: usize = STATE_WORD_OFFSET + 8;
const RESERVED_A_OFFSET: usize = TRIM_WORD_OFFSET + 8;
const LABEL_LEN_OFFSET: usize = RESERVED_A_OFFSET + 8;
const LABEL_OFFSET: usize = LABEL_LEN_OFFSET + 1;
const RESERVED_B_OFFSET: usize = LABEL_OFFSET + MAX_LABEL_BYTES;
const BODY_CRC_OFFSET: usize = RESERVED_B_OFFSET + 4;

const _: () = assert!(BODY_CRC_OFFSET + 4 == STREAM_SLOT_BYTES);
const _: () = assert!(STREAM_SLOT_BYTES == pmem_emul::CACHE_LINE_BYTES);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Free,
    Live,
    Deleted,
}

impl SlotState {
    /// State codes are two bit flips apart, so one flipped bit never turns a live stream
    /// into a free or deleted one unnoticed.
    fn code(self) -> u8 {
        match self {
            SlotState::Free => 0x00,
            SlotState::Live => 0x03,
            SlotState::Deleted => 0x05,
        }
    }
}

pub fn state_word(incarnation: u32, state: SlotState) -> u64 {
    u64::from(incarnation)
        | (u64::from(state.code()) << 32)
        | (u64::from(STREAM_SLOT_VERSION) << 40)
}

pub fn trim_word(stream_id: u64, first_seq: u64) -> u64 {
    debug_assert!(first_seq < SEQ_LIMIT);
    let check = crc32(&[&stream_id.to_le_bytes(), &first_seq.to_le_bytes()]) & 0xffff;
    first_seq | (u64::from(check) << 48)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSlot {
    pub incarnation: u32,
    pub state: SlotState,
    pub first_seq: u64,
    pub label: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    UnknownState(u8),
    UnsupportedVersion(u8),
    BodyChecksum,
    TrimCheck,
    LabelTooLong(u8),
    /// Checksummed, but bytes documented as zero (reserved, label tail) are not.
    ReservedNotZero,
}

impl SlotError {
    /// The engine-wide kind of this damage.
    pub fn corrupt_kind(&self) -> crate::error::CorruptKind {
        use crate::error::CorruptKind;
        match self {
            SlotError::BodyChecksum | SlotError::TrimCheck => CorruptKind::Checksum,
            SlotError::UnknownState(_) => CorruptKind::BadField { field: "state" },
            SlotError::UnsupportedVersion(_) => CorruptKind::BadField { field: "version" },
            SlotError::LabelTooLong(_) => CorruptKind::BadField {
                field: "label length",
            },
            SlotError::ReservedNotZero => CorruptKind::BadField { field: "reserved" },
        }
    }
}

/// Everything but the state word and trim word, for a slot about to become live.
pub fn encode_body(incarnation: u32, label: &[u8]) -> [u8; STREAM_SLOT_BYTES] {
    assert!(label.len() <= MAX_LABEL_BYTES);
    let mut bytes = [0u8; STREAM_SLOT_BYTES];
    bytes[LABEL_LEN_OFFSET] = label.len() as u8;
    bytes[LABEL_OFFSET..LABEL_OFFSET + label.len()].copy_from_slice(label);
    let crc = body_crc(incarnation, &bytes);
    put_u32(&mut bytes, BODY_CRC_OFFSET, crc);
    bytes
}

fn body_crc(incarnation: u32, bytes: &[u8]) -> u32 {
    crc32(&[
        &incarnation.to_le_bytes(),
        &bytes[RESERVED_A_OFFSET..BODY_CRC_OFFSET],
    ])
}

/// The stream id a slot's live incarnation answers to.
pub fn stream_id(slot_index: u32, incarnation: u32) -> u64 {
    u64::from(slot_index) | (u64::from(incarnation) << 32)
}

/// Decodes an untrusted slot. A free slot decodes whatever its body holds.
pub fn decode(slot_index: u32, bytes: &[u8; STREAM_SLOT_BYTES]) -> Result<StreamSlot, SlotError> {
    let state_word = le_u64(bytes, STATE_WORD_OFFSET);
    let incarnation = state_word as u32;
    let version = (state_word >> 40) as u8;
    let state = match (state_word >> 32) as u8 {
        0x00 => SlotState::Free,
        0x03 => SlotState::Live,
        0x05 => SlotState::Deleted,
        other => return Err(SlotError::UnknownState(other)),
    };
    if state_word == 0 {
        return Ok(StreamSlot {
            incarnation: 0,
            state: SlotState::Free,
            first_seq: 0,
            label: Vec::new(),
        });
    }
    if version != STREAM_SLOT_VERSION || state_word >> 48 != 0 {
        return Err(SlotError::UnsupportedVersion(version));
    }
    if state != SlotState::Live {
        return Ok(StreamSlot {
            incarnation,
            state,
            first_seq: 0,
            label: Vec::new(),
        });
    }
    if le_u32(bytes, BODY_CRC_OFFSET) != body_crc(incarnation, bytes) {
        return Err(SlotError::BodyChecksum);
    }
    let label_len = bytes[LABEL_LEN_OFFSET];
    if label_len as usize > MAX_LABEL_BYTES {
        return Err(SlotError::LabelTooLong(label_len));
    }
    let label_end = LABEL_OFFSET + label_len as usize;
    if le_u64(bytes, RESERVED_A_OFFSET) != 0
        || bytes[label_end..BODY_CRC_OFFSET].iter().any(|&b| b != 0)
    {
        return Err(SlotError::ReservedNotZero);
    }
    let trim = le_u64(bytes, TRIM_WORD_OFFSET);
    let first_seq = trim & (SEQ_LIMIT - 1);
    if trim != 0 && trim != trim_word(stream_id(slot_index, incarnation), first_seq) {
        return Err(SlotError::TrimCheck);
    }
    let label = bytes[LABEL_OFFSET..LABEL_OFFSET + label_len as usize].to_vec();
    Ok(StreamSlot {
        incarnation,
        state,
        first_seq,
        label,
    })
}

/// Builds a full slot image (tests and fuzz seeds).
pub fn encode_full(slot_index: u32, slot: &StreamSlot) -> [u8; STREAM_SLOT_BYTES] {
    let mut bytes = encode_body(slot.incarnation, &slot.label);
    put_u64(
        &mut bytes,
        STATE_WORD_OFFSET,
        state_word(slot.incarnation, slot.state),
    );
    let trim = if slot.first_seq == 0 {
        0
    } else {
        trim_word(stream_id(slot_index, slot.incarnation), slot.first_seq)
    };
    put_u64(&mut bytes, TRIM_WORD_OFFSET, trim);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_flips() {
        let slot = StreamSlot {
            incarnation: 3,
            state: SlotState::Live,
            first_seq: 17,
            label: b"chat".to_vec(),
        };
        let bytes = encode_full(5, &slot);
        assert_eq!(decode(5, &bytes), Ok(slot.clone()));
        for bit in 0..(STREAM_SLOT_BYTES * 8) {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            let got = decode(5, &flipped);
            assert!(got.is_err(), "bit {bit} gave {got:?}");
        }
    }

    #[test]
    fn checksummed_slot_with_bytes_past_the_label_set_is_rejected() {
        let slot = StreamSlot {
            incarnation: 2,
            state: SlotState::Live,
            first_seq: 0,
            label: b"ab".to_vec(),
        };
        for at in (RESERVED_A_OFFSET..LABEL_LEN_OFFSET).chain(LABEL_OFFSET + 2..BODY_CRC_OFFSET) {
            let mut bytes = encode_full(1, &slot);
            bytes[at] = 0x20;
            let crc = body_crc(slot.incarnation, &bytes);
            put_u32(&mut bytes, BODY_CRC_OFFSET, crc);
            assert_eq!(
                decode(1, &bytes),
                Err(SlotError::ReservedNotZero),
                "byte {at}"
            );
        }
    }

    #[test]
    fn zero_is_free() {
        assert_eq!(decode(0, &[0; 64]).map(|s| s.state), Ok(SlotState::Free));
    }
}
