//! The one training abstraction: what the CPU reference and the GPU trainer both do with a
//! batch, so that a run chooses its device once and every caller shares one epoch loop.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;

use snn_data::DataError;
use snn_data::encode::EncodeError;
use thiserror::Error;

use crate::checkpoint::Checkpoint;
use crate::error::NnError;
use crate::graph::Network;
use crate::train::{Input, StepStats};

/// A model with its optimizer, on some device, taking loader batches.
///
/// Implemented by `snn_nn::cpu::CpuTrainer<f32>` (input encoded on the host) and
/// `snn_runtime::nn::GpuTrainer` (input uploaded and encoded on the GPU, with the same
/// spikes). Both also have tensor-level `step` methods for callers that prepare input
/// themselves (benchmarks, device comparisons).
pub trait Trainer: fmt::Debug {
    /// The network trained.
    fn network(&self) -> &Network;

    /// Where it runs, in words ("the CPU", the GPU's name), for logs.
    fn device_name(&self) -> String;

    /// Optimizer steps taken, counting those before the checkpoint it resumed from:
    /// where [`fit`](crate::train::fit) continues.
    fn steps_taken(&self) -> u64;

    /// One optimizer step on `input` at learning rate `lr`.
    fn train_batch(&mut self, input: Input<'_>, lr: f64) -> Result<StepStats, TrainError>;

    /// The loss on `input` and the samples predicted right, in inference mode (running
    /// batch-norm statistics, no update).
    fn test_batch(&mut self, input: Input<'_>) -> Result<StepStats, TrainError>;

    /// What the trainer fell back on so far that a user should hear of (a CUDA graph that
    /// could not be captured, say), for logs; the results are the same either way.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Everything needed to resume: parameters, batch-norm statistics, optimizer state,
    /// `epoch` (completed epochs) and `metadata`.
    fn checkpoint(
        &self,
        epoch: u64,
        metadata: BTreeMap<String, String>,
    ) -> Result<Checkpoint, TrainError>;
}

/// Why training or evaluation stopped, whichever device ran it.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Nn(#[from] NnError),
    /// A batch could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The device failed (`snn_runtime::RuntimeError` for a GPU; downcast to inspect it).
    #[error(transparent)]
    Device(Box<dyn Error + Send + Sync>),
    /// The loss stopped being a finite number: the parameters are lost from this step on.
    #[error(
        "the loss is {loss} at step {step} (epoch {}): training diverged; lower the \
         learning rate, clip the gradients, or resume from an earlier checkpoint",
        .epoch + 1
    )]
    Diverged {
        /// The epoch, counted from 0 (the message counts from 1, as progress lines do).
        epoch: u64,
        /// Steps taken, the diverging one included.
        step: u64,
        loss: f64,
    },
}
