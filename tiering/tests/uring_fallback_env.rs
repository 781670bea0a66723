//! The io_uring fallback forced through the environment (its own test binary, so setting the
//! variable cannot race with other tests): a warning, not a failure, and the same results.

mod common;

use common::{as_input, check_readback, make_records, small_config};
use pstream_crashtest::tiering_case::source;
use pstream_tiering::io::FORCE_STD_IO_ENV;
use pstream_tiering::{ColdStore, Compression, UringConfig, UringIo};

#[test]
fn environment_variable_forces_the_pread_fallback() {
    std::env::set_var(FORCE_STD_IO_ENV, "1");
    let dir = tempfile::tempdir().expect("tempdir");
    let io = UringIo::open(dir.path(), UringConfig::default()).expect("fallback, not failure");
    assert!(!io.is_uring_active());
    let records = make_records(8, 150, 5000, true);
    let (store, _) =
        ColdStore::open(io, small_config(Compression::Zstd { level: 2 })).expect("open");
    store
        .write_segment(&source(3), as_input(&records))
        .expect("write");
    check_readback(&store, 3, &records);

    std::env::set_var(FORCE_STD_IO_ENV, "0");
    let other = tempfile::tempdir().expect("tempdir");
    let io = UringIo::open(other.path(), UringConfig::default()).expect("uring");
    eprintln!(
        "with {FORCE_STD_IO_ENV}=0 io_uring is active: {}",
        io.is_uring_active()
    );
    std::env::remove_var(FORCE_STD_IO_ENV);
}
