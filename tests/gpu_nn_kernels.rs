//! The network kernels of `snn_runtime::nn::kernels` (batch-norm, max and global average
//! pooling, elementwise sums) on a GPU against the CPU reference `snn::nn::cpu`, run in f64
//! as the oracle on the same f32 inputs.
//!
//! Every output is poisoned (0xFF bytes: NaN for f32, 255 for the u8 argmax) before the
//! kernels write it, so an element they skip fails. Shapes: odd ones (planes of 63 and 15
//! values, the scalar paths), planes that are multiples of 4 (the float4 paths), the
//! Spiking-ResNet18 shapes on fewer images, and one full-size stem batch-norm
//! ([3200, 64, 16, 16], 819200 values per channel) to check the reductions at scale. Each
//! configuration runs twice and must give bit-identical results (the reductions have a
//! fixed order). Without a GPU the tests print a notice and pass; with `SNN_REQUIRE_GPU=1`
//! they fail instead.
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
//! Max pooling only selects: `y` and the chosen index must equal the reference exactly,
//! ties included (0/1 spike inputs tie everywhere), and its backward adds in the reference's
//! order, so it equals the f32 reference bit for bit. The sums equal the f32 host sums bit
//! for bit.
#![allow(clippy::unwrap_used)]

mod gpu_common;

use std::sync::Arc;

use gpu_common::Rng;
use snn::codegen::Dtype;
use snn::nn::cpu;
use snn::nn::{BatchNorm2d, ImageShape, MaxPool2d};
use snn::runtime::nn::kernels::{self, BatchNormSaved};
use snn::runtime::{Device, DeviceTensor, RuntimeError};

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
struct BnCase {
    images: usize,
    shape: ImageShape,
    offset: f64,
    spread: f64,
    shift: usize,
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

/// Training forward, eval forward (with the updated running statistics) and backward on
/// the GPU, every output poisoned first.
fn bn_gpu(dev: &Arc<Device>, bn: &BatchNorm2d, case: &BnCase, inputs: &BnInputs) -> BnRun {
    let [x, gamma, beta, rm, rv, dy] = inputs;
    let (c, len) = (bn.channels, x.len());
    let (xt, gt, bt, dyt) = (
        upload_at(dev, x, case.shift),
        upload(dev, gamma),
        upload(dev, beta),
        upload_at(dev, dy, case.shift),
    );
    let (rmt, rvt) = (upload(dev, rm), upload(dev, rv));
    let y = poisoned_at(dev, Dtype::F32, len, case.shift);
    let saved = BatchNormSaved {
        mean: poisoned(dev, Dtype::F32, c),
        inv_std: poisoned(dev, Dtype::F32, c),
    };
    kernels::batchnorm_forward_train(
        dev,
        bn,
        case.shape,
        case.images,
        &xt,
        &gt,
        &bt,
        &rmt,
        &rvt,
        &y,
        &saved,
    )
    .unwrap();
    let eval_y = poisoned_at(dev, Dtype::F32, len, case.shift);
    kernels::batchnorm_forward_eval(
        dev,
        bn,
        case.shape,
        case.images,
        &xt,
        &gt,
        &bt,
        &rmt,
        &rvt,
        &eval_y,
    )
    .unwrap();
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
        &xt,
        &gt,
        &saved,
        &dyt,
        &dx,
        &dgamma,
        &dbeta,
    )
    .unwrap();
    let get = |t: &DeviceTensor| bits(&t.to_f32().unwrap());
    BnRun {
        y: get(&y),
        mean: get(&saved.mean),
        inv_std: get(&saved.inv_std),
        running_mean: get(&rmt),
        running_var: get(&rvt),
        eval_y: get(&eval_y),
        dx: get(&dx),
        dgamma: get(&dgamma),
        dbeta: get(&dbeta),
    }
}

