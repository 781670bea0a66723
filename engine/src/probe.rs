//! `probe`: what a pool holds, decided from the two superblock copies without writing.
//!
//! The decision table (each row tested in `tests` below and in `engine/tests/probe.rs`):
//!
//! | copy A                     | copy B                 | rest of the data region | verdict                        |
//! |----------------------------|------------------------|-------------------------|--------------------------------|
//! | checks (v2, fits the pool) | checks, same bytes     | any                     | `Formatted`                    |
//! | checks                     | checks, other bytes    | any                     | `Damaged` (copies disagree)    |
//! | checks                     | fails                  | any                     | `Formatted`, open repairs B    |
//! | fails                      | checks                 | any                     | `Formatted`, open repairs A    |
//! | a checksummed v1 (or other version) superblock, no v2 copy checks |   | any     | `UnsupportedVersion` error     |
//! | all zero                   | all zero               | all zero                | `Blank`                        |
//! | marker `FORMATNG`, rest of page zero | any (a format writes B before A) | all zero | `Blank` (interrupted format) |
//! | anything else              |                        |                         | `Damaged`: never formatted over |
//!
//! A format starts only on a `Blank` pool and writes nothing but its marker, zeros and the
//! two copies (B, then A), so an interrupted format leaves exactly the `FORMATNG` row.

use pmem_emul::Pmem;

use crate::error::{CorruptKind, EngineError, Location, Result};
use crate::format::superblock::{
    copy_offset, Superblock, SuperblockError, FORMAT_MARKER_RUNNING, SUPERBLOCK_COPY_BYTES,
    SUPERBLOCK_COPY_COUNT, SUPERBLOCK_REGION_BYTES, SUPERBLOCK_USED_BYTES, SUPERBLOCK_VERSION,
};
use crate::layout::Layout;

/// What a pool holds (see the decision table of this module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Never formatted (all zero), or a format was interrupted: `Log::create` formats it.
    Blank {
        /// The `FORMATNG` marker of an interrupted format was found.
        interrupted_format: bool,
    },
    /// A log: at least one superblock copy checks.
    Formatted {
        /// Copies (0 = A, 1 = B) that fail and that `Log::open` rewrites from the good one.
        damaged_copies: Vec<u8>,
    },
    /// Bytes are present but no copy of the superblock checks (or the copies disagree):
    /// nothing formats over it; `open` reports it as corruption of the superblock.
    Damaged {
        /// Why copy A was not taken.
        copy_a: CopyFault,
        /// Why copy B was not taken.
        copy_b: CopyFault,
    },
}

/// Why one superblock copy was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFault {
    /// It does not decode.
    Decode(SuperblockError),
    /// It decodes, but its areas do not fit the pool.
    Geometry,
    /// It checks, but the other copy checks too and holds other values.
    Disagrees,
}

impl CopyFault {
    fn corrupt_kind(&self) -> CorruptKind {
        match self {
            CopyFault::Decode(error) => error.corrupt_kind(),
            CopyFault::Geometry => CorruptKind::BadField {
                field: "superblock geometry",
            },
            CopyFault::Disagrees => CorruptKind::Mismatch {
                field: "superblock copies",
            },
        }
    }
}

/// What probing found, with the layout when the pool is formatted.
pub(crate) struct Probed {
    pub probe: Probe,
    pub layout: Option<Layout>,
    /// The damaged copies of a formatted pool and what is wrong with each.
    pub copy_faults: Vec<(u8, CopyFault)>,
}

impl Probed {
    /// The layout of a formatted pool, or the typed error `open` and `verify` give.
    pub fn into_layout(self) -> Result<Layout> {
        match (self.probe, self.layout) {
            (Probe::Formatted { .. }, Some(layout)) => Ok(layout),
            (Probe::Blank { .. }, _) => Err(EngineError::Unformatted),
            (Probe::Damaged { copy_a, copy_b }, _) => Err(damage_error(copy_a, copy_b)),
            (Probe::Formatted { .. }, None) => Err(EngineError::corruption(
                Location::Superblock,
                CorruptKind::BadField {
                    field: "superblock geometry",
                },
                "formatted without a layout",
            )),
        }
    }
}

/// What `pmem` holds: `Blank`, `Formatted` or `Damaged` (see the module's decision table).
/// Reads only. A pool of another format version is the typed error `UnsupportedVersion`.
pub fn probe<P: Pmem>(pmem: &P) -> Result<Probe> {
    probe_layout(pmem).map(|probed| probed.probe)
}

