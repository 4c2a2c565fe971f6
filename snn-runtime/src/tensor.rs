//! Device tensors: a shared buffer from the device's memory pool, an offset, a dtype and a
//! shape. Views share the buffer, so folding time into the batch or addressing one
//! parameter inside a flat parameter buffer costs nothing; the buffer returns to the pool
//! when its last view is dropped.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr};
use snn_codegen::Dtype;

use crate::device::Device;
use crate::error::RuntimeError;

/// Device memory: the pool's, handed back when the last tensor using it is dropped, or
/// another library's ([`DeviceTensor::borrowed`]), which its owner frees.
#[derive(Debug)]
struct Buffer {
    memory: Memory,
    /// The bytes the pool counts as allocated for it (0 for borrowed memory).
    size: usize,
    device: Arc<Device>,
}

#[derive(Debug)]
enum Memory {
    Pool(Option<CudaSlice<u8>>),
    Borrowed(u64),
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Memory::Pool(slice) = &mut self.memory
            && let Some(s) = slice.take()
        {
            self.device.pool.free(s, self.size);
        }
    }
}

/// A contiguous tensor on a device (or a view of one). Time-major sequences are `[T, N]`,
/// states `[N]`, images `[T * B, C, H, W]`.
///
/// Device memory is not Rust memory: kernels write through shared references, and all
/// work on a device is ordered by its one stream.
#[derive(Debug, Clone)]
pub struct DeviceTensor {
    buf: Arc<Buffer>,
    /// Byte offset of the first element in the buffer.
    offset: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl DeviceTensor {
    /// A tensor whose contents are unspecified until a kernel writes them (outputs that
    /// are overwritten in full); NaN bytes when the device poisons memory (see
    /// [`Device::poison`]).
    pub fn empty(
        device: &Arc<Device>,
        dtype: Dtype,
        shape: &[usize],
    ) -> Result<Self, RuntimeError> {
        let len: usize = shape.iter().product();
        let what = || format!("allocating a {dtype} tensor of shape {shape:?}");
        let bytes = len
            .checked_mul(dtype.size())
            .ok_or_else(|| RuntimeError::invalid(what(), "the size overflows"))?;
        let (slice, size) = device.pool.alloc(&device.stream, bytes, &what)?;
        let whole_buffer = slice.len();
        let t = Self {
            buf: Arc::new(Buffer {
                memory: Memory::Pool(Some(slice)),
                size,
                device: device.clone(),
            }),
            offset: 0,
            dtype,
            shape: shape.to_vec(),
        };
        if device.poison {
            // NaN in f32 and bf16, over the whole buffer (the pool's may be larger than
            // asked): a read before the write, or past the end, shows in the results.
            t.memset(0xff, whole_buffer)?;
        }
        Ok(t)
    }

    /// A tensor over memory another library owns (a PyTorch tensor's, say): kernels read
    /// and write it in place; dropping it frees nothing.
    ///
    /// # Safety
    /// `ptr` must address `shape`'s elements of `dtype`, contiguous, on `device`, and stay
    /// allocated (and unused by its owner except in order on `device`'s stream) for as long
    /// as the tensor and its views live.
    pub unsafe fn borrowed(device: &Arc<Device>, ptr: u64, dtype: Dtype, shape: &[usize]) -> Self {
        Self {
            buf: Arc::new(Buffer {
                memory: Memory::Borrowed(ptr),
                size: 0,
                device: device.clone(),
            }),
            offset: 0,
            dtype,
            shape: shape.to_vec(),
        }
    }

    /// A zeroed tensor.
    pub fn zeros(
        device: &Arc<Device>,
        dtype: Dtype,
        shape: &[usize],
    ) -> Result<Self, RuntimeError> {
        let t = Self::empty(device, dtype, shape)?;
        t.clear()?;
        Ok(t)
    }

    /// Uploads `values`, stored as `dtype`.
    pub fn from_f32(
        device: &Arc<Device>,
        dtype: Dtype,
        shape: &[usize],
        values: &[f32],
    ) -> Result<Self, RuntimeError> {
        let len: usize = shape.iter().product();
        if values.len() != len {
            return Err(RuntimeError::invalid(
                "uploading a tensor",
                format!(
                    "{} values for a tensor of shape {shape:?} ({len} elements)",
                    values.len()
                ),
            ));
        }
        let t = Self::empty(device, dtype, shape)?;
        t.write_bytes(&dtype.encode(values))?;
        Ok(t)
    }

    /// Copies `bytes` (this tensor's storage, as many bytes as it has) to the device.
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<(), RuntimeError> {
        if bytes.len() != self.num_bytes() {
            return Err(RuntimeError::invalid(
                "writing a tensor",
                format!(
                    "{} bytes for a {} tensor of shape {:?} ({} bytes)",
                    bytes.len(),
                    self.dtype,
                    self.shape,
                    self.num_bytes()
                ),
            ));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.device().bind()?;
        let stream = &self.device().stream;
        // SAFETY: the destination is this tensor's `num_bytes` bytes; the copy is ordered on
        // the device's stream and the host slice outlives it because the call synchronizes
        // (pageable memory) before returning.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(self.ptr(), bytes, stream.cu_stream())
                .and_then(|()| stream.synchronize())
        }
        .map_err(|e| RuntimeError::driver(format!("uploading a {} tensor", self.dtype), e))
    }

    /// Copies the tensor's bytes to the host.
    pub fn read_bytes(&self) -> Result<Vec<u8>, RuntimeError> {
        let mut out = vec![0u8; self.num_bytes()];
        if out.is_empty() {
            return Ok(out);
        }
        self.device().bind()?;
        let stream = &self.device().stream;
        // SAFETY: the source is this tensor's bytes, `out` has as many; the stream is
        // synchronized before `out` is read or dropped.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(&mut out, self.ptr(), stream.cu_stream())
                .and_then(|()| stream.synchronize())
        }
        .map_err(|e| RuntimeError::driver(format!("downloading a {} tensor", self.dtype), e))?;
        Ok(out)
    }

