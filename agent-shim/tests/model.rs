//! Model test: random sequences of shim operations (by random callers, including clients
//! without grants and unknown users) against an in-memory model of the documented rules.
//! Every result, error kind and returned byte must match; reopening changes nothing. An
//! adversary (hostile peer agents, and users acting on what peers share) runs among them;
//! its oracle is described with it below. A refused call changes no user's view.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::config;
use pmem_emul::SimPmem;
use proptest::prelude::*;
use pstream_agent::{
    Address, Agent, AgentError, BundleRef, Caller, Creators, Envelope, Metadata, PageLimit,
    Position, RecipientStatus, Retention, StreamDefaults, StreamDescriptor, StreamKind, StreamNo,
    StreamPolicy, StreamSpec,
};
use pstream_crashtest::kit::TakenLedger;

const AGENT: &str = "m.example";
const USERS: [&str; 3] = ["alice", "bob", "carol"];
const PAGE: PageLimit = PageLimit {
    records_max: 3,
    bytes_max: 1 << 20,
};

/// Callers: 0..3 the users, 3..5 `app:alice` / `app:bob` (registered), 5 `ghost:bob`
/// (not registered), 6 `dave` (no such user).
fn caller(index: usize) -> Caller {
    match index {
        0..=2 => Caller::user(USERS[index]),
        3 => Caller::client("alice", "app"),
        4 => Caller::client("bob", "app"),
        5 => Caller::client("bob", "ghost"),
        _ => Caller::user("dave"),
    }
    .expect("valid caller")
}

/// Bundle flavours, fixed by the bundle id.
fn defaults(flavour: usize) -> StreamDefaults {
    match flavour {
        0 => StreamDefaults::default(),
        1 => StreamDefaults {
            creators: Creators::Users(USERS.iter().map(|u| (*u).to_owned()).collect()),
            policy: StreamPolicy::INTERNALLY_PERSISTENT_EXTERNALLY_EPHEMERAL,
            write_once: true,
        },
        _ => StreamDefaults {
            creators: Creators::Recipients,
            policy: StreamPolicy::EPHEMERAL_SHARED,
            write_once: false,
        },
    }
}

const POLICIES: [StreamPolicy; 3] = [
    StreamPolicy::PERSISTENT_SHARED,
    StreamPolicy::EPHEMERAL_SHARED,
    StreamPolicy::INTERNALLY_PERSISTENT_EXTERNALLY_EPHEMERAL,
];

#[derive(Debug, Clone)]
enum Op {
    CreateBundle {
        caller: usize,
        flavour: usize,
    },
    SetRecipients {
        caller: usize,
        owner: usize,
        flavour: usize,
        users: Vec<usize>,
    },
    Respond {
        caller: usize,
        owner: usize,
        flavour: usize,
        accept: bool,
    },
    Grant {
        caller: usize,
        owner: usize,
        flavour: usize,
    },
    CreateStream {
        caller: usize,
        owner: usize,
        flavour: usize,
        continuous: bool,
        policy: Option<usize>,
    },
    PutDiscrete {
        caller: usize,
        owner: usize,
        flavour: usize,
        payload: Vec<u8>,
    },
    Append {
        caller: usize,
        owner: usize,
        flavour: usize,
        stream: u64,
        payload: Vec<u8>,
    },
    Seal {
        caller: usize,
        owner: usize,
        flavour: usize,
        stream: u64,
    },
    Read {
        caller: usize,
        owner: usize,
        flavour: usize,
        stream: u64,
        seq: u64,
    },
    Fetch {
        caller: usize,
        owner: usize,
        flavour: usize,
    },
    Ack {
        caller: usize,
        owner: usize,
        flavour: usize,
        stream: u64,
        next_seq: u64,
    },
    Take {
        caller: usize,
        owner: usize,
        flavour: usize,
    },
    Reopen,
    /// A peer agent's batch (see the adversary below).
    Receive {
        peer: usize,
        envelopes: Vec<Env>,
    },
    /// An earlier batch, sent again by its peer.
    Replay {
        back: usize,
    },
    /// A local user answers a peer's invitation.
    MirrorRespond {
        caller: usize,
        owner: usize,
        accept: bool,
    },
    /// A local user takes from a peer's bundle.
    MirrorTake {
        caller: usize,
        owner: usize,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    // Mostly users acting directly, some registered clients, a few unknown callers.
    let c = prop_oneof![8 => 0usize..3, 3 => 3usize..5, 1 => 5usize..7];
    // Alice's bundles hold most streams.
    let o = prop_oneof![3 => Just(0usize), 1 => Just(1usize)];
    let f = 0usize..3;
    let payload = proptest::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        2 => (c.clone(), f.clone()).prop_map(|(caller, flavour)| Op::CreateBundle { caller, flavour }),
        2 => (c.clone(), o.clone(), f.clone(), proptest::collection::vec(0usize..3, 0..3))
            .prop_map(|(caller, owner, flavour, users)| Op::SetRecipients { caller, owner, flavour, users }),
        2 => (c.clone(), o.clone(), f.clone(), any::<bool>())
            .prop_map(|(caller, owner, flavour, accept)| Op::Respond { caller, owner, flavour, accept: accept || flavour != 0 }),
        1 => (c.clone(), o.clone(), f.clone()).prop_map(|(caller, owner, flavour)| Op::Grant { caller, owner, flavour }),
        2 => (c.clone(), o.clone(), f.clone(), any::<bool>(), proptest::option::of(0usize..3))
            .prop_map(|(caller, owner, flavour, continuous, policy)| Op::CreateStream { caller, owner, flavour, continuous, policy }),
        2 => (c.clone(), o.clone(), f.clone(), payload.clone())
            .prop_map(|(caller, owner, flavour, payload)| Op::PutDiscrete { caller, owner, flavour, payload }),
        8 => (c.clone(), o.clone(), any::<bool>(), f.clone(), 0u64..4, payload)
            .prop_map(|(caller, owner, own, flavour, stream, payload)| {
                // Mostly into the caller's own bundles, where its streams are.
                let owner = if own { caller % 2 } else { owner };
                Op::Append { caller, owner, flavour, stream: if own { stream % 2 } else { stream }, payload }
            }),
        1 => (c.clone(), o.clone(), f.clone(), 0u64..4).prop_map(|(caller, owner, flavour, stream)| Op::Seal { caller, owner, flavour, stream }),
        3 => (c.clone(), o.clone(), f.clone(), 0u64..3, 0u64..4)
            .prop_map(|(caller, owner, flavour, stream, seq)| Op::Read { caller, owner, flavour, stream, seq }),
        3 => (c.clone(), o.clone(), f.clone()).prop_map(|(caller, owner, flavour)| Op::Fetch { caller, owner, flavour }),
        3 => (c.clone(), o.clone(), f.clone(), 0u64..3, 0u64..4)
            .prop_map(|(caller, owner, flavour, stream, next_seq)| Op::Ack { caller, owner, flavour, stream, next_seq }),
        2 => (c.clone(), o, f).prop_map(|(caller, owner, flavour)| Op::Take { caller, owner, flavour }),
        1 => Just(Op::Reopen),
        6 => (prop_oneof![4 => Just(0usize), 1 => Just(1usize)], proptest::collection::vec(env_strategy(), 1..5))
            .prop_map(|(peer, envelopes)| Op::Receive { peer, envelopes }),
        1 => (0usize..8).prop_map(|back| Op::Replay { back }),
        1 => (c.clone(), 0usize..2, any::<bool>())
            .prop_map(|(caller, owner, accept)| Op::MirrorRespond { caller, owner, accept }),
        // Mostly alice on p's bundle (she accepted it in the setup).
        3 => (prop_oneof![3 => Just(0usize), 1 => c], prop_oneof![3 => Just(0usize), 1 => Just(1usize)])
            .prop_map(|(caller, owner)| Op::MirrorTake { caller, owner }),
    ]
}

