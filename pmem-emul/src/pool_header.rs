//! The pool header: the first page of every pool file.
//!
//! A pool file is one header page of [`POOL_HEADER_BYTES`] followed by the data region that
//! [`Pmem`](crate::Pmem) offsets are relative to. The header says what the file is (magic,
//! version) and how long its data region is, and a CRC-32 over the whole page (fields and
//! reserved zeros alike, except the CRC field itself) catches any corruption of it.
//!
//! Header page layout (all integers little-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic            "PSTPOOL\0"
//!      8     4  version          u32, POOL_VERSION
//!     12     4  header_len       u32, bytes, always POOL_HEADER_BYTES
//!     16     8  data_len         u64, bytes of the data region, multiple of page_size
//!     24     4  page_size        u32, bytes, the creating system's page size (power of two)
//!     28     4  flags            u32, creation flags; no flag is defined yet, all must be 0
//!     32     4  crc32            u32, CRC-32 (IEEE) of bytes [0, 32) ++ [36, 4096)
//!     36  4060  reserved         zero
//!   4096        data region (data_len bytes)
//! ```
//!
//! The header is written once, by `create`, and never changed afterwards, so it needs no
//! crash-atomic update protocol; a torn header (crash during `create`) fails its checksum.

use crate::error::UNKNOWN_PATH;
use crate::{PmemError, CACHE_LINE_BYTES};

/// Bytes of the header page at the start of every pool file.
pub const POOL_HEADER_BYTES: usize = 4096;
/// The first eight bytes of every pool file.
pub const POOL_MAGIC: [u8; 8] = *b"PSTPOOL\0";
/// The format version this build writes and reads.
pub const POOL_VERSION: u32 = 1;

/// Largest data region a pool may have (64 TiB): bounds every length read from disk.
pub const POOL_DATA_LEN_MAX_BYTES: u64 = 1 << 46;
/// Smallest page size the header accepts.
pub const POOL_PAGE_SIZE_MIN_BYTES: u32 = 4096;
/// Largest page size the header accepts (1 GiB huge pages).
pub const POOL_PAGE_SIZE_MAX_BYTES: u32 = 1 << 30;
/// Every creation flag this build understands (none yet).
const POOL_FLAGS_KNOWN: u32 = 0;

const MAGIC_OFFSET: usize = 0;
const MAGIC_BYTES: usize = POOL_MAGIC.len();
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC_BYTES;
const HEADER_LEN_OFFSET: usize = VERSION_OFFSET + 4;
const DATA_LEN_OFFSET: usize = HEADER_LEN_OFFSET + 4;
const PAGE_SIZE_OFFSET: usize = DATA_LEN_OFFSET + 8;
const FLAGS_OFFSET: usize = PAGE_SIZE_OFFSET + 4;
const CRC_OFFSET: usize = FLAGS_OFFSET + 4;
const RESERVED_OFFSET: usize = CRC_OFFSET + 4;

const _: () = assert!(VERSION_OFFSET == 8);
const _: () = assert!(DATA_LEN_OFFSET % 8 == 0);
const _: () = assert!(CRC_OFFSET == 32);
const _: () = assert!(RESERVED_OFFSET <= CACHE_LINE_BYTES);
const _: () = assert!(POOL_HEADER_BYTES.is_power_of_two());
const _: () = assert!(POOL_HEADER_BYTES % CACHE_LINE_BYTES == 0);
const _: () = assert!(POOL_HEADER_BYTES <= POOL_PAGE_SIZE_MIN_BYTES as usize);
const _: () = assert!(POOL_PAGE_SIZE_MIN_BYTES.is_power_of_two());
const _: () = assert!(POOL_PAGE_SIZE_MAX_BYTES.is_power_of_two());
const _: () = assert!(POOL_DATA_LEN_MAX_BYTES % POOL_PAGE_SIZE_MAX_BYTES as u64 == 0);
// The whole file length must fit in an i64 (off_t) and in a usize on 64-bit targets.
const _: () = assert!(POOL_DATA_LEN_MAX_BYTES + (POOL_HEADER_BYTES as u64) < i64::MAX as u64);

/// The decoded header of a pool file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolHeader {
    /// Format version; [`decode`](PoolHeader::decode) only returns [`POOL_VERSION`].
    pub version: u32,
    /// Bytes of the data region that follows the header page.
    pub data_len_bytes: u64,
    /// Page size of the system that created the pool.
    pub page_size_bytes: u32,
    /// Creation flags (none defined yet).
    pub flags: u32,
}

