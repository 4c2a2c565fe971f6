//! The CPU reference: every layer's forward and backward on host slices, in `f32` or `f64`.
//!
//! Each function checks the lengths of the slices it is given against the layer's shapes
//! and returns an error naming the mismatch; outputs are overwritten, never accumulated.

use crate::error::NnError;

pub mod batchnorm;
pub mod conv;
pub mod linear;
pub mod pool;

pub use batchnorm::{BatchNormGrads, BatchStats, Running, batchnorm_backward, batchnorm_forward};
pub use conv::{conv2d_backward, conv2d_forward};
pub use linear::{linear_backward, linear_forward};
pub use pool::{
    global_avgpool_backward, global_avgpool_forward, maxpool2d_backward, maxpool2d_forward,
};

/// Where the backward of a layer with a weight (convolution, linear) writes its gradients,
/// each overwritten; shapes as the layer's forward.
#[derive(Debug)]
pub struct WeightGrads<'a, T> {
    /// `dL/dx`; `None` skips it (e.g. for the first layer).
    pub input: Option<&'a mut [T]>,
    /// `dL/dweight`, summed over the images (rows).
    pub weight: &'a mut [T],
    /// `dL/dbias`: given exactly when the layer has a bias.
    pub bias: Option<&'a mut [T]>,
}

impl<T> WeightGrads<'_, T> {
    /// Checks the weight gradient's length against the weight's and the bias gradient's
    /// against the layer (`outputs` values, given exactly when it has a bias).
    fn check(&self, op: &str, weight: usize, bias: bool, outputs: usize) -> Result<(), NnError> {
        conv::check_len(
            op,
            "grads.weight",
            self.weight.len(),
            weight,
            "the weight's length",
        )?;
        let bias_len = self.bias.as_ref().map(|b| b.len());
        conv::check_bias(op, "grads.bias", bias, bias_len, outputs)
    }
}

pub mod model;
pub use model::{CpuModel, Trace};
pub mod train;
pub use train::CpuTrainer;
