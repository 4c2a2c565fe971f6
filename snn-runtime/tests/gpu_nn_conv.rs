//! Convolutions through cuDNN and linear layers through cuBLAS against the CPU reference
//! computed in f64: every convolution of Spiking-ResNet18/50 on 32x32 inputs (spatial sizes
//! down to 1x1), odd sizes and convolutions with bias, in full f32, TF32 and bf16; shape and
//! dtype errors. Outputs are poisoned with NaN before the GPU writes them, so an element
//! left unwritten fails.
//!
//! Tolerances scale with `sum |w| |x|` of each output (computed by the same reference on
//! absolute values), the natural bound on rounding in a sum of products:
//! - f32 (FMA math): 1e-5. Each f32 product and addition is off by at most 2^-24 relative;
//!   a sum of K terms accumulated in any order (GEMM tiles, FFT or Winograd transforms)
//!   stays far below 1e-5 * sum |w| |x| for the K <= 4608 here.
//! - TF32: 2^-9. TF32 keeps 10 mantissa bits: an operand rounded to it is off by at most
//!   2^-11 relative (2^-10 where kernels truncate), so a product by at most 2^-10 (2^-9),
//!   and a sum of products by at most 2^-9 * sum |w| |x|; f32 accumulation adds far less.
//! - bf16: 2^-8. The inputs are bf16 values (the reference takes the same ones), whose
//!   products are exact in the f32 accumulator; the sum is rounded to bf16 (8 significant
//!   bits) once when stored: at most 2^-9 of |y| <= 2^-9 * sum |w| |x|, plus the f32
//!   accumulation's far smaller error.
//!
//! The GPU tests (named `gpu_*`) are ignored unless asked for (`--ignored`); the library
//! probes and the shape checks run everywhere (nvrtc_programs.rs compiles the bias kernels).
#![allow(clippy::unwrap_used)]

mod gpu_common;

use std::sync::Arc;

use gpu_common::Rng;
use snn_codegen::Dtype;
use snn_nn::cpu::{WeightGrads, conv2d_backward, conv2d_forward, linear_backward, linear_forward};
use snn_nn::{Conv2d, ImageShape, Linear};
use snn_runtime::libs::{cublas as cublas_library, cudnn as cudnn_library};
use snn_runtime::nn::conv::{ConvGpu, ConvMath, ConvPass, ConvShapes, Cudnn};
use snn_runtime::nn::linear::{self as gpu_linear, Cublas};
use snn_runtime::{Device, DeviceTensor, RuntimeError};

const F32_REL: f64 = 1e-5;
const TF32_REL: f64 = 1.0 / 512.0;
const BF16_REL: f64 = 1.0 / 256.0;

// ---------------------------------------------------------------------------------------
// Without a GPU.

#[test]
fn cudnn_and_cublas_probes_find_the_library_or_say_what_is_missing() {
    for (probe, file, name) in [
        (
            cudnn_library as fn() -> Result<String, RuntimeError>,
            "libcudnn.so.9",
            "cuDNN 9",
        ),
        (cublas_library, "libcublas.so.13", "cuBLAS 13"),
    ] {
        match probe() {
            Ok(path) => assert!(path.contains(file), "{name} found at {path}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(matches!(e, RuntimeError::MissingLibrary { .. }), "{msg}");
                for needed in [name, file, "was not found", "LD_LIBRARY_PATH", "/usr/lib"] {
                    assert!(msg.contains(needed), "`{needed}` missing from: {msg}");
                }
                // Asking again gives the same answer without searching again.
                assert_eq!(probe().unwrap_err(), e);
            }
        }
    }
}

