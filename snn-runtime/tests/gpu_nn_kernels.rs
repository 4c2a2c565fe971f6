//! The network kernels of `snn_runtime::nn::kernels` (batch-norm, max and global average
//! pooling, elementwise sums) on a GPU against the CPU reference `snn_nn::cpu`, run in f64
//! as the oracle on the same f32 inputs.
//!
//! Every output is poisoned (0xFF bytes: NaN for f32, 255 for the u8 argmax) before the
//! kernels write it, so an element they skip fails. Shapes: odd ones (planes of 63 and 15
//! values, the scalar paths), planes that are multiples of 4 (the float4 paths), the
//! Spiking-ResNet18 shapes on fewer images, and one full-size stem batch-norm
//! ([3200, 64, 16, 16], 819200 values per channel) to check the reductions at scale. Each
//! configuration runs twice and must give bit-identical results (the reductions have a
//! fixed order).
//!
//! # Tolerances
//!
//! The kernels compute in f32, the oracle in f64 from the same f32 inputs. A sum of `n`
//! f32 terms, accumulated per thread and merged in a tree, is off by a few units of f32
//! rounding (6e-8) times the sum of the terms' magnitudes, times a factor that grows with
//! the depth of the accumulation (a thread adds up to a few hundred terms, typically
//! `sqrt` of that in effect); 1e-5 of the sum of magnitudes leaves a wide margin (a CPU
//! emulation of these kernels stayed under 0.1 of every bound; the tests print the worst
//! ratio). So, with `S(t)` the sum of `|t|` over a channel:
//! - batch mean: `1e-5 * S(x) / n`; `inv_std`: `1e-5 * inv_std` (the variance is a sum of
//!   squared deviations, all positive, merged with Chan's formula, so it is off by 1e-5 of
//!   itself at most); running statistics likewise, relative to their terms;
//! - `y = (x - mean) * gamma * inv_std + beta`: 1e-5 of the magnitudes of its terms,
//!   `(|x| + |mean|) * |gamma| * inv_std + |beta|`, plus the mean's bound times
//!   `|gamma| * inv_std` (the GPU normalises with its own statistics); eval likewise with
//!   the running statistics;
//! - `dbeta = sum(dy)`: `1e-5 * S(dy)`; `dgamma = sum(dy * x_hat)`:
//!   `1e-5 * (S(dy * x_hat) + M * S(dy))`, where `M = S(x) / n * inv_std` carries the
//!   mean's bound into `x_hat`;
//!   `dx = gamma * inv_std * (dy - dbeta / n - x_hat * dgamma / n)`: 1e-5 of
//!   `|gamma| * inv_std * (|dy| + (S(dy) + (|x_hat| + M) * dgamma's terms) / n)`;
//! - global average: `1e-5 * S(plane) / plane`; its backward `dy / plane` is one division:
//!   `1e-6` relative (NVRTC's `--prec-div=false` division is within 2 ulp).
//!
//! The fused path's pieces: `batchnorm_statistics` must equal what the training forward
//! saves and does to the running statistics bit for bit (one code path); `batchnorm_scale`
//! is one f32 product in training (exact) and within 1e-6 relative in eval (an approximate
//! reciprocal square root), and both forwards' `y` equal `(x - mean) * scale + beta` in f32
//! from it exactly (the kernels contract no products). `batchnorm_backward_fused` gets its
//! statistics and the fused neuron's outputs from the host (f64, stored as f32), and the
//! oracle uses the same stored statistics, so only the kernel's f32 arithmetic and the
//! rounding of its inputs differ: the `dx` bound above holds with a wide margin (a CPU
//! emulation stayed under 0.01 of it); `dgamma` is one f32 product and `dbeta` a copy, so
//! both are exact.
//!
//! Max pooling only selects: `y` and the chosen index must equal the reference exactly,
//! ties included (0/1 spike inputs tie everywhere), and its backward adds in the reference's
//! order, so it equals the f32 reference bit for bit, at the full stem size too. The sums
//! equal the f32 host sums bit for bit.
#![allow(clippy::unwrap_used)]

mod gpu_common;

use std::sync::Arc;

use gpu_common::Rng;
use snn_codegen::Dtype;
use snn_nn::cpu;
use snn_nn::{BatchNorm2d, ImageShape, MaxPool2d};
use snn_runtime::nn::kernels::{self, BatchNormParams, BatchNormSaved};
use snn_runtime::{Device, DeviceTensor, RuntimeError};

fn upload(dev: &Arc<Device>, values: &[f32]) -> DeviceTensor {
    upload_at(dev, values, 0)
}

/// `values` uploaded `shift` elements into a larger buffer (a view; `shift = 1` leaves it
/// 4 bytes past a 16-byte boundary).
fn upload_at(dev: &Arc<Device>, values: &[f32], shift: usize) -> DeviceTensor {
    let mut padded = vec![f32::NAN; shift];
    padded.extend_from_slice(values);
    let t = DeviceTensor::from_f32(dev, Dtype::F32, &[padded.len()], &padded).unwrap();
    t.view(shift, &[values.len()]).unwrap()
}

/// An output tensor full of 0xFF bytes (NaN for f32, 255 for u8).
fn poisoned(dev: &Arc<Device>, dtype: Dtype, len: usize) -> DeviceTensor {
    poisoned_at(dev, dtype, len, 0)
}

/// The same, `shift` elements into a larger buffer.
fn poisoned_at(dev: &Arc<Device>, dtype: Dtype, len: usize, shift: usize) -> DeviceTensor {
    let t = DeviceTensor::zeros(dev, dtype, &[len + shift]).unwrap();
    t.fill_bytes(0xFF).unwrap();
    t.view(shift, &[len]).unwrap()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Asserts equal bit patterns, naming the first difference.
fn assert_bits(what: &str, got: &[u32], want: &[u32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        let (g, w) = (f32::from_bits(got[i]), f32::from_bits(want[i]));
        panic!(
            "{what}[{i}]: got {g} ({:#x}), expected {w} ({:#x})",
            got[i], want[i]
        );
    }
}

/// Asserts `|got - want| <= tol(i)` for every element (NaN fails), naming the first miss.
fn assert_close(what: &str, got: &[f32], want: &[f64], tol: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (err, t) = ((f64::from(g) - w).abs(), tol(i));
        assert!(
            err <= t,
            "{what}[{i}]: got {g}, expected {w} (error {err:e}, bound {t:e})"
        );
        if t > 0.0 {
            worst = worst.max(err / t);
        }
    }
    eprintln!("  {what}: worst error {worst:.3} of the bound");
}

