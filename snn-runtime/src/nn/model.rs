//! A whole network on one GPU: the `snn-nn` graph run layer by layer, forward and backward,
//! with every trained tensor in one flat parameter buffer (and the gradients in another of
//! the same layout), so that an optimizer step is one fused kernel over all of them.
//!
//! Memory: the forward pass keeps only what the backward pass reads (a convolution's and a
//! linear layer's input, a batch-norm's input and statistics, a neuron's memory-plan
//! saves, a max-pool's argmax) and returns everything else to the pool as soon as its
//! last reader ran; the backward pass frees each saved tensor after its last use.

use std::sync::Arc;

use cudarc::driver::{CudaEvent, sys};
use snn_codegen::fuse::{BN_MEAN, BN_SCALE, BN_SHIFT, batch_norm_input};
use snn_codegen::interp::Mode;
use snn_codegen::{Dtype, ParamShape};
use snn_nn::graph::{Network, Node, Op};
use snn_nn::params::{ParamSet, Role, Tensor};
use snn_nn::{ImageShape, NnError};

use crate::device::Device;
use crate::error::RuntimeError;
use crate::layer::{LayerConfig, LayerForward, NeuronLayer};
use crate::nn::conv::{ConvGpu, ConvMath, Cudnn};
use crate::nn::fusion::{self, Fusion};
use crate::nn::kernels::{
    BatchNormSaved, add, add_assign, batchnorm_backward, batchnorm_backward_fused,
    batchnorm_forward_eval, batchnorm_forward_train, batchnorm_scale, batchnorm_statistics,
    global_avgpool_backward, global_avgpool_forward, maxpool2d_backward, maxpool2d_forward,
};
use crate::nn::linear::{Cublas, linear_backward, linear_forward};
use crate::tensor::DeviceTensor;

/// Offsets in the flat buffers are multiples of this many f32 (256 bytes), so every
/// tensor is aligned for vector loads and for cuDNN.
const ALIGN: usize = 64;

fn nn_err(e: NnError) -> RuntimeError {
    RuntimeError::Shape(e.to_string())
}

/// How the model computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelOptions {
    /// Convolutions in TF32 (PyTorch's default for cuDNN) or full f32.
    pub conv_math: ConvMath,
    /// Only deterministic convolution algorithms (gradients repeat bit for bit), or the
    /// fastest ones (PyTorch's default).
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
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            conv_math: ConvMath::Tf32,
            deterministic: false,
            conv_workspace: crate::nn::conv::DEFAULT_SEARCH_WORKSPACE,
            keep_activations: false,
            fuse: true,
        }
    }
}

/// Where one trained tensor lives in the flat buffers.
#[derive(Clone, Debug)]
struct Slot {
    name: String,
    shape: Vec<usize>,
    offset: usize,
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
        /// Learnable params: (param name, slot, scalar?). Per-channel and per-neuron ones
        /// read their slot directly; scalars are passed by value, so they are copied over
        /// before each forward pass.
        learnable: Vec<(String, usize, bool)>,
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
    MaxPool(DeviceTensor),
}

