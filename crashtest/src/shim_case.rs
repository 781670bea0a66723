//! Agent shim workloads under crash checking: seeded sequences of shim operations (users,
//! clients, grants, bundles, recipients and their answers, streams, single and batched
//! appends, whole discrete submissions, seals, deletes, ephemeral takes, acknowledgements,
//! fetches, reads, reopens) by callers with and without the right to act.
//!
//! The oracle is differential. Before and after every operation the harness *observes* the
//! live agent through its read-only API (bundles, recipients and answers, streams, bounds,
//! cursors, and what every user may read of every record). A crash at any fence during the
//! operation must recover to exactly the observation before or exactly the one after it
//! (acknowledged means durable, in-flight means all or nothing: oracle rules 1, 2 and 4),
//! and recovery interrupted by a crash must recover to one of those too (rule 5). A refused
//! call, a read and a reopen change no observation at all.
//!
//! Permission checks on top (oracle of the documented rules, independent of the live
//! agent): unknown users and unregistered clients are refused as such, a client never acts
//! on a bundle its user never granted it, only a stream's creator writes it, a user the
//! bundle does not concern reads nothing (answered as if the bundle or stream did not
//! exist), and an ephemeral record a user took is never served to that user again (the
//! highest cursor ever observed is kept by the harness; checked after every operation,
//! reopens included, on bundles owned here and peers' alike).
//!
//! The adversary: two peer agents send batches of envelopes, genuine or hostile (forged
//! creators, recipients and answers, other agents' bundles, gaps, duplicates, seals out
//! of place, deletions, and earlier batches sent again), and local users answer and take
//! on what peers share. A refused batch changes no observation; an accepted one changes
//! nothing owned here and no other peer's bundle; no bundle holds a stream created by a
//! user of another agent than its owner's; crash images during an accepted batch recover
//! to the state before it, after it, or after one of its prefixes (each envelope is
//! durable on its own and redelivery completes the batch), never to anything else.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use parking_lot::Mutex;
use pmem_emul::{CrashPoint, Pmem, SimPmem, SplitMix64};
use pstream_agent::{
    Address, Agent, AgentConfig, AgentError, BundleRef, Caller, Creators, Envelope, Metadata,
    PageLimit, Position, RecipientStatus, Retention, StreamDefaults, StreamDescriptor, StreamKind,
    StreamNo, StreamPolicy, StreamSpec,
};
use pstream_engine::{ColdTier, LogConfig, OpenOptions};

use crate::engine_case::payload_bytes;
use crate::error::{CrashtestError, Result};
use crate::hash::{hash_bytes, TraceHash};
use crate::report::{Tally, Violation};

/// Local users; the callers are these three, then `app:alice` (registered), `ghost:bob`
/// (never registered) and `dave` (no such user).
pub const USERS: [&str; 3] = ["alice", "bob", "carol"];
const CALLER_COUNT: u8 = 6;
const APP_CALLER: u8 = 3;
const GHOST_CALLER: u8 = 4;
const UNKNOWN_CALLER: u8 = 5;
const BUNDLE_IDS: [&str; 2] = ["b0", "b1"];
const POOL_BYTES: usize = 1 << 20;
const PAGE: PageLimit = PageLimit {
    records_max: 4,
    bytes_max: 1 << 20,
};

/// The agent configuration of shim cases.
pub fn shim_config() -> AgentConfig {
    AgentConfig {
        log: LogConfig {
            segment_size_bytes: 16 * 1024,
            stream_slot_count: 256,
        },
        open: OpenOptions { lane_count: 2 },
        snapshot_every_changes: 16,
    }
}

/// Bundle `b0`: owner-only, persistent and shared. Bundle `b1`: recipients may create
/// streams, ephemeral and shared (the live-stream case).
fn defaults(bundle: u8) -> StreamDefaults {
    if bundle == 0 {
        StreamDefaults::default()
    } else {
        StreamDefaults {
            creators: Creators::Recipients,
            policy: StreamPolicy::EPHEMERAL_SHARED,
            write_once: false,
        }
    }
}

const POLICIES: [StreamPolicy; 3] = [
    StreamPolicy::PERSISTENT_SHARED,
    StreamPolicy::EPHEMERAL_SHARED,
    StreamPolicy::INTERNALLY_PERSISTENT_EXTERNALLY_EPHEMERAL,
];

/// Who acts on which bundle (`owner`'s bundle `BUNDLE_IDS[bundle]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub caller: u8,
    pub owner: u8,
    pub bundle: u8,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on {}/{}",
            caller_name(self.caller),
            USERS[usize::from(self.owner) % 3],
            BUNDLE_IDS[usize::from(self.bundle) % 2]
        )
    }
}

fn caller_name(caller: u8) -> &'static str {
    ["alice", "bob", "carol", "app:alice", "ghost:bob", "dave"][usize::from(caller % 6)]
}

/// One shim operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimOp {
    AddUser {
        user: u8,
    },
    RegisterClient {
        user: u8,
    },
    CreateBundle {
        at: Target,
    },
    SetRecipients {
        at: Target,
        users: Vec<u8>,
    },
    Respond {
        at: Target,
        accept: bool,
    },
    Grant {
        at: Target,
    },
    Revoke {
        at: Target,
    },
    CreateStream {
        at: Target,
        policy: Option<u8>,
    },
    PutDiscrete {
        at: Target,
        len_bytes: u32,
        tag: u32,
    },
    Append {
        at: Target,
        stream: u8,
        len_bytes: u32,
        tag: u32,
    },
    AppendBatch {
        at: Target,
        stream: u8,
        count: u8,
        tag: u32,
    },
    Seal {
        at: Target,
        stream: u8,
    },
    DeleteStream {
        at: Target,
        stream: u8,
    },
    Take {
        at: Target,
    },
    Ack {
        at: Target,
        stream: u8,
        next_seq: u8,
    },
    Fetch {
        at: Target,
    },
    Read {
        at: Target,
        stream: u8,
        seq: u8,
    },
    Reopen,
    /// A batch from the peer agent `PEERS[peer % 2]`, genuine or hostile (see
    /// [`PeerEnvelope`]); replays are the same operation again.
    Receive {
        peer: u8,
        envelopes: Vec<PeerEnvelope>,
    },
    /// A local user answers the invitation to `PEERS[peer % 2]`'s bundle.
    MirrorRespond {
        user: u8,
        peer: u8,
        accept: bool,
    },
    /// A local user takes from `PEERS[peer % 2]`'s bundle.
    MirrorTake {
        user: u8,
        peer: u8,
    },
}