#[test]
fn conv_shapes_follow_pytorch_and_reject_what_cudnn_cannot_hold() {
    let stem = Conv2d::new(3, 64, 7, 2, 3);
    let shapes = ConvShapes::new(&stem, ImageShape::new(3, 32, 32), 2).unwrap();
    assert_eq!(shapes.input, [2, 3, 32, 32]);
    assert_eq!(shapes.weight, [64, 3, 7, 7]);
    assert_eq!(shapes.output, [2, 64, 16, 16]);
    assert_eq!(
        (shapes.input_len(), shapes.weight_len(), shapes.output_len()),
        (6144, 9408, 32768)
    );
    // Odd: (7 + 4 - 5) / 3 + 1 = 3 rows, (11 + 4 - 5) / 3 + 1 = 4 columns.
    let odd = ConvShapes::new(&Conv2d::new(3, 5, 5, 3, 2), ImageShape::new(3, 7, 11), 1).unwrap();
    assert_eq!(odd.output, [1, 5, 3, 4]);

    let err = |r: Result<ConvShapes, RuntimeError>| r.unwrap_err().to_string();
    let msg = err(ConvShapes::new(&stem, ImageShape::new(4, 32, 32), 2));
    assert!(msg.contains("expects 3 input channels"), "{msg}");
    let msg = err(ConvShapes::new(&stem, ImageShape::new(3, 32, 32), 0));
    assert!(msg.contains("0 images"), "{msg}");
    let msg = err(ConvShapes::new(
        &Conv2d::new(0, 4, 3, 1, 1),
        ImageShape::new(0, 8, 8),
        1,
    ));
    assert!(
        msg.contains("at least one input and one output channel"),
        "{msg}"
    );
    // 2^20 images of 64 x 32 x 32 is 2^36 values: more than one cuDNN tensor holds.
    let msg = err(ConvShapes::new(
        &Conv2d::new(64, 64, 3, 1, 1),
        ImageShape::new(64, 32, 32),
        1 << 20,
    ));
    assert!(
        msg.contains("2^31") && msg.contains("fewer images"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn upload(dev: &Arc<Device>, shape: &[usize], values: &[f32]) -> DeviceTensor {
    upload_as(dev, Dtype::F32, shape, values)
}

fn upload_as(dev: &Arc<Device>, dtype: Dtype, shape: &[usize], values: &[f32]) -> DeviceTensor {
    DeviceTensor::from_f32(dev, dtype, shape, values).unwrap()
}

/// A tensor whose every value is NaN until something writes it.
fn poisoned(dev: &Arc<Device>, shape: &[usize]) -> DeviceTensor {
    poisoned_as(dev, Dtype::F32, shape)
}

fn poisoned_as(dev: &Arc<Device>, dtype: Dtype, shape: &[usize]) -> DeviceTensor {
    let t = DeviceTensor::zeros(dev, dtype, shape).unwrap();
    t.fill_bytes(0xFF).unwrap();
    t
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

/// Asserts `|got - want| <= rel * max(bound, mean bound)` elementwise (NaN fails). The
/// tensor-wide term is for the FFT and Winograd algorithms cuDNN's search may pick: they
/// transform whole tiles, so an element's rounding error follows its tile's magnitudes,
/// not only its own terms (an output whose own terms nearly vanish still gets the error of
/// its neighbours).
fn assert_close(what: &str, got: &[f32], want: &[f64], bound: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mean = bound.iter().sum::<f64>() / bound.len().max(1) as f64;
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (f64::from(g) - w).abs();
        let tol = rel * b.max(mean);
        assert!(
            err <= tol,
            "{what}: element {i} is {g} but the f64 reference is {w}: error {err:.3e} > {tol:.3e} ({rel:e} * max(sum |w||x| = {b:.4}, its mean {mean:.4}))"
        );
    }
}

/// A convolution's outputs and gradients, from the CPU reference.
struct ConvResult {
    y: Vec<f64>,
    dx: Vec<f64>,
    dw: Vec<f64>,
    db: Option<Vec<f64>>,
}

/// `x`, `weight`, `bias` and `dy` of a convolution, for the reference.
type ConvInputs<'a> = (&'a [f64], &'a [f64], Option<&'a [f64]>, &'a [f64]);

fn cpu_conv(
    conv: &Conv2d,
    input: ImageShape,
    images: usize,
    (x, w, b, dy): ConvInputs<'_>,
) -> ConvResult {
    let shapes = ConvShapes::new(conv, input, images).unwrap();
    let mut r = ConvResult {
        y: vec![0.0; shapes.output_len()],
        dx: vec![0.0; x.len()],
        dw: vec![0.0; w.len()],
        db: b.map(|b| vec![0.0; b.len()]),
    };
    conv2d_forward(conv, input, images, x, w, b, &mut r.y).unwrap();
    let grads = WeightGrads {
        input: Some(&mut r.dx),
        weight: &mut r.dw,
        bias: r.db.as_deref_mut(),
    };
    conv2d_backward(conv, input, images, x, w, dy, grads).unwrap();
    r
}

/// Random inputs of one convolution problem, as uploaded (f32) and as the reference takes
/// them (f64, exactly the same values).
struct ConvData {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    dy: Vec<f32>,
}

impl ConvData {
    /// Random data that `dtype` (the convolution's) holds exactly; the bias is f32.
    fn new(conv: &Conv2d, shapes: &ConvShapes, dtype: Dtype, rng: &mut Rng) -> Self {
        let vec = |rng: &mut Rng, n, lo, hi| -> Vec<f32> {
            let v = rng.vec(n, lo, hi);
            v.iter()
                .map(|&x| dtype.round(f64::from(x)) as f32)
                .collect()
        };
        Self {
            x: vec(rng, shapes.input_len(), -1.0, 1.0),
            w: vec(rng, shapes.weight_len(), -0.5, 0.5),
            b: conv.bias.then(|| rng.vec(conv.out_channels, -1.0, 1.0)),
            dy: vec(rng, shapes.output_len(), -1.0, 1.0),
        }
    }
}

/// The GPU's forward, backward-data and backward-filter of `conv` match the reference
/// within `rel * sum |w||x|`.
#[allow(clippy::too_many_arguments)]
fn check_conv(
    dev: &Arc<Device>,
    cudnn: &Arc<Cudnn>,
    name: &str,
    conv: &Conv2d,
    input: ImageShape,
    images: usize,
    math: ConvMath,
    rng: &mut Rng,
) {
    let rel = match math {
        ConvMath::F32 => F32_REL,
        ConvMath::Tf32 => TF32_REL,
        ConvMath::Bf16 => BF16_REL,
    };
    let gpu = ConvGpu::new(cudnn, conv, input, images, math).unwrap();
    let shapes = *gpu.shapes();
    let dtype = math.dtype();
    let d = ConvData::new(conv, &shapes, dtype, rng);
    let (x64, w64, dy64) = (f64s(&d.x), f64s(&d.w), f64s(&d.dy));
    let b64 = d.b.as_deref().map(f64s);
    let want = cpu_conv(conv, input, images, (&x64, &w64, b64.as_deref(), &dy64));
    let b_abs = b64.as_deref().map(abs);
    let bound = cpu_conv(
        conv,
        input,
        images,
        (&abs(&x64), &abs(&w64), b_abs.as_deref(), &abs(&dy64)),
    );

    let x = upload_as(dev, dtype, &shapes.input, &d.x);
    let w = upload_as(dev, dtype, &shapes.weight, &d.w);
    let b = d.b.as_ref().map(|b| upload(dev, &[b.len()], b));
    let dy = upload_as(dev, dtype, &shapes.output, &d.dy);
    let y = poisoned_as(dev, dtype, &shapes.output);
    let dx = poisoned_as(dev, dtype, &shapes.input);
    let dw = poisoned_as(dev, dtype, &shapes.weight);
    let db = d.b.as_ref().map(|b| poisoned(dev, &[b.len()]));
    gpu.forward(&x, &w, b.as_ref(), &y).unwrap();
    gpu.backward_data(&dy, &w, &dx).unwrap();
    gpu.backward_filter(&x, &dy, &dw, db.as_ref()).unwrap();

    let what = |t: &str| format!("{name} ({conv:?} on {images} x {input}, {math:?}): {t}");
    // bf16 rounds a biased output twice: the convolution's, then the sum with the bias.
    let rel_y = if math == ConvMath::Bf16 && conv.bias {
        2.0 * rel
    } else {
        rel
    };
    assert_close(&what("y"), &y.to_f32().unwrap(), &want.y, &bound.y, rel_y);
    assert_close(&what("dx"), &dx.to_f32().unwrap(), &want.dx, &bound.dx, rel);
    // Accumulating adds the same gradient to what is there.
    gpu.backward_data_into(&dy, &w, &dx, true).unwrap();
    let twice = |v: &[f64]| v.iter().map(|x| 2.0 * x).collect::<Vec<_>>();
    let (want2, bound2) = (twice(&want.dx), twice(&bound.dx));
    assert_close(
        &what("dx accumulated"),
        &dx.to_f32().unwrap(),
        &want2,
        &bound2,
        rel,
    );
    assert_close(&what("dw"), &dw.to_f32().unwrap(), &want.dw, &bound.dw, rel);
    if let (Some(db), Some(want_db), Some(bound_db)) = (&db, &want.db, &bound.db) {
        // The bias gradient is summed in double precision on the GPU too.
        assert_close(&what("db"), &db.to_f32().unwrap(), want_db, bound_db, 1e-6);
    }
    for pass in [
        ConvPass::Forward,
        ConvPass::BackwardData,
        ConvPass::BackwardFilter,
    ] {
        let a = gpu.algorithm(pass).unwrap();
        assert!(a.workspace_bytes <= cudnn.search_limit(), "{a:?}");
        let taps = a.name.starts_with("cuBLAS");
        assert_eq!(
            taps,
            cudnn.tiny_map_gemm() && tiny(conv, input),
            "{}",
            what("path")
        );
        if math == ConvMath::F32 && !taps {
            assert_eq!(a.math, "CUDNN_FMA_MATH", "{}", what("math"));
        }
    }
}

/// Every convolution of Spiking-ResNet18 (BasicBlock) and Spiking-ResNet50 (Bottleneck)
/// on 3x32x32 inputs, at the input shape it sees (the stem halves 32 to 16, the max-pool
/// to 8, each later stage halves again, down to 1x1).
fn resnet_problems() -> Vec<(&'static str, Conv2d, ImageShape)> {
    let (c, s) = (Conv2d::new, ImageShape::new);
    vec![
        ("stem 7x7/2", c(3, 64, 7, 2, 3), s(3, 32, 32)),
        ("basic 3x3 64", c(64, 64, 3, 1, 1), s(64, 8, 8)),
        ("basic 3x3/2 64->128", c(64, 128, 3, 2, 1), s(64, 8, 8)),
        ("basic 3x3 128", c(128, 128, 3, 1, 1), s(128, 4, 4)),
        ("downsample 1x1/2 64->128", c(64, 128, 1, 2, 0), s(64, 8, 8)),
        ("basic 3x3/2 128->256", c(128, 256, 3, 2, 1), s(128, 4, 4)),
        ("basic 3x3 256", c(256, 256, 3, 1, 1), s(256, 2, 2)),
        (
            "downsample 1x1/2 128->256",
            c(128, 256, 1, 2, 0),
            s(128, 4, 4),
        ),
        ("basic 3x3/2 256->512", c(256, 512, 3, 2, 1), s(256, 2, 2)),
        ("basic 3x3 512 at 1x1", c(512, 512, 3, 1, 1), s(512, 1, 1)),
        (
            "downsample 1x1/2 256->512",
            c(256, 512, 1, 2, 0),
            s(256, 2, 2),
        ),
        ("bottleneck 1x1 64->64", c(64, 64, 1, 1, 0), s(64, 8, 8)),
        ("bottleneck 1x1 64->256", c(64, 256, 1, 1, 0), s(64, 8, 8)),
        ("bottleneck 1x1 256->64", c(256, 64, 1, 1, 0), s(256, 8, 8)),
        (
            "bottleneck 1x1 256->128",
            c(256, 128, 1, 1, 0),
            s(256, 8, 8),
        ),
        ("bottleneck 3x3/2 128", c(128, 128, 3, 2, 1), s(128, 8, 8)),
        (
            "bottleneck 1x1 128->512",
            c(128, 512, 1, 1, 0),
            s(128, 4, 4),
        ),
        (
            "downsample 1x1/2 256->512 at 8x8",
            c(256, 512, 1, 2, 0),
            s(256, 8, 8),
        ),
        (
            "bottleneck 1x1 512->256",
            c(512, 256, 1, 1, 0),
            s(512, 4, 4),
        ),
        ("bottleneck 3x3/2 256", c(256, 256, 3, 2, 1), s(256, 4, 4)),
        (
            "bottleneck 1x1 256->1024",
            c(256, 1024, 1, 1, 0),
            s(256, 2, 2),
        ),
        (
            "downsample 1x1/2 512->1024",
            c(512, 1024, 1, 2, 0),
            s(512, 4, 4),
        ),
        (
            "bottleneck 1x1 1024->512",
            c(1024, 512, 1, 1, 0),
            s(1024, 2, 2),
        ),
        ("bottleneck 3x3/2 512", c(512, 512, 3, 2, 1), s(512, 2, 2)),
        (
            "bottleneck 1x1 512->2048",
            c(512, 2048, 1, 1, 0),
            s(512, 1, 1),
        ),
        (
            "downsample 1x1/2 1024->2048",
            c(1024, 2048, 1, 2, 0),
            s(1024, 2, 2),
        ),
        (
            "bottleneck 1x1 2048->512",
            c(2048, 512, 1, 1, 0),
            s(2048, 1, 1),
        ),
    ]
}

/// Odd sizes, non-square inputs, windows that drop the last rows, kernels larger than
/// the input (one output pixel whose window holds all of it: one matrix product), and
/// biases.
fn odd_problems() -> Vec<(&'static str, Conv2d, ImageShape)> {
    let (c, s) = (Conv2d::new, ImageShape::new);
    vec![
        (
            "5x5/3 pad 2 on 7x11, bias",
            c(3, 5, 5, 3, 2).with_bias(),
            s(3, 7, 11),
        ),
        ("2x2/2 on 5x5", c(4, 6, 2, 2, 0), s(4, 5, 5)),
        (
            "3x3 unpadded on 3x3, bias",
            c(7, 3, 3, 1, 0).with_bias(),
            s(7, 3, 3),
        ),
        ("7x7 pad 3 on 1x1", c(5, 9, 7, 1, 3), s(5, 1, 1)),
        (
            "1x1 16->10 on 6x6, bias",
            c(16, 10, 1, 1, 0).with_bias(),
            s(16, 6, 6),
        ),
        (
            "3x3/2 13->17 on 9x9, bias",
            c(13, 17, 3, 2, 1).with_bias(),
            s(13, 9, 9),
        ),
        ("4x4/3 pad 1 on 10x6", c(2, 3, 4, 3, 1), s(2, 10, 6)),
        (
            "5x5/3 pad 2 on 2x3, bias",
            c(3, 4, 5, 3, 2).with_bias(),
            s(3, 2, 3),
        ),
    ]
}

fn cudnn() -> (Arc<Device>, Arc<Cudnn>) {
    let dev = gpu_common::device();
    let cudnn = Cudnn::new(&dev).unwrap();
    (dev, cudnn)
}

// ---------------------------------------------------------------------------------------
// Convolutions on the GPU.

/// Whether `conv` of `input` is one matrix product: one output pixel whose window holds
/// the whole input (cuBLAS runs those, unless told not to).
fn tiny(conv: &Conv2d, input: ImageShape) -> bool {
    let out = conv.output(input).unwrap();
    out.height == 1
        && out.width == 1
        && input.height + conv.padding <= conv.kernel
        && input.width + conv.padding <= conv.kernel
}

/// Every problem of [`resnet_problems`] on 3 images in `math`, inputs drawn from `seed`;
/// the tiny maps' through cuBLAS and through cuDNN.
fn check_resnet_convolutions(math: ConvMath, seed: u64) {
    let (dev, cudnn) = cudnn();
    let mut rng = Rng::new(seed);
    let problems = resnet_problems();
    assert!(problems.iter().filter(|(_, c, i)| tiny(c, *i)).count() >= 3);
    for gemm in [true, false] {
        cudnn.set_tiny_map_gemm(gemm);
        for (name, conv, input) in &problems {
            check_conv(&dev, &cudnn, name, conv, *input, 3, math, &mut rng);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_resnet_convolutions_match_the_cpu_in_f32() {
    check_resnet_convolutions(ConvMath::F32, 1);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_resnet_convolutions_match_the_cpu_in_tf32() {
    check_resnet_convolutions(ConvMath::Tf32, 2);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_resnet_convolutions_match_the_cpu_in_bf16() {
    check_resnet_convolutions(ConvMath::Bf16, 5);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_odd_convolutions_and_biases_match_the_cpu() {
    let (dev, cudnn) = cudnn();
    let mut rng = Rng::new(3);
    for (name, conv, input) in odd_problems() {
        for math in [ConvMath::F32, ConvMath::Tf32, ConvMath::Bf16] {
            for (images, gemm) in [(1, true), (5, true), (5, false)] {
                cudnn.set_tiny_map_gemm(gemm);
                check_conv(&dev, &cudnn, name, &conv, input, images, math, &mut rng);
            }
        }
    }
}

/// At the real batch of a training step (T = 32 times B = 100 images), sampled images of
/// the forward and backward-data match the CPU (both are per image); the backward-filter
/// repeats bit for bit, and the choice is shared by a second layer of the same problem.
#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_convolution_at_training_batch_size() {
    let (dev, cudnn) = cudnn();
    let (conv, input, images) = (
        Conv2d::new(64, 64, 3, 1, 1),
        ImageShape::new(64, 8, 8),
        3200,
    );
    let mut rng = Rng::new(4);
    for math in [ConvMath::F32, ConvMath::Tf32] {
        let rel = if math == ConvMath::F32 {
            F32_REL
        } else {
            TF32_REL
        };
        let gpu = ConvGpu::new(&cudnn, &conv, input, images, math).unwrap();
        let shapes = *gpu.shapes();
        let d = ConvData::new(&conv, &shapes, Dtype::F32, &mut rng);
        let x = upload(&dev, &shapes.input, &d.x);
        let w = upload(&dev, &shapes.weight, &d.w);
        let dy = upload(&dev, &shapes.output, &d.dy);
        let (y, dx) = (
            poisoned(&dev, &shapes.output),
            poisoned(&dev, &shapes.input),
        );
        gpu.forward(&x, &w, None, &y).unwrap();
        gpu.backward_data(&dy, &w, &dx).unwrap();
        let (y, dx) = (y.to_f32().unwrap(), dx.to_f32().unwrap());
        let (per_in, per_out) = (input.len(), gpu.output().len());
        for i in [0, 1601, images - 1] {
            let xi = f64s(&d.x[i * per_in..(i + 1) * per_in]);
            let dyi = f64s(&d.dy[i * per_out..(i + 1) * per_out]);
            let w64 = f64s(&d.w);
            let want = cpu_conv(&conv, input, 1, (&xi, &w64, None, &dyi));
            let bound = cpu_conv(&conv, input, 1, (&abs(&xi), &abs(&w64), None, &abs(&dyi)));
            let what = |t: &str| format!("image {i} of {images}, {math:?}: {t}");
            let yi = &y[i * per_out..(i + 1) * per_out];
            assert_close(&what("y"), yi, &want.y, &bound.y, rel);
            let dxi = &dx[i * per_in..(i + 1) * per_in];
            assert_close(&what("dx"), dxi, &want.dx, &bound.dx, rel);
        }
        // The backward-filter sums over all images: it must repeat exactly.
        let (dw1, dw2) = (
            poisoned(&dev, &shapes.weight),
            poisoned(&dev, &shapes.weight),
        );
        gpu.backward_filter(&x, &dy, &dw1, None).unwrap();
        gpu.backward_filter(&x, &dy, &dw2, None).unwrap();
        let algo = gpu.algorithm(ConvPass::BackwardFilter).unwrap();
        assert!(algo.deterministic, "{algo:?}");
        let bits = |t: &DeviceTensor| -> Vec<u32> {
            t.to_f32().unwrap().iter().map(|v| v.to_bits()).collect()
        };
        let first = bits(&dw1);
        assert!(first.iter().all(|b| f32::from_bits(*b).is_finite()));
        assert_eq!(
            first,
            bits(&dw2),
            "{math:?} backward-filter is not repeatable"
        );
        // A second layer of the same problem uses the remembered choice before it runs.
        let twin = ConvGpu::new(&cudnn, &conv, input, images, math).unwrap();
        for pass in [
            ConvPass::Forward,
            ConvPass::BackwardData,
            ConvPass::BackwardFilter,
        ] {
            assert_eq!(twin.algorithm(pass), gpu.algorithm(pass), "{pass}");
        }
        // ... and a different image count is a different problem.
        let other = ConvGpu::new(&cudnn, &conv, input, 7, math).unwrap();
        assert_eq!(other.algorithm(ConvPass::Forward), None);
    }
    assert!(cudnn.workspace_bytes() <= cudnn.search_limit());
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_convolutions_reject_bad_tensors() {
    let (dev, cudnn) = cudnn();
    let err = |r: Result<(), RuntimeError>| match r {
        Err(e @ (RuntimeError::Tensor { .. } | RuntimeError::Invalid { .. })) => e.to_string(),
        Err(e @ RuntimeError::Overlap { .. }) => e.to_string(),
        other => panic!("expected an argument error, got {other:?}"),
    };
    let input = ImageShape::new(4, 6, 6);
    let conv = Conv2d::new(4, 4, 3, 1, 1);
    let msg = ConvGpu::new(&cudnn, &conv, ImageShape::new(3, 6, 6), 2, ConvMath::F32)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("expects 4 input channels"), "{msg}");

    let gpu = ConvGpu::new(&cudnn, &conv, input, 2, ConvMath::F32).unwrap();
    let zeros = |shape: &[usize]| DeviceTensor::zeros(&dev, Dtype::F32, shape).unwrap();
    let (x, w, y) = (
        zeros(&[2, 4, 6, 6]),
        zeros(&[4, 4, 3, 3]),
        zeros(&[2, 4, 6, 6]),
    );
    let msg = err(gpu.forward(&zeros(&[2, 4, 6, 5]), &w, None, &y));
    assert!(
        msg.contains("`x` must be f32 with 288 values") && msg.contains("(240 values)"),
        "{msg}"
    );
    let half = DeviceTensor::zeros(&dev, Dtype::F16, &[4, 4, 3, 3]).unwrap();
    let msg = err(gpu.forward(&x, &half, None, &y));
    assert!(
        msg.contains("`weight` must be f32") && msg.contains("got f16"),
        "{msg}"
    );
    let bias = zeros(&[4]);
    let msg = err(gpu.forward(&x, &w, Some(&bias), &y));
    assert!(msg.contains("no bias, so `bias` must be None"), "{msg}");
    let msg = err(gpu.forward(&x, &w, None, &x));
    assert!(msg.contains("`x` and `y` share device memory"), "{msg}");
    let msg = err(gpu.backward_data(&y, &w, &zeros(&[4, 4, 6, 6])));
    assert!(msg.contains("`dx` must be f32 with 288 values"), "{msg}");
    let msg = err(gpu.backward_filter(&x, &y, &zeros(&[4, 4, 3]), None));
    assert!(
        msg.contains("`dweight` must be f32 with 144 values"),
        "{msg}"
    );

    let biased = ConvGpu::new(&cudnn, &conv.with_bias(), input, 2, ConvMath::F32).unwrap();
    let msg = err(biased.forward(&x, &w, None, &y));
    assert!(msg.contains("has a bias, so `bias` must be given"), "{msg}");
    let msg = err(biased.backward_filter(&x, &y, &zeros(&[4, 4, 3, 3]), Some(&zeros(&[5]))));
    assert!(msg.contains("`dbias` must be f32 with 4 values"), "{msg}");
    // Views that fold time into the batch are fine: only the element count matters.
    let folded = x.reshape(&[2, 1, 4, 36]).unwrap();
    gpu.forward(&folded, &w, None, &y).unwrap();
}

// ---------------------------------------------------------------------------------------
// Linear layers on the GPU.

/// `linear` over `rows` rows on the GPU against the reference (full f32: 1e-5 of
/// sum |w||x|).
fn check_linear(dev: &Arc<Device>, blas: &Cublas, linear: &Linear, rows: usize, rng: &mut Rng) {
    let (fi, fo) = (linear.in_features, linear.out_features);
    let x = rng.vec(rows * fi, -1.0, 1.0);
    let w = rng.vec(fo * fi, -0.5, 0.5);
    let b = linear.bias.then(|| rng.vec(fo, -1.0, 1.0));
    let dy = rng.vec(rows * fo, -1.0, 1.0);

    let reference = |x: &[f64], w: &[f64], b: Option<&[f64]>, dy: &[f64]| {
        let mut y = vec![0.0; rows * fo];
        linear_forward(linear, rows, x, w, b, &mut y).unwrap();
        let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
        let mut db = b.map(|b| vec![0.0; b.len()]);
        let grads = WeightGrads {
            input: Some(&mut dx),
            weight: &mut dw,
            bias: db.as_deref_mut(),
        };
        linear_backward(linear, rows, x, w, dy, grads).unwrap();
        (y, dx, dw, db)
    };
    let (x64, w64, dy64) = (f64s(&x), f64s(&w), f64s(&dy));
    let b64 = b.as_deref().map(f64s);
    let want = reference(&x64, &w64, b64.as_deref(), &dy64);
    let b_abs = b64.as_deref().map(abs);
    let bound = reference(&abs(&x64), &abs(&w64), b_abs.as_deref(), &abs(&dy64));

    let (gx, gw) = (upload(dev, &[rows, fi], &x), upload(dev, &[fo, fi], &w));
    let gb = b.as_ref().map(|b| upload(dev, &[fo], b));
    let gdy = upload(dev, &[rows, fo], &dy);
    let (gy, gdx, gdw) = (
        poisoned(dev, &[rows, fo]),
        poisoned(dev, &[rows, fi]),
        poisoned(dev, &[fo, fi]),
    );
    let gdb = b.as_ref().map(|_| poisoned(dev, &[fo]));
    gpu_linear::linear_forward(blas, linear, rows, &gx, &gw, gb.as_ref(), &gy).unwrap();
    gpu_linear::linear_backward(
        blas,
        linear,
        rows,
        &gx,
        &gw,
        &gdy,
        Some(&gdx),
        &gdw,
        gdb.as_ref(),
    )
    .unwrap();
    let what = |t: &str| format!("linear {fi}->{fo} over {rows} rows: {t}");
    assert_close(
        &what("y"),
        &gy.to_f32().unwrap(),
        &want.0,
        &bound.0,
        F32_REL,
    );
    assert_close(
        &what("dx"),
        &gdx.to_f32().unwrap(),
        &want.1,
        &bound.1,
        F32_REL,
    );
    assert_close(
        &what("dw"),
        &gdw.to_f32().unwrap(),
        &want.2,
        &bound.2,
        F32_REL,
    );
    if let (Some(gdb), Some(want_db), Some(bound_db)) = (&gdb, &want.3, &bound.3) {
        assert_close(&what("db"), &gdb.to_f32().unwrap(), want_db, bound_db, 1e-6);
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_linear_layers_match_the_cpu() {
    let dev = gpu_common::device();
    let blas = Cublas::new(&dev).unwrap();
    let mut rng = Rng::new(5);
    // The ResNet classifier at T * B = 3200 rows, odd sizes, no bias, one row, and no rows
    // (the weight and bias gradients are then zero, written over the poison).
    check_linear(&dev, &blas, &Linear::new(512, 10), 3200, &mut rng);
    check_linear(&dev, &blas, &Linear::new(2048, 10), 6, &mut rng);
    check_linear(&dev, &blas, &Linear::new(37, 13), 5, &mut rng);
    let no_bias = Linear {
        bias: false,
        ..Linear::new(64, 33)
    };
    check_linear(&dev, &blas, &no_bias, 7, &mut rng);
    check_linear(&dev, &blas, &Linear::new(9, 4), 1, &mut rng);
    check_linear(&dev, &blas, &Linear::new(9, 4), 0, &mut rng);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_linear_layers_reject_bad_tensors() {
    let dev = gpu_common::device();
    let blas = Cublas::new(&dev).unwrap();
    let err = |r: Result<(), RuntimeError>| match r {
        Err(e @ (RuntimeError::Tensor { .. } | RuntimeError::Invalid { .. })) => e.to_string(),
        Err(e @ RuntimeError::Overlap { .. }) => e.to_string(),
        other => panic!("expected an argument error, got {other:?}"),
    };
    let linear = Linear::new(6, 3);
    let zeros = |shape: &[usize]| DeviceTensor::zeros(&dev, Dtype::F32, shape).unwrap();
    let (x, w, b, y) = (zeros(&[4, 6]), zeros(&[3, 6]), zeros(&[3]), zeros(&[4, 3]));
    let fwd = |x: &DeviceTensor, w: &DeviceTensor, b: Option<&DeviceTensor>, y: &DeviceTensor| {
        gpu_linear::linear_forward(&blas, &linear, 4, x, w, b, y)
    };
    fwd(&x, &w, Some(&b), &y).unwrap();
    let msg = err(fwd(&zeros(&[4, 5]), &w, Some(&b), &y));
    assert!(
        msg.contains("`x` must be f32 with 24 values") && msg.contains("[4, 5]"),
        "{msg}"
    );
    let msg = err(fwd(&x, &zeros(&[6, 3, 1]), Some(&b), &zeros(&[4, 6])));
    assert!(msg.contains("`y` must be f32 with 12 values"), "{msg}");
    let msg = err(fwd(&x, &w, None, &y));
    assert!(msg.contains("has a bias, so `bias` must be given"), "{msg}");
    let bf16 = DeviceTensor::zeros(&dev, Dtype::BF16, &[3]).unwrap();
    let msg = err(fwd(&x, &w, Some(&bf16), &y));
    assert!(msg.contains("`bias` must be f32"), "{msg}");
    let (dw, db) = (zeros(&[3, 6]), zeros(&[3]));
    let msg = err(gpu_linear::linear_backward(
        &blas,
        &linear,
        4,
        &x,
        &w,
        &y,
        Some(&zeros(&[4, 7])),
        &dw,
        Some(&db),
    ));
    assert!(msg.contains("`dx` must be f32 with 24 values"), "{msg}");
    let msg = err(gpu_linear::linear_backward(
        &blas, &linear, 4, &x, &w, &y, None, &dw, None,
    ));
    assert!(msg.contains("`dbias` must be given"), "{msg}");
}

/// The tiny maps' matrix products repeat bit for bit: twice on one handle, and on another
/// handle (another model's), in every math, at a test's batch and a training step's.
#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_tiny_map_products_repeat_bit_for_bit() {
    let (dev, first) = cudnn();
    let second = Cudnn::new(&dev).unwrap();
    let bits = |t: &DeviceTensor| -> Vec<u32> {
        t.to_f32().unwrap().iter().map(|v| v.to_bits()).collect()
    };
    for (name, conv, input) in resnet_problems()
        .into_iter()
        .filter(|(_, c, i)| tiny(c, *i))
    {
        for math in [ConvMath::F32, ConvMath::Tf32, ConvMath::Bf16] {
            for images in [24, 3200] {
                let dtype = math.dtype();
                let runs: Vec<Vec<Vec<u32>>> = [&first, &first, &second]
                    .iter()
                    .map(|cudnn| {
                        let gpu = ConvGpu::new(cudnn, &conv, input, images, math).unwrap();
                        let shapes = *gpu.shapes();
                        // The same data for every run.
                        let d = ConvData::new(&conv, &shapes, dtype, &mut Rng::new(9));
                        let x = upload_as(&dev, dtype, &shapes.input, &d.x);
                        let w = upload_as(&dev, dtype, &shapes.weight, &d.w);
                        let dy = upload_as(&dev, dtype, &shapes.output, &d.dy);
                        let y = poisoned_as(&dev, dtype, &shapes.output);
                        let dx = poisoned_as(&dev, dtype, &shapes.input);
                        let dw = poisoned_as(&dev, dtype, &shapes.weight);
                        gpu.forward(&x, &w, None, &y).unwrap();
                        gpu.backward_data(&dy, &w, &dx).unwrap();
                        gpu.backward_filter(&x, &dy, &dw, None).unwrap();
                        vec![bits(&y), bits(&dx), bits(&dw)]
                    })
                    .collect();
                for (k, pass) in ["forward", "backward-data", "backward-filter"]
                    .iter()
                    .enumerate()
                {
                    let what = format!("{name}, {math:?}, {images} images, {pass}");
                    assert!(runs[0][k] == runs[1][k], "{what}: differs on one handle");
                    assert!(
                        runs[0][k] == runs[2][k],
                        "{what}: differs on another handle"
                    );
                }
            }
        }
    }
}
