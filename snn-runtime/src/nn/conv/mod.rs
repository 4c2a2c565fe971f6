//! Convolutions on the GPU through cuDNN, as `torch.nn.Conv2d` (NCHW tensors of f32, or of
//! bf16 with f32 accumulation, cross-correlation): forward, backward-data and
//! backward-filter.
//!
//! Each pass runs the algorithm that cuDNN's own search (`cudnnFind*AlgorithmEx`) finds
//! fastest for the problem. The search runs on the first call of the pass with that call's
//! tensors, as PyTorch's `cudnn.benchmark` does, so it needs no buffers of its own beyond a
//! scratch workspace; its result is remembered in [`Cudnn`] per problem, so every layer of
//! the same shape shares it. By default only deterministic algorithms are taken when one of
//! them runs, ranked by cuDNN's heuristics rather than by timings, so that every run takes
//! the same algorithms and gradients repeat bit for bit ([`Cudnn::set_deterministic`]
//! lifts this: the fastest timed algorithms); [`ConvMath::F32`] takes only algorithms
//! without tensor cores.
//!
//! - `cudnn`: the handle, its workspace and remembered choices, and the descriptors;
//! - `search`: the three passes' cuDNN calls behind one interface, the search and the
//!   choice of algorithms;
//! - `layer`: one convolution problem ([`ConvGpu`]) and its passes;
//! - `remember`: the choices kept on disk beside the kernel cache, so that a later run
//!   skips the searches;
//! - `taps`: convolutions of maps so small that they are one matrix product, which cuBLAS
//!   runs instead of cuDNN (unless [`Cudnn::set_tiny_map_gemm`] turns this off).

mod cudnn;
mod layer;
mod remember;
mod search;
mod taps;

use std::fmt;

use cudarc::cudnn::sys;
use snn_codegen::Dtype;
use snn_nn::{Conv2d, ImageShape};

use crate::check;
use crate::error::RuntimeError;

pub use cudnn::{Cudnn, DEFAULT_SEARCH_WORKSPACE};
pub use layer::ConvGpu;
pub use search::ConvAlgorithm;

/// How convolutions multiply: `Tf32` is what PyTorch does by default for cuDNN convolutions
/// on f32 tensors (`torch.backends.cudnn.allow_tf32 = True`); `F32` is full precision (tests
/// compare with the CPU); `Bf16` takes bf16 tensors (input, weight, output and their
/// gradients) and accumulates in f32 on tensor cores, as PyTorch's bf16 autocast does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvMath {
    Tf32,
    F32,
    Bf16,
}

impl ConvMath {
    /// The descriptor's math type, as PyTorch sets it: default math lets cuDNN use TF32
    /// tensor cores on f32 data, FMA math forbids them, and bf16 data asks for tensor cores.
    fn base(self) -> sys::cudnnMathType_t {
        match self {
            ConvMath::Tf32 => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
            ConvMath::F32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
            ConvMath::Bf16 => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        }
    }

    /// The dtype of the tensors it takes.
    pub fn dtype(self) -> Dtype {
        match self {
            ConvMath::Tf32 | ConvMath::F32 => Dtype::F32,
            ConvMath::Bf16 => Dtype::BF16,
        }
    }
}

/// The three passes of a convolution, each with its own algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPass {
    Forward,
    BackwardData,
    BackwardFilter,
}

impl ConvPass {
    /// The pass's place in per-pass arrays.
    fn index(self) -> usize {
        match self {
            ConvPass::Forward => 0,
            ConvPass::BackwardData => 1,
            ConvPass::BackwardFilter => 2,
        }
    }
}

impl fmt::Display for ConvPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConvPass::Forward => "forward",
            ConvPass::BackwardData => "backward-data",
            ConvPass::BackwardFilter => "backward-filter",
        })
    }
}

/// The NCHW shapes of one convolution problem, checked against what cuDNN's descriptors can
/// hold (every tensor below 2^31 values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShapes {
    /// `[images, in, H, W]`.
    pub input: [usize; 4],
    /// `[out, in, k, k]`.
    pub weight: [usize; 4],
    /// `[images, out, OH, OW]`.
    pub output: [usize; 4],
}

/// cuDNN's legacy descriptors count values in `int`.
const MAX_VALUES: usize = i32::MAX as usize;

impl ConvShapes {
    pub fn new(conv: &Conv2d, input: ImageShape, images: usize) -> Result<Self, RuntimeError> {
        const OP: &str = "conv2d on the GPU";
        if images == 0 {
            return Err(RuntimeError::invalid(
                OP,
                "got 0 images: give it at least one",
            ));
        }
        if conv.in_channels == 0 || conv.out_channels == 0 {
            return Err(RuntimeError::invalid(
                OP,
                format!(
                    "it needs at least one input and one output channel, got {} -> {}",
                    conv.in_channels, conv.out_channels
                ),
            ));
        }
        let output = conv.output(input)?;
        let shapes = Self {
            input: [images, input.channels, input.height, input.width],
            weight: conv.weight_shape(),
            output: [images, output.channels, output.height, output.width],
        };
        for (name, dims) in [
            ("input", shapes.input),
            ("weight", shapes.weight),
            ("output", shapes.output),
        ] {
            let values = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if values.is_none_or(|v| v > MAX_VALUES) {
                return Err(RuntimeError::invalid(
                    OP,
                    format!(
                        "the {name} {dims:?} has more values than cuDNN takes in one tensor (2^31 - 1): run fewer images per call"
                    ),
                ));
            }
        }
        for (what, v) in [("stride", conv.stride), ("padding", conv.padding)] {
            check::to_i32(OP, what, v)?;
        }
        Ok(shapes)
    }

    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    pub fn weight_len(&self) -> usize {
        self.weight.iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.output.iter().product()
    }
}
