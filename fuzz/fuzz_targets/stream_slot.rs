//! The stream slot decoder. Input: slot index (4 bytes) then the 64-byte slot. A live slot
//! re-encodes (`encode_full`) to a slot that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_engine::format::stream_slot::{self, SlotState, STREAM_SLOT_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut index = [0u8; 4];
    for (i, byte) in index.iter_mut().enumerate() {
        *byte = data.get(i).copied().unwrap_or(0);
    }
    let slot_index = u32::from_le_bytes(index);
    let mut bytes = [0u8; STREAM_SLOT_BYTES];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = data.get(4 + i).copied().unwrap_or(0);
    }
    if let Ok(slot) = stream_slot::decode(slot_index, &bytes) {
        if slot.state == SlotState::Live {
            let again = stream_slot::encode_full(slot_index, &slot);
            assert_eq!(stream_slot::decode(slot_index, &again), Ok(slot));
        }
    }
});
