//! The temporal-fusion paper's multi-GPU scheme, forward and backward: a neuron layer's
//! time split into one chunk per rank, micro-batches of neurons flowing through the ranks
//! as a pipeline.
//!
//! Rank k of G holds steps `[k T / G, (k + 1) T / G)` of every sequence. Forward, for each
//! micro-batch in turn, it receives the neuron states at the start of its chunk from rank
//! k - 1 (rank 0 starts from the declared initial states), runs the fused forward kernel
//! on its chunk, and sends its final states on to rank k + 1. While rank k works on
//! micro-batch m, rank k - 1 already works on m + 1: after G - 1 micro-batches every rank
//! is busy, so an iteration takes about `Ts / G` plus a hand-off per rank (the paper's
//! model of the best G, `sqrt(Ts / Tc)`). The backward runs the other way: rank k receives
//! the adjoints of its final states from rank k + 1 (the last rank starts from zero), runs
//! the fused backward kernel, and sends the adjoints of its initial states to rank k - 1.
//!
//! The states cross in f32, as the kernels keep them, so outputs and input gradients are
//! those of the unsplit run bit for bit; a learnable param's gradient, a sum over time, is
//! summed over the ranks (to rounding). Micro-batches split the elements of a layer
//! (`[steps, n]` each, laid out as the layer's params need: whole samples for
//! per-channel ones).

use snn_codegen::Dtype;

use super::{Communicator, Reduce};
use crate::error::RuntimeError;
use crate::layer::{LayerForward, LayerGradients, NeuronLayer};
use crate::tensor::DeviceTensor;

/// A neuron layer run over this rank's time chunk, in step with the other ranks of `comm`.
#[derive(Debug)]
pub struct TimePipeline<'a> {
    layer: &'a NeuronLayer,
    comm: &'a Communicator,
}

/// One micro-batch's forward pass on this rank: the pass, and the states its chunk
/// started from (another rank's final states, `None` on rank 0), which its backward reads.
#[derive(Debug)]
pub struct StageForward {
    pub fwd: LayerForward,
    pub init: Option<Vec<DeviceTensor>>,
}

/// What a backward pass through the pipeline gives this rank: each micro-batch's input
/// gradients (`[steps, n]` each, one per input), and each learnable param's gradient
/// summed over the micro-batches and all ranks (the same on every rank; `None` for fixed
/// params).
#[derive(Debug)]
pub struct PipelineGrads {
    pub inputs: Vec<Vec<DeviceTensor>>,
    pub params: Vec<Option<DeviceTensor>>,
}

impl<'a> TimePipeline<'a> {
    /// `layer` as this rank's stage: rank k of `comm` holds the k-th time chunk. The layer
    /// must live on the communicator's device.
    pub fn new(layer: &'a NeuronLayer, comm: &'a Communicator) -> Result<Self, RuntimeError> {
        if !std::sync::Arc::ptr_eq(layer.device(), comm.device()) {
            return Err(RuntimeError::invalid(
                "time pipeline",
                "the layer lives on another device than the communicator",
            ));
        }
        Ok(Self { layer, comm })
    }

    fn rank(&self) -> (usize, usize) {
        let w = self.comm.world();
        (w.rank, w.size)
    }

    /// The forward pass of this rank's chunk of every micro-batch, in order: `inputs[m]`
    /// holds micro-batch m's inputs (`[steps, n]` each). Every rank must call it with the
    /// same micro-batches, each of the same `n` on every rank.
    pub fn forward(
        &self,
        inputs: &[Vec<&DeviceTensor>],
        train: bool,
    ) -> Result<Vec<StageForward>, RuntimeError> {
        let (rank, size) = self.rank();
        let states = self.layer.neuron().states.len();
        inputs
            .iter()
            .map(|xs| {
                let (steps, n) = seq_shape(xs)?;
                let init = (rank > 0)
                    .then(|| self.comm.recv_new(states, n, rank - 1))
                    .transpose()?;
                let mut fwd = self.layer.alloc_forward(steps, n, train)?;
                let starts: Option<Vec<&DeviceTensor>> = init.as_ref().map(|s| s.iter().collect());
                self.layer
                    .forward_into(xs, starts.as_deref(), train, &mut fwd)?;
                if rank + 1 < size {
                    for s in &fwd.final_states {
                        self.comm.send(s, rank + 1)?;
                    }
                }
                Ok(StageForward { fwd, init })
            })
            .collect()
    }

