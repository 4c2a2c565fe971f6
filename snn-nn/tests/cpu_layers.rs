//! The CPU reference layers against literal naive implementations, hand-computed examples
//! and finite differences, all in f64.

mod common;

use common::{SplitMix64, assert_close, check_gradient, project};
use snn_nn::cpu::{
    BatchNormGrads, BatchStats, Running, WeightGrads, batchnorm_backward, batchnorm_forward,
    conv2d_backward, conv2d_forward, global_avgpool_backward, global_avgpool_forward,
    linear_backward, linear_forward, maxpool2d_backward, maxpool2d_forward,
};
use snn_nn::{BatchNorm2d, Conv2d, ImageShape, Linear, MaxPool2d, NnError};

// ---------------------------------------------------------------- convolution

/// A convolution, the shape of its input images and how many there are.
type ConvCase = (Conv2d, ImageShape, usize);

/// The convolutions the ResNets use, plus edge cases of the window arithmetic.
fn conv_cases() -> Vec<ConvCase> {
    vec![
        // 3x3, stride 1, padding 1, with bias.
        (
            Conv2d::new(3, 4, 3, 1, 1).with_bias(),
            ImageShape::new(3, 5, 6),
            2,
        ),
        // The ResNet stem: 7x7, stride 2, padding 3.
        (Conv2d::new(3, 4, 7, 2, 3), ImageShape::new(3, 11, 10), 2),
        // A 1x1 stride-2 downsample on odd extents.
        (Conv2d::new(4, 6, 1, 2, 0), ImageShape::new(4, 7, 6), 2),
        // A pointwise 1x1 stride-1 convolution with bias (the no-unfold path).
        (
            Conv2d::new(3, 5, 1, 1, 0).with_bias(),
            ImageShape::new(3, 4, 5),
            3,
        ),
        // A 3x3 stride-2 downsample.
        (Conv2d::new(2, 3, 3, 2, 1), ImageShape::new(2, 6, 7), 2),
        // A window wider than the image, stride larger than the overlap.
        (Conv2d::new(2, 2, 5, 3, 2), ImageShape::new(2, 3, 4), 2),
        // Large planes: 28x28 outputs take 5 images per matrix product, so 7 images make
        // a full block and a partial one.
        (
            Conv2d::new(1, 2, 3, 1, 1).with_bias(),
            ImageShape::new(1, 28, 28),
            7,
        ),
        // A single pixel under a padded 3x3 window.
        (
            Conv2d::new(1, 2, 3, 1, 1).with_bias(),
            ImageShape::new(1, 1, 1),
            2,
        ),
    ]
}

/// A direct 7-loop convolution with zero padding.
fn naive_conv(case: &ConvCase, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let (conv, input, images) = *case;
    let out = conv.output(input).expect("valid case");
    let (k, s, p) = (conv.kernel, conv.stride, conv.padding);
    let (ci, co) = (conv.in_channels, conv.out_channels);
    let (h, wd) = (input.height, input.width);
    let mut y = vec![0.0; images * out.len()];
    for n in 0..images {
        for o in 0..co {
            for oy in 0..out.height {
                for ox in 0..out.width {
                    let mut acc = b.map_or(0.0, |b| b[o]);
                    for c in 0..ci {
                        for ki in 0..k {
                            for kj in 0..k {
                                let iy = (oy * s + ki) as isize - p as isize;
                                let ix = (ox * s + kj) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let (iy, ix) = (iy as usize, ix as usize);
                                acc += x[((n * ci + c) * h + iy) * wd + ix]
                                    * w[((o * ci + c) * k + ki) * k + kj];
                            }
                        }
                    }
                    y[((n * co + o) * out.height + oy) * out.width + ox] = acc;
                }
            }
        }
    }
    y
}

/// Random `x`, `weight` and `bias` (when the layer has one) for a case.
fn conv_inputs(case: &ConvCase, rng: &mut SplitMix64) -> (Vec<f64>, Vec<f64>, Option<Vec<f64>>) {
    let (conv, input, images) = *case;
    let x = rng.vec(images * input.len(), -1.0, 1.0);
    let w = rng.vec(conv.weight_shape().iter().product(), -1.0, 1.0);
    let b = conv.bias.then(|| rng.vec(conv.out_channels, -1.0, 1.0));
    (x, w, b)
}

