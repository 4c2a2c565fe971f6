//! Batch normalisation, as `torch.nn.BatchNorm2d(affine=True, track_running_stats=True)`.
//!
//! Per-channel sums run in `f64` whatever `T` is, and the variance is taken in a second
//! pass around the mean, so the statistics stay accurate for large `f32` batches with a
//! large mean.

use crate::cpu::conv::{check_images, check_len};
use crate::error::NnError;
use crate::float::Float;
use crate::layers::{BatchNorm2d, ImageShape};

/// The batch statistics of a training forward pass, per channel, that the backward needs.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats<T> {
    /// The batch mean.
    pub mean: Vec<T>,
    /// `1 / sqrt(biased batch variance + eps)`.
    pub inv_std: Vec<T>,
}

/// Checks `x` and the per-channel tensors; returns the values per channel (`images * H * W`).
fn check_common(
    op: &str,
    bn: &BatchNorm2d,
    input: ImageShape,
    images: usize,
    x_len: usize,
    per_channel: &[(&str, usize)],
) -> Result<usize, NnError> {
    bn.output(input)
        .map_err(|e| NnError::shape(format!("{op}: {e}")))?;
    check_images(op, "x", x_len, images, input)?;
    for &(arg, len) in per_channel {
        check_len(op, arg, len, bn.channels, "one per channel")?;
    }
    images.checked_mul(input.plane()).ok_or_else(|| {
        NnError::shape(format!(
            "{op}: {images} images of {}x{} values per channel are more than memory can address",
            input.height, input.width
        ))
    })
}

/// [`check_common`] for a forward: `x` and `y`, then gamma, beta and the running mean and
/// variance.
fn check_forward(
    op: &str,
    bn: &BatchNorm2d,
    input: ImageShape,
    images: usize,
    (x_len, y_len): (usize, usize),
    [gamma, beta, mean, var]: [usize; 4],
) -> Result<usize, NnError> {
    let per_channel = [
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", mean),
        ("running_var", var),
    ];
    let n = check_common(op, bn, input, images, x_len, &per_channel)?;
    check_images(op, "y", y_len, images, input)?;
    Ok(n)
}

/// The plane slices of channel `c` in every image of `x`.
fn channel<T>(x: &[T], input: ImageShape, c: usize) -> impl Iterator<Item = &[T]> {
    let plane = input.plane();
    x.chunks_exact(input.len().max(1))
        .map(move |image| &image[c * plane..(c + 1) * plane])
}

/// The same planes, mutably.
fn channel_mut<T>(x: &mut [T], input: ImageShape, c: usize) -> impl Iterator<Item = &mut [T]> {
    let plane = input.plane();
    x.chunks_exact_mut(input.len().max(1))
        .map(move |image| &mut image[c * plane..(c + 1) * plane])
}

/// What a forward does with the running statistics (`[C]` each): PyTorch's `training`.
#[derive(Debug)]
pub enum Running<'a, T> {
    /// Training: normalise with the batch statistics and update these in place.
    Update { mean: &'a mut [T], var: &'a mut [T] },
    /// Eval: normalise with these; they are only read.
    Use { mean: &'a [T], var: &'a [T] },
    /// Recomputation: normalise with the batch statistics that a training forward returned,
    /// exactly as it did; nothing is updated.
    Replay(&'a BatchStats<T>),
}