/// Runs `case` twice on the GPU (bit-identical) and checks it against the f64 reference.
fn check_batchnorm(dev: &Arc<Device>, case: &BnCase, rng: &mut Rng) {
    let (c, plane) = (case.shape.channels, case.shape.plane());
    let bn = BatchNorm2d {
        channels: c,
        eps: 1e-5,
        momentum: 0.3,
    };
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
    let stats = cpu::batchnorm_forward_train(
        &bn,
        case.shape,
        case.images,
        &x64,
        &g64,
        &b64,
        &mut rm64,
        &mut rv64,
        &mut y64,
    )
    .unwrap();
    let mut eval64 = vec![0.0; x.len()];
    cpu::batchnorm_forward_eval(
        &bn,
        case.shape,
        case.images,
        &x64,
        &g64,
        &b64,
        &rm64,
        &rv64,
        &mut eval64,
    )
    .unwrap();
    let (mut dx64, mut dg64, mut db64) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
    let grads = cpu::BatchNormGrads {
        input: &mut dx64,
        gamma: &mut dg64,
        beta: &mut db64,
    };
    cpu::batchnorm_backward(
        &bn,
        case.shape,
        case.images,
        &x64,
        &g64,
        &stats,
        &dy64,
        grads,
    )
    .unwrap();

    // Per-channel sums of magnitudes, for the bounds.
    let n = (case.images * plane) as f64;
    let channel = |i: usize| (i / plane) % c;
    let mut abs_x = vec![0.0; c];
    let mut abs_dy = vec![0.0; c];
    let mut abs_dyxh = vec![0.0; c];
    for i in 0..x.len() {
        let ch = channel(i);
        let x_hat = (x64[i] - stats.mean[ch]) * stats.inv_std[ch];
        abs_x[ch] += x64[i].abs();
        abs_dy[ch] += dy64[i].abs();
        abs_dyxh[ch] += (dy64[i] * x_hat).abs();
    }
    let rel = 1e-5;
    let m = bn.momentum;
    // The bound of the batch mean, and of the running mean, per channel: the GPU
    // normalises with its own statistics, so their errors carry into y, dgamma and dx.
    let mean_tol = |ch: usize| rel * abs_x[ch] / n;
    let rm_tol = |ch: usize| rel * (1.0 - m) * f64::from(rm[ch]).abs() + m * mean_tol(ch);
    assert_close("mean", &as_f32(&run.mean), &stats.mean, mean_tol);
    assert_close("inv_std", &as_f32(&run.inv_std), &stats.inv_std, |ch| {
        rel * stats.inv_std[ch]
    });
    assert_close("running_mean", &as_f32(&run.running_mean), &rm64, rm_tol);
    assert_close("running_var", &as_f32(&run.running_var), &rv64, |ch| {
        rel * rv64[ch]
    });
    let scale = |ch: usize| g64[ch].abs() * stats.inv_std[ch];
    assert_close("y", &as_f32(&run.y), &y64, |i| {
        let ch = channel(i);
        let terms = (x64[i].abs() + stats.mean[ch].abs()) * scale(ch) + b64[ch].abs();
        rel * terms + mean_tol(ch) * scale(ch)
    });
    assert_close("eval y", &as_f32(&run.eval_y), &eval64, |i| {
        let ch = channel(i);
        let scale = g64[ch].abs() / (rv64[ch] + bn.eps).sqrt();
        let terms = (x64[i].abs() + rm64[ch].abs()) * scale + b64[ch].abs();
        rel * terms + rm_tol(ch) * scale
    });
    assert_close("dbeta", &as_f32(&run.dbeta), &db64, |ch| rel * abs_dy[ch]);
    // The mean's error, in units of x_hat.
    let mean_hat = |ch: usize| abs_x[ch] / n * stats.inv_std[ch];
    assert_close("dgamma", &as_f32(&run.dgamma), &dg64, |ch| {
        rel * (abs_dyxh[ch] + mean_hat(ch) * abs_dy[ch])
    });
    assert_close("dx", &as_f32(&run.dx), &dx64, |i| {
        let ch = channel(i);
        let x_hat = (x64[i] - stats.mean[ch]) * stats.inv_std[ch];
        let dgamma_terms = abs_dyxh[ch] + mean_hat(ch) * abs_dy[ch];
        let terms = dy64[i].abs() + (abs_dy[ch] + (x_hat.abs() + mean_hat(ch)) * dgamma_terms) / n;
        rel * scale(ch) * terms
    });
}

#[test]
fn gpu_batchnorm_matches_the_cpu_reference() {
    let Some(dev) = gpu_common::device("gpu_batchnorm_matches_the_cpu_reference") else {
        return;
    };
    let mut rng = Rng::new(0xB47C);
    let case = |images, c, h, w, offset, spread| BnCase {
        images,
        shape: ImageShape::new(c, h, w),
        offset,
        spread,
        shift: 0,
    };
    for case in [
        // Odd planes (63, 15 values): the scalar path, groups of lanes that do not divide
        // the block.
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
        BnCase {
            shift: 1,
            ..case(10, 16, 8, 8, 0.0, 1.0)
        },
    ] {
        check_batchnorm(&dev, &case, &mut rng);
    }
}

#[test]
fn gpu_batchnorm_at_the_resnet18_stem_scale() {
    let Some(dev) = gpu_common::device("gpu_batchnorm_at_the_resnet18_stem_scale") else {
        return;
    };
    // T = 32, B = 100: 3200 images after the 7x7 stride-2 stem convolution.
    let case = BnCase {
        images: 3200,
        shape: ImageShape::new(64, 16, 16),
        offset: 0.5,
        spread: 2.0,
        shift: 0,
    };
    check_batchnorm(&dev, &case, &mut Rng::new(0x57E3));
}

