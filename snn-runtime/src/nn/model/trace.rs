//! What a forward pass keeps for the backward pass: node outputs (spikes possibly in one
//! byte, widened when read) and each node's saved tensors.

use snn_codegen::{Dtype, Mode};

use super::as_dtype;
use crate::error::RuntimeError;
use crate::layer::LayerForward;
use crate::nn::kernels::BatchNormSaved;
use crate::tensor::DeviceTensor;

/// What a node's forward pass kept for the backward pass.
#[derive(Debug)]
pub(super) enum Saved {
    None,
    BatchNorm(BatchNormSaved),
    /// A batch-norm fused into a neuron: the statistics (training only), and the mean and
    /// scale the neuron applied.
    FusedBn {
        saved: Option<BatchNormSaved>,
        mean: DeviceTensor,
        scale: DeviceTensor,
    },
    Neuron(LayerForward),
    /// A neuron under [`ActivationPlan::Spikes`]: its states at the start of every time
    /// chunk but the first; the backward recomputes its saves.
    Starts(Vec<Vec<DeviceTensor>>),
    MaxPool(DeviceTensor),
}

/// What a forward pass keeps for the backward pass.
#[derive(Debug)]
pub struct GpuTrace {
    pub steps: usize,
    pub batch: usize,
    pub mode: Mode,
    /// Node outputs still needed (by the backward pass, or the network's output).
    pub(super) values: Vec<Option<DeviceTensor>>,
    /// The dtype of each value kept as spikes in one byte ([`ModelOptions::spikes_in_bytes`]).
    pub(super) widths: Vec<Option<Dtype>>,
    pub(super) saved: Vec<Saved>,
    /// Split by time: the states each neuron node's chunk started from (the previous
    /// rank's final ones), which its backward reads.
    pub(super) inits: Vec<Option<Vec<DeviceTensor>>>,
}

impl GpuTrace {
    /// Bytes the trace holds for the backward pass: kept node outputs and saved tensors.
    pub fn bytes(&self) -> usize {
        let values: usize = self
            .values
            .iter()
            .flatten()
            .map(DeviceTensor::num_bytes)
            .sum();
        let saved: usize = self
            .saved
            .iter()
            .map(|s| match s {
                Saved::None => 0,
                Saved::BatchNorm(b) => b.mean.num_bytes() + b.inv_std.num_bytes(),
                Saved::FusedBn { saved, scale, .. } => {
                    scale.num_bytes()
                        + saved
                            .as_ref()
                            .map_or(0, |b| b.mean.num_bytes() + b.inv_std.num_bytes())
                }
                Saved::Neuron(f) => f.saves.iter().map(DeviceTensor::num_bytes).sum(),
                Saved::Starts(s) => s.iter().flatten().map(DeviceTensor::num_bytes).sum(),
                Saved::MaxPool(a) => a.num_bytes(),
            })
            .sum();
        let inits: usize = self
            .inits
            .iter()
            .flatten()
            .flatten()
            .map(DeviceTensor::num_bytes)
            .sum();
        values + saved + inits
    }

    /// The network's output, `[T * B, K]` (time-major) for a classifier.
    pub fn output(&self) -> Option<&DeviceTensor> {
        self.values.last().and_then(|v| v.as_ref())
    }

    /// Node `id`'s output, if the trace kept it (all of them with
    /// [`ModelOptions::keep_activations`]); spikes kept in one byte are `i8`.
    pub fn value(&self, id: usize) -> Option<&DeviceTensor> {
        self.values.get(id).and_then(|v| v.as_ref())
    }

    /// Node `id`'s output in its own dtype, if the trace kept it: spikes kept in one byte
    /// are widened into a new tensor.
    pub(super) fn read(&self, id: usize) -> Result<Option<DeviceTensor>, RuntimeError> {
        read(&self.values, &self.widths, id)
    }

    /// Keeps node `id`'s output, spikes, in one byte from now on.
    pub(super) fn narrow(&mut self, id: usize) -> Result<(), RuntimeError> {
        let Some(v) = self.values[id].take() else {
            return Ok(());
        };
        self.widths[id] = Some(v.dtype);
        self.values[id] = Some(as_dtype(v.device(), &v, Dtype::I8)?);
        Ok(())
    }
}

/// [`GpuTrace::read`] on the trace's fields, so that a closure may hold them while the
/// trace's saved tensors are taken.
pub(super) fn read(
    values: &[Option<DeviceTensor>],
    widths: &[Option<Dtype>],
    id: usize,
) -> Result<Option<DeviceTensor>, RuntimeError> {
    let Some(v) = values.get(id).and_then(|v| v.as_ref()) else {
        return Ok(None);
    };
    match widths.get(id).copied().flatten() {
        None => Ok(Some(v.clone())),
        Some(dtype) => as_dtype(v.device(), v, dtype).map(Some),
    }
}
