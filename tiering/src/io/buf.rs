//! Owned, sector-aligned I/O buffers.
//!
//! A buffer is passed *by ownership* into every I/O call and handed back with the result (the
//! tokio-uring shape), so no buffer can be freed or reused while the kernel may still touch it.
//! Storage is a plain `Vec<u8>` over-allocated by one alignment unit; the aligned window inside
//! it never moves because the vector is never grown. That keeps this module free of unsafe code
//! while still satisfying O_DIRECT's alignment rules.
//!
//! Buffers may come from a [`FixedPool`], a set of buffers registered with io_uring
//! (`IORING_REGISTER_BUFFERS`). Such a buffer remembers its slot and goes back to the pool on
//! drop, so the registered memory stays allocated for as long as the pool lives.

use std::sync::Arc;

use parking_lot::Mutex;

/// Alignment of buffer addresses, file offsets and lengths under O_DIRECT, and the sector size
/// of the crash model.
pub const IO_ALIGN_BYTES: usize = 4096;

/// Rounds `value` up to a multiple of [`IO_ALIGN_BYTES`].
pub const fn align_up(value: usize) -> usize {
    value.next_multiple_of(IO_ALIGN_BYTES)
}

/// Rounds `value` up to a multiple of [`IO_ALIGN_BYTES`] (u64 file offsets).
pub const fn align_up_u64(value: u64) -> u64 {
    value.next_multiple_of(IO_ALIGN_BYTES as u64)
}

/// Rounds `value` down to a multiple of [`IO_ALIGN_BYTES`] (u64 file offsets).
pub const fn align_down_u64(value: u64) -> u64 {
    value - value % IO_ALIGN_BYTES as u64
}

/// An owned buffer whose first byte is aligned to [`IO_ALIGN_BYTES`] and whose capacity is a
/// multiple of it. `len` is the number of meaningful bytes: what a write stores, or how many
/// bytes a read asks for.
pub struct IoBuf {
    storage: Vec<u8>,
    start: usize,
    capacity_bytes: usize,
    len_bytes: usize,
    fixed: Option<FixedSlot>,
}

struct FixedSlot {
    index: u16,
    pool: Arc<FixedPool>,
}

impl IoBuf {
    /// A zero-filled buffer with room for at least `capacity_bytes` (rounded up to the
    /// alignment), with length 0.
    pub fn with_capacity(capacity_bytes: usize) -> IoBuf {
        let capacity_bytes = align_up(capacity_bytes.max(1));
        let storage = vec![0u8; capacity_bytes + IO_ALIGN_BYTES];
        let start = storage.as_ptr().align_offset(IO_ALIGN_BYTES);
        assert!(start < IO_ALIGN_BYTES, "a u8 pointer can always be aligned");
        IoBuf {
            storage,
            start,
            capacity_bytes,
            len_bytes: 0,
            fixed: None,
        }
    }

    /// A buffer of length `len_bytes`, ready to be read into.
    pub fn for_read(len_bytes: usize) -> IoBuf {
        let mut buf = IoBuf::with_capacity(len_bytes);
        buf.set_len(len_bytes);
        buf
    }

    pub fn len(&self) -> usize {
        self.len_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity_bytes
    }

    /// Sets the length; the bytes up to it keep whatever they held (always initialized).
    pub fn set_len(&mut self, len_bytes: usize) {
        assert!(
            len_bytes <= self.capacity_bytes,
            "IoBuf length beyond capacity"
        );
        self.len_bytes = len_bytes;
    }

    pub fn clear(&mut self) {
        self.len_bytes = 0;
    }

    /// Appends `bytes`; panics if they do not fit (callers size buffers up front).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let end = self.len_bytes + bytes.len();
        assert!(end <= self.capacity_bytes, "IoBuf overflow");
        let base = self.start;
        self.storage[base + self.len_bytes..base + end].copy_from_slice(bytes);
        self.len_bytes = end;
    }

    /// Bytes still free after `len`.
    pub fn remaining_capacity(&self) -> usize {
        self.capacity_bytes - self.len_bytes
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len_bytes]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len_bytes]
    }

    /// True when address, capacity and length satisfy O_DIRECT.
    pub fn is_aligned_for_direct(&self) -> bool {
        self.as_ptr() as usize % IO_ALIGN_BYTES == 0 && self.len_bytes % IO_ALIGN_BYTES == 0
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.storage[self.start..].as_ptr()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.storage[self.start..].as_mut_ptr()
    }

    /// The registered-buffer index of this buffer in `pool`, if it belongs to it.
    pub(crate) fn fixed_index_in(&self, pool: &Arc<FixedPool>) -> Option<u16> {
        match &self.fixed {
            Some(slot) if Arc::ptr_eq(&slot.pool, pool) => Some(slot.index),
            _ => None,
        }
    }

    pub fn is_registered(&self) -> bool {
        self.fixed.is_some()
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        if let Some(slot) = self.fixed.take() {
            let storage = std::mem::take(&mut self.storage);
            slot.pool.give_back(slot.index, storage);
        }
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("len_bytes", &self.len_bytes)
            .field("capacity_bytes", &self.capacity_bytes)
            .field("registered", &self.fixed.is_some())
            .finish()
    }
}