// ----- the model ----------------------------------------------------------------------

#[derive(Debug, Clone)]
struct MStream {
    creator: String,
    policy: StreamPolicy,
    sealed: bool,
    records: Vec<Vec<u8>>,
    first_seq: u64,
}

#[derive(Debug, Clone, Default)]
struct MBundle {
    flavour: usize,
    /// (user, status) in the order set.
    recipients: Vec<(String, RecipientStatus)>,
    streams: Vec<MStream>,
    cursors: BTreeMap<String, BTreeMap<u64, u64>>,
}

#[derive(Debug, Default)]
struct Model {
    /// (owner, flavour) -> bundle.
    bundles: BTreeMap<(String, usize), MBundle>,
    /// (user, client) -> granted bundles.
    grants: BTreeMap<(String, String), BTreeSet<(String, usize)>>,
}

type Outcome = Result<String, &'static str>;

fn kind(error: &AgentError) -> &'static str {
    match error {
        AgentError::PermissionDenied { .. } => "PermissionDenied",
        AgentError::UnknownUser { .. } => "UnknownUser",
        AgentError::UnknownClient { .. } => "UnknownClient",
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
        other => panic!("unexpected error {other}"),
    }
}

fn bundle_id(flavour: usize) -> String {
    format!("b{flavour}")
}

