//! The bf16 twins of the network kernels (narrow storage) against their f32 kernels, on a
//! GPU. Each twin is the f32 kernel's own template with bf16 loads and stores and f32
//! arithmetic, so on inputs that bf16 holds exactly it must give the f32 kernel's result
//! rounded to bf16, bit for bit (and the f32 results it writes, such as batch statistics
//! or average-pooled means, bit for bit unrounded). The f32 kernels are checked against
//! the CPU reference in `gpu_nn_kernels`. Every output is poisoned before the kernels
//! write it; shapes cover the scalar paths (odd planes) and the 4-wide ones, aligned and
//! not.
#![allow(clippy::unwrap_used)]

mod gpu_common;

use std::sync::Arc;

use gpu_common::Rng;
use snn_codegen::Dtype;
use snn_nn::{BatchNorm2d, ImageShape, MaxPool2d};
use snn_runtime::nn::kernels::{self, BatchNormParams, BatchNormSaved};
use snn_runtime::{Device, DeviceTensor};

/// Values bf16 holds exactly.
fn bf16_values(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    (0..n)
        .map(|_| Dtype::BF16.round(rng.uniform(lo, hi)) as f32)
        .collect()
}

/// `values` as a `dtype` tensor starting `shift` elements into its buffer.
fn upload(dev: &Arc<Device>, dtype: Dtype, values: &[f32], shift: usize) -> DeviceTensor {
    let mut padded = vec![0.0; shift];
    padded.extend_from_slice(values);
    let t = DeviceTensor::from_f32(dev, dtype, &[padded.len()], &padded).unwrap();
    t.view(shift, &[values.len()]).unwrap()
}

/// An output full of 0xFF bytes (NaN in f32 and bf16), `shift` elements into its buffer.
fn poisoned(dev: &Arc<Device>, dtype: Dtype, len: usize, shift: usize) -> DeviceTensor {
    let t = DeviceTensor::zeros(dev, dtype, &[len + shift]).unwrap();
    t.fill_bytes(0xFF).unwrap();
    t.view(shift, &[len]).unwrap()
}

/// Asserts that `got` (read back from a bf16 or f32 tensor) is `want` rounded to `dtype`,
/// bit for bit, naming the first difference.
fn assert_rounded(what: &str, dtype: Dtype, got: &DeviceTensor, want: &DeviceTensor) {
    let (got, want) = (got.to_f32().unwrap(), want.to_f32().unwrap());
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let w = dtype.round(f64::from(w)) as f32;
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}[{i}]: got {g}, expected {w}"
        );
    }
}

/// Runs `f` once on f32 tensors and once on bf16 ones (same values, shifted by `shift`
/// elements), returning both runs' outputs in order.
fn both<const N: usize>(
    shift: usize,
    f: impl Fn(Dtype, usize) -> [DeviceTensor; N],
) -> ([DeviceTensor; N], [DeviceTensor; N]) {
    (f(Dtype::F32, shift), f(Dtype::BF16, shift))
}

