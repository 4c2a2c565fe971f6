//! Timing on the device, for the `snn bench` command and for notes in `BENCHMARKS.md`.
//!
//! The neuron kernels are memory-bound, so every result is also given as achieved bandwidth,
//! to be read against what a plain device-to-device copy reaches on the same card in the
//! same run ([`copy_bandwidth`]). Times come from CUDA events around each repeat, after a
//! warm-up that keeps compilation, module loading and first-touch costs out; the median of
//! the repeats is reported, so one slow repeat does not move it.

mod pipeline;

pub use pipeline::{PipelineBench, PipelineRun, time_parallel, time_pipeline};

use std::sync::Arc;

use cudarc::driver::{CudaEvent, sys};
use snn_codegen::Neuron;
use snn_nn::Rng;

use crate::device::Device;
use crate::error::RuntimeError;
use crate::layer::{LayerConfig, NeuronLayer};
use crate::tensor::DeviceTensor;

/// Untimed runs before the timed ones: the first launches pay for module loading, lazy
/// allocation and cold caches.
const WARMUP: usize = 5;

/// Bytes of random data uploaded once and tiled over a copy buffer: enough to defeat any
/// cache, small enough to generate on the host in milliseconds.
const COPY_PATTERN_BYTES: usize = 16 << 20;

/// One neuron layer's timings at one `[T, N]`.
///
/// Bytes are what the memory plan says the kernels must move (each tensor read or written
/// once), so `*_gbps` is the achieved fraction of the card's bandwidth, not a count of
/// what the hardware actually moved.
#[derive(Clone, Debug, PartialEq)]
pub struct NeuronBench {
    /// The neuron's IR name.
    pub name: String,
    pub steps: usize,
    pub n: usize,
    /// Median time of one forward (training) launch, which writes outputs and saves.
    pub forward_ms: f64,
    /// Median time of one forward (training) plus one backward pass: a training step's
    /// share of this layer.
    pub train_ms: f64,
    /// `plan.bytes.forward_train * T * N`.
    pub forward_bytes: usize,
    /// `plan.bytes.train() * T * N`.
    pub train_bytes: usize,
    pub forward_gbps: f64,
    pub train_gbps: f64,
}

impl NeuronBench {
    /// Bytes per element-step (forward, forward + backward), as the memory plan counts them.
    pub fn bytes_per_element_step(&self) -> (usize, usize) {
        let cells = (self.steps * self.n).max(1);
        (self.forward_bytes / cells, self.train_bytes / cells)
    }
}

/// The card's practical bandwidth ceiling: the median rate of a device-to-device copy of
/// `bytes` bytes, in GB/s (1e9 bytes per second), counting each copied byte twice (read
/// and write), as the neuron benchmarks count their traffic.
///
/// Use a buffer far larger than the L2 cache (1 GiB is safe on any current card), or the
/// cache is measured instead. The source holds random bytes, not zeros.
pub fn copy_bandwidth(
    dev: &Arc<Device>,
    bytes: usize,
    repeats: usize,
) -> Result<f64, RuntimeError> {
    if bytes == 0 || repeats == 0 {
        return Err(RuntimeError::invalid(
            "copy_bandwidth",
            "it needs at least one byte and one repeat",
        ));
    }
    let stream = dev.stream();
    let doing = |what: &str| format!("{what} ({bytes} bytes) for the copy benchmark");
    let mut src = stream
        .alloc_zeros::<u8>(bytes)
        .map_err(|e| RuntimeError::driver(doing("allocating the source"), e))?;
    let mut dst = stream
        .alloc_zeros::<u8>(bytes)
        .map_err(|e| RuntimeError::driver(doing("allocating the destination"), e))?;
    let pattern_len = bytes.min(COPY_PATTERN_BYTES);
    let mut rng = Rng::new(0x5eed_c0b1);
    let pattern: Vec<u8> = (0..pattern_len.div_ceil(8))
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .take(pattern_len)
        .collect();
    let pattern = stream
        .clone_htod(&pattern)
        .map_err(|e| RuntimeError::driver(doing("uploading the pattern"), e))?;
    let mut at = 0;
    while at < bytes {
        let len = pattern_len.min(bytes - at);
        stream
            .memcpy_dtod(&pattern.slice(..len), &mut src.slice_mut(at..at + len))
            .map_err(|e| RuntimeError::driver(doing("filling the source"), e))?;
        at += len;
    }
    let ms = median_ms(dev, repeats, || {
        stream
            .memcpy_dtod(&src, &mut dst)
            .map_err(|e| RuntimeError::driver(doing("copying"), e))
    })?;
    Ok(gbps(2 * bytes, ms))
}

