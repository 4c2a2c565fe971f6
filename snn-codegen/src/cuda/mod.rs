//! CUDA code generation: fused kernels that run all time steps of a layer in one launch.
//!
//! [`generate`] turns a [`Compiled`] neuron into CUDA C sources for NVRTC: forward
//! (training and inference) and backward, each with a [`KernelSignature`] that tells the
//! runtime how to call it. The sources are deterministic: the same neuron and options give
//! the same bytes, so they can key a kernel cache.

mod expr;
mod kernel;
mod prelude;
mod signature;
mod writer;

pub use prelude::{PRELUDE, REDUCE};
pub use signature::{
    ArgRole, ArgType, KernelArg, KernelKind, KernelSignature, SignatureError, ctype, parse_kernels,
};

use crate::compile::Compiled;

/// How learnable params' gradients are summed over elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// Warp and block reduction, then atomics: one pass, run-to-run order may vary.
    Atomic,
    /// Per-element partials, then a fixed-order reduction kernel: bit-reproducible.
    Deterministic,
}

/// Options that change the generated source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelOptions {
    pub reduction: Reduction,
    /// Compile for this `T` with the time loop unrolled (the run-time `steps` argument is
    /// dropped); `None` takes `T` at run time.
    pub fixed_steps: Option<u32>,
    /// Allow the 4-wide vector path (taken at run time when `N` and alignment allow).
    pub vectorize: bool,
    /// Threads per block (a multiple of 32, at most 1024).
    pub block_size: u32,
}

impl Default for KernelOptions {
    fn default() -> Self {
        Self {
            reduction: Reduction::Atomic,
            fixed_steps: None,
            vectorize: true,
            block_size: 256,
        }
    }
}

/// Consecutive elements one thread of a generated kernel handles per step of its
/// grid-stride loop: launch `ceil(N / ELEMENTS_PER_THREAD)` threads or fewer (any grid
/// size is correct).
pub const ELEMENTS_PER_THREAD: usize = 4;

/// Threads per block of `snn_reduce_param_grad`, launched on a `(values, chunks)` grid:
/// one block per gradient value of the param (`1`, `channels` or `channels * inner`) and
/// chunk of its elements. With more than one chunk, a second launch sums the chunks.
pub const REDUCE_BLOCK_SIZE: u32 = 256;

/// One generated source and the kernels it defines.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub kind: KernelKind,
    pub source: String,
    /// The kernels in `source`: the main one first (the backward of a deterministic
    /// reduction also defines `snn_reduce_param_grad`).
    pub signatures: Vec<KernelSignature>,
    /// Threads per block of the main kernel (a grid-stride loop over groups of
    /// [`ELEMENTS_PER_THREAD`] elements; any multiple of 32 up to 1024 is correct).
    pub block_size: u32,
}

/// The kernels of one neuron.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelSet {
    pub forward_train: Kernel,
    pub forward_inference: Kernel,
    pub backward: Kernel,
}

impl KernelSet {
    pub fn all(&self) -> [&Kernel; 3] {
        [&self.forward_train, &self.forward_inference, &self.backward]
    }
}

/// NVRTC options the generated sources are meant for.
/// - `--fmad=false` keeps `a * b + c` from being contracted differently in the forward
///   pass and in the backward's recomputation, so recomputed spikes match the forward's.
/// - `--prec-div=false`: IEEE division calls a slow path that needs a stack frame (local
///   memory); the approximate one is within 2 ulp, far inside the reference tolerance.
pub const COMPILE_OPTIONS: [&str; 3] = ["--fmad=false", "--prec-div=false", "--std=c++17"];

/// Generates the forward and backward kernels of a compiled neuron.
pub fn generate(compiled: &Compiled, options: &KernelOptions) -> KernelSet {
    let g = kernel::Gen::new(compiled, options);
    let (train, train_sig) = g.forward(true);
    let (inference, inference_sig) = g.forward(false);
    let (backward, backward_sigs) = g.backward();
    KernelSet {
        forward_train: Kernel {
            kind: KernelKind::ForwardTrain,
            source: train,
            signatures: vec![train_sig],
            block_size: options.block_size,
        },
        forward_inference: Kernel {
            kind: KernelKind::ForwardInference,
            source: inference,
            signatures: vec![inference_sig],
            block_size: options.block_size,
        },
        backward: Kernel {
            kind: KernelKind::Backward,
            source: backward,
            signatures: backward_sigs,
            block_size: options.block_size,
        },
    }
}
