//! GPU runtime of snn: finding the CUDA libraries, compiling kernels with NVRTC, caching
//! them in memory and on disk, and running fused neuron layers and whole networks on
//! device tensors.
//!
//! ```text
//! kernels/*.cu   hand-written CUDA (batch-norm, pooling, losses, optimizers, encoding,
//!                uploads), compiled at run time like the generated neuron kernels
//! libs/          finding the driver, NVRTC, cuDNN and cuBLAS (shared with build.rs)
//! device, pool, tensor   one context and stream per GPU, a caching allocator, tensors
//! graph          CUDA graphs: a step's launches captured once and replayed
//! nvrtc, cache   NVRTC compiles, the kernel cache (memory and disk)
//! launch/        the one launch path: every kernel's arguments bound by name or role and
//!                checked against its signature; programs.rs lists the .cu files
//! check          the argument checks every operation shares
//! layer          fused neuron layers (generated kernels, forward and backward through time)
//! nn/            network layers (cuDNN, cuBLAS, kernels/), the GPU model and trainer
//! encode, staging   rate encoding on the GPU; pinned asynchronous uploads of batches
//! bench          timings for `snn bench`
//! dist/          several processes: torchrun's or Slurm's ranks, the TCP rendezvous
//! ```
//!
//! It depends on `snn-codegen`, `snn-nn` and `snn-data` and never the other way round, so
//! everything about a neuron, a network or a dataset stays testable without a GPU.

pub mod bench;
pub mod cache;
pub mod check;
pub mod device;
pub mod dist;
pub mod encode;
pub mod error;
pub mod graph;
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
