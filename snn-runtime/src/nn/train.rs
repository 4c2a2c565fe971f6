//! Training on one GPU: forward, loss, backward, optional gradient clipping, and a fused
//! optimizer step over the flat parameter buffer.

use std::sync::Arc;

use snn_codegen::Dtype;
use snn_codegen::Mode;
use std::collections::BTreeMap;

use snn_nn::checkpoint::Checkpoint;
use snn_nn::optim::{Optimizer, OptimizerState};
use snn_nn::{Loss, Network, StepStats};

use crate::device::Device;
use crate::error::RuntimeError;
use crate::nn::loss::LossGpu;
use crate::nn::model::GpuModel;
use crate::nn::optim::{clip_grad_norm, optimizer_state, optimizer_step};
use crate::tensor::DeviceTensor;

/// A model with its optimizer state on the device.
#[derive(Debug)]
pub struct GpuTrainer {
    pub model: GpuModel,
    optimizer: Optimizer,
    /// One flat tensor per optimizer state (Adam's moments, SGD's momentum), laid out
    /// like the parameters.
    state: Vec<DeviceTensor>,
    step: u64,
    loss: LossGpu,
    /// Clip the gradients' total L2 norm to this value before each step.
    pub clip: Option<f64>,
}

impl GpuTrainer {
    pub fn new(model: GpuModel, optimizer: Optimizer, loss: Loss) -> Result<Self, RuntimeError> {
        optimizer
            .validate()
            .map_err(|e| RuntimeError::Shape(e.to_string()))?;
        let state = optimizer_state(model.device(), &optimizer, model.params().len())?;
        let classes = model.network().output_shape().len();
        Ok(Self {
            loss: LossGpu::new(model.device(), loss, classes)?,
            model,
            optimizer,
            state,
            step: 0,
            clip: None,
        })
    }

    pub fn device(&self) -> &Arc<Device> {
        self.model.device()
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// Optimizer steps taken.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The optimizer state tensors (flat, in the parameters' layout).
    pub fn state(&self) -> &[DeviceTensor] {
        &self.state
    }

    /// One training step on `x` (`[T, B, C, H, W]` f32 on the device) with `labels` at
    /// learning rate `lr`. The loss is read back (a few bytes, through pinned memory) after
    /// the whole step is queued, so the host never drains the device mid-step.
    pub fn step(
        &mut self,
        x: &DeviceTensor,
        labels: &[usize],
        steps: usize,
        lr: f64,
    ) -> Result<StepStats, RuntimeError> {
        let batch = labels.len();
        let classes = self.model.network().output_shape().len();
        let trace = self.model.forward(x, steps, batch, Mode::Train)?;
        let out = trace
            .output()
            .ok_or_else(|| RuntimeError::Shape("the forward pass kept no output".into()))?
            .reshape(&[steps, batch, classes])?;
        let grad = DeviceTensor::empty(self.device(), Dtype::F32, &out.shape)?;
        let dev = self.device().clone();
        self.loss.compute(steps, batch, &out, labels, &grad)?;
        drop(out);
        self.model.backward(trace, &grad)?;
        drop(grad);
        let grad_norm = self
            .clip
            .map(|max| clip_grad_norm(&dev, self.model.grads(), max).map(f64::from))
            .transpose()?;
        self.step += 1;
        let state: Vec<&DeviceTensor> = self.state.iter().collect();
        optimizer_step(
            &dev,
            &self.optimizer,
            lr,
            self.step,
            self.model.params(),
            self.model.grads(),
            &state,
        )?;
        let value = self.loss.read()?;
        Ok(StepStats {
            loss: f64::from(value.loss),
            correct: value.correct,
            batch,
            grad_norm,
        })
    }

    /// Everything needed to resume: parameters, batch-norm statistics, optimizer state,
    /// the epoch, and `metadata`.
    pub fn checkpoint(
        &self,
        epoch: u64,
        metadata: BTreeMap<String, String>,
    ) -> Result<Checkpoint, RuntimeError> {
        let buffers = self
            .state
            .iter()
            .map(|t| self.model.weights_to_host(t))
            .collect::<Result<_, _>>()?;
        Ok(Checkpoint {
            params: self.model.to_host()?,
            optimizer: Some((
                self.optimizer,
                OptimizerState {
                    step: self.step,
                    buffers,
                },
            )),
            epoch,
            metadata,
        })
    }

    /// Resumes from a checkpoint of `net` (its optimizer state too, if it has one; else
    /// `optimizer` starts fresh). A checkpoint of another network is an error listing the
    /// tensors that differ.
    pub fn from_checkpoint(
        device: &Arc<Device>,
        net: &Network,
        ckpt: &Checkpoint,
        options: crate::nn::ModelOptions,
        optimizer: Optimizer,
        loss: Loss,
    ) -> Result<Self, RuntimeError> {
        let model = GpuModel::new(device, net, &ckpt.params, options)?;
        let mut trainer = Self::new(model, optimizer, loss)?;
        if let Some((saved, state)) = &ckpt.optimizer {
            if saved.kind() != optimizer.kind() || state.buffers.len() != trainer.state.len() {
                return Err(RuntimeError::Shape(format!(
                    "the checkpoint holds {} state; training asks for {}: resume with the same optimizer",
                    saved.kind(),
                    optimizer.kind()
                )));
            }
            for (set, flat) in state.buffers.iter().zip(&trainer.state) {
                trainer.model.weights_from_host(set, flat)?;
            }
            trainer.step = state.step;
        }
        Ok(trainer)
    }
}
