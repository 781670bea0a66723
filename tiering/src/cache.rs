//! A small DRAM LRU cache of decompressed cold blocks, bounded in bytes.
//!
//! Keys are (segment_gen, block_no); values are shared, immutable, already verified blocks,
//! so a reader copies its record out without holding the lock. One mutex guards the map and
//! the recency queue; no operation does I/O.
//!
//! A hit only stamps the entry with a new tick (O(1): sequential readers hit the same block
//! for every record in it). The recency queue keeps, per entry, the tick it was queued
//! with, which may be older than its last use; eviction pops the oldest queued tick and
//! re-queues the entry if it was used since. That is exact LRU: every entry's queued tick
//! is at most its last use, so a popped entry whose queued tick is its last use has the
//! oldest last use of all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use pstream_engine::IntBuildHasher;

pub(crate) type BlockKey = (u64, u32);

pub(crate) struct BlockCache {
    capacity_bytes: usize,
    state: Mutex<CacheState>,
}

struct Entry {
    block: Arc<Vec<u8>>,
    /// Tick of the last use.
    used_tick: u64,
    /// Tick under which `order` holds this entry (at most `used_tick`).
    queued_tick: u64,
}

#[derive(Default)]
struct CacheState {
    /// Every hit hashes its key under the lock: a multiplicative hash, not SipHash.
    entries: HashMap<BlockKey, Entry, IntBuildHasher>,
    /// Queued tick -> key; one per entry.
    order: BTreeMap<u64, BlockKey>,
    used_bytes: usize,
    next_tick: u64,
}

impl CacheState {
    fn tick(&mut self) -> u64 {
        let tick = self.next_tick;
        self.next_tick += 1;
        tick
    }

    fn touch(&mut self, key: BlockKey) -> Option<Arc<Vec<u8>>> {
        let tick = self.tick();
        let entry = self.entries.get_mut(&key)?;
        entry.used_tick = tick;
        Some(Arc::clone(&entry.block))
    }

    fn remove(&mut self, key: &BlockKey) {
        if let Some(entry) = self.entries.remove(key) {
            self.order.remove(&entry.queued_tick);
            self.used_bytes -= entry.block.len();
        }
    }

    /// Evicts the least recently used entry; false when there is none.
    fn evict_one(&mut self) -> bool {
        while let Some((queued_tick, key)) = self.order.pop_first() {
            let Some(entry) = self.entries.get_mut(&key) else {
                debug_assert!(false, "queued key {key:?} without an entry");
                continue;
            };
            debug_assert_eq!(entry.queued_tick, queued_tick);
            if entry.used_tick == queued_tick {
                self.remove(&key);
                return true;
            }
            // Used since it was queued: queue it again under its last use.
            entry.queued_tick = entry.used_tick;
            self.order.insert(entry.used_tick, key);
        }
        false
    }
}

impl BlockCache {
    pub(crate) fn new(capacity_bytes: usize) -> BlockCache {
        BlockCache {
            capacity_bytes,
            state: Mutex::new(CacheState::default()),
        }
    }

    pub(crate) fn get(&self, key: BlockKey) -> Option<Arc<Vec<u8>>> {
        self.state.lock().touch(key)
    }

    /// Whether `key` is cached (does not count as a use).
    pub(crate) fn contains(&self, key: BlockKey) -> bool {
        self.state.lock().entries.contains_key(&key)
    }

    /// Caches `block`, evicting the least recently used blocks to stay within capacity.
    /// Blocks larger than a quarter of the capacity are not cached (one would flush the rest).
    pub(crate) fn insert(&self, key: BlockKey, block: Arc<Vec<u8>>) {
        if block.len() > self.capacity_bytes / 4 {
            return;
        }
        let mut state = self.state.lock();
        state.remove(&key);
        while state.used_bytes + block.len() > self.capacity_bytes {
            if !state.evict_one() {
                break;
            }
        }
        let tick = state.tick();
        state.used_bytes += block.len();
        state.order.insert(tick, key);
        state.entries.insert(
            key,
            Entry {
                block,
                used_tick: tick,
                queued_tick: tick,
            },
        );
        debug_assert!(state.used_bytes <= self.capacity_bytes);
        debug_assert_eq!(state.entries.len(), state.order.len());
    }

    /// Drops every block of one segment (after it is deleted).
    pub(crate) fn invalidate_segment(&self, segment_gen: u64) {
        let mut state = self.state.lock();
        let keys: Vec<BlockKey> = state
            .entries
            .keys()
            .filter(|key| key.0 == segment_gen)
            .copied()
            .collect();
        for key in keys {
            state.remove(&key);
        }
    }

    pub(crate) fn used_bytes(&self) -> usize {
        self.state.lock().used_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(len: usize) -> Arc<Vec<u8>> {
        Arc::new(vec![0u8; len])
    }

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let cache = BlockCache::new(400);
        cache.insert((1, 0), block(100));
        cache.insert((1, 1), block(100));
        cache.insert((1, 2), block(100));
        assert!(cache.get((1, 0)).is_some());
        cache.insert((1, 3), block(100));
        cache.insert((1, 4), block(100));
        assert!(
            cache.get((1, 1)).is_none(),
            "least recently used goes first"
        );
        assert!(cache.get((1, 0)).is_some());
        assert!(cache.used_bytes() <= 400);
        cache.insert((1, 5), block(101));
        assert!(cache.get((1, 5)).is_none(), "too large to cache");
        cache.invalidate_segment(1);
        assert_eq!(cache.used_bytes(), 0);
    }

    /// Random gets and inserts against a list kept in recency order: the cache holds
    /// exactly the most recently used blocks that fit.
    #[test]
    fn matches_an_exact_lru_model() {
        let mut rng = pmem_emul::SplitMix64::new(7);
        let cache = BlockCache::new(1000);
        let mut model: Vec<BlockKey> = Vec::new(); // least recently used first
        for _ in 0..20_000 {
            let key = (rng.below(3), rng.below(12) as u32);
            if rng.below(2) == 0 {
                let hit = cache.get(key).is_some();
                assert_eq!(hit, model.contains(&key), "{key:?}");
                if hit {
                    model.retain(|k| *k != key);
                    model.push(key);
                }
            } else {
                cache.insert(key, block(100));
                model.retain(|k| *k != key);
                if model.len() == 10 {
                    model.remove(0);
                }
                model.push(key);
            }
            assert_eq!(cache.used_bytes(), model.len() * 100);
        }
    }
}