impl PoolHeader {
    /// A current-version header for a data region of `data_len_bytes`.
    pub fn new(data_len_bytes: u64, page_size_bytes: u32) -> Self {
        PoolHeader {
            version: POOL_VERSION,
            data_len_bytes,
            page_size_bytes,
            flags: 0,
        }
    }

    /// Bytes the whole pool file must have: header page plus data region.
    pub fn file_len_bytes(&self) -> u64 {
        debug_assert!(self.data_len_bytes <= POOL_DATA_LEN_MAX_BYTES);
        POOL_HEADER_BYTES as u64 + self.data_len_bytes
    }

    /// Encodes the header page, checksum included.
    pub fn encode(&self) -> [u8; POOL_HEADER_BYTES] {
        let mut page = [0u8; POOL_HEADER_BYTES];
        page[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&POOL_MAGIC);
        page[VERSION_OFFSET..HEADER_LEN_OFFSET].copy_from_slice(&self.version.to_le_bytes());
        let header_len = POOL_HEADER_BYTES as u32;
        page[HEADER_LEN_OFFSET..DATA_LEN_OFFSET].copy_from_slice(&header_len.to_le_bytes());
        page[DATA_LEN_OFFSET..PAGE_SIZE_OFFSET].copy_from_slice(&self.data_len_bytes.to_le_bytes());
        page[PAGE_SIZE_OFFSET..FLAGS_OFFSET].copy_from_slice(&self.page_size_bytes.to_le_bytes());
        page[FLAGS_OFFSET..CRC_OFFSET].copy_from_slice(&self.flags.to_le_bytes());
        let crc = page_crc(&page);
        page[CRC_OFFSET..RESERVED_OFFSET].copy_from_slice(&crc.to_le_bytes());
        // Paired assertion: what we wrote is what a reader will accept.
        debug_assert_eq!(PoolHeader::decode(&page).ok(), Some(*self));
        page
    }

    /// Decodes and validates a header page. Never panics: any input gives a header or an
    /// error. Errors name a placeholder path; callers fill it in with
    /// [`PmemError::with_path`].
    ///
    /// Checks, in order: length, magic, version (a newer version may place its checksum
    /// elsewhere, so the version is read before the checksum is trusted), checksum, fields.
    pub fn decode(bytes: &[u8]) -> Result<PoolHeader, PmemError> {
        let path = std::path::PathBuf::from(UNKNOWN_PATH);
        let Some(page) = bytes.get(..POOL_HEADER_BYTES) else {
            return Err(PmemError::Truncated {
                path,
                expected_file_bytes: POOL_HEADER_BYTES as u64,
                actual_file_bytes: bytes.len() as u64,
            });
        };
        let magic: [u8; 8] = array_at(page, MAGIC_OFFSET);
        if magic != POOL_MAGIC {
            return Err(PmemError::WrongMagic {
                path,
                found: magic,
                expected: POOL_MAGIC,
            });
        }
        let version = u32::from_le_bytes(array_at(page, VERSION_OFFSET));
        if version != POOL_VERSION {
            return Err(PmemError::UnsupportedVersion {
                path,
                found: version,
                supported: POOL_VERSION,
            });
        }
        let stored = u32::from_le_bytes(array_at(page, CRC_OFFSET));
        let computed = page_crc(page);
        if stored != computed {
            return Err(PmemError::HeaderChecksum {
                path,
                stored,
                computed,
            });
        }
        let header_len = u32::from_le_bytes(array_at(page, HEADER_LEN_OFFSET));
        let header = PoolHeader {
            version,
            data_len_bytes: u64::from_le_bytes(array_at(page, DATA_LEN_OFFSET)),
            page_size_bytes: u32::from_le_bytes(array_at(page, PAGE_SIZE_OFFSET)),
            flags: u32::from_le_bytes(array_at(page, FLAGS_OFFSET)),
        };
        validate_fields(header, header_len).map_err(|error| error.with_path(&path))?;
        Ok(header)
    }
}