fn conv_forward(case: &ConvCase, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let (conv, input, images) = *case;
    let out = conv.output(input).expect("valid case");
    // NaN first: a forward that accumulated into `y` instead of overwriting it shows.
    let mut y = vec![f64::NAN; images * out.len()];
    conv2d_forward(&conv, input, images, x, w, b, &mut y).expect("valid shapes");
    y
}

#[test]
fn conv_forward_matches_a_direct_convolution() {
    let mut rng = SplitMix64::new(1);
    for case in conv_cases() {
        let (x, w, b) = conv_inputs(&case, &mut rng);
        let y = conv_forward(&case, &x, &w, b.as_deref());
        let expected = naive_conv(&case, &x, &w, b.as_deref());
        assert_close(&format!("{:?} on {}", case.0, case.1), &y, &expected, 1e-12);
    }
}

#[test]
fn conv_backward_matches_finite_differences() {
    let mut rng = SplitMix64::new(2);
    for case in conv_cases() {
        let (conv, input, images) = case;
        let (x, w, b) = conv_inputs(&case, &mut rng);
        let out = conv.output(input).expect("valid case");
        let r = rng.vec(images * out.len(), -1.0, 1.0);

        let name = format!("{conv:?} on {input}");
        let (dw, db) = check_weight_grads(
            &name,
            (&x, &w, b.as_deref()),
            &r,
            &mut rng,
            |grads| conv2d_backward(&conv, input, images, &x, &w, &r, grads),
            |x, w, b| conv_forward(&case, x, w, b),
        );

        // Without the input gradient, the parameter gradients are the same.
        let mut dw2 = vec![f64::NAN; w.len()];
        let mut db2 = b.as_ref().map(|b| vec![f64::NAN; b.len()]);
        let grads = WeightGrads {
            input: None,
            weight: &mut dw2,
            bias: db2.as_deref_mut(),
        };
        conv2d_backward(&conv, input, images, &x, &w, &r, grads).expect("valid shapes");
        assert_eq!(dw2, dw, "{name}: dw without dx");
        assert_eq!(db2, db, "{name}: db without dx");
    }
}

// ---------------------------------------------------------------- batch-norm

fn bn_train(
    bn: &BatchNorm2d,
    input: ImageShape,
    images: usize,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
) -> (Vec<f64>, BatchStats<f64>) {
    let mut rm = vec![0.0; bn.channels];
    let mut rv = vec![1.0; bn.channels];
    let mut y = vec![f64::NAN; x.len()];
    let running = Running::Update {
        mean: &mut rm,
        var: &mut rv,
    };
    let stats = batchnorm_forward(bn, input, images, x, (gamma, beta), running, &mut y)
        .expect("valid shapes")
        .expect("training returns the batch statistics");
    (y, stats)
}

#[test]
fn batchnorm_train_statistics_and_running_updates_by_hand() {
    let bn = BatchNorm2d {
        channels: 2,
        eps: 0.0,
        momentum: 0.1,
    };
    let input = ImageShape::new(2, 1, 2);
    // Channel 0 holds 1, 2, 3, 6: mean 3, squared deviations 4 + 1 + 0 + 9 = 14.
    // Channel 1 holds 0, 0, 4, -4: mean 0, squared deviations 0 + 0 + 16 + 16 = 32.
    let x = [1.0, 2.0, 0.0, 0.0, 3.0, 6.0, 4.0, -4.0];
    let (gamma, beta) = ([2.0, 0.5], [1.0, -1.0]);
    let mut rm = [0.5, -1.0];
    let mut rv = [2.0, 1.0];
    let mut y = [f64::NAN; 8];
    let running = Running::Update {
        mean: &mut rm,
        var: &mut rv,
    };
    let stats = batchnorm_forward(&bn, input, 2, &x, (&gamma, &beta), running, &mut y)
        .expect("valid shapes")
        .expect("training returns the batch statistics");

    // n = 4: biased variances 14/4 and 32/4, unbiased 14/3 and 32/3.
    let (s0, s1) = (1.0 / 3.5f64.sqrt(), 1.0 / 8.0f64.sqrt());
    assert_close("mean", &stats.mean, &[3.0, 0.0], 1e-15);
    assert_close("inv_std", &stats.inv_std, &[s0, s1], 1e-15);
    assert_close(
        "running_mean",
        &rm,
        &[0.9 * 0.5 + 0.1 * 3.0, -0.9 + 0.1 * 0.0],
        1e-15,
    );
    assert_close(
        "running_var",
        &rv,
        &[0.9 * 2.0 + 0.1 * 14.0 / 3.0, 0.9 * 1.0 + 0.1 * 32.0 / 3.0],
        1e-15,
    );
    let norm0 = |v: f64| 2.0 * (v - 3.0) * s0 + 1.0;
    let norm1 = |v: f64| 0.5 * v * s1 - 1.0;
    let expected = [
        norm0(1.0),
        norm0(2.0),
        norm1(0.0),
        norm1(0.0),
        norm0(3.0),
        norm0(6.0),
        norm1(4.0),
        norm1(-4.0),
    ];
    assert_close("y", &y, &expected, 1e-15);
}

