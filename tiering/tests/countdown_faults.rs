//! SQLite-style countdown loops: fail the k-th SSD I/O of a migration for k = 1, 2, ... until
//! the migration completes, once as a one-time failure and once as a persistent one. After
//! every failure: the error is typed, the live directory and a crash image of it hold the
//! segment complete or not at all (never an incomplete file taken as complete), and a retry
//! of the whole migration succeeds.

mod common;

use std::sync::Arc;

use common::{
    as_input, check_readback, is_injected, make_records, recover_and_check, small_config, Record,
};
use pstream_crashtest::tiering_case::source;
use pstream_tiering::{
    ColdStore, ColdStoreConfig, Compression, CountdownFault, FaultSpec, FaultyIo, IoOp, SegmentIo,
    StdIo, TieringError, UringConfig, UringIo,
};

const GEN: u64 = 0x5e9;

#[derive(Debug, Default)]
struct Tally {
    runs: u64,
    faults_injected: u64,
    sync_failures: u64,
    left_complete: u64,
}

fn fresh_store(
    dir: &std::path::Path,
    config: &ColdStoreConfig,
) -> (Arc<FaultyIo<StdIo>>, ColdStore<Arc<FaultyIo<StdIo>>>) {
    let io =
        Arc::new(FaultyIo::new(StdIo::open(dir).expect("io"), FaultSpec::none(0)).expect("faulty"));
    let (store, _) = ColdStore::open(Arc::clone(&io), config.clone()).expect("open");
    (io, store)
}

/// One run: fault at operation `k`. Returns true once the migration completed untouched.
fn run_once(
    records: &[Record],
    config: &ColdStoreConfig,
    fault: CountdownFault,
    persistent: bool,
    k: u64,
    tally: &mut Tally,
) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let (io, store) = fresh_store(dir.path(), config);
    io.set_spec(FaultSpec::countdown(k, fault, persistent));
    let result = store.write_segment(&source(GEN), as_input(records));
    let injected = io.counters().injected;
    let context = format!(
        "{fault:?} persistent={persistent} k={k}: trace {:?}",
        io.trace()
    );
    tally.runs += 1;
    tally.faults_injected += injected;
    match &result {
        Ok(_) => {
            assert_eq!(injected, 0, "{context}: a fault was swallowed");
            io.set_spec(FaultSpec::none(k));
            check_readback(&store, GEN, records);
            return true;
        }
        Err(error) => {
            assert!(is_injected(error), "{context}: unexpected error {error}");
            if let TieringError::SyncFailed { op, .. } = error {
                assert!(matches!(op, IoOp::Fdatasync | IoOp::SyncDir), "{context}");
                tally.sync_failures += 1;
            }
            assert!(
                store.index(GEN).is_none(),
                "{context}: a failed migration is served"
            );
            assert!(matches!(
                store.read_record(GEN, records[0].0, records[0].1),
                Err(TieringError::UnknownSegment { .. })
            ));
        }
    }
    io.set_spec(FaultSpec::none(k));
    drop(store);

    // The live directory, as a restart without a crash would find it (checked on a copy).
    let live = tempfile::tempdir().expect("tempdir");
    for name in io.list().expect("list") {
        std::fs::copy(dir.path().join(&name), live.path().join(&name)).expect("copy");
    }
    let present = recover_and_check(
        live.path(),
        GEN,
        records,
        config,
        &format!("{context} (live)"),
    );
    tally.left_complete += u64::from(present);
    // A crash right after the failure: unsynced sectors and directory entries in doubt.
    io.crash_now();
    let image = io.materialize_crash(k).expect("image");
    recover_and_check(
        dir.path(),
        GEN,
        records,
        config,
        &format!("{context} (crash image {image:?})"),
    );

    // The engine keeps the persistent-memory copy and migrates again later.
    let (_, store) = fresh_store(dir.path(), config);
    store.discard_orphan(GEN).expect("discard");
    store
        .write_segment(&source(GEN), as_input(records))
        .unwrap_or_else(|error| panic!("{context}: retry failed: {error}"));
    check_readback(&store, GEN, records);
    false
}

