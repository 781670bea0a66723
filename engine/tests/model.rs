//! proptest model test: random sequences of create / append / batch / read / trim / delete /
//! reopen against an in-memory model. Batches are all or nothing: one refused (pool full,
//! too large for one batch) leaves every stream as it was.

use pstream_crashtest::kit as common;

use std::collections::BTreeMap;

use pmem_emul::SimPmem;
use proptest::prelude::*;
use pstream_engine::{Log, StreamId};

#[derive(Debug, Clone)]
enum Op {
    Create,
    Append { stream: usize, len: usize },
    Batch { picks: Vec<(usize, usize)> },
    Read { stream: usize, seq: u64 },
    Trim { stream: usize, keep: u64 },
    Delete { stream: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Create),
        6 => (0..4usize, 0..700usize).prop_map(|(stream, len)| Op::Append { stream, len }),
        2 => prop::collection::vec((0..4usize, 0..300usize), 1..6).prop_map(|picks| Op::Batch { picks }),
        // Large records: batches that do not fit their segment's rest, or any batch at all.
        1 => prop::collection::vec((0..4usize, 3000..7000usize), 1..5).prop_map(|picks| Op::Batch { picks }),
        3 => (0..4usize, 0..40u64).prop_map(|(stream, seq)| Op::Read { stream, seq }),
        1 => (0..4usize, 0..10u64).prop_map(|(stream, keep)| Op::Trim { stream, keep }),
        1 => (0..4usize).prop_map(|stream| Op::Delete { stream }),
        1 => Just(Op::Reopen),
    ]
}

fn bytes(tag: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (tag * 13 + i) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut log = Log::create(SimPmem::new(512 * 1024), common::small_config(), common::options(2)).unwrap();
        let mut model: BTreeMap<StreamId, (u64, Vec<Vec<u8>>)> = BTreeMap::new();
        let mut ids: Vec<StreamId> = Vec::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Create => {
                    if let Ok(id) = log.create_stream(format!("m{n}").as_bytes()) {
                        ids.push(id);
                        model.insert(id, (0, Vec::new()));
                    }
                }
                Op::Append { stream, len } if !ids.is_empty() => {
                    let id = ids[stream % ids.len()];
                    let payload = bytes(n, len);
                    match log.append(id, &payload) {
                        Ok(seq) => {
                            let (first, recs) = model.get_mut(&id).unwrap();
                            prop_assert_eq!(seq, *first + recs.len() as u64);
                            recs.push(payload);
                        }
                        Err(pstream_engine::EngineError::PoolFull { .. }) => {}
                        Err(e) => prop_assert!(false, "append: {}", e),
                    }
                }
                Op::Batch { picks } if !ids.is_empty() => {
                    let records: Vec<(StreamId, Vec<u8>)> =
                        picks.iter().enumerate().map(|(k, (s, len))| (ids[s % ids.len()], bytes(n + k, *len))).collect();
                    let borrowed: Vec<(StreamId, &[u8])> = records.iter().map(|(s, p)| (*s, p.as_slice())).collect();
                    match log.append_batch(&borrowed) {
                        Ok(seqs) => {
                            for ((id, payload), seq) in records.into_iter().zip(seqs) {
                                let (first, recs) = model.get_mut(&id).unwrap();
                                prop_assert_eq!(seq, *first + recs.len() as u64);
                                recs.push(payload);
                            }
                        }
                        Err(pstream_engine::EngineError::PoolFull { .. }
                            | pstream_engine::EngineError::BatchTooLarge { .. }) => {
                            // Refused whole: nothing of it was written.
                            for (id, (first, recs)) in model.iter() {
                                let next = first + recs.len() as u64;
                                prop_assert_eq!(log.bounds(*id).unwrap(), (*first, next));
                            }
                        }
                        Err(e) => prop_assert!(false, "batch: {}", e),
                    }
                }
                Op::Read { stream, seq } if !ids.is_empty() => {
                    let id = ids[stream % ids.len()];
                    let (first, recs) = &model[&id];
                    match log.read(id, seq) {
                        Ok(r) => {
                            let expected = &recs[(seq - first) as usize];
                            prop_assert_eq!(r.payload(), &expected[..]);
                        }
                        Err(_) => prop_assert!(seq < *first || seq >= first + recs.len() as u64),
                    }
                }
                Op::Trim { stream, keep } if !ids.is_empty() => {
                    let id = ids[stream % ids.len()];
                    let (first, recs) = model.get_mut(&id).unwrap();
                    let to = *first + (recs.len() as u64).saturating_sub(keep);
                    log.trim(id, to).unwrap();
                    recs.drain(..(to - *first) as usize);
                    *first = to;
                }
                Op::Delete { stream } if !ids.is_empty() => {
                    let id = ids.remove(stream % ids.len());
                    log.delete_stream(id).unwrap();
                    model.remove(&id);
                }
                Op::Reopen => {
                    let pmem = log.close();
                    log = Log::open(pmem, common::options(2)).unwrap().0;
                }
                _ => {}
            }
        }
        let pmem = log.close();
        let (log, _) = Log::open(pmem, common::options(1)).unwrap();
        prop_assert_eq!(log.list_streams().len(), model.len());
        for (id, (first, recs)) in &model {
            prop_assert_eq!(log.bounds(*id).unwrap(), (*first, first + recs.len() as u64));
            for (k, payload) in recs.iter().enumerate() {
                let record = log.read(*id, first + k as u64).unwrap();
                prop_assert_eq!(record.payload(), &payload[..]);
            }
        }
        prop_assert!(pstream_engine::verify(log.pmem()).unwrap().is_clean());
    }
}
