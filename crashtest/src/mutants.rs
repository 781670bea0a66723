//! Deliberately broken backends, to check that the harness catches what it must (mutation
//! testing of the oracle): a harness that passes a broken engine proves nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use pmem_emul::{Guarantee, Pmem, SimPmem};

use crate::engine_case::SimBacked;

/// The simulator, except that every `every`-th flush does nothing: the lines it should have
/// written back stay dirty, so an acknowledged record can be lost or torn by a crash.
pub struct DroppingFlushes {
    inner: SimPmem,
    every: u64,
    flushes: AtomicU64,
}

impl DroppingFlushes {
    pub fn new(inner: SimPmem, every: u64) -> DroppingFlushes {
        DroppingFlushes {
            inner,
            every: every.max(1),
            flushes: AtomicU64::new(0),
        }
    }
}

impl SimBacked for DroppingFlushes {
    fn sim(&self) -> &SimPmem {
        &self.inner
    }
}

impl Pmem for DroppingFlushes {
    fn len_bytes(&self) -> usize {
        self.inner.len_bytes()
    }

    fn read(&self, offset: usize, len: usize) -> &[u8] {
        self.inner.read(offset, len)
    }

    fn read_u64(&self, offset: usize) -> u64 {
        self.inner.read_u64(offset)
    }

    fn write(&self, offset: usize, data: &[u8]) {
        self.inner.write(offset, data);
    }

    fn write_u64(&self, offset: usize, value: u64) {
        self.inner.write_u64(offset, value);
    }

    fn write_nt(&self, offset: usize, data: &[u8]) {
        self.inner.write_nt(offset, data);
    }

    fn flush(&self, offset: usize, len: usize) {
        let count = self.flushes.fetch_add(1, Ordering::Relaxed) + 1;
        if count % self.every != 0 {
            self.inner.flush(offset, len);
        }
    }

    fn fence(&self) {
        self.inner.fence();
    }

    fn guarantee(&self) -> Guarantee {
        self.inner.guarantee()
    }
}
