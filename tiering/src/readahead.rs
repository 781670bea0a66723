//! Asynchronous readahead of cold blocks: a reader going through a stream in seq order finds
//! the next window of blocks already read, checked and cached, because a background thread
//! read it while the reader was serving the current window. I/O and the reader's CPU work
//! overlap instead of alternating.
//!
//! The pacing follows Linux's page-cache readahead: a window that is loaded (by a reader's
//! miss, or by the worker) schedules the window after it, at most one window ahead of the
//! reader:
//! - a reader's synchronous miss on window W offers W+1 to the worker at once;
//! - when the worker has loaded W+1 it leaves a *trigger* on W+1's first block; the reader's
//!   first hit on that block offers W+2, and so on.
//!
//! A reader that misses on a block the worker is reading waits for that read instead of
//! issuing its own ([`ReadaheadState::wait_unless_inflight`]). The worker only ever fills the
//! cache: its errors are dropped (counted), and the reader, finding no block, reads it itself
//! and gets the error with its context. Offers to a busy worker are dropped, never queued
//! without bound.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::cache::BlockKey;

/// Windows that may wait for the worker; more offers are dropped.
const QUEUE_DEPTH: usize = 2;

/// Triggers kept at most; beyond, the oldest readers' triggers are forgotten (a stream read
/// only partly leaves one behind).
const MAX_TRIGGERS: usize = 1024;

/// Blocks being read by the worker, and triggers left for readers. `J` is the job that
/// loads a window (the store's file handle and a record position).
pub(crate) struct ReadaheadState<J> {
    inflight: Mutex<HashSet<BlockKey>>,
    landed: Condvar,
    triggers: Mutex<HashMap<BlockKey, J>>,
    /// `triggers.len()`, readable without the lock (readers check it on every block).
    trigger_count: AtomicUsize,
}

impl<J> Default for ReadaheadState<J> {
    fn default() -> ReadaheadState<J> {
        ReadaheadState {
            inflight: Mutex::new(HashSet::new()),
            landed: Condvar::new(),
            triggers: Mutex::new(HashMap::new()),
            trigger_count: AtomicUsize::new(0),
        }
    }
}

impl<J> ReadaheadState<J> {
    /// Marks `keys` as being read; false (and nothing marked) if any of them already is.
    pub(crate) fn begin(&self, keys: &[BlockKey]) -> bool {
        let mut inflight = self.inflight.lock();
        if keys.iter().any(|key| inflight.contains(key)) {
            return false;
        }
        inflight.extend(keys.iter().copied());
        true
    }

    /// Ends the read of `keys` (loaded or failed) and wakes readers waiting for them.
    pub(crate) fn finish(&self, keys: &[BlockKey]) {
        let mut inflight = self.inflight.lock();
        for key in keys {
            inflight.remove(key);
        }
        drop(inflight);
        self.landed.notify_all();
    }

    /// Waits until `key` is not being read by the worker; true if it was (the caller should
    /// look in the cache again).
    pub(crate) fn wait_unless_inflight(&self, key: BlockKey) -> bool {
        let mut inflight = self.inflight.lock();
        let mut waited = false;
        while inflight.contains(&key) {
            waited = true;
            self.landed.wait(&mut inflight);
        }
        waited
    }

    /// Leaves `job` to be offered when a reader first hits block `key`.
    pub(crate) fn set_trigger(&self, key: BlockKey, job: J) {
        let mut triggers = self.triggers.lock();
        if triggers.len() >= MAX_TRIGGERS {
            triggers.clear();
        }
        triggers.insert(key, job);
        self.trigger_count.store(triggers.len(), Ordering::Relaxed);
    }

    /// The job left on block `key`, if any (taken: it fires once).
    pub(crate) fn take_trigger(&self, key: BlockKey) -> Option<J> {
        if self.trigger_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut triggers = self.triggers.lock();
        let job = triggers.remove(&key);
        self.trigger_count.store(triggers.len(), Ordering::Relaxed);
        job
    }

