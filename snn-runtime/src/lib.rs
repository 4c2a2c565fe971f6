//! GPU runtime of snn: finding the CUDA libraries, compiling the kernels that `snn-codegen`
//! generates with NVRTC, and (next) caching and launching them.
//!
//! It depends on `snn-codegen` and never the other way round, so everything about a neuron
//! stays testable without a GPU.

pub mod error;
pub mod libs;
pub mod nvrtc;

pub use error::RuntimeError;
pub use snn_codegen as codegen;
