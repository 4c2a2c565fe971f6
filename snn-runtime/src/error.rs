//! Runtime errors: each says what failed and what to do.
//!
//! Errors of the libraries underneath keep their typed codes (the driver's `CUresult`,
//! NVRTC's, cuDNN's and cuBLAS's statuses), so out-of-memory is recognised by its code and
//! becomes [`RuntimeError::OutOfMemory`] whichever library ran out.

use cudarc::cublas::result::CublasError;
use cudarc::cudnn::result::CudnnError;
use cudarc::driver::DriverError;
use cudarc::driver::sys::CUresult;
use cudarc::nvrtc::result::NvrtcError;
use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq)]
pub enum RuntimeError {
    #[error("{what} was not found. Searched:\n  {}\n{install}", searched.join("\n  "))]
    MissingLibrary {
        what: &'static str,
        searched: Vec<String>,
        /// How to install it.
        install: &'static str,
    },
    #[error("NVRTC could not compile `{name}` for {arch}:\n{log}")]
    Compile {
        name: String,
        arch: String,
        log: String,
    },
    #[error("NVRTC failed: {0:?}")]
    Nvrtc(#[from] NvrtcError),
    #[error("CUDA driver error while {doing}: {error}")]
    Driver { doing: String, error: DriverError },
    #[error("cuDNN error in {call}: {:?}", error.0)]
    Cudnn { call: String, error: CudnnError },
    #[error("cuBLAS error in {call}: {:?}", error.0)]
    Cublas { call: String, error: CublasError },
    #[error(
        "out of GPU memory while {doing}; use a smaller batch, fewer time steps per chunk, or narrower storage"
    )]
    OutOfMemory { doing: String },
    #[error("no CUDA device {ordinal}: this machine has {count}")]
    NoDevice { ordinal: usize, count: usize },
    #[error("kernel cache at {dir}: {error}")]
    Cache { dir: String, error: String },
    #[error(transparent)]
    Ir(#[from] snn_codegen::IrError),
    #[error(transparent)]
    Nn(#[from] snn_nn::NnError),
    #[error(transparent)]
    Dist(#[from] crate::dist::DistError),
    /// A tensor argument of the wrong dtype or size.
    #[error("{op}: `{arg}` must be {expected}, got {got}")]
    Tensor {
        op: String,
        arg: String,
        expected: String,
        got: String,
    },
    /// A tensor of another [`Device`](crate::Device) than the one running the work.
    #[error(
        "{op}: `{arg}` belongs to another device; create every tensor on the device that runs the kernel"
    )]
    ForeignTensor { op: String, arg: String },
    /// A written tensor sharing memory with another argument.
    #[error("{op}: `{a}` and `{b}` share device memory; pass separate tensors")]
    Overlap { op: String, a: String, b: String },
    /// Any other argument that cannot be used: sizes that overflow, a label out of range,
    /// an unknown parameter name, an option out of its range.
    #[error("{op}: {problem}")]
    Invalid { op: String, problem: String },
    /// A call out of order: a backward pass without a training forward pass, a result read
    /// before it was computed.
    #[error("{0}")]
    Order(String),
    /// A CUDA graph could not be captured (the step runs launch by launch instead).
    #[error("capturing a CUDA graph: {0}")]
    Capture(String),
    /// A launch whose arguments do not match the kernel's declaration: a bug in snn.
    #[error("launching `{kernel}`: {problem} (a bug in snn: please report it)")]
    Binding { kernel: String, problem: String },
    /// A state that cannot happen: a bug in snn.
    #[error("internal error: {0} (a bug in snn: please report it)")]
    Internal(String),
}

impl RuntimeError {
    /// Wraps a driver error with what was being done (out-of-memory gets its own error).
    pub fn driver(doing: impl Into<String>, error: DriverError) -> Self {
        let doing = doing.into();
        if error.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            RuntimeError::OutOfMemory { doing }
        } else {
            RuntimeError::Driver { doing, error }
        }
    }

    /// Wraps a cuDNN error with the call that failed (an allocation failure is
    /// [`RuntimeError::OutOfMemory`]).
    pub fn cudnn(call: impl Into<String>, error: CudnnError) -> Self {
        use cudarc::cudnn::sys::cudnnStatus_t as S;
        let call = call.into();
        if matches!(
            error.0,
            S::CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED
                | S::CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED
        ) {
            RuntimeError::OutOfMemory {
                doing: format!("calling {call} (cuDNN)"),
            }
        } else {
            RuntimeError::Cudnn { call, error }
        }
    }

    /// Wraps a cuBLAS error with the call that failed (an allocation failure is
    /// [`RuntimeError::OutOfMemory`]).
    pub fn cublas(call: impl Into<String>, error: CublasError) -> Self {
        use cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED;
        let call = call.into();
        if error.0 == CUBLAS_STATUS_ALLOC_FAILED {
            RuntimeError::OutOfMemory {
                doing: format!("calling {call} (cuBLAS)"),
            }
        } else {
            RuntimeError::Cublas { call, error }
        }
    }

    /// An [`RuntimeError::Invalid`] argument of `op`.
    pub fn invalid(op: impl Into<String>, problem: impl Into<String>) -> Self {
        RuntimeError::Invalid {
            op: op.into(),
            problem: problem.into(),
        }
    }

    /// Whether this is [`RuntimeError::OutOfMemory`] (callers that can retry with less).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, RuntimeError::OutOfMemory { .. })
    }
}

impl From<DriverError> for RuntimeError {
    /// A driver error without more context than the call itself.
    fn from(error: DriverError) -> Self {
        RuntimeError::driver("calling the CUDA driver", error)
    }
}
