//! The pmem-emul pool header (through `MmapPool::open`, its only public decoder). Input:
//! a flags byte, then the header page. Flag 1: recompute the page checksum, so the fuzzer
//! reaches the field checks; flag 2: size the file as the header says (when small), so it
//! reaches the length checks and the mapping. Must give a pool or a typed error.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use pmem_emul::{MmapPool, PoolOptions, POOL_HEADER_BYTES};

const DATA_LEN_FOLLOWED_MAX_BYTES: u64 = 1 << 20;

fn scratch_dir() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut page = rest.to_vec();
    page.resize(POOL_HEADER_BYTES, 0);
    if flags & 1 != 0 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&page[..32]);
        hasher.update(&page[36..]);
        let crc = hasher.finalize();
        page[32..36].copy_from_slice(&crc.to_le_bytes());
    }
    let mut file_bytes = if flags & 4 != 0 { rest.to_vec() } else { page };
    if flags & 2 != 0 && file_bytes.len() >= 24 {
        let data_len = u64::from_le_bytes(file_bytes[16..24].try_into().unwrap_or([0; 8]));
        if data_len <= DATA_LEN_FOLLOWED_MAX_BYTES {
            file_bytes.resize(POOL_HEADER_BYTES + data_len as usize, 0);
        }
    }
    let Ok(mut file) = tempfile::NamedTempFile::new_in(scratch_dir()) else {
        return;
    };
    if file.write_all(&file_bytes).is_err() {
        return;
    }
    if let Ok(pool) = MmapPool::open(file.path(), PoolOptions::default()) {
        use pmem_emul::Pmem;
        assert_eq!(pool.len_bytes() + POOL_HEADER_BYTES, file_bytes.len());
        let _ = pool.close();
    }
});