impl fmt::Display for ShimOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShimOp::AddUser { user } => write!(f, "add_user {}", USERS[usize::from(*user) % 3]),
            ShimOp::RegisterClient { user } => {
                write!(
                    f,
                    "register_client app for {}",
                    USERS[usize::from(*user) % 3]
                )
            }
            ShimOp::CreateBundle { at } => write!(f, "create_bundle: {at}"),
            ShimOp::SetRecipients { at, users } => {
                let names: Vec<&str> = users.iter().map(|u| USERS[usize::from(*u) % 3]).collect();
                write!(f, "set_recipients {names:?}: {at}")
            }
            ShimOp::Respond { at, accept } => write!(f, "respond accept={accept}: {at}"),
            ShimOp::Grant { at } => write!(f, "grant app: {at}"),
            ShimOp::Revoke { at } => write!(f, "revoke app: {at}"),
            ShimOp::CreateStream { at, policy } => write!(f, "create_stream {policy:?}: {at}"),
            ShimOp::PutDiscrete { at, len_bytes, tag } => {
                write!(f, "put_discrete <{len_bytes} B #{tag:x}>: {at}")
            }
            ShimOp::Append {
                at,
                stream,
                len_bytes,
                tag,
            } => write!(f, "append #{stream} <{len_bytes} B #{tag:x}>: {at}"),
            ShimOp::AppendBatch {
                at,
                stream,
                count,
                tag,
            } => write!(f, "append_batch #{stream} x{count} #{tag:x}: {at}"),
            ShimOp::Seal { at, stream } => write!(f, "seal #{stream}: {at}"),
            ShimOp::DeleteStream { at, stream } => write!(f, "delete_stream #{stream}: {at}"),
            ShimOp::Take { at } => write!(f, "take: {at}"),
            ShimOp::Ack {
                at,
                stream,
                next_seq,
            } => write!(f, "ack #{stream} to {next_seq}: {at}"),
            ShimOp::Fetch { at } => write!(f, "fetch: {at}"),
            ShimOp::Read { at, stream, seq } => write!(f, "read #{stream}/{seq}: {at}"),
            ShimOp::Reopen => write!(f, "reopen"),
            ShimOp::Receive { peer, envelopes } => {
                write!(f, "receive from {}:", PEERS[usize::from(*peer % 2)])?;
                for envelope in envelopes {
                    write!(f, " {envelope}")?;
                }
                Ok(())
            }
            ShimOp::MirrorRespond { user, peer, accept } => write!(
                f,
                "respond accept={accept}: {} on {}'s bundle",
                USERS[usize::from(*user % 3)],
                PEERS[usize::from(*peer % 2)]
            ),
            ShimOp::MirrorTake { user, peer } => write!(
                f,
                "take: {} on {}'s bundle",
                USERS[usize::from(*user % 3)],
                PEERS[usize::from(*peer % 2)]
            ),
        }
    }
}

impl ShimOp {
    fn target(&self) -> Option<Target> {
        match self {
            ShimOp::CreateBundle { at }
            | ShimOp::SetRecipients { at, .. }
            | ShimOp::Respond { at, .. }
            | ShimOp::Grant { at }
            | ShimOp::Revoke { at }
            | ShimOp::CreateStream { at, .. }
            | ShimOp::PutDiscrete { at, .. }
            | ShimOp::Append { at, .. }
            | ShimOp::AppendBatch { at, .. }
            | ShimOp::Seal { at, .. }
            | ShimOp::DeleteStream { at, .. }
            | ShimOp::Take { at }
            | ShimOp::Ack { at, .. }
            | ShimOp::Fetch { at }
            | ShimOp::Read { at, .. } => Some(*at),
            ShimOp::AddUser { .. }
            | ShimOp::RegisterClient { .. }
            | ShimOp::Reopen
            | ShimOp::Receive { .. }
            | ShimOp::MirrorRespond { .. }
            | ShimOp::MirrorTake { .. } => None,
        }
    }

    /// For an operation of the adversary: the peer whose bundle it may change.
    fn peer(&self) -> Option<u8> {
        match self {
            ShimOp::Receive { peer, .. }
            | ShimOp::MirrorRespond { peer, .. }
            | ShimOp::MirrorTake { peer, .. } => Some(*peer % 2),
            _ => None,
        }
    }

    /// Operations that never change what an observation sees.
    fn is_read_only(&self) -> bool {
        matches!(
            self,
            ShimOp::Fetch { .. } | ShimOp::Read { .. } | ShimOp::Reopen
        )
    }
}

/// Recipients (user, accepted) and streams (creator, sealed) of one bundle.
type SketchBundle = (Vec<(u8, bool)>, Vec<(u8, bool)>);

/// What the generator believes exists, to aim most operations at valid targets.
#[derive(Debug, Default)]
struct Sketch {
    bundles: BTreeMap<(u8, u8), SketchBundle>,
}

impl Sketch {
    fn pick_bundle(&self, rng: &mut SplitMix64) -> Option<(u8, u8)> {
        let keys: Vec<(u8, u8)> = self.bundles.keys().copied().collect();
        (!keys.is_empty()).then(|| keys[rng.below(keys.len() as u64) as usize])
    }
}

/// A seeded shim workload: users, `app:alice` and a few bundles first, then `op_count`
/// operations, four in five aimed at valid targets (the generator's sketch of the state),
/// the rest random, by any caller (clients without grants and strangers included).
pub fn generate_shim(seed: u64, op_count: usize) -> Vec<ShimOp> {
    let mut rng = SplitMix64::new(seed ^ 0x5_4141);
    let mut sketch = Sketch::default();
    let at = |caller: u8, owner: u8, bundle: u8| Target {
        caller,
        owner,
        bundle,
    };
    let mut ops = vec![
        ShimOp::AddUser { user: 0 },
        ShimOp::AddUser { user: 1 },
        ShimOp::AddUser { user: 2 },
        ShimOp::RegisterClient { user: 0 },
    ];
    for key in [(0u8, 0u8), (0, 1), (1, 1)] {
        ops.push(ShimOp::CreateBundle {
            at: at(key.0, key.0, key.1),
        });
        sketch.bundles.insert(key, (Vec::new(), Vec::new()));
    }
    ops.push(ShimOp::Grant { at: at(0, 0, 0) });
    if op_count == 0 {
        return ops;
    }
    // Peer p shares its bundle with alice and bob; alice accepts.
    let invite = |recipient| PeerEnvelope {
        kind: 0,
        owner: 0,
        recipient,
        creator: 0,
        stream: 0,
        seq: 0,
    };
    ops.push(ShimOp::Receive {
        peer: 0,
        envelopes: vec![invite(0), invite(1)],
    });
    ops.push(ShimOp::MirrorRespond {
        user: 0,
        peer: 0,
        accept: true,
    });
    let mut next_seqs = [0u8; 3];
    let mut batches: Vec<ShimOp> = Vec::new();
    for index in 0..op_count {
        let tag = (index as u32) << 8;
        let op = if rng.below(6) == 0 {
            adversary_op(&mut rng, &mut next_seqs, &mut batches)
        } else {
            match sketch.pick_bundle(&mut rng) {
                Some(key) if rng.below(5) != 0 => valid_op(&mut rng, &mut sketch, key, tag),
                _ => random_op(&mut rng, tag),
            }
        };
        ops.push(op);
    }
    ops
}

/// Kinds of valid operations, with their weights.
const VALID_WEIGHTS: [(u8, u64); 12] = [
    (0, 8),  // set recipients
    (1, 10), // respond
    (2, 10), // create stream
    (3, 4),  // put discrete
    (4, 28), // append or batch
    (5, 2),  // seal
    (6, 1),  // delete stream
    (7, 13), // take
    (8, 8),  // ack
    (9, 5),  // fetch
    (10, 7), // read
    (11, 2), // reopen
];