#[test]
fn batchnorm_train_output_has_zero_mean_and_unit_variance() {
    let mut rng = SplitMix64::new(3);
    let bn = BatchNorm2d::new(3);
    let (input, images) = (ImageShape::new(3, 4, 5), 6);
    // A large common offset: a one-pass E[x^2] - E[x]^2 would lose digits here.
    let x: Vec<f64> = rng
        .vec(images * input.len(), -2.0, 2.0)
        .into_iter()
        .map(|v| v + 1e4)
        .collect();
    let (y, stats) = bn_train(&bn, input, images, &x, &[1.0; 3], &[0.0; 3]);
    let plane = input.plane();
    let n = (images * plane) as f64;
    for c in 0..3 {
        let values: Vec<f64> = (0..images)
            .flat_map(|i| {
                y[(i * 3 + c) * plane..(i * 3 + c + 1) * plane]
                    .iter()
                    .copied()
            })
            .collect();
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        // The normalised variance is var / (var + eps), just under 1.
        let inv_std = stats.inv_std[c];
        let batch_var = 1.0 / (inv_std * inv_std) - bn.eps;
        assert!(mean.abs() < 1e-10, "channel {c}: mean {mean:e}");
        assert!(
            (var - batch_var / (batch_var + bn.eps)).abs() < 1e-9,
            "channel {c}: variance {var}"
        );
        assert!((var - 1.0).abs() < 1e-4, "channel {c}: variance {var}");
    }
}

#[test]
fn batchnorm_eval_uses_the_running_statistics() {
    let mut rng = SplitMix64::new(4);
    let bn = BatchNorm2d::new(2);
    let (input, images) = (ImageShape::new(2, 3, 2), 3);
    let x = rng.vec(images * input.len(), -1.0, 3.0);
    let (gamma, beta) = ([1.5, -0.5], [0.25, 2.0]);
    let (rm, rv) = ([0.3, -0.7], [1.7, 0.4]);
    let mut y = vec![f64::NAN; x.len()];
    let running = Running::Use {
        mean: &rm,
        var: &rv,
    };
    let stats = batchnorm_forward(&bn, input, images, &x, (&gamma, &beta), running, &mut y)
        .expect("valid shapes");
    assert!(stats.is_none(), "eval keeps no batch statistics");
    let plane = input.plane();
    let expected: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / plane) % 2;
            (v - rm[c]) / (rv[c] + bn.eps).sqrt() * gamma[c] + beta[c]
        })
        .collect();
    assert_close("eval y", &y, &expected, 1e-14);

    // Training mode on the same input normalises with the batch instead.
    let (train_y, _) = bn_train(&bn, input, images, &x, &gamma, &beta);
    assert!(
        train_y.iter().zip(&y).any(|(a, b)| (a - b).abs() > 1e-3),
        "train and eval outputs should differ"
    );
}