    /// Forgets the triggers of a deleted segment.
    pub(crate) fn forget_segment(&self, segment_gen: u64) {
        let mut triggers = self.triggers.lock();
        triggers.retain(|key, _| key.0 != segment_gen);
        self.trigger_count.store(triggers.len(), Ordering::Relaxed);
    }
}

/// The background thread that runs readahead jobs. Dropping it stops and joins the thread
/// (after the job at hand, if any).
pub(crate) struct ReadaheadWorker<J: Send + 'static> {
    sender: Option<SyncSender<J>>,
    thread: Option<JoinHandle<()>>,
}

impl<J: Send + 'static> ReadaheadWorker<J> {
    /// Starts the thread; `run` loads one window. `None` (with a warning) if the thread
    /// cannot be started: reads then work without readahead.
    pub(crate) fn start<F>(run: F) -> Option<ReadaheadWorker<J>>
    where
        F: Fn(J) + Send + 'static,
    {
        let (sender, receiver) = mpsc::sync_channel::<J>(QUEUE_DEPTH);
        let spawned = std::thread::Builder::new()
            .name("pstream-cold-readahead".into())
            .spawn(move || {
                while let Ok(job) = receiver.recv() {
                    run(job);
                }
            });
        match spawned {
            Ok(thread) => Some(ReadaheadWorker {
                sender: Some(sender),
                thread: Some(thread),
            }),
            Err(error) => {
                tracing::warn!(%error, "cold readahead thread not started; reading without it");
                None
            }
        }
    }

    /// Hands `job` to the worker; false if its queue is full (the job is dropped).
    pub(crate) fn offer(&self, job: J) -> bool {
        self.sender
            .as_ref()
            .is_some_and(|sender| sender.try_send(job).is_ok())
    }
}

impl<J: Send + 'static> Drop for ReadaheadWorker<J> {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("cold readahead thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn begin_refuses_overlapping_reads_and_finish_wakes_waiters() {
        let state = Arc::new(ReadaheadState::<()>::default());
        assert!(state.begin(&[(1, 0), (1, 1)]));
        assert!(!state.begin(&[(1, 1), (1, 2)]), "block 1 is in flight");
        assert!(
            !state.wait_unless_inflight((1, 2)),
            "the refused begin marked nothing"
        );
        let waiter = {
            let state = Arc::clone(&state);
            std::thread::spawn(move || state.wait_unless_inflight((1, 1)))
        };
        std::thread::sleep(Duration::from_millis(20));
        state.finish(&[(1, 0), (1, 1)]);
        assert!(waiter.join().expect("waiter"), "it waited for the read");
        assert!(state.begin(&[(1, 1)]));
    }

    #[test]
    fn triggers_fire_once_and_die_with_their_segment() {
        let state = ReadaheadState::<u32>::default();
        assert_eq!(state.take_trigger((1, 0)), None);
        state.set_trigger((1, 4), 7);
        state.set_trigger((2, 4), 8);
        assert_eq!(state.take_trigger((1, 4)), Some(7));
        assert_eq!(state.take_trigger((1, 4)), None);
        state.forget_segment(2);
        assert_eq!(state.take_trigger((2, 4)), None);
        for block_no in 0..(MAX_TRIGGERS as u32 + 5) {
            state.set_trigger((3, block_no), block_no);
        }
        assert!(state.trigger_count.load(Ordering::Relaxed) <= MAX_TRIGGERS);
    }

    #[test]
    fn the_worker_runs_offered_jobs_and_stops_when_dropped() {
        let (done, ran) = mpsc::channel();
        let worker = ReadaheadWorker::start(move |job: u32| {
            done.send(job).expect("send");
        })
        .expect("thread");
        assert!(worker.offer(5));
        assert_eq!(ran.recv_timeout(Duration::from_secs(10)), Ok(5));
        drop(worker);
        assert!(
            ran.recv().is_err(),
            "the thread ended and dropped its sender"
        );
    }
}
