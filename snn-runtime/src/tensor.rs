//! A minimal device tensor: bytes on the GPU with a dtype and a shape.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use snn_codegen::Dtype;

use crate::device::Device;
use crate::error::RuntimeError;

/// A contiguous tensor on a device. Time-major sequences are `[T, N]`, states `[N]`.
#[derive(Debug)]
pub struct DeviceTensor {
    pub(crate) data: CudaSlice<u8>,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    device: Arc<Device>,
}

impl DeviceTensor {
    /// A zeroed tensor.
    pub fn zeros(
        device: &Arc<Device>,
        dtype: Dtype,
        shape: &[usize],
    ) -> Result<Self, RuntimeError> {
        let len: usize = shape.iter().product();
        let data = device
            .stream
            .alloc_zeros::<u8>(len * dtype.size())
            .map_err(|e| {
                RuntimeError::driver(format!("allocating a {dtype} tensor of shape {shape:?}"), e)
            })?;
        Ok(Self {
            data,
            dtype,
            shape: shape.to_vec(),
            device: device.clone(),
        })
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
            return Err(RuntimeError::Shape(format!(
                "{} values for a tensor of shape {shape:?} ({len} elements)",
                values.len()
            )));
        }
        let data = device
            .stream
            .clone_htod(&dtype.encode(values))
            .map_err(|e| {
                RuntimeError::driver(format!("uploading a {dtype} tensor of shape {shape:?}"), e)
            })?;
        Ok(Self {
            data,
            dtype,
            shape: shape.to_vec(),
            device: device.clone(),
        })
    }

    /// Downloads the values as f32.
    pub fn to_f32(&self) -> Result<Vec<f32>, RuntimeError> {
        let bytes = self
            .device
            .stream
            .clone_dtoh(&self.data)
            .map_err(|e| RuntimeError::driver("downloading a tensor", e))?;
        Ok(self.dtype.decode(&bytes))
    }

    /// Sets every byte to `byte` (tests poison outputs before kernels write them).
    pub fn fill_bytes(&mut self, byte: u8) -> Result<(), RuntimeError> {
        let stream = &self.device.stream;
        let len = self.data.len();
        let (ptr, _sync) = self.data.device_ptr_mut(stream);
        // SAFETY: `ptr` addresses this tensor's `num_bytes` bytes, on this stream.
        unsafe { cudarc::driver::result::memset_d8_async(ptr, byte, len, stream.cu_stream()) }
            .map_err(|e| RuntimeError::driver("filling a tensor", e))
    }

    /// Zeroes the tensor. Device memory is not Rust memory: kernels write through shared
    /// references too, on the one stream of the device.
    pub(crate) fn clear(&self) -> Result<(), RuntimeError> {
        let stream = &self.device.stream;
        let (ptr, _sync) = self.data.device_ptr(stream);
        // SAFETY: `ptr` addresses this tensor's bytes, and work on it is ordered by the stream.
        unsafe {
            cudarc::driver::result::memset_d8_async(ptr, 0, self.data.len(), stream.cu_stream())
        }
        .map_err(|e| RuntimeError::driver("zeroing a tensor", e))
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

    /// The device address (for kernel arguments).
    pub(crate) fn ptr(&self) -> u64 {
        let (p, _sync) = self.data.device_ptr(&self.device.stream);
        p
    }
}