#[test]
fn batchnorm_backward_matches_finite_differences() {
    let mut rng = SplitMix64::new(5);
    let bn = BatchNorm2d::new(3);
    for (input, images) in [(ImageShape::new(3, 3, 4), 2), (ImageShape::features(3), 5)] {
        let x = rng.vec(images * input.len(), -2.0, 2.0);
        let gamma = rng.vec(3, 0.5, 1.5);
        let beta = rng.vec(3, -0.5, 0.5);
        let r = rng.vec(x.len(), -1.0, 1.0);
        let (_, stats) = bn_train(&bn, input, images, &x, &gamma, &beta);

        let mut dx = vec![f64::NAN; x.len()];
        let (mut dgamma, mut dbeta) = (vec![f64::NAN; 3], vec![f64::NAN; 3]);
        let grads = BatchNormGrads {
            input: &mut dx,
            gamma: &mut dgamma,
            beta: &mut dbeta,
        };
        batchnorm_backward(&bn, input, images, &x, &gamma, &stats, &r, grads)
            .expect("valid shapes");

        let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| {
            project(&r, &bn_train(&bn, input, images, x, gamma, beta).0)
        };
        check_gradient(&format!("bn {input} dx"), &x, &dx, &mut rng, |x| {
            loss(x, &gamma, &beta)
        });
        check_gradient(
            &format!("bn {input} dgamma"),
            &gamma,
            &dgamma,
            &mut rng,
            |g| loss(&x, g, &beta),
        );
        check_gradient(&format!("bn {input} dbeta"), &beta, &dbeta, &mut rng, |b| {
            loss(&x, &gamma, b)
        });
    }
}

// ---------------------------------------------------------------- pooling

#[test]
fn maxpool_3x3_stride_2_padding_1_by_hand() {
    let pool = MaxPool2d::new(3, 2, 1);
    let input = ImageShape::new(1, 4, 4);
    #[rustfmt::skip]
    let x = [
        1.0, 5.0, 2.0, 0.0,
        3.0, 5.0, 4.0, 1.0,
        0.0, 2.0, 9.0, 9.0,
        7.0, 1.0, 9.0, 6.0,
    ];
    let mut y = [f64::NAN; 4];
    let mut argmax = [u32::MAX; 4];
    maxpool2d_forward(&pool, input, 1, &x, &mut y, &mut argmax).expect("valid shapes");
    // Windows (rows x cols): 0..2 x 0..2, 0..2 x 1..4, 1..4 x 0..2, 1..4 x 1..4. The 5s
    // tie at 1 and 5, the 9s at 10, 11 and 14: the first in row-major order wins.
    assert_eq!(y, [5.0, 5.0, 7.0, 9.0]);
    assert_eq!(argmax, [1, 1, 12, 10]);

    // Both top windows took input 1: its gradient is the sum.
    let mut dx = [f64::NAN; 16];
    maxpool2d_backward(&pool, input, 1, &argmax, &[1.0, 2.0, 3.0, 4.0], &mut dx)
        .expect("valid shapes");
    let mut expected = [0.0; 16];
    expected[1] = 3.0;
    expected[12] = 3.0;
    expected[10] = 4.0;
    assert_eq!(dx, expected);
}

#[test]
fn maxpool_nan_and_negative_infinity_as_pytorch() {
    let pool = MaxPool2d::new(2, 2, 0);
    let input = ImageShape::new(2, 2, 2);
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    // Channel 0: NaN counts as a maximum and a later NaN replaces it (PyTorch's
    // `val > max || isnan(val)`). Channel 1: all -inf keeps the first index.
    let x = [nan, 1.0, nan, 0.0, -inf, -inf, -inf, -inf];
    let mut y = [0.0; 2];
    let mut argmax = [u32::MAX; 2];
    maxpool2d_forward(&pool, input, 1, &x, &mut y, &mut argmax).expect("valid shapes");
    assert!(y[0].is_nan());
    assert_eq!(y[1], -inf);
    assert_eq!(argmax, [2, 0]);
}

