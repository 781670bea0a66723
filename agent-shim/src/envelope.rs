//! What one agent sends another: the outbox's unit. The shim has no network; an agent
//! implementation moves envelopes (encoded with [`Envelope::encode`], or as values) from
//! one agent's outbox into the other's [`crate::Agent::receive`].

use crate::codec::{DecodeError, Reader, Writer};
use crate::model::{BundleRef, Metadata, StreamKind, StreamNo, StreamPolicy};
use crate::wire;
use crate::Address;

/// Envelope encoding version.
pub const ENVELOPE_VERSION: u8 = 1;

/// Largest data payload an envelope may carry (the engine's own record limit).
pub const ENVELOPE_PAYLOAD_MAX_BYTES: usize = pstream_engine::MAX_PAYLOAD_BYTES;

/// A stream's minimal metadata, sent with its data so a receiving agent can create its
/// copy whatever it saw before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescriptor {
    pub creator: Address,
    pub kind: StreamKind,
    pub policy: StreamPolicy,
    pub label: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// Owner agent -> recipient agent: a bundle was shared with `recipient`.
    Invite {
        bundle: BundleRef,
        recipient: Address,
        metadata: Metadata,
    },
    /// Recipient agent -> owner agent: `recipient` accepted or rejected the bundle.
    Response {
        bundle: BundleRef,
        recipient: Address,
        accepted: bool,
    },
    /// Owner agent -> recipient agent: the bundle's metadata changed.
    Metadata {
        bundle: BundleRef,
        metadata: Metadata,
    },
    /// Owner agent -> recipient agent: `recipient` is no longer a recipient.
    RecipientRemoved {
        bundle: BundleRef,
        recipient: Address,
    },
    /// Owner agent -> recipient agent: one record of a stream.
    Data {
        bundle: BundleRef,
        stream: StreamNo,
        descriptor: StreamDescriptor,
        seq: u64,
        payload: Vec<u8>,
    },
    /// Owner agent -> recipient agent: the stream holds exactly `record_count` records.
    Sealed {
        bundle: BundleRef,
        stream: StreamNo,
        descriptor: StreamDescriptor,
        record_count: u64,
    },
    /// Owner agent -> recipient agent: the stream was deleted.
    StreamDeleted { bundle: BundleRef, stream: StreamNo },
}

impl Envelope {
    pub fn bundle(&self) -> &BundleRef {
        match self {
            Envelope::Invite { bundle, .. }
            | Envelope::Response { bundle, .. }
            | Envelope::Metadata { bundle, .. }
            | Envelope::RecipientRemoved { bundle, .. }
            | Envelope::Data { bundle, .. }
            | Envelope::Sealed { bundle, .. }
            | Envelope::StreamDeleted { bundle, .. } => bundle,
        }
    }

    /// The agent this envelope must come from: the recipient's for a response, else the
    /// bundle owner's.
    pub fn sender_agent(&self) -> &str {
        match self {
            Envelope::Response { recipient, .. } => recipient.agent(),
            other => other.bundle().owner().agent(),
        }
    }