/// An operation the sketch says should succeed on bundle `key` (mostly).
fn valid_op(rng: &mut SplitMix64, sketch: &mut Sketch, key: (u8, u8), tag: u32) -> ShimOp {
    let (owner, bundle) = key;
    let Some((recipients, streams)) = sketch.bundles.get_mut(&key) else {
        return ShimOp::Reopen;
    };
    let mut readers: Vec<u8> = recipients.iter().filter(|r| r.1).map(|r| r.0).collect();
    readers.push(owner);
    let reader = readers[rng.below(readers.len() as u64) as usize];
    let open_streams: Vec<usize> = (0..streams.len()).filter(|&no| !streams[no].1).collect();
    let available = |kind: u8| match kind {
        1 => !recipients.is_empty(),
        4 | 5 => !open_streams.is_empty(),
        6 | 8 => !streams.is_empty(),
        _ => true,
    };
    let choices: Vec<(u8, u64)> = VALID_WEIGHTS
        .iter()
        .copied()
        .filter(|(kind, _)| available(*kind))
        .collect();
    let total: u64 = choices.iter().map(|(_, weight)| weight).sum();
    let mut roll = rng.below(total.max(1));
    let mut kind = 11;
    for (candidate, weight) in choices {
        if roll < weight {
            kind = candidate;
            break;
        }
        roll -= weight;
    }
    let by = |caller: u8| Target {
        caller,
        owner,
        bundle,
    };
    match kind {
        0 => {
            let others: Vec<u8> = (0..3).filter(|u| *u != owner).collect();
            let first = rng.below(2) as usize;
            let count = 1 + rng.below(2) as usize;
            let users: Vec<u8> = others
                .iter()
                .cycle()
                .skip(first)
                .take(count)
                .copied()
                .collect();
            recipients.retain(|r| users.contains(&r.0));
            for user in &users {
                if !recipients.iter().any(|r| r.0 == *user) {
                    recipients.push((*user, false));
                }
            }
            ShimOp::SetRecipients {
                at: by(owner),
                users,
            }
        }
        1 => {
            let slot = rng.below(recipients.len() as u64) as usize;
            let accept = rng.below(5) != 0;
            recipients[slot].1 = accept;
            ShimOp::Respond {
                at: by(recipients[slot].0),
                accept,
            }
        }
        2 => {
            // Owners create; in b1, so may accepted recipients.
            let creator = if bundle == 1 { reader } else { owner };
            streams.push((creator, false));
            let policy = (creator == owner && rng.below(2) == 0).then(|| rng.below(3) as u8);
            ShimOp::CreateStream {
                at: by(creator),
                policy,
            }
        }
        3 => {
            streams.push((reader, true));
            ShimOp::PutDiscrete {
                at: by(reader),
                len_bytes: rng.below(300) as u32,
                tag,
            }
        }
        4 | 5 => {
            let no = open_streams[rng.below(open_streams.len() as u64) as usize];
            let caller = streams[no].0;
            if kind == 5 {
                streams[no].1 = true;
                ShimOp::Seal {
                    at: by(caller),
                    stream: no as u8,
                }
            } else if rng.below(4) == 0 {
                ShimOp::AppendBatch {
                    at: by(caller),
                    stream: no as u8,
                    count: 1 + rng.below(3) as u8,
                    tag,
                }
            } else {
                ShimOp::Append {
                    at: by(caller),
                    stream: no as u8,
                    len_bytes: rng.below(200) as u32,
                    tag,
                }
            }
        }
        6 => ShimOp::DeleteStream {
            at: by(owner),
            stream: rng.below(streams.len() as u64) as u8,
        },
        7 => ShimOp::Take {
            at: by(if rng.below(8) == 0 {
                APP_CALLER
            } else {
                reader
            }),
        },
        8 => ShimOp::Ack {
            at: by(reader),
            stream: rng.below(streams.len() as u64) as u8,
            next_seq: rng.below(6) as u8,
        },
        9 => ShimOp::Fetch { at: by(reader) },
        10 => ShimOp::Read {
            at: by(rng.below(3) as u8),
            stream: rng.below(streams.len().max(1) as u64) as u8,
            seq: rng.below(5) as u8,
        },
        _ => ShimOp::Reopen,
    }
}

/// A peer's batch (new, or one sent before again), or a local user answering or taking
/// on a peer's bundle.
fn adversary_op(
    rng: &mut SplitMix64,
    next_seqs: &mut [u8; 3],
    batches: &mut Vec<ShimOp>,
) -> ShimOp {
    match rng.below(10) {
        0 | 1 if !batches.is_empty() => batches[rng.below(batches.len() as u64) as usize].clone(),
        2 => ShimOp::MirrorRespond {
            user: rng.below(3) as u8,
            peer: u8::from(rng.below(4) == 0),
            accept: rng.below(4) != 0,
        },
        3 | 4 => ShimOp::MirrorTake {
            user: if rng.below(3) == 0 {
                rng.below(3) as u8
            } else {
                0
            },
            peer: u8::from(rng.below(4) == 0),
        },
        _ => {
            let batch = ShimOp::Receive {
                peer: u8::from(rng.below(5) == 0),
                envelopes: random_batch(rng, next_seqs),
            };
            batches.push(batch.clone());
            batch
        }
    }
}

/// Any operation by any caller on any bundle.
fn random_op(rng: &mut SplitMix64, tag: u32) -> ShimOp {
    let caller = match rng.below(12) {
        0..=6 => rng.below(3) as u8,
        7..=9 => APP_CALLER,
        _ => GHOST_CALLER + rng.below(2) as u8,
    };
    let at = Target {
        caller,
        owner: rng.below(3) as u8,
        bundle: rng.below(2) as u8,
    };
    let stream = rng.below(4) as u8;
    match rng.below(13) {
        0 => ShimOp::CreateBundle { at },
        1 => ShimOp::SetRecipients {
            at,
            users: vec![rng.below(3) as u8],
        },
        2 => ShimOp::Respond { at, accept: true },
        3 => ShimOp::Grant { at },
        4 => ShimOp::Revoke { at },
        5 => ShimOp::CreateStream { at, policy: None },
        6 => ShimOp::PutDiscrete {
            at,
            len_bytes: 10,
            tag,
        },
        7 => ShimOp::Append {
            at,
            stream,
            len_bytes: 10,
            tag,
        },
        8 => ShimOp::Seal { at, stream },
        9 => ShimOp::Take { at },
        10 => ShimOp::Ack {
            at,
            stream,
            next_seq: 1,
        },
        11 => ShimOp::Fetch { at },
        _ => ShimOp::Read { at, stream, seq: 0 },
    }
}

// ----- the adversary: peer agents ------------------------------------------------------

/// The peer agents of a shim case; each owns a bundle `zed@<peer>/m` it shares here.
pub const PEERS: [&str; 2] = ["p.example", "q.example"];

/// One envelope a peer sends, in a compact form the generator and the fuzz target draw.
/// `kind`: 0 invitation, 1 answer, 2 metadata, 3 recipient removed, 4 data, 5 seal, 6
/// stream deleted. `owner`: 0 and 1 the peers' bundles, 2 alice's local `b0`.
/// `recipient`: 0..3 the local users, 3 `dan@p.example`, 4 `erin@q.example`. `creator`: 0
/// `zed` of the bundle owner's agent (genuine), 1 `alice` here, 2 `dan@p.example`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerEnvelope {
    pub kind: u8,
    pub owner: u8,
    pub recipient: u8,
    pub creator: u8,
    pub stream: u8,
    pub seq: u8,
}

impl fmt::Display for PeerEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = [
            "invite", "answer", "metadata", "removed", "data", "seal", "deleted",
        ][usize::from(self.kind % 7)];
        write!(
            f,
            "{kind}(bundle {}, recipient {}, creator {}, #{}/{})",
            self.owner % 3,
            self.recipient % 5,
            self.creator % 3,
            self.stream % 3,
            self.seq
        )
    }
}

fn peer_bundle(agent: &str, owner: u8) -> pstream_agent::Result<BundleRef> {
    let owner = usize::from(owner % 3);
    let address = match owner {
        0 | 1 => Address::new(None, "zed", PEERS[owner])?,
        _ => Address::new(None, USERS[0], agent)?,
    };
    Ok(BundleRef::new(
        &address,
        if owner == 2 { BUNDLE_IDS[0] } else { "m" },
    )?)
}

fn peer_address(agent: &str, index: u8) -> pstream_agent::Result<Address> {
    Ok(match index % 5 {
        index @ 0..=2 => Address::new(None, USERS[usize::from(index)], agent)?,
        3 => Address::new(None, "dan", PEERS[0])?,
        _ => Address::new(None, "erin", PEERS[1])?,
    })
}