#[test]
fn maxpool_backward_matches_finite_differences() {
    let mut rng = SplitMix64::new(6);
    for (pool, input, images) in [
        (MaxPool2d::new(3, 2, 1), ImageShape::new(2, 7, 6), 2),
        (MaxPool2d::new(2, 2, 0), ImageShape::new(3, 4, 5), 2),
        (MaxPool2d::new(3, 1, 1), ImageShape::new(1, 4, 4), 3),
    ] {
        let out = pool.output(input).expect("valid case");
        // Distinct values 0.05 apart, so no perturbation changes which input wins.
        let n = images * input.len();
        let x: Vec<f64> = rng
            .permutation(n)
            .into_iter()
            .map(|p| p as f64 * 0.05 - 1.0)
            .collect();
        let r = rng.vec(images * out.len(), -1.0, 1.0);
        let forward = |x: &[f64]| {
            let mut y = vec![f64::NAN; r.len()];
            let mut argmax = vec![u32::MAX; r.len()];
            maxpool2d_forward(&pool, input, images, x, &mut y, &mut argmax).expect("valid shapes");
            (y, argmax)
        };
        let (_, argmax) = forward(&x);
        let mut dx = vec![f64::NAN; n];
        maxpool2d_backward(&pool, input, images, &argmax, &r, &mut dx).expect("valid shapes");
        check_gradient(&format!("{pool:?} on {input}"), &x, &dx, &mut rng, |x| {
            project(&r, &forward(x).0)
        });
    }
}

#[test]
fn global_avgpool_by_hand_and_by_finite_differences() {
    let input = ImageShape::new(2, 2, 2);
    let x = [1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 0.0, 5.0];
    let mut y = [f64::NAN; 2];
    global_avgpool_forward(input, 1, &x, &mut y).expect("valid shapes");
    assert_eq!(y, [2.5, 1.0]);
    let mut dx = [f64::NAN; 8];
    global_avgpool_backward(input, 1, &[4.0, -2.0], &mut dx).expect("valid shapes");
    assert_eq!(dx, [1.0, 1.0, 1.0, 1.0, -0.5, -0.5, -0.5, -0.5]);

    let mut rng = SplitMix64::new(7);
    let (input, images) = (ImageShape::new(3, 3, 5), 2);
    let x = rng.vec(images * input.len(), -1.0, 1.0);
    let r = rng.vec(images * 3, -1.0, 1.0);
    let mut dx = vec![f64::NAN; x.len()];
    global_avgpool_backward(input, images, &r, &mut dx).expect("valid shapes");
    check_gradient("global avgpool dx", &x, &dx, &mut rng, |x| {
        let mut y = vec![f64::NAN; r.len()];
        global_avgpool_forward(input, images, x, &mut y).expect("valid shapes");
        project(&r, &y)
    });
}

// ---------------------------------------------------------------- linear

fn naive_linear(linear: &Linear, rows: usize, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let (fi, fo) = (linear.in_features, linear.out_features);
    let mut y = vec![0.0; rows * fo];
    for r in 0..rows {
        for o in 0..fo {
            let mut acc = b.map_or(0.0, |b| b[o]);
            for i in 0..fi {
                acc += x[r * fi + i] * w[o * fi + i];
            }
            y[r * fo + o] = acc;
        }
    }
    y
}

fn linear_forward_vec(
    linear: &Linear,
    rows: usize,
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
) -> Vec<f64> {
    let mut y = vec![f64::NAN; rows * linear.out_features];
    linear_forward(linear, rows, x, w, b, &mut y).expect("valid shapes");
    y
}

#[test]
fn linear_forward_and_backward() {
    let mut rng = SplitMix64::new(8);
    let no_bias = Linear {
        bias: false,
        ..Linear::new(7, 2)
    };
    for (linear, rows) in [(Linear::new(5, 3), 4), (no_bias, 3)] {
        let x = rng.vec(rows * linear.in_features, -1.0, 1.0);
        let w = rng.vec(linear.out_features * linear.in_features, -1.0, 1.0);
        let b = linear.bias.then(|| rng.vec(linear.out_features, -1.0, 1.0));
        let bias = b.as_deref();
        let y = linear_forward_vec(&linear, rows, &x, &w, bias);
        assert_close(
            &format!("{linear:?}"),
            &y,
            &naive_linear(&linear, rows, &x, &w, bias),
            1e-13,
        );

        let r = rng.vec(y.len(), -1.0, 1.0);
        check_weight_grads(
            &format!("{linear:?}"),
            (&x, &w, bias),
            &r,
            &mut rng,
            |grads| linear_backward(&linear, rows, &x, &w, &r, grads),
            |x, w, b| linear_forward_vec(&linear, rows, x, w, b),
        );
    }
}

