//! The segment table entry decoders (one slot, and the A/B pair with its torn-update rules).
//! Input: a 128-byte pair, used raw; and, from the same bytes, a pair built from two valid
//! slots of which one is torn after a fuzz-chosen number of 8-byte words (as a crash leaves
//! it), which must decode to one of the two versions or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_engine::format::segment::{
    SegmentEntry, SegmentState, SEGMENT_ENTRY_BYTES, SEGMENT_ENTRY_SLOT_BYTES,
};

fn word(data: &[u8], index: usize) -> u64 {
    let mut bytes = [0u8; 8];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = data.get(index * 8 + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(bytes)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(entry)) = SegmentEntry::decode_slot(data) {
        assert_eq!(&entry.encode()[..], &data[..SEGMENT_ENTRY_SLOT_BYTES]);
    }
    let _ = SegmentEntry::decode_pair(data);

    // A valid pair, the newer slot torn: an interrupted update.
    let states = [
        SegmentState::Free,
        SegmentState::Open,
        SegmentState::Sealed,
        SegmentState::Scrubbing,
    ];
    let old = SegmentEntry {
        update_seq: 1 + word(data, 0) % 1000,
        state: states[(word(data, 1) % 4) as usize],
        lane: word(data, 2) as u16,
        segment_gen: word(data, 3),
        sealed_len_bytes: word(data, 4),
        record_count: word(data, 5),
        cold_id: 0,
    };
    let new = SegmentEntry {
        update_seq: old.update_seq + 1,
        state: states[(word(data, 6) % 4) as usize],
        sealed_len_bytes: word(data, 7),
        ..old
    };
    let words_kept = (word(data, 8) % 9) as usize;
    let new_slot = (word(data, 9) % 2) as usize;
    let new_bytes = new.encode();
    let old_bytes = old.encode();
    let mut pair = [0u8; SEGMENT_ENTRY_BYTES];
    let (new_at, old_at) = (new_slot * 64, (1 - new_slot) * 64);
    pair[old_at..old_at + 64].copy_from_slice(&old_bytes);
    // The slot being rewritten held the version before `old` (or nothing yet).
    if old.update_seq > 1 {
        let previous = SegmentEntry {
            update_seq: old.update_seq - 1,
            ..old
        };
        pair[new_at..new_at + 64].copy_from_slice(&previous.encode());
    }
    // The update writes words 1..8 first and the counter word 0 last; a crash keeps a prefix
    // of those stores (one cache line persists in program order).
    let order: Vec<usize> = (1..8).chain(std::iter::once(0)).collect();
    for &w in order.iter().take(words_kept) {
        pair[new_at + w * 8..new_at + w * 8 + 8].copy_from_slice(&new_bytes[w * 8..w * 8 + 8]);
    }
    match SegmentEntry::decode_pair(&pair) {
        Ok((entry, _slot)) => assert!(
            entry == old || entry == new,
            "torn update decoded to a third state: {entry:?}"
        ),
        Err(error) => panic!("an interrupted update ({words_kept} words) fails: {error:?}"),
    }
});