pub(crate) fn probe_layout<P: Pmem>(pmem: &P) -> Result<Probed> {
    let pool_bytes = pmem.len_bytes() as u64;
    if (pool_bytes as usize) < SUPERBLOCK_REGION_BYTES {
        return Err(EngineError::PoolTooSmall {
            pool_bytes,
            needed_bytes: SUPERBLOCK_REGION_BYTES as u64,
        });
    }
    let verdicts: [Result<Layout, CopyFault>; SUPERBLOCK_COPY_COUNT] = [0, 1].map(|copy| {
        Superblock::decode(pmem.read(copy_offset(copy), SUPERBLOCK_USED_BYTES))
            .map_err(CopyFault::Decode)
            .and_then(|superblock| {
                Layout::from_superblock(&superblock, pool_bytes).map_err(|_| CopyFault::Geometry)
            })
    });
    let [copy_a, copy_b] = verdicts;
    let formatted = |layout: Layout, copy_faults: Vec<(u8, CopyFault)>| Probed {
        probe: Probe::Formatted {
            damaged_copies: copy_faults.iter().map(|(copy, _)| *copy).collect(),
        },
        layout: Some(layout),
        copy_faults,
    };
    match (copy_a, copy_b) {
        (Ok(a), Ok(b)) if a == b => Ok(formatted(a, Vec::new())),
        (Ok(_), Ok(_)) => Ok(damaged(CopyFault::Disagrees, CopyFault::Disagrees)),
        (Ok(a), Err(fault_b)) => Ok(formatted(a, vec![(1, fault_b)])),
        (Err(fault_a), Ok(b)) => Ok(formatted(b, vec![(0, fault_a)])),
        (Err(fault_a), Err(fault_b)) => {
            for fault in [fault_a, fault_b] {
                if let CopyFault::Decode(SuperblockError::UnsupportedVersion(found)) = fault {
                    return Err(EngineError::UnsupportedVersion {
                        found,
                        supported: SUPERBLOCK_VERSION,
                    });
                }
            }
            let rest_zero = crate::format::is_zero(pmem.read(
                SUPERBLOCK_REGION_BYTES,
                pool_bytes as usize - SUPERBLOCK_REGION_BYTES,
            ));
            let page_a = pmem.read(copy_offset(0), SUPERBLOCK_COPY_BYTES);
            let page_b = pmem.read(copy_offset(1), SUPERBLOCK_COPY_BYTES);
            let interrupted =
                page_a[..8] == FORMAT_MARKER_RUNNING && crate::format::is_zero(&page_a[8..]);
            if rest_zero && interrupted {
                return Ok(Probed {
                    probe: Probe::Blank {
                        interrupted_format: true,
                    },
                    layout: None,
                    copy_faults: Vec::new(),
                });
            }
            if rest_zero && crate::format::is_zero(page_a) && crate::format::is_zero(page_b) {
                return Ok(Probed {
                    probe: Probe::Blank {
                        interrupted_format: false,
                    },
                    layout: None,
                    copy_faults: Vec::new(),
                });
            }
            Ok(damaged(fault_a, fault_b))
        }
    }
}

/// The typed error for a `Damaged` pool: corruption of the superblock, with both faults.
pub(crate) fn damage_error(copy_a: CopyFault, copy_b: CopyFault) -> EngineError {
    EngineError::corruption(
        Location::Superblock,
        copy_a.corrupt_kind(),
        format!("no superblock copy checks: copy A {copy_a:?}, copy B {copy_b:?}"),
    )
}

fn damaged(copy_a: CopyFault, copy_b: CopyFault) -> Probed {
    Probed {
        probe: Probe::Damaged { copy_a, copy_b },
        layout: None,
        copy_faults: Vec::new(),
    }
}

/// Rewrites the damaged copies of a formatted pool from `layout` (the good copy's values):
/// the whole page, zero but for the superblock, persisted. Idempotent; the good copy is never
/// written, so a crash during the repair leaves a pool that probes `Formatted` again.
pub(crate) fn repair_copies<P: Pmem>(pmem: &P, layout: &Layout, damaged_copies: &[u8]) {
    let encoded = layout.superblock().encode();
    for &copy in damaged_copies {
        let offset = copy_offset(usize::from(copy));
        pmem.zero_nt(offset, SUPERBLOCK_COPY_BYTES);
        pmem.fence();
        pmem.write(offset, &encoded);
        pmem.persist(offset, encoded.len());
    }
}

