//! Append lanes and who may write into them.
//!
//! A lane owns one open segment at a time and writes one record (or one batch) into it at a
//! time. Which thread may use a lane is decided by the lane's claim word:
//!
//! | claim word        | meaning                                                     |
//! |-------------------|-------------------------------------------------------------|
//! | `FREE`            | nobody uses the lane                                         |
//! | `HELD`            | a thread that owns no lane holds it for one append or batch |
//! | a thread's token  | that thread owns the lane until it exits                    |
//!
//! A thread's first append claims a free lane for itself with one compare-and-swap and
//! remembers it in a thread-local list; its later appends find the lane there and use it
//! without any locked instruction (nobody else writes a lane whose claim word holds another
//! thread's token). The claim is released when the thread exits (the thread-local list's
//! destructor) or when the log is dropped (the list holds the lane set weakly).
//!
//! At most `lane_count - 1` lanes are owned, so at least one lane always stays shared: a
//! thread that finds no lane to own (more appending threads than lanes, or `lane_count` 1)
//! holds a free lane for each append (`FREE -> HELD -> FREE`, two locked instructions, as a
//! mutex would) and waits (spinning, then yielding) while every lane is taken. An owned
//! lane of a thread that stopped appending stays its own until it exits; its open segment
//! stays open as any idle lane's does.

#![allow(unsafe_code)]

use std::cell::{RefCell, UnsafeCell};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crossbeam::utils::CachePadded;

use super::append::OpenSegment;

const FREE: u64 = 0;
const HELD: u64 = u64::MAX;

/// What only the lane's holder reads or writes.
#[derive(Debug)]
pub(crate) struct LaneWork {
    pub lane_index: u16,
    pub current: Option<OpenSegment>,
}

/// Counters of one lane: written only by its holder (a plain load and store each, no
/// read-modify-write), read by [`super::Log::stats`] from any thread.
#[derive(Debug, Default)]
pub(crate) struct LaneCounters {
    /// Live records and bytes written into `current` and not yet added to its counters.
    pub unsettled_records: AtomicI64,
    pub unsettled_bytes: AtomicI64,
    pub appends: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub fences: AtomicU64,
}

/// Adds to a counter only its lane's holder writes.
pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

/// As [`bump`], for the signed unsettled counters.
pub(crate) fn bump_signed(counter: &AtomicI64, by: i64) {
    counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

pub(crate) struct Lane {
    claim: AtomicU64,
    work: UnsafeCell<LaneWork>,
    pub counters: LaneCounters,
}

// SAFETY: `work` is only reached through a `LaneGuard`, and a guard exists only while the
// claim word holds `HELD` set by this guard's thread or the thread's own token (see
// `Lanes::acquire`): at most one thread at a time. Passing a lane from one holder to the
// next goes through the claim word (release store, acquire compare-and-swap).
unsafe impl Sync for Lane {}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("claim", &self.claim.load(Ordering::Relaxed))
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// A log's lanes, shared (weakly) with the thread-local lists of the threads owning one.
#[derive(Debug)]
pub(crate) struct Lanes {
    lanes: Box<[CachePadded<Lane>]>,
    owned: AtomicUsize,
    owned_max: usize,
}

/// Exclusive use of one lane for as long as it lives. Not `Send`: an owned lane's claim
/// names the thread that took the guard.
pub(crate) struct LaneGuard<'a> {
    lane: &'a Lane,
    owned: bool,
    _not_send: PhantomData<*const ()>,
}

impl Deref for LaneGuard<'_> {
    type Target = LaneWork;

    fn deref(&self) -> &LaneWork {
        // SAFETY: this guard's thread is the lane's only holder (see `Lane`'s Sync).
        unsafe { &*self.lane.work.get() }
    }
}

impl DerefMut for LaneGuard<'_> {
    fn deref_mut(&mut self) -> &mut LaneWork {
        // SAFETY: as in `deref`; `&mut self` makes this the guard's only borrow.
        unsafe { &mut *self.lane.work.get() }
    }
}

impl LaneGuard<'_> {
    pub fn counters(&self) -> &LaneCounters {
        &self.lane.counters
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        if !self.owned {
            self.lane.claim.store(FREE, Ordering::Release);
        }
    }
}

static NEXT_THREAD_TOKEN: AtomicU64 = AtomicU64::new(1);

/// The lanes this thread owns, one per log at most.
struct Claims(Vec<Claim>);

struct Claim {
    lanes: Weak<Lanes>,
    /// `Arc::as_ptr` of the lane set: the allocation lives while `lanes` does, so the
    /// address names this log's lanes and no other's.
    key: usize,
    lane: usize,
}

impl Drop for Claims {
    fn drop(&mut self) {
        for claim in &self.0 {
            if let Some(lanes) = claim.lanes.upgrade() {
                lanes.release_owned(claim.lane);
            }
        }
    }
}

thread_local! {
    static THREAD_TOKEN: u64 = NEXT_THREAD_TOKEN.fetch_add(1, Ordering::Relaxed);
    static CLAIMS: RefCell<Claims> = const { RefCell::new(Claims(Vec::new())) };
}