fn to_envelope(agent: &str, spec: &PeerEnvelope) -> pstream_agent::Result<Envelope> {
    let bundle = peer_bundle(agent, spec.owner)?;
    let stream = StreamNo(u64::from(spec.stream % 3));
    let owner_agent = bundle.owner().agent().to_owned();
    let descriptor = || -> pstream_agent::Result<StreamDescriptor> {
        let creator = match spec.creator % 3 {
            0 => Address::new(None, "zed", &owner_agent)?,
            1 => Address::new(None, USERS[0], agent)?,
            _ => peer_address(agent, 3)?,
        };
        Ok(StreamDescriptor {
            creator,
            kind: StreamKind::Continuous,
            policy: if stream.0 % 2 == 0 {
                StreamPolicy::EPHEMERAL_SHARED
            } else {
                StreamPolicy::PERSISTENT_SHARED
            },
            label: b"s".to_vec(),
        })
    };
    Ok(match spec.kind % 7 {
        0 => Envelope::Invite {
            bundle,
            recipient: peer_address(agent, spec.recipient)?,
            metadata: Metadata::new().with("kind", "mirror"),
        },
        1 => Envelope::Response {
            bundle,
            recipient: peer_address(agent, spec.recipient)?,
            accepted: spec.seq % 2 == 0,
        },
        2 => Envelope::Metadata {
            bundle,
            metadata: Metadata::new().with("v", vec![spec.seq]),
        },
        3 => Envelope::RecipientRemoved {
            bundle,
            recipient: peer_address(agent, spec.recipient)?,
        },
        4 => Envelope::Data {
            bundle,
            stream,
            descriptor: descriptor()?,
            seq: u64::from(spec.seq),
            payload: payload_bytes(16 + u32::from(spec.seq), u32::from(spec.stream) << 8),
        },
        5 => Envelope::Sealed {
            bundle,
            stream,
            descriptor: descriptor()?,
            record_count: u64::from(spec.seq),
        },
        _ => Envelope::StreamDeleted { bundle, stream },
    })
}

/// A batch from peer `peer % 2`: mostly data for its own bundle, in order from where the
/// generator believes its streams are, with forgeries, gaps and other kinds mixed in.
fn random_batch(rng: &mut SplitMix64, next_seqs: &mut [u8; 3]) -> Vec<PeerEnvelope> {
    let count = 1 + rng.below(4) as usize;
    (0..count)
        .map(|_| {
            let stream = rng.below(3) as u8;
            let kind = match rng.below(16) {
                0 => 0,
                1 => 1,
                2 => 2,
                3 => 3,
                4 => 5,
                5 => 6,
                _ => 4,
            };
            let seq = if kind == 4 && rng.below(5) != 0 {
                let seq = next_seqs[usize::from(stream)];
                next_seqs[usize::from(stream)] = seq.saturating_add(1);
                seq
            } else {
                rng.below(6) as u8
            };
            PeerEnvelope {
                kind,
                owner: if rng.below(8) == 0 {
                    1 + rng.below(2) as u8
                } else {
                    0
                },
                recipient: rng.below(5) as u8,
                creator: if rng.below(10) == 0 {
                    1 + rng.below(2) as u8
                } else {
                    0
                },
                stream,
                seq,
            }
        })
        .collect()
}

// ----- observations --------------------------------------------------------------------

/// Everything the read-only API shows of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamObs {
    no: u64,
    label: Vec<u8>,
    creator: String,
    kind: StreamKind,
    policy: StreamPolicy,
    sealed_at: Option<u64>,
    first_seq: u64,
    next_seq: u64,
    /// Per user, per seq from `first_seq - 1` to `next_seq`: the payload hash or the error.
    reads: Vec<Vec<std::result::Result<u64, &'static str>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct BundleObs {
    recipients: Vec<(String, RecipientStatus)>,
    streams: Vec<StreamObs>,
    /// Per user: the durable cursor, or why there is none.
    cursors: Vec<std::result::Result<Vec<(u64, u64)>, &'static str>>,
}

/// A value the API showed, or the kind of error it gave instead.
type Shown<T> = std::result::Result<T, &'static str>;

/// What the read-only API shows of the whole agent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observation {
    users: Vec<String>,
    app_bundles: Shown<Vec<String>>,
    /// By (owner, bundle index): the bundle, or why its owner cannot see it.
    bundles: Vec<((u8, u8), Shown<BundleObs>)>,
    /// By peer, per local user: what the user sees of the peer's bundle here.
    mirrors: Vec<Vec<String>>,
}

impl Observation {
    fn digest(&self) -> u64 {
        hash_bytes(format!("{self:?}").as_bytes())
    }

    fn bundle(&self, owner: u8, bundle: u8) -> Option<&BundleObs> {
        self.bundles
            .iter()
            .find(|(key, _)| *key == (owner, bundle))
            .and_then(|(_, obs)| obs.as_ref().ok())
    }

    /// The first difference, for a violation report.
    fn diff(&self, other: &Observation) -> String {
        if self.users != other.users {
            return format!("users {:?} vs {:?}", self.users, other.users);
        }
        if self.app_bundles != other.app_bundles {
            return format!(
                "app:alice's bundles {:?} vs {:?}",
                self.app_bundles, other.app_bundles
            );
        }
        for ((key, mine), (_, theirs)) in self.bundles.iter().zip(&other.bundles) {
            if mine != theirs {
                let text = format!(
                    "bundle {}/{}: {mine:?}\n  vs {theirs:?}",
                    USERS[usize::from(key.0)],
                    BUNDLE_IDS[usize::from(key.1)]
                );
                return text.chars().take(2000).collect();
            }
        }
        for (peer, (mine, theirs)) in self.mirrors.iter().zip(&other.mirrors).enumerate() {
            if mine != theirs {
                let text = format!("{}'s bundle: {mine:?}\n  vs {theirs:?}", PEERS[peer]);
                return text.chars().take(2000).collect();
            }
        }
        "no difference".to_owned()
    }
}

/// Callers and bundle names of a case, made once.
#[derive(Debug, Clone)]
struct Universe {
    callers: Vec<Caller>,
    users: Vec<Caller>,
    bundles: BTreeMap<(u8, u8), BundleRef>,
    agent_name: String,
    /// The peers' bundles, by peer.
    mirrors: Vec<BundleRef>,
}

impl Universe {
    fn new(agent: &Agent<SimPmem>) -> Result<Universe> {
        let mut callers = Vec::new();
        for name in USERS {
            callers.push(Caller::user(name).map_err(AgentError::from)?);
        }
        callers.push(Caller::client("alice", "app").map_err(AgentError::from)?);
        callers.push(Caller::client("bob", "ghost").map_err(AgentError::from)?);
        callers.push(Caller::user("dave").map_err(AgentError::from)?);
        let users = callers[..3].to_vec();
        let mut bundles = BTreeMap::new();
        for owner in 0..3u8 {
            for bundle in 0..2u8 {
                let key =
                    agent.bundle_ref(USERS[usize::from(owner)], BUNDLE_IDS[usize::from(bundle)])?;
                bundles.insert((owner, bundle), key);
            }
        }
        let agent_name = agent.name();
        let mirrors = vec![peer_bundle(&agent_name, 0)?, peer_bundle(&agent_name, 1)?];
        Ok(Universe {
            callers,
            users,
            bundles,
            agent_name,
            mirrors,
        })
    }

    fn caller(&self, index: u8) -> &Caller {
        &self.callers[usize::from(index % CALLER_COUNT)]
    }

    fn key(&self, at: Target) -> Option<&BundleRef> {
        self.bundles.get(&(at.owner % 3, at.bundle % 2))
    }
}

/// A stable name of an error's kind; `None` for errors no operation here may produce.
fn kind(error: &AgentError) -> Option<&'static str> {
    Some(match error {
        AgentError::PermissionDenied { .. } => "PermissionDenied",
        AgentError::UnknownUser { .. } => "UnknownUser",
        AgentError::UserExists { .. } => "UserExists",
        AgentError::UnknownClient { .. } => "UnknownClient",
        AgentError::ClientExists { .. } => "ClientExists",
        AgentError::UnknownBundle { .. } => "UnknownBundle",
        AgentError::BundleExists { .. } => "BundleExists",
        AgentError::UnknownStream { .. } => "UnknownStream",
        AgentError::OwnerAsRecipient { .. } => "OwnerAsRecipient",
        AgentError::DuplicateRecipient { .. } => "DuplicateRecipient",
        AgentError::StreamSealed { .. } => "StreamSealed",
        AgentError::NotInvited { .. } => "NotInvited",
        AgentError::AckBeyondTail { .. } => "AckBeyondTail",
        AgentError::AlreadyTaken { .. } => "AlreadyTaken",
        AgentError::SeqOutOfRange { .. } => "SeqOutOfRange",
        AgentError::Protocol { .. } => "Protocol",
        _ => return None,
    })
}

