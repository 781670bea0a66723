//! Two real OS threads appending concurrently (to their own streams and a shared one, single
//! and batched), with seeded sampled crash images at every fence. The operations are fixed
//! by the seed; the interleaving is the scheduler's, so only the operations enter the trace
//! hash, and a replay reruns the same operations under a new interleaving.

use std::sync::Arc;

use parking_lot::Mutex;
use pmem_emul::{SimPmem, SplitMix64};
use pstream_engine::{Log, LogConfig, OpenOptions, StreamId};

use crate::engine_case::{install_hook, payload_bytes, EngineBudget, EngineRun, HookState, NoCold};
use crate::hash::TraceHash;
use crate::oracle::{Pending, StreamModel};
use crate::report::Violation;

const THREADS: u64 = 2;

/// One thread's operations: each a list of (stream index, payload length) records.
fn thread_ops(seed: u64, thread: u64, op_count: usize) -> Vec<Vec<(usize, u32)>> {
    let mut rng = SplitMix64::new(seed.wrapping_mul(1000).wrapping_add(thread));
    (0..op_count)
        .map(|_| {
            let count = 1 + rng.below(3) as usize;
            (0..count)
                .map(|_| {
                    let stream = if rng.below(2) == 0 {
                        thread as usize
                    } else {
                        2
                    };
                    (stream, 8 + rng.below(200) as u32)
                })
                .collect()
        })
        .collect()
}

fn tag(thread: u64, op: usize, record: usize) -> u32 {
    ((thread as u32) << 24) | ((op as u32) << 8) | record as u32
}

/// Runs the two-thread workload of `seed` with `ops_per_thread` operations per thread.
pub fn run_threads(seed: u64, ops_per_thread: usize, budget: &EngineBudget) -> EngineRun {
    let lane_count = 2;
    let config = LogConfig {
        segment_size_bytes: 16 * 1024,
        stream_slot_count: 16,
    };
    let failed = |detail: String| EngineRun {
        tally: Default::default(),
        trace_hash: 0,
        violation: Some(Violation {
            crash_point: None,
            op_index: None,
            detail,
        }),
    };
    let log = match Log::create(SimPmem::new(512 * 1024), config, OpenOptions { lane_count }) {
        Ok(log) => Arc::new(log),
        Err(error) => return failed(format!("cannot create the log: {error}")),
    };
    let shared = Arc::new(Mutex::new(HookState::new(false)));
    let mut streams = Vec::new();
    for index in 0..3 {
        let label = format!("t{index}").into_bytes();
        match log.create_stream(&label) {
            Ok(id) => {
                shared
                    .lock()
                    .model
                    .streams
                    .insert(id, StreamModel::new(label));
                streams.push(id);
            }
            Err(error) => return failed(format!("create_stream failed: {error}")),
        }
    }
    let mut trace = TraceHash::new();
    let plans: Vec<Vec<Vec<(usize, u32)>>> = (0..THREADS)
        .map(|t| thread_ops(seed, t, ops_per_thread))
        .collect();
    for plan in &plans {
        for op in plan {
            for (stream, len_bytes) in op {
                trace.u64(*stream as u64);
                trace.u64(u64::from(*len_bytes));
            }
        }
    }
    install_hook(
        log.pmem(),
        Arc::clone(&shared),
        *budget,
        lane_count,
        seed,
        Arc::new(NoCold),
    );
    std::thread::scope(|scope| {
        for (thread, plan) in plans.iter().enumerate() {
            let (log, shared, streams) = (&log, &shared, &streams);
            scope.spawn(move || run_thread(thread as u64, plan, log, shared, streams));
        }
    });
    log.pmem().set_fence_hook(None);
    let mut state = shared.lock();
    state.tally.ops = THREADS * ops_per_thread as u64;
    EngineRun {
        tally: state.tally,
        trace_hash: trace.finish(),
        violation: state.violation.take(),
    }
}

fn run_thread(
    thread: u64,
    plan: &[Vec<(usize, u32)>],
    log: &Log<SimPmem>,
    shared: &Mutex<HookState>,
    streams: &[StreamId],
) {
    for (op_index, op) in plan.iter().enumerate() {
        if shared.lock().violation.is_some() {
            return;
        }
        let records: Vec<(StreamId, Vec<u8>)> = op
            .iter()
            .enumerate()
            .map(|(k, (stream, len_bytes))| {
                (
                    streams[*stream],
                    payload_bytes(*len_bytes, tag(thread, op_index, k)),
                )
            })
            .collect();
        shared.lock().model.pending.push(Pending::Append {
            records: records.clone(),
        });
        let borrowed: Vec<(StreamId, &[u8])> =
            records.iter().map(|(s, p)| (*s, p.as_slice())).collect();
        let result = if borrowed.len() == 1 {
            log.append(borrowed[0].0, borrowed[0].1)
                .map(|seq| vec![seq])
        } else {
            log.append_batch(&borrowed)
        };
        let mut state = shared.lock();
        let seqs = match result {
            Ok(seqs) => seqs,
            Err(error) => {
                state.violation.get_or_insert(Violation {
                    crash_point: None,
                    op_index: Some(op_index),
                    detail: format!("thread {thread}: append failed: {error}"),
                });
                return;
            }
        };
        // Acknowledged now: move from in flight to the stream, at its seq.
        let position = state
            .model
            .pending
            .iter()
            .position(|p| matches!(p, Pending::Append { records: r } if *r == records));
        if let Some(position) = position {
            state.model.pending.remove(position);
        }
        for ((stream, bytes), seq) in records.into_iter().zip(seqs) {
            let acked = match state.model.streams.get_mut(&stream) {
                Some(model) => model.ack(seq, bytes),
                None => Err(format!("unmodelled stream {stream}")),
            };
            if let Err(detail) = acked {
                state.violation.get_or_insert(Violation {
                    crash_point: None,
                    op_index: Some(op_index),
                    detail: format!("thread {thread}: {detail}"),
                });
                return;
            }
        }
    }
}