/// Images and their shape: an odd plane (the scalar paths), then planes of a multiple of 4
/// (the 4-wide paths; a ResNet18 layer's shape).
fn cases() -> [(usize, ImageShape); 3] {
    [
        (6, ImageShape::new(5, 7, 7)),
        (8, ImageShape::new(16, 8, 8)),
        (4, ImageShape::new(64, 4, 4)),
    ]
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_bf16_batchnorm_is_the_f32_kernel_rounded() {
    let dev = gpu_common::device();
    let mut rng = Rng::new(0xBF16);
    for (images, shape) in cases() {
        for shift in [0, 1] {
            eprintln!("batch-norm on {images} images of {shape}, shifted {shift}");
            let bn = BatchNorm2d::new(shape.channels);
            let len = images * shape.len();
            let c = shape.channels;
            let x = bf16_values(&mut rng, len, -2.0, 3.0);
            let dy = bf16_values(&mut rng, len, -1.0, 1.0);
            let gamma = rng.vec(c, 0.5, 1.5);
            let beta = rng.vec(c, -0.5, 0.5);
            let f32s = |v: &[f32]| upload(&dev, Dtype::F32, v, 0);
            let (outs32, outs16) = both(shift, |dtype, shift| {
                let (xt, dyt) = (
                    upload(&dev, dtype, &x, shift),
                    upload(&dev, dtype, &dy, shift),
                );
                let (g, b) = (f32s(&gamma), f32s(&beta));
                let (rm, rv) = (f32s(&vec![0.0; c]), f32s(&vec![1.0; c]));
                let params = BatchNormParams {
                    gamma: &g,
                    beta: &b,
                    running_mean: &rm,
                    running_var: &rv,
                };
                let saved = BatchNormSaved::new(&dev, c).unwrap();
                let y = poisoned(&dev, dtype, len, shift);
                kernels::batchnorm_forward(
                    &dev,
                    &bn,
                    shape,
                    images,
                    &xt,
                    &params,
                    &y,
                    Some(&saved),
                    None,
                )
                .unwrap();
                let eval = poisoned(&dev, dtype, len, shift);
                kernels::batchnorm_forward(
                    &dev, &bn, shape, images, &xt, &params, &eval, None, None,
                )
                .unwrap();
                let dx = poisoned(&dev, dtype, len, shift);
                let (dg, db) = (
                    poisoned(&dev, Dtype::F32, c, 0),
                    poisoned(&dev, Dtype::F32, c, 0),
                );
                kernels::batchnorm_backward(
                    &dev, &bn, shape, images, &xt, &g, &saved, &dyt, &dx, &dg, &db, None,
                )
                .unwrap();
                // The fused path's backward: `g` (here `dy`) turned into dx in place.
                let scale = poisoned(&dev, Dtype::F32, c, 0);
                kernels::batchnorm_scale(&dev, &bn, &g, &saved.inv_std, false, &scale).unwrap();
                let (gs, gsh) = (f32s(&rng_free(c, 0.3)), f32s(&rng_free(c, -0.2)));
                let (fdg, fdb) = (
                    poisoned(&dev, Dtype::F32, c, 0),
                    poisoned(&dev, Dtype::F32, c, 0),
                );
                kernels::batchnorm_backward_fused(
                    &dev, &bn, shape, images, &xt, &saved, &scale, &gs, &gsh, &dyt, &fdg, &fdb,
                    None,
                )
                .unwrap();
                [
                    y,
                    eval,
                    dx,
                    dyt,
                    saved.mean,
                    saved.inv_std,
                    rm,
                    rv,
                    dg,
                    db,
                    fdg,
                    fdb,
                ]
            });
            let names = [
                "y",
                "eval y",
                "dx",
                "fused dx",
                "mean",
                "inv_std",
                "running mean",
                "running var",
                "dgamma",
                "dbeta",
                "fused dgamma",
                "fused dbeta",
            ];
            for (k, name) in names.iter().enumerate() {
                // The first four are activations (bf16 in the twin); the rest f32.
                let dtype = if k < 4 { Dtype::BF16 } else { Dtype::F32 };
                assert_rounded(name, dtype, &outs16[k], &outs32[k]);
            }
        }
    }
}

/// `c` values `start, start + 0.01, ...`: per-channel inputs that need no generator.
fn rng_free(c: usize, start: f32) -> Vec<f32> {
    (0..c).map(|i| start + 0.01 * i as f32).collect()
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_bf16_pooling_is_the_f32_kernel_rounded() {
    let dev = gpu_common::device();
    let mut rng = Rng::new(0x9001);
    // The stem's 3x3 stride-2 window with padding, and the CNN's 2x2 one.
    for pool in [MaxPool2d::new(3, 2, 1), MaxPool2d::new(2, 2, 0)] {
        for (images, shape) in cases() {
            for shift in [0, 1] {
                let out = pool.output(shape).unwrap();
                let (len, out_len) = (images * shape.len(), images * out.len());
                // Spikes tie everywhere; the gradients are any bf16 values.
                let x: Vec<f32> = (0..len)
                    .map(|_| f32::from(u8::from(rng.uniform(0.0, 1.0) < 0.3)))
                    .collect();
                let dy = bf16_values(&mut rng, out_len, -1.0, 1.0);
                let (o32, o16) = both(shift, |dtype, shift| {
                    let xt = upload(&dev, dtype, &x, shift);
                    let y = poisoned(&dev, dtype, out_len, shift);
                    let argmax = poisoned(&dev, Dtype::U8, out_len, 0);
                    kernels::maxpool2d_forward(&dev, &pool, shape, images, &xt, &y, &argmax)
                        .unwrap();
                    let dyt = upload(&dev, dtype, &dy, shift);
                    let dx = poisoned(&dev, dtype, len, shift);
                    kernels::maxpool2d_backward(&dev, &pool, shape, images, &argmax, &dyt, &dx)
                        .unwrap();
                    [y, argmax, dx]
                });
                for (k, name) in ["max y", "argmax", "max dx"].iter().enumerate() {
                    assert_rounded(name, Dtype::BF16, &o16[k], &o32[k]);
                }
            }
        }
    }
    for (images, shape) in cases() {
        for shift in [0, 1] {
            let (len, rows) = (images * shape.len(), images * shape.channels);
            let x = bf16_values(&mut rng, len, -1.0, 1.0);
            let dy = rng.vec(rows, -1.0, 1.0);
            let (o32, o16) = both(shift, |dtype, shift| {
                let xt = upload(&dev, dtype, &x, shift);
                let y = poisoned(&dev, Dtype::F32, rows, 0);
                kernels::global_avgpool_forward(&dev, shape, images, &xt, &y).unwrap();
                let dyt = upload(&dev, Dtype::F32, &dy, 0);
                let dx = poisoned(&dev, dtype, len, shift);
                kernels::global_avgpool_backward(&dev, shape, images, &dyt, &dx).unwrap();
                [y, dx]
            });
            assert_rounded("avg y (f32 in both)", Dtype::F32, &o16[0], &o32[0]);
            assert_rounded("avg dx", Dtype::BF16, &o16[1], &o32[1]);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_bf16_sums_and_conversions_round_to_nearest_even() {
    let dev = gpu_common::device();
    let mut rng = Rng::new(0x5E);
    for len in [1003, 64 * 8 * 8 * 8] {
        for shift in [0, 1] {
            let (a, b) = (
                bf16_values(&mut rng, len, -1.0, 1.0),
                bf16_values(&mut rng, len, -1.0, 1.0),
            );
            let (o32, o16) = both(shift, |dtype, shift| {
                let (at, bt) = (
                    upload(&dev, dtype, &a, shift),
                    upload(&dev, dtype, &b, shift),
                );
                let out = poisoned(&dev, dtype, len, shift);
                kernels::add(&dev, &at, &bt, &out).unwrap();
                kernels::add_assign(&dev, &at, &bt).unwrap();
                [out, at]
            });
            assert_rounded("add", Dtype::BF16, &o16[0], &o32[0]);
            assert_rounded("add_assign", Dtype::BF16, &o16[1], &o32[1]);

            // Any f32 to bf16 rounds to nearest even, as the host does; back is exact.
            let wide = rng.vec(len, -3.0, 3.0);
            let x = upload(&dev, Dtype::F32, &wide, shift);
            let narrow = poisoned(&dev, Dtype::BF16, len, shift);
            kernels::convert(&dev, &x, &narrow).unwrap();
            assert_rounded("to bf16", Dtype::BF16, &narrow, &x);
            let back = poisoned(&dev, Dtype::F32, len, 1 - shift);
            kernels::convert(&dev, &narrow, &back).unwrap();
            assert_rounded("to f32", Dtype::F32, &back, &narrow);

            // Spikes (-1, 0, 1) to one signed byte and back, exactly, from either width.
            let spikes: Vec<f32> = (0..len).map(|_| rng.below(3) as f32 - 1.0).collect();
            for dtype in [Dtype::F32, Dtype::BF16] {
                let x = upload(&dev, dtype, &spikes, shift);
                let bytes = DeviceTensor::empty(&dev, Dtype::I8, &[len]).unwrap();
                kernels::convert(&dev, &x, &bytes).unwrap();
                let back = poisoned(&dev, dtype, len, 1 - shift);
                kernels::convert(&dev, &bytes, &back).unwrap();
                assert_eq!(back.to_f32().unwrap(), spikes, "{dtype} spikes through i8");
            }
        }
    }
    // Mixed dtypes are refused, naming them.
    let (x, y) = (
        upload(&dev, Dtype::F32, &[1.0; 8], 0),
        poisoned(&dev, Dtype::F32, 8, 0),
    );
    let e = kernels::convert(&dev, &x, &y).unwrap_err();
    assert!(e.to_string().contains("from f32 to f32"), "{e}");
    let z = poisoned(&dev, Dtype::BF16, 8, 0);
    let e = kernels::add(&dev, &x, &x, &z).unwrap_err();
    assert!(e.to_string().contains("out"), "{e}");
}
