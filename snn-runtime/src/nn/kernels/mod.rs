//! Hand-written kernels for the layers that neither cuDNN nor cuBLAS provide: batch-norm,
//! max and global average pooling, elementwise sums and conversions, on NCHW tensors
//! `[images, C, H, W]` (time folded into the batch, `images = T * B`) of f32 or, for
//! narrow storage, bf16 values (each kernel has a `_bf16` twin; both compute in f32). Their CUDA is in
//! `snn-runtime/kernels/` ([`programs`](crate::launch::programs)).
//!
//! They are memory-bound, so each makes the fewest passes over its tensors, with coalesced
//! and (where sizes and alignment allow) 16-byte accesses. Every reduction is
//! deterministic: partial results in a fixed grid, merged in a fixed order, no float
//! atomics, so the same inputs give bit-identical outputs on every run.
//!
//! Tensors are passed as `&DeviceTensor`, outputs included: device memory is not Rust
//! memory, and the device's one stream orders the work. Each function checks its
//! arguments before any kernel runs and returns a typed error naming the argument
//! ([`RuntimeError::Tensor`], [`RuntimeError::Overlap`], [`RuntimeError::Invalid`], ...).

mod batchnorm;
mod elementwise;
mod pool;

use snn_nn::ImageShape;

use snn_codegen::Dtype;

use crate::check;
use crate::error::RuntimeError;
use crate::tensor::DeviceTensor;

pub use batchnorm::{
    BatchNormParams, BatchNormSaved, batchnorm_backward, batchnorm_backward_fused,
    batchnorm_forward, batchnorm_replay, batchnorm_scale, batchnorm_statistics,
};
pub use elementwise::{add, add_assign, convert};
pub use pool::{
    global_avgpool_backward, global_avgpool_forward, maxpool2d_backward, maxpool2d_forward,
};

/// Threads per block of every kernel here (the sources assume it too).
const THREADS: u32 = 256;
// Warp-level code (shuffles, one warp per channel) assumes whole warps.
const _: () = assert!(THREADS.is_multiple_of(32));

/// Blocks per multiprocessor of a grid-stride kernel: 8 x 256 threads fill an SM.
const BLOCKS_PER_SM: usize = 8;

/// The dtype of activations `t` (f32 or bf16), or the error naming `arg`.
pub(crate) fn activation(op: &str, arg: &str, t: &DeviceTensor) -> Result<Dtype, RuntimeError> {
    match t.dtype {
        Dtype::F32 | Dtype::BF16 => Ok(t.dtype),
        other => Err(RuntimeError::Tensor {
            op: op.into(),
            arg: arg.into(),
            expected: "f32 or bf16 values".into(),
            got: format!("{other} of shape {:?}", t.shape),
        }),
    }
}

/// The kernel of `names` for `dtype`: the f32 one, or its `_bf16` twin.
pub(crate) fn twin(dtype: Dtype, names: [&'static str; 2]) -> &'static str {
    if dtype == Dtype::BF16 {
        names[1]
    } else {
        names[0]
    }
}

/// Checks that `t` holds `images` f32 or bf16 images of `shape`; returns that many values.
fn check_images(
    op: &str,
    arg: &str,
    t: &DeviceTensor,
    images: usize,
    shape: ImageShape,
) -> Result<usize, RuntimeError> {
    let dims = [images, shape.channels, shape.height, shape.width];
    let len = check::product(op, &dims, "images")?;
    let dtype = activation(op, arg, t)?;
    check::tensor(
        op,
        arg,
        t,
        dtype,
        len,
        &format!("{images} images of shape {shape}"),
    )?;
    Ok(len)
}