/// Checks the fields a correct checksum does not vouch for (a buggy writer could have
/// produced them). The returned error names no useful path yet.
fn validate_fields(header: PoolHeader, header_len: u32) -> Result<(), PmemError> {
    let path = std::path::PathBuf::from(UNKNOWN_PATH);
    let field_error = |field, value: u64, reason| PmemError::HeaderField {
        path: path.clone(),
        field,
        value,
        reason,
    };
    if header_len as usize != POOL_HEADER_BYTES {
        return Err(field_error("header_len", header_len.into(), "must be 4096"));
    }
    let page_size_bytes = header.page_size_bytes;
    if !page_size_bytes.is_power_of_two()
        || !(POOL_PAGE_SIZE_MIN_BYTES..=POOL_PAGE_SIZE_MAX_BYTES).contains(&page_size_bytes)
    {
        let reason = "must be a power of two between 4 KiB and 1 GiB";
        return Err(field_error("page_size", page_size_bytes.into(), reason));
    }
    if header.flags & !POOL_FLAGS_KNOWN != 0 {
        return Err(field_error(
            "flags",
            header.flags.into(),
            "unknown creation flags",
        ));
    }
    check_data_len(&path, header.data_len_bytes, page_size_bytes.into())
}

/// Checks a data region length against the format's rules: at least one page, a whole number
/// of pages, at most [`POOL_DATA_LEN_MAX_BYTES`]. Used by `create` and by `decode`.
pub(crate) fn check_data_len(
    path: &std::path::Path,
    data_len_bytes: u64,
    page_size_bytes: u64,
) -> Result<(), PmemError> {
    assert!(page_size_bytes.is_power_of_two());
    let path = path.to_path_buf();
    if data_len_bytes < page_size_bytes {
        return Err(PmemError::TooSmall {
            path,
            data_len_bytes,
            min_bytes: page_size_bytes,
        });
    }
    if data_len_bytes % page_size_bytes != 0 {
        return Err(PmemError::NotPageMultiple {
            path,
            data_len_bytes,
            page_size_bytes,
        });
    }
    if data_len_bytes > POOL_DATA_LEN_MAX_BYTES {
        let max_bytes = POOL_DATA_LEN_MAX_BYTES;
        return Err(PmemError::TooLarge {
            path,
            data_len_bytes,
            max_bytes,
        });
    }
    Ok(())
}

/// CRC-32 of the header page with the CRC field itself left out.
fn page_crc(page: &[u8]) -> u32 {
    assert_eq!(page.len(), POOL_HEADER_BYTES);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&page[..CRC_OFFSET]);
    hasher.update(&page[RESERVED_OFFSET..]);
    hasher.finalize()
}