    /// Bytes of payload carried (0 for control envelopes).
    pub fn payload_bytes(&self) -> usize {
        match self {
            Envelope::Data { payload, .. } => payload.len(),
            _ => 0,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(ENVELOPE_VERSION);
        self.encode_into(&mut w);
        w.into_bytes()
    }

    pub(crate) fn encode_into(&self, w: &mut Writer) {
        match self {
            Envelope::Invite {
                bundle,
                recipient,
                metadata,
            } => {
                w.u8(1);
                wire::put_bundle(w, bundle);
                w.address(recipient);
                wire::put_metadata(w, metadata);
            }
            Envelope::Response {
                bundle,
                recipient,
                accepted,
            } => {
                w.u8(2);
                wire::put_bundle(w, bundle);
                w.address(recipient);
                w.bool(*accepted);
            }
            Envelope::Metadata { bundle, metadata } => {
                w.u8(3);
                wire::put_bundle(w, bundle);
                wire::put_metadata(w, metadata);
            }
            Envelope::RecipientRemoved { bundle, recipient } => {
                w.u8(4);
                wire::put_bundle(w, bundle);
                w.address(recipient);
            }
            Envelope::Data {
                bundle,
                stream,
                descriptor,
                seq,
                payload,
            } => {
                w.u8(5);
                wire::put_bundle(w, bundle);
                w.u64(stream.0);
                put_descriptor(w, descriptor);
                w.u64(*seq);
                w.bytes(payload);
            }
            Envelope::Sealed {
                bundle,
                stream,
                descriptor,
                record_count,
            } => {
                w.u8(6);
                wire::put_bundle(w, bundle);
                w.u64(stream.0);
                put_descriptor(w, descriptor);
                w.u64(*record_count);
            }
            Envelope::StreamDeleted { bundle, stream } => {
                w.u8(7);
                wire::put_bundle(w, bundle);
                w.u64(stream.0);
            }
        }
    }

    /// Decodes an envelope; never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != ENVELOPE_VERSION {
            return Err(DecodeError::BadVersion {
                version,
                supported: ENVELOPE_VERSION,
            });
        }
        let envelope = Envelope::decode_from(&mut r)?;
        r.finish()?;
        Ok(envelope)
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Envelope, DecodeError> {
        let tag = r.u8()?;
        let bundle = wire::get_bundle(r)?;
        Ok(match tag {
            1 => Envelope::Invite {
                bundle,
                recipient: r.address()?,
                metadata: wire::get_metadata(r)?,
            },
            2 => Envelope::Response {
                bundle,
                recipient: r.address()?,
                accepted: r.bool()?,
            },
            3 => Envelope::Metadata {
                bundle,
                metadata: wire::get_metadata(r)?,
            },
            4 => Envelope::RecipientRemoved {
                bundle,
                recipient: r.address()?,
            },
            5 => Envelope::Data {
                bundle,
                stream: StreamNo(r.u64()?),
                descriptor: get_descriptor(r)?,
                seq: r.u64()?,
                payload: r.bytes("payload", ENVELOPE_PAYLOAD_MAX_BYTES)?.to_vec(),
            },
            6 => Envelope::Sealed {
                bundle,
                stream: StreamNo(r.u64()?),
                descriptor: get_descriptor(r)?,
                record_count: r.u64()?,
            },
            7 => Envelope::StreamDeleted {
                bundle,
                stream: StreamNo(r.u64()?),
            },
            tag => {
                return Err(DecodeError::BadTag {
                    what: "envelope",
                    tag,
                })
            }
        })
    }
}

fn put_descriptor(w: &mut Writer, descriptor: &StreamDescriptor) {
    w.address(&descriptor.creator);
    wire::put_kind(w, descriptor.kind);
    wire::put_policy(w, &descriptor.policy);
    w.bytes(&descriptor.label);
}

fn get_descriptor(r: &mut Reader<'_>) -> Result<StreamDescriptor, DecodeError> {
    // Creators are users: a client part, if any, is dropped.
    let creator = r.address()?;
    Ok(StreamDescriptor {
        creator: creator.user_address(),
        kind: wire::get_kind(r)?,
        policy: wire::get_policy(r)?,
        label: wire::get_label(r)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Envelope> {
        let owner = Address::parse("alice@a").expect("valid");
        let bob = Address::parse("desn:bob@b").expect("valid");
        let bundle = BundleRef::new(&owner, "posts").expect("valid");
        let descriptor = StreamDescriptor {
            creator: owner.clone(),
            kind: StreamKind::Continuous,
            policy: StreamPolicy::EPHEMERAL_SHARED,
            label: b"cam".to_vec(),
        };
        vec![
            Envelope::Invite {
                bundle: bundle.clone(),
                recipient: bob.clone(),
                metadata: Metadata::new().with("k", "v"),
            },
            Envelope::Response {
                bundle: bundle.clone(),
                recipient: bob.clone(),
                accepted: true,
            },
            Envelope::Metadata {
                bundle: bundle.clone(),
                metadata: Metadata::new(),
            },
            Envelope::RecipientRemoved {
                bundle: bundle.clone(),
                recipient: bob,
            },
            Envelope::Data {
                bundle: bundle.clone(),
                stream: StreamNo(3),
                descriptor: descriptor.clone(),
                seq: 9,
                payload: vec![1, 2, 3],
            },
            Envelope::Sealed {
                bundle: bundle.clone(),
                stream: StreamNo(3),
                descriptor,
                record_count: 10,
            },
            Envelope::StreamDeleted {
                bundle,
                stream: StreamNo(3),
            },
        ]
    }

    #[test]
    fn round_trips_and_survives_every_truncation_and_bit_flip() {
        for envelope in samples() {
            let bytes = envelope.encode();
            assert_eq!(Envelope::decode(&bytes), Ok(envelope.clone()));
            for cut in 0..bytes.len() {
                assert!(Envelope::decode(&bytes[..cut]).is_err());
            }
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let _ = Envelope::decode(&flipped); // must not panic
            }
        }
    }
}
