//! A whole network on one GPU: the `snn-nn` graph run layer by layer, forward and backward,
//! with every trained tensor in one flat parameter buffer (and the gradients in another of
//! the same layout), so that an optimizer step is one fused kernel over all of them.
//!
//! Precision: with [`ConvMath::Bf16`] the activations and their gradients are bf16 up to
//! the first global pooling or linear layer ([`value_dtypes`]): convolutions on tensor
//! cores with f32 accumulation, batch-norm and pooling kernels' bf16 twins, and neurons in
//! narrow storage (bf16 inputs, spikes and saves); weights, gradients, optimizer state,
//! batch-norm statistics, linear layers and the loss stay f32 (convolutions read a bf16 copy
//! of the weights, made once per forward pass), as PyTorch's bf16 autocast does.
//!
//! Memory: the forward pass keeps only what the backward pass reads (a convolution's and a
//! linear layer's input, a batch-norm's input and statistics, a neuron's memory-plan
//! saves, a max-pool's argmax) and returns everything else to the pool as soon as its
//! last reader ran; the backward pass frees each saved tensor after its last use.

use std::sync::Arc;

use cudarc::driver::CudaEvent;
use snn_codegen::Mode;
use snn_codegen::fuse::{BN_MEAN, BN_SCALE, BN_SHIFT, batch_norm_input};
use snn_codegen::{Dtype, Storage};
use snn_nn::graph::{Network, Node, Op};
use snn_nn::params::{ParamSet, Role, Tensor};
use snn_nn::{ActivationPlan, ImageShape};

use crate::device::Device;
use crate::dist::buckets::{self, Bucket};
use crate::dist::{Communicator, Parallel, Split};
use crate::error::RuntimeError;
use crate::layer::{LayerConfig, LayerForward, NeuronLayer};
use crate::nn::conv::{ConvGpu, ConvMath, Cudnn};
use crate::nn::fusion::{self, Fusion};
use crate::nn::kernels::{
    BatchNormParams, BatchNormSaved, add, add_assign, batchnorm_backward, batchnorm_backward_fused,
    batchnorm_forward, batchnorm_replay, batchnorm_scale, batchnorm_statistics, convert,
    global_avgpool_backward, global_avgpool_forward, maxpool2d_backward, maxpool2d_forward,
};
use crate::nn::linear::{Cublas, linear_backward, linear_forward};
use crate::tensor::DeviceTensor;
use snn_codegen::cuda::Reduction;

mod backward;
mod forward;
mod profile;
mod recompute;
mod time_split;

/// Offsets in the flat buffers are multiples of this many f32 (256 bytes), so every
/// tensor is aligned for vector loads and for cuDNN.
const ALIGN: usize = 64;

/// How the model computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelOptions {
    /// Convolutions in TF32 (PyTorch's default for cuDNN) or full f32 on f32 activations,
    /// or bf16 ones: the whole network's narrow storage (module docs).
    pub conv_math: ConvMath,
    /// Bit-reproducible training: only deterministic convolution algorithms, and neuron
    /// parameter gradients summed in a fixed order instead of with atomics (every other
    /// kernel is deterministic anyway). Off: the fastest algorithms, as PyTorch's default.
    pub deterministic: bool,
    /// The most workspace a convolution algorithm may use, in bytes (more can be faster,
    /// and costs memory).
    pub conv_workspace: usize,
    /// Keep every node's output in the trace ([`GpuTrace::value`]), for inspection and
    /// debugging, at the cost of memory (fused layers still write no output).
    pub keep_activations: bool,
    /// Fuse batch-norm (and a residual add) into the neuron that reads it (see
    /// [`crate::nn::fusion`]).
    pub fuse: bool,
    /// Run convolutions of maps so small that they are one matrix product (a 3x3
    /// convolution of a 1x1 map) through cuBLAS rather than cuDNN.
    pub tiny_map_gemm: bool,
    /// Keep the spikes that the backward pass reads (a convolution's input, a residual) in
    /// one signed byte rather than the activation dtype, and widen them when it reads them:
    /// 4x (f32) or 2x (bf16) less memory for them, for a narrowing pass in the forward and a
    /// widening one in the backward. Bit for bit the same training (spikes are exactly -1,
    /// 0 or 1). Ignored with [`Self::keep_activations`].
    pub spikes_in_bytes: bool,
    /// What a training pass keeps for the backward pass: every activation it reads, or
    /// only the spikes (in one byte), the batch statistics and the neurons' states every
    /// few steps, the rest recomputed by the backward (the CPU reference's plans, with its
    /// results; see [`ActivationPlan`]).
    pub plan: ActivationPlan,
}