/// A batch-norm problem: `images` images of `shape`, inputs `offset + spread * U(-1, 1)`;
/// `x`, `y`, `dy` and `dx` start `shift` elements into their buffers.
#[derive(Clone, Copy)]
struct BnCase {
    images: usize,
    shape: ImageShape,
    offset: f64,
    spread: f64,
    shift: usize,
}

impl BnCase {
    /// `images` images of `c x h x w`, aligned.
    fn new(images: usize, c: usize, h: usize, w: usize, offset: f64, spread: f64) -> Self {
        Self {
            images,
            shape: ImageShape::new(c, h, w),
            offset,
            spread,
            shift: 0,
        }
    }

    fn shifted(self, shift: usize) -> Self {
        Self { shift, ..self }
    }
}

/// The problems of the forward and backward checks.
fn bn_cases() -> [BnCase; 11] {
    let case = BnCase::new;
    [
        // Odd planes (63, 15 values): the scalar path, groups of lanes that do not divide
        // the block, odd image counts (the fused backward's unrolled pair's tail).
        case(3, 5, 7, 9, 0.0, 1.0),
        case(7, 5, 3, 5, 0.5, 2.0),
        // A mean 1000 times the spread: the statistics must not cancel.
        case(6, 3, 4, 5, 1000.0, 1.0),
        // Planes over 256 float4s: several units per lane.
        case(3, 2, 40, 36, -2.0, 3.0),
        // Spiking-ResNet18's shapes on fewer images.
        case(24, 64, 16, 16, 0.3, 1.0),
        case(40, 64, 8, 8, 0.0, 1.0),
        case(50, 128, 4, 4, -1.0, 2.0),
        case(60, 256, 2, 2, 0.0, 1.0),
        case(100, 512, 1, 1, 5.0, 1.0),
        // Two values per channel: the fewest training allows.
        case(2, 600, 1, 1, 0.0, 1.0),
        // Planes of 64 values in tensors that are not 16-byte aligned: the scalar path.
        case(10, 16, 8, 8, 0.0, 1.0).shifted(1),
    ]
}

/// Runs `check` on every problem of [`bn_cases`], with random inputs from `seed`.
fn check_cases(seed: u64, check: fn(&Arc<Device>, &BnCase, &mut Rng)) {
    let dev = gpu_common::device();
    let mut rng = Rng::new(seed);
    for case in bn_cases() {
        check(&dev, &case, &mut rng);
    }
}

/// Batch-norm over `channels` with momentum 0.3 (PyTorch's eps), so that the running
/// statistics move far.
fn fast_batchnorm(channels: usize) -> BatchNorm2d {
    BatchNorm2d {
        momentum: 0.3,
        ..BatchNorm2d::new(channels)
    }
}

/// Saved statistics of `channels`, poisoned.
fn poisoned_saved(dev: &Arc<Device>, channels: usize) -> BatchNormSaved {
    BatchNormSaved {
        mean: poisoned(dev, Dtype::F32, channels),
        inv_std: poisoned(dev, Dtype::F32, channels),
    }
}

/// The f64 oracle's batch-norm backward: `[dx, dgamma, dbeta]`.
fn cpu_backward(
    bn: &BatchNorm2d,
    case: &BnCase,
    [x, gamma, dy]: [&[f64]; 3],
    stats: &cpu::BatchStats<f64>,
) -> [Vec<f64>; 3] {
    let c = bn.channels;
    let (mut dx, mut dgamma, mut dbeta) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
    let grads = cpu::BatchNormGrads {
        input: &mut dx,
        gamma: &mut dgamma,
        beta: &mut dbeta,
    };
    cpu::batchnorm_backward(bn, case.shape, case.images, x, gamma, stats, dy, grads).unwrap();
    [dx, dgamma, dbeta]
}

/// The tolerance of the module docs.
const REL: f64 = 1e-5;

/// The bounds of the module docs on one problem: the oracle's inputs `x`, `gamma`, `dy`
/// and the statistics it normalises with, and per channel `S(x)`, `S(dy)`, `S(dy x_hat)`.
struct BnBounds<'a> {
    x: &'a [f64],
    gamma: &'a [f64],
    dy: &'a [f64],
    stats: &'a cpu::BatchStats<f64>,
    plane: usize,
    /// Values per channel.
    n: f64,
    abs_x: Vec<f64>,
    abs_dy: Vec<f64>,
    abs_dy_x_hat: Vec<f64>,
}

