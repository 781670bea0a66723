//! Encodings of the model's value types, shared by change records, snapshots and envelopes.
//! Decoding re-checks every limit the live path enforces, so stored data can never hold
//! what the API would have refused.

use std::collections::{BTreeMap, BTreeSet};

use crate::address::NamePart;
use crate::codec::{DecodeError, Reader, Writer};
use crate::model::{
    BundleRef, Creators, Metadata, RecipientStatus, Retention, StreamDefaults, StreamKind,
    StreamPolicy, CREATORS_MAX, METADATA_ENTRIES_MAX, METADATA_TOTAL_MAX_BYTES,
    METADATA_VALUE_MAX_BYTES, RECIPIENTS_MAX, STREAM_LABEL_MAX_BYTES,
};
use crate::Address;

/// Smallest encoded address: client flag + two length prefixes + one byte each.
pub(crate) const ADDRESS_MIN_BYTES: usize = 11;

pub(crate) fn put_bundle(w: &mut Writer, bundle: &BundleRef) {
    w.address(bundle.owner());
    w.str(bundle.id());
}

pub(crate) fn get_bundle(r: &mut Reader<'_>) -> Result<BundleRef, DecodeError> {
    let owner = r.address()?;
    if owner.client().is_some() {
        return Err(DecodeError::Inconsistent {
            what: "bundle owner",
            detail: format!("{owner} has a client"),
        });
    }
    let id = r.name(NamePart::BundleId)?;
    Ok(BundleRef::new(&owner, &id)?)
}

pub(crate) fn put_metadata(w: &mut Writer, metadata: &Metadata) {
    w.len(metadata.0.len());
    for (key, value) in &metadata.0 {
        w.str(key);
        w.bytes(value);
    }
}

pub(crate) fn get_metadata(r: &mut Reader<'_>) -> Result<Metadata, DecodeError> {
    let count = r.len("metadata entries", METADATA_ENTRIES_MAX, 9)?;
    let mut map = BTreeMap::new();
    for _ in 0..count {
        let key = r.name(NamePart::MetadataKey)?;
        let value = r
            .bytes("metadata value", METADATA_VALUE_MAX_BYTES)?
            .to_vec();
        map.insert(key, value);
    }
    let metadata = Metadata(map);
    if metadata.0.len() != count || metadata.total_bytes() > METADATA_TOTAL_MAX_BYTES {
        return Err(DecodeError::Inconsistent {
            what: "metadata",
            detail: format!("{count} entries, {} bytes", metadata.total_bytes()),
        });
    }
    Ok(metadata)
}

fn retention_tag(retention: Retention) -> u8 {
    match retention {
        Retention::Persistent => 0,
        Retention::Ephemeral => 1,
    }
}

fn get_retention(r: &mut Reader<'_>) -> Result<Retention, DecodeError> {
    match r.u8()? {
        0 => Ok(Retention::Persistent),
        1 => Ok(Retention::Ephemeral),
        tag => Err(DecodeError::BadTag {
            what: "retention",
            tag,
        }),
    }
}

pub(crate) fn put_policy(w: &mut Writer, policy: &StreamPolicy) {
    w.u8(retention_tag(policy.internal));
    w.u8(retention_tag(policy.external));
    w.bool(policy.shared);
}

pub(crate) fn get_policy(r: &mut Reader<'_>) -> Result<StreamPolicy, DecodeError> {
    Ok(StreamPolicy {
        internal: get_retention(r)?,
        external: get_retention(r)?,
        shared: r.bool()?,
    })
}

pub(crate) fn put_kind(w: &mut Writer, kind: StreamKind) {
    w.u8(match kind {
        StreamKind::Discrete => 0,
        StreamKind::Continuous => 1,
    });
}

pub(crate) fn get_kind(r: &mut Reader<'_>) -> Result<StreamKind, DecodeError> {
    match r.u8()? {
        0 => Ok(StreamKind::Discrete),
        1 => Ok(StreamKind::Continuous),
        tag => Err(DecodeError::BadTag {
            what: "stream kind",
            tag,
        }),
    }
}

pub(crate) fn put_defaults(w: &mut Writer, defaults: &StreamDefaults) {
    match &defaults.creators {
        Creators::OwnerOnly => w.u8(0),
        Creators::Recipients => w.u8(1),
        Creators::Users(users) => {
            w.u8(2);
            w.len(users.len());
            for user in users {
                w.str(user);
            }
        }
        Creators::AnyLocalUser => w.u8(3),
    }
    put_policy(w, &defaults.policy);
    w.bool(defaults.write_once);
}

pub(crate) fn get_defaults(r: &mut Reader<'_>) -> Result<StreamDefaults, DecodeError> {
    let creators = match r.u8()? {
        0 => Creators::OwnerOnly,
        1 => Creators::Recipients,
        2 => {
            let count = r.len("creators", CREATORS_MAX, 5)?;
            let mut users = BTreeSet::new();
            for _ in 0..count {
                users.insert(r.name(NamePart::User)?);
            }
            Creators::Users(users)
        }
        3 => Creators::AnyLocalUser,
        tag => {
            return Err(DecodeError::BadTag {
                what: "creators",
                tag,
            })
        }
    };
    Ok(StreamDefaults {
        creators,
        policy: get_policy(r)?,
        write_once: r.bool()?,
    })
}

pub(crate) fn put_status(w: &mut Writer, status: RecipientStatus) {
    w.u8(match status {
        RecipientStatus::Pending => 0,
        RecipientStatus::Accepted => 1,
        RecipientStatus::Rejected => 2,
    });
}

pub(crate) fn get_status(r: &mut Reader<'_>) -> Result<RecipientStatus, DecodeError> {
    match r.u8()? {
        0 => Ok(RecipientStatus::Pending),
        1 => Ok(RecipientStatus::Accepted),
        2 => Ok(RecipientStatus::Rejected),
        tag => Err(DecodeError::BadTag {
            what: "recipient status",
            tag,
        }),
    }
}

pub(crate) fn put_addresses(w: &mut Writer, addresses: &[Address]) {
    w.len(addresses.len());
    for address in addresses {
        w.address(address);
    }
}

pub(crate) fn get_addresses(r: &mut Reader<'_>) -> Result<Vec<Address>, DecodeError> {
    let count = r.len("recipients", RECIPIENTS_MAX, ADDRESS_MIN_BYTES)?;
    (0..count).map(|_| r.address()).collect()
}

pub(crate) fn get_label(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    Ok(r.bytes("stream label", STREAM_LABEL_MAX_BYTES)?.to_vec())
}

/// `(stream no, next seq)` pairs of a cursor or position.
pub(crate) fn put_entries(w: &mut Writer, entries: &[(u64, u64)]) {
    w.len(entries.len());
    for &(stream, next_seq) in entries {
        w.u64(stream);
        w.u64(next_seq);
    }
}

pub(crate) fn get_entries(r: &mut Reader<'_>) -> Result<Vec<(u64, u64)>, DecodeError> {
    let count = r.len("cursor entries", usize::MAX, 16)?;
    (0..count).map(|_| Ok((r.u64()?, r.u64()?))).collect()
}
