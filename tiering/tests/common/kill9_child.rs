//! Both sides of the tiering kill -9 tests (`engine_kill9.rs` over SSD files,
//! `object_kill9.rs` over an object store): the same child workload whatever the cold tier,
//! and the same parent check of its acknowledgements ([`check_acks`]).

use std::collections::HashMap;
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

/// Parses one line of the child's stdout: `ack <label> <seq>`.
pub fn parse_ack(words: &[&str]) -> Option<(u8, u64)> {
    match words {
        ["ack", label, seq] => Some((label.parse().ok()?, seq.parse().ok()?)),
        _ => None,
    }
}

/// What the parent found after a kill: the recovered streams by label, and how many of the
/// acknowledged records were read from the cold tier.
pub struct AckCheck {
    pub by_label: HashMap<u8, StreamId>,
    pub cold_reads: u64,
}

/// Checks every acknowledged record of a killed child on the recovered `log`, byte for byte
/// against [`payload`], from whichever tier holds it; panics naming `round` and the record.
pub fn check_acks<P: Pmem, C: ColdTier>(
    log: &Log<P, C>,
    acks: &[(u8, u64)],
    round: u64,
) -> AckCheck {
    let by_label: HashMap<u8, StreamId> = log
        .list_streams()
        .into_iter()
        .map(|s| (s.label[0] - b'0', s.id))
        .collect();
    let mut cold_reads = 0;
    for (label, seq) in acks {
        let id = by_label[label];
        let record = log
            .read(id, *seq)
            .unwrap_or_else(|e| panic!("round {round}: acked {label}/{seq} lost: {e}"));
        assert_eq!(
            record.payload(),
            &payload(*label, *seq)[..],
            "round {round}: {label}/{seq} differs"
        );
        cold_reads += u64::from(record.is_cold());
    }
    AckCheck {
        by_label,
        cold_reads,
    }
}