impl<'a> BnBounds<'a> {
    fn new(case: &BnCase, [x, gamma, dy]: [&'a [f64]; 3], stats: &'a cpu::BatchStats<f64>) -> Self {
        let (c, plane) = (case.shape.channels, case.shape.plane());
        let mut b = Self {
            x,
            gamma,
            dy,
            stats,
            plane,
            n: (case.images * plane) as f64,
            abs_x: vec![0.0; c],
            abs_dy: vec![0.0; c],
            abs_dy_x_hat: vec![0.0; c],
        };
        for i in 0..x.len() {
            let ch = b.channel(i);
            b.abs_x[ch] += x[i].abs();
            b.abs_dy[ch] += dy[i].abs();
            b.abs_dy_x_hat[ch] += (dy[i] * b.x_hat(i)).abs();
        }
        b
    }

    fn channel(&self, i: usize) -> usize {
        (i / self.plane) % self.gamma.len()
    }

    fn x_hat(&self, i: usize) -> f64 {
        let ch = self.channel(i);
        (self.x[i] - self.stats.mean[ch]) * self.stats.inv_std[ch]
    }

    /// `|gamma| * inv_std`, what `y` and `dx` scale by.
    fn scale(&self, ch: usize) -> f64 {
        self.gamma[ch].abs() * self.stats.inv_std[ch]
    }

    /// The bound of the batch mean: the GPU normalises with its own statistics, so their
    /// errors carry into `y`, `dgamma` and `dx`.
    fn mean(&self, ch: usize) -> f64 {
        REL * self.abs_x[ch] / self.n
    }

    /// `M`: the mean's error in units of `x_hat`.
    fn mean_hat(&self, ch: usize) -> f64 {
        self.abs_x[ch] / self.n * self.stats.inv_std[ch]
    }

    fn dgamma_terms(&self, ch: usize) -> f64 {
        self.abs_dy_x_hat[ch] + self.mean_hat(ch) * self.abs_dy[ch]
    }

    /// Checks a GPU backward's `[dx, dgamma, dbeta]` against the oracle's.
    fn check_backward(&self, prefix: &str, got: [Vec<f32>; 3], want: &[Vec<f64>; 3]) {
        let [dx, dgamma, dbeta] = got;
        assert_close(&format!("{prefix}dbeta"), &dbeta, &want[2], |ch| {
            REL * self.abs_dy[ch]
        });
        assert_close(&format!("{prefix}dgamma"), &dgamma, &want[1], |ch| {
            REL * self.dgamma_terms(ch)
        });
        assert_close(&format!("{prefix}dx"), &dx, &want[0], |i| {
            let ch = self.channel(i);
            let spread = (self.x_hat(i).abs() + self.mean_hat(ch)) * self.dgamma_terms(ch);
            let terms = self.dy[i].abs() + (self.abs_dy[ch] + spread) / self.n;
            REL * self.scale(ch) * terms
        });
    }
}

/// What a training forward and a backward wrote, downloaded.
#[derive(PartialEq)]
struct BnRun {
    y: Vec<u32>,
    mean: Vec<u32>,
    inv_std: Vec<u32>,
    running_mean: Vec<u32>,
    running_var: Vec<u32>,
    eval_y: Vec<u32>,
    dx: Vec<u32>,
    dgamma: Vec<u32>,
    dbeta: Vec<u32>,
}

fn as_f32(bits: &[u32]) -> Vec<f32> {
    bits.iter().map(|&b| f32::from_bits(b)).collect()
}

/// Inputs of one batch-norm problem: x, gamma, beta, running mean and variance, dy.
type BnInputs = [Vec<f32>; 6];

fn bn_inputs(case: &BnCase, rng: &mut Rng) -> BnInputs {
    let (c, len) = (case.shape.channels, case.images * case.shape.len());
    let x = (0..len)
        .map(|_| (case.offset + case.spread * rng.uniform(-1.0, 1.0)) as f32)
        .collect();
    [
        x,
        rng.vec(c, 0.5, 1.5),
        rng.vec(c, -0.5, 0.5),
        rng.vec(c, -0.2, 0.2),
        rng.vec(c, 0.5, 2.0),
        rng.vec(len, -1.0, 1.0),
    ]
}

/// A problem's inputs on the GPU, `x` and `dy` `case.shift` elements into their buffers.
struct BnTensors {
    x: DeviceTensor,
    gamma: DeviceTensor,
    beta: DeviceTensor,
    running_mean: DeviceTensor,
    running_var: DeviceTensor,
    dy: DeviceTensor,
}

impl BnTensors {
    fn new(dev: &Arc<Device>, case: &BnCase, inputs: &BnInputs) -> Self {
        let [x, gamma, beta, rm, rv, dy] = inputs;
        Self {
            x: upload_at(dev, x, case.shift),
            gamma: upload(dev, gamma),
            beta: upload(dev, beta),
            running_mean: upload(dev, rm),
            running_var: upload(dev, rv),
            dy: upload_at(dev, dy, case.shift),
        }
    }

