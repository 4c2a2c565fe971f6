//! CUDA graphs: work queued on a device's stream, captured once and replayed with one
//! launch, which saves the host the per-kernel launch cost and the device the gaps
//! between small kernels.
//!
//! A replay repeats the captured launches exactly, with the captured arguments and
//! addresses: whatever changes from one replay to the next must be written into buffers
//! the graph reads (its caller's business), and the pool's buffers that the capture used
//! as scratch stay the graph's until it is dropped ([`crate::pool`]).
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{CudaGraph, CudaSlice, sys};

use crate::device::Device;
use crate::error::RuntimeError;

/// A captured graph and the scratch buffers it writes. The scratch is declared first, so
/// that it is dropped first: its drop waits for the device, after which neither the
/// executable graph nor the buffers are in use.
pub struct Graph {
    scratch: Scratch,
    exec: CudaGraph,
    /// The bytes a replay has in use at its peak (the capture's own peak).
    peak_bytes: usize,
}

// SAFETY: the driver's graph handles may be used from any thread, one at a time; `Graph`
// is not `Sync` (its `CudaGraph` is not), so its one owner is the only one that uses it.
unsafe impl Send for Graph {}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("scratch_buffers", &self.scratch.buffers.len())
            .field("scratch_bytes", &self.scratch_bytes())
            .finish()
    }
}

impl Graph {
    /// Captures what `body` queues on `device`'s stream, without running it: run the
    /// result with [`Graph::launch`]. Fails, leaving the stream as it was, if `body` fails,
    /// synchronises, reads results back, or needs memory the pool has not cached (run the
    /// same work once before capturing it).
    pub fn capture(
        device: &Arc<Device>,
        body: impl FnOnce() -> Result<(), RuntimeError>,
    ) -> Result<Self, RuntimeError> {
        device.bind()?;
        device.pool.begin_capture();
        // Thread-local: a forbidden call (an allocation, a synchronisation) on this thread
        // fails at once; other threads (data loading) are not affected.
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        if let Err(e) = device.stream.begin_capture(mode) {
            let held = device.pool.end_capture(&device.stream);
            drop(held.map(|(buffers, _)| Scratch::new(device, buffers)));
            return Err(RuntimeError::driver("starting a graph capture", e));
        }
        let ran = body();
        let ended = device.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        let scratch = device
            .pool
            .end_capture(&device.stream)
            .map(|(buffers, peak)| (Scratch::new(device, buffers), peak));
        ran?;
        let exec = ended
            .map_err(|e| RuntimeError::driver("ending a graph capture", e))?
            .ok_or_else(|| RuntimeError::Capture("nothing was captured".into()))?;
        let (scratch, peak_bytes) = scratch?;
        Ok(Self {
            scratch,
            exec,
            peak_bytes,
        })
    }

    /// Queues one replay on the device's stream (its memory counts toward the pool's peak
    /// as the captured work's did).
    pub fn launch(&self) -> Result<(), RuntimeError> {
        self.scratch.device.pool.note_replay(self.peak_bytes);
        self.exec
            .launch()
            .map_err(|e| RuntimeError::driver("launching a CUDA graph", e))
    }

    /// The bytes of the pool's buffers the graph holds.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch.buffers.iter().map(|b| b.len()).sum()
    }
}

/// Pool buffers held for a graph, given back when it is dropped.
struct Scratch {
    device: Arc<Device>,
    buffers: Vec<CudaSlice<u8>>,
}

impl Scratch {
    fn new(device: &Arc<Device>, buffers: Vec<CudaSlice<u8>>) -> Self {
        Self {
            device: device.clone(),
            buffers,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A replay may still be running: the buffers go back only once it has finished
        // (a failure here means a broken context, whose work has stopped anyway).
        let _ = self.device.synchronize();
        for b in self.buffers.drain(..) {
            self.device.pool.release(b);
        }
    }
}