impl Model {
    /// The caller's user and client, after the caller checks.
    fn who(&self, c: usize) -> Result<(String, Option<String>), &'static str> {
        match c {
            0..=2 => Ok((USERS[c].to_owned(), None)),
            3 => Ok(("alice".into(), Some("app".into()))),
            4 => Ok(("bob".into(), Some("app".into()))),
            5 => Err("UnknownClient"),
            _ => Err("UnknownUser"),
        }
    }

    fn client_sees(&self, user: &str, client: &Option<String>, key: &(String, usize)) -> bool {
        match client {
            None => true,
            Some(client) => self
                .grants
                .get(&(user.to_owned(), client.clone()))
                .is_some_and(|g| g.contains(key)),
        }
    }

    /// Caller checks, bundle lookup and client visibility, in the shim's order.
    fn visible(
        &self,
        c: usize,
        key: &(String, usize),
    ) -> Result<(String, Option<String>), &'static str> {
        let (user, client) = self.who(c)?;
        if !self.bundles.contains_key(key) {
            return Err("UnknownBundle");
        }
        // A bundle the caller does not see is answered as if it did not exist.
        let bundle = &self.bundles[key];
        if !self.client_sees(&user, &client, key) || !Self::may_view(key, bundle, &user) {
            return Err("UnknownBundle");
        }
        Ok((user, client))
    }

    fn status(bundle: &MBundle, user: &str) -> Option<RecipientStatus> {
        bundle
            .recipients
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, s)| *s)
    }

    fn is_reader(key: &(String, usize), bundle: &MBundle, user: &str) -> bool {
        key.0 == user
            || Self::status(bundle, user) == Some(RecipientStatus::Accepted)
            || bundle.streams.iter().any(|s| s.creator == user)
    }

    fn may_view(key: &(String, usize), bundle: &MBundle, user: &str) -> bool {
        Self::is_reader(key, bundle, user)
            || Self::status(bundle, user) == Some(RecipientStatus::Pending)
            || Self::may_create(key, bundle, user)
    }

    fn sees(key: &(String, usize), bundle: &MBundle, stream: &MStream, user: &str) -> bool {
        key.0 == user || stream.creator == user || Self::access(key, bundle, stream, user).is_some()
    }

    /// The stream, if the user sees it (else it is answered as if it did not exist).
    fn seen<'b>(
        key: &(String, usize),
        bundle: &'b MBundle,
        stream: u64,
        user: &str,
    ) -> Result<&'b MStream, &'static str> {
        bundle
            .streams
            .get(stream as usize)
            .filter(|s| Self::sees(key, bundle, s, user))
            .ok_or("UnknownStream")
    }

    fn may_create(key: &(String, usize), bundle: &MBundle, user: &str) -> bool {
        key.0 == user
            || match bundle.flavour {
                0 => false,
                1 => true,
                _ => Self::status(bundle, user) == Some(RecipientStatus::Accepted),
            }
    }

    fn access(
        key: &(String, usize),
        bundle: &MBundle,
        stream: &MStream,
        user: &str,
    ) -> Option<Retention> {
        let owner = key.0 == user;
        let creator = stream.creator == user;
        let recipient =
            stream.policy.shared && Self::status(bundle, user) == Some(RecipientStatus::Accepted);
        if !(owner || creator || recipient) {
            return None;
        }
        let retention = if owner {
            stream.policy.internal
        } else {
            stream.policy.external
        };
        if creator && retention == Retention::Ephemeral {
            return None;
        }
        Some(retention)
    }

    fn cursor(bundle: &MBundle, user: &str, stream: u64) -> u64 {
        bundle
            .cursors
            .get(user)
            .and_then(|c| c.get(&stream))
            .copied()
            .unwrap_or(0)
    }

    fn trim_point(
        key: &(String, usize),
        bundle: &MBundle,
        no: u64,
        stream: &MStream,
    ) -> Option<u64> {
        let mut point = stream.records.len() as u64;
        let owner = &key.0;
        if !(stream.creator == *owner && stream.policy.internal == Retention::Ephemeral) {
            if stream.policy.internal == Retention::Persistent {
                return None;
            }
            point = point.min(Self::cursor(bundle, owner, no));
        }
        if stream.creator != *owner && stream.policy.external == Retention::Persistent {
            return None;
        }
        if stream.policy.shared {
            for (user, status) in &bundle.recipients {
                if *status == RecipientStatus::Rejected || *user == stream.creator {
                    continue;
                }
                if stream.policy.external == Retention::Persistent {
                    return None;
                }
                point = point.min(Self::cursor(bundle, user, no));
            }
        }
        Some(point)
    }

    fn trim_all(&mut self) {
        for (key, bundle) in self.bundles.iter_mut() {
            let points: Vec<Option<u64>> = bundle
                .streams
                .iter()
                .enumerate()
                .map(|(no, s)| Self::trim_point(key, bundle, no as u64, s))
                .collect();
            for (stream, point) in bundle.streams.iter_mut().zip(points) {
                if let Some(point) = point {
                    stream.first_seq = stream.first_seq.max(point);
                }
            }
        }
    }

    fn page(&self, key: &(String, usize), user: &str) -> (Vec<(u64, u64, Vec<u8>)>, Position) {
        let bundle = &self.bundles[key];
        let mut items = Vec::new();
        let mut next = Position::default();
        if let Some(cursor) = bundle.cursors.get(user) {
            for (&s, &n) in cursor {
                next.set(StreamNo(s), n);
            }
        }
        'streams: for (no, stream) in bundle.streams.iter().enumerate() {
            let no = no as u64;
            if Self::access(key, bundle, stream, user).is_none() {
                continue;
            }
            let mut seq = Self::cursor(bundle, user, no).max(stream.first_seq);
            while seq < stream.records.len() as u64 {
                if items.len() >= PAGE.records_max {
                    break 'streams;
                }
                items.push((no, seq, stream.records[seq as usize].clone()));
                seq += 1;
                next.set(StreamNo(no), seq);
            }
        }
        (items, next)
    }

    fn ack(&mut self, key: &(String, usize), user: &str, stream: u64, next_seq: u64) -> Outcome {
        let bundle = &self.bundles[key];
        let Some(s) = bundle.streams.get(stream as usize) else {
            return Err("UnknownStream");
        };
        if !Self::sees(key, bundle, s, user) || next_seq <= Self::cursor(bundle, user, stream) {
            return Ok(String::new());
        }
        if Self::access(key, bundle, s, user).is_none() {
            return Err("PermissionDenied");
        }
        if next_seq > s.records.len() as u64 {
            return Err("AckBeyondTail");
        }
        let bundle = self.bundles.get_mut(key).expect("exists");
        let slot = bundle
            .cursors
            .entry(user.to_owned())
            .or_default()
            .entry(stream)
            .or_insert(0);
        *slot = (*slot).max(next_seq);
        Ok(String::new())
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        let key = |owner: usize, flavour: usize| (USERS[owner].to_owned(), flavour);
        match op {
            Op::CreateBundle { caller, flavour } => {
                let (user, client) = self.who(*caller)?;
                let k = (user.clone(), *flavour);
                if self.bundles.contains_key(&k) {
                    return Err("BundleExists");
                }
                self.bundles.insert(
                    k.clone(),
                    MBundle {
                        flavour: *flavour,
                        ..MBundle::default()
                    },
                );
                if let Some(client) = client {
                    self.grants.entry((user, client)).or_default().insert(k);
                }
                Ok(String::new())
            }
            Op::SetRecipients {
                caller,
                owner,
                flavour,
                users,
            } => {
                let k = key(*owner, *flavour);
                let (user, _) = self.visible(*caller, &k)?;
                if user != k.0 {
                    return Err("PermissionDenied");
                }
                let wanted: Vec<String> = dedup(users)
                    .into_iter()
                    .map(|u| USERS[u].to_owned())
                    .collect();
                if wanted.contains(&k.0) {
                    return Err("OwnerAsRecipient");
                }
                let bundle = self.bundles.get_mut(&k).expect("exists");
                let old = std::mem::take(&mut bundle.recipients);
                bundle.recipients = wanted
                    .iter()
                    .map(|u| {
                        (
                            u.clone(),
                            old.iter()
                                .find(|(o, _)| o == u)
                                .map_or(RecipientStatus::Pending, |(_, s)| *s),
                        )
                    })
                    .collect();
                // Cursors stay: what a removed user took stays taken if it is added back.
                Ok(String::new())
            }
            Op::Respond {
                caller,
                owner,
                flavour,
                accept,
            } => {
                let k = key(*owner, *flavour);
                let (user, client) = self.who(*caller)?;
                if client.is_some() {
                    return Err("PermissionDenied");
                }
                // Not invited and no such bundle are one answer.
                let bundle = self.bundles.get_mut(&k).ok_or("NotInvited")?;
                let entry = bundle
                    .recipients
                    .iter_mut()
                    .find(|(u, _)| *u == user)
                    .ok_or("NotInvited")?;
                entry.1 = if *accept {
                    RecipientStatus::Accepted
                } else {
                    RecipientStatus::Rejected
                };
                Ok(String::new())
            }
            Op::Grant {
                caller,
                owner,
                flavour,
            } => {
                let k = key(*owner, *flavour);
                let (user, client) = self.who(*caller)?;
                if client.is_some() {
                    return Err("PermissionDenied");
                }
                if user == "carol" {
                    return Err("UnknownClient");
                }
                let bundle = self.bundles.get(&k).ok_or("UnknownBundle")?;
                if !Self::may_view(&k, bundle, &user) {
                    return Err("UnknownBundle");
                }
                self.grants
                    .entry((user, "app".into()))
                    .or_default()
                    .insert(k);
                Ok(String::new())
            }
            Op::CreateStream {
                caller,
                owner,
                flavour,
                continuous,
                policy,
            } => {
                let k = key(*owner, *flavour);
                let (user, _) = self.visible(*caller, &k)?;
                let bundle = &self.bundles[&k];
                if !Self::may_create(&k, bundle, &user) {
                    return Err("PermissionDenied");
                }
                let defaults = defaults(bundle.flavour);
                let chosen = policy.map(|p| POLICIES[p]);
                let policy = if user == k.0 {
                    chosen.unwrap_or(defaults.policy)
                } else {
                    if chosen.is_some_and(|p| p != defaults.policy) || defaults.write_once {
                        return Err("PermissionDenied");
                    }
                    defaults.policy
                };
                let _ = continuous;
                let bundle = self.bundles.get_mut(&k).expect("exists");
                bundle.streams.push(MStream {
                    creator: user,
                    policy,
                    sealed: false,
                    records: Vec::new(),
                    first_seq: 0,
                });
                Ok(format!("{}", bundle.streams.len() - 1))
            }
            Op::PutDiscrete {
                caller,
                owner,
                flavour,
                payload,
            } => {
                let k = key(*owner, *flavour);
                let (user, _) = self.visible(*caller, &k)?;
                let bundle = &self.bundles[&k];
                if !Self::may_create(&k, bundle, &user) {
                    return Err("PermissionDenied");
                }
                // Owner or not, a whole submission gets the bundle's default policy.
                let policy = defaults(bundle.flavour).policy;
                let bundle = self.bundles.get_mut(&k).expect("exists");
                bundle.streams.push(MStream {
                    creator: user,
                    policy,
                    sealed: true,
                    records: vec![payload.clone()],
                    first_seq: 0,
                });
                Ok(format!("{}", bundle.streams.len() - 1))
            }
            Op::Append {
                caller,
                owner,
                flavour,
                stream,
                payload,
            } => {
                let k = key(*owner, *flavour);
                let (user, _) = self.visible(*caller, &k)?;
                let s = Self::seen(&k, &self.bundles[&k], *stream, &user)?;
                if s.creator != user {
                    return Err("PermissionDenied");
                }
                if s.sealed {
                    return Err("StreamSealed");
                }
                let s = &mut self.bundles.get_mut(&k).expect("exists").streams[*stream as usize];
                s.records.push(payload.clone());
                Ok(format!("{}", s.records.len() - 1))
            }
            Op::Seal {
                caller,
                owner,
                flavour,
                stream,
            } => {
                let k = key(*owner, *flavour);
                let (user, _) = self.visible(*caller, &k)?;
                let s = Self::seen(&k, &self.bundles[&k], *stream, &user)?;
                if s.creator != user {
                    return Err("PermissionDenied");
                }
                if s.sealed {
                    return Err("StreamSealed");
                }
                let s = &mut self.bundles.get_mut(&k).expect("exists").streams[*stream as usize];
                s.sealed = true;
                Ok(format!("{}", s.records.len()))
            }
            Op::Read {
                caller,
                owner,
                flavour,
                stream,
                seq,
            } => {
                let k = key(*owner, *flavour);
                let (user, _) = self.visible(*caller, &k)?;
                let bundle = &self.bundles[&k];
                let s = Self::seen(&k, bundle, *stream, &user)?;
                let retention = Self::access(&k, bundle, s, &user).ok_or("PermissionDenied")?;
                if retention == Retention::Ephemeral && *seq < Self::cursor(bundle, &user, *stream)
                {
                    return Err("AlreadyTaken");
                }
                if *seq < s.first_seq || *seq >= s.records.len() as u64 {
                    return Err("SeqOutOfRange");
                }
                Ok(format!("{:?}", s.records[*seq as usize]))
            }
            Op::Fetch {
                caller,
                owner,
                flavour,
            }
            | Op::Take {
                caller,
                owner,
                flavour,
            } => {
                let k = key(*owner, *flavour);
                let (user, _) = self.visible(*caller, &k)?;
                if !Self::is_reader(&k, &self.bundles[&k], &user) {
                    return Err("PermissionDenied");
                }
                let (items, next) = self.page(&k, &user);
                if matches!(op, Op::Take { .. }) {
                    for (stream, next_seq) in next.0.clone() {
                        self.ack(&k, &user, stream.0, next_seq)?;
                    }
                }
                Ok(format!("{items:?}"))
            }
            Op::Ack {
                caller,
                owner,
                flavour,
                stream,
                next_seq,
            } => {
                let k = key(*owner, *flavour);
                let (user, _) = self.visible(*caller, &k)?;
                if !Self::is_reader(&k, &self.bundles[&k], &user) {
                    return Err("PermissionDenied");
                }
                self.ack(&k, &user, *stream, *next_seq)
            }
            Op::Reopen
            | Op::Receive { .. }
            | Op::Replay { .. }
            | Op::MirrorRespond { .. }
            | Op::MirrorTake { .. } => Ok(String::new()),
        }
    }
}