/// Forward, as `F.batch_norm(x, running_mean, running_var, gamma, beta, training)`, `y`
/// overwritten.
///
/// Training ([`Running::Update`]) normalises each channel with its batch mean and biased
/// variance, applies `gamma` and `beta`, and updates the running statistics with
/// `running = (1 - momentum) * running + momentum * batch`, where the running variance
/// takes the unbiased batch variance (`n / (n - 1)`, `n = images * H * W`), as PyTorch. It
/// returns the batch statistics for [`batchnorm_backward`], and fails when a channel has
/// fewer than two values, as PyTorch does, since the unbiased variance is then undefined.
///
/// Eval ([`Running::Use`]) computes `y = (x - running_mean) / sqrt(running_var + eps) *
/// gamma + beta` and returns `None`.
pub fn batchnorm_forward<T: Float>(
    bn: &BatchNorm2d,
    input: ImageShape,
    images: usize,
    x: &[T],
    (gamma, beta): (&[T], &[T]),
    running: Running<'_, T>,
    y: &mut [T],
) -> Result<Option<BatchStats<T>>, NnError> {
    const OP: &str = "batchnorm_forward";
    let (mean_len, var_len) = match &running {
        Running::Update { mean, var } => (mean.len(), var.len()),
        Running::Use { mean, var } => (mean.len(), var.len()),
        Running::Replay(stats) => (stats.mean.len(), stats.inv_std.len()),
    };
    let lens = [gamma.len(), beta.len(), mean_len, var_len];
    let n = check_forward(OP, bn, input, images, (x.len(), y.len()), lens)?;
    let (running_mean, running_var) = match running {
        Running::Update { mean, var } => (mean, var),
        Running::Use { mean, var } => {
            for c in 0..bn.channels {
                // y = x * scale + shift, as PyTorch's inference kernel folds it.
                let scale = gamma[c].value() / (var[c].value() + bn.eps).sqrt();
                let shift = beta[c].value() - mean[c].value() * scale;
                let (scale, shift) = (T::from_f64(scale), T::from_f64(shift));
                normalize(x, y, input, c, T::from_f64(0.0), scale, shift);
            }
            return Ok(None);
        }
        Running::Replay(stats) => {
            for c in 0..bn.channels {
                normalize(
                    x,
                    y,
                    input,
                    c,
                    stats.mean[c],
                    gamma[c] * stats.inv_std[c],
                    beta[c],
                );
            }
            return Ok(None);
        }
    };
    if n < 2 {
        return Err(NnError::shape(format!(
            "{OP}: training needs more than one value per channel, got {images} images of shape {input} ({n} per channel); use a larger batch or eval mode"
        )));
    }

    let nf = n as f64;
    let m = bn.momentum;
    let mut stats = BatchStats {
        mean: Vec::with_capacity(bn.channels),
        inv_std: Vec::with_capacity(bn.channels),
    };
    for c in 0..bn.channels {
        let sum: f64 = channel(x, input, c)
            .flat_map(|p| p.iter())
            .map(|v| v.value())
            .sum();
        let mean = sum / nf;
        let squares: f64 = channel(x, input, c)
            .flat_map(|p| p.iter())
            .map(|v| (v.value() - mean) * (v.value() - mean))
            .sum();
        let var = squares / nf;
        let inv_std = 1.0 / (var + bn.eps).sqrt();

        let (mean_t, inv_std_t) = (T::from_f64(mean), T::from_f64(inv_std));
        normalize(x, y, input, c, mean_t, gamma[c] * inv_std_t, beta[c]);
        running_mean[c] = T::from_f64((1.0 - m) * running_mean[c].value() + m * mean);
        running_var[c] =
            T::from_f64((1.0 - m) * running_var[c].value() + m * var * nf / (nf - 1.0));
        stats.mean.push(mean_t);
        stats.inv_std.push(inv_std_t);
    }
    Ok(Some(stats))
}

/// Channel `c` of `y` = `(x - mean) * scale + shift`: the training normalisation, which a
/// replay must repeat operation for operation.
fn normalize<T: Float>(
    x: &[T],
    y: &mut [T],
    input: ImageShape,
    c: usize,
    mean: T,
    scale: T,
    shift: T,
) {
    for (yp, xp) in channel_mut(y, input, c).zip(channel(x, input, c)) {
        for (yv, &xv) in yp.iter_mut().zip(xp) {
            *yv = (xv - mean) * scale + shift;
        }
    }
}

/// Where [`batchnorm_backward`] writes its gradients (each overwritten).
#[derive(Debug)]
pub struct BatchNormGrads<'a, T> {
    /// `dL/dx`, like `x`.
    pub input: &'a mut [T],
    /// `dL/dgamma`, one per channel.
    pub gamma: &'a mut [T],
    /// `dL/dbeta`, one per channel.
    pub beta: &'a mut [T],
}

/// The gradients of a training [`batchnorm_forward`] from `dy`, through the batch statistics
/// (`stats` is what that forward returned for this `x`):
/// `dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat))`.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward<T: Float>(
    bn: &BatchNorm2d,
    input: ImageShape,
    images: usize,
    x: &[T],
    gamma: &[T],
    stats: &BatchStats<T>,
    dy: &[T],
    grads: BatchNormGrads<'_, T>,
) -> Result<(), NnError> {
    const OP: &str = "batchnorm_backward";
    let n = check_common(
        OP,
        bn,
        input,
        images,
        x.len(),
        &[
            ("gamma", gamma.len()),
            ("stats.mean", stats.mean.len()),
            ("stats.inv_std", stats.inv_std.len()),
            ("grads.gamma", grads.gamma.len()),
            ("grads.beta", grads.beta.len()),
        ],
    )?;
    check_images(OP, "dy", dy.len(), images, input)?;
    check_images(OP, "grads.input", grads.input.len(), images, input)?;

    let nf = n.max(1) as f64;
    for (c, &g) in gamma.iter().enumerate() {
        let (mean, inv_std) = (stats.mean[c], stats.inv_std[c]);
        let (mut sum_dy, mut sum_dy_xhat) = (0.0f64, 0.0f64);
        for (dyp, xp) in channel(dy, input, c).zip(channel(x, input, c)) {
            for (&d, &v) in dyp.iter().zip(xp) {
                sum_dy += d.value();
                sum_dy_xhat += d.value() * ((v - mean) * inv_std).value();
            }
        }
        grads.beta[c] = T::from_f64(sum_dy);
        grads.gamma[c] = T::from_f64(sum_dy_xhat);

        let scale = g * inv_std;
        let (mean_dy, mean_dy_xhat) = (T::from_f64(sum_dy / nf), T::from_f64(sum_dy_xhat / nf));
        for ((dxp, dyp), xp) in channel_mut(grads.input, input, c)
            .zip(channel(dy, input, c))
            .zip(channel(x, input, c))
        {
            for ((dx, &d), &v) in dxp.iter_mut().zip(dyp).zip(xp) {
                let x_hat = (v - mean) * inv_std;
                *dx = scale * (d - mean_dy - x_hat * mean_dy_xhat);
            }
        }
    }
    Ok(())
}
