//! Records of the system stream: one [`Change`] per acknowledged metadata change, and
//! snapshot parts. Replaying them in order rebuilds the metadata exactly.
//!
//! # Layout of a system record (little-endian)
//! ```text
//!   offset  size  field
//!   0       1     format version (SYS_RECORD_VERSION)
//!   1       1     kind: 1 = change, 2 = snapshot part
//!   2       2     reserved, zero
//!   4       4     body length in bytes (at most SYS_BODY_MAX_BYTES)
//!   8       len   body
//!   8+len   4     CRC-32 of bytes 0 .. 8+len
//! ```
//! The engine checksums its records too; this checksum is the shim's own end-to-end check,
//! and the version byte lets a later build refuse (rather than misread) a newer store.

use crate::address::NamePart;
use crate::codec::{DecodeError, Reader, Writer};
use crate::model::{BundleRef, Metadata, StreamDefaults, StreamKind, StreamPolicy};
use crate::wire;
use crate::Address;

pub const SYS_RECORD_VERSION: u8 = 1;
pub(crate) const SYS_HEADER_BYTES: usize = 8;
pub(crate) const SYS_TRAILER_BYTES: usize = 4;
pub(crate) const SYS_BODY_MAX_BYTES: usize = pstream_engine::MAX_PAYLOAD_BYTES;
const KIND_CHANGE: u8 = 1;
const KIND_SNAPSHOT_PART: u8 = 2;

const RESERVED_OFFSET: usize = 2;
const BODY_LEN_OFFSET: usize = RESERVED_OFFSET + 2;
const _: () = assert!(BODY_LEN_OFFSET + 4 == SYS_HEADER_BYTES);

/// Who a cursor belongs to: a local user (user-level address) or a peer agent (which
/// stores for all its recipients of a bundle).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ReaderKey {
    User(Address),
    Peer(String),
}

