//! GPU runtime of snn: finding the CUDA libraries, compiling the kernels that `snn-codegen`
//! generates with NVRTC, caching them in memory and on disk, and running fused neuron
//! layers on device tensors.
//!
//! It depends on `snn-codegen` and never the other way round, so everything about a neuron
//! stays testable without a GPU.

pub mod bench;
pub mod cache;
pub mod check;
pub mod device;
pub mod encode;
pub mod error;
pub mod launch;
pub mod layer;
pub mod libs;
pub mod nn;
pub mod nvrtc;
pub mod pool;
pub mod staging;
pub mod tensor;

pub use cache::{CacheStats, KernelCache};
pub use device::{Device, DeviceInfo};
pub use error::RuntimeError;
pub use layer::{LayerConfig, LayerForward, LayerGradients, NeuronLayer};
pub use pool::MemoryStats;
pub use snn_codegen as codegen;
pub use tensor::DeviceTensor;
