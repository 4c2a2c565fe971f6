//! Training, whichever device runs it: the loss and what a step reports, the [`Trainer`]
//! that the CPU reference and the GPU runtime both implement, how loader batches become
//! network input ([`Input`]), and the one epoch loop over them ([`fit`], [`evaluate`]).
//!
//! ```text
//! let mut trainer: Box<dyn Trainer> = ...;      // CpuTrainer, or snn_runtime's Backend::trainer
//! let config = FitConfig::new(epochs, LrSchedule::Constant(1e-3), RateCode { steps: 8, seed: 0 });
//! fit(&mut *trainer, &train_loader, Some(&test_loader), &config, &mut observer)?;
//! ```

mod fit;
mod input;
mod trainer;

pub use fit::{
    EpochReport, Evaluation, FitConfig, Flow, LrSchedule, Observer, StepReport, TrainStats,
    evaluate, fit,
};
pub use input::{AsInput, Input, RateCode, expand_channels};
pub use trainer::{TrainError, Trainer};

use crate::error::NnError;
use crate::float::Float;
use crate::loss::{LossOutput, cross_entropy_rate, mse_rate};

/// The training objective over a classifier's output `[T, B, K]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Loss {
    /// The paper's: cross-entropy of the time-averaged logits.
    #[default]
    CrossEntropyRate,
    /// SpikingJelly's: mean squared error between firing rates and one-hot labels.
    MseRate,
}

impl Loss {
    /// The loss, its gradient and the number of correct predictions.
    pub fn compute<T: Float>(
        self,
        steps: usize,
        batch: usize,
        classes: usize,
        output: &[T],
        labels: &[usize],
    ) -> Result<LossOutput<T>, NnError> {
        match self {
            Loss::CrossEntropyRate => cross_entropy_rate([steps, batch, classes], output, labels),
            Loss::MseRate => mse_rate([steps, batch, classes], output, labels),
        }
    }

    /// The name used on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Loss::CrossEntropyRate => "ce",
            Loss::MseRate => "mse",
        }
    }
}

/// What one training step reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    pub loss: f64,
    /// Samples of the batch predicted right (before the update).
    pub correct: usize,
    pub batch: usize,
    /// The gradient norm before clipping, where clipping is on.
    pub grad_norm: Option<f64>,
}