/// One metadata change. `apply` (in `state`) gives each its meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Init {
        agent: String,
    },
    UserAdded {
        user: String,
    },
    ClientRegistered {
        user: String,
        client: String,
    },
    Granted {
        user: String,
        client: String,
        bundle: BundleRef,
    },
    Revoked {
        user: String,
        client: String,
        bundle: BundleRef,
    },
    BundleCreated {
        bundle: BundleRef,
        metadata: Metadata,
        defaults: StreamDefaults,
        client: Option<String>,
    },
    MetadataSet {
        bundle: BundleRef,
        metadata: Metadata,
    },
    DefaultsSet {
        bundle: BundleRef,
        defaults: StreamDefaults,
    },
    RecipientsSet {
        bundle: BundleRef,
        recipients: Vec<Address>,
    },
    Responded {
        bundle: BundleRef,
        recipient: Address,
        accepted: bool,
    },
    StreamCreated(StreamCreated),
    StreamSealed {
        bundle: BundleRef,
        stream: u64,
        record_count: u64,
    },
    StreamDeleted {
        bundle: BundleRef,
        stream: u64,
    },
    StreamRebased {
        bundle: BundleRef,
        stream: u64,
        seq_base: u64,
    },
    CursorSet {
        bundle: BundleRef,
        reader: ReaderKey,
        entries: Vec<(u64, u64)>,
    },
    MirrorInvited {
        bundle: BundleRef,
        recipient: Address,
        metadata: Metadata,
    },
    MirrorRecipientRemoved {
        bundle: BundleRef,
        recipient: Address,
    },
    OutboxAcked {
        peer: String,
        control_through: Option<u64>,
        cursors: Vec<(BundleRef, Vec<(u64, u64)>)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamCreated {
    pub bundle: BundleRef,
    pub stream: u64,
    pub engine_id: u64,
    pub creator: Address,
    pub kind: StreamKind,
    pub policy: StreamPolicy,
    pub label: Vec<u8>,
    pub sealed_at: Option<u64>,
    pub seq_base: Option<u64>,
}

/// One part of a snapshot of the whole metadata state (a state can exceed one record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotPart {
    pub snapshot_id: u64,
    pub index: u32,
    pub count: u32,
    pub total_bytes: u64,
    pub total_crc: u32,
    pub chunk: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SysRecord {
    Change(Change),
    SnapshotPart(SnapshotPart),
}

impl SysRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Writer::new();
        let kind = match self {
            SysRecord::Change(change) => {
                change.encode_into(&mut body);
                KIND_CHANGE
            }
            SysRecord::SnapshotPart(part) => {
                body.u64(part.snapshot_id);
                body.u32(part.index);
                body.u32(part.count);
                body.u64(part.total_bytes);
                body.u32(part.total_crc);
                body.bytes(&part.chunk);
                KIND_SNAPSHOT_PART
            }
        };
        let body = body.into_bytes();
        let mut w = Writer::new();
        w.u8(SYS_RECORD_VERSION);
        w.u8(kind);
        w.u16(0);
        w.len(body.len());
        w.raw(&body);
        let mut bytes = w.into_bytes();
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(
            bytes.len(),
            SYS_HEADER_BYTES + body.len() + SYS_TRAILER_BYTES
        );
        bytes
    }

    /// Decodes a system record; never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<SysRecord, DecodeError> {
        if bytes.len() < SYS_HEADER_BYTES + SYS_TRAILER_BYTES {
            return Err(DecodeError::Truncated {
                at: 0,
                needed: SYS_HEADER_BYTES + SYS_TRAILER_BYTES,
                available: bytes.len(),
            });
        }
        let (framed, trailer) = bytes.split_at(bytes.len() - SYS_TRAILER_BYTES);
        let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let computed = crc32fast::hash(framed);
        if stored != computed {
            return Err(DecodeError::BadChecksum { stored, computed });
        }
        let mut r = Reader::new(framed);
        let version = r.u8()?;
        if version != SYS_RECORD_VERSION {
            return Err(DecodeError::BadVersion {
                version,
                supported: SYS_RECORD_VERSION,
            });
        }
        let kind = r.u8()?;
        let reserved = r.u16()?;
        if reserved != 0 {
            return Err(DecodeError::Inconsistent {
                what: "record header",
                detail: format!("reserved {reserved}"),
            });
        }
        let body_len = r.u32()? as usize;
        if body_len != r.remaining() {
            return Err(DecodeError::Inconsistent {
                what: "record length",
                detail: format!("header says {body_len}, record holds {}", r.remaining()),
            });
        }
        let record = match kind {
            KIND_CHANGE => SysRecord::Change(Change::decode_from(&mut r)?),
            KIND_SNAPSHOT_PART => SysRecord::SnapshotPart(SnapshotPart {
                snapshot_id: r.u64()?,
                index: r.u32()?,
                count: r.u32()?,
                total_bytes: r.u64()?,
                total_crc: r.u32()?,
                chunk: r.bytes("snapshot chunk", SYS_BODY_MAX_BYTES)?.to_vec(),
            }),
            tag => {
                return Err(DecodeError::BadTag {
                    what: "system record kind",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(record)
    }
}

pub(crate) fn put_reader(w: &mut Writer, reader: &ReaderKey) {
    match reader {
        ReaderKey::User(address) => {
            w.u8(0);
            w.address(address);
        }
        ReaderKey::Peer(agent) => {
            w.u8(1);
            w.str(agent);
        }
    }
}

pub(crate) fn get_reader(r: &mut Reader<'_>) -> Result<ReaderKey, DecodeError> {
    match r.u8()? {
        0 => Ok(ReaderKey::User(r.address()?.user_address())),
        1 => Ok(ReaderKey::Peer(r.name(NamePart::Agent)?)),
        tag => Err(DecodeError::BadTag {
            what: "reader",
            tag,
        }),
    }
}

impl Change {
    fn encode_into(&self, w: &mut Writer) {
        match self {
            Change::Init { agent } => {
                w.u8(1);
                w.str(agent);
            }
            Change::UserAdded { user } => {
                w.u8(2);
                w.str(user);
            }
            Change::ClientRegistered { user, client } => {
                w.u8(3);
                w.str(user);
                w.str(client);
            }
            Change::Granted {
                user,
                client,
                bundle,
            } => {
                w.u8(4);
                w.str(user);
                w.str(client);
                wire::put_bundle(w, bundle);
            }
            Change::Revoked {
                user,
                client,
                bundle,
            } => {
                w.u8(5);
                w.str(user);
                w.str(client);
                wire::put_bundle(w, bundle);
            }
            Change::BundleCreated {
                bundle,
                metadata,
                defaults,
                client,
            } => {
                w.u8(6);
                wire::put_bundle(w, bundle);
                wire::put_metadata(w, metadata);
                wire::put_defaults(w, defaults);
                w.opt_str(client.as_deref());
            }
            Change::MetadataSet { bundle, metadata } => {
                w.u8(7);
                wire::put_bundle(w, bundle);
                wire::put_metadata(w, metadata);
            }
            Change::DefaultsSet { bundle, defaults } => {
                w.u8(8);
                wire::put_bundle(w, bundle);
                wire::put_defaults(w, defaults);
            }
            Change::RecipientsSet { bundle, recipients } => {
                w.u8(9);
                wire::put_bundle(w, bundle);
                wire::put_addresses(w, recipients);
            }
            Change::Responded {
                bundle,
                recipient,
                accepted,
            } => {
                w.u8(10);
                wire::put_bundle(w, bundle);
                w.address(recipient);
                w.bool(*accepted);
            }
            Change::StreamCreated(created) => {
                w.u8(11);
                wire::put_bundle(w, &created.bundle);
                w.u64(created.stream);
                w.u64(created.engine_id);
                w.address(&created.creator);
                wire::put_kind(w, created.kind);
                wire::put_policy(w, &created.policy);
                w.bytes(&created.label);
                w.opt_u64(created.sealed_at);
                w.opt_u64(created.seq_base);
            }
            Change::StreamSealed {
                bundle,
                stream,
                record_count,
            } => {
                w.u8(12);
                wire::put_bundle(w, bundle);
                w.u64(*stream);
                w.u64(*record_count);
            }
            Change::StreamDeleted { bundle, stream } => {
                w.u8(13);
                wire::put_bundle(w, bundle);
                w.u64(*stream);
            }
            Change::StreamRebased {
                bundle,
                stream,
                seq_base,
            } => {
                w.u8(14);
                wire::put_bundle(w, bundle);
                w.u64(*stream);
                w.u64(*seq_base);
            }
            Change::CursorSet {
                bundle,
                reader,
                entries,
            } => {
                w.u8(15);
                wire::put_bundle(w, bundle);
                put_reader(w, reader);
                wire::put_entries(w, entries);
            }
            Change::MirrorInvited {
                bundle,
                recipient,
                metadata,
            } => {
                w.u8(16);
                wire::put_bundle(w, bundle);
                w.address(recipient);
                wire::put_metadata(w, metadata);
            }
            Change::MirrorRecipientRemoved { bundle, recipient } => {
                w.u8(17);
                wire::put_bundle(w, bundle);
                w.address(recipient);
            }
            Change::OutboxAcked {
                peer,
                control_through,
                cursors,
            } => {
                w.u8(18);
                w.str(peer);
                w.opt_u64(*control_through);
                w.len(cursors.len());
                for (bundle, entries) in cursors {
                    wire::put_bundle(w, bundle);
                    wire::put_entries(w, entries);
                }
            }
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Change, DecodeError> {
        Ok(match r.u8()? {
            1 => Change::Init {
                agent: r.name(NamePart::Agent)?,
            },
            2 => Change::UserAdded {
                user: r.name(NamePart::User)?,
            },
            3 => Change::ClientRegistered {
                user: r.name(NamePart::User)?,
                client: r.name(NamePart::Client)?,
            },
            4 => Change::Granted {
                user: r.name(NamePart::User)?,
                client: r.name(NamePart::Client)?,
                bundle: wire::get_bundle(r)?,
            },
            5 => Change::Revoked {
                user: r.name(NamePart::User)?,
                client: r.name(NamePart::Client)?,
                bundle: wire::get_bundle(r)?,
            },
            6 => Change::BundleCreated {
                bundle: wire::get_bundle(r)?,
                metadata: wire::get_metadata(r)?,
                defaults: wire::get_defaults(r)?,
                client: r.opt_name(NamePart::Client)?,
            },
            7 => Change::MetadataSet {
                bundle: wire::get_bundle(r)?,
                metadata: wire::get_metadata(r)?,
            },
            8 => Change::DefaultsSet {
                bundle: wire::get_bundle(r)?,
                defaults: wire::get_defaults(r)?,
            },
            9 => Change::RecipientsSet {
                bundle: wire::get_bundle(r)?,
                recipients: wire::get_addresses(r)?,
            },
            10 => Change::Responded {
                bundle: wire::get_bundle(r)?,
                recipient: r.address()?,
                accepted: r.bool()?,
            },
            11 => Change::StreamCreated(StreamCreated {
                bundle: wire::get_bundle(r)?,
                stream: r.u64()?,
                engine_id: r.u64()?,
                creator: r.address()?.user_address(),
                kind: wire::get_kind(r)?,
                policy: wire::get_policy(r)?,
                label: wire::get_label(r)?,
                sealed_at: r.opt_u64()?,
                seq_base: r.opt_u64()?,
            }),
            12 => Change::StreamSealed {
                bundle: wire::get_bundle(r)?,
                stream: r.u64()?,
                record_count: r.u64()?,
            },
            13 => Change::StreamDeleted {
                bundle: wire::get_bundle(r)?,
                stream: r.u64()?,
            },
            14 => Change::StreamRebased {
                bundle: wire::get_bundle(r)?,
                stream: r.u64()?,
                seq_base: r.u64()?,
            },
            15 => Change::CursorSet {
                bundle: wire::get_bundle(r)?,
                reader: get_reader(r)?,
                entries: wire::get_entries(r)?,
            },
            16 => Change::MirrorInvited {
                bundle: wire::get_bundle(r)?,
                recipient: r.address()?,
                metadata: wire::get_metadata(r)?,
            },
            17 => Change::MirrorRecipientRemoved {
                bundle: wire::get_bundle(r)?,
                recipient: r.address()?,
            },
            18 => {
                let peer = r.name(NamePart::Agent)?;
                let control_through = r.opt_u64()?;
                let count = r.len("outbox cursors", usize::MAX, 16)?;
                let mut cursors = Vec::with_capacity(count);
                for _ in 0..count {
                    cursors.push((wire::get_bundle(r)?, wire::get_entries(r)?));
                }
                Change::OutboxAcked {
                    peer,
                    control_through,
                    cursors,
                }
            }
            tag => {
                return Err(DecodeError::BadTag {
                    what: "change",
                    tag,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StreamKind;

    fn samples() -> Vec<Change> {
        let owner = Address::parse("alice@a").expect("valid");
        let bob = Address::parse("desn:bob@a").expect("valid");
        let bundle = BundleRef::new(&owner, "b1").expect("valid");
        vec![
            Change::Init { agent: "a".into() },
            Change::UserAdded {
                user: "alice".into(),
            },
            Change::ClientRegistered {
                user: "alice".into(),
                client: "desn".into(),
            },
            Change::Granted {
                user: "alice".into(),
                client: "desn".into(),
                bundle: bundle.clone(),
            },
            Change::BundleCreated {
                bundle: bundle.clone(),
                metadata: Metadata::new().with("title", "hi"),
                defaults: StreamDefaults::default(),
                client: Some("desn".into()),
            },
            Change::RecipientsSet {
                bundle: bundle.clone(),
                recipients: vec![bob.clone()],
            },
            Change::Responded {
                bundle: bundle.clone(),
                recipient: bob.clone(),
                accepted: true,
            },
            Change::StreamCreated(StreamCreated {
                bundle: bundle.clone(),
                stream: 0,
                engine_id: 77,
                creator: owner,
                kind: StreamKind::Discrete,
                policy: StreamPolicy::default(),
                label: b"post".to_vec(),
                sealed_at: Some(1),
                seq_base: Some(0),
            }),
            Change::CursorSet {
                bundle: bundle.clone(),
                reader: ReaderKey::User(bob.user_address()),
                entries: vec![(0, 1)],
            },
            Change::OutboxAcked {
                peer: "b".into(),
                control_through: Some(3),
                cursors: vec![(bundle, vec![(0, 1)])],
            },
        ]
    }

    #[test]
    fn records_round_trip_and_reject_damage() {
        for change in samples() {
            let bytes = SysRecord::Change(change.clone()).encode();
            assert_eq!(SysRecord::decode(&bytes), Ok(SysRecord::Change(change)));
            for cut in 0..bytes.len() {
                assert!(SysRecord::decode(&bytes[..cut]).is_err());
            }
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    SysRecord::decode(&flipped).is_err(),
                    "bit {bit} flip went unnoticed"
                );
            }
        }
    }
}