    /// The training forward into `y` and `saved` (updating the running statistics), or
    /// without `saved` the eval forward (normalising with the running statistics).
    fn forward(
        &self,
        dev: &Arc<Device>,
        bn: &BatchNorm2d,
        case: &BnCase,
        y: &DeviceTensor,
        saved: Option<&BatchNormSaved>,
    ) {
        let params = BatchNormParams {
            gamma: &self.gamma,
            beta: &self.beta,
            running_mean: &self.running_mean,
            running_var: &self.running_var,
        };
        let (shape, images) = (case.shape, case.images);
        kernels::batchnorm_forward(dev, bn, shape, images, &self.x, &params, y, saved, None)
            .unwrap();
    }
}

/// Training forward, eval forward (with the updated running statistics) and backward on
/// the GPU, every output poisoned first.
fn bn_gpu(dev: &Arc<Device>, bn: &BatchNorm2d, case: &BnCase, inputs: &BnInputs) -> BnRun {
    let (c, len) = (bn.channels, inputs[0].len());
    let t = BnTensors::new(dev, case, inputs);
    let y = poisoned_at(dev, Dtype::F32, len, case.shift);
    let saved = poisoned_saved(dev, c);
    t.forward(dev, bn, case, &y, Some(&saved));
    let eval_y = poisoned_at(dev, Dtype::F32, len, case.shift);
    t.forward(dev, bn, case, &eval_y, None);
    let (dx, dgamma, dbeta) = (
        poisoned_at(dev, Dtype::F32, len, case.shift),
        poisoned(dev, Dtype::F32, c),
        poisoned(dev, Dtype::F32, c),
    );
    kernels::batchnorm_backward(
        dev,
        bn,
        case.shape,
        case.images,
        &t.x,
        &t.gamma,
        &saved,
        &t.dy,
        &dx,
        &dgamma,
        &dbeta,
        None,
    )
    .unwrap();
    let get = |t: &DeviceTensor| bits(&t.to_f32().unwrap());
    BnRun {
        y: get(&y),
        mean: get(&saved.mean),
        inv_std: get(&saved.inv_std),
        running_mean: get(&t.running_mean),
        running_var: get(&t.running_var),
        eval_y: get(&eval_y),
        dx: get(&dx),
        dgamma: get(&dgamma),
        dbeta: get(&dbeta),
    }
}

/// Runs `case` twice on the GPU (bit-identical) and checks it against the f64 reference.
fn check_batchnorm(dev: &Arc<Device>, case: &BnCase, rng: &mut Rng) {
    let bn = fast_batchnorm(case.shape.channels);
    eprintln!(
        "batch-norm: {} images of {}, inputs {} +- {}, shifted by {}",
        case.images, case.shape, case.offset, case.spread, case.shift
    );
    let inputs = bn_inputs(case, rng);
    let run = bn_gpu(dev, &bn, case, &inputs);
    assert!(
        run == bn_gpu(dev, &bn, case, &inputs),
        "two runs on the same inputs differ"
    );

    let [x, gamma, beta, rm, rv, dy] = &inputs;
    let (x64, g64, b64, dy64) = (f64s(x), f64s(gamma), f64s(beta), f64s(dy));
    let (mut rm64, mut rv64) = (f64s(rm), f64s(rv));
    let mut y64 = vec![0.0; x.len()];
    let (shape, images, affine) = (case.shape, case.images, (&g64[..], &b64[..]));
    let running = cpu::Running::Update {
        mean: &mut rm64,
        var: &mut rv64,
    };
    let stats = cpu::batchnorm_forward(&bn, shape, images, &x64, affine, running, &mut y64)
        .unwrap()
        .expect("training returns the batch statistics");
    let mut eval64 = vec![0.0; x.len()];
    let running = cpu::Running::Use {
        mean: &rm64,
        var: &rv64,
    };
    cpu::batchnorm_forward(&bn, shape, images, &x64, affine, running, &mut eval64).unwrap();
    let want = cpu_backward(&bn, case, [&x64, &g64, &dy64], &stats);

    let bounds = BnBounds::new(case, [&x64, &g64, &dy64], &stats);
    let m = bn.momentum;
    let rm_tol = |ch: usize| REL * (1.0 - m) * f64::from(rm[ch]).abs() + m * bounds.mean(ch);
    assert_close("mean", &as_f32(&run.mean), &stats.mean, |ch| {
        bounds.mean(ch)
    });
    assert_close("inv_std", &as_f32(&run.inv_std), &stats.inv_std, |ch| {
        REL * stats.inv_std[ch]
    });
    assert_close("running_mean", &as_f32(&run.running_mean), &rm64, rm_tol);
    assert_close("running_var", &as_f32(&run.running_var), &rv64, |ch| {
        REL * rv64[ch]
    });
    assert_close("y", &as_f32(&run.y), &y64, |i| {
        let ch = bounds.channel(i);
        let terms = (x64[i].abs() + stats.mean[ch].abs()) * bounds.scale(ch) + b64[ch].abs();
        REL * terms + bounds.mean(ch) * bounds.scale(ch)
    });
    assert_close("eval y", &as_f32(&run.eval_y), &eval64, |i| {
        let ch = bounds.channel(i);
        let scale = g64[ch].abs() / (rv64[ch] + bn.eps).sqrt();
        let terms = (x64[i].abs() + rm64[ch].abs()) * scale + b64[ch].abs();
        REL * terms + rm_tol(ch) * scale
    });
    let got = [&run.dx, &run.dgamma, &run.dbeta].map(|b| as_f32(b));
    bounds.check_backward("", got, &want);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_batchnorm_matches_the_cpu_reference() {
    check_cases(0xB47C, check_batchnorm);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_batchnorm_at_the_resnet18_stem_scale() {
    let dev = gpu_common::device();
    // T = 32, B = 100: 3200 images after the 7x7 stride-2 stem convolution.
    let case = BnCase::new(3200, 64, 16, 16, 0.5, 2.0);
    check_batchnorm(&dev, &case, &mut Rng::new(0x57E3));
}

/// The running statistics and saved statistics after one call, as bits.
type StatsBits = [Vec<u32>; 4];

/// `batchnorm_statistics` and a training `batchnorm_forward` on the same `x` and running
/// statistics (each on its own copy, saved statistics poisoned): must agree bit for bit.
fn check_statistics(dev: &Arc<Device>, case: &BnCase, y_shift: usize, rng: &mut Rng) {
    let c = case.shape.channels;
    let bn = fast_batchnorm(c);
    eprintln!(
        "batch-norm statistics: {} images of {}, x shifted by {}, y by {y_shift}",
        case.images, case.shape, case.shift
    );
    let inputs = bn_inputs(case, rng);
    let get = |t: &DeviceTensor| bits(&t.to_f32().unwrap());
    let collect = |t: &BnTensors, saved: &BatchNormSaved| -> StatsBits {
        [
            get(&saved.mean),
            get(&saved.inv_std),
            get(&t.running_mean),
            get(&t.running_var),
        ]
    };

    let t = BnTensors::new(dev, case, &inputs);
    let saved = poisoned_saved(dev, c);
    let y = poisoned_at(dev, Dtype::F32, inputs[0].len(), y_shift);
    t.forward(dev, &bn, case, &y, Some(&saved));
    let want = collect(&t, &saved);
    let stats = || {
        let t = BnTensors::new(dev, case, &inputs);
        let saved = poisoned_saved(dev, c);
        kernels::batchnorm_statistics(
            dev,
            &bn,
            case.shape,
            case.images,
            &t.x,
            &t.running_mean,
            &t.running_var,
            &saved,
            None,
        )
        .unwrap();
        collect(&t, &saved)
    };
    let got = stats();
    for (what, g, w) in [
        ("saved.mean", &got[0], &want[0]),
        ("saved.inv_std", &got[1], &want[1]),
        ("running_mean", &got[2], &want[2]),
        ("running_var", &got[3], &want[3]),
    ] {
        assert_bits(what, g, w);
    }
    assert!(stats() == got, "two runs differ");
    // The running statistics did move (momentum 0.3 towards the batch).
    assert_ne!(got[2], bits(&inputs[3]), "running_mean unchanged");
    assert_ne!(got[3], bits(&inputs[4]), "running_var unchanged");
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_batchnorm_statistics_equal_the_training_forward() {
    let dev = gpu_common::device();
    let mut rng = Rng::new(0x57A7);
    let case = |images, c, h, w, offset| BnCase::new(images, c, h, w, offset, 1.0);
    for (case, y_shift) in [
        (case(3, 5, 7, 9, 0.0), 0),
        (case(6, 3, 4, 5, 1000.0), 0),
        (case(24, 64, 16, 16, 0.3), 0),
        (case(50, 128, 4, 4, -1.0), 0),
        (case(100, 512, 1, 1, 5.0), 0),
        (case(2, 600, 1, 1, 0.0), 0),
        // Unaligned `x`: the scalar split in both.
        (case(10, 16, 8, 8, 0.0).shifted(1), 1),
        // Aligned `x` but unaligned `y`: the statistics must not depend on `y`.
        (case(10, 16, 8, 8, 0.0), 1),
    ] {
        check_statistics(&dev, &case, y_shift, &mut rng);
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_batchnorm_scale_is_the_factor_the_forward_normalises_with() {
    let dev = gpu_common::device();
    let mut rng = Rng::new(0x5CA1E);
    // 600 channels: three blocks, the last one partly idle.
    for c in [3, 64, 600] {
        let bn = BatchNorm2d::new(c);
        let gamma = rng.vec(c, -1.5, 1.5);
        let inv_std = rng.vec(c, 0.2, 5.0);
        let var = rng.vec(c, 0.0, 3.0);
        let (gt, ist, vt) = (
            upload(&dev, &gamma),
            upload(&dev, &inv_std),
            upload(&dev, &var),
        );

        // Training: one f32 product, so exactly the host's.
        let scale = poisoned(&dev, Dtype::F32, c);
        kernels::batchnorm_scale(&dev, &bn, &gt, &ist, false, &scale).unwrap();
        let want: Vec<f32> = gamma.iter().zip(&inv_std).map(|(g, s)| g * s).collect();
        assert_bits(
            "training scale",
            &bits(&scale.to_f32().unwrap()),
            &bits(&want),
        );
        // In place over `spread`.
        let in_place = upload(&dev, &inv_std);
        kernels::batchnorm_scale(&dev, &bn, &gt, &in_place, false, &in_place).unwrap();
        assert_bits(
            "training scale in place",
            &bits(&in_place.to_f32().unwrap()),
            &bits(&want),
        );

        // Eval: gamma / sqrt(var + eps), an approximate reciprocal (within 2 ulp) of a
        // correctly rounded square root: 1e-6 relative leaves room.
        let eval = poisoned(&dev, Dtype::F32, c);
        kernels::batchnorm_scale(&dev, &bn, &gt, &vt, true, &eval).unwrap();
        let eval = eval.to_f32().unwrap();
        let want64: Vec<f64> = (0..c)
            .map(|i| f64::from(gamma[i]) / (f64::from(var[i]) + bn.eps).sqrt())
            .collect();
        assert_close("eval scale", &eval, &want64, |i| 1e-6 * want64[i].abs());
        let again = poisoned(&dev, Dtype::F32, c);
        kernels::batchnorm_scale(&dev, &bn, &gt, &vt, true, &again).unwrap();
        assert_bits(
            "eval scale rerun",
            &bits(&again.to_f32().unwrap()),
            &bits(&eval),
        );

        // The forward passes normalise with exactly this factor: `(x - mean) * scale + beta`
        // in f32 (the kernels contract no products), from the GPU's scale, is their `y`.
        let images = 3;
        let shape = ImageShape::new(c, 2, 3);
        let x = rng.vec(images * shape.len(), -2.0, 2.0);
        let beta = rng.vec(c, -0.5, 0.5);
        let mean = rng.vec(c, -0.3, 0.3);
        let (xt, bt, mt) = (upload(&dev, &x), upload(&dev, &beta), upload(&dev, &mean));
        let apply = |m: &[f32], scale: &[f32]| -> Vec<f32> {
            x.iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = (i / shape.plane()) % c;
                    (v - m[ch]) * scale[ch] + beta[ch]
                })
                .collect()
        };
        let y = poisoned(&dev, Dtype::F32, x.len());
        let params = |running_mean, running_var| BatchNormParams {
            gamma: &gt,
            beta: &bt,
            running_mean,
            running_var,
        };
        let eval_params = params(&mt, &vt);
        kernels::batchnorm_forward(&dev, &bn, shape, images, &xt, &eval_params, &y, None, None)
            .unwrap();
        assert_bits(
            "eval y from the scale",
            &bits(&y.to_f32().unwrap()),
            &bits(&apply(&mean, &eval)),
        );
        let saved = poisoned_saved(&dev, c);
        let (rm, rv) = (upload(&dev, &mean), upload(&dev, &var));
        let y = poisoned(&dev, Dtype::F32, x.len());
        let train_params = params(&rm, &rv);
        kernels::batchnorm_forward(
            &dev,
            &bn,
            shape,
            images,
            &xt,
            &train_params,
            &y,
            Some(&saved),
            None,
        )
        .unwrap();
        let train_scale = poisoned(&dev, Dtype::F32, c);
        kernels::batchnorm_scale(&dev, &bn, &gt, &saved.inv_std, false, &train_scale).unwrap();
        assert_bits(
            "training y from the scale",
            &bits(&y.to_f32().unwrap()),
            &bits(&apply(
                &saved.mean.to_f32().unwrap(),
                &train_scale.to_f32().unwrap(),
            )),
        );
    }
}

/// What the fused backward wrote, as bits: `g` (now dx), dgamma, dbeta.
type FusedBits = [Vec<u32>; 3];

/// The fused path's backward on one problem: statistics, scale, the neuron's `g`,
/// `grad_scale` and `grad_shift` made on the host (f64, stored as f32), then
/// `batchnorm_backward_fused` twice (bit-identical) against `cpu::batchnorm_backward` in
/// f64 with the same statistics.
fn check_backward_fused(dev: &Arc<Device>, case: &BnCase, rng: &mut Rng) {
    let (c, plane) = (case.shape.channels, case.shape.plane());
    let bn = BatchNorm2d::new(c);
    eprintln!(
        "fused batch-norm backward: {} images of {}, inputs {} +- {}, shifted by {}",
        case.images, case.shape, case.offset, case.spread, case.shift
    );
    let [x, gamma, _, _, _, dy] = bn_inputs(case, rng);
    let n = case.images * plane;
    let channel = |i: usize| (i / plane) % c;
    let (x64, g64, dy64) = (f64s(&x), f64s(&gamma), f64s(&dy));

    // Batch statistics in f64, stored as f32; the oracle uses the stored values.
    let mut sum = vec![0.0; c];
    for (i, v) in x64.iter().enumerate() {
        sum[channel(i)] += v;
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / n as f64) as f32).collect();
    let mut squares = vec![0.0; c];
    for (i, v) in x64.iter().enumerate() {
        squares[channel(i)] += (v - f64::from(mean[channel(i)])).powi(2);
    }
    let inv_std: Vec<f32> = squares
        .iter()
        .map(|q| (1.0 / (q / n as f64 + bn.eps).sqrt()) as f32)
        .collect();
    let scale: Vec<f32> = (0..c)
        .map(|ch| (g64[ch] * f64::from(inv_std[ch])) as f32)
        .collect();
    // What the fused neuron's backward hands over.
    let g: Vec<f32> = (0..x.len())
        .map(|i| (f64::from(scale[channel(i)]) * dy64[i]) as f32)
        .collect();
    let (mut grad_scale, mut grad_shift) = (vec![0.0f64; c], vec![0.0f64; c]);
    for i in 0..x.len() {
        let ch = channel(i);
        grad_scale[ch] += dy64[i] * (x64[i] - f64::from(mean[ch]));
        grad_shift[ch] += dy64[i];
    }
    let grad_scale: Vec<f32> = grad_scale.iter().map(|&v| v as f32).collect();
    let grad_shift: Vec<f32> = grad_shift.iter().map(|&v| v as f32).collect();

    let xt = upload_at(dev, &x, case.shift);
    let saved = BatchNormSaved {
        mean: upload(dev, &mean),
        inv_std: upload(dev, &inv_std),
    };
    let (st, gst, gtt) = (
        upload(dev, &scale),
        upload(dev, &grad_scale),
        upload(dev, &grad_shift),
    );
    let run = || -> FusedBits {
        // `g` with guards on both sides, which must stay as they are. `shift` 1 leaves it
        // 4 bytes past a 16-byte boundary; 0 starts it on one (after 4 guards).
        let guard = [f32::NAN, 7.0, -3.0, 11.0];
        let start = if case.shift == 0 { 4 } else { case.shift };
        let mut buf = vec![f32::NAN; start];
        buf.extend_from_slice(&g);
        buf.extend_from_slice(&guard);
        let whole = DeviceTensor::from_f32(dev, Dtype::F32, &[buf.len()], &buf).unwrap();
        let gt = whole.view(start, &[g.len()]).unwrap();
        let (dgamma, dbeta) = (poisoned(dev, Dtype::F32, c), poisoned(dev, Dtype::F32, c));
        kernels::batchnorm_backward_fused(
            dev,
            &bn,
            case.shape,
            case.images,
            &xt,
            &saved,
            &st,
            &gst,
            &gtt,
            &gt,
            &dgamma,
            &dbeta,
            None,
        )
        .unwrap();
        let all = whole.to_f32().unwrap();
        let outside: Vec<u32> = bits(&all[..start])
            .into_iter()
            .chain(bits(&all[start + g.len()..]))
            .collect();
        let want_outside: Vec<u32> = bits(&vec![f32::NAN; start])
            .into_iter()
            .chain(bits(&guard))
            .collect();
        assert_bits("memory around g", &outside, &want_outside);
        [
            bits(&all[start..start + g.len()]),
            bits(&dgamma.to_f32().unwrap()),
            bits(&dbeta.to_f32().unwrap()),
        ]
    };
    let got = run();
    assert!(run() == got, "two runs on the same inputs differ");

    // dgamma is one f32 product, dbeta a copy: exact.
    let dgamma_f32: Vec<f32> = (0..c).map(|ch| inv_std[ch] * grad_scale[ch]).collect();
    assert_bits("dgamma (f32 product)", &got[1], &bits(&dgamma_f32));
    assert_bits("dbeta (copy)", &got[2], &bits(&grad_shift));

    let stats = cpu::BatchStats {
        mean: f64s(&mean),
        inv_std: f64s(&inv_std),
    };
    let want = cpu_backward(&bn, case, [&x64, &g64, &dy64], &stats);
    // The bounds of `check_batchnorm`, with the statistics the oracle shares.
    let bounds = BnBounds::new(case, [&x64, &g64, &dy64], &stats);
    bounds.check_backward("fused ", got.map(|b| as_f32(&b)), &want);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_batchnorm_backward_fused_matches_the_cpu_reference() {
    check_cases(0xF05E, check_backward_fused);
}

/// Max-pools `x` on the GPU (twice: bit-identical) and checks `y`, the chosen indices and
/// the backward against the f32 reference, exactly. Every tensor starts `shift` elements
/// into its buffer (1: not aligned for the 16-byte and 4-byte stores).
fn check_maxpool(
    dev: &Arc<Device>,
    pool: MaxPool2d,
    images: usize,
    input: ImageShape,
    x: &[f32],
    shift: usize,
    rng: &mut Rng,
) {
    let output = pool.output(input).unwrap();
    let out_len = images * output.len();
    let mut y_ref = vec![0.0f32; out_len];
    let mut argmax_ref = vec![0u32; out_len];
    cpu::maxpool2d_forward(&pool, input, images, x, &mut y_ref, &mut argmax_ref).unwrap();
    let dy = rng.vec(out_len, -1.0, 1.0);
    let mut dx_ref = vec![0.0f32; x.len()];
    cpu::maxpool2d_backward(&pool, input, images, &argmax_ref, &dy, &mut dx_ref).unwrap();

    let run = || {
        let (xt, dyt) = (upload_at(dev, x, shift), upload_at(dev, &dy, shift));
        let (y, argmax) = (
            poisoned_at(dev, Dtype::F32, out_len, shift),
            poisoned_at(dev, Dtype::U8, out_len, shift),
        );
        kernels::maxpool2d_forward(dev, &pool, input, images, &xt, &y, &argmax).unwrap();
        let dx = poisoned_at(dev, Dtype::F32, x.len(), shift);
        kernels::maxpool2d_backward(dev, &pool, input, images, &argmax, &dyt, &dx).unwrap();
        (
            bits(&y.to_f32().unwrap()),
            argmax.to_f32().unwrap(),
            bits(&dx.to_f32().unwrap()),
        )
    };
    let (y, argmax, dx) = run();
    assert!(
        run() == (y.clone(), argmax.clone(), dx.clone()),
        "two runs differ"
    );

    assert_bits("max-pool y", &y, &bits(&y_ref));
    // The GPU stores the index within the window; the reference the index in the plane.
    let (k, s, p) = (pool.kernel, pool.stride, pool.padding);
    for (o, (&a, &want)) in argmax.iter().zip(&argmax_ref).enumerate() {
        let a = a as usize;
        assert!(a < k * k, "argmax[{o}] = {a} is outside the {k}x{k} window");
        let (oh, ow) = ((o % output.plane()) / output.width, o % output.width);
        let h = (oh * s + a / k).checked_sub(p).unwrap();
        let w = (ow * s + a % k).checked_sub(p).unwrap();
        assert_eq!(h * input.width + w, want as usize, "argmax[{o}]");
    }
    assert_bits("max-pool dx", &dx, &bits(&dx_ref));
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_maxpool_matches_the_cpu_reference_ties_included() {
    let dev = gpu_common::device();
    let mut rng = Rng::new(0x9001);
    // The kernels give each thread a strip of 4 values of a row; planes of at most 256
    // strips go to a block whole, larger ones 256 strips at a time. 3x3 stride 2 and 2x2
    // stride 2 have unrolled code, other windows a general loop.
    for (images, input, pool, shift) in [
        // The ResNet stem's pool, on fewer images: 16-byte stores, then unaligned.
        (8, ImageShape::new(64, 16, 16), MaxPool2d::new(3, 2, 1), 0),
        (3, ImageShape::new(64, 16, 16), MaxPool2d::new(3, 2, 1), 1),
        // Odd extents (short strips); overlapping windows (stride 1); no padding; a wide
        // window.
        (3, ImageShape::new(5, 7, 9), MaxPool2d::new(3, 2, 1), 0),
        (2, ImageShape::new(3, 7, 9), MaxPool2d::new(3, 1, 1), 0),
        (2, ImageShape::new(4, 11, 10), MaxPool2d::new(2, 2, 0), 0),
        (2, ImageShape::new(3, 11, 10), MaxPool2d::new(5, 3, 2), 0),
        // The general loop with rows of whole strips; an even window.
        (2, ImageShape::new(3, 12, 12), MaxPool2d::new(2, 1, 0), 0),
        (3, ImageShape::new(2, 9, 13), MaxPool2d::new(4, 2, 2), 0),
        // Planes of more than 256 strips: the input (backward) only, then both.
        (2, ImageShape::new(2, 40, 36), MaxPool2d::new(3, 2, 1), 0),
        (1, ImageShape::new(2, 70, 66), MaxPool2d::new(2, 2, 0), 0),
        // Single-column planes and windows larger than the stride.
        (4, ImageShape::new(3, 17, 1), MaxPool2d::new(3, 2, 1), 0),
    ] {
        eprintln!("max-pool {pool:?} on {images} images of {input}, shifted by {shift}");
        let len = images * input.len();
        // Continuous values, with NaNs (which count as maxima).
        let mut x = rng.vec(len, -1.0, 1.0);
        for i in (0..len).step_by(97) {
            x[i] = f32::NAN;
        }
        check_maxpool(&dev, pool, images, input, &x, shift, &mut rng);
        // Spikes: ties in nearly every window, and all-zero windows.
        let spikes: Vec<f32> = (0..len)
            .map(|_| f32::from(u8::from(rng.uniform(0.0, 1.0) < 0.3)))
            .collect();
        check_maxpool(&dev, pool, images, input, &spikes, shift, &mut rng);
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_maxpool_at_the_resnet18_stem_scale() {
    let dev = gpu_common::device();
    // T = 32, B = 100 after the stem: every block strides over many planes.
    let (images, input) = (3200, ImageShape::new(64, 16, 16));
    let mut rng = Rng::new(0x5E3);
    let spikes: Vec<f32> = (0..images * input.len())
        .map(|_| f32::from(u8::from(rng.uniform(0.0, 1.0) < 0.2)))
        .collect();
    check_maxpool(
        &dev,
        MaxPool2d::new(3, 2, 1),
        images,
        input,
        &spikes,
        0,
        &mut rng,
    );
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_global_avgpool_matches_the_cpu_reference() {
    let dev = gpu_common::device();
    let mut rng = Rng::new(0xA7E);
    // 1x1 (ResNet18 on CIFAR), 2x2 and 4x4 (float4 backward), 7x7 (a warp per row), 3x5.
    for (images, input) in [
        (64, ImageShape::new(512, 1, 1)),
        (30, ImageShape::new(256, 2, 2)),
        (20, ImageShape::new(64, 4, 4)),
        (6, ImageShape::new(37, 7, 7)),
        (5, ImageShape::new(9, 3, 5)),
    ] {
        eprintln!("global average pool on {images} images of {input}");
        let (len, rows, plane) = (images * input.len(), images * input.channels, input.plane());
        let x = rng.vec(len, -1.0, 1.0);
        let dy = rng.vec(rows, -1.0, 1.0);
        let run = || {
            let (xt, dyt) = (upload(&dev, &x), upload(&dev, &dy));
            let (y, dx) = (
                poisoned(&dev, Dtype::F32, rows),
                poisoned(&dev, Dtype::F32, len),
            );
            kernels::global_avgpool_forward(&dev, input, images, &xt, &y).unwrap();
            kernels::global_avgpool_backward(&dev, input, images, &dyt, &dx).unwrap();
            (y.to_f32().unwrap(), dx.to_f32().unwrap())
        };
        let (y, dx) = run();
        let again = run();
        assert!(
            bits(&again.0) == bits(&y) && bits(&again.1) == bits(&dx),
            "two runs differ"
        );
        let (x64, dy64) = (f64s(&x), f64s(&dy));
        let (mut y64, mut dx64) = (vec![0.0; rows], vec![0.0; len]);
        cpu::global_avgpool_forward(input, images, &x64, &mut y64).unwrap();
        cpu::global_avgpool_backward(input, images, &dy64, &mut dx64).unwrap();
        assert_close("avg y", &y, &y64, |r| {
            let terms: f64 = x64[r * plane..(r + 1) * plane]
                .iter()
                .map(|v| v.abs())
                .sum();
            1e-5 * terms / plane as f64
        });
        assert_close("avg dx", &dx, &dx64, |i| 1e-6 * dx64[i].abs());
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_add_and_add_assign_equal_the_host_sums() {
    let dev = gpu_common::device();
    let mut rng = Rng::new(0xADD);
    // A length that is not a multiple of 4 (the scalar tail), a ResNet block's output.
    for len in [1003, 3200 * 64 * 8 * 8] {
        let (a, b) = (rng.vec(len, -1.0, 1.0), rng.vec(len, -1.0, 1.0));
        let want: Vec<u32> = a.iter().zip(&b).map(|(x, y)| (x + y).to_bits()).collect();
        let (at, bt) = (upload(&dev, &a), upload(&dev, &b));
        let out = poisoned(&dev, Dtype::F32, len);
        kernels::add(&dev, &at, &bt, &out).unwrap();
        assert_bits("add", &bits(&out.to_f32().unwrap()), &want);
        // In place: out = a.
        kernels::add(&dev, &at, &bt, &at).unwrap();
        assert_bits("add in place", &bits(&at.to_f32().unwrap()), &want);
        let acc = upload(&dev, &a);
        kernels::add_assign(&dev, &acc, &bt).unwrap();
        assert_bits("add_assign", &bits(&acc.to_f32().unwrap()), &want);
        // Not 16-byte aligned: the scalar path.
        let (a1, b1) = (upload_at(&dev, &a, 1), upload_at(&dev, &b, 3));
        let out1 = poisoned_at(&dev, Dtype::F32, len, 2);
        kernels::add(&dev, &a1, &b1, &out1).unwrap();
        assert_bits("add unaligned", &bits(&out1.to_f32().unwrap()), &want);
        kernels::add_assign(&dev, &a1, &b1).unwrap();
        assert_bits("add_assign unaligned", &bits(&a1.to_f32().unwrap()), &want);
    }
}

fn shape_error(r: Result<(), RuntimeError>, needle: &str) {
    match r {
        Err(
            e @ (RuntimeError::Tensor { .. }
            | RuntimeError::Overlap { .. }
            | RuntimeError::Invalid { .. }),
        ) => {
            let m = e.to_string();
            assert!(m.contains(needle), "`{m}` lacks `{needle}`");
        }
        other => panic!("expected an argument error mentioning `{needle}`, got {other:?}"),
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_nn_kernels_reject_bad_arguments() {
    let dev = gpu_common::device();
    let (images, input) = (2, ImageShape::new(3, 4, 4));
    let bn = BatchNorm2d::new(3);
    let t = |len| upload(&dev, &vec![0.5; len]);
    let (x, y, g, b, rm, rv) = (t(96), t(96), t(3), t(3), t(3), t(3));
    let saved = BatchNormSaved::new(&dev, 3).unwrap();
    let params = BatchNormParams {
        gamma: &g,
        beta: &b,
        running_mean: &rm,
        running_var: &rv,
    };
    let train = |x: &DeviceTensor, y: &DeviceTensor, gamma: &DeviceTensor, images| {
        let params = BatchNormParams { gamma, ..params };
        kernels::batchnorm_forward(&dev, &bn, input, images, x, &params, y, Some(&saved), None)
    };
    train(&x, &y, &g, images).unwrap();
    shape_error(
        train(&t(95), &y, &g, images),
        "`x` must be f32 with 96 values",
    );
    shape_error(
        train(&x, &y, &t(4), images),
        "`gamma` must be f32 with 3 values",
    );
    let bytes = DeviceTensor::zeros(&dev, Dtype::U8, &[96]).unwrap();
    shape_error(
        train(&bytes, &y, &g, images),
        "`x` must be f32 or bf16 values, got u8",
    );
    // bf16 activations are taken, but not mixed with f32 ones.
    let narrow = DeviceTensor::zeros(&dev, Dtype::BF16, &[96]).unwrap();
    shape_error(
        train(&narrow, &y, &g, images),
        "`y` must be bf16 with 96 values",
    );
    shape_error(train(&x, &x, &g, images), "`x` and `y` share device memory");
    let one = ImageShape::new(3, 1, 1);
    shape_error(
        kernels::batchnorm_forward(&dev, &bn, one, 1, &t(3), &params, &t(3), Some(&saved), None),
        "more than one value per channel",
    );
    shape_error(
        kernels::batchnorm_forward(
            &dev,
            &BatchNorm2d::new(4),
            input,
            images,
            &x,
            &params,
            &y,
            None,
            None,
        ),
        "batch-norm over 4 channels",
    );

    // The fused path's pieces.
    kernels::batchnorm_statistics(&dev, &bn, input, images, &x, &rm, &rv, &saved, None).unwrap();
    shape_error(
        kernels::batchnorm_statistics(&dev, &bn, one, 1, &t(3), &rm, &rv, &saved, None),
        "more than one value per channel",
    );
    shape_error(
        kernels::batchnorm_statistics(&dev, &bn, input, images, &x, &rm, &t(2), &saved, None),
        "`running_var` must be f32 with 3 values",
    );
    shape_error(
        kernels::batchnorm_statistics(&dev, &bn, input, images, &x, &rm, &rm, &saved, None),
        "`running_mean` and `running_var` share device memory",
    );
    let scale = t(3);
    kernels::batchnorm_scale(&dev, &bn, &g, &saved.inv_std, false, &scale).unwrap();
    shape_error(
        kernels::batchnorm_scale(&dev, &bn, &g, &t(4), true, &scale),
        "`spread` must be f32 with 3 values",
    );
    // In place exactly is allowed; overlapping otherwise is not.
    let six = t(6);
    let (first, middle) = (six.view(0, &[3]).unwrap(), six.view(1, &[3]).unwrap());
    kernels::batchnorm_scale(&dev, &bn, &g, &first, false, &first).unwrap();
    shape_error(
        kernels::batchnorm_scale(&dev, &bn, &g, &first, false, &middle),
        "`spread` and `scale` share device memory",
    );
    let (grad_scale, grad_shift, dg, db) = (t(3), t(3), t(3), t(3));
    let fused = |x: &DeviceTensor, g: &DeviceTensor, dgamma: &DeviceTensor| {
        kernels::batchnorm_backward_fused(
            &dev,
            &bn,
            input,
            images,
            x,
            &saved,
            &scale,
            &grad_scale,
            &grad_shift,
            g,
            dgamma,
            &db,
            None,
        )
    };
    fused(&x, &y, &dg).unwrap();
    shape_error(fused(&x, &t(95), &dg), "`g` must be f32 with 96 values");
    shape_error(fused(&x, &x, &dg), "`x` and `g` share device memory");
    shape_error(
        fused(&x, &y, &grad_scale),
        "`grad_scale` and `dgamma` share device memory",
    );
    shape_error(fused(&x, &y, &t(4)), "`dgamma` must be f32 with 3 values");

    let pool = MaxPool2d::new(3, 2, 1);
    let argmax = DeviceTensor::zeros(&dev, Dtype::U8, &[2 * 3 * 4]).unwrap();
    let pooled = t(24);
    kernels::maxpool2d_forward(&dev, &pool, input, images, &x, &pooled, &argmax).unwrap();
    shape_error(
        kernels::maxpool2d_forward(&dev, &pool, input, images, &x, &pooled, &t(24)),
        "`argmax` must be u8 with 24 values",
    );
    shape_error(
        kernels::maxpool2d_forward(
            &dev,
            &MaxPool2d::new(17, 1, 8),
            ImageShape::new(3, 20, 20),
            1,
            &t(1200),
            &t(48),
            &argmax,
        ),
        "at most 16",
    );
    let (dgamma, dbeta) = (t(3), t(3));
    shape_error(
        kernels::batchnorm_backward(
            &dev, &bn, input, images, &x, &g, &saved, &y, &y, &dgamma, &dbeta, None,
        ),
        "`dy` and `dx` share device memory",
    );
    shape_error(
        kernels::global_avgpool_forward(&dev, input, images, &x, &t(5)),
        "`y` must be f32 with 6 values",
    );
    shape_error(
        kernels::add(&dev, &x, &t(95), &y),
        "`b` must be f32 with 96 values",
    );
    shape_error(
        kernels::add_assign(&dev, &x, &t(3)),
        "`x` must be f32 with 96 values",
    );
    // Overlapping but not identical: in place is allowed only exactly.
    let (front, back) = (x.view(0, &[90]).unwrap(), x.view(6, &[90]).unwrap());
    shape_error(
        kernels::add(&dev, &front, &t(90), &back),
        "`a` and `out` share",
    );
    shape_error(
        kernels::add_assign(&dev, &front, &back),
        "`x` and `acc` share",
    );
}