/// What a forward pass keeps for the backward pass.
#[derive(Debug)]
pub struct GpuTrace {
    pub steps: usize,
    pub batch: usize,
    pub mode: Mode,
    /// Node outputs still needed (by the backward pass, or the network's output).
    values: Vec<Option<DeviceTensor>>,
    saved: Vec<Saved>,
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
                Saved::MaxPool(a) => a.num_bytes(),
            })
            .sum();
        values + saved
    }

    /// The network's output, `[T * B, K]` (time-major) for a classifier.
    pub fn output(&self) -> Option<&DeviceTensor> {
        self.values.last().and_then(|v| v.as_ref())
    }

    /// Node `id`'s output, if the trace kept it (all of them with
    /// [`ModelOptions::keep_activations`]).
    pub fn value(&self, id: usize) -> Option<&DeviceTensor> {
        self.values.get(id).and_then(|v| v.as_ref())
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
    layers: Vec<Layer>,
    /// Whether the backward pass reads each node's output.
    keep_output: Vec<bool>,
    /// Which nodes run fused.
    fusion: Vec<Fusion>,
    /// Timing events, while profiling.
    profile: Option<Events>,
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
        // The CPU model checks names and shapes in both directions; reuse it.
        snn_nn::cpu::CpuModel::new(net, params.clone()).map_err(nn_err)?;
        let mut slots = Vec::new();
        let mut total = 0;
        for t in params.weights() {
            slots.push(Slot {
                name: t.name.clone(),
                shape: t.shape.clone(),
                offset: total,
            });
            total += t.data.len().next_multiple_of(ALIGN);
        }
        let mut flat = vec![0f32; total.max(1)];
        for (s, t) in slots.iter().zip(params.weights()) {
            flat[s.offset..s.offset + t.data.len()].copy_from_slice(&t.data);
        }
        let params_dev = DeviceTensor::from_f32(device, Dtype::F32, &[flat.len()], &flat)?;
        let grads = DeviceTensor::zeros(device, Dtype::F32, &[flat.len()])?;
        let slot = |name: String| {
            slots
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| RuntimeError::Shape(format!("no trained tensor `{name}`")))
        };
        let data = |name: String| params.data(&name).map_err(nn_err);
        let needs_conv = net.nodes().iter().any(|n| matches!(n.op, Op::Conv2d(_)));
        let needs_blas = net.nodes().iter().any(|n| matches!(n.op, Op::Linear(_)));
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
                    let config = LayerConfig::new(Network::layout(node.shape));
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
                        let scalar = p.shape == ParamShape::Scalar;
                        if !scalar {
                            let s = &slots[slot];
                            layer.bind_param(&p.name, &params_dev.view(s.offset, &s.shape)?)?;
                        }
                        learnable.push((p.name.clone(), slot, scalar));
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
                    Ok::<_, RuntimeError>(c)
                })
                .transpose()?,
            cublas: needs_blas.then(|| Cublas::new(device)).transpose()?,
            slots,
            params: params_dev,
            grads,
            layers,
            keep_output,
            fusion,
            profile: None,
        })
    }

    /// Starts (or stops) timing every node with CUDA events. Timing adds a little
    /// overhead per node; [`GpuModel::take_profile`] reads the times.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(Vec::new);
    }

    /// The time each node took since profiling started (or since the last call), in
    /// node order; waits for the device.
    pub fn take_profile(&mut self) -> Result<Vec<NodeTime>, RuntimeError> {
        let Some(events) = self.profile.as_mut() else {
            return Err(RuntimeError::Shape(
                "profiling is off: call `set_profiling(true)` first".into(),
            ));
        };
        let events = std::mem::take(events);
        self.device.synchronize()?;
        let mut times: Vec<NodeTime> = self
            .net
            .nodes()
            .iter()
            .zip(&self.fusion)
            .map(|(n, f)| NodeTime {
                name: n.name.clone(),
                kind: match f {
                    Fusion::Neuron { add: None, .. } => "Neuron+BN",
                    Fusion::Neuron { .. } => "Neuron+BN+Add",
                    Fusion::Absorbed { .. } if matches!(n.op, Op::BatchNorm2d(_)) => "BN stats",
                    _ => n.op.kind(),
                },
                forward_ms: 0.0,
                backward_ms: 0.0,
                forward_bytes: 0,
                backward_bytes: 0,
            })
            .collect();
        for (id, backward, start, end, bytes) in events {
            let ms = f64::from(
                start
                    .elapsed_ms(&end)
                    .map_err(|e| RuntimeError::driver("reading a timing event", e))?,
            );
            let t = &mut times[id];
            if backward {
                t.backward_ms += ms;
                t.backward_bytes = t.backward_bytes.max(bytes);
            } else {
                t.forward_ms += ms;
                t.forward_bytes = t.forward_bytes.max(bytes);
            }
        }
        Ok(times)
    }

    /// Records a timing event, while profiling.
    fn mark(&self) -> Result<Option<CudaEvent>, RuntimeError> {
        if self.profile.is_none() {
            return Ok(None);
        }
        let e = self
            .device
            .context()
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| RuntimeError::driver("creating a timing event", e))?;
        e.record(self.device.stream())
            .map_err(|e| RuntimeError::driver("recording a timing event", e))?;
        Ok(Some(e))
    }

    fn record(
        &mut self,
        id: usize,
        backward: bool,
        start: Option<CudaEvent>,
    ) -> Result<(), RuntimeError> {
        if let Some(start) = start {
            let end = self.mark()?;
            let bytes = self.device.memory().in_use;
            if let (Some(p), Some(end)) = (self.profile.as_mut(), end) {
                p.push((id, backward, start, end, bytes));
            }
        }
        Ok(())
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The convolution workspace's size now, in bytes.
    pub fn conv_workspace_bytes(&self) -> usize {
        self.cudnn.as_ref().map_or(0, |c| c.workspace_bytes())
    }

    /// The flat buffer of every trained tensor.
    pub fn params(&self) -> &DeviceTensor {
        &self.params
    }

    /// The flat gradient buffer (same layout as [`GpuModel::params`]).
    pub fn grads(&self) -> &DeviceTensor {
        &self.grads
    }

    fn weight(&self, slot: usize) -> Result<DeviceTensor, RuntimeError> {
        let s = &self.slots[slot];
        self.params.view(s.offset, &s.shape)
    }

    fn grad(&self, slot: usize) -> Result<DeviceTensor, RuntimeError> {
        let s = &self.slots[slot];
        self.grads.view(s.offset, &s.shape)
    }

    /// The convolution problem of node `id` for `images` images (built once per size).
    fn conv_problem(&mut self, id: usize, images: usize) -> Result<&ConvGpu, RuntimeError> {
        let node = self.net.node(id).clone();
        let input = node.input_shape(&self.net);
        let (cudnn, math) = (self.cudnn.clone(), self.options.conv_math);
        let Layer::Conv { problem, .. } = &mut self.layers[id] else {
            return Err(RuntimeError::Shape(format!(
                "`{}` is not a convolution",
                node.name
            )));
        };
        let Op::Conv2d(conv) = &node.op else {
            return Err(RuntimeError::Shape(format!(
                "`{}` is not a convolution",
                node.name
            )));
        };
        if problem.as_ref().is_none_or(|(n, _)| *n != images) {
            let cudnn = cudnn.ok_or_else(|| RuntimeError::Shape("no cuDNN handle".into()))?;
            *problem = Some((images, ConvGpu::new(&cudnn, conv, input, images, math)?));
        }
        match problem {
            Some((_, p)) => Ok(p),
            None => Err(RuntimeError::Shape("no convolution problem".into())),
        }
    }

    /// Learnable scalar neuron params live in the flat buffer (the optimizer updates them
    /// there) but are kernel arguments by value: copy them over.
    fn sync_neuron_params(&mut self, id: usize) -> Result<(), RuntimeError> {
        let Layer::Neuron { learnable, .. } = &self.layers[id] else {
            return Ok(());
        };
        let values = learnable
            .iter()
            .filter(|(_, _, scalar)| *scalar)
            .map(|(name, slot, _)| Ok((name.clone(), self.weight(*slot)?.to_f32()?)))
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        if let Layer::Neuron { layer, .. } = &mut self.layers[id] {
            for (name, v) in values {
                layer.set_param(&name, &v)?;
            }
        }
        Ok(())
    }

    /// The part of a fused batch-norm that runs at its place in the graph: batch
    /// statistics (training; running ones updated) and the per-channel scale the neuron
    /// applies (`gamma * inv_std`, from the running variance in eval).
    #[allow(clippy::too_many_arguments)]
    fn fused_statistics(
        &mut self,
        id: usize,
        bn: &snn_nn::BatchNorm2d,
        in_shape: ImageShape,
        images: usize,
        x: &DeviceTensor,
        train: bool,
        trace: &mut GpuTrace,
    ) -> Result<(), RuntimeError> {
        let dev = self.device.clone();
        let Layer::BatchNorm {
            gamma,
            running_mean,
            running_var,
            ..
        } = &self.layers[id]
        else {
            return Err(RuntimeError::Shape("batch-norm layer state".into()));
        };
        let g = self.weight(*gamma)?;
        let scale = DeviceTensor::empty(&dev, Dtype::F32, &[bn.channels])?;
        let fused = if train {
            let saved = BatchNormSaved::new(&dev, bn.channels)?;
            batchnorm_statistics(
                &dev,
                bn,
                in_shape,
                images,
                x,
                running_mean,
                running_var,
                &saved,
            )?;
            batchnorm_scale(&dev, bn, &g, &saved.inv_std, false, &scale)?;
            Saved::FusedBn {
                mean: saved.mean.clone(),
                saved: Some(saved),
                scale,
            }
        } else {
            batchnorm_scale(&dev, bn, &g, running_var, true, &scale)?;
            Saved::FusedBn {
                saved: None,
                mean: running_mean.clone(),
                scale,
            }
        };
        trace.saved[id] = fused;
        if train && let Layer::BatchNorm { batches, .. } = &mut self.layers[id] {
            *batches += 1;
        }
        Ok(())
    }

    /// Points the fused neuron `id` at batch-norm `bn`'s mean, scale and shift.
    fn bind_fused(&mut self, id: usize, bn: usize, trace: &GpuTrace) -> Result<(), RuntimeError> {
        let (Saved::FusedBn { mean, scale, .. }, Layer::BatchNorm { beta, .. }) =
            (&trace.saved[bn], &self.layers[bn])
        else {
            return Err(RuntimeError::Shape(format!(
                "`{}` ran before its batch-norm's statistics",
                self.net.node(id).name
            )));
        };
        let shift = self.weight(*beta)?;
        let (mean, scale) = (mean.clone(), scale.clone());
        let Layer::Neuron { layer, .. } = &mut self.layers[id] else {
            return Err(RuntimeError::Shape("neuron layer state".into()));
        };
        layer.bind_param(BN_MEAN, &mean)?;
        layer.bind_param(BN_SCALE, &scale)?;
        layer.bind_param(BN_SHIFT, &shift)
    }

    /// Runs the network on `x`, `[T, B, C, H, W]` (or any shape of that many f32
    /// values), time-major. In [`Mode::Train`] batch-norm uses batch statistics and
    /// updates its running ones, and the trace keeps what [`GpuModel::backward`] needs.
    pub fn forward(
        &mut self,
        x: &DeviceTensor,
        steps: usize,
        batch: usize,
        mode: Mode,
    ) -> Result<GpuTrace, RuntimeError> {
        self.device.bind()?;
        let images = steps * batch;
        let input = self.net.input_shape();
        if x.dtype != Dtype::F32 || x.len() != images * input.len() || images == 0 {
            return Err(RuntimeError::Shape(format!(
                "the input is {} {:?}; {steps} steps x {batch} images of {input} need f32 [{steps}, {batch}, {}, {}, {}] (and neither may be 0)",
                x.dtype, x.shape, input.channels, input.height, input.width
            )));
        }
        let train = mode == Mode::Train;
        let n = self.net.nodes().len();
        let reads: Vec<Vec<usize>> = (0..n).map(|i| self.fusion[i].reads(&self.net, i)).collect();
        let mut uses = vec![0usize; n];
        reads.iter().flatten().for_each(|&i| uses[i] += 1);
        let mut trace = GpuTrace {
            steps,
            batch,
            mode,
            values: vec![None; n],
            saved: (0..n).map(|_| Saved::None).collect(),
        };
        let dev = self.device.clone();
        for id in 0..n {
            let node = self.net.node(id).clone();
            let in_shape = node.input_shape(&self.net);
            let shape4 = |s: ImageShape| [images, s.channels, s.height, s.width];
            let xin = |k: usize| -> Result<DeviceTensor, RuntimeError> {
                trace.values[node.inputs[k]].clone().ok_or_else(|| {
                    RuntimeError::Shape(format!("the input of `{}` was freed", node.name))
                })
            };
            let y = match (&node.op, self.fusion[id]) {
                (Op::Input, _) => Some(x.reshape(&shape4(input))?),
                (Op::Flatten, _) => Some(xin(0)?.reshape(&shape4(node.shape))?),
                (Op::BatchNorm2d(bn), Fusion::Absorbed { .. }) => {
                    let start = self.mark()?;
                    self.fused_statistics(id, bn, in_shape, images, &xin(0)?, train, &mut trace)?;
                    self.record(id, false, start)?;
                    None
                }
                (_, Fusion::Absorbed { .. }) => None,
                (op, fusion) => {
                    let y = DeviceTensor::empty(&dev, Dtype::F32, &shape4(node.shape))?;
                    let start = self.mark()?;
                    let inputs = reads[id]
                        .iter()
                        .map(|&i| {
                            trace.values[i].clone().ok_or_else(|| {
                                RuntimeError::Shape(format!(
                                    "the input of `{}` was freed",
                                    node.name
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if let Fusion::Neuron { bn, .. } = fusion {
                        self.bind_fused(id, bn, &trace)?;
                    }
                    self.forward_node(
                        id, &node, op, in_shape, images, steps, &inputs, &y, train, &mut trace,
                    )?;
                    self.record(id, false, start)?;
                    Some(y)
                }
            };
            trace.values[id] = y;
            // Free inputs nobody reads any more (unless the backward pass needs them).
            for &i in &reads[id] {
                uses[i] -= 1;
                if uses[i] == 0 && !(train && self.keep_output[i]) && !self.options.keep_activations
                {
                    trace.values[i] = None;
                }
            }
        }
        Ok(trace)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_node(
        &mut self,
        id: usize,
        node: &Node,
        op: &Op,
        in_shape: ImageShape,
        images: usize,
        steps: usize,
        inputs: &[DeviceTensor],
        y: &DeviceTensor,
        train: bool,
        trace: &mut GpuTrace,
    ) -> Result<(), RuntimeError> {
        let dev = self.device.clone();
        let x = inputs
            .first()
            .ok_or_else(|| RuntimeError::Shape(format!("`{}` has no input", node.name)))?;
        match op {
            Op::Input | Op::Flatten => {}
            Op::Conv2d(_) => {
                let (w, b) = match &self.layers[id] {
                    Layer::Conv { weight, bias, .. } => (*weight, *bias),
                    _ => return Err(RuntimeError::Shape("conv layer state".into())),
                };
                let (w, b) = (self.weight(w)?, b.map(|b| self.weight(b)).transpose()?);
                self.conv_problem(id, images)?
                    .forward(x, &w, b.as_ref(), y)?;
            }
            Op::BatchNorm2d(bn) => {
                let Layer::BatchNorm {
                    gamma,
                    beta,
                    running_mean,
                    running_var,
                    ..
                } = &self.layers[id]
                else {
                    return Err(RuntimeError::Shape("batch-norm layer state".into()));
                };
                let (g, b) = (self.weight(*gamma)?, self.weight(*beta)?);
                if train {
                    let c = bn.channels;
                    let saved = BatchNormSaved {
                        mean: DeviceTensor::empty(&dev, Dtype::F32, &[c])?,
                        inv_std: DeviceTensor::empty(&dev, Dtype::F32, &[c])?,
                    };
                    batchnorm_forward_train(
                        &dev,
                        bn,
                        in_shape,
                        images,
                        x,
                        &g,
                        &b,
                        running_mean,
                        running_var,
                        y,
                        &saved,
                    )?;
                    trace.saved[id] = Saved::BatchNorm(saved);
                    if let Layer::BatchNorm { batches, .. } = &mut self.layers[id] {
                        *batches += 1;
                    }
                } else {
                    batchnorm_forward_eval(
                        &dev,
                        bn,
                        in_shape,
                        images,
                        x,
                        &g,
                        &b,
                        running_mean,
                        running_var,
                        y,
                    )?;
                }
            }
            Op::Neuron(_) => {
                self.sync_neuron_params(id)?;
                let Layer::Neuron { layer, .. } = &self.layers[id] else {
                    return Err(RuntimeError::Shape("neuron layer state".into()));
                };
                let n = images / steps * node.shape.len();
                let xs = inputs
                    .iter()
                    .map(|t| t.reshape(&[steps, n]))
                    .collect::<Result<Vec<_>, _>>()?;
                let xs: Vec<&DeviceTensor> = xs.iter().collect();
                let mut fwd = LayerForward {
                    outputs: vec![y.reshape(&[steps, n])?],
                    saves: if train {
                        layer
                            .compiled()
                            .plan
                            .saves
                            .iter()
                            .map(|_| {
                                DeviceTensor::empty(&dev, layer.config().storage.saves, &[steps, n])
                            })
                            .collect::<Result<_, _>>()?
                    } else {
                        vec![]
                    },
                    final_states: (0..layer.neuron().states.len())
                        .map(|_| DeviceTensor::empty(&dev, Dtype::F32, &[n]))
                        .collect::<Result<_, _>>()?,
                };
                layer.forward_into(&xs, None, train, &mut fwd)?;
                if train {
                    // Keep only what the backward reads: the output is a view of the
                    // node's value, which must be freed when its readers are done.
                    fwd.final_states.clear();
                    if layer.compiled().plan.reread_outputs.is_empty() {
                        fwd.outputs.clear();
                    }
                    trace.saved[id] = Saved::Neuron(fwd);
                }
            }
            Op::MaxPool2d(pool) => {
                let argmax = DeviceTensor::empty(&dev, Dtype::U8, &y.shape)?;
                maxpool2d_forward(&dev, pool, in_shape, images, x, y, &argmax)?;
                if train {
                    trace.saved[id] = Saved::MaxPool(argmax);
                }
            }
            Op::GlobalAvgPool => global_avgpool_forward(&dev, in_shape, images, x, y)?,
            Op::Linear(l) => {
                let (w, b) = match &self.layers[id] {
                    Layer::Linear { weight, bias } => (*weight, *bias),
                    _ => return Err(RuntimeError::Shape("linear layer state".into())),
                };
                let (w, b) = (self.weight(w)?, b.map(|b| self.weight(b)).transpose()?);
                let blas = self
                    .cublas
                    .as_ref()
                    .ok_or_else(|| RuntimeError::Shape("no cuBLAS handle".into()))?;
                linear_forward(blas, l, images, x, &w, b.as_ref(), y)?;
            }
            Op::Add => {
                let b = inputs
                    .get(1)
                    .ok_or_else(|| RuntimeError::Shape("add needs two inputs".into()))?;
                add(&dev, x, b, y)?;
            }
        }
        Ok(())
    }

    /// Writes the gradient of every trained tensor into [`GpuModel::grads`] (overwriting
    /// it), from `grad_output` = dL/d(output), `[T * B, K]`. Consumes the trace: its
    /// tensors return to the pool as soon as the backward pass is done with them.
    pub fn backward(
        &mut self,
        mut trace: GpuTrace,
        grad_output: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        self.device.bind()?;
        let nodes = self.net.nodes().to_vec();
        if trace.mode != Mode::Train || trace.values.len() != nodes.len() {
            return Err(RuntimeError::Shape(
                "backward needs the trace of a training forward pass (`Mode::Train`) of this model"
                    .into(),
            ));
        }
        let images = trace.steps * trace.batch;
        let out = self.net.output();
        let out_len = images * nodes[out].shape.len();
        if grad_output.len() != out_len || grad_output.dtype != Dtype::F32 {
            return Err(RuntimeError::Shape(format!(
                "the output gradient is {} {:?}; the output has {out_len} f32 values",
                grad_output.dtype, grad_output.shape
            )));
        }
        let dev = self.device.clone();
        // Tensors not written below (neuron params of fixed-free layers, padding) stay 0.
        self.grads.clear()?;
        // The last node (in reverse order, the first) to read each value frees it.
        let reads: Vec<Vec<usize>> = (0..nodes.len())
            .map(|i| self.fusion[i].reads(&self.net, i))
            .collect();
        let mut first_reader = vec![usize::MAX; nodes.len()];
        for (id, r) in reads.iter().enumerate().rev() {
            for &i in r {
                first_reader[i] = id;
            }
        }
        // Each value's gradient, and whether its memory is shared with another value's
        // (an add passes one gradient to both inputs): shared ones are never added to in
        // place.
        let mut dvals: Vec<Option<(DeviceTensor, bool)>> = vec![None; nodes.len()];
        dvals[out] = Some((
            grad_output.reshape(
                &trace.values[out]
                    .as_ref()
                    .map_or(vec![out_len], |v| v.shape.clone()),
            )?,
            true,
        ));
        for id in (1..nodes.len()).rev() {
            let node = &nodes[id];
            let Some((dy, dy_shared)) = dvals[id].take() else {
                continue;
            };
            // Gradients passed on as they are (flatten, add) keep sharing their memory.
            let passes_dy = matches!(node.op, Op::Flatten | Op::Add);
            let in_shape = node.input_shape(&self.net);
            let shape4 = [images, in_shape.channels, in_shape.height, in_shape.width];
            let wants_dx = node.inputs.first().is_some_and(|&i| i != 0);
            let xin = |k: usize| -> Result<DeviceTensor, RuntimeError> {
                trace.values[node.inputs[k]].clone().ok_or_else(|| {
                    RuntimeError::Shape(format!("the input of `{}` was not kept", node.name))
                })
            };
            let saved = std::mem::replace(&mut trace.saved[id], Saved::None);
            let start = self.mark()?;
            let dxs: Vec<DeviceTensor> = match (&node.op, saved) {
                (Op::Input, _) => vec![],
                (Op::Conv2d(_), _) => {
                    let (w, b) = match &self.layers[id] {
                        Layer::Conv { weight, bias, .. } => (*weight, *bias),
                        _ => return Err(RuntimeError::Shape("conv layer state".into())),
                    };
                    let (wt, dw) = (self.weight(w)?, self.grad(w)?);
                    let db = b.map(|b| self.grad(b)).transpose()?;
                    let x = xin(0)?;
                    let src = node.inputs[0];
                    // A gradient already collected for the input (from its other
                    // readers) takes this one in the same pass, unless it shares memory.
                    let into = match &dvals[src] {
                        Some((acc, false)) if wants_dx => Some(acc.clone()),
                        _ => None,
                    };
                    let p = self.conv_problem(id, images)?;
                    p.backward_filter(&x, &dy, &dw, db.as_ref())?;
                    match into {
                        Some(acc) => {
                            p.backward_data_into(&dy, &wt, &acc, true)?;
                            vec![]
                        }
                        None if wants_dx => {
                            let dx = DeviceTensor::empty(&dev, Dtype::F32, &shape4)?;
                            p.backward_data(&dy, &wt, &dx)?;
                            vec![dx]
                        }
                        None => vec![],
                    }
                }
                (Op::BatchNorm2d(bn), Saved::BatchNorm(saved)) => {
                    let (g, b) = match &self.layers[id] {
                        Layer::BatchNorm { gamma, beta, .. } => (*gamma, *beta),
                        _ => return Err(RuntimeError::Shape("batch-norm layer state".into())),
                    };
                    let dx = DeviceTensor::empty(&dev, Dtype::F32, &shape4)?;
                    batchnorm_backward(
                        &dev,
                        bn,
                        in_shape,
                        images,
                        &xin(0)?,
                        &self.weight(g)?,
                        &saved,
                        &dy,
                        &dx,
                        &self.grad(g)?,
                        &self.grad(b)?,
                    )?;
                    vec![dx]
                }
                (Op::Neuron(_), Saved::Neuron(fwd)) => {
                    let Layer::Neuron { layer, learnable } = &self.layers[id] else {
                        return Err(RuntimeError::Shape("neuron layer state".into()));
                    };
                    let (steps, n) = (trace.steps, trace.batch * node.shape.len());
                    let dys = dy.reshape(&[steps, n])?;
                    // Inputs this plan does not re-read: any tensor of the right shape.
                    let xs = reads[id]
                        .iter()
                        .map(|&i| {
                            trace.values[i]
                                .as_ref()
                                .map_or(Ok(dys.clone()), |x| x.reshape(&[steps, n]))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let xs: Vec<&DeviceTensor> = xs.iter().collect();
                    let mut g = layer.alloc_backward(steps, n)?;
                    layer.backward_into(&xs, None, &fwd, &[&dys], None, &mut g)?;
                    let ir = layer.neuron();
                    let param_grad = |name: &str| {
                        ir.param_index(name)
                            .and_then(|k| g.params[k].clone())
                            .ok_or_else(|| {
                                RuntimeError::Shape(format!("no gradient for param `{name}`"))
                            })
                    };
                    for (name, slot, _) in learnable {
                        let pg = param_grad(name)?;
                        self.grad(*slot)?.reshape(&pg.shape)?.copy_from(&pg)?;
                    }
                    let dxs = g
                        .inputs
                        .iter()
                        .map(|t| t.reshape(&shape4))
                        .collect::<Result<Vec<_>, _>>()?;
                    if let Fusion::Neuron { bn, x, .. } = self.fusion[id] {
                        let (grad_scale, grad_shift) =
                            (param_grad(BN_SCALE)?, param_grad(BN_SHIFT)?);
                        let saved = std::mem::replace(&mut trace.saved[bn], Saved::None);
                        let (
                            Saved::FusedBn {
                                saved: Some(saved),
                                scale,
                                ..
                            },
                            Layer::BatchNorm { gamma, beta, .. },
                            Op::BatchNorm2d(desc),
                        ) = (saved, &self.layers[bn], &nodes[bn].op)
                        else {
                            return Err(RuntimeError::Shape(format!(
                                "`{}` kept no batch statistics",
                                nodes[bn].name
                            )));
                        };
                        let xv = trace.values[x].clone().ok_or_else(|| {
                            RuntimeError::Shape(format!(
                                "the input of `{}` was not kept",
                                nodes[bn].name
                            ))
                        })?;
                        batchnorm_backward_fused(
                            &dev,
                            desc,
                            nodes[bn].shape,
                            images,
                            &xv,
                            &saved,
                            &scale,
                            &grad_scale,
                            &grad_shift,
                            &dxs[0],
                            &self.grad(*gamma)?,
                            &self.grad(*beta)?,
                        )?;
                    }
                    dxs
                }
                (Op::MaxPool2d(pool), Saved::MaxPool(argmax)) => {
                    let dx = DeviceTensor::empty(&dev, Dtype::F32, &shape4)?;
                    maxpool2d_backward(&dev, pool, in_shape, images, &argmax, &dy, &dx)?;
                    vec![dx]
                }
                (Op::GlobalAvgPool, _) => {
                    let dx = DeviceTensor::empty(&dev, Dtype::F32, &shape4)?;
                    global_avgpool_backward(&dev, in_shape, images, &dy, &dx)?;
                    vec![dx]
                }
                (Op::Flatten, _) => vec![dy.reshape(&shape4)?],
                (Op::Linear(l), _) => {
                    let (w, b) = match &self.layers[id] {
                        Layer::Linear { weight, bias } => (*weight, *bias),
                        _ => return Err(RuntimeError::Shape("linear layer state".into())),
                    };
                    let dx = wants_dx
                        .then(|| DeviceTensor::empty(&dev, Dtype::F32, &shape4))
                        .transpose()?;
                    let blas = self
                        .cublas
                        .as_ref()
                        .ok_or_else(|| RuntimeError::Shape("no cuBLAS handle".into()))?;
                    linear_backward(
                        blas,
                        l,
                        images,
                        &xin(0)?,
                        &self.weight(w)?,
                        &dy,
                        dx.as_ref(),
                        &self.grad(w)?,
                        b.map(|b| self.grad(b)).transpose()?.as_ref(),
                    )?;
                    dx.into_iter().collect()
                }
                (Op::Add, _) => vec![dy.clone(), dy],
                (op, _) => {
                    return Err(RuntimeError::Shape(format!(
                        "`{}` ({}) kept nothing for the backward pass",
                        node.name,
                        op.kind()
                    )));
                }
            };
            let shared = passes_dy && (dy_shared || node.inputs.len() > 1);
            for (&src, d) in reads[id].iter().zip(dxs) {
                if src == 0 {
                    continue;
                }
                dvals[src] = Some(match dvals[src].take() {
                    None => (d, shared),
                    Some((acc, false)) => {
                        add_assign(&dev, &acc, &d)?;
                        (acc, false)
                    }
                    Some((acc, true)) => {
                        let sum = DeviceTensor::empty(&dev, Dtype::F32, &acc.shape)?;
                        add(&dev, &acc, &d, &sum)?;
                        (sum, false)
                    }
                });
            }
            self.record(id, true, start)?;
            for &i in &reads[id] {
                if first_reader[i] == id {
                    trace.values[i] = None;
                }
            }
            trace.values[id] = None;
        }
        Ok(())
    }

    /// The trained tensors of a flat buffer in this model's layout (parameters, gradients,
    /// optimizer state), as a named set.
    pub fn weights_to_host(&self, flat: &DeviceTensor) -> Result<ParamSet<f32>, RuntimeError> {
        if flat.len() != self.params.len() {
            return Err(RuntimeError::Shape(format!(
                "a flat buffer of {} values; this model's has {}",
                flat.len(),
                self.params.len()
            )));
        }
        let all = flat.to_f32()?;
        let mut set = ParamSet::new();
        for s in &self.slots {
            let len: usize = s.shape.iter().product();
            set.push(Tensor {
                name: s.name.clone(),
                shape: s.shape.clone(),
                role: Role::Weight,
                data: all[s.offset..s.offset + len].to_vec(),
            })
            .map_err(nn_err)?;
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
            let t = set
                .get(&s.name)
                .ok_or_else(|| RuntimeError::Shape(format!("no tensor `{}` to load", s.name)))?;
            if t.shape != s.shape {
                return Err(RuntimeError::Shape(format!(
                    "tensor `{}` is {:?}; the model needs {:?}",
                    s.name, t.shape, s.shape
                )));
            }
            all[s.offset..s.offset + t.data.len()].copy_from_slice(&t.data);
        }
        if flat.len() != all.len() || flat.dtype != Dtype::F32 {
            return Err(RuntimeError::Shape(format!(
                "a flat buffer of {} {} values; this model's has {} f32",
                flat.len(),
                flat.dtype,
                all.len()
            )));
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
                            RuntimeError::Shape(format!("no slot for `{}`", info.name))
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
                            return Err(RuntimeError::Shape(format!(
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
            })
            .map_err(nn_err)?;
        }
        Ok(set)
    }
}