fn kind_or_unexpected(error: &AgentError) -> &'static str {
    kind(error).unwrap_or("UNEXPECTED")
}

fn observe(agent: &Agent<SimPmem>, universe: &Universe) -> Observation {
    let app_bundles = agent
        .list_bundles(&universe.callers[usize::from(APP_CALLER)])
        .map(|keys| keys.iter().map(ToString::to_string).collect())
        .map_err(|e| kind_or_unexpected(&e));
    let bundles = universe
        .bundles
        .iter()
        .map(|(&(owner, bundle), key)| {
            let owner_caller = &universe.users[usize::from(owner)];
            (
                (owner, bundle),
                observe_bundle(agent, universe, owner_caller, key),
            )
        })
        .collect();
    let mirrors = universe
        .mirrors
        .iter()
        .map(|mirror| {
            universe
                .users
                .iter()
                .map(|user| observe_mirror(agent, user, mirror))
                .collect()
        })
        .collect();
    Observation {
        users: agent.users(),
        app_bundles,
        bundles,
        mirrors,
    }
}

/// Everything a user sees of a peer's bundle (payloads hashed).
fn observe_mirror(agent: &Agent<SimPmem>, user: &Caller, mirror: &BundleRef) -> String {
    let everything = PageLimit {
        records_max: usize::MAX,
        bytes_max: usize::MAX,
    };
    let shown = |text: pstream_agent::Result<String>| match text {
        Ok(text) => text,
        Err(error) => kind_or_unexpected(&error).to_owned(),
    };
    format!(
        "info {} | streams {} | cursor {} | fetch {} | inbox {}",
        shown(agent.bundle_info(user, mirror).map(|info| format!(
            "{:?} {:?} {}",
            info.metadata, info.recipients, info.stream_count
        ))),
        shown(agent.list_streams(user, mirror).map(|streams| {
            let streams: Vec<_> = streams
                .iter()
                .map(|s| {
                    (
                        s.no.0,
                        s.creator.to_string(),
                        s.sealed_at,
                        s.first_seq,
                        s.next_seq,
                    )
                })
                .collect();
            format!("{streams:?}")
        })),
        shown(agent.cursor(user, mirror).map(|c| format!("{:?}", c.0))),
        shown(
            agent
                .fetch(user, mirror, None, everything)
                .map(|page| page_summary(&page))
        ),
        shown(agent.inbox(user).map(|inbox| {
            let mine = inbox.iter().filter(|i| i.bundle == *mirror).count();
            mine.to_string()
        })),
    )
}

fn observe_bundle(
    agent: &Agent<SimPmem>,
    universe: &Universe,
    owner: &Caller,
    key: &BundleRef,
) -> std::result::Result<BundleObs, &'static str> {
    let info = agent
        .bundle_info(owner, key)
        .map_err(|e| kind_or_unexpected(&e))?;
    let listed = agent
        .list_streams(owner, key)
        .map_err(|e| kind_or_unexpected(&e))?;
    let streams = listed
        .into_iter()
        .map(|stream| {
            let reads = universe
                .users
                .iter()
                .map(|user| {
                    (stream.first_seq.saturating_sub(1)..=stream.next_seq)
                        .map(|seq| {
                            agent
                                .read(user, key, stream.no, seq)
                                .map(|payload| hash_bytes(&payload))
                                .map_err(|e| kind_or_unexpected(&e))
                        })
                        .collect()
                })
                .collect();
            StreamObs {
                no: stream.no.0,
                label: stream.label,
                creator: stream.creator.user().to_owned(),
                kind: stream.kind,
                policy: stream.policy,
                sealed_at: stream.sealed_at,
                first_seq: stream.first_seq,
                next_seq: stream.next_seq,
                reads,
            }
        })
        .collect();
    let cursors = universe
        .users
        .iter()
        .map(|user| {
            agent
                .cursor(user, key)
                .map(|position| position.0.iter().map(|(s, n)| (s.0, *n)).collect())
                .map_err(|e| kind_or_unexpected(&e))
        })
        .collect();
    Ok(BundleObs {
        recipients: info
            .recipients
            .iter()
            .map(|(address, status)| (address.user().to_owned(), *status))
            .collect(),
        streams,
        cursors,
    })
}

// ----- the fence hook ------------------------------------------------------------------

/// How many crash images a shim case checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShimBudget {
    /// Inspect fences whose index is a multiple of this.
    pub fence_stride: u64,
    pub exhaustive_max: u64,
    pub samples: u64,
    /// Stop checking images after this many in the case (0 = no limit).
    pub images_max: u64,
    /// Every n-th image is also crashed during its own recovery (0 = never).
    pub recovery_crash_every: u64,
}

impl Default for ShimBudget {
    fn default() -> Self {
        ShimBudget {
            fence_stride: 1,
            exhaustive_max: 64,
            samples: 6,
            images_max: 1500,
            recovery_crash_every: 16,
        }
    }
}

#[derive(Default)]
struct HookState {
    /// (fence, observation digest) of the images of the operation in flight.
    recovered: Vec<(u64, u64)>,
    observed: BTreeMap<u64, Observation>,
    tally: Tally,
    violation: Option<Violation>,
    op_index: Option<usize>,
    trace: TraceHash,
}

fn recover_observe(image: &[u8], universe: &Universe) -> std::result::Result<Observation, String> {
    let (agent, _) = Agent::open(SimPmem::from_image(image.to_vec()), shim_config())
        .map_err(|e| format!("recovery failed: {e}"))?;
    Ok(observe(&agent, universe))
}

/// Images of a recovery of `image` interrupted at each of its first fences (nothing and
/// everything pending persisted).
fn recovery_crash_images(image: &[u8]) -> std::result::Result<Vec<Vec<u8>>, String> {
    const RECOVERY_FENCES_MAX: usize = 6;
    let images: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let sim = SimPmem::from_image(image.to_vec());
    let sink = Arc::clone(&images);
    sim.set_fence_hook(Some(Box::new(move |point: &CrashPoint<'_>| {
        if sink.lock().len() >= 2 * RECOVERY_FENCES_MAX {
            return;
        }
        point.for_each_image(0, 2, 0, |img| {
            sink.lock().push(img.to_vec());
            ControlFlow::Continue(())
        });
    })));
    let (agent, _) = Agent::open(sim, shim_config())
        .map_err(|e| format!("recovery (to be interrupted) failed: {e}"))?;
    agent.engine().pmem().set_fence_hook(None);
    drop(agent);
    let taken = std::mem::take(&mut *images.lock());
    Ok(taken)
}