fn countdown_loop(fault: CountdownFault, persistent: bool, compression: Compression) -> Tally {
    let records = make_records(0xc0, 70, 2500, true);
    let config = small_config(compression);
    let mut tally = Tally::default();
    for k in 1.. {
        if run_once(&records, &config, fault, persistent, k, &mut tally) {
            assert!(
                k > 5,
                "{fault:?}: the migration completed after only {k} operations"
            );
            break;
        }
        assert!(k < 1000, "runaway countdown");
    }
    eprintln!("{fault:?} persistent={persistent} {compression:?}: {tally:?}");
    tally
}

#[test]
fn countdown_eio_one_time_and_persistent() {
    let one_time = countdown_loop(CountdownFault::Eio, false, Compression::None);
    let persistent = countdown_loop(CountdownFault::Eio, true, Compression::None);
    assert!(
        one_time.sync_failures >= 2,
        "fdatasync and directory sync were both hit"
    );
    assert!(persistent.faults_injected > one_time.faults_injected);
    // A one-time fault leaves nothing behind. With persistent failures the cleanup fails too:
    // what stays is a complete file whose directory sync (or reopening) failed — complete,
    // verified above, and discarded by the engine's recovery as an orphan.
    assert_eq!(one_time.left_complete, 0);
    assert!(persistent.left_complete <= 2);
}

#[test]
fn countdown_enospc_one_time_and_persistent() {
    countdown_loop(
        CountdownFault::Enospc,
        false,
        Compression::Zstd { level: 3 },
    );
    countdown_loop(CountdownFault::Enospc, true, Compression::Zstd { level: 3 });
}

#[test]
fn countdown_short_write_one_time_and_persistent() {
    countdown_loop(CountdownFault::ShortWrite, false, Compression::None);
    countdown_loop(CountdownFault::ShortWrite, true, Compression::None);
}

#[test]
fn countdown_over_uring_io() {
    let records = make_records(0xd1, 40, 2000, false);
    let config = small_config(Compression::None);
    for persistent in [false, true] {
        for k in 1.. {
            let dir = tempfile::tempdir().expect("tempdir");
            let uring = UringIo::open(dir.path(), UringConfig::default()).expect("uring");
            let io = Arc::new(FaultyIo::new(uring, FaultSpec::none(0)).expect("faulty"));
            let (store, _) = ColdStore::open(Arc::clone(&io), config.clone()).expect("open");
            io.set_spec(FaultSpec::countdown(k, CountdownFault::Eio, persistent));
            let result = store.write_segment(&source(GEN), as_input(&records));
            drop(store);
            let context = format!("uring k={k} persistent={persistent}");
            recover_and_check(dir.path(), GEN, &records, &config, &context);
            if result.is_ok() {
                break;
            }
            assert!(k < 1000);
        }
    }
}

/// A failed fdatasync is never papered over by a later successful one: the lost pages are
/// not durable, and the writer never renames after a failed sync.
#[test]
fn failed_fdatasync_is_not_retried_and_not_trusted() {
    let records = make_records(0xf5, 50, 2000, true);
    let config = small_config(Compression::None);
    let dir = tempfile::tempdir().expect("tempdir");
    let (io, store) = fresh_store(dir.path(), &config);
    let mut spec = FaultSpec::none(3);
    spec.fdatasync_fail_probability = 1.0;
    io.set_spec(spec);
    let error = store
        .write_segment(&source(GEN), as_input(&records))
        .expect_err("sync fails");
    assert!(error.is_sync_failure(), "{error}");
    let trace = io.trace();
    assert_eq!(
        trace
            .iter()
            .filter(|event| event.op == IoOp::Fdatasync)
            .count(),
        1,
        "no retry"
    );
    assert!(io.list().expect("list").is_empty(), "temp file removed");
    drop(store);
    io.crash_now();
    io.materialize_crash(9).expect("image");
    assert!(!recover_and_check(
        dir.path(),
        GEN,
        &records,
        &config,
        "after failed fdatasync"
    ));
}