/// Runs a layer's `backward` from `dL/dy = r` into NaN-poisoned gradient buffers, checks
/// `dx`, `dw` and `db` (when the layer has a bias) against finite differences of `forward`,
/// and returns `dw` and `db`.
fn check_weight_grads(
    name: &str,
    (x, w, b): (&[f64], &[f64], Option<&[f64]>),
    r: &[f64],
    rng: &mut SplitMix64,
    backward: impl FnOnce(WeightGrads<'_, f64>) -> Result<(), NnError>,
    forward: impl Fn(&[f64], &[f64], Option<&[f64]>) -> Vec<f64>,
) -> (Vec<f64>, Option<Vec<f64>>) {
    let mut dx = vec![f64::NAN; x.len()];
    let mut dw = vec![f64::NAN; w.len()];
    let mut db = b.map(|b| vec![f64::NAN; b.len()]);
    let grads = WeightGrads {
        input: Some(&mut dx),
        weight: &mut dw,
        bias: db.as_deref_mut(),
    };
    backward(grads).expect("valid shapes");
    check_gradient(&format!("{name} dx"), x, &dx, rng, |x| {
        project(r, &forward(x, w, b))
    });
    check_gradient(&format!("{name} dw"), w, &dw, rng, |w| {
        project(r, &forward(x, w, b))
    });
    if let (Some(b), Some(db)) = (b, &db) {
        check_gradient(&format!("{name} db"), b, db, rng, |b| {
            project(r, &forward(x, w, Some(b)))
        });
    }
    (dw, db)
}

// ---------------------------------------------------------------- f32

#[test]
fn f32_layers_agree_with_f64() {
    let mut rng = SplitMix64::new(9);
    let case = (
        Conv2d::new(3, 4, 3, 2, 1).with_bias(),
        ImageShape::new(3, 6, 6),
        2,
    );
    let (conv, input, images) = case;
    let (x, w, b) = conv_inputs(&case, &mut rng);
    let b = b.expect("the layer has a bias");
    let expected = conv_forward(&case, &x, &w, Some(&b));
    let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    let mut y = vec![f32::NAN; expected.len()];
    conv2d_forward(
        &conv,
        input,
        images,
        &f32s(&x),
        &f32s(&w),
        Some(&f32s(&b)),
        &mut y,
    )
    .expect("valid shapes");
    let y: Vec<f64> = y.into_iter().map(f64::from).collect();
    assert_close("f32 conv", &y, &expected, 1e-5);

    let bn = BatchNorm2d::new(4);
    let out = conv.output(input).expect("valid case");
    let (gamma, beta) = ([1.0, 2.0, 0.5, 1.5], [0.0, 0.1, -0.1, 0.2]);
    let (expected_bn, _) = bn_train(&bn, out, images, &expected, &gamma, &beta);
    let (mut rm, mut rv) = ([0.0f32; 4], [1.0f32; 4]);
    let mut y_bn = vec![f32::NAN; expected.len()];
    let y32: Vec<f32> = f32s(&expected);
    let running = Running::Update {
        mean: &mut rm,
        var: &mut rv,
    };
    let affine = (&f32s(&gamma)[..], &f32s(&beta)[..]);
    batchnorm_forward(&bn, out, images, &y32, affine, running, &mut y_bn).expect("valid shapes");
    let y_bn: Vec<f64> = y_bn.into_iter().map(f64::from).collect();
    assert_close("f32 batch-norm", &y_bn, &expected_bn, 1e-5);
}

// ---------------------------------------------------------------- errors

fn shape_error(result: Result<impl std::fmt::Debug, NnError>, needles: &[&str]) {
    match result {
        Err(NnError::Shape(msg)) => {
            for needle in needles {
                assert!(msg.contains(needle), "`{msg}` should mention `{needle}`");
            }
        }
        other => panic!("expected a shape error mentioning {needles:?}, got {other:?}"),
    }
}

#[test]
fn bad_inputs_are_errors_that_name_the_problem() {
    let conv = Conv2d::new(2, 3, 3, 1, 1);
    let input = ImageShape::new(2, 4, 4);
    let (x, w) = (vec![0.0; 2 * 32], vec![0.0; 3 * 2 * 9]);
    let mut y = vec![0.0; 2 * 48];

    shape_error(
        conv2d_forward(&conv, input, 2, &x[1..], &w, None, &mut y),
        &["conv2d_forward", "`x`", "63", "expected 64", "[2, 4, 4]"],
    );
    shape_error(
        conv2d_forward(&conv, input, 2, &x, &w[1..], None, &mut y),
        &["`weight`", "[3, 2, 3, 3]"],
    );
    shape_error(
        conv2d_forward(&conv, input, 2, &x, &w, Some(&[0.0; 3]), &mut y),
        &["`bias` was given", "no bias"],
    );
    shape_error(
        conv2d_forward(&conv.with_bias(), input, 2, &x, &w, None, &mut y),
        &["has a bias", "`bias`"],
    );
    shape_error(
        conv2d_forward(&conv, ImageShape::new(3, 4, 4), 2, &x, &w, None, &mut y),
        &["input channels"],
    );
    shape_error(
        conv2d_forward(&Conv2d::new(2, 3, 7, 1, 1), input, 2, &x, &w, None, &mut y),
        &["does not fit"],
    );
    let mut dw = vec![0.0; w.len()];
    let mut db = [0.0; 3];
    let grads = WeightGrads {
        input: None,
        weight: &mut dw,
        bias: Some(&mut db),
    };
    shape_error(
        conv2d_backward(&conv, input, 2, &x, &w, &y, grads),
        &["`grads.bias`", "no bias"],
    );

    let mut argmax = vec![0u32; 4];
    // One `side` x `side` image into a 2x2 output.
    let pool_forward = |pool: &MaxPool2d, side: usize, argmax: &mut [u32]| {
        let x = vec![0.0; side * side];
        let input = ImageShape::new(1, side, side);
        maxpool2d_forward(pool, input, 1, &x, &mut [0.0; 4], argmax)
    };
    shape_error(
        pool_forward(&MaxPool2d::new(5, 1, 0), 3, &mut argmax),
        &["max-pool", "does not fit"],
    );
    let pool = MaxPool2d::new(2, 2, 0);
    shape_error(
        pool_forward(&pool, 4, &mut argmax[..3]),
        &["`argmax`", "expected 4"],
    );
    shape_error(
        maxpool2d_backward(
            &pool,
            ImageShape::new(1, 4, 4),
            1,
            &[0, 1, 2, 16],
            &[0.0; 4],
            &mut [0.0; 16],
        ),
        &["argmax[3] = 16", "outside"],
    );

    let bn = BatchNorm2d::new(2);
    let (mut rm, mut rv) = ([0.0; 2], [1.0; 2]);
    let mut train = |input, images, x: &[f64], gamma: &[f64], y: &mut [f64]| {
        let running = Running::Update {
            mean: &mut rm,
            var: &mut rv,
        };
        batchnorm_forward(&bn, input, images, x, (gamma, &[0.0; 2]), running, y)
    };
    shape_error(
        train(input, 2, &x, &[1.0; 3], &mut [0.0; 64]),
        &["`gamma`", "expected 2", "one per channel"],
    );
    shape_error(
        train(
            ImageShape::new(2, 1, 1),
            1,
            &[1.0, 2.0],
            &[1.0; 2],
            &mut [0.0; 2],
        ),
        &["more than one value per channel"],
    );

    let linear = Linear::new(4, 3);
    shape_error(
        linear_forward(
            &linear,
            2,
            &[0.0; 8],
            &[0.0; 11],
            Some(&[0.0; 3]),
            &mut [0.0; 6],
        ),
        &["linear_forward", "`weight`", "[3, 4]"],
    );
    shape_error(
        linear_forward(&linear, 2, &[0.0; 8], &[0.0; 12], None, &mut [0.0; 6]),
        &["has a bias"],
    );
    shape_error(
        global_avgpool_forward(ImageShape::new(2, 2, 2), 1, &[0.0; 8], &mut [0.0; 3]),
        &["`y`", "expected 2"],
    );
}