fn install_hook(
    sim: &SimPmem,
    shared: Arc<Mutex<HookState>>,
    universe: Universe,
    budget: ShimBudget,
    seed: u64,
) {
    sim.set_fence_hook(Some(Box::new(move |point: &CrashPoint<'_>| {
        let mut state = shared.lock();
        state.tally.fences += 1;
        let fence = point.fence_index().unwrap_or(0);
        let out_of_budget = budget.images_max > 0 && state.tally.images >= budget.images_max;
        if state.violation.is_some() || out_of_budget || fence % budget.fence_stride.max(1) != 0 {
            return;
        }
        state.tally.fences_checked += 1;
        let image_seed = seed ^ fence.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let run =
            point.for_each_image(budget.exhaustive_max, budget.samples, image_seed, |image| {
                state.tally.images += 1;
                let nested_due = budget.recovery_crash_every > 0
                    && state.tally.images % budget.recovery_crash_every == 0;
                let mut images = vec![image.to_vec()];
                if nested_due {
                    match recovery_crash_images(image) {
                        Ok(nested) => {
                            state.tally.recovery_crash_images += nested.len() as u64;
                            images.extend(nested);
                        }
                        Err(detail) => {
                            state.violation = Some(Violation {
                                crash_point: Some(fence),
                                op_index: state.op_index,
                                detail,
                            });
                            return ControlFlow::Break(());
                        }
                    }
                }
                for candidate in &images {
                    match recover_observe(candidate, &universe) {
                        Ok(observation) => {
                            let digest = observation.digest();
                            state.recovered.push((fence, digest));
                            state.observed.entry(digest).or_insert(observation);
                        }
                        Err(detail) => {
                            state.violation = Some(Violation {
                                crash_point: Some(fence),
                                op_index: state.op_index,
                                detail,
                            });
                            return ControlFlow::Break(());
                        }
                    }
                }
                ControlFlow::Continue(())
            });
        if run.exhaustive {
            state.tally.exhaustive_fences += 1;
        }
        state.trace.u64(fence);
        state.trace.u64(run.images_visited);
    })));
}

// ----- the interpreter -----------------------------------------------------------------

/// What a shim case found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimRun {
    pub tally: Tally,
    pub trace_hash: u64,
    pub violation: Option<Violation>,
    /// What each operation returned (a summary, or the kind of its error).
    pub results: Vec<String>,
}

/// The ledger of the "never served again" rule: per (user, bundle, stream) of ephemeral
/// streams, the highest "taken up to" (cursor) ever observed. The test keeps it, not the
/// store, so a store that forgets what was taken (a reopen, a user removed and added back)
/// is caught serving it again. Used by the harness's shim cases and the agent's model test.
#[derive(Debug, Default, Clone)]
pub struct TakenLedger {
    taken: BTreeMap<(usize, String, u64), u64>,
}

impl TakenLedger {
    /// Checks that no ephemeral record any of `users` took is served to it again by a fetch
    /// of any of `bundles` from the start, then records what each has taken now. `users` are
    /// told apart by their index, so pass them in the same order every time.
    pub fn check_and_update<P: Pmem, C: ColdTier>(
        &mut self,
        agent: &Agent<P, C>,
        users: &[Caller],
        bundles: &[BundleRef],
    ) -> std::result::Result<(), String> {
        let everything = PageLimit {
            records_max: usize::MAX,
            bytes_max: usize::MAX,
        };
        for (index, user) in users.iter().enumerate() {
            for bundle in bundles {
                let name = bundle.to_string();
                if let Ok(page) = agent.fetch(user, bundle, Some(&Position::default()), everything)
                {
                    for item in page
                        .items
                        .iter()
                        .filter(|d| d.retention == Retention::Ephemeral)
                    {
                        let taken = self
                            .taken
                            .get(&(index, name.clone(), item.stream.0))
                            .copied()
                            .unwrap_or(0);
                        if item.seq < taken {
                            return Err(format!(
                                "{user} is served {name} {} seq {} again (took up to {taken})",
                                item.stream, item.seq
                            ));
                        }
                    }
                }
                let (Ok(cursor), Ok(streams)) =
                    (agent.cursor(user, bundle), agent.list_streams(user, bundle))
                else {
                    continue;
                };
                for info in streams
                    .iter()
                    .filter(|i| i.access == Some(Retention::Ephemeral))
                {
                    let slot = self
                        .taken
                        .entry((index, name.clone(), info.no.0))
                        .or_insert(0);
                    *slot = (*slot).max(cursor.next_seq(info.no));
                }
            }
        }
        Ok(())
    }
}

struct Runner {
    agent: Option<Agent<SimPmem>>,
    universe: Universe,
    /// Bundles `app:alice` was ever granted (or created).
    granted: BTreeSet<(u8, u8)>,
    /// What each user took of ephemeral streams (kept here, not read back from the store).
    taken: TakenLedger,
}

type OpResult = std::result::Result<String, &'static str>;

impl Runner {
    fn agent(&self) -> std::result::Result<&Agent<SimPmem>, String> {
        self.agent
            .as_ref()
            .ok_or_else(|| "the agent is closed (an earlier reopen failed)".to_owned())
    }

    fn apply(&mut self, op: &ShimOp) -> std::result::Result<OpResult, String> {
        if let ShimOp::Reopen = op {
            let Some(agent) = self.agent.take() else {
                return Err("the agent is closed".to_owned());
            };
            let (agent, _) = Agent::open(agent.close(), shim_config())
                .map_err(|e| format!("reopen failed: {e}"))?;
            self.agent = Some(agent);
            return Ok(Ok("reopened".to_owned()));
        }
        let agent = self.agent()?;
        let result = self.call(agent, op);
        match result {
            Ok(summary) => Ok(Ok(summary)),
            Err(error) => match kind(&error) {
                Some(kind) => Ok(Err(kind)),
                None => Err(format!("{op}: unexpected error: {error}")),
            },
        }
    }

    fn call(&self, agent: &Agent<SimPmem>, op: &ShimOp) -> pstream_agent::Result<String> {
        let u = &self.universe;
        let Some(at) = op.target() else {
            return match op {
                ShimOp::AddUser { user } => agent
                    .add_user(USERS[usize::from(*user) % 3])
                    .map(|a| a.to_string()),
                ShimOp::RegisterClient { user } => agent
                    .register_client(u.caller(*user % 3), "app")
                    .map(|()| String::new()),
                ShimOp::Receive { peer, envelopes } => {
                    let mut batch = Vec::with_capacity(envelopes.len());
                    for spec in envelopes {
                        batch.push(to_envelope(&u.agent_name, spec)?);
                    }
                    agent
                        .receive(PEERS[usize::from(*peer % 2)], &batch)
                        .map(|report| format!("{report:?}"))
                }
                ShimOp::MirrorRespond { user, peer, accept } => agent
                    .respond(
                        u.caller(*user % 3),
                        &u.mirrors[usize::from(*peer % 2)],
                        *accept,
                    )
                    .map(|()| String::new()),
                ShimOp::MirrorTake { user, peer } => agent
                    .take(
                        u.caller(*user % 3),
                        &u.mirrors[usize::from(*peer % 2)],
                        PAGE,
                    )
                    .map(|page| page_summary(&page)),
                _ => Ok(String::new()),
            };
        };
        let caller = u.caller(at.caller);
        let Some(key) = u.key(at) else {
            return Ok(String::new());
        };
        match op {
            ShimOp::CreateBundle { .. } => agent
                .create_bundle(
                    caller,
                    BUNDLE_IDS[usize::from(at.bundle % 2)],
                    Metadata::new().with("kind", format!("b{}", at.bundle % 2)),
                    defaults(at.bundle % 2),
                )
                .map(|k| k.to_string()),
            ShimOp::SetRecipients { users, .. } => {
                let mut addresses = Vec::new();
                for user in users {
                    addresses.push(agent.address_of(USERS[usize::from(*user) % 3])?);
                }
                agent
                    .set_recipients(caller, key, &addresses)
                    .map(|()| String::new())
            }
            ShimOp::Respond { accept, .. } => {
                agent.respond(caller, key, *accept).map(|()| String::new())
            }
            ShimOp::Grant { .. } => agent.grant(caller, "app", key).map(|()| String::new()),
            ShimOp::Revoke { .. } => agent.revoke(caller, "app", key).map(|()| String::new()),
            ShimOp::CreateStream { policy, .. } => {
                let mut spec = StreamSpec::continuous("live");
                if let Some(policy) = policy {
                    spec = spec.with_policy(POLICIES[usize::from(*policy) % 3]);
                }
                agent
                    .create_stream(caller, key, spec)
                    .map(|no| no.to_string())
            }
            ShimOp::PutDiscrete { len_bytes, tag, .. } => agent
                .put_discrete(caller, key, b"file", &[&payload_bytes(*len_bytes, *tag)])
                .map(|no| no.to_string()),
            ShimOp::Append {
                stream,
                len_bytes,
                tag,
                ..
            } => agent
                .append(
                    caller,
                    key,
                    StreamNo(u64::from(*stream)),
                    &payload_bytes(*len_bytes, *tag),
                )
                .map(|seq| seq.to_string()),
            ShimOp::AppendBatch {
                stream, count, tag, ..
            } => {
                let payloads: Vec<Vec<u8>> = (0..u32::from(*count))
                    .map(|k| payload_bytes(20 + 13 * k, tag | k))
                    .collect();
                let borrowed: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                agent
                    .append_batch(caller, key, StreamNo(u64::from(*stream)), &borrowed)
                    .map(|seqs| format!("{seqs:?}"))
            }
            ShimOp::Seal { stream, .. } => agent
                .seal(caller, key, StreamNo(u64::from(*stream)))
                .map(|count| count.to_string()),
            ShimOp::DeleteStream { stream, .. } => agent
                .delete_stream(caller, key, StreamNo(u64::from(*stream)))
                .map(|()| String::new()),
            ShimOp::Take { .. } => agent
                .take(caller, key, PAGE)
                .map(|page| page_summary(&page)),
            ShimOp::Ack {
                stream, next_seq, ..
            } => {
                let mut position = Position::default();
                position.set(StreamNo(u64::from(*stream)), u64::from(*next_seq));
                agent.ack(caller, key, &position).map(|()| String::new())
            }
            ShimOp::Fetch { .. } => agent
                .fetch(caller, key, None, PAGE)
                .map(|page| page_summary(&page)),
            ShimOp::Read { stream, seq, .. } => agent
                .read(caller, key, StreamNo(u64::from(*stream)), u64::from(*seq))
                .map(|payload| format!("{:x}", hash_bytes(&payload))),
            ShimOp::AddUser { .. }
            | ShimOp::RegisterClient { .. }
            | ShimOp::Reopen
            | ShimOp::Receive { .. }
            | ShimOp::MirrorRespond { .. }
            | ShimOp::MirrorTake { .. } => Ok(String::new()),
        }
    }

