//! A small DRAM LRU cache of decompressed cold blocks, bounded in bytes.
//!
//! Keys are (segment_gen, block_no); values are shared, immutable, already verified blocks,
//! so a reader copies its record out without holding the lock. One mutex guards the map and
//! the recency order; every operation is O(log n) and touches no I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

pub(crate) type BlockKey = (u64, u32);

pub(crate) struct BlockCache {
    capacity_bytes: usize,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<BlockKey, (Arc<Vec<u8>>, u64)>,
    /// Recency tick -> key; the smallest tick is the least recently used.
    order: BTreeMap<u64, BlockKey>,
    used_bytes: usize,
    next_tick: u64,
}

impl CacheState {
    fn touch(&mut self, key: BlockKey) -> Option<Arc<Vec<u8>>> {
        let tick = self.next_tick;
        let (block, old_tick) = self.entries.get_mut(&key)?;
        let block = Arc::clone(block);
        let old_tick = std::mem::replace(old_tick, tick);
        self.next_tick += 1;
        self.order.remove(&old_tick);
        self.order.insert(tick, key);
        Some(block)
    }

    fn remove(&mut self, key: &BlockKey) {
        if let Some((block, tick)) = self.entries.remove(key) {
            self.order.remove(&tick);
            self.used_bytes -= block.len();
        }
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
            let Some((_, oldest)) = state.order.pop_first() else {
                break;
            };
            if let Some((evicted, _)) = state.entries.remove(&oldest) {
                state.used_bytes -= evicted.len();
            }
        }
        let tick = state.next_tick;
        state.next_tick += 1;
        state.used_bytes += block.len();
        state.order.insert(tick, key);
        state.entries.insert(key, (block, tick));
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
}