/// The `N` bytes at `offset` of the header page. The offsets are constants inside the page,
/// which `decode` has already bounded to `POOL_HEADER_BYTES`.
fn array_at<const N: usize>(page: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&page[offset..offset + N]);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> PoolHeader {
        PoolHeader::new(64 * 1024 * 1024, 4096)
    }

    /// Rewrites the checksum so that a deliberately changed field reaches field validation.
    fn reseal(page: &mut [u8; POOL_HEADER_BYTES]) {
        let crc = page_crc(page);
        page[CRC_OFFSET..RESERVED_OFFSET].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn round_trip() {
        let header = sample();
        let page = header.encode();
        assert_eq!(&page[..8], b"PSTPOOL\0");
        assert_eq!(PoolHeader::decode(&page).unwrap(), header);
        assert_eq!(header.file_len_bytes(), 4096 + 64 * 1024 * 1024);
        // Longer input (a whole file) decodes the same.
        let mut file = page.to_vec();
        file.extend_from_slice(&[0xAA; 100]);
        assert_eq!(PoolHeader::decode(&file).unwrap(), header);
    }

    #[test]
    fn layout_is_little_endian_at_documented_offsets() {
        let page = PoolHeader::new(0x0304_0506_7000, 0x1000).encode();
        assert_eq!(&page[8..12], &[1, 0, 0, 0]);
        assert_eq!(&page[12..16], &[0x00, 0x10, 0, 0]);
        assert_eq!(&page[16..24], &[0x00, 0x70, 0x06, 0x05, 0x04, 0x03, 0, 0]);
        assert_eq!(&page[24..28], &[0x00, 0x10, 0, 0]);
        assert!(page[36..].iter().all(|&b| b == 0));
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let page = sample().encode();
        for bit in 0..POOL_HEADER_BYTES * 8 {
            let mut bad = page;
            bad[bit / 8] ^= 1 << (bit % 8);
            let result = PoolHeader::decode(&bad);
            assert!(result.is_err(), "bit {bit} flipped but header accepted");
        }
    }

    #[test]
    fn flipped_bits_give_the_right_variant() {
        let page = sample().encode();
        let mut bad = page;
        bad[0] ^= 1;
        assert!(matches!(
            PoolHeader::decode(&bad),
            Err(PmemError::WrongMagic { .. })
        ));
        let mut bad = page;
        bad[VERSION_OFFSET] ^= 2;
        let result = PoolHeader::decode(&bad);
        assert!(matches!(
            result,
            Err(PmemError::UnsupportedVersion { found: 3, .. })
        ));
        let mut bad = page;
        bad[DATA_LEN_OFFSET + 3] ^= 0x10;
        assert!(matches!(
            PoolHeader::decode(&bad),
            Err(PmemError::HeaderChecksum { .. })
        ));
        let mut bad = page;
        bad[POOL_HEADER_BYTES - 1] ^= 0x80;
        assert!(matches!(
            PoolHeader::decode(&bad),
            Err(PmemError::HeaderChecksum { .. })
        ));
    }

    #[test]
    fn short_input_is_truncated() {
        let page = sample().encode();
        for len in [0, 1, 8, 35, 36, POOL_HEADER_BYTES - 1] {
            let result = PoolHeader::decode(&page[..len]);
            assert!(
                matches!(
                    result,
                    Err(PmemError::Truncated { expected_file_bytes: 4096, actual_file_bytes, .. })
                        if actual_file_bytes == len as u64
                ),
                "len {len}: {result:?}"
            );
        }
    }

    #[test]
    fn sealed_bad_fields_are_rejected() {
        let cases: [(usize, &[u8], &str); 5] = [
            (HEADER_LEN_OFFSET, &512u32.to_le_bytes(), "header_len"),
            (PAGE_SIZE_OFFSET, &4095u32.to_le_bytes(), "page_size"),
            (PAGE_SIZE_OFFSET, &(1u32 << 31).to_le_bytes(), "page_size"),
            (PAGE_SIZE_OFFSET, &0u32.to_le_bytes(), "page_size"),
            (FLAGS_OFFSET, &1u32.to_le_bytes(), "flags"),
        ];
        for (offset, value, expected_field) in cases {
            let mut page = sample().encode();
            page[offset..offset + value.len()].copy_from_slice(value);
            reseal(&mut page);
            match PoolHeader::decode(&page) {
                Err(PmemError::HeaderField { field, .. }) => assert_eq!(field, expected_field),
                other => panic!("{expected_field}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn sealed_bad_data_len_is_rejected() {
        type Expectation = fn(&PmemError) -> bool;
        let cases: [(u64, Expectation); 4] = [
            (0, |e| matches!(e, PmemError::TooSmall { .. })),
            (4095, |e| matches!(e, PmemError::TooSmall { .. })),
            (4096 * 3 + 1, |e| {
                matches!(e, PmemError::NotPageMultiple { .. })
            }),
            (!4095, |e| matches!(e, PmemError::TooLarge { .. })),
        ];
        for (data_len_bytes, is_expected) in cases {
            let mut page = sample().encode();
            page[DATA_LEN_OFFSET..PAGE_SIZE_OFFSET].copy_from_slice(&data_len_bytes.to_le_bytes());
            reseal(&mut page);
            let error = PoolHeader::decode(&page).unwrap_err();
            assert!(is_expected(&error), "data_len {data_len_bytes}: {error:?}");
            assert!(error.to_string().contains(UNKNOWN_PATH));
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = PoolHeader::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_sealed_garbage(
            fields in proptest::array::uniform32(any::<u8>())
        ) {
            let mut page = [0u8; POOL_HEADER_BYTES];
            page[..32].copy_from_slice(&fields);
            page[..8].copy_from_slice(&POOL_MAGIC);
            page[8..12].copy_from_slice(&POOL_VERSION.to_le_bytes());
            reseal(&mut page);
            if let Ok(header) = PoolHeader::decode(&page) {
                prop_assert!(header.data_len_bytes <= POOL_DATA_LEN_MAX_BYTES);
                prop_assert_eq!(header.data_len_bytes % u64::from(header.page_size_bytes), 0);
            }
        }

        #[test]
        fn valid_headers_round_trip(pages in 1u64..1_000_000, page_shift in 12u32..=21) {
            let page_size_bytes = 1u32 << page_shift;
            let data_len_bytes = pages * u64::from(page_size_bytes);
            let header = PoolHeader::new(data_len_bytes, page_size_bytes);
            prop_assert_eq!(PoolHeader::decode(&header.encode()).unwrap(), header);
        }
    }
}