impl Lanes {
    pub fn new(lane_count: usize) -> Arc<Lanes> {
        let lanes = (0..lane_count)
            .map(|i| {
                CachePadded::new(Lane {
                    claim: AtomicU64::new(FREE),
                    work: UnsafeCell::new(LaneWork {
                        lane_index: i as u16,
                        current: None,
                    }),
                    counters: LaneCounters::default(),
                })
            })
            .collect();
        Arc::new(Lanes {
            lanes,
            owned: AtomicUsize::new(0),
            owned_max: lane_count.saturating_sub(1),
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lane> {
        self.lanes.iter().map(|lane| &**lane)
    }

    /// This thread's lane: its own if it has one or can claim one, else a shared lane held
    /// for as long as the guard lives.
    pub fn acquire(self: &Arc<Self>) -> LaneGuard<'_> {
        let key = Arc::as_ptr(self) as usize;
        let owned = CLAIMS.with(|claims| {
            claims
                .borrow()
                .0
                .iter()
                .find(|claim| claim.key == key)
                .map(|claim| claim.lane)
        });
        if let Some(lane) = owned {
            let lane = &self.lanes[lane];
            debug_assert_eq!(
                lane.claim.load(Ordering::Relaxed),
                THREAD_TOKEN.with(|token| *token)
            );
            return LaneGuard {
                lane,
                owned: true,
                _not_send: PhantomData,
            };
        }
        self.claim_or_hold(key)
    }

    #[cold]
    fn claim_or_hold(self: &Arc<Self>, key: usize) -> LaneGuard<'_> {
        let token = THREAD_TOKEN.with(|token| *token);
        let start = (token as usize) % self.lanes.len();
        let reserved = self
            .owned
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |owned| {
                (owned < self.owned_max).then_some(owned + 1)
            })
            .is_ok();
        if reserved {
            if let Some(lane) = self.take_free(start, token) {
                CLAIMS.with(|claims| {
                    let mut claims = claims.borrow_mut();
                    // Lanes of logs dropped since are forgotten here.
                    claims.0.retain(|claim| claim.lanes.strong_count() > 0);
                    claims.0.push(Claim {
                        lanes: Arc::downgrade(self),
                        key,
                        lane,
                    });
                });
                return LaneGuard {
                    lane: &self.lanes[lane],
                    owned: true,
                    _not_send: PhantomData,
                };
            }
            self.owned.fetch_sub(1, Ordering::AcqRel);
        }
        let mut rounds = 0u32;
        loop {
            if let Some(lane) = self.take_free(start, HELD) {
                return LaneGuard {
                    lane: &self.lanes[lane],
                    owned: false,
                    _not_send: PhantomData,
                };
            }
            rounds += 1;
            if rounds < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Sets the first free lane from `start` on to `claim`; returns its index.
    fn take_free(&self, start: usize, claim: u64) -> Option<usize> {
        let lane_count = self.lanes.len();
        (0..lane_count)
            .map(|step| (start + step) % lane_count)
            .find(|&i| {
                self.lanes[i].claim.load(Ordering::Relaxed) == FREE
                    && self.lanes[i]
                        .claim
                        .compare_exchange(FREE, claim, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
            })
    }

    /// Gives back a lane its owner thread no longer needs (the thread is exiting).
    fn release_owned(&self, lane: usize) {
        self.lanes[lane].claim.store(FREE, Ordering::Release);
        self.owned.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Lanes, FREE, HELD};

    fn claims(lanes: &Lanes) -> Vec<u64> {
        lanes
            .iter()
            .map(|lane| lane.claim.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    #[test]
    fn a_thread_keeps_the_lane_it_claimed_and_gives_it_back_when_it_exits() {
        let lanes = Lanes::new(3);
        // Joined explicitly: that waits for the thread's thread-local destructors.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let first = lanes.acquire().lane_index;
                    assert_eq!(lanes.acquire().lane_index, first);
                    let owned = claims(&lanes);
                    assert_eq!(owned.iter().filter(|&&c| c != FREE).count(), 1);
                    assert!(
                        !owned.contains(&HELD),
                        "an owned lane is not held per append"
                    );
                })
                .join()
                .unwrap();
        });
        assert_eq!(
            claims(&lanes),
            vec![FREE; 3],
            "the exited thread's lane is free"
        );
        assert_eq!(lanes.owned.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn one_lane_is_never_owned_and_threads_past_the_owned_lanes_share_it() {
        let lanes = Lanes::new(1);
        let guard = lanes.acquire();
        assert!(!guard.owned);
        assert_eq!(claims(&lanes), vec![HELD]);
        drop(guard);
        assert_eq!(claims(&lanes), vec![FREE]);

        // Two lanes, three threads at once: one owns a lane, the others take turns on the
        // other; each thread's guards are exclusive.
        let lanes = Lanes::new(2);
        let barrier = std::sync::Barrier::new(3);
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        for _ in 0..1000 {
                            let lane = lanes.acquire();
                            super::bump(&lane.counters().appends, 1);
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
        });
        let appended: u64 = lanes
            .iter()
            .map(|lane| {
                lane.counters
                    .appends
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum();
        assert_eq!(appended, 3000, "no update of a lane counter was lost");
        assert_eq!(lanes.owned.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn a_dropped_log_forgets_the_claims_on_its_lanes() {
        let first = Lanes::new(2);
        assert!(first.acquire().owned);
        let weak = Arc::downgrade(&first);
        drop(first);
        assert!(weak.upgrade().is_none());
        // The next log's lanes are claimed afresh (the dead claim is dropped then).
        let second = Lanes::new(2);
        assert!(second.acquire().owned);
        assert_eq!(second.owned.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