fn dedup(users: &[usize]) -> Vec<usize> {
    let mut seen = Vec::new();
    for &u in users {
        if !seen.contains(&u) {
            seen.push(u);
        }
    }
    seen
}

// ----- the system under test ----------------------------------------------------------

fn bref(owner: usize, flavour: usize) -> BundleRef {
    BundleRef::new(
        &Address::new(None, USERS[owner], AGENT).expect("valid"),
        &bundle_id(flavour),
    )
    .expect("valid")
}

fn run(agent: &mut Option<Agent<SimPmem>>, op: &Op) -> Outcome {
    let a = agent.as_ref().expect("open");
    let ok = |r: Result<String, AgentError>| r.map_err(|e| kind(&e));
    match op {
        Op::CreateBundle { caller: c, flavour } => ok(a
            .create_bundle(
                &caller(*c),
                &bundle_id(*flavour),
                Metadata::new(),
                defaults(*flavour),
            )
            .map(|_| String::new())),
        Op::SetRecipients {
            caller: c,
            owner,
            flavour,
            users,
        } => {
            let addresses: Vec<Address> = dedup(users)
                .into_iter()
                .map(|u| Address::new(None, USERS[u], AGENT).expect("valid"))
                .collect();
            ok(
                a.set_recipients(&caller(*c), &bref(*owner, *flavour), &addresses)
                    .map(|()| String::new()),
            )
        }
        Op::Respond {
            caller: c,
            owner,
            flavour,
            accept,
        } => ok(a
            .respond(&caller(*c), &bref(*owner, *flavour), *accept)
            .map(|()| String::new())),
        Op::Grant {
            caller: c,
            owner,
            flavour,
        } => ok(a
            .grant(&caller(*c), "app", &bref(*owner, *flavour))
            .map(|()| String::new())),
        Op::CreateStream {
            caller: c,
            owner,
            flavour,
            continuous,
            policy,
        } => {
            let spec = StreamSpec {
                label: b"s".to_vec(),
                kind: if *continuous {
                    StreamKind::Continuous
                } else {
                    StreamKind::Discrete
                },
                policy: policy.map(|p| POLICIES[p]),
            };
            ok(a.create_stream(&caller(*c), &bref(*owner, *flavour), spec)
                .map(|no| format!("{}", no.0)))
        }
        Op::PutDiscrete {
            caller: c,
            owner,
            flavour,
            payload,
        } => ok(a
            .put_discrete(&caller(*c), &bref(*owner, *flavour), b"f", &[payload])
            .map(|no| format!("{}", no.0))),
        Op::Append {
            caller: c,
            owner,
            flavour,
            stream,
            payload,
        } => ok(a
            .append(
                &caller(*c),
                &bref(*owner, *flavour),
                StreamNo(*stream),
                payload,
            )
            .map(|seq| format!("{seq}"))),
        Op::Seal {
            caller: c,
            owner,
            flavour,
            stream,
        } => ok(a
            .seal(&caller(*c), &bref(*owner, *flavour), StreamNo(*stream))
            .map(|n| format!("{n}"))),
        Op::Read {
            caller: c,
            owner,
            flavour,
            stream,
            seq,
        } => ok(a
            .read(
                &caller(*c),
                &bref(*owner, *flavour),
                StreamNo(*stream),
                *seq,
            )
            .map(|p| format!("{p:?}"))),
        Op::Fetch {
            caller: c,
            owner,
            flavour,
        } => {
            let page = a.fetch(&caller(*c), &bref(*owner, *flavour), None, PAGE);
            ok(page.map(|p| {
                format!(
                    "{:?}",
                    p.items
                        .into_iter()
                        .map(|d| (d.stream.0, d.seq, d.payload))
                        .collect::<Vec<_>>()
                )
            }))
        }
        Op::Take {
            caller: c,
            owner,
            flavour,
        } => {
            let page = a.take(&caller(*c), &bref(*owner, *flavour), PAGE);
            ok(page.map(|p| {
                format!(
                    "{:?}",
                    p.items
                        .into_iter()
                        .map(|d| (d.stream.0, d.seq, d.payload))
                        .collect::<Vec<_>>()
                )
            }))
        }
        Op::Ack {
            caller: c,
            owner,
            flavour,
            stream,
            next_seq,
        } => {
            let mut position = Position::default();
            position.set(StreamNo(*stream), *next_seq);
            ok(a.ack(&caller(*c), &bref(*owner, *flavour), &position)
                .map(|()| String::new()))
        }
        Op::Reopen => {
            let pmem = agent.take().expect("open").close();
            let (reopened, _) = Agent::open(pmem, config()).expect("reopen");
            *agent = Some(reopened);
            Ok(String::new())
        }
        Op::Receive { .. }
        | Op::Replay { .. }
        | Op::MirrorRespond { .. }
        | Op::MirrorTake { .. } => {
            unreachable!("adversarial operations run in run_adversary")
        }
    }
}