/// Max-pools `x` on the GPU (twice: bit-identical) and checks `y`, the chosen indices and
/// the backward against the f32 reference, exactly.
fn check_maxpool(
    dev: &Arc<Device>,
    pool: MaxPool2d,
    images: usize,
    input: ImageShape,
    x: &[f32],
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
        let (xt, dyt) = (upload(dev, x), upload(dev, &dy));
        let (y, argmax) = (
            poisoned(dev, Dtype::F32, out_len),
            poisoned(dev, Dtype::U8, out_len),
        );
        kernels::maxpool2d_forward(dev, &pool, input, images, &xt, &y, &argmax).unwrap();
        let dx = poisoned(dev, Dtype::F32, x.len());
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
fn gpu_maxpool_matches_the_cpu_reference_ties_included() {
    let Some(dev) = gpu_common::device("gpu_maxpool_matches_the_cpu_reference_ties_included")
    else {
        return;
    };
    let mut rng = Rng::new(0x9001);
    for (images, input, pool) in [
        // The ResNet stem's pool, on fewer images.
        (8, ImageShape::new(64, 16, 16), MaxPool2d::new(3, 2, 1)),
        // Odd extents; overlapping windows (stride 1); no padding; a wide window.
        (3, ImageShape::new(5, 7, 9), MaxPool2d::new(3, 2, 1)),
        (2, ImageShape::new(3, 7, 9), MaxPool2d::new(3, 1, 1)),
        (2, ImageShape::new(4, 11, 10), MaxPool2d::new(2, 2, 0)),
        (2, ImageShape::new(3, 11, 10), MaxPool2d::new(5, 3, 2)),
    ] {
        eprintln!("max-pool {pool:?} on {images} images of {input}");
        let len = images * input.len();
        // Continuous values, with NaNs (which count as maxima).
        let mut x = rng.vec(len, -1.0, 1.0);
        for i in (0..len).step_by(97) {
            x[i] = f32::NAN;
        }
        check_maxpool(&dev, pool, images, input, &x, &mut rng);
        // Spikes: ties in nearly every window, and all-zero windows.
        let spikes: Vec<f32> = (0..len)
            .map(|_| f32::from(u8::from(rng.uniform(0.0, 1.0) < 0.3)))
            .collect();
        check_maxpool(&dev, pool, images, input, &spikes, &mut rng);
    }
}

#[test]
fn gpu_global_avgpool_matches_the_cpu_reference() {
    let Some(dev) = gpu_common::device("gpu_global_avgpool_matches_the_cpu_reference") else {
        return;
    };
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
fn gpu_add_and_add_assign_equal_the_host_sums() {
    let Some(dev) = gpu_common::device("gpu_add_and_add_assign_equal_the_host_sums") else {
        return;
    };
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
        Err(RuntimeError::Shape(m)) => assert!(m.contains(needle), "`{m}` lacks `{needle}`"),
        other => panic!("expected a shape error mentioning `{needle}`, got {other:?}"),
    }
}

#[test]
fn gpu_nn_kernels_reject_bad_arguments() {
    let Some(dev) = gpu_common::device("gpu_nn_kernels_reject_bad_arguments") else {
        return;
    };
    let (images, input) = (2, ImageShape::new(3, 4, 4));
    let bn = BatchNorm2d::new(3);
    let t = |len| upload(&dev, &vec![0.5; len]);
    let (x, y, g, b, rm, rv) = (t(96), t(96), t(3), t(3), t(3), t(3));
    let saved = BatchNormSaved::new(&dev, 3).unwrap();
    let train = |x: &DeviceTensor, y: &DeviceTensor, g: &DeviceTensor, images| {
        kernels::batchnorm_forward_train(&dev, &bn, input, images, x, g, &b, &rm, &rv, y, &saved)
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
        "`x` must be f32 with 96 values",
    );
    shape_error(train(&x, &x, &g, images), "`x` and `y` share device memory");
    let one = ImageShape::new(3, 1, 1);
    shape_error(
        kernels::batchnorm_forward_train(&dev, &bn, one, 1, &t(3), &g, &b, &rm, &rv, &t(3), &saved),
        "more than one value per channel",
    );
    shape_error(
        kernels::batchnorm_forward_eval(
            &dev,
            &BatchNorm2d::new(4),
            input,
            images,
            &x,
            &g,
            &b,
            &rm,
            &rv,
            &y,
        ),
        "batch-norm over 4 channels",
    );

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
            &dev, &bn, input, images, &x, &g, &saved, &y, &y, &dgamma, &dbeta,
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