/// cuBLAS's rate for square products of `n x n` matrices in `math`, in TFLOP/s (the median
/// of `repeats` after a warm-up): f32 in and out, in full f32 or TF32 arithmetic, or bf16
/// in and out with f32 accumulation. The ceiling the convolutions of [`train`] are read
/// against, measured in the same run.
pub fn gemm_tflops(
    device: &Arc<Device>,
    math: crate::nn::ConvMath,
    n: usize,
    repeats: usize,
) -> Result<f64, RuntimeError> {
    let blas = crate::nn::linear::Cublas::new(device)?;
    let matrix = || -> Result<DeviceTensor, RuntimeError> {
        let m = DeviceTensor::empty(device, math.dtype(), &[n, n])?;
        // Small finite values (0x3c bytes: about 0.0115 in f32 and in bf16).
        m.fill_bytes(0x3c)?;
        Ok(m)
    };
    let (a, b, c) = (matrix()?, matrix()?, matrix()?);
    let ms = median_ms(device, repeats, || {
        let square = (n, n, n);
        blas.gemm(
            "timing",
            math,
            (false, false),
            square,
            (a.ptr(), n),
            (b.ptr(), n),
            (c.ptr(), n),
            0.0,
        )
    })?;
    Ok(2.0 * (n as f64).powi(3) / (ms * 1e-3) / 1e12)
}

/// The convolutions' arithmetic in one training iteration of `net` over `images` images
/// (T x B), in FLOP (a multiply-add counts two): forward, and backward (the data gradient,
/// except for convolutions of the network's input, which need none, and the weight
/// gradient). Each pass of a convolution is one product of `out_pixels x out_channels x
/// in_channels x k^2` multiply-adds.
pub fn conv_flops(net: &snn_nn::Network, images: usize) -> (f64, f64) {
    let (mut forward, mut backward) = (0.0, 0.0);
    for node in net.nodes() {
        let snn_nn::graph::Op::Conv2d(c) = &node.op else {
            continue;
        };
        let pass = 2.0
            * images as f64
            * (node.shape.height * node.shape.width) as f64
            * (c.out_channels * c.in_channels * c.kernel * c.kernel) as f64;
        forward += pass;
        let reads_input = node.inputs.first() == Some(&0);
        backward += if reads_input { pass } else { 2.0 * pass };
    }
    (forward, backward)
}

/// Times one neuron's fused kernels over `[steps, n]`: forward (training) alone, and
/// forward (training) followed by backward, the pair a training step runs.
///
/// Inputs and output gradients are random (uniform in `[0, 1)` and `[-1, 1)`, stored in
/// the configured dtype), uploaded once; outputs, saves and gradients are allocated once,
/// so the timed region holds kernel launches only (and whatever the layer itself does per
/// call). Initial states are the declared defaults and final-state gradients zero.
/// Parameter gradients accumulate over the repeats and are never read back.
pub fn neuron(
    dev: &Arc<Device>,
    neuron: &dyn Neuron,
    config: LayerConfig,
    steps: usize,
    n: usize,
    repeats: usize,
) -> Result<NeuronBench, RuntimeError> {
    if steps == 0 || n == 0 || repeats == 0 {
        return Err(RuntimeError::invalid(
            "neuron benchmark",
            format!(
                "T, N and repeats must be at least 1, got T = {steps}, N = {n}, repeats = {repeats}"
            ),
        ));
    }
    let cells = steps.checked_mul(n).ok_or_else(|| {
        RuntimeError::invalid(
            "neuron benchmark",
            format!("T * N overflows: T = {steps}, N = {n}"),
        )
    })?;
    let layer = NeuronLayer::new(dev, neuron, config)?;
    let ir = layer.neuron();
    let io = config.storage.io;
    let mut rng = Rng::new(0x5eed_0001);
    let inputs = (0..ir.inputs.len())
        .map(|_| DeviceTensor::from_f32(dev, io, &[steps, n], &uniform(&mut rng, cells, 0.0, 1.0)))
        .collect::<Result<Vec<_>, _>>()?;
    let grads = (0..ir.outputs.len())
        .map(|_| DeviceTensor::from_f32(dev, io, &[steps, n], &uniform(&mut rng, cells, -1.0, 1.0)))
        .collect::<Result<Vec<_>, _>>()?;
    let inputs: Vec<&DeviceTensor> = inputs.iter().collect();
    let grads: Vec<&DeviceTensor> = grads.iter().collect();
    let mut fwd = layer.alloc_forward(steps, n, true)?;
    let mut bwd = layer.alloc_backward(steps, n)?;

    let forward_ms = median_ms(dev, repeats, || {
        layer.forward_into(&inputs, None, true, &mut fwd)
    })?;
    let train_ms = median_ms(dev, repeats, || {
        layer.forward_into(&inputs, None, true, &mut fwd)?;
        layer.backward_into(&inputs, None, &fwd, &grads, None, &mut bwd)
    })?;

    let per_step = layer.compiled().plan.bytes;
    let forward_bytes = per_step.forward_train * cells;
    let train_bytes = per_step.train() * cells;
    Ok(NeuronBench {
        name: ir.name.clone(),
        steps,
        n,
        forward_ms,
        train_ms,
        forward_bytes,
        train_bytes,
        forward_gbps: gbps(forward_bytes, forward_ms),
        train_gbps: gbps(train_bytes, train_ms),
    })
}

