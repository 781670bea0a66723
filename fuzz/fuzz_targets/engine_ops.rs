//! Engine operation sequences with crash-and-reopen against the oracle's model: the input
//! is a seed (8 bytes) and 4-byte operations over a keyspace of 4 streams (so creates,
//! deletes, appends, batches and trims collide). The crash harness runs them on the
//! simulator, recovers crash images at fences (a few per run, drawn with the input's seed),
//! reopens when asked, and checks everything against the model; a violation panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_crashtest::engine_case::{
    run_engine_ops, EngineBudget, EngineOp, EngineSetup, PayloadSpec,
};

const OPS_MAX: usize = 48;

fn decode(data: &[u8]) -> (u64, Vec<EngineOp>) {
    let mut seed_bytes = [0u8; 8];
    for (i, byte) in seed_bytes.iter_mut().enumerate() {
        *byte = data.get(i).copied().unwrap_or(0);
    }
    let ops = data
        .get(8..)
        .unwrap_or(&[])
        .chunks(4)
        .take(OPS_MAX)
        .enumerate()
        .map(|(index, chunk)| {
            let byte = |i: usize| chunk.get(i).copied().unwrap_or(0);
            let stream = u16::from(byte(1) % 4);
            let len_bytes = u32::from(byte(2)) * (1 + u32::from(byte(3) % 24));
            let payload = PayloadSpec::Bytes {
                len_bytes,
                tag: (index as u32) << 8,
            };
            match byte(0) % 9 {
                0 | 1 => EngineOp::Create { stream },
                2 => EngineOp::Delete { stream },
                3 => EngineOp::Append { stream, payload },
                4 => EngineOp::Append {
                    stream,
                    payload: PayloadSpec::Crafted,
                },
                5 => EngineOp::Batch {
                    records: (0..1 + u16::from(byte(3) % 4))
                        .map(|k| {
                            let spec = PayloadSpec::Bytes {
                                len_bytes: u32::from(byte(2)) + 13 * u32::from(k),
                                tag: ((index as u32) << 8) | u32::from(k),
                            };
                            ((stream + k) % 4, spec)
                        })
                        .collect(),
                },
                6 => EngineOp::Trim {
                    stream,
                    keep_per_mille: u16::from(byte(2)) * 4,
                },
                7 => EngineOp::Reopen,
                _ => EngineOp::Reclaim,
            }
        })
        .collect();
    (u64::from_le_bytes(seed_bytes), ops)
}

fuzz_target!(|data: &[u8]| {
    let (seed, ops) = decode(data);
    if ops.is_empty() {
        return;
    }
    let budget = EngineBudget {
        exhaustive_max: 8,
        samples: 2,
        recovery_crash_every: 13,
        images_max: 24,
    };
    // A small pool (5 segments) fills quickly: pool-full and reclaim paths get exercised.
    let setup = EngineSetup {
        pool_bytes: 96 * 1024,
        ..EngineSetup::default()
    };
    let run = run_engine_ops(seed, &ops, &setup, &budget);
    if let Some(violation) = run.violation {
        let trace: Vec<String> = ops.iter().map(ToString::to_string).collect();
        panic!("crash oracle violation (seed {seed}): {violation}\nops: {trace:#?}");
    }
});