/// Everything each user can see, compared in full at the end.
fn final_view(agent: &Agent<SimPmem>, model: &Model) -> Result<(), TestCaseError> {
    for (key, bundle) in &model.bundles {
        let owner = USERS.iter().position(|u| *u == key.0).expect("known owner");
        let r = bref(owner, key.1);
        for user in USERS {
            let caller = Caller::user(user).expect("valid");
            let expected: Vec<(u64, u64, Vec<u8>)> = bundle
                .streams
                .iter()
                .enumerate()
                .filter(|(_, s)| Model::access(key, bundle, s, user).is_some())
                .flat_map(|(no, s)| {
                    let from = s.first_seq.max(Model::cursor(bundle, user, no as u64));
                    (from..s.records.len() as u64)
                        .map(move |seq| (no as u64, seq, s.records[seq as usize].clone()))
                })
                .collect();
            let all = PageLimit {
                records_max: usize::MAX,
                bytes_max: usize::MAX,
            };
            match agent.fetch(&caller, &r, None, all) {
                Ok(page) => {
                    let got: Vec<(u64, u64, Vec<u8>)> = page
                        .items
                        .into_iter()
                        .map(|d| (d.stream.0, d.seq, d.payload))
                        .collect();
                    prop_assert_eq!(got, expected, "{} reading {:?}", user, key);
                }
                Err(AgentError::PermissionDenied { .. }) => {
                    prop_assert!(!Model::is_reader(key, bundle, user));
                }
                Err(AgentError::UnknownBundle { .. }) => {
                    prop_assert!(!Model::may_view(key, bundle, user));
                }
                Err(other) => return Err(TestCaseError::fail(format!("{user}: {other}"))),
            }
            for (no, stream) in bundle.streams.iter().enumerate() {
                let info = agent
                    .list_streams(&Caller::user(&key.0).expect("valid"), &r)
                    .expect("owner lists");
                let got = info
                    .iter()
                    .find(|i| i.no.0 == no as u64)
                    .expect("stream exists");
                prop_assert_eq!(
                    (got.first_seq, got.next_seq),
                    (stream.first_seq, stream.records.len() as u64)
                );
            }
        }
    }
    Ok(())
}