    /// Downloads the values as f32.
    pub fn to_f32(&self) -> Result<Vec<f32>, RuntimeError> {
        Ok(self.dtype.decode(&self.read_bytes()?))
    }

    /// Sets every byte to `byte` (tests poison outputs before kernels write them).
    pub fn fill_bytes(&self, byte: u8) -> Result<(), RuntimeError> {
        self.memset(byte, self.num_bytes())
    }

    /// Sets `bytes` bytes from the tensor's start to `byte`: its own, or (for a tensor at
    /// the start of its buffer) the whole buffer's.
    fn memset(&self, byte: u8, bytes: usize) -> Result<(), RuntimeError> {
        self.device().bind()?;
        let stream = &self.device().stream;
        // SAFETY: `ptr` addresses at least `bytes` bytes of this tensor's buffer (its own
        // bytes, or all of a buffer it starts), on this stream.
        unsafe {
            cudarc::driver::result::memset_d8_async(self.ptr(), byte, bytes, stream.cu_stream())
        }
        .map_err(|e| RuntimeError::driver("filling a tensor", e))
    }

    /// Zeroes the tensor.
    pub fn clear(&self) -> Result<(), RuntimeError> {
        self.fill_bytes(0)
    }

    /// Copies `src` (same dtype and element count) into this tensor, on the stream.
    pub fn copy_from(&self, src: &DeviceTensor) -> Result<(), RuntimeError> {
        if src.dtype != self.dtype || src.len() != self.len() {
            return Err(RuntimeError::invalid(
                "copying a tensor",
                format!(
                    "a {} tensor of shape {:?} into a {} tensor of shape {:?}",
                    src.dtype, src.shape, self.dtype, self.shape
                ),
            ));
        }
        self.device().bind()?;
        let stream = &self.device().stream;
        // SAFETY: both addresses span `num_bytes` bytes of live buffers; ordered on the stream.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                self.ptr(),
                src.ptr(),
                self.num_bytes(),
                stream.cu_stream(),
            )
        }
        .map_err(|e| RuntimeError::driver("copying a tensor", e))
    }

    /// The same memory with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<DeviceTensor, RuntimeError> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(RuntimeError::invalid(
                "reshaping a tensor",
                format!(
                    "cannot view a tensor of shape {:?} as {shape:?}",
                    self.shape
                ),
            ));
        }
        Ok(Self {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// A view of `shape`'s elements starting at element `start` of this tensor.
    pub fn view(&self, start: usize, shape: &[usize]) -> Result<DeviceTensor, RuntimeError> {
        let len: usize = shape.iter().product();
        if start.checked_add(len).is_none_or(|end| end > self.len()) {
            return Err(RuntimeError::invalid(
                "viewing a tensor",
                format!(
                    "a view of {len} elements at {start} does not fit a tensor of {} elements",
                    self.len()
                ),
            ));
        }
        Ok(Self {
            offset: self.offset + start * self.dtype.size(),
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.buf.device
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn num_bytes(&self) -> usize {
        self.len() * self.dtype.size()
    }

    /// The device address of the first element (for kernel and library arguments).
    pub fn ptr(&self) -> u64 {
        let base = match &self.buf.memory {
            Memory::Pool(Some(s)) => s.device_ptr(&self.buf.device.stream).0,
            Memory::Pool(None) => return 0,
            Memory::Borrowed(p) => *p,
        };
        base + self.offset as u64
    }
}
