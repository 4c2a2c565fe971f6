//! Hand-written kernels for the layers that neither cuDNN nor cuBLAS provide: batch-norm,
//! max and global average pooling, and elementwise sums, on f32 NCHW tensors
//! `[images, C, H, W]` (time folded into the batch, `images = T * B`).
//!
//! They are memory-bound, so each makes the fewest passes over its tensors, with coalesced
//! and (where sizes and alignment allow) 16-byte accesses. Every reduction is
//! deterministic: partial results in a fixed grid, merged in a fixed order, no float
//! atomics, so the same inputs give bit-identical outputs on every run.
//!
//! Tensors are passed as `&DeviceTensor`, outputs included: device memory is not Rust
//! memory, and the device's one stream orders the work. Each function checks dtypes,
//! lengths and overlaps first and returns [`RuntimeError::Shape`] naming the argument.
#![allow(unsafe_code)]

mod batchnorm;
mod elementwise;
mod pool;

use std::sync::Arc;

use cudarc::driver::CudaFunction;
use snn_codegen::Dtype;
use snn_nn::ImageShape;

use crate::device::Device;
use crate::error::RuntimeError;
use crate::tensor::DeviceTensor;

pub use batchnorm::{
    BATCHNORM_SOURCE, BatchNormSaved, batchnorm_backward, batchnorm_backward_fused,
    batchnorm_forward_eval, batchnorm_forward_train, batchnorm_scale, batchnorm_statistics,
};
pub use elementwise::{add, add_assign};
pub use pool::{
    POOL_SOURCE, global_avgpool_backward, global_avgpool_forward, maxpool2d_backward,
    maxpool2d_forward,
};

/// One CUDA source of this module: its NVRTC program name, its text and its kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSource {
    pub name: &'static str,
    pub source: &'static str,
    pub kernels: &'static [&'static str],
}

/// Every source of this module (the NVRTC compile test checks each kernel of each).
pub const SOURCES: [KernelSource; 2] = [batchnorm::BATCHNORM, pool::POOL];

/// Threads per block of every kernel here (the sources assume it too).
const THREADS: u32 = 256;
// Warp-level code (shuffles, one warp per channel) assumes whole warps.
const _: () = assert!(THREADS.is_multiple_of(32));

/// Blocks per multiprocessor of a grid-stride kernel: 8 x 256 threads fill an SM.
const BLOCKS_PER_SM: usize = 8;

/// Kernel `kernel` of `source` on `device` (see [`Device::function`]).
fn function(
    device: &Arc<Device>,
    source: &KernelSource,
    kernel: &'static str,
) -> Result<CudaFunction, RuntimeError> {
    device.function(source.name, source.source, kernel)
}

/// Checks that `t` is an f32 tensor of `len` values; `what` says where `len` comes from.
fn check_f32(
    op: &str,
    arg: &str,
    t: &DeviceTensor,
    len: usize,
    what: &str,
) -> Result<(), RuntimeError> {
    check(op, arg, t, Dtype::F32, len, what)
}

fn check(
    op: &str,
    arg: &str,
    t: &DeviceTensor,
    dtype: Dtype,
    len: usize,
    what: &str,
) -> Result<(), RuntimeError> {
    if t.dtype == dtype && t.len() == len {
        return Ok(());
    }
    Err(RuntimeError::Shape(format!(
        "{op}: `{arg}` must be {dtype} with {len} values ({what}), got {} of shape {:?} ({} values)",
        t.dtype,
        t.shape,
        t.len()
    )))
}

/// `images` images of `shape`: the value count, or an error if it overflows.
fn image_values(op: &str, images: usize, shape: ImageShape) -> Result<usize, RuntimeError> {
    images.checked_mul(shape.len()).ok_or_else(|| {
        RuntimeError::Shape(format!(
            "{op}: {images} images of shape {shape} overflow the address space"
        ))
    })
}

/// How a kernel uses an argument, for [`check_memory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    Read,
    Write,
    /// Written by an elementwise kernel (each element read, then written, by one thread):
    /// may be exactly a read argument (in place), though not overlap one otherwise.
    WriteElementwise,
}

/// Checks that every argument lives on `device` (the kernels run on its stream, in its
/// context), and that no written argument shares memory with another argument, except an
/// elementwise output that is exactly one of its inputs: overlapping buffers would race
/// inside a kernel.
fn check_memory(
    op: &str,
    device: &Arc<Device>,
    args: &[(&str, &DeviceTensor, Use)],
) -> Result<(), RuntimeError> {
    if let Some((name, _, _)) = args
        .iter()
        .find(|(_, t, _)| !Arc::ptr_eq(t.device(), device))
    {
        return Err(RuntimeError::Shape(format!(
            "{op}: `{name}` belongs to another `Device`; create every tensor on the device that runs the kernel"
        )));
    }
    let range = |t: &DeviceTensor| (t.ptr(), t.ptr() + t.num_bytes() as u64);
    for (i, &(name_a, a, use_a)) in args.iter().enumerate() {
        for &(name_b, b, use_b) in &args[i + 1..] {
            let in_place = matches!(
                (use_a, use_b),
                (Use::WriteElementwise, Use::Read) | (Use::Read, Use::WriteElementwise)
            );
            let ((a0, a1), (b0, b1)) = (range(a), range(b));
            let overlap = a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1;
            let allowed =
                (use_a == Use::Read && use_b == Use::Read) || (in_place && (a0, a1) == (b0, b1));
            if overlap && !allowed {
                return Err(RuntimeError::Shape(format!(
                    "{op}: `{name_a}` and `{name_b}` share device memory; pass separate tensors"
                )));
            }
        }
    }
    Ok(())
}

/// Whether every tensor starts on a 16-byte boundary (float4 access).
fn aligned16(tensors: &[&DeviceTensor]) -> bool {
    tensors.iter().all(|t| t.ptr().is_multiple_of(16))
}

/// Blocks for a grid-stride loop over `work` items, one per thread: no more than fill the
/// device, so each thread takes several items.
fn grid_stride_blocks(device: &Device, work: usize) -> u32 {
    let most = (device.info.multiprocessors as usize * BLOCKS_PER_SM).max(1);
    // At most `most` (a u32 times 8, far below u32::MAX on any real device).
    work.div_ceil(THREADS as usize)
        .clamp(1, most)
        .min(u32::MAX as usize) as u32
}

/// A launch of `blocks` blocks of [`THREADS`] threads.
fn config(blocks: (u32, u32)) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (blocks.0, blocks.1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Converts a size to the `long long` a kernel takes (sizes of real tensors always fit).
fn i64_of(op: &str, what: &str, v: usize) -> Result<i64, RuntimeError> {
    i64::try_from(v).map_err(|_| RuntimeError::Shape(format!("{op}: {what} = {v} is too large")))
}