/// Bundles and recipients every case starts from (so that most random operations reach
/// the interesting checks); these go through model and shim like any other operation.
fn setup() -> Vec<Op> {
    let mut ops: Vec<Op> = (0..3)
        .map(|flavour| Op::CreateBundle { caller: 0, flavour })
        .collect();
    ops.push(Op::CreateBundle {
        caller: 1,
        flavour: 2,
    });
    ops.push(Op::SetRecipients {
        caller: 0,
        owner: 0,
        flavour: 0,
        users: vec![1, 2],
    });
    ops.push(Op::SetRecipients {
        caller: 0,
        owner: 0,
        flavour: 2,
        users: vec![1, 2],
    });
    ops.push(Op::SetRecipients {
        caller: 1,
        owner: 1,
        flavour: 2,
        users: vec![0],
    });
    for (caller, owner, flavour) in [(1, 0, 0), (1, 0, 2), (2, 0, 2), (0, 1, 2)] {
        ops.push(Op::Respond {
            caller,
            owner,
            flavour,
            accept: true,
        });
    }
    for (caller, owner, flavour) in [(0, 0, 0), (0, 0, 2), (1, 1, 2), (1, 0, 2)] {
        ops.push(Op::CreateStream {
            caller,
            owner,
            flavour,
            continuous: true,
            policy: None,
        });
    }
    ops.push(Op::CreateStream {
        caller: 0,
        owner: 0,
        flavour: 0,
        continuous: true,
        policy: Some(1),
    });
    // Peer p shares its bundle with alice and bob; alice accepts.
    ops.push(Op::Receive {
        peer: 0,
        envelopes: vec![
            Env::Invite {
                owner: 0,
                recipient: 0,
            },
            Env::Invite {
                owner: 0,
                recipient: 1,
            },
        ],
    });
    ops.push(Op::MirrorRespond {
        caller: 0,
        owner: 0,
        accept: true,
    });
    ops
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn shim_matches_the_model(ops in proptest::collection::vec(op_strategy(), 1..80)) {
        let agent = Agent::create(SimPmem::new(common::POOL_BYTES), AGENT, config()).expect("create");
        for user in USERS {
            agent.add_user(user).expect("user");
        }
        agent.register_client(&caller(0), "app").expect("client");
        agent.register_client(&caller(1), "app").expect("client");
        let mut agent = Some(agent);
        let mut model = Model::default();
        let mut history = Vec::new();
        let mut ledger = TakenLedger::default();
        let users: Vec<Caller> = (0..USERS.len()).map(caller).collect();
        let bundles = every_bundle();
        for (step, op) in setup().iter().chain(&ops).enumerate() {
            let live = agent.as_ref().expect("open");
            let adversarial = matches!(
                op,
                Op::Receive { .. } | Op::Replay { .. } | Op::MirrorRespond { .. } | Op::MirrorTake { .. }
            );
            let before = if adversarial { view(live) } else { View::new() };
            if let Some((peer, result)) = run_adversary(live, op, &mut history) {
                if std::env::var_os("MODEL_STATS").is_some() {
                    let name = format!("{op:?}");
                    let outcome = result.as_ref().map_err(|e| kind(e));
                    eprintln!("STAT {} {:?}", name.split([' ', '{']).next().unwrap_or(""), outcome);
                }
                let after = view(live);
                check_adversary(live, op, peer, &result, &before, &after)
                    .map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
                ledger
                    .check_and_update(live, &users, &bundles)
                    .map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
                continue;
            }
            let expected = model.apply(op);
            if expected.is_ok() {
                model.trim_all();
            }
            let got = run(&mut agent, op);
            if std::env::var_os("MODEL_STATS").is_some() {
                let name = format!("{op:?}");
                eprintln!("STAT {} {:?}", name.split([' ', '{']).next().unwrap_or(""), got.as_ref().err());
            }
            prop_assert_eq!(&got, &expected, "step {}: {:?}", step, op);
            // (A refused local call changing nothing is the model's own check: it changes
            // nothing on a refusal, and every later result and the final views must match.)
            ledger
                .check_and_update(agent.as_ref().expect("open"), &users, &bundles)
                .map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
        }
        let agent = agent.expect("open");
        final_view(&agent, &model)?;
        let (reopened, _) = Agent::open(agent.close(), config()).expect("reopen");
        final_view(&reopened, &model)?;
    }
}