impl ModelOptions {
    /// What a training pass keeps for the backward pass, in words.
    pub fn kept(&self) -> String {
        match (self.plan, self.spikes_in_bytes) {
            (ActivationPlan::Spikes { time_chunk }, _) => format!(
                "spikes in one byte and neuron states every {time_chunk} steps, the rest recomputed"
            ),
            (ActivationPlan::All, true) => "every activation, spikes in one byte".into(),
            (ActivationPlan::All, false) => "every activation".into(),
        }
    }
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            conv_math: ConvMath::Tf32,
            deterministic: false,
            conv_workspace: crate::nn::conv::DEFAULT_SEARCH_WORKSPACE,
            keep_activations: false,
            fuse: true,
            tiny_map_gemm: true,
            spikes_in_bytes: false,
            plan: ActivationPlan::All,
        }
    }
}

/// Where one trained tensor lives in the flat buffers.
#[derive(Clone, Debug)]
struct Slot {
    name: String,
    shape: Vec<usize>,
    offset: usize,
    /// The node it belongs to.
    node: usize,
}

impl Slot {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Per-node state that lives as long as the model.
enum Layer {
    None,
    Conv {
        weight: usize,
        bias: Option<usize>,
        /// The convolution problem for the last batch size seen.
        problem: Option<(usize, ConvGpu)>,
    },
    BatchNorm {
        gamma: usize,
        beta: usize,
        running_mean: DeviceTensor,
        running_var: DeviceTensor,
        batches: u64,
    },
    Neuron {
        layer: Box<NeuronLayer>,
        /// Learnable params: (param name, slot). The kernels read their slots in the flat
        /// parameter buffer directly, so an optimizer step reaches them with no copy.
        learnable: Vec<(String, usize)>,
    },
    Linear {
        weight: usize,
        bias: Option<usize>,
    },
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layer::None => "None",
            Layer::Conv { .. } => "Conv",
            Layer::BatchNorm { .. } => "BatchNorm",
            Layer::Neuron { .. } => "Neuron",
            Layer::Linear { .. } => "Linear",
        })
    }
}

/// The time one node took in the forward and backward passes, summed over the passes
/// since profiling started (see [`GpuModel::set_profiling`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTime {
    pub name: String,
    /// The PyTorch class of the node (`Conv2d`, `BatchNorm2d`, ...).
    pub kind: &'static str,
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// The most pool memory in use right after the node's forward (backward) work, over
    /// the profiled passes: where the peak comes from.
    pub forward_bytes: usize,
    pub backward_bytes: usize,
}

/// CUDA events around every node launch: (node, backward?, start, end, bytes in use
/// after it).
type Events = Vec<(usize, bool, CudaEvent, CudaEvent, usize)>;

/// What a node's forward pass kept for the backward pass.
#[derive(Debug)]
enum Saved {
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

/// How a node's forward runs: in a training or inference pass, or replayed by the backward
/// pass to recompute an output the trace did not keep (batch-norm with the statistics the
/// training pass saved, nothing updated, nothing saved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Train,
    Inference,
    Replay,
}

/// What a forward pass keeps for the backward pass.
#[derive(Debug)]
pub struct GpuTrace {
    pub steps: usize,
    pub batch: usize,
    pub mode: Mode,
    /// Node outputs still needed (by the backward pass, or the network's output).
    values: Vec<Option<DeviceTensor>>,
    /// The dtype of each value kept as spikes in one byte ([`ModelOptions::spikes_in_bytes`]).
    widths: Vec<Option<Dtype>>,
    saved: Vec<Saved>,
    /// Split by time: the states each neuron node's chunk started from (the previous
    /// rank's final ones), which its backward reads.
    inits: Vec<Option<Vec<DeviceTensor>>>,
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
    fn read(&self, id: usize) -> Result<Option<DeviceTensor>, RuntimeError> {
        read(&self.values, &self.widths, id)
    }

