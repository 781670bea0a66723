//! The child side of the tiering kill -9 tests (`engine_kill9.rs` over SSD files,
//! `object_kill9.rs` over an object store): the same workload whatever the cold tier, so the
//! parent's check is the same too.

use std::sync::Arc;
use std::time::Duration;

use pmem_emul::Pmem;
use pstream_engine::{ColdTier, Log, StreamId};
use pstream_tiering::{Migrator, MigratorPolicy};

/// The payload a child appends as `seq` of the stream labelled `label`; the parent
/// recomputes it to check every acknowledged record byte for byte.
pub fn payload(label: u8, seq: u64) -> Vec<u8> {
    let len = 200 + ((seq * 37 + u64::from(label) * 11) % 3000) as usize;
    (0..len)
        .map(|i| (seq as usize + i / 8) as u8 ^ label)
        .collect()
}

/// Creates streams `0` and `1` if missing, starts an eager migrator, prints `ready`, then
/// appends from one thread per stream (so each seq is known before its append) until the
/// process is killed, printing `ack <label> <seq>` after each acknowledgement.
pub fn append_until_killed<P, C>(log: Arc<Log<P, C>>)
where
    P: Pmem + Send + Sync + 'static,
    C: ColdTier,
{
    while log.list_streams().len() < 2 {
        let label = [b'0' + log.list_streams().len() as u8];
        log.create_stream(&label).expect("create");
    }
    let streams: Vec<(StreamId, u8)> = log
        .list_streams()
        .into_iter()
        .map(|s| (s.id, s.label[0] - b'0'))
        .collect();
    let policy = MigratorPolicy {
        min_idle_ms: 0,
        start_occupancy: 0.5,
        stop_occupancy: 0.25,
        interval: Duration::from_millis(2),
        ..MigratorPolicy::default()
    };
    let migrator = Migrator::start(log, policy);
    println!("ready");
    std::thread::scope(|scope| {
        for &(id, label) in &streams {
            let migrator = &migrator;
            scope.spawn(move || loop {
                let seq = migrator.log().bounds(id).expect("bounds").1;
                let bytes = payload(label, seq);
                match migrator.append(id, &bytes, Duration::from_secs(30)) {
                    Ok(acked) => {
                        assert_eq!(acked, seq);
                        println!("ack {label} {seq}");
                    }
                    Err(e) => panic!("append failed: {e}"),
                }
            });
        }
    });
}
