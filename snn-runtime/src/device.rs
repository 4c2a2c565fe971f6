//! GPUs: discovery, and one context and stream per device.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaStream, DriverError, sys};
use snn_codegen::cuda::{COMPILE_OPTIONS, parse_kernels};

use crate::cache::KernelCache;
use crate::error::RuntimeError;
use crate::launch::{Kernel, Launch, Program};
use crate::libs;
use crate::pool::{MemoryStats, Pool};

/// What a device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// `(major, minor)`, e.g. `(9, 0)` for an H100.
    pub compute_capability: (i32, i32),
    pub multiprocessors: u32,
    pub total_memory: usize,
}

impl DeviceInfo {
    /// The NVRTC target for this device's own architecture (`sm_90`).
    pub fn arch(&self) -> String {
        format!(
            "sm_{}{}",
            self.compute_capability.0, self.compute_capability.1
        )
    }
}

/// One GPU: its context, the stream all work is issued on, and the kernel cache.
#[derive(Debug)]
pub struct Device {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub info: DeviceInfo,
    pub cache: KernelCache,
    pub(crate) pool: Pool,
    /// Fill every `empty` tensor with NaN bytes (0xff) before it is handed out, so that a
    /// kernel reading memory no one wrote shows in its results rather than reading what
    /// the pool's last user left. Set by `SNN_POISON_MEMORY=1`; for tests and debugging
    /// (it costs a memset per allocation).
    pub poison: bool,
    /// Hand-written kernels loaded on this device with their signatures, by (program,
    /// kernel): looking a module up hashes its whole source, too slow to repeat at every
    /// launch.
    kernels: Mutex<HashMap<(&'static str, &'static str), Arc<Kernel>>>,
}

impl Device {
    /// How many CUDA devices there are (an error if the driver is missing).
    pub fn count() -> Result<usize, RuntimeError> {
        libs::driver()?;
        CudaContext::device_count()
            .map(|c| c.max(0) as usize)
            .map_err(|e| RuntimeError::driver("counting devices", e))
    }

    /// Opens device `ordinal`, with the kernel cache configured from the environment.
    pub fn open(ordinal: usize) -> Result<Arc<Device>, RuntimeError> {
        // A stream of its own rather than the legacy default one, which cannot be captured
        // into a CUDA graph.
        Self::open_with(ordinal, |ctx| ctx.new_stream())
    }

    /// Opens device `ordinal` issuing its work on `stream`, a stream another library owns
    /// (PyTorch's current stream, for instance), so that the work is ordered with that
    /// library's: nothing here synchronises with it.
    ///
    /// # Safety
    /// `stream` must be null (the legacy default stream) or a live stream of the device's
    /// primary context, and outlive the returned device and everything made on it.
    pub unsafe fn on_stream(ordinal: usize, stream: u64) -> Result<Arc<Device>, RuntimeError> {
        // SAFETY: the caller vouches for the stream (above); cudarc does not destroy a
        // borrowed stream.
        Self::open_with(ordinal, |ctx| unsafe {
            Ok(ctx.wrap_borrowed_stream(stream as sys::CUstream))
        })
    }

    fn open_with(
        ordinal: usize,
        stream: impl FnOnce(&Arc<CudaContext>) -> Result<Arc<CudaStream>, DriverError>,
    ) -> Result<Arc<Device>, RuntimeError> {
        let count = Self::count()?;
        if ordinal >= count {
            return Err(RuntimeError::NoDevice { ordinal, count });
        }
        let ctx =
            CudaContext::new(ordinal).map_err(|e| RuntimeError::driver("creating a context", e))?;
        let attr = |a| {
            ctx.attribute(a)
                .map_err(|e| RuntimeError::driver("reading device attributes", e))
        };
        let info = DeviceInfo {
            ordinal,
            name: ctx
                .name()
                .map_err(|e| RuntimeError::driver("reading the device name", e))?,
            compute_capability: ctx
                .compute_capability()
                .map_err(|e| RuntimeError::driver("reading the compute capability", e))?,
            multiprocessors: attr(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )? as u32,
            total_memory: ctx
                .total_mem()
                .map_err(|e| RuntimeError::driver("reading the memory size", e))?,
        };
        // SAFETY: all work of a `Device` is issued on one stream, so cudarc's per-slice
        // events (which order work across streams) are never needed. (Off before the
        // stream is made, so that making it does not synchronise the context.)
        unsafe { ctx.disable_event_tracking() };
        let stream =
            stream(&ctx).map_err(|e| RuntimeError::driver("creating the device's stream", e))?;
        Ok(Arc::new(Device {
            ctx,
            stream,
            info,
            cache: KernelCache::from_env(),
            pool: Pool::default(),
            poison: std::env::var_os("SNN_POISON_MEMORY").is_some_and(|v| v == "1"),
            kernels: Mutex::default(),
        }))
    }

    /// A launch of kernel `kernel` of the hand-written `program`, to bind its arguments by
    /// name (see [`crate::launch`]). The program is compiled through the kernel cache and
    /// loaded once per device.
    pub fn kernel(
        &self,
        program: &Program,
        kernel: &'static str,
    ) -> Result<Launch<'_>, RuntimeError> {
        let lock = || self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = lock().get(&(program.name, kernel)) {
            return Ok(Launch::new(self, k.clone()));
        }
        let binding = |problem: String| RuntimeError::Binding {
            kernel: kernel.into(),
            problem,
        };
        let signature = parse_kernels(program.source)
            .map_err(|e| binding(format!("program `{}`: {e}", program.name)))?
            .into_iter()
            .find(|s| s.name == kernel)
            .ok_or_else(|| binding(format!("program `{}` has no such kernel", program.name)))?;
        let module = self.cache.module(
            &self.ctx,
            program.source,
            program.name,
            &self.info.arch(),
            &COMPILE_OPTIONS,
        )?;
        let function = module
            .load_function(kernel)
            .map_err(|e| RuntimeError::driver(format!("loading `{kernel}`"), e))?;
        let k = Arc::new(Kernel::new(function, signature));
        lock().insert((program.name, kernel), k.clone());
        Ok(Launch::new(self, k))
    }

    /// Makes this device's context current on the calling thread (the driver's raw calls
    /// act on the thread's current context; cudarc's own calls do this themselves).
    pub fn bind(&self) -> Result<(), RuntimeError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| RuntimeError::driver("making the device's context current", e))
    }

    /// Waits for all work issued so far.
    pub fn synchronize(&self) -> Result<(), RuntimeError> {
        self.stream
            .synchronize()
            .map_err(|e| RuntimeError::driver("synchronizing", e))
    }

    /// The memory pool's counters (bytes in use, peak, cached).
    pub fn memory(&self) -> MemoryStats {
        self.pool.stats()
    }

    /// Starts measuring the peak memory from what is in use now.
    pub fn reset_peak_memory(&self) {
        self.pool.reset_peak();
    }

    /// Returns the pool's cached buffers to the driver.
    pub fn release_cached_memory(&self) {
        self.pool.release_cached();
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
}
