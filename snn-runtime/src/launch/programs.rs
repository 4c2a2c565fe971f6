//! The hand-written CUDA programs: one `.cu` file each in `snn-runtime/kernels/`, built into
//! the binary and compiled by NVRTC at run time through the kernel cache, like generated
//! kernels. Each kernel's arguments are read from its own `extern "C"` declaration.

/// A hand-written CUDA source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Program {
    /// Its name in the kernel cache and in NVRTC's messages (the file's stem).
    pub name: &'static str,
    pub source: &'static str,
}

/// The program of `kernels/<name>.cu`, after what every program shares
/// (`kernels/common.cuh`: the f32 and bf16 loads and stores).
macro_rules! program {
    ($name:literal) => {
        Program {
            name: $name,
            source: concat!(
                include_str!("../../kernels/common.cuh"),
                include_str!(concat!("../../kernels/", $name, ".cu"))
            ),
        }
    };
}

/// Elementwise sums: a residual add, gradient accumulation.
pub const ELEMENTWISE: Program = program!("elementwise");

/// Batch normalisation: statistics, normalisation, backward, the fused path's pieces.
pub const BATCHNORM: Program = program!("batchnorm");

/// Max pooling and global average pooling, forward and backward.
pub const POOL: Program = program!("pool");

/// Per-channel bias of convolutions and linear layers, forward and gradient.
pub const BIAS: Program = program!("bias");

/// The weight taps of convolutions that cuBLAS runs as matrix products.
pub const TAPS: Program = program!("taps");

/// Rate encoding with Philox-4x32-10, as the CPU encoder.
pub const ENCODE: Program = program!("encode");

/// The rate losses: cross-entropy and MSE of time-averaged outputs.
pub const LOSS: Program = program!("loss");

/// Optimizer steps, the gradient norm and gradient scaling over flat buffers.
pub const OPTIM: Program = program!("optim");

/// Conversion of uploaded `u8` batches to `f32`.
pub const STAGING: Program = program!("staging");

/// Every program (the NVRTC test compiles each, and checks every kernel's declaration).
pub const ALL: &[Program] = &[
    ELEMENTWISE,
    BATCHNORM,
    POOL,
    BIAS,
    TAPS,
    ENCODE,
    LOSS,
    OPTIM,
    STAGING,
];