    /// Keeps node `id`'s output, spikes, in one byte from now on. A neuron whose backward
    /// re-reads its own output kept a view of the wide one: it lets go of it, and its
    /// backward widens the byte copy instead.
    fn narrow(&mut self, id: usize) -> Result<(), RuntimeError> {
        let Some(v) = self.values[id].take() else {
            return Ok(());
        };
        let bytes = DeviceTensor::empty(v.device(), Dtype::I8, &v.shape)?;
        convert(v.device(), &v, &bytes)?;
        self.widths[id] = Some(v.dtype);
        self.values[id] = Some(bytes);
        if let Saved::Neuron(fwd) = &mut self.saved[id] {
            fwd.outputs.clear();
        }
        Ok(())
    }
}

/// [`GpuTrace::read`] on the trace's fields, so that a closure may hold them while the
/// trace's saved tensors are taken.
fn read(
    values: &[Option<DeviceTensor>],
    widths: &[Option<Dtype>],
    id: usize,
) -> Result<Option<DeviceTensor>, RuntimeError> {
    let Some(v) = values.get(id).and_then(|v| v.as_ref()) else {
        return Ok(None);
    };
    match widths.get(id).copied().flatten() {
        None => Ok(Some(v.clone())),
        Some(dtype) => {
            let wide = DeviceTensor::empty(v.device(), dtype, &v.shape)?;
            convert(v.device(), v, &wide)?;
            Ok(Some(wide))
        }
    }
}

/// A network with its parameters on one GPU.
#[derive(Debug)]
pub struct GpuModel {
    device: Arc<Device>,
    net: Network,
    options: ModelOptions,
    cudnn: Option<Arc<Cudnn>>,
    cublas: Option<Arc<Cublas>>,
    slots: Vec<Slot>,
    params: DeviceTensor,
    grads: DeviceTensor,
    /// With bf16 convolutions: the bf16 copy of `params` they read, refreshed by each
    /// forward pass.
    params_bf16: Option<DeviceTensor>,
    /// Each node's value dtype (its gradient's too).
    dtypes: Vec<Dtype>,
    layers: Vec<Layer>,
    /// Whether the backward pass reads each node's output.
    keep_output: Vec<bool>,
    /// Which nodes run fused.
    fusion: Vec<Fusion>,
    /// Timing events, while profiling.
    profile: Option<Events>,
    /// The run's other ranks and how they share each step, when the model is one rank of
    /// several ([`GpuModel::join`]).
    parallel: Option<Parallel>,
    /// The gradient buckets the backward pass reduces while it runs, last first (none:
    /// the whole buffer is reduced after it).
    buckets: Vec<Bucket>,
}

