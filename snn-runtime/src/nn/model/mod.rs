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
mod host;
mod parallel;
mod profile;
mod recompute;
mod time_split;
mod trace;

pub use trace::GpuTrace;
use trace::{Saved, read};

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

/// How a node's forward runs: in a training or inference pass, or replayed by the backward
/// pass to recompute an output the trace did not keep (batch-norm with the statistics the
/// training pass saved, nothing updated, nothing saved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Train,
    Inference,
    Replay,
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