/// The problems `verify` reports for the superblock copies of a formatted pool.
pub(crate) fn copy_problems(copy_faults: &[(u8, CopyFault)]) -> Vec<EngineError> {
    copy_faults
        .iter()
        .map(|&(copy, fault)| {
            EngineError::corruption(
                Location::SuperblockCopy { copy },
                fault.corrupt_kind(),
                format!("{fault:?} (the other copy checks; open repairs this one from it)"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use pmem_emul::{Pmem, SimPmem};

    use super::*;
    use crate::format::superblock::{FORMAT_MARKER_DONE, SUPERBLOCK_V1_MAGIC};
    use crate::{Log, LogConfig, OpenOptions};

    const POOL_BYTES: usize = 256 * 1024;

    fn config() -> LogConfig {
        LogConfig {
            segment_size_bytes: 16 * 1024,
            stream_slot_count: 16,
        }
    }

    fn options() -> OpenOptions {
        OpenOptions { lane_count: 1 }
    }

    /// A formatted pool holding one stream with a few records.
    fn formatted_image() -> Vec<u8> {
        let log = Log::create(SimPmem::new(POOL_BYTES), config(), options()).unwrap();
        let stream = log.create_stream(b"kept").unwrap();
        for i in 0..5u8 {
            log.append(stream, &[i; 100]).unwrap();
        }
        log.close().persisted_image()
    }

    fn probe_image(image: &[u8]) -> Result<Probe> {
        probe(&SimPmem::from_image(image.to_vec()))
    }

    #[test]
    fn all_zero_is_blank() {
        assert_eq!(
            probe_image(&vec![0; POOL_BYTES]).unwrap(),
            Probe::Blank {
                interrupted_format: false
            }
        );
    }

    #[test]
    fn both_copies_good_is_formatted() {
        assert_eq!(
            probe_image(&formatted_image()).unwrap(),
            Probe::Formatted {
                damaged_copies: vec![]
            }
        );
    }

    #[test]
    fn one_damaged_copy_is_formatted_and_open_repairs_it_from_the_other() {
        let good = formatted_image();
        for copy in [0u8, 1] {
            for at in [0usize, 9, 16, 60, 127] {
                let mut image = good.clone();
                image[copy_offset(usize::from(copy)) + at] ^= 0x04;
                assert_eq!(
                    probe_image(&image).unwrap(),
                    Probe::Formatted {
                        damaged_copies: vec![copy]
                    },
                    "copy {copy} byte {at}"
                );
                // verify reports it and writes nothing.
                let sim = SimPmem::from_image(image.clone());
                let report = crate::verify(&sim).unwrap();
                assert!(
                    report.problems.iter().any(|p| matches!(
                        p,
                        EngineError::Corruption {
                            location: Location::SuperblockCopy { copy: c },
                            ..
                        } if *c == copy
                    )),
                    "verify missed copy {copy} byte {at}"
                );
                assert_eq!(sim.persisted_image(), image, "verify wrote");
                // open repairs it and keeps the data.
                let (log, report) = Log::open(sim, options()).unwrap();
                assert_eq!(report.superblock_copies_repaired, 1);
                let stream = log.list_streams()[0].id;
                assert_eq!(log.bounds(stream).unwrap(), (0, 5));
                let repaired = log.close().persisted_image();
                assert_eq!(
                    repaired[..SUPERBLOCK_REGION_BYTES],
                    good[..SUPERBLOCK_REGION_BYTES]
                );
            }
        }
    }

    #[test]
    fn a_garbage_or_zeroed_block_over_one_copy_is_repaired() {
        let good = formatted_image();
        for copy in [0usize, 1] {
            for fill in [0u8, 0xA5] {
                let mut image = good.clone();
                image[copy_offset(copy)..copy_offset(copy) + 256].fill(fill);
                let (log, report) = Log::open(SimPmem::from_image(image), options()).unwrap();
                assert_eq!(report.superblock_copies_repaired, 1);
                assert_eq!(log.list_streams().len(), 1);
            }
        }
    }

    #[test]
    fn both_copies_damaged_is_damaged_and_never_formatted_over() {
        let mut image = formatted_image();
        image[copy_offset(0) + 30] ^= 1;
        image[copy_offset(1) + 50] ^= 1;
        assert!(matches!(
            probe_image(&image).unwrap(),
            Probe::Damaged {
                copy_a: CopyFault::Decode(SuperblockError::ChecksumMismatch { .. }),
                copy_b: CopyFault::Decode(SuperblockError::ChecksumMismatch { .. }),
            }
        ));
        let sim = SimPmem::from_image(image.clone());
        assert!(matches!(
            Log::create(sim, config(), options()),
            Err(EngineError::Corruption {
                location: Location::Superblock,
                kind: CorruptKind::Checksum,
                ..
            })
        ));
        let sim = SimPmem::from_image(image.clone());
        assert!(matches!(
            Log::open(sim, options()),
            Err(EngineError::Corruption {
                location: Location::Superblock,
                ..
            })
        ));
    }

    #[test]
    fn copies_that_both_check_but_disagree_are_damaged() {
        let mut image = formatted_image();
        let mut other = Superblock::decode(&image[..SUPERBLOCK_USED_BYTES]).unwrap();
        other.pool_nonce ^= 0xFF;
        image[copy_offset(1)..copy_offset(1) + SUPERBLOCK_USED_BYTES]
            .copy_from_slice(&other.encode());
        assert_eq!(
            probe_image(&image).unwrap(),
            Probe::Damaged {
                copy_a: CopyFault::Disagrees,
                copy_b: CopyFault::Disagrees
            }
        );
    }

    #[test]
    fn a_copy_that_checks_but_does_not_fit_the_pool_is_a_damaged_copy() {
        let mut image = formatted_image();
        let mut huge = Superblock::decode(&image[..SUPERBLOCK_USED_BYTES]).unwrap();
        huge.segment_count = 1 << 20;
        image[..SUPERBLOCK_USED_BYTES].copy_from_slice(&huge.encode());
        assert_eq!(
            probe_image(&image).unwrap(),
            Probe::Formatted {
                damaged_copies: vec![0]
            }
        );
    }

    #[test]
    fn a_v1_pool_is_unsupported_and_nothing_is_written() {
        let mut image = vec![0u8; POOL_BYTES];
        image[..8].copy_from_slice(&SUPERBLOCK_V1_MAGIC);
        image[8..12].copy_from_slice(&1u32.to_le_bytes());
        image[12..16].copy_from_slice(&128u32.to_le_bytes());
        let crc = crate::format::crc32(&[&image[..124]]);
        image[124..128].copy_from_slice(&crc.to_le_bytes());
        // v1's stream table started at page 1, where v2 keeps copy B.
        image[copy_offset(1)..copy_offset(1) + 8].copy_from_slice(&7u64.to_le_bytes());
        let unsupported = |result: Result<Probe>| {
            matches!(
                result,
                Err(EngineError::UnsupportedVersion {
                    found: 1,
                    supported: 2
                })
            )
        };
        assert!(unsupported(probe_image(&image)));
        let sim = SimPmem::from_image(image.clone());
        assert!(matches!(
            Log::create(sim, config(), options()),
            Err(EngineError::UnsupportedVersion { found: 1, .. })
        ));
        let sim = SimPmem::from_image(image.clone());
        let Err(error) = Log::open(sim, options()) else {
            panic!("a v1 pool opened");
        };
        assert!(matches!(
            error,
            EngineError::UnsupportedVersion { found: 1, .. }
        ));
        let sim = SimPmem::from_image(image.clone());
        assert!(crate::verify(&sim).is_err());
        assert_eq!(sim.persisted_image(), image);
    }

    #[test]
    fn the_marker_of_an_interrupted_format_is_blank_and_formats_again() {
        let mut image = vec![0u8; POOL_BYTES];
        image[..8].copy_from_slice(&FORMAT_MARKER_RUNNING);
        // Copy B half written, as a crash inside its write leaves it.
        image[copy_offset(1)..copy_offset(1) + 8].copy_from_slice(&FORMAT_MARKER_DONE);
        assert_eq!(
            probe_image(&image).unwrap(),
            Probe::Blank {
                interrupted_format: true
            }
        );
        let log = Log::create(SimPmem::from_image(image), config(), options()).unwrap();
        assert_eq!(
            probe(log.pmem()).unwrap(),
            Probe::Formatted {
                damaged_copies: vec![]
            }
        );
    }

    #[test]
    fn the_marker_with_data_past_the_superblock_is_damaged() {
        let mut image = formatted_image();
        image[..SUPERBLOCK_REGION_BYTES].fill(0);
        image[..8].copy_from_slice(&FORMAT_MARKER_RUNNING);
        assert!(matches!(
            probe_image(&image).unwrap(),
            Probe::Damaged { .. }
        ));
    }

    #[test]
    fn zeroed_superblocks_over_data_are_damaged_not_blank() {
        let mut image = formatted_image();
        image[..SUPERBLOCK_REGION_BYTES].fill(0);
        assert_eq!(
            probe_image(&image).unwrap(),
            Probe::Damaged {
                copy_a: CopyFault::Decode(SuperblockError::Unformatted),
                copy_b: CopyFault::Decode(SuperblockError::Unformatted),
            }
        );
        let mut lone_byte = vec![0u8; POOL_BYTES];
        lone_byte[POOL_BYTES - 1] = 1;
        assert!(matches!(
            probe_image(&lone_byte).unwrap(),
            Probe::Damaged { .. }
        ));
        let sim = SimPmem::from_image(lone_byte.clone());
        assert!(Log::create(sim, config(), options()).is_err());
    }

    #[test]
    fn a_pool_smaller_than_the_superblock_area_is_too_small() {
        assert!(matches!(
            probe(&SimPmem::new(4096)),
            Err(EngineError::PoolTooSmall { .. })
        ));
        let _ = SimPmem::new(64).len_bytes();
    }
}
