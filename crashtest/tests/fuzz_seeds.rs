//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/seed-*`): valid
//! encodings of every structure, real pool images and cold files, and a few broken ones.
//! Ignored by default; regenerate with
//! `cargo test -p pstream-crashtest --test fuzz_seeds -- --ignored`.
#![allow(clippy::unwrap_used, reason = "a test")]

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use pmem_emul::{CrashPoint, MmapPool, PoolOptions, SimPmem};
use pstream_agent::{
    Address, BundleRef, Envelope, Metadata, StreamDescriptor, StreamKind, StreamNo, StreamPolicy,
};
use pstream_crashtest::engine_case::payload_bytes;
use pstream_crashtest::tiering_case::{make_records, small_config};
use pstream_engine::format::record::{self, CrcKey, RecordHeader};
use pstream_engine::format::segment::{SegmentEntry, SegmentHeader, SegmentState};
use pstream_engine::format::stream_slot::{self, SlotState, StreamSlot};
use pstream_engine::format::superblock::Superblock;
use pstream_engine::{Log, LogConfig, OpenOptions};
use pstream_tiering::format::{cold_file_name, decode_trailer, TRAILER_BYTES};
use pstream_tiering::{ColdStore, Compression, SourceSegment, StdIo};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus(target).join(format!("seed-{name}")), bytes).unwrap();
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const POOL_BYTES: usize = 64 * 1024;

fn small_log() -> Log<SimPmem> {
    let config = LogConfig {
        segment_size_bytes: 16 * 1024,
        stream_slot_count: 8,
    };
    Log::create(
        SimPmem::new(POOL_BYTES),
        config,
        OpenOptions { lane_count: 2 },
    )
    .unwrap()
}

fn engine_seeds() {
    let superblock = Superblock {
        pool_nonce: 0x1234_5678_9abc_def0,
        segment_size_bytes: 16 * 1024,
        segment_count: 3,
        stream_slot_count: 8,
        stream_table_offset: 8192,
        segment_table_offset: 12288,
        segments_offset: 16384,
        max_payload_bytes: 16 * 1024 - 96,
        directory_root: 0,
        directory_generation: 0,
    };
    write("superblock", "valid", &superblock.encode());
    write("superblock", "zero", &[0; 200]);
    let mut flipped = superblock.encode();
    flipped[20] ^= 4;
    write("superblock", "flipped", &flipped);

    let header = SegmentHeader {
        segment_index: 2,
        segment_gen: 7,
        pool_nonce: 0x1234,
        segment_size_bytes: 16 * 1024,
    };
    write("segment_header", "valid", &header.encode());
    write("segment_header", "short", &header.encode()[..40]);

    let entry = SegmentEntry {
        update_seq: 3,
        state: SegmentState::Sealed,
        lane: 1,
        segment_gen: 9,
        sealed_len_bytes: 4096,
        record_count: 12,
        cold_id: 0,
    };
    let older = SegmentEntry {
        update_seq: 2,
        state: SegmentState::Open,
        ..entry
    };
    write(
        "segment_entry",
        "pair",
        &cat(&[&older.encode(), &entry.encode()]),
    );
    let mut torn = entry.encode();
    torn[..8].copy_from_slice(&2u64.to_le_bytes());
    write("segment_entry", "torn", &cat(&[&older.encode(), &torn]));
    write("segment_entry", "zero", &[0; 128]);

    let nonce = 0xfeed_u64;
    let key = CrcKey::new(nonce, 5).at(128);
    let live = record::encode(
        &RecordHeader {
            stream_id: 1 | (1 << 32),
            seq: 42,
            payload_len: 100,
            payload_crc: record::payload_crc(&[1; 100]),
            batch_more: false,
        },
        key,
    );
    let prefix = cat(&[
        &nonce.to_le_bytes(),
        &5u64.to_le_bytes(),
        &128u64.to_le_bytes(),
    ]);
    write("record_header", "live", &cat(&[&prefix, &live]));
    let void = record::void_word(&live, key).to_le_bytes();
    write("record_header", "void", &cat(&[&prefix, &void, &live[8..]]));
    write("record_header", "zero", &cat(&[&prefix, &[0; 32]]));
    let more = record::encode(
        &RecordHeader {
            stream_id: 1 | (1 << 32),
            seq: 43,
            payload_len: 7,
            payload_crc: record::payload_crc(&[2; 7]),
            batch_more: true,
        },
        key,
    );
    write("record_header", "batch_more", &cat(&[&prefix, &more]));

    let slot = StreamSlot {
        incarnation: 3,
        state: SlotState::Live,
        first_seq: 17,
        label: b"orders".to_vec(),
    };
    let index = 5u32.to_le_bytes();
    write(
        "stream_slot",
        "live",
        &cat(&[&index, &stream_slot::encode_full(5, &slot)]),
    );
    let deleted = StreamSlot {
        state: SlotState::Deleted,
        ..slot
    };
    write(
        "stream_slot",
        "deleted",
        &cat(&[&index, &stream_slot::encode_full(5, &deleted)]),
    );
    write("stream_slot", "free", &[0; 68]);
}

