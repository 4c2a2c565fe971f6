//! Training on the CPU: forward, loss, backward, optional gradient clipping, optimizer step.

use std::collections::BTreeMap;

use snn_codegen::Mode;

use crate::checkpoint::Checkpoint;
use crate::cpu::model::CpuModel;
use crate::error::NnError;
use crate::float::Float;
use crate::graph::Network;
use crate::optim::{Optimizer, OptimizerState, clip_grad_norm, step};
use crate::train::{Input, Loss, StepStats, TrainError, Trainer};

/// A model with its optimizer.
#[derive(Clone, Debug)]
pub struct CpuTrainer<T> {
    pub model: CpuModel<T>,
    pub optimizer: Optimizer,
    pub state: OptimizerState<T>,
    pub loss: Loss,
    /// Clip the gradients' total L2 norm to this value before each step.
    pub clip: Option<f64>,
}

impl<T: Float> CpuTrainer<T> {
    pub fn new(model: CpuModel<T>, optimizer: Optimizer, loss: Loss) -> Result<Self, NnError> {
        optimizer.validate()?;
        let state = OptimizerState::new(&optimizer, &model.params);
        Ok(Self {
            model,
            optimizer,
            state,
            loss,
            clip: None,
        })
    }

    /// One step on `x` (`[T, B, C, H, W]`) with `labels` (`B` of them) at learning rate
    /// `lr`.
    pub fn step(
        &mut self,
        x: &[T],
        labels: &[usize],
        steps: usize,
        lr: f64,
    ) -> Result<StepStats, NnError> {
        let batch = labels.len();
        let classes = self.model.network().output_shape().len();
        let trace = self.model.forward(x, steps, batch, Mode::Train)?;
        let out = self
            .loss
            .compute(steps, batch, classes, trace.output(), labels)?;
        let mut grads = self.model.backward(&trace, &out.grad)?;
        let grad_norm = self
            .clip
            .map(|max| clip_grad_norm(&mut grads, max).map(|n| n.value()))
            .transpose()?;
        step(
            &self.optimizer,
            lr,
            &mut self.state,
            &mut self.model.params,
            &grads,
        )?;
        Ok(StepStats {
            loss: out.loss.value(),
            correct: out.correct,
            batch,
            grad_norm,
        })
    }

    /// The loss on `x` with `labels` and the samples predicted right, in inference mode.
    pub fn test(&mut self, x: &[T], labels: &[usize], steps: usize) -> Result<StepStats, NnError> {
        let batch = labels.len();
        let classes = self.model.network().output_shape().len();
        let trace = self.model.forward(x, steps, batch, Mode::Inference)?;
        let out = self
            .loss
            .compute(steps, batch, classes, trace.output(), labels)?;
        Ok(StepStats {
            loss: out.loss.value(),
            correct: out.correct,
            batch,
            grad_norm: None,
        })
    }
}

impl CpuTrainer<f32> {
    /// Resumes from a checkpoint of `net` (with its optimizer state, if it has one of
    /// `optimizer`'s kind; else the optimizer starts fresh).
    pub fn from_checkpoint(
        net: &Network,
        ckpt: &Checkpoint,
        optimizer: Optimizer,
        loss: Loss,
    ) -> Result<Self, NnError> {
        let mut trainer = Self::new(CpuModel::new(net, ckpt.params.clone())?, optimizer, loss)?;
        if let Some((saved, state)) = &ckpt.optimizer {
            if saved.kind() != optimizer.kind() {
                return Err(NnError::Config(format!(
                    "the checkpoint holds {} state; training asks for {}: resume with the same optimizer",
                    saved.kind(),
                    optimizer.kind()
                )));
            }
            trainer.state = state.clone();
        }
        Ok(trainer)
    }
}

/// Input encoded on the host, as [`Input::to_host`] gives it.
impl Trainer for CpuTrainer<f32> {
    fn network(&self) -> &Network {
        self.model.network()
    }

    fn device_name(&self) -> String {
        "the CPU".into()
    }

    fn steps_taken(&self) -> u64 {
        self.state.step
    }

    fn train_batch(&mut self, input: Input<'_>, lr: f64) -> Result<StepStats, TrainError> {
        let x = input.to_host(self.model.network())?;
        Ok(self.step(&x, &input.labels(), input.steps(), lr)?)
    }

    fn test_batch(&mut self, input: Input<'_>) -> Result<StepStats, TrainError> {
        let x = input.to_host(self.model.network())?;
        Ok(self.test(&x, &input.labels(), input.steps())?)
    }

    fn checkpoint(
        &self,
        epoch: u64,
        metadata: BTreeMap<String, String>,
    ) -> Result<Checkpoint, TrainError> {
        Ok(Checkpoint {
            params: self.model.params.clone(),
            optimizer: Some((self.optimizer, self.state.clone())),
            epoch,
            metadata,
        })
    }
}