// ----- the adversary: peer agents and users acting on mirrors ---------------------------
//
// Peers send arbitrary envelopes: genuine ones for their own bundle, and forged ones
// (creators and recipients on other agents, this agent's users among them; other agents'
// bundles; gaps, duplicates, out-of-order and replayed batches). Local users answer and
// take on the mirrors. These operations are not predicted by the model; the oracle is:
// * a refused envelope batch or call changes no user's (or client's) observable state;
// * an accepted one changes nothing about bundles owned here (the model keeps predicting
//   those exactly) nor about mirrors owned by agents other than the sender;
// * no bundle any local user sees holds a stream created by a user of this agent unless
//   it is owned here (a peer speaks only for its own users);
// * an ephemeral record a user took (the highest cursor ever observed, kept by the test,
//   not the store) is never served to that user again, across reopens.

const PEERS: [&str; 2] = ["p.example", "q.example"];

/// One envelope. `owner`: 0 and 1 the bundle `zed@<peer>/m` of each peer, 2 alice's local
/// bundle b0. `recipient`: 0..3 the local users, 3 `app:alice` here, 4 `dan@p.example`, 5
/// `erin@q.example`. `creator`: 0 `zed` of the bundle owner's agent (genuine), 1
/// `alice` here, 2 `dan@p.example`, 3 `erin@q.example`.
#[derive(Debug, Clone)]
enum Env {
    Invite {
        owner: usize,
        recipient: usize,
    },
    Response {
        owner: usize,
        recipient: usize,
        accepted: bool,
    },
    Metadata {
        owner: usize,
        value: u8,
    },
    RecipientRemoved {
        owner: usize,
        recipient: usize,
    },
    Data {
        owner: usize,
        stream: u64,
        creator: usize,
        seq: u64,
        relabel: bool,
    },
    Sealed {
        owner: usize,
        stream: u64,
        creator: usize,
        count: u64,
    },
    StreamDeleted {
        owner: usize,
        stream: u64,
    },
}

fn peer_bundle(owner: usize) -> BundleRef {
    match owner {
        0 | 1 => BundleRef::new(
            &Address::new(None, "zed", PEERS[owner]).expect("valid"),
            "m",
        )
        .expect("valid"),
        _ => bref(0, 0),
    }
}

fn remote_address(index: usize) -> Address {
    match index {
        0..=2 => Address::new(None, USERS[index], AGENT),
        3 => Address::new(Some("app"), "alice", AGENT),
        4 => Address::new(None, "dan", PEERS[0]),
        _ => Address::new(None, "erin", PEERS[1]),
    }
    .expect("valid")
}

fn descriptor(owner: usize, stream: u64, creator: usize, relabel: bool) -> StreamDescriptor {
    let creator = match creator {
        0 => Address::new(None, "zed", peer_bundle(owner).owner().agent()).expect("valid"),
        1 => remote_address(0),
        2 => remote_address(4),
        _ => remote_address(5),
    };
    StreamDescriptor {
        creator,
        kind: StreamKind::Continuous,
        policy: if stream % 2 == 0 {
            StreamPolicy::EPHEMERAL_SHARED
        } else {
            StreamPolicy::PERSISTENT_SHARED
        },
        label: if relabel {
            b"t".to_vec()
        } else {
            b"s".to_vec()
        },
    }
}

fn envelope(env: &Env) -> Envelope {
    match *env {
        Env::Invite { owner, recipient } => Envelope::Invite {
            bundle: peer_bundle(owner),
            recipient: remote_address(recipient),
            metadata: Metadata::new().with("k", "v"),
        },
        Env::Response {
            owner,
            recipient,
            accepted,
        } => Envelope::Response {
            bundle: peer_bundle(owner),
            recipient: remote_address(recipient),
            accepted,
        },
        Env::Metadata { owner, value } => Envelope::Metadata {
            bundle: peer_bundle(owner),
            metadata: Metadata::new().with("k", vec![value]),
        },
        Env::RecipientRemoved { owner, recipient } => Envelope::RecipientRemoved {
            bundle: peer_bundle(owner),
            recipient: remote_address(recipient),
        },
        Env::Data {
            owner,
            stream,
            creator,
            seq,
            relabel,
        } => Envelope::Data {
            bundle: peer_bundle(owner),
            stream: StreamNo(stream),
            descriptor: descriptor(owner, stream, creator, relabel),
            seq,
            payload: vec![owner as u8, stream as u8, seq as u8],
        },
        Env::Sealed {
            owner,
            stream,
            creator,
            count,
        } => Envelope::Sealed {
            bundle: peer_bundle(owner),
            stream: StreamNo(stream),
            descriptor: descriptor(owner, stream, creator, false),
            record_count: count,
        },
        Env::StreamDeleted { owner, stream } => Envelope::StreamDeleted {
            bundle: peer_bundle(owner),
            stream: StreamNo(stream),
        },
    }
}

fn env_strategy() -> impl Strategy<Value = Env> {
    let owner = prop_oneof![6 => Just(0usize), 2 => Just(1usize), 1 => Just(2usize)];
    let recipient = prop_oneof![3 => 0usize..3, 1 => 3usize..6];
    let creator = prop_oneof![8 => Just(0usize), 1 => 1usize..4];
    let stream = 0u64..3;
    prop_oneof![
        2 => (owner.clone(), recipient.clone()).prop_map(|(owner, recipient)| Env::Invite { owner, recipient }),
        1 => (owner.clone(), recipient.clone(), any::<bool>())
            .prop_map(|(owner, recipient, accepted)| Env::Response { owner, recipient, accepted }),
        1 => (owner.clone(), any::<u8>()).prop_map(|(owner, value)| Env::Metadata { owner, value }),
        1 => (owner.clone(), recipient).prop_map(|(owner, recipient)| Env::RecipientRemoved { owner, recipient }),
        8 => (owner.clone(), stream.clone(), creator.clone(), 0u64..5, proptest::bool::weighted(0.05))
            .prop_map(|(owner, stream, creator, seq, relabel)| Env::Data { owner, stream, creator, seq, relabel }),
        1 => (owner.clone(), stream.clone(), creator, 0u64..5)
            .prop_map(|(owner, stream, creator, count)| Env::Sealed { owner, stream, creator, count }),
        1 => (owner, stream).prop_map(|(owner, stream)| Env::StreamDeleted { owner, stream }),
    ]
}