impl GpuModel {
    /// Uploads `params` (every tensor of the network, e.g. from `snn_nn::init_params` or a
    /// checkpoint) and compiles the neuron kernels.
    pub fn new(
        device: &Arc<Device>,
        net: &Network,
        params: &ParamSet<f32>,
        options: ModelOptions,
    ) -> Result<Self, RuntimeError> {
        net.check_params(params)?;
        let (slots, total) = layout(net);
        let mut flat = vec![0f32; total];
        for s in &slots {
            let data = params.data(&s.name)?;
            flat[s.offset..s.offset + data.len()].copy_from_slice(data);
        }
        let params_dev = DeviceTensor::from_f32(device, Dtype::F32, &[flat.len()], &flat)?;
        let grads = DeviceTensor::zeros(device, Dtype::F32, &[flat.len()])?;
        let slot = |name: String| {
            slots
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| RuntimeError::Internal(format!("no trained tensor `{name}`")))
        };
        let data = |name: String| params.data(&name);
        let needs_conv = net.nodes().iter().any(|n| matches!(n.op, Op::Conv2d(_)));
        let needs_blas = net.nodes().iter().any(|n| matches!(n.op, Op::Linear(_)));
        let dtypes = value_dtypes(net, options.conv_math.dtype())?;
        let mut layers = Vec::new();
        let mut fusion = fusion::plan(net, options.fuse);
        for (id, node) in net.nodes().iter().enumerate() {
            let name = |f: &str| format!("{}.{f}", node.name);
            let layer = match &node.op {
                Op::Conv2d(c) => Layer::Conv {
                    weight: slot(name("weight"))?,
                    bias: c.bias.then(|| slot(name("bias"))).transpose()?,
                    problem: None,
                },
                Op::BatchNorm2d(bn) => {
                    let c = bn.channels;
                    let stat =
                        |f: &str| DeviceTensor::from_f32(device, Dtype::F32, &[c], data(name(f))?);
                    let batches = data(name("num_batches_tracked"))?[0] as u64;
                    Layer::BatchNorm {
                        gamma: slot(name("weight"))?,
                        beta: slot(name("bias"))?,
                        running_mean: stat("running_mean")?,
                        running_var: stat("running_var")?,
                        batches,
                    }
                }
                Op::Neuron(ir) => {
                    let mut config = LayerConfig::new(Network::layout(node.shape));
                    // Inputs and spikes as the input comes; saves narrow with the network.
                    let io = dtypes[node.inputs[0]];
                    config.storage = Storage {
                        io,
                        spikes: io,
                        saves: options.conv_math.dtype(),
                    };
                    if options.deterministic {
                        config.options.reduction = Reduction::Deterministic;
                    }
                    let fused = match fusion[id] {
                        Fusion::Neuron { residual, .. } => {
                            batch_norm_input(ir, residual.is_some()).ok()
                        }
                        _ => None,
                    };
                    let mut layer = match &fused {
                        Some(f) => NeuronLayer::new(device, f, config)?,
                        None => {
                            // A neuron that cannot take batch-norm in runs after it.
                            for f in fusion.iter_mut() {
                                if *f == (Fusion::Absorbed { into: id }) {
                                    *f = Fusion::Plain;
                                }
                            }
                            fusion[id] = Fusion::Plain;
                            NeuronLayer::new(device, ir.as_ref(), config)?
                        }
                    };
                    let mut learnable = Vec::new();
                    for p in ir.params.iter().filter(|p| p.learnable) {
                        let slot = slot(name(&p.name))?;
                        let s = &slots[slot];
                        layer.bind_param(&p.name, &params_dev.view(s.offset, &s.shape)?)?;
                        learnable.push((p.name.clone(), slot));
                    }
                    Layer::Neuron {
                        layer: Box::new(layer),
                        learnable,
                    }
                }
                Op::Linear(l) => Layer::Linear {
                    weight: slot(name("weight"))?,
                    bias: l.bias.then(|| slot(name("bias"))).transpose()?,
                },
                _ => Layer::None,
            };
            layers.push(layer);
        }
        // A node's input is kept when the node's backward reads it.
        let mut keep_output = vec![false; net.nodes().len()];
        for (id, node) in net.nodes().iter().enumerate() {
            let reads = fusion[id].reads(net, id);
            match (&node.op, &layers[id], fusion[id]) {
                (_, _, Fusion::Absorbed { .. }) => {}
                (Op::Conv2d(_) | Op::BatchNorm2d(_) | Op::Linear(_), _, _) => {
                    reads.iter().for_each(|&i| keep_output[i] = true);
                }
                (Op::Neuron(_), Layer::Neuron { layer, .. }, f) => {
                    let plan = &layer.compiled().plan;
                    keep_output[id] |= !plan.reread_outputs.is_empty();
                    for &k in &plan.reread_inputs {
                        keep_output[reads[k as usize]] = true;
                    }
                    // Batch-norm's backward, finished after the neuron's, reads its input.
                    if let Fusion::Neuron { x, .. } = f {
                        keep_output[x] = true;
                    }
                }
                _ => {}
            }
        }
        // Flatten is a view: keeping its output keeps its input.
        for id in (0..net.nodes().len()).rev() {
            if matches!(net.node(id).op, Op::Flatten) && keep_output[id] {
                keep_output[net.node(id).inputs[0]] = true;
            }
        }
        Ok(Self {
            device: device.clone(),
            net: net.clone(),
            options,
            cudnn: needs_conv
                .then(|| {
                    let c = Cudnn::new(device)?;
                    c.set_deterministic(options.deterministic);
                    c.set_search_limit(options.conv_workspace);
                    c.set_tiny_map_gemm(options.tiny_map_gemm);
                    Ok::<_, RuntimeError>(c)
                })
                .transpose()?,
            cublas: needs_blas.then(|| Cublas::new(device)).transpose()?,
            slots,
            params_bf16: (options.conv_math == ConvMath::Bf16 && needs_conv)
                .then(|| DeviceTensor::empty(device, Dtype::BF16, &[params_dev.len()]))
                .transpose()?,
            params: params_dev,
            grads,
            dtypes,
            layers,
            keep_output,
            fusion,
            profile: None,
            parallel: None,
            buckets: Vec::new(),
        })
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Makes the model one rank of a run of several (whose communicator the trainer
    /// reduces gradients over: [`crate::nn::GpuTrainer::parallel`]). Split by batch,
    /// training batch-norm takes the statistics of all ranks' batches with
    /// `sync_batch_norm` (see [`crate::nn::kernels::batchnorm_forward`]), else its own
    /// rank's; split by time, those of all ranks' chunks, and every neuron layer hands its
    /// states on to the next rank ([`Split::Time`]).
    pub fn join(&mut self, parallel: Parallel) -> Result<(), RuntimeError> {
        if !Arc::ptr_eq(parallel.comm.device(), &self.device) {
            return Err(RuntimeError::invalid(
                "parallel training",
                "the communicator belongs to another device than the model",
            ));
        }
        // Other NCCL calls in the backward pass (synchronised batch-norm, the hand-offs of a
        // split by time) would each wait for the buckets queued before them, on the one
        // stream that keeps the ranks' calls in order: the gradients then travel once, after
        // it.
        let alone = parallel.split
            == Split::Batch {
                sync_batch_norm: false,
            };
        let bucket_bytes = if alone { parallel.bucket_bytes } else { 0 };
        self.buckets = gradient_buckets(&self.slots, &self.fusion, self.grads.len(), bucket_bytes);
        self.parallel = Some(parallel);
        Ok(())
    }

    /// Whether a training step calls NCCL before its backward pass ends (synchronised
    /// batch-norm, a split by time, gradient buckets): such steps run launch by launch,
    /// not replayed from a CUDA graph.
    pub fn talks_during_step(&self) -> bool {
        self.syncs_batch_norm() || !self.buckets.is_empty()
    }

    /// The gradient buckets the backward pass reduces while it runs.
    pub fn gradient_buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// After the backward pass of one rank of several: makes the gradients those of the
    /// whole run (the device's later work waits for the buckets reduced during the
    /// backward pass, or the whole buffer is reduced now). Nothing for a model of its own.
    pub fn reduce_gradients(&self) -> Result<(), RuntimeError> {
        match &self.parallel {
            None => Ok(()),
            Some(p) if self.buckets.is_empty() => {
                p.comm.all_reduce(&self.grads, p.split.gradients())
            }
            Some(p) => p.comm.catch_up(),
        }
    }

    /// Starts reducing, in the background and in order, the gradient buckets not started
    /// yet that the backward pass has written all of once it has run every node from
    /// `ran_down_to` up.
    fn reduce_written(&self, next: &mut usize, ran_down_to: usize) -> Result<(), RuntimeError> {
        let Some(p) = &self.parallel else {
            return Ok(());
        };
        while let Some(b) = self.buckets.get(*next) {
            if b.written_by < ran_down_to {
                break;
            }
            let t = self.grads.view(b.range.start, &[b.range.len()])?;
            p.comm.all_reduce_in_background(&t, p.split.gradients())?;
            *next += 1;
        }
        Ok(())
    }

    /// The run of several ranks the model is one of, if any.
    pub fn communicator(&self) -> Option<&Communicator> {
        self.parallel.as_ref().map(|p| &p.comm)
    }

    /// How the ranks of its run share each step, if the model is one of several.
    pub fn split(&self) -> Option<Split> {
        self.parallel.as_ref().map(|p| p.split)
    }

    /// Whether training batch-norm takes the statistics of all ranks' values.
    pub fn syncs_batch_norm(&self) -> bool {
        self.bn_sync().is_some()
    }

    /// The communicator batch-norm synchronises over, if it does.
    fn bn_sync(&self) -> Option<&Communicator> {
        let p = self.parallel.as_ref()?;
        match p.split {
            Split::Batch {
                sync_batch_norm: true,
            }
            | Split::Time => Some(&p.comm),
            Split::Batch { .. } => None,
        }
    }

    /// Split by time: the communicator, this rank and the rank count.
    fn time_stage(&self) -> Option<(&Communicator, usize, usize)> {
        let p = self.parallel.as_ref().filter(|p| p.split == Split::Time)?;
        Some((&p.comm, p.comm.world().rank, p.comm.world().size))
    }

    /// Whether a training pass keeps node `id`'s output for the backward pass.
    fn kept(&self, id: usize) -> bool {
        match self.options.plan {
            ActivationPlan::All => self.keep_output[id],
            ActivationPlan::Spikes { .. } => ActivationPlan::spikes_keep(&self.net, id),
        }
    }

    /// Whether node `id` is a neuron whose backward re-reads its own outputs.
    fn rereads_own_output(&self, id: usize) -> bool {
        matches!(&self.layers[id], Layer::Neuron { layer, .. }
            if !layer.compiled().plan.reread_outputs.is_empty())
    }

    /// Whether a training pass keeps node `id`'s output in one byte.
    fn kept_in_bytes(&self, id: usize) -> bool {
        let spikes_plan = self.options.plan != ActivationPlan::All;
        self.net.node(id).emits_spikes() && (self.options.spikes_in_bytes || spikes_plan)
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The convolution workspace's size now, in bytes.
    pub fn conv_workspace_bytes(&self) -> usize {
        self.conv_workspace().1
    }

    /// The convolution workspace's address and size (it moves when it grows).
    pub fn conv_workspace(&self) -> (u64, usize) {
        self.cudnn.as_ref().map_or((0, 0), |c| c.workspace())
    }

    /// The flat buffer of every trained tensor.
    pub fn params(&self) -> &DeviceTensor {
        &self.params
    }

    /// The flat gradient buffer (same layout as [`GpuModel::params`]).
    pub fn grads(&self) -> &DeviceTensor {
        &self.grads
    }

    /// Batch-norm layer `id`'s parameter slots (`gamma`, `beta`) and running statistics.
    fn batchnorm_layer(
        &self,
        id: usize,
    ) -> Result<(usize, usize, &DeviceTensor, &DeviceTensor), RuntimeError> {
        match &self.layers[id] {
            Layer::BatchNorm {
                gamma,
                beta,
                running_mean,
                running_var,
                ..
            } => Ok((*gamma, *beta, running_mean, running_var)),
            _ => Err(RuntimeError::Internal(
                "a batch-norm layer without its state".into(),
            )),
        }
    }

    fn weight(&self, slot: usize) -> Result<DeviceTensor, RuntimeError> {
        let s = &self.slots[slot];
        self.params.view(s.offset, &s.shape)
    }

    /// The weight a convolution reads: the bf16 copy's view with bf16 convolutions.
    fn conv_weight(&self, slot: usize) -> Result<DeviceTensor, RuntimeError> {
        let s = &self.slots[slot];
        self.params_bf16
            .as_ref()
            .unwrap_or(&self.params)
            .view(s.offset, &s.shape)
    }

    /// Node `id`'s value dtype (and its gradient's).
    pub fn value_dtype(&self, id: usize) -> Dtype {
        self.dtypes[id]
    }

    fn grad(&self, slot: usize) -> Result<DeviceTensor, RuntimeError> {
        let s = &self.slots[slot];
        self.grads.view(s.offset, &s.shape)
    }

    /// The trained tensors of a flat buffer in this model's layout (parameters, gradients,
    /// optimizer state), as a named set.
    pub fn weights_to_host(&self, flat: &DeviceTensor) -> Result<ParamSet<f32>, RuntimeError> {
        if flat.len() != self.params.len() {
            return Err(RuntimeError::invalid(
                "reading weights",
                format!(
                    "a flat buffer of {} values; this model's has {}",
                    flat.len(),
                    self.params.len()
                ),
            ));
        }
        let all = flat.to_f32()?;
        let mut set = ParamSet::new();
        for s in &self.slots {
            let len = s.len();
            set.push(Tensor {
                name: s.name.clone(),
                shape: s.shape.clone(),
                role: Role::Weight,
                data: all[s.offset..s.offset + len].to_vec(),
            })?;
        }
        Ok(set)
    }

    /// Writes the trained tensors of `set` (every one of this model's, by name) into a
    /// flat buffer of this model's layout.
    pub fn weights_from_host(
        &self,
        set: &ParamSet<f32>,
        flat: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        let mut all = vec![0f32; self.params.len()];
        for s in &self.slots {
            let t = set.get(&s.name).ok_or_else(|| {
                RuntimeError::invalid("loading weights", format!("no tensor `{}`", s.name))
            })?;
            if t.shape != s.shape {
                return Err(RuntimeError::invalid(
                    "loading weights",
                    format!(
                        "tensor `{}` is {:?}; the model needs {:?}",
                        s.name, t.shape, s.shape
                    ),
                ));
            }
            all[s.offset..s.offset + t.data.len()].copy_from_slice(&t.data);
        }
        if flat.len() != all.len() || flat.dtype != Dtype::F32 {
            return Err(RuntimeError::invalid(
                "loading weights",
                format!(
                    "a flat buffer of {} {} values; this model's has {} f32",
                    flat.len(),
                    flat.dtype,
                    all.len()
                ),
            ));
        }
        flat.write_bytes(&Dtype::F32.encode(&all))
    }

    /// Every tensor of the network (weights, batch-norm statistics and counters) on the
    /// host, named as in PyTorch.
    pub fn to_host(&self) -> Result<ParamSet<f32>, RuntimeError> {
        self.collect(&self.params, true)
    }

    /// The gradients on the host, as a set with the network's names (buffers zero).
    pub fn grads_to_host(&self) -> Result<ParamSet<f32>, RuntimeError> {
        self.collect(&self.grads, false)
    }

    fn collect(&self, flat: &DeviceTensor, buffers: bool) -> Result<ParamSet<f32>, RuntimeError> {
        let all = flat.to_f32()?;
        let mut set = ParamSet::new();
        for info in self.net.params() {
            let len: usize = info.shape.iter().product();
            let data = match info.role {
                Role::Weight => {
                    let s = self
                        .slots
                        .iter()
                        .find(|s| s.name == info.name)
                        .ok_or_else(|| {
                            RuntimeError::Internal(format!("no slot for `{}`", info.name))
                        })?;
                    all[s.offset..s.offset + len].to_vec()
                }
                _ if !buffers => vec![0.0; len],
                role => {
                    let field = &info.name[self.net.node(info.node).name.len() + 1..];
                    match (&self.layers[info.node], role, field) {
                        (Layer::BatchNorm { running_mean, .. }, Role::Buffer, "running_mean") => {
                            running_mean.to_f32()?
                        }
                        (Layer::BatchNorm { running_var, .. }, Role::Buffer, "running_var") => {
                            running_var.to_f32()?
                        }
                        (Layer::BatchNorm { batches, .. }, Role::Counter, _) => {
                            vec![*batches as f32]
                        }
                        _ => {
                            return Err(RuntimeError::Internal(format!(
                                "no storage for `{}`",
                                info.name
                            )));
                        }
                    }
                }
            };
            set.push(Tensor {
                name: info.name,
                shape: info.shape,
                role: info.role,
                data,
            })?;
        }
        Ok(set)
    }
}

/// Where each trained tensor of `net` lives in the flat buffers, and their length. In the
/// network's order: the backward pass then writes the gradients from the buffer's end
/// down, as gradient buckets want ([`buckets`]).
fn layout(net: &Network) -> (Vec<Slot>, usize) {
    let mut slots = Vec::new();
    let mut total = 0;
    for info in net.params().into_iter().filter(|p| p.role == Role::Weight) {
        let len: usize = info.shape.iter().product();
        slots.push(Slot {
            name: info.name,
            shape: info.shape,
            offset: total,
            node: info.node,
        });
        total += len.next_multiple_of(ALIGN);
    }
    (slots, total.max(1))
}

/// The gradient buckets of a flat buffer of `len` values holding `slots`, for nodes run as
/// `fusion` says, of about `bytes` each (none for 0: one reduction of the whole buffer).
fn gradient_buckets(slots: &[Slot], fusion: &[Fusion], len: usize, bytes: usize) -> Vec<Bucket> {
    if bytes == 0 {
        return Vec::new();
    }
    // A fused batch-norm's gradients are written by the neuron it runs in.
    let writer = |node| match fusion[node] {
        Fusion::Absorbed { into } => into,
        _ => node,
    };
    let tensors: Vec<_> = slots
        .iter()
        .map(|s| (s.offset..s.offset + s.len(), writer(s.node)))
        .collect();
    buckets::plan(&tensors, len, bytes / Dtype::F32.size())
}

/// `x` in `dtype`: itself, or a converted copy (bf16 activations widened for a linear
/// layer, the f32 input narrowed for bf16 convolutions, and their gradients back).
fn as_dtype(
    dev: &Arc<Device>,
    x: &DeviceTensor,
    dtype: Dtype,
) -> Result<DeviceTensor, RuntimeError> {
    if x.dtype == dtype {
        return Ok(x.clone());
    }
    let y = DeviceTensor::empty(dev, dtype, &x.shape)?;
    convert(dev, x, &y)?;
    Ok(y)
}

/// Each node's value dtype with activations of `act`: `act` from the input (when a
/// convolution reads it) through convolutions, batch-norms, neurons, max-pools, adds and
/// flattens; f32 from the first global pooling or linear layer on (the classifier head, its
/// neurons' inputs and spikes included, and the loss). A network that needs bf16 after f32
/// (a convolution after a linear layer, an add of the two) is refused.
fn value_dtypes(net: &Network, act: Dtype) -> Result<Vec<Dtype>, RuntimeError> {
    let nodes = net.nodes();
    let conv_reads_input = nodes
        .iter()
        .any(|n| matches!(n.op, Op::Conv2d(_)) && n.inputs.first() == Some(&0));
    let mut dtypes: Vec<Dtype> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let inputs: Vec<Dtype> = node.inputs.iter().map(|&i| dtypes[i]).collect();
        let refuse = || {
            RuntimeError::invalid(
                "building the model",
                format!(
                    "`{}` ({}) reads {inputs:?} activations; with bf16 convolutions the \
                     network must keep bf16 activations before its first global pooling or \
                     linear layer and f32 after it: use f32 convolutions (TF32) for this network",
                    node.name,
                    node.op.kind()
                ),
            )
        };
        let dtype = match &node.op {
            Op::Input if conv_reads_input => act,
            Op::Input | Op::GlobalAvgPool | Op::Linear(_) => Dtype::F32,
            Op::Conv2d(_) if inputs[0] != act => return Err(refuse()),
            Op::Conv2d(_) => act,
            Op::Add if inputs[0] != inputs[1] => return Err(refuse()),
            _ => inputs[0],
        };
        dtypes.push(dtype);
    }
    Ok(dtypes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use snn_codegen::zoo;
    use snn_nn::models::spiking_resnet;

    /// Spiking-ResNet18's gradients, as the fused GPU model writes them: its tensors lie in
    /// the network's order, which the backward pass runs backwards (but for a residual
    /// block's batch-norm fused into the neuron after the add), so that a bucket is
    /// complete early; with DDP's 25 MiB, the first of its two buckets (most of layer4)
    /// travels while layers 3 to 1 and the stem run.
    #[test]
    fn resnet18_gradients_travel_from_the_last_layers_on() {
        let net = spiking_resnet(
            18,
            ImageShape::new(3, 32, 32),
            10,
            &zoo::PaperLif::default(),
        )
        .unwrap();
        let (slots, len) = layout(&net);
        let fusion = fusion::plan(&net, true);
        assert_eq!(gradient_buckets(&slots, &fusion, len, 0), vec![]);
        for bytes in [1, 1 << 20, Parallel::DEFAULT_BUCKET_BYTES] {
            let buckets = gradient_buckets(&slots, &fusion, len, bytes);
            for pair in buckets.windows(2) {
                assert_eq!(pair[0].range.start, pair[1].range.end);
            }
            assert_eq!(buckets[0].range.end, len);
            // Every fused batch-norm's tensors are written by its neuron, after its slot.
            for s in &slots {
                let b = buckets
                    .iter()
                    .find(|b| b.range.contains(&s.offset))
                    .unwrap();
                let writer = match fusion[s.node] {
                    Fusion::Absorbed { into } => {
                        assert!(matches!(net.node(into).op, Op::Neuron(_)));
                        into
                    }
                    _ => s.node,
                };
                assert!(writer >= b.written_by, "{}", s.name);
            }
        }
        let buckets = gradient_buckets(&slots, &fusion, len, Parallel::DEFAULT_BUCKET_BYTES);
        assert_eq!(buckets.len(), 2, "{buckets:?}");
        let first = &net.node(buckets[0].written_by).name;
        assert!(first.starts_with("layer4."), "{first}");
        // One bucket per tensor when asked for the least.
        let one_each = gradient_buckets(&slots, &fusion, len, 1);
        assert_eq!(one_each.len(), slots.len());
    }
}
