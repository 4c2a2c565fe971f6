//! The CPU reference: every layer's forward and backward on host slices, in `f32` or `f64`.
//!
//! Each function checks the lengths of the slices it is given against the layer's shapes
//! and returns an error naming the mismatch; outputs are overwritten, never accumulated.

pub mod batchnorm;
pub mod conv;
pub mod linear;
pub mod pool;

pub use batchnorm::{
    BatchNormGrads, BatchStats, batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train,
};
pub use conv::{Conv2dGrads, conv2d_backward, conv2d_forward};
pub use linear::{LinearGrads, linear_backward, linear_forward};
pub use pool::{
    global_avgpool_backward, global_avgpool_forward, maxpool2d_backward, maxpool2d_forward,
};

pub mod model;
pub use model::{CpuModel, Trace};
pub mod train;
pub use train::CpuTrainer;