/// Every local bundle the model knows of (alice's and bob's) and both peers' bundles.
fn every_bundle() -> Vec<BundleRef> {
    let mut all: Vec<BundleRef> = (0..2)
        .flat_map(|owner| (0..3).map(move |flavour| bref(owner, flavour)))
        .collect();
    all.push(peer_bundle(0));
    all.push(peer_bundle(1));
    all
}

/// The observers: the three users and `app:alice`.
fn observers() -> Vec<Caller> {
    vec![caller(0), caller(1), caller(2), caller(3)]
}

const EVERYTHING: PageLimit = PageLimit {
    records_max: usize::MAX,
    bytes_max: usize::MAX,
};

fn shown<T: std::fmt::Debug>(result: Result<T, AgentError>) -> String {
    match result {
        Ok(value) => format!("{value:?}"),
        Err(error) => format!("error {}", kind(&error)),
    }
}

/// Everything every observer may see: (observer, bundle or "" for the bundle list and the
/// inbox) -> what the read-only API shows.
type View = BTreeMap<(usize, String), String>;

fn view(agent: &Agent<SimPmem>) -> View {
    let mut view = View::new();
    for (index, observer) in observers().iter().enumerate() {
        let local_listed = agent.list_bundles(observer).map(|list| {
            list.into_iter()
                .filter(|b| b.owner().agent() == AGENT)
                .collect::<Vec<_>>()
        });
        view.insert((index, String::new()), shown(local_listed));
        for bundle in every_bundle() {
            let shows = format!(
                "info {} | streams {} | cursor {} | fetch {} | invited {}",
                shown(agent.bundle_info(observer, &bundle)),
                shown(agent.list_streams(observer, &bundle)),
                shown(agent.cursor(observer, &bundle)),
                shown(agent.fetch(observer, &bundle, None, EVERYTHING)),
                shown(agent.inbox(observer).map(|invitations| {
                    invitations
                        .into_iter()
                        .filter(|i| i.bundle == bundle)
                        .collect::<Vec<_>>()
                })),
            );
            view.insert((index, bundle.to_string()), shows);
        }
    }
    view
}

/// The first difference between two views among the keys `keep` selects.
fn view_diff(before: &View, after: &View, keep: impl Fn(&str) -> bool) -> Option<String> {
    before
        .iter()
        .zip(after)
        .find(|((key, mine), (_, theirs))| keep(&key.1) && mine != theirs)
        .map(|((key, mine), (_, theirs))| {
            format!(
                "observer {} on {:?}:\n  before {mine}\n  after  {theirs}",
                key.0, key.1
            )
        })
}

/// Runs an adversarial operation; `None` for operations that are not adversarial.
fn run_adversary(
    agent: &Agent<SimPmem>,
    op: &Op,
    history: &mut Vec<(usize, Vec<Env>)>,
) -> Option<(usize, Result<(), AgentError>)> {
    match op {
        Op::Receive { peer, envelopes } => {
            history.push((*peer, envelopes.clone()));
            let batch: Vec<Envelope> = envelopes.iter().map(envelope).collect();
            Some((*peer, agent.receive(PEERS[*peer], &batch).map(|_| ())))
        }
        Op::Replay { back } => {
            let (peer, envelopes) = history
                .len()
                .checked_sub(1 + back % history.len().max(1))
                .map(|at| history[at].clone())?;
            let batch: Vec<Envelope> = envelopes.iter().map(envelope).collect();
            Some((peer, agent.receive(PEERS[peer], &batch).map(|_| ())))
        }
        Op::MirrorRespond {
            caller: c,
            owner,
            accept,
        } => Some((
            *owner,
            agent.respond(&caller(*c), &peer_bundle(*owner), *accept),
        )),
        Op::MirrorTake { caller: c, owner } => Some((
            *owner,
            agent
                .take(&caller(*c), &peer_bundle(*owner), PAGE)
                .map(|_| ()),
        )),
        _ => None,
    }
}

/// The oracle of one adversarial operation by (or about the bundle of) peer `peer`.
fn check_adversary(
    agent: &Agent<SimPmem>,
    op: &Op,
    peer: usize,
    result: &Result<(), AgentError>,
    before: &View,
    after: &View,
) -> Result<(), TestCaseError> {
    if let Err(error) = result {
        if let Some(diff) = view_diff(before, after, |_| true) {
            return Err(TestCaseError::fail(format!(
                "{op:?} was refused ({error}) but changed {diff}"
            )));
        }
        return Ok(());
    }
    let sender_bundle = peer_bundle(peer).to_string();
    if let Some(diff) = view_diff(before, after, |key| key != sender_bundle) {
        return Err(TestCaseError::fail(format!(
            "{op:?} from {} changed what it may not: {diff}",
            PEERS[peer]
        )));
    }
    for observer in observers() {
        for bundle in every_bundle().iter().filter(|b| b.owner().agent() != AGENT) {
            let Ok(streams) = agent.list_streams(&observer, bundle) else {
                continue;
            };
            for stream in streams {
                prop_assert!(
                    stream.creator.agent() == bundle.owner().agent(),
                    "{} holds stream {} created by {}",
                    bundle,
                    stream.no,
                    stream.creator
                );
            }
        }
    }
    Ok(())
}
