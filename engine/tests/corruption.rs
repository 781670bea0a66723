//! Corrupt media: flipped bits in every on-media structure give typed errors naming the
//! location (never a panic, never silently dropped acknowledged data), and recovery never
//! panics on arbitrary bytes.

use pstream_crashtest::kit as common;

use pmem_emul::{Pmem, SimPmem, SplitMix64};
use pstream_engine::{EngineError, Location, Log};

fn populated() -> (Vec<u8>, pstream_engine::StreamId) {
    let log = Log::create(
        SimPmem::new(256 * 1024),
        common::small_config(),
        common::options(1),
    )
    .unwrap();
    let s = log.create_stream(b"c").unwrap();
    for i in 0..60u32 {
        log.append(s, &vec![i as u8; 500]).unwrap();
    }
    (log.pmem().volatile_image(), s)
}

#[test]
fn flipped_bit_in_a_sealed_segment_is_corruption_with_location() {
    let (image, _) = populated();
    // Segment 0 is sealed (60 x 532 bytes > 16 KiB). Flip a bit in each record region.
    let layout = pstream_engine::format::superblock::Superblock::decode(&image[..128]).unwrap();
    let base = layout.segments_offset as usize;
    for offset in [64usize, 64 + 40, 64 + 532 * 3 + 7, 64 + 532 * 10 + 300] {
        let mut bad = image.clone();
        bad[base + offset] ^= 0x10;
        let sim = SimPmem::from_image(bad.clone());
        // Header damage fails recovery; payload damage is found by verify and by reads.
        match Log::open(sim, common::options(1)) {
            Err(EngineError::Corruption {
                location: Location::Record { segment: 0, .. },
                ..
            }) => {}
            Ok((log, _)) => {
                let report = pstream_engine::verify(log.pmem()).unwrap();
                assert!(!report.is_clean(), "verify missed a flip at {offset}");
                let s = log.list_streams()[0].id;
                let failed = (0..60)
                    .filter(|&seq| matches!(log.read(s, seq), Err(EngineError::Corruption { .. })))
                    .count();
                assert_eq!(
                    failed, 1,
                    "exactly the damaged record fails to read (flip at {offset})"
                );
            }
            Err(other) => panic!("flip at {offset}: unexpected {other}"),
        }
    }
}

#[test]
fn flipped_bits_in_metadata_are_typed_errors() {
    let (image, _) = populated();
    let sb = pstream_engine::format::superblock::Superblock::decode(&image[..128]).unwrap();
    let regions = [
        ("superblock", 0usize, 128usize),
        ("stream slot", sb.stream_table_offset as usize, 64),
        ("segment entry", sb.segment_table_offset as usize, 128),
        ("segment header", sb.segments_offset as usize, 64),
    ];
    for (name, start, len) in regions {
        for bit in (0..len * 8).step_by(3) {
            let mut bad = image.clone();
            bad[start + bit / 8] ^= 1 << (bit % 8);
            match Log::open(SimPmem::from_image(bad), common::options(1)) {
                Err(EngineError::Corruption { .. } | EngineError::Unformatted) => {}
                Ok((log, _)) => {
                    // A flip in the older copy of an A/B entry is harmless; data must be whole.
                    let s = log.list_streams()[0].id;
                    assert_eq!(
                        log.bounds(s).unwrap(),
                        (0, 60),
                        "{name} bit {bit} lost data"
                    );
                }
                Err(other) => panic!("{name} bit {bit}: unexpected error {other}"),
            }
        }
    }
}

#[test]
fn recovery_never_panics_on_random_bytes() {
    let (image, _) = populated();
    let mut rng = SplitMix64::new(3);
    for round in 0..300 {
        let mut bad = image.clone();
        for _ in 0..1 + rng.below(40) {
            let at = rng.below(bad.len() as u64) as usize;
            bad[at] = rng.next_u64() as u8;
        }
        if round % 10 == 0 {
            // Whole random pages, including the superblock's.
            let page = rng.below((bad.len() / 4096) as u64) as usize * 4096;
            for b in &mut bad[page..page + 4096] {
                *b = rng.next_u64() as u8;
            }
        }
        let sim = SimPmem::from_image(bad);
        if let Ok((log, _)) = Log::open(sim, common::options(1)) {
            for info in log.list_streams() {
                for record in log.iter(info.id, 0).unwrap() {
                    let _ = record.map(|r| r.payload().len());
                }
            }
            let _ = pstream_engine::verify(log.pmem());
        }
    }
    let pure_noise: Vec<u8> = (0..256 * 1024).map(|_| rng.next_u64() as u8).collect();
    assert!(Log::open(SimPmem::from_image(pure_noise.clone()), common::options(1)).is_err());
    assert!(pstream_engine::verify(&SimPmem::from_image(pure_noise)).is_err());
    let _ = SimPmem::new(64).len_bytes();
}