    /// The backward pass through every micro-batch of a training [`TimePipeline::forward`]
    /// (`inputs` and `fwds` its), from the output gradients `grad_outputs[m]` of
    /// micro-batch m (one per output).
    pub fn backward(
        &self,
        inputs: &[Vec<&DeviceTensor>],
        fwds: &[StageForward],
        grad_outputs: &[Vec<&DeviceTensor>],
    ) -> Result<PipelineGrads, RuntimeError> {
        let (rank, size) = self.rank();
        if fwds.len() != inputs.len() || grad_outputs.len() != inputs.len() {
            return Err(RuntimeError::invalid(
                "time pipeline backward",
                format!(
                    "{} micro-batches of inputs, {} forward passes and {} of output gradients",
                    inputs.len(),
                    fwds.len(),
                    grad_outputs.len()
                ),
            ));
        }
        let states = self.layer.neuron().states.len();
        let mut params: Option<Vec<Option<DeviceTensor>>> = None;
        let mut input_grads = Vec::with_capacity(inputs.len());
        for ((xs, stage), dys) in inputs.iter().zip(fwds).zip(grad_outputs) {
            let (steps, n) = seq_shape(xs)?;
            let later = (rank + 1 < size)
                .then(|| self.comm.recv_new(states, n, rank + 1))
                .transpose()?;
            // Param gradients: one set of tensors, added to by every micro-batch.
            let mut g: LayerGradients = match &params {
                None => self.layer.alloc_backward(steps, n)?,
                Some(p) => {
                    let io = self.layer.storage().io;
                    self.layer.gradients_in(
                        n,
                        (0..xs.len())
                            .map(|_| DeviceTensor::empty(self.layer.device(), io, &[steps, n]))
                            .collect::<Result<_, _>>()?,
                        (0..states)
                            .map(|_| DeviceTensor::empty(self.layer.device(), Dtype::F32, &[n]))
                            .collect::<Result<_, _>>()?,
                        p.clone(),
                    )?
                }
            };
            let init: Option<Vec<&DeviceTensor>> = stage.init.as_ref().map(|s| s.iter().collect());
            let later_refs: Option<Vec<&DeviceTensor>> = later.as_ref().map(|s| s.iter().collect());
            self.layer.backward_into(
                xs,
                init.as_deref(),
                &stage.fwd,
                dys,
                later_refs.as_deref(),
                &mut g,
            )?;
            if rank > 0 {
                for s in &g.init_states {
                    self.comm.send(s, rank - 1)?;
                }
            }
            params.get_or_insert_with(|| g.params.clone());
            input_grads.push(g.inputs);
        }
        let params = params.unwrap_or_default();
        for p in params.iter().flatten() {
            self.comm.all_reduce(p, Reduce::Sum)?;
        }
        Ok(PipelineGrads {
            inputs: input_grads,
            params,
        })
    }
}

/// `[steps, n]` of a micro-batch's first tensor (the layer checks the others).
fn seq_shape(xs: &[&DeviceTensor]) -> Result<(usize, usize), RuntimeError> {
    match xs.first().map(|x| &x.shape[..]) {
        Some(&[steps, n]) => Ok((steps, n)),
        other => Err(RuntimeError::invalid(
            "time pipeline",
            format!("a micro-batch's inputs must be [steps, n], got {other:?}"),
        )),
    }
}
