//! GPU runtime of snn: device discovery, NVRTC compilation and caching of the kernels that
//! `snn-codegen` generates, and fused neuron layers over device tensors.
//!
//! This crate is still empty: the runtime issue fills it. It depends on `snn-codegen` and
//! never the other way round, so everything about a neuron stays testable without a GPU.

pub use snn_codegen as codegen;