/// A fixed set of equally sized buffers that io_uring rings register once. A slot's memory is
/// owned either by the pool (free) or by exactly one [`IoBuf`] (lent out), and is freed only
/// when the pool itself is dropped, after every ring that registered it.
pub struct FixedPool {
    buffer_bytes: usize,
    /// Address of each slot's aligned window, fixed for the pool's life (checked on return).
    addresses: Vec<usize>,
    free: Mutex<Vec<(u16, Vec<u8>)>>,
}

impl FixedPool {
    pub(crate) fn new(buffer_count: usize, buffer_bytes: usize) -> Arc<FixedPool> {
        let buffer_count = buffer_count.min(usize::from(u16::MAX));
        let buffer_bytes = align_up(buffer_bytes.max(1));
        let mut addresses = Vec::with_capacity(buffer_count);
        let mut free = Vec::with_capacity(buffer_count);
        for index in 0..buffer_count {
            let Ok(index) = u16::try_from(index) else {
                break;
            };
            let storage = vec![0u8; buffer_bytes + IO_ALIGN_BYTES];
            let start = storage.as_ptr().align_offset(IO_ALIGN_BYTES);
            addresses.push(storage[start..].as_ptr() as usize);
            free.push((index, storage));
        }
        Arc::new(FixedPool {
            buffer_bytes,
            addresses,
            free: Mutex::new(free),
        })
    }

    pub(crate) fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// (address, length) of every slot's aligned window, in index order, for registration.
    pub(crate) fn regions(&self) -> Vec<(usize, usize)> {
        self.addresses
            .iter()
            .map(|&address| (address, self.buffer_bytes))
            .collect()
    }

    /// Lends a free slot as an empty [`IoBuf`], or `None` when all are lent out.
    pub(crate) fn take(self: &Arc<FixedPool>) -> Option<IoBuf> {
        let (index, storage) = self.free.lock().pop()?;
        let start = storage.as_ptr().align_offset(IO_ALIGN_BYTES);
        let buf = IoBuf {
            storage,
            start,
            capacity_bytes: self.buffer_bytes,
            len_bytes: 0,
            fixed: Some(FixedSlot {
                index,
                pool: Arc::clone(self),
            }),
        };
        assert_eq!(
            buf.as_ptr() as usize,
            self.addresses[usize::from(index)],
            "slot moved"
        );
        Some(buf)
    }

    fn give_back(&self, index: u16, storage: Vec<u8>) {
        let start = storage.as_ptr().align_offset(IO_ALIGN_BYTES);
        debug_assert_eq!(
            storage[start..].as_ptr() as usize,
            self.addresses[usize::from(index)]
        );
        self.free.lock().push((index, storage));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned() {
        for capacity in [1, 100, 4096, 4097, 1 << 20] {
            let mut buf = IoBuf::with_capacity(capacity);
            assert_eq!(buf.as_ptr() as usize % IO_ALIGN_BYTES, 0);
            assert_eq!(buf.capacity() % IO_ALIGN_BYTES, 0);
            assert!(buf.capacity() >= capacity);
            buf.extend_from_slice(&[7u8; 10]);
            assert_eq!(buf.as_slice(), &[7u8; 10]);
        }
    }

    #[test]
    fn pool_slots_return_on_drop() {
        let pool = FixedPool::new(2, 8192);
        let a = pool.take().expect("slot 1");
        let b = pool.take().expect("slot 2");
        assert!(pool.take().is_none());
        assert_eq!(a.fixed_index_in(&pool).map(|_| ()), Some(()));
        let address = a.as_ptr() as usize;
        drop(a);
        let again = pool.take().expect("returned slot");
        assert_eq!(again.as_ptr() as usize, address);
        drop(b);
        drop(again);
        assert_eq!(pool.free.lock().len(), 2);
    }
}
