//! Store and forward: durable per-reader cursors, paged fetch of "everything after X",
//! acknowledgements, and push subscriptions.
//!
//! A reader's cursor holds, per stream, the next seq it has not acknowledged. Fetching
//! does not move it; `ack` does, durably (one change record), and then trims what no reader
//! can read any more. Ephemeral records are delivered until acknowledged (at least once),
//! and never again after (`take` fetches and acknowledges in one call: at most once).
//! Subscriptions push the backlog from the cursor and then every new record while the
//! subscriber is connected; after a restart a new subscription resumes from the cursor.

use std::ops::Range;
use std::time::Duration;

use crossbeam::channel::{self, Receiver};
use pmem_emul::Pmem;
use pstream_engine::ColdTier;

use crate::access::{self, denied};
use crate::address::{Address, Caller};
use crate::agent::{Agent, Inner, Subscriber};
use crate::change::{Change, ReaderKey};
use crate::error::{Action, AgentError, Result};
use crate::model::{
    BundleRef, Delivery, Event, Invitation, Page, PageLimit, Position, Retention, StreamNo,
};
use crate::state::BundleState;

/// A push subscription: events arrive on the channel while it is alive. Dropping it
/// unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    receiver: Receiver<Event>,
}

impl Subscription {
    pub fn receiver(&self) -> &Receiver<Event> {
        &self.receiver
    }

    /// Every event queued now.
    pub fn drain(&self) -> Vec<Event> {
        self.receiver.try_iter().collect()
    }

    /// The next event, waiting at most `timeout`.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Event> {
        self.receiver.recv_timeout(timeout).ok()
    }
}

fn cursor_of(bundle: &BundleState, user: &Address) -> Position {
    let mut position = Position::default();
    if let Some(cursor) = bundle.cursors.get(&ReaderKey::User(user.clone())) {
        for (&stream, &next_seq) in cursor {
            position.set(StreamNo(stream), next_seq);
        }
    }
    position
}

impl<P: Pmem, C: ColdTier> Agent<P, C> {
    /// The caller's durable cursor in a bundle.
    pub fn cursor(&self, caller: &Caller, key: &BundleRef) -> Result<Position> {
        let inner = self.inner.lock();
        let (bundle, user) = access::read_bundle(&inner.state, caller, key, Action::Fetch)?;
        Ok(cursor_of(bundle, &user))
    }

    /// One page of everything after `after` (default: the caller's cursor) that the caller
    /// may read, stream by stream in stream order, each stream in seq order. Ephemeral
    /// records the caller acknowledged are never returned, whatever `after` says.
    pub fn fetch(
        &self,
        caller: &Caller,
        key: &BundleRef,
        after: Option<&Position>,
        limit: PageLimit,
    ) -> Result<Page> {
        let mut inner = self.inner.lock();
        let (bundle, user) = access::read_bundle(&inner.state, caller, key, Action::Fetch)?;
        let start = after.cloned().unwrap_or_else(|| cursor_of(bundle, &user));
        let page = self.collect_page(key, bundle, &user, &start, limit)?;
        inner.counters.records_delivered += page.items.len() as u64;
        inner.counters.bytes_delivered += page.payload_bytes() as u64;
        Ok(page)
    }

