//! The device memory pool: freed buffers are kept and handed out again, so a training loop
//! whose shapes repeat every iteration allocates from the driver only in its first one.
//!
//! A request takes the smallest cached buffer at least as large and at most a quarter
//! larger; sizes are rounded up (to 512 bytes, and to 2 MiB above 4 MiB) so that nearly
//! equal requests share buffers. When the driver is out of memory, the cached buffers are
//! released and the allocation is tried once more.
//!
//! While a CUDA graph is captured ([`Pool::begin_capture`]), the buffers handed out are
//! recorded; at the end the graph takes those it used as scratch for as long as it lives
//! ([`Pool::end_capture`]), since its replays write them with no allocation the pool would
//! see; they count as reserved, and each replay counts toward the peak what the captured
//! work had in use. A capture never goes to the driver: a request the cache cannot serve
//! fails it.
//!
//! Two measures of memory: bytes *allocated* (what live tensors asked for, rounded as
//! above; PyTorch's `max_memory_allocated` counts the same way) and bytes *reserved*
//! (the buffers behind them, which may be larger, plus the cache).

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use crate::error::RuntimeError;

/// Bytes the pool manages, for reports (`snn bench train` prints the peak).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes live tensors asked for.
    pub in_use: usize,
    /// The most `in_use` has been since the pool was created or [`Pool::reset_peak`].
    pub peak: usize,
    /// Bytes of the buffers behind live tensors, and of those CUDA graphs hold.
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
    /// While a graph is captured: what it allocates.
    capture: Option<Capture>,
}

/// What a capture allocated: every buffer's address, and how far above its start the
/// bytes in use rose (what each replay uses as it runs).
#[derive(Debug, Default)]
struct Capture {
    addresses: Vec<u64>,
    base: usize,
    high: usize,
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
        let addr = address(&slice, stream);
        let Inner {
            stats: st, capture, ..
        } = &mut *inner;
        st.in_use += size;
        if let Some(capture) = capture {
            capture.addresses.push(addr);
            capture.high = capture.high.max(st.in_use);
        }
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
        if inner.capture.is_some() {
            // A driver allocation would become part of the graph (stream-ordered
            // allocations are captured), with a lifetime the pool cannot manage.
            return Err(RuntimeError::Capture(format!(
                "{}: {size} bytes that no cached buffer could serve",
                what()
            )));
        }
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

    /// Starts recording the buffers handed out, for a graph capture.
    pub(crate) fn begin_capture(&self) {
        let mut inner = self.lock();
        let base = inner.stats.in_use;
        inner.capture = Some(Capture {
            addresses: Vec::new(),
            base,
            high: base,
        });
    }

    /// Ends the recording and takes the buffers it saw out of the cache, for the graph to
    /// hold until it gives them back with [`Pool::release`] (they count as held, not in
    /// use); also returns the bytes a replay has in use at its peak. Every buffer handed
    /// out during the capture must have been freed: one still held would be written by
    /// replays while its holder uses it.
    pub(crate) fn end_capture(
        &self,
        stream: &Arc<CudaStream>,
    ) -> Result<(Vec<CudaSlice<u8>>, usize), RuntimeError> {
        let mut inner = self.lock();
        let capture = inner.capture.take().unwrap_or_default();
        let mut wanted = capture.addresses;
        wanted.sort_unstable();
        wanted.dedup();
        let mut taken = Vec::with_capacity(wanted.len());
        for list in inner.free.values_mut() {
            let (hit, kept) = std::mem::take(list)
                .into_iter()
                .partition(|s| wanted.binary_search(&address(s, stream)).is_ok());
            *list = kept;
            taken.extend::<Vec<_>>(hit);
        }
        inner.free.retain(|_, list| !list.is_empty());
        let st = &mut inner.stats;
        for s in &taken {
            st.cached -= s.len();
            st.held += s.len();
        }
        if taken.len() != wanted.len() {
            let still_held = wanted.len() - taken.len();
            drop(inner);
            taken.into_iter().for_each(|s| self.release(s));
            return Err(RuntimeError::Capture(format!(
                "{still_held} buffers allocated during the capture are still held after it"
            )));
        }
        Ok((taken, capture.high - capture.base))
    }

    /// A replay is queued that has `bytes` in use at its peak, on top of what is in use.
    pub(crate) fn note_replay(&self, bytes: usize) {
        let mut inner = self.lock();
        let st = &mut inner.stats;
        st.peak = st.peak.max(st.in_use + bytes);
    }

    /// Takes back a buffer [`Pool::end_capture`] gave a graph.
    pub(crate) fn release(&self, slice: CudaSlice<u8>) {
        self.free(slice, 0);
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

/// A buffer's device address, to recognise it.
fn address(slice: &CudaSlice<u8>, stream: &CudaStream) -> u64 {
    // No event tracking on the device (see `Device::open`): the guard records nothing.
    let (ptr, _guard) = slice.device_ptr(stream);
    ptr
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
