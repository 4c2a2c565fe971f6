//! The device memory pool: freed buffers are kept and handed out again, so a training loop
//! whose shapes repeat every iteration allocates from the driver only in its first one.
//!
//! A request takes the smallest cached buffer at least as large and at most a quarter
//! larger; sizes are rounded up (to 512 bytes, and to 2 MiB above 4 MiB) so that nearly
//! equal requests share buffers. When the driver is out of memory, the cached buffers are
//! released and the allocation is tried once more.
//!
//! Two measures of memory: bytes *allocated* (what live tensors asked for, rounded as
//! above; PyTorch's `max_memory_allocated` counts the same way) and bytes *reserved*
//! (the buffers behind them, which may be larger, plus the cache).

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;

use cudarc::driver::{CudaSlice, CudaStream};

use crate::error::RuntimeError;

/// Bytes the pool manages, for reports (`snn bench train` prints the peak).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes live tensors asked for.
    pub in_use: usize,
    /// The most `in_use` has been since the pool was created or [`Pool::reset_peak`].
    pub peak: usize,
    /// Bytes of the buffers behind live tensors.
    pub held: usize,
    /// Bytes of freed buffers kept for reuse.
    pub cached: usize,
    /// The most `held + cached` has been (what the pool holds from the driver).
    pub peak_reserved: usize,
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

    /// A buffer of at least `bytes` bytes, with unspecified contents, and the bytes it
    /// counts as allocated (give both back to [`Pool::free`]).
    pub(crate) fn alloc(
        &self,
        stream: &Arc<CudaStream>,
        bytes: usize,
        what: &dyn Fn() -> String,
    ) -> Result<(CudaSlice<u8>, usize), RuntimeError> {
        let size = rounded(bytes);
        let mut inner = self.lock();
        let hit = inner
            .free
            .range(size..=size.saturating_add(size / 4))
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
        let st = &mut inner.stats;
        st.in_use += size;
        st.held += slice.len();
        st.peak = st.peak.max(st.in_use);
        st.peak_reserved = st.peak_reserved.max(st.held + st.cached);
        Ok((slice, size))
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

    /// Takes a buffer back for reuse; `size` is what [`Pool::alloc`] counted for it.
    pub(crate) fn free(&self, slice: CudaSlice<u8>, size: usize) {
        let mut inner = self.lock();
        inner.stats.in_use -= size;
        inner.stats.held -= slice.len();
        inner.stats.cached += slice.len();
        inner.free.entry(slice.len()).or_default().push(slice);
    }

    pub fn stats(&self) -> MemoryStats {
        self.lock().stats
    }

    /// Starts measuring the peaks from the bytes in use (held) now.
    pub fn reset_peak(&self) {
        let mut inner = self.lock();
        inner.stats.peak = inner.stats.in_use;
        inner.stats.peak_reserved = inner.stats.held + inner.stats.cached;
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
