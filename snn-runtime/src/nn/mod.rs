//! Network layers on the GPU: the `snn-nn` layer descriptions run with cuDNN (convolutions),
//! cuBLAS (linear layers) and small hand-written kernels (batch-norm, pooling, losses,
//! optimizers), each checked against the CPU reference in `snn_nn::cpu`.

pub mod conv;
pub mod fusion;
pub mod kernels;
pub mod linear;
pub mod loss;
pub mod model;
pub mod optim;
pub mod train;

pub use conv::ConvMath;
pub use model::{GpuModel, GpuTrace, ModelOptions};
pub use train::{Backend, GpuTrainer};
