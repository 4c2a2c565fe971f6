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

/// The program of `kernels/<name>.cu`.
macro_rules! program {
    ($name:literal) => {
        Program {
            name: $name,
            source: include_str!(concat!("../../kernels/", $name, ".cu")),
        }
    };
}

/// Elementwise sums: a residual add, gradient accumulation.
pub const ELEMENTWISE: Program = program!("elementwise");

/// Batch normalisation: statistics, normalisation, backward, the fused path's pieces.
pub const BATCHNORM: Program = program!("batchnorm");

/// Max pooling and global average pooling, forward and backward.
pub const POOL: Program = program!("pool");

/// Every program (the NVRTC test compiles each, and checks every kernel's declaration).
pub const ALL: &[Program] = &[ELEMENTWISE, BATCHNORM, POOL];
