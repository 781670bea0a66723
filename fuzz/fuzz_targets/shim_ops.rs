//! Agent shim operation sequences against the harness's model: the documented permission
//! rules (unknown users and clients refused as such, clients confined to granted bundles,
//! only creators write, unconcerned users read nothing, taken ephemeral data never served
//! again) and the differential crash oracle (every crash image recovers to the state before
//! or after the operation in flight; refused calls, reads and reopens change nothing).
//! Input: a seed (8 bytes) and 6-byte operations; three users, a client, six bundles, and
//! two peer agents whose envelopes (genuine or hostile) and bundles the operations reach.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_crashtest::shim_case::{
    generate_shim, run_shim_ops, PeerEnvelope, ShimBudget, ShimOp, Target,
};

const OPS_MAX: usize = 40;

fn decode(data: &[u8]) -> (u64, Vec<ShimOp>) {
    let mut seed_bytes = [0u8; 8];
    for (i, byte) in seed_bytes.iter_mut().enumerate() {
        *byte = data.get(i).copied().unwrap_or(0);
    }
    let seed = u64::from_le_bytes(seed_bytes);
    // Users, the client, three bundles and a grant first: a productive start.
    let mut ops = generate_shim(seed, 0);
    for (index, chunk) in data
        .get(8..)
        .unwrap_or(&[])
        .chunks(6)
        .take(OPS_MAX)
        .enumerate()
    {
        let byte = |i: usize| chunk.get(i).copied().unwrap_or(0);
        let at = Target {
            caller: byte(1) % 6,
            owner: byte(2) % 3,
            bundle: (byte(2) / 3) % 2,
        };
        let stream = byte(3) % 4;
        let tag = (index as u32) << 8;
        let op = match byte(0) % 20 {
            0 => ShimOp::CreateBundle { at },
            1 => ShimOp::SetRecipients {
                at,
                users: [byte(3) % 3, byte(4) % 3][..usize::from(byte(5) % 3)].to_vec(),
            },
            2 => ShimOp::Respond {
                at,
                accept: byte(3) % 4 != 0,
            },
            3 => ShimOp::Grant { at },
            4 => ShimOp::Revoke { at },
            5 => ShimOp::CreateStream {
                at,
                policy: (byte(4) % 4 < 3).then_some(byte(4) % 4),
            },
            6 => ShimOp::PutDiscrete {
                at,
                len_bytes: u32::from(byte(4)),
                tag,
            },
            7 | 8 => ShimOp::Append {
                at,
                stream,
                len_bytes: u32::from(byte(4)),
                tag,
            },
            9 => ShimOp::AppendBatch {
                at,
                stream,
                count: 1 + byte(4) % 3,
                tag,
            },
            10 => ShimOp::Seal { at, stream },
            11 => ShimOp::DeleteStream { at, stream },
            12 => ShimOp::Take { at },
            13 => ShimOp::Ack {
                at,
                stream,
                next_seq: byte(4) % 6,
            },
            14 => ShimOp::Fetch { at },
            15 => ShimOp::Read {
                at,
                stream,
                seq: byte(4) % 5,
            },
            17 => ShimOp::Receive {
                peer: byte(1) % 2,
                envelopes: vec![PeerEnvelope {
                    kind: byte(2) % 7,
                    owner: byte(3) % 3,
                    recipient: byte(4) % 5,
                    creator: byte(5) % 3,
                    stream: byte(4) % 3,
                    seq: byte(5) % 6,
                }],
            },
            18 => ShimOp::MirrorRespond {
                user: byte(1) % 3,
                peer: byte(2) % 2,
                accept: byte(3) % 4 != 0,
            },
            19 => ShimOp::MirrorTake {
                user: byte(1) % 3,
                peer: byte(2) % 2,
            },
            _ => ShimOp::Reopen,
        };
        ops.push(op);
    }
    (seed, ops)
}

fuzz_target!(|data: &[u8]| {
    let (seed, ops) = decode(data);
    let budget = ShimBudget {
        fence_stride: 3,
        exhaustive_max: 4,
        samples: 1,
        images_max: 12,
        recovery_crash_every: 7,
    };
    match run_shim_ops(seed, &ops, &budget) {
        Ok(run) => {
            if let Some(violation) = run.violation {
                let trace: Vec<String> = ops.iter().map(ToString::to_string).collect();
                panic!("shim oracle violation (seed {seed}): {violation}\nops: {trace:#?}");
            }
        }
        Err(error) => panic!("the shim case could not run: {error}"),
    }
});
