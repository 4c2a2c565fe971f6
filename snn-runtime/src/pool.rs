//! The device memory pool: freed buffers are kept and handed out again, so a training loop
//! whose shapes repeat every iteration allocates from the driver only in its first one.
//!
//! A request takes the smallest cached buffer at least as large and at most twice as
//! large; sizes are rounded up (to 512 bytes, and to 2 MiB above 4 MiB) so that nearly
//! equal requests share buffers. When the driver is out of memory, the cached buffers are
//! released and the allocation is tried once more.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;

use cudarc::driver::{CudaSlice, CudaStream};

use crate::error::RuntimeError;

/// Bytes the pool manages, for reports (`snn bench train` prints the peak).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes held by live tensors.
    pub in_use: usize,
    /// The most `in_use` has been since the pool was created or [`Pool::reset_peak`].
    pub peak: usize,
    /// Bytes of freed buffers kept for reuse.
    pub cached: usize,
    /// Allocations that went to the driver.
    pub driver_allocs: u64,
}

#[derive(Debug, Default)]
struct Inner {
    free: BTreeMap<usize, Vec<CudaSlice<u8>>>,
    stats: MemoryStats,
}

#[derive(Debug, Default)]
pub struct Pool {
    inner: Mutex<Inner>,
}

/// The size a request of `bytes` is served with.
fn rounded(bytes: usize) -> usize {
    let bytes = bytes.max(1);
    if bytes > 4 << 20 {
        bytes.next_multiple_of(2 << 20)
    } else {
        bytes.next_multiple_of(512)
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only counters half-updated: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of at least `bytes` bytes, with unspecified contents.
    pub(crate) fn alloc(
        &self,
        stream: &Arc<CudaStream>,
        bytes: usize,
        what: &dyn Fn() -> String,
    ) -> Result<CudaSlice<u8>, RuntimeError> {
        let size = rounded(bytes);
        let mut inner = self.lock();
        let hit = inner
            .free
            .range(size..=size.saturating_mul(2))
            .next()
            .map(|(&s, _)| s);
        let slice = match hit {
            Some(s) => {
                let list = inner.free.get_mut(&s);
                let slice = list.and_then(|l| l.pop());
                if inner.free.get(&s).is_some_and(|l| l.is_empty()) {
                    inner.free.remove(&s);
                }
                match slice {
                    Some(slice) => {
                        inner.stats.cached -= slice.len();
                        slice
                    }
                    None => Self::driver_alloc(&mut inner, stream, size, what)?,
                }
            }
            None => Self::driver_alloc(&mut inner, stream, size, what)?,
        };
        inner.stats.in_use += slice.len();
        inner.stats.peak = inner.stats.peak.max(inner.stats.in_use);
        Ok(slice)
    }

    fn driver_alloc(
        inner: &mut Inner,
        stream: &Arc<CudaStream>,
        size: usize,
        what: &dyn Fn() -> String,
    ) -> Result<CudaSlice<u8>, RuntimeError> {
        inner.stats.driver_allocs += 1;
        // SAFETY: the contents are unspecified until written; `DeviceTensor` documents that
        // `empty` tensors must be written before they are read, and `zeros` clears them.
        match unsafe { stream.alloc::<u8>(size) } {
            Ok(s) => Ok(s),
            Err(_) if !inner.free.is_empty() => {
                inner.free.clear();
                inner.stats.cached = 0;
                // SAFETY: as above.
                unsafe { stream.alloc::<u8>(size) }.map_err(|e| RuntimeError::driver(what(), e))
            }
            Err(e) => Err(RuntimeError::driver(what(), e)),
        }
    }

    /// Takes a buffer back for reuse.
    pub(crate) fn free(&self, slice: CudaSlice<u8>) {
        let mut inner = self.lock();
        inner.stats.in_use -= slice.len();
        inner.stats.cached += slice.len();
        inner.free.entry(slice.len()).or_default().push(slice);
    }

    pub fn stats(&self) -> MemoryStats {
        self.lock().stats
    }

    /// Starts measuring the peak from the bytes in use now.
    pub fn reset_peak(&self) {
        let mut inner = self.lock();
        inner.stats.peak = inner.stats.in_use;
    }

    /// Returns every cached buffer to the driver.
    pub fn release_cached(&self) {
        let mut inner = self.lock();
        inner.free.clear();
        inner.stats.cached = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::rounded;

    #[test]
    fn sizes_round_up_to_shareable_buckets() {
        assert_eq!(rounded(0), 512);
        assert_eq!(rounded(513), 1024);
        assert_eq!(rounded(4 << 20), 4 << 20);
        assert_eq!(rounded((4 << 20) + 1), 6 << 20);
    }
}