fn pool_seeds() {
    // open_pool: a fresh pool, one with records, trims and a delete, and crash images.
    let log = small_log();
    write("open_pool", "fresh", &log.pmem().volatile_image());
    let a = log.create_stream(b"a").unwrap();
    let b = log.create_stream(b"b").unwrap();
    for i in 0..20u32 {
        log.append(a, &payload_bytes(40 + i * 30, i)).unwrap();
        if i % 3 == 0 {
            let batch: Vec<Vec<u8>> = (0..3).map(|k| payload_bytes(100, i * 8 + k)).collect();
            let records: Vec<_> = batch.iter().map(|p| (b, p.as_slice())).collect();
            log.append_batch(&records).unwrap();
        }
    }
    log.trim(a, 5).unwrap();
    let c = log.create_stream(b"c").unwrap();
    log.append(c, b"short").unwrap();
    log.delete_stream(c).unwrap();
    log.reclaim();
    write("open_pool", "records", &log.pmem().volatile_image());
    // Crash images: at a fence in the middle of appends (nothing / everything pending).
    let images: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&images);
    log.pmem()
        .set_fence_hook(Some(Box::new(move |point: &CrashPoint<'_>| {
            if sink.lock().len() < 2 {
                point.for_each_image(0, 2, 1, |image| {
                    sink.lock().push(image.to_vec());
                    ControlFlow::Continue(())
                });
            }
        })));
    log.append(a, &payload_bytes(3000, 99)).unwrap();
    log.pmem().set_fence_hook(None);
    for (i, image) in images.lock().iter().enumerate() {
        write("open_pool", &format!("crash-{i}"), image);
    }

    // pool_header: flags byte then a real header page (and a variant sized to its file).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.pool");
    MmapPool::create(&path, POOL_BYTES, PoolOptions::default())
        .unwrap()
        .close()
        .unwrap();
    let file = std::fs::read(&path).unwrap();
    write("pool_header", "page", &cat(&[&[0], &file[..4096]]));
    write("pool_header", "page-sized", &cat(&[&[2], &file[..4096]]));
    write(
        "pool_header",
        "garbled-recrc",
        &cat(&[&[3], &file[..24], &[9; 40]]),
    );
}

fn cold_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let segment_gen = 0x77u64;
    for (name, compression) in [
        ("raw", Compression::None),
        ("zstd", Compression::Zstd { level: 3 }),
    ] {
        let (store, _) =
            ColdStore::open(StdIo::open(dir.path()).unwrap(), small_config(compression)).unwrap();
        let records = make_records(if name == "raw" { 3 } else { 4 }, 12, 2500);
        let source = SourceSegment {
            segment_index: 1,
            segment_gen,
            pool_nonce: 1,
        };
        let input = records.iter().map(|(s, q, p)| (*s, *q, p.as_slice()));
        store.write_segment(&source, input).unwrap();
        drop(store);
        let path = dir.path().join(cold_file_name(segment_gen));
        let file = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        write("cold_file", name, &file);
        let trailer = decode_trailer(&file[file.len() - TRAILER_BYTES..]).unwrap();
        write(
            "cold_trailer_header",
            &format!("trailer-{name}"),
            &cat(&[&[0], &file[file.len() - TRAILER_BYTES..]]),
        );
        write(
            "cold_trailer_header",
            &format!("header-{name}"),
            &cat(&[&[1], &file[..64]]),
        );
        let footer_start = trailer.footer_offset as usize;
        let footer_end = footer_start + trailer.footer_len_bytes as usize;
        write(
            "cold_footer",
            name,
            &cat(&[
                &segment_gen.to_le_bytes(),
                &trailer.footer_offset.to_le_bytes(),
                &file[footer_start..footer_end],
            ]),
        );
        // The first block: header at offset 64, up to the footer at most.
        write(
            "cold_block",
            name,
            &cat(&[
                &segment_gen.to_le_bytes(),
                &0u32.to_le_bytes(),
                &file[64..footer_start],
            ]),
        );
    }
}