/// GB/s (1e9 bytes per second) for `bytes` moved in `ms` milliseconds.
fn gbps(bytes: usize, ms: f64) -> f64 {
    bytes as f64 / (ms / 1e3) / 1e9
}

/// A timing event (cudarc's default event does not record time).
fn timing_event(dev: &Device) -> Result<CudaEvent, RuntimeError> {
    dev.context()
        .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(|e| RuntimeError::driver("creating a timing event", e))
}

/// Runs `work` [`WARMUP`] times untimed, then `repeats` times between event pairs, issued
/// back to back so that the host never waits between repeats; the median in ms.
pub(crate) fn median_ms(
    dev: &Device,
    repeats: usize,
    mut work: impl FnMut() -> Result<(), RuntimeError>,
) -> Result<f64, RuntimeError> {
    for _ in 0..WARMUP {
        work()?;
    }
    dev.synchronize()?;
    let events = (0..repeats)
        .map(|_| Ok((timing_event(dev)?, timing_event(dev)?)))
        .collect::<Result<Vec<_>, RuntimeError>>()?;
    let record = |e: &CudaEvent| {
        e.record(dev.stream())
            .map_err(|e| RuntimeError::driver("recording a timing event", e))
    };
    for (start, end) in &events {
        record(start)?;
        work()?;
        record(end)?;
    }
    let mut ms = events
        .iter()
        .map(|(start, end)| {
            start
                .elapsed_ms(end)
                .map(f64::from)
                .map_err(|e| RuntimeError::driver("reading a timing event", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    ms.sort_by(f64::total_cmp);
    let mid = ms.len() / 2;
    Ok(if ms.len() % 2 == 1 {
        ms[mid]
    } else {
        (ms[mid - 1] + ms[mid]) / 2.0
    })
}

/// `len` values uniform in `[lo, hi)`: benchmark data, reproducible across runs.
fn uniform(rng: &mut Rng, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..len)
        .map(|_| {
            // 23 random mantissa bits: a float uniform in [1, 2).
            let unit = f32::from_bits(0x3f80_0000 | (rng.next_u64() >> 41) as u32) - 1.0;
            lo + (hi - lo) * unit
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_stays_in_range_and_is_not_constant() {
        let v = uniform(&mut Rng::new(1), 10_000, -1.0, 1.0);
        assert!(v.iter().all(|&x| (-1.0..1.0).contains(&x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!(v.iter().any(|&x| x < -0.9) && v.iter().any(|&x| x > 0.9));
    }

    #[test]
    fn conv_flops_count_resnet18_layer_by_layer() {
        let lif = snn_codegen::zoo::PaperLif::default();
        let shape = snn_nn::ImageShape::new(3, 32, 32);
        let net = snn_nn::models::spiking_resnet(18, shape, 10, &lif).unwrap();
        // Multiply-adds per image: the 7x7 stem onto 16x16, layer1 at 8x8, then per stage
        // one strided 3x3, three 3x3 and a 1x1 downsampling at 4x4, 2x2 and 1x1 (the
        // torchvision ResNet18's 1.81 G at 224x224, divided by 7^2).
        let stem = 64 * 3 * 49 * 16 * 16;
        let layer1 = 4 * 64 * 64 * 9 * 64;
        let stage = |c: usize, hw: usize| (c * c / 2 * 9 + 3 * c * c * 9 + c * c / 2) * hw;
        let macs = stem + layer1 + stage(128, 16) + stage(256, 4) + stage(512, 1);
        assert_eq!(macs, 37_011_456);
        let (fwd, bwd) = conv_flops(&net, 10);
        assert_eq!(fwd, 2.0 * 10.0 * macs as f64);
        // No data gradient for the stem, which reads the input.
        assert_eq!(bwd, 2.0 * fwd - 2.0 * 10.0 * stem as f64);
    }

    #[test]
    fn gbps_counts_decimal_gigabytes() {
        assert!((gbps(2_000_000_000, 1000.0) - 2.0).abs() < 1e-12);
        assert!((gbps(24 * 32 * (1 << 21), 0.54) - 2982.6).abs() < 0.1);
    }

    #[test]
    fn bytes_per_element_step_divides_back() {
        let b = NeuronBench {
            name: "paper_lif".into(),
            steps: 32,
            n: 1 << 21,
            forward_ms: 1.0,
            train_ms: 1.0,
            forward_bytes: 12 * 32 * (1 << 21),
            train_bytes: 24 * 32 * (1 << 21),
            forward_gbps: 0.0,
            train_gbps: 0.0,
        };
        assert_eq!(b.bytes_per_element_step(), (12, 24));
    }
}

/// One training iteration of a network: median time and peak memory.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainBench {
    pub network: String,
    pub steps: usize,
    pub batch: usize,
    /// Median time of one iteration: forward, loss, backward, optimizer step.
    pub iteration_ms: f64,
    /// Median time of the forward pass alone (training mode).
    pub forward_ms: f64,
    /// The most device memory tensors held at once during the timed iterations
    /// (parameters, gradients, optimizer state, activations, workspaces), counted as
    /// PyTorch's `max_memory_allocated` counts.
    pub peak_bytes: usize,
    /// The most memory the pool held from the driver (buffers behind tensors, which may
    /// be a little larger, and its cache).
    pub reserved_bytes: usize,
    /// The parameters, gradients and optimizer state alone.
    pub model_bytes: usize,
    /// What a training forward pass keeps for the backward pass.
    pub trace_bytes: usize,
    /// The convolution workspace.
    pub workspace_bytes: usize,
    /// With profiling: per layer kind, the forward and backward ms of one iteration
    /// (profiled iterations run separately from the timed ones).
    pub breakdown: Vec<crate::nn::model::NodeTime>,
    /// With profiling: the same per node.
    pub nodes: Vec<crate::nn::model::NodeTime>,
    /// Timed iterations whose forward, loss and backward were replayed from a CUDA graph.
    pub graph_replays: u64,
    /// The pool buffers the graph holds as scratch (counted in the peak).
    pub graph_bytes: usize,
    /// Why a graph capture failed, if one did.
    pub graph_error: Option<String>,
}

/// How [`train`] runs: the input's size, the repeats, and what else it measures.
#[derive(Clone, Copy, Debug)]
pub struct TrainRun {
    /// Time steps T and batch size B.
    pub steps: usize,
    pub batch: usize,
    /// Timed iterations (the median is reported).
    pub repeats: usize,
    /// Seeds the parameters, the input and the labels.
    pub seed: u64,
    /// Also time every layer, in separate iterations.
    pub profile: bool,
    /// Replay the forward, loss and backward from a CUDA graph.
    pub graphs: bool,
}

/// Times training iterations of `net` on synthetic rate-coded input (`[T, B, C, H, W]`
/// spikes drawn once from random intensities with the GPU encoder; random labels), with
/// Adam (lr 1e-3, the paper's) and the paper's loss. `progress` is told each finished
/// repeat.
pub fn train(
    device: &Arc<Device>,
    net: &snn_nn::Network,
    run: TrainRun,
    options: crate::nn::ModelOptions,
    progress: &dyn Fn(usize),
) -> Result<TrainBench, RuntimeError> {
    use snn_codegen::Mode;
    let TrainRun {
        steps,
        batch,
        repeats,
        seed,
        profile,
        graphs,
    } = run;
    let mut trainer = adam_trainer(device, net, seed, options)?;
    trainer.graphs = graphs;
    let (x, labels) = synthetic_batch(device, net, steps, batch, seed)?;
    let model_bytes = trainer.model.params().num_bytes() * (2 + trainer.state().len());
    // Warm-up (inside median_ms) chooses the convolution algorithms, fills the pool and
    // captures the graph; the peak is measured over the timed repeats.
    let (mut done, mut warm_replays) = (0, 0);
    let iteration_ms = median_ms(device, repeats, || {
        trainer.step(&x, &labels, steps, 1e-3)?;
        done += 1;
        if done == WARMUP {
            device.synchronize()?;
            device.reset_peak_memory();
            warm_replays = trainer.graph_replays();
        }
        if done > WARMUP {
            progress(done - WARMUP);
        }
        Ok(())
    })?;
    device.synchronize()?;
    let (peak_bytes, reserved_bytes) = (device.memory().peak, device.memory().peak_reserved);
    let graph_replays = trainer.graph_replays() - warm_replays;
    let graph_bytes = trainer.graph_bytes();
    let graph_error = trainer.capture_error().map(String::from);
    let mut breakdown: Vec<crate::nn::model::NodeTime> = Vec::new();
    let mut nodes = Vec::new();
    if profile {
        const PROFILED: usize = 3;
        trainer.model.set_profiling(true);
        for _ in 0..PROFILED {
            trainer.step(&x, &labels, steps, 1e-3)?;
        }
        for mut t in trainer.model.take_profile()? {
            t.forward_ms /= PROFILED as f64;
            t.backward_ms /= PROFILED as f64;
            nodes.push(t.clone());
            match breakdown.iter_mut().find(|b| b.kind == t.kind) {
                Some(b) => {
                    b.forward_ms += t.forward_ms;
                    b.backward_ms += t.backward_ms;
                }
                None => breakdown.push(crate::nn::model::NodeTime {
                    name: t.kind.to_string(),
                    ..t
                }),
            }
        }
        trainer.model.set_profiling(false);
    }
    let model = &mut trainer.model;
    let forward_ms = median_ms(device, repeats, || {
        model.forward(&x, steps, batch, Mode::Train).map(drop)
    })?;
    let trace_bytes = model.forward(&x, steps, batch, Mode::Train)?.bytes();
    let workspace_bytes = model.conv_workspace_bytes();
    Ok(TrainBench {
        network: net.name.clone(),
        steps,
        batch,
        iteration_ms,
        forward_ms,
        peak_bytes,
        reserved_bytes,
        model_bytes,
        trace_bytes,
        workspace_bytes,
        breakdown,
        nodes,
        graph_replays,
        graph_bytes,
        graph_error,
    })
}

/// A trainer of `net` (parameters initialised from `seed`) with Adam (lr 1e-3, the paper's)
/// and the paper's loss.
fn adam_trainer(
    device: &Arc<Device>,
    net: &snn_nn::Network,
    seed: u64,
    options: crate::nn::ModelOptions,
) -> Result<crate::nn::GpuTrainer, RuntimeError> {
    let params = snn_nn::init_params::<f32>(net, seed)?;
    let model = crate::nn::GpuModel::new(device, net, &params, options)?;
    crate::nn::GpuTrainer::new(
        model,
        snn_nn::Optimizer::adam(1e-3),
        snn_nn::Loss::CrossEntropyRate,
    )
}

/// `[T, B, C, H, W]` rate-coded spikes drawn once on the GPU from random intensities, and
/// random labels.
fn synthetic_batch(
    device: &Arc<Device>,
    net: &snn_nn::Network,
    steps: usize,
    batch: usize,
    seed: u64,
) -> Result<(DeviceTensor, Vec<usize>), RuntimeError> {
    let pixels = net.input_shape().len();
    let mut rng = Rng::new(seed ^ 0x5eed);
    let intensity: Vec<f32> = (0..batch * pixels)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
        .collect();
    let intensity = DeviceTensor::from_f32(
        device,
        snn_codegen::Dtype::F32,
        &[batch, pixels],
        &intensity,
    )?;
    let samples: Vec<u64> = (0..batch as u64).collect();
    let x = crate::encode::rate_encode(device, &intensity, &samples, steps, seed)?;
    let classes = net.output_shape().len() as u64;
    let labels = (0..batch)
        .map(|_| (rng.next_u64() % classes) as usize)
        .collect();
    Ok((x, labels))
}

/// The peak memory of one training step of `net` at `steps` x `batch` under `options`
/// (as [`TrainBench::peak_bytes`] counts it), measured on synthetic input after a first
/// step that chose the convolution algorithms. `None` when the step runs out of memory.
/// What the pool caches is given back to the driver before and after.
pub fn train_peak(
    device: &Arc<Device>,
    net: &snn_nn::Network,
    steps: usize,
    batch: usize,
    options: crate::nn::ModelOptions,
) -> Result<Option<usize>, RuntimeError> {
    device.release_cached_memory();
    let measure = || -> Result<usize, RuntimeError> {
        let mut trainer = adam_trainer(device, net, 0, options)?;
        trainer.graphs = false;
        let (x, labels) = synthetic_batch(device, net, steps, batch, 0)?;
        trainer.step(&x, &labels, steps, 1e-3)?;
        device.synchronize()?;
        device.reset_peak_memory();
        trainer.step(&x, &labels, steps, 1e-3)?;
        device.synchronize()?;
        Ok(device.memory().peak)
    };
    let peak = measure();
    device.release_cached_memory();
    match peak {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_out_of_memory() => Ok(None),
        Err(e) => Err(e),
    }
}