    /// The permission rules (see the module documentation), given the state before `op`.
    fn check_permissions(
        &mut self,
        op: &ShimOp,
        result: &OpResult,
        before: &Observation,
    ) -> std::result::Result<(), String> {
        let Some(at) = op.target() else {
            return Ok(());
        };
        let key = (at.owner % 3, at.bundle % 2);
        let expect = |wanted: &'static str, why: &str| match result {
            Err(kind) if *kind == wanted => Ok(()),
            other => Err(format!("{op}: expected {wanted} ({why}), got {other:?}")),
        };
        match at.caller % CALLER_COUNT {
            UNKNOWN_CALLER => return expect("UnknownUser", "dave is no user"),
            GHOST_CALLER => return expect("UnknownClient", "ghost is no client of bob"),
            _ => {}
        }
        let Some(bundle) = before.bundle(key.0, key.1) else {
            return Ok(());
        };
        if at.caller % CALLER_COUNT == APP_CALLER {
            // Every call but creating a bundle looks the bundle up for the client first.
            let creates = matches!(op, ShimOp::CreateBundle { .. });
            let users_only = matches!(
                op,
                ShimOp::Grant { .. } | ShimOp::Revoke { .. } | ShimOp::Respond { .. }
            );
            if users_only {
                return expect(
                    "PermissionDenied",
                    "only the user itself grants, revokes and answers",
                );
            }
            if !creates && !self.granted.contains(&key) {
                return expect(
                    "UnknownBundle",
                    "the client was never granted the bundle (answered as if it did not exist)",
                );
            }
            return Ok(());
        }
        let user = USERS[usize::from(at.caller % 3)];
        let owner = USERS[usize::from(key.0)];
        let accepted = bundle
            .recipients
            .iter()
            .any(|(u, s)| u == user && *s == RecipientStatus::Accepted);
        let stream_no = match op {
            ShimOp::Append { stream, .. }
            | ShimOp::AppendBatch { stream, .. }
            | ShimOp::Seal { stream, .. }
            | ShimOp::Read { stream, .. } => Some(u64::from(*stream)),
            _ => None,
        };
        let Some(stream) = stream_no.and_then(|no| bundle.streams.iter().find(|s| s.no == no))
        else {
            return Ok(());
        };
        // What the caller may not see is answered as if it did not exist: a bundle it is
        // not concerned by, a stream it neither owns, created nor reads.
        let sees_bundle = user == owner
            || bundle
                .recipients
                .iter()
                .any(|(u, s)| u == user && *s != RecipientStatus::Rejected)
            || bundle.streams.iter().any(|s| s.creator == user);
        let sees_stream =
            user == owner || stream.creator == user || (accepted && stream.policy.shared);
        match op {
            ShimOp::Append { .. } | ShimOp::AppendBatch { .. } | ShimOp::Seal { .. }
                if stream.creator != user =>
            {
                if !sees_bundle {
                    expect("UnknownBundle", "the bundle does not concern the writer")
                } else if !sees_stream {
                    expect("UnknownStream", "the stream does not concern the writer")
                } else {
                    expect("PermissionDenied", "only the creator writes a stream")
                }
            }
            ShimOp::Read { .. } if user != owner && stream.creator != user && !accepted => {
                if sees_bundle {
                    expect("UnknownStream", "the stream does not concern the reader")
                } else {
                    expect("UnknownBundle", "the bundle does not concern the reader")
                }
            }
            _ => Ok(()),
        }
    }

    /// After a take: nothing ephemeral the taker acknowledged is served to it again.
    fn check_taken(&self, op: &ShimOp) -> std::result::Result<(), String> {
        let ShimOp::Take { at } = op else {
            return Ok(());
        };
        let agent = self.agent()?;
        let caller = self.universe.caller(at.caller);
        let Some(key) = self.universe.key(*at) else {
            return Ok(());
        };
        let cursor = agent
            .cursor(caller, key)
            .map_err(|e| format!("{op}: cursor after a take: {e}"))?;
        let streams = agent
            .list_streams(caller, key)
            .map_err(|e| format!("{op}: list_streams after a take: {e}"))?;
        // Everything from the start, without moving anything.
        let everything = PageLimit {
            records_max: usize::MAX,
            bytes_max: usize::MAX,
        };
        let page = agent
            .fetch(caller, key, Some(&Position::default()), everything)
            .map_err(|e| format!("{op}: fetch after a take: {e}"))?;
        for item in &page.items {
            if item.retention == Retention::Ephemeral && item.seq < cursor.next_seq(item.stream) {
                return Err(format!(
                    "{op}: acknowledged ephemeral record {}/{} served again",
                    item.stream, item.seq
                ));
            }
        }
        for info in streams {
            let taken = cursor.next_seq(info.no);
            if info.access != Some(Retention::Ephemeral) || taken == 0 {
                continue;
            }
            match agent.read(caller, key, info.no, taken - 1) {
                Err(AgentError::AlreadyTaken { .. }) => {}
                other => {
                    return Err(format!(
                        "{op}: reading taken ephemeral record {}/{} gave {:?}",
                        info.no,
                        taken - 1,
                        other.map(|payload| payload.len())
                    ))
                }
            }
        }
        Ok(())
    }

    /// The adversary's oracle: a batch a peer got accepted (or a local user's answer or
    /// take on a peer's bundle) changes nothing owned here and no other peer's bundle, and
    /// no bundle holds a stream created by a user of another agent than its owner's. (A
    /// refused one changes nothing at all: the general check.)
    fn check_adversary(
        &self,
        op: &ShimOp,
        result: &OpResult,
        before: &Observation,
        after: &Observation,
    ) -> std::result::Result<(), String> {
        let Some(peer) = op.peer() else {
            return Ok(());
        };
        if result.is_err() {
            return Ok(());
        }
        if before.users != after.users
            || before.app_bundles != after.app_bundles
            || before.bundles != after.bundles
        {
            return Err(format!(
                "{op} changed what is owned here: {}",
                before.diff(after)
            ));
        }
        for (index, (mine, theirs)) in before.mirrors.iter().zip(&after.mirrors).enumerate() {
            if index != usize::from(peer) && mine != theirs {
                return Err(format!("{op} changed {}'s bundle", PEERS[index]));
            }
        }
        let agent = self.agent()?;
        for mirror in &self.universe.mirrors {
            for user in &self.universe.users {
                let Ok(streams) = agent.list_streams(user, mirror) else {
                    continue;
                };
                if let Some(forged) = streams
                    .iter()
                    .find(|s| s.creator.agent() != mirror.owner().agent())
                {
                    return Err(format!(
                        "{op}: {mirror} holds stream {} created by {}",
                        forged.no, forged.creator
                    ));
                }
            }
        }
        Ok(())
    }

    /// Nothing ephemeral a user took is ever served to it again (here bundles and peers'
    /// alike, across reopens); then notes what each user has taken now.
    fn check_ledger(&mut self, op: &ShimOp) -> std::result::Result<(), String> {
        let Some(agent) = self.agent.as_ref() else {
            return Err("the agent is closed".to_owned());
        };
        let universe = &self.universe;
        let bundles: Vec<BundleRef> = universe
            .bundles
            .values()
            .chain(&universe.mirrors)
            .cloned()
            .collect();
        self.taken
            .check_and_update(agent, &universe.users, &bundles)
            .map_err(|error| format!("after {op}: {error}"))
    }

    fn note_grants(&mut self, op: &ShimOp, result: &OpResult) {
        if result.is_err() {
            return;
        }
        match op {
            ShimOp::Grant { at } if at.caller % CALLER_COUNT == 0 => {
                self.granted.insert((at.owner % 3, at.bundle % 2));
            }
            ShimOp::CreateBundle { at } if at.caller % CALLER_COUNT == APP_CALLER => {
                // A client that creates a bundle is granted it (the bundle is alice's).
                self.granted.insert((0, at.bundle % 2));
            }
            _ => {}
        }
    }
}