fn agent_seeds() {
    for (i, text) in [
        "alice@a.example",
        "app:bob@b.example",
        "x@y",
        "@",
        "a:b:c@d",
        "ünïcode@agent",
    ]
    .iter()
    .enumerate()
    {
        write("agent_address", &i.to_string(), text.as_bytes());
    }
    let owner = Address::parse("alice@a.example").unwrap();
    let recipient = Address::parse("app:bob@b.example").unwrap();
    let bundle = BundleRef::new(&owner, "b1").unwrap();
    let descriptor = StreamDescriptor {
        creator: owner.clone(),
        kind: StreamKind::Continuous,
        policy: StreamPolicy::EPHEMERAL_SHARED,
        label: b"live".to_vec(),
    };
    let envelopes = [
        Envelope::Invite {
            bundle: bundle.clone(),
            recipient: recipient.clone(),
            metadata: Metadata::new().with("title", "seed"),
        },
        Envelope::Response {
            bundle: bundle.clone(),
            recipient,
            accepted: true,
        },
        Envelope::Data {
            bundle: bundle.clone(),
            stream: StreamNo(2),
            descriptor: descriptor.clone(),
            seq: 7,
            payload: b"payload bytes".to_vec(),
        },
        Envelope::Sealed {
            bundle: bundle.clone(),
            stream: StreamNo(2),
            descriptor,
            record_count: 8,
        },
        Envelope::StreamDeleted {
            bundle,
            stream: StreamNo(3),
        },
    ];
    for (i, envelope) in envelopes.iter().enumerate() {
        write("agent_envelope", &i.to_string(), &envelope.encode());
    }
    agent_snapshot_seeds(&envelopes);
}

/// Snapshot bodies: an empty store, and one with users, a client, a local bundle with a
/// stream and recipients, and a mirror that saw data and a deletion.
fn agent_snapshot_seeds(envelopes: &[Envelope]) {
    let config = pstream_agent::AgentConfig {
        log: LogConfig {
            segment_size_bytes: 16 * 1024,
            stream_slot_count: 64,
        },
        open: OpenOptions { lane_count: 1 },
        snapshot_every_changes: 1 << 20,
    };
    let agent = pstream_agent::Agent::create(SimPmem::new(1 << 20), "b.example", config).unwrap();
    write("agent_snapshot", "0", &agent.snapshot_body());
    agent.add_user("bob").unwrap();
    agent.add_user("carol").unwrap();
    let bob = pstream_agent::Caller::user("bob").unwrap();
    agent.register_client(&bob, "app").unwrap();
    let local = agent
        .create_bundle(
            &bob,
            "notes",
            Metadata::new().with("k", "v"),
            Default::default(),
        )
        .unwrap();
    let stream = agent
        .create_stream(&bob, &local, pstream_agent::StreamSpec::continuous("n"))
        .unwrap();
    agent.append(&bob, &local, stream, b"note").unwrap();
    agent
        .set_recipients(&bob, &local, &[agent.address_of("carol").unwrap()])
        .unwrap();
    // The sample envelopes are for bob@b.example's agent from a.example: invitation, data,
    // seal, deletion.
    for envelope in envelopes {
        let _ = agent.receive("a.example", std::slice::from_ref(envelope));
    }
    let deleted = Envelope::StreamDeleted {
        bundle: envelopes[0].bundle().clone(),
        stream: StreamNo(2),
    };
    agent.receive("a.example", &[deleted]).unwrap();
    write("agent_snapshot", "1", &agent.snapshot_body());
}

fn ops_seeds() {
    // engine_ops: seed, then 4-byte operations (see the target for the encoding).
    let engine: [&[u8]; 3] = [
        &[
            1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 3, 0, 40, 2, 5, 1, 20, 3, 6, 0, 100, 0,
        ],
        &[
            2, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 3, 2, 200, 20, 4, 2, 0, 0, 7, 0, 0, 0, 3, 2, 9, 1,
            2, 2, 0, 0, 0, 2, 0, 0, 3, 2, 5, 0,
        ],
        &[
            3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 5, 0, 90, 3, 5, 1, 60, 2, 6, 0, 250, 0,
            8, 0, 0, 0, 3, 1, 255, 23, 7, 0, 0, 0,
        ],
    ];
    for (i, bytes) in engine.iter().enumerate() {
        write("engine_ops", &i.to_string(), bytes);
    }
    // shim_ops: seed, then 6-byte operations.
    let shim: [&[u8]; 3] = [
        &[
            1, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 7, 0, 0, 0, 50, 0, 12, 0, 0, 0, 0, 0,
        ],
        &[
            2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 1, 1, 1, 2, 1, 3, 1, 0, 0, 5, 1, 4, 0, 1, 0, 7, 1, 4,
            0, 30, 0, 12, 2, 4, 0, 0, 0, 13, 2, 4, 0, 1, 0,
        ],
        &[
            3, 0, 0, 0, 0, 0, 0, 0, 6, 3, 0, 0, 9, 0, 7, 4, 0, 0, 9, 0, 15, 5, 0, 0, 1, 0, 16, 0,
            0, 0, 0, 0, 12, 3, 0, 0, 0, 0,
        ],
    ];
    for (i, bytes) in shim.iter().enumerate() {
        write("shim_ops", &i.to_string(), bytes);
    }
}

#[test]
#[ignore = "writes the fuzz seed corpora; run on purpose"]
fn write_fuzz_seeds() {
    engine_seeds();
    pool_seeds();
    cold_seeds();
    agent_seeds();
    ops_seeds();
}
