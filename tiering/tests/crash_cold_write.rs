//! A crash at every step of writing a cold file, then recovery through `ColdStore::open` on
//! a crash image of the SSD (unsynced sectors there, absent or garbage; unsynced directory
//! operations kept as a prefix): the segment is either complete or absent, never adopted
//! half-written; once `write_segment` returned Ok it is always present. Recovery that is
//! itself interrupted by a crash converges the same way.

mod common;

use std::sync::Arc;

use common::{as_input, make_records, recover_and_check, small_config, Record};
use pstream_crashtest::tiering_case::source;
use pstream_tiering::{
    ColdStore, ColdStoreConfig, Compression, CountdownFault, FaultSpec, FaultyIo, StdIo,
    TieringError,
};

const SEEDS_PER_CRASH_POINT: u64 = 24;
const GEN: u64 = 0x77;

struct Outcome {
    acknowledged: bool,
    crashed: bool,
    present: bool,
}

/// Writes `records` with a crash before operation `crash_at` (counted from the start of the
/// migration), materializes crash image `seed`, and checks recovery.
fn crash_once(records: &[Record], config: &ColdStoreConfig, crash_at: u64, seed: u64) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let io =
        FaultyIo::new(StdIo::open(dir.path()).expect("io"), FaultSpec::none(seed)).expect("faulty");
    let (store, _) = ColdStore::open(io, config.clone()).expect("open");
    store
        .io()
        .set_spec(FaultSpec::countdown(crash_at, CountdownFault::Crash, false));
    let result = store.write_segment(&source(GEN), as_input(records));
    let crashed = store.io().is_crashed();
    match &result {
        Ok(_) => assert!(
            !crashed,
            "crash point {crash_at}: acknowledged after a crash"
        ),
        Err(error) => assert!(
            matches!(error, TieringError::SimulatedCrash { .. }),
            "crash point {crash_at}: unexpected error {error}"
        ),
    }
    let acknowledged = result.is_ok();
    if acknowledged {
        // Crash right after the acknowledgement.
        store.io().crash_now();
    }
    let image = store.io().materialize_crash(seed).expect("crash image");
    let context = format!(
        "crash point {crash_at}, image seed {seed}: {image:?}, trace {:?}",
        store.io().trace()
    );
    drop(store);
    let present = recover_and_check(dir.path(), GEN, records, config, &context);
    if acknowledged {
        assert!(present, "{context}: an acknowledged migration was lost");
    }
    Outcome {
        acknowledged,
        crashed,
        present,
    }
}

/// Returns (crash points, images checked, images where the segment survived).
fn crash_at_every_step(compression: Compression) -> (u64, u64, u64) {
    let records = make_records(21, 90, 3000, true);
    let config = small_config(compression);
    let mut images = 0;
    let mut present = 0;
    let mut crash_at = 1;
    loop {
        let mut acknowledged = false;
        for seed in 0..SEEDS_PER_CRASH_POINT {
            let outcome = crash_once(&records, &config, crash_at, crash_at * 1000 + seed);
            images += 1;
            present += u64::from(outcome.present);
            acknowledged = outcome.acknowledged && !outcome.crashed;
        }
        if acknowledged {
            // The migration finished before reaching this operation: every step was covered.
            break;
        }
        crash_at += 1;
        assert!(crash_at < 1000, "runaway");
    }
    assert!(
        crash_at > 5,
        "the migration has at least create, write, sync, rename, dir sync"
    );
    // Crashes between the rename and the directory sync keep or lose the new name.
    assert!(
        present > SEEDS_PER_CRASH_POINT && present < images,
        "{present} of {images}"
    );
    (crash_at - 1, images, present)
}

#[test]
fn crash_at_every_step_uncompressed() {
    let (steps, images, present) = crash_at_every_step(Compression::None);
    eprintln!("uncompressed: {steps} crash points, {images} crash images, {present} kept it");
}

#[test]
fn crash_at_every_step_compressed() {
    let (steps, images, present) = crash_at_every_step(Compression::Zstd { level: 3 });
    eprintln!("zstd: {steps} crash points, {images} crash images, {present} kept it");
}

/// Recovery (`ColdStore::open` removing temp files, quarantining) crashes at each of its own
/// steps, then runs again to completion.
#[test]
fn crash_during_recovery_then_recover_again() {
    let records = make_records(5, 60, 2500, false);
    let config = small_config(Compression::None);
    let mut checked = 0;
    // Leave a temp file and a half-written state: crash in the middle of a migration.
    for crash_in_open_at in 1..12u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let io = FaultyIo::new(StdIo::open(dir.path()).expect("io"), FaultSpec::none(1))
            .expect("faulty");
        let (store, _) = ColdStore::open(io, config.clone()).expect("open");
        // A second, complete segment that must survive everything.
        let survivor = make_records(6, 30, 1000, true);
        store
            .write_segment(&source(GEN + 1), as_input(&survivor))
            .expect("survivor");
        store
            .io()
            .set_spec(FaultSpec::countdown(4, CountdownFault::Crash, false));
        assert!(store
            .write_segment(&source(GEN), as_input(&records))
            .is_err());
        store
            .io()
            .materialize_crash(crash_in_open_at)
            .expect("image");
        // Open crashes at its own step `crash_in_open_at`.
        let io = FaultyIo::new(StdIo::open(dir.path()).expect("io"), FaultSpec::none(2))
            .expect("faulty");
        let io = Arc::new(io);
        io.set_spec(FaultSpec::countdown(
            crash_in_open_at,
            CountdownFault::Crash,
            false,
        ));
        match ColdStore::open(Arc::clone(&io), config.clone()) {
            Ok((store, _)) => {
                io.crash_now();
                drop(store);
            }
            Err(error) => assert!(
                matches!(error, TieringError::SimulatedCrash { .. }),
                "{error}"
            ),
        }
        io.materialize_crash(crash_in_open_at + 100).expect("image");
        let context = format!("recovery crashed at its step {crash_in_open_at}");
        assert!(!recover_and_check(
            dir.path(),
            GEN,
            &records,
            &config,
            &context
        ));
        assert!(recover_and_check(
            dir.path(),
            GEN + 1,
            &survivor,
            &config,
            &context
        ));
        checked += 1;
    }
    assert_eq!(checked, 11);
}