fn page_summary(page: &pstream_agent::Page) -> String {
    let items: Vec<String> = page
        .items
        .iter()
        .map(|d| format!("{}/{}:{:x}", d.stream, d.seq, hash_bytes(&d.payload)))
        .collect();
    format!("{items:?} more={}", page.more)
}

/// For a batch of several envelopes: the observation digests after each proper prefix of
/// it, applied one envelope at a time to a copy of the store (stopping at the first
/// refusal: a refused batch applies nothing).
fn prefix_digests(runner: &Runner, op: &ShimOp) -> std::result::Result<Vec<u64>, String> {
    let ShimOp::Receive { peer, envelopes } = op else {
        return Ok(Vec::new());
    };
    if envelopes.len() < 2 {
        return Ok(Vec::new());
    }
    let agent = runner.agent()?;
    let image = agent.engine().pmem().persisted_image();
    let (copy, _) = Agent::open(SimPmem::from_image(image), shim_config())
        .map_err(|e| format!("{op}: opening a copy for its prefixes: {e}"))?;
    let universe = &runner.universe;
    let mut digests = Vec::new();
    for spec in &envelopes[..envelopes.len() - 1] {
        let envelope = to_envelope(&universe.agent_name, spec).map_err(|e| format!("{op}: {e}"))?;
        if copy
            .receive(PEERS[usize::from(*peer % 2)], &[envelope])
            .is_err()
        {
            break;
        }
        digests.push(observe(&copy, universe).digest());
    }
    Ok(digests)
}

/// Runs `ops` on a fresh agent, checking crash images at fences (see the module docs).
pub fn run_shim_ops(seed: u64, ops: &[ShimOp], budget: &ShimBudget) -> Result<ShimRun> {
    let agent = Agent::create(SimPmem::new(POOL_BYTES), "crash.example", shim_config())?;
    let universe = Universe::new(&agent)?;
    let shared = Arc::new(Mutex::new(HookState::default()));
    install_hook(
        agent.engine().pmem(),
        Arc::clone(&shared),
        universe.clone(),
        *budget,
        seed,
    );
    let mut runner = Runner {
        agent: Some(agent),
        universe,
        granted: BTreeSet::new(),
        taken: TakenLedger::default(),
    };
    let mut trace = TraceHash::new();
    let mut results = Vec::with_capacity(ops.len());
    let mut found: Option<Violation> = None;
    let mut before = match runner.agent.as_ref() {
        Some(agent) => observe(agent, &runner.universe),
        None => return Err(CrashtestError::Config("no agent".to_owned())),
    };
    for (index, op) in ops.iter().enumerate() {
        {
            let mut state = shared.lock();
            state.op_index = Some(index);
            state.recovered.clear();
            state.observed.clear();
        }
        let violation = |detail: String| Violation {
            crash_point: None,
            op_index: Some(index),
            detail,
        };
        // A crash during an accepted batch may leave any prefix of it applied (each
        // envelope is durable on its own; the sender's redelivery completes the batch).
        let prefixes = match prefix_digests(&runner, op) {
            Ok(prefixes) => prefixes,
            Err(detail) => {
                found = Some(violation(detail));
                break;
            }
        };
        let result = match runner.apply(op) {
            Ok(result) => result,
            Err(detail) => {
                found = Some(violation(detail));
                break;
            }
        };
        let after = match runner.agent() {
            Ok(agent) => observe(agent, &runner.universe),
            Err(detail) => {
                found = Some(violation(detail));
                break;
            }
        };
        trace.str(&op.to_string());
        trace.str(&format!("{result:?}"));
        results.push(format!("{result:?}"));
        trace.u64(after.digest());
        shared.lock().tally.ops += 1;
        if let Err(detail) = runner.check_permissions(op, &result, &before) {
            found = Some(violation(detail));
            break;
        }
        runner.note_grants(op, &result);
        if (result.is_err() || op.is_read_only()) && after != before {
            found = Some(violation(format!(
                "{op} ({result:?}) changed the observable state: {}",
                before.diff(&after)
            )));
            break;
        }
        if result.is_ok() {
            if let Err(detail) = runner.check_taken(op) {
                found = Some(violation(detail));
                break;
            }
        }
        if let Err(detail) = runner
            .check_adversary(op, &result, &before, &after)
            .and_then(|()| runner.check_ledger(op))
        {
            found = Some(violation(detail));
            break;
        }
        let mut state = shared.lock();
        if let Some(hook_violation) = state.violation.take() {
            found = Some(hook_violation);
            break;
        }
        let (before_digest, after_digest) = (before.digest(), after.digest());
        let bad = state
            .recovered
            .iter()
            .find(|(_, digest)| {
                // Every operation, `append_batch` included, is all or nothing.
                *digest != before_digest
                    && *digest != after_digest
                    && (result.is_err() || !prefixes.contains(digest))
            })
            .copied();
        if let Some((fence, digest)) = bad {
            let detail = match state.observed.get(&digest) {
                Some(recovered) => format!(
                    "{op}: a crash image recovered to neither the state before nor after it; \
                     vs before: {}; vs after: {}",
                    recovered.diff(&before),
                    recovered.diff(&after)
                ),
                None => format!("{op}: a crash image recovered to an unknown state"),
            };
            found = Some(Violation {
                crash_point: Some(fence),
                op_index: Some(index),
                detail,
            });
            break;
        }
        drop(state);
        before = after;
    }
    if let Some(agent) = runner.agent.take() {
        agent.engine().pmem().set_fence_hook(None);
    }
    let state = shared.lock();
    trace.fold(state.trace.finish());
    Ok(ShimRun {
        tally: state.tally,
        trace_hash: trace.finish(),
        violation: found,
        results,
    })
}