    pub(crate) fn collect_page(
        &self,
        key: &BundleRef,
        bundle: &BundleState,
        user: &Address,
        start: &Position,
        limit: PageLimit,
    ) -> Result<Page> {
        let records_max = limit.records_max.max(1);
        let taken = cursor_of(bundle, user);
        let mut page = Page {
            next: start.clone(),
            ..Page::default()
        };
        let mut bytes = 0usize;
        'streams: for (&no, meta) in &bundle.streams {
            let Some(retention) = access::stream_access(key, bundle, meta, user) else {
                continue;
            };
            let stream = StreamNo(no);
            let (first_seq, next_seq) = self.bounds(meta)?;
            let mut seq = start.next_seq(stream).max(first_seq);
            if retention == Retention::Ephemeral {
                seq = seq.max(taken.next_seq(stream));
            }
            while seq < next_seq {
                if page.items.len() >= records_max {
                    page.more = true;
                    break 'streams;
                }
                let payload = self.read_record(meta, seq)?;
                if !page.items.is_empty() && bytes + payload.len() > limit.bytes_max {
                    page.more = true;
                    break 'streams;
                }
                bytes += payload.len();
                page.items.push(Delivery {
                    bundle: key.clone(),
                    stream,
                    seq,
                    payload,
                    retention,
                });
                seq += 1;
                page.next.set(stream, seq);
            }
        }
        Ok(page)
    }

    /// Acknowledges everything before `position` (per stream), durably: the cursor only
    /// moves forward, and ephemeral records before it are gone for this user.
    pub fn ack(&self, caller: &Caller, key: &BundleRef, position: &Position) -> Result<()> {
        let mut inner = self.inner.lock();
        self.ack_locked(&mut inner, caller, key, position)
    }

    fn ack_locked(
        &self,
        inner: &mut Inner,
        caller: &Caller,
        key: &BundleRef,
        position: &Position,
    ) -> Result<()> {
        let state = &inner.state;
        let (bundle, user) = access::read_bundle(state, caller, key, Action::Ack)?;
        let current = cursor_of(bundle, &user);
        let mut entries = Vec::new();
        for (&stream, &next_seq) in &position.0 {
            if stream.0 >= bundle.next_stream_no {
                return Err(AgentError::UnknownStream {
                    bundle: key.to_string(),
                    stream: stream.0,
                });
            }
            // A stream deleted since, or one the caller does not see (answered alike, so an
            // acknowledgement tells nothing about streams the caller may not see): nothing
            // to acknowledge.
            let Some(meta) = bundle
                .streams
                .get(&stream.0)
                .filter(|meta| access::sees_stream(key, bundle, meta, &user))
            else {
                continue;
            };
            if next_seq <= current.next_seq(stream) {
                continue; // cursors never go back; a stale entry is no request
            }
            if access::stream_access(key, bundle, meta, &user).is_none() {
                return Err(denied(caller, Action::Ack, "no read access to this stream"));
            }
            let (_, tail) = self.bounds(meta)?;
            if next_seq > tail {
                return Err(AgentError::AckBeyondTail {
                    bundle: key.to_string(),
                    stream: stream.0,
                    requested: next_seq,
                    next_seq: tail,
                });
            }
            entries.push((stream.0, next_seq));
        }
        if entries.is_empty() {
            return Ok(());
        }
        let streams: Vec<u64> = entries.iter().map(|e| e.0).collect();
        self.commit(
            inner,
            Change::CursorSet {
                bundle: key.clone(),
                reader: ReaderKey::User(user),
                entries,
            },
        )?;
        inner.counters.acks += 1;
        self.trim_after(inner, key, Some(&streams));
        Ok(())
    }

    /// Fetches a page from the cursor and acknowledges it in one call (at most once).
    pub fn take(&self, caller: &Caller, key: &BundleRef, limit: PageLimit) -> Result<Page> {
        let mut inner = self.inner.lock();
        let (bundle, user) = access::read_bundle(&inner.state, caller, key, Action::Fetch)?;
        let start = cursor_of(bundle, &user);
        let page = self.collect_page(key, bundle, &user, &start, limit)?;
        self.ack_locked(&mut inner, caller, key, &page.next)?;
        inner.counters.records_delivered += page.items.len() as u64;
        inner.counters.bytes_delivered += page.payload_bytes() as u64;
        Ok(page)
    }

    /// Subscribes the caller: first its pending invitations and the backlog of every bundle
    /// it reads (from its cursor), then every new record and invitation as it happens.
    pub fn subscribe(&self, caller: &Caller) -> Result<Subscription> {
        let mut inner = self.inner.lock();
        let user = access::caller_user(&inner.state, caller)?;
        let (sender, receiver) = channel::unbounded();
        let mut events = Vec::new();
        let state = &inner.state;
        for (key, bundle) in &state.bundles {
            if !access::client_sees(state, caller, key, bundle) {
                continue;
            }
            if let Some(entry) = access::pending_invitation(caller, bundle, &user) {
                events.push(Event::Invitation(Invitation {
                    bundle: key.clone(),
                    recipient: entry.address.clone(),
                    metadata: bundle.metadata.clone(),
                }));
            }
            if access::is_reader(key, bundle, &user) {
                events.extend(self.backlog(key, bundle, &user)?);
            }
        }
        let delivered = events
            .iter()
            .filter(|e| matches!(e, Event::Data(_)))
            .count() as u64;
        for event in events {
            // The receiver is in hand, so sending cannot fail.
            let _ = sender.send(event);
        }
        inner.counters.records_delivered += delivered;
        inner.subscribers.push(Subscriber {
            caller: caller.clone(),
            sender,
            alive: true,
        });
        Ok(Subscription { receiver })
    }

    fn backlog(&self, key: &BundleRef, bundle: &BundleState, user: &Address) -> Result<Vec<Event>> {
        let unlimited = PageLimit {
            records_max: usize::MAX,
            bytes_max: usize::MAX,
        };
        let start = cursor_of(bundle, user);
        let page = self.collect_page(key, bundle, user, &start, unlimited)?;
        Ok(page.items.into_iter().map(Event::Data).collect())
    }

    /// Pushes a bundle's backlog to `user`'s subscribers (after the user accepted it).
    pub(crate) fn push_backlog(&self, inner: &mut Inner, user: &Address, key: &BundleRef) {
        let Inner {
            state,
            subscribers,
            counters,
            ..
        } = inner;
        let Some(bundle) = state.bundles.get(key) else {
            return;
        };
        for subscriber in subscribers
            .iter_mut()
            .filter(|s| s.alive && s.caller.user_name() == user.user())
        {
            if !access::client_sees(state, &subscriber.caller, key, bundle) {
                continue;
            }
            match self.backlog(key, bundle, user) {
                Ok(events) => {
                    counters.records_delivered += events.len() as u64;
                    for event in events {
                        subscriber.alive &= subscriber.sender.send(event).is_ok();
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, bundle = %key, "cannot read the backlog for a subscriber")
                }
            }
        }
        subscribers.retain(|s| s.alive);
    }

    /// Pushes new records `seqs` of a stream to every subscriber that may read them.
    pub(crate) fn notify_data(
        &self,
        inner: &mut Inner,
        key: &BundleRef,
        stream: StreamNo,
        seqs: Range<u64>,
    ) {
        let Inner {
            state,
            subscribers,
            counters,
            ..
        } = inner;
        if subscribers.is_empty() || seqs.is_empty() {
            return;
        }
        let Some((bundle, meta)) = state
            .bundles
            .get(key)
            .and_then(|b| Some((b, b.streams.get(&stream.0)?)))
        else {
            return;
        };
        let mut records: Option<Vec<(u64, Vec<u8>)>> = None;
        for subscriber in subscribers.iter_mut().filter(|s| s.alive) {
            let user = state.address_of(subscriber.caller.user_name());
            if !access::client_sees(state, &subscriber.caller, key, bundle) {
                continue;
            }
            let Some(retention) = access::stream_access(key, bundle, meta, &user) else {
                continue;
            };
            if records.is_none() {
                let read: Result<Vec<(u64, Vec<u8>)>> = seqs
                    .clone()
                    .map(|seq| Ok((seq, self.read_record(meta, seq)?)))
                    .collect();
                match read {
                    Ok(read) => records = Some(read),
                    Err(error) => {
                        tracing::warn!(%error, bundle = %key, %stream, "cannot read new records to push");
                        return;
                    }
                }
            }
            for (seq, payload) in records.iter().flatten() {
                let delivery = Delivery {
                    bundle: key.clone(),
                    stream,
                    seq: *seq,
                    payload: payload.clone(),
                    retention,
                };
                counters.records_delivered += 1;
                counters.bytes_delivered += payload.len() as u64;
                subscriber.alive &= subscriber.sender.send(Event::Data(delivery)).is_ok();
            }
        }
        subscribers.retain(|s| s.alive);
    }

    /// Tells subscribers that may read a stream that it is sealed.
    pub(crate) fn notify_sealed(
        &self,
        inner: &mut Inner,
        key: &BundleRef,
        stream: StreamNo,
        record_count: u64,
    ) {
        let Inner {
            state, subscribers, ..
        } = inner;
        let Some((bundle, meta)) = state
            .bundles
            .get(key)
            .and_then(|b| Some((b, b.streams.get(&stream.0)?)))
        else {
            return;
        };
        for subscriber in subscribers.iter_mut().filter(|s| s.alive) {
            let user = state.address_of(subscriber.caller.user_name());
            let concerned = access::sees_stream(key, bundle, meta, &user);
            if concerned && access::client_sees(state, &subscriber.caller, key, bundle) {
                let event = Event::Sealed {
                    bundle: key.clone(),
                    stream,
                    record_count,
                };
                subscriber.alive &= subscriber.sender.send(event).is_ok();
            }
        }
        subscribers.retain(|s| s.alive);
    }

    /// Informs newly added local recipients' subscribers.
    pub(crate) fn notify_invitations(&self, inner: &mut Inner, key: &BundleRef, fresh: &[Address]) {
        let Inner {
            state, subscribers, ..
        } = inner;
        let Some(bundle) = state.bundles.get(key) else {
            return;
        };
        for recipient in fresh.iter().filter(|a| state.is_local_address(a)) {
            for subscriber in subscribers
                .iter_mut()
                .filter(|s| s.alive && s.caller.user_name() == recipient.user())
            {
                let client = subscriber.caller.client_name();
                if client.is_some() && client != recipient.client() {
                    continue;
                }
                let invitation = Invitation {
                    bundle: key.clone(),
                    recipient: recipient.clone(),
                    metadata: bundle.metadata.clone(),
                };
                subscriber.alive &= subscriber
                    .sender
                    .send(Event::Invitation(invitation))
                    .is_ok();
            }
        }
        subscribers.retain(|s| s.alive);
    }
}
