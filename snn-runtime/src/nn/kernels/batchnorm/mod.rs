//! Batch normalisation over `(images, H, W)` per channel, as `torch.nn.BatchNorm2d`, on
//! f32 or bf16 activations (statistics, parameters and their gradients always f32). The
//! byte counts below are for f32 activations; bf16 ones halve them.
//!
//! Training forward: one pass over `x` for per-(channel, chunk) mean and M2 (sum of
//! squared deviations), a fixed-order Chan merge of the chunks per channel (which also
//! updates the running statistics), and one pass that reads `x` and writes `y`: 12 bytes
//! per value. Backward: one pass over `x` and `dy` for `sum(dy)` and `sum(dy * (x - mean))`,
//! a fixed-order merge, and one pass that reads `x` and `dy` and writes `dx`: 20 bytes per
//! value. Eval: one pass, 8 bytes per value.
//!
//! # The fused path
//!
//! Where a spiking neuron follows, the neuron kernel applies batch-norm itself, from the raw
//! `x`: `y = scale[c] * (x - mean[c]) + shift[c]` (plus a residual), so the normalised
//! tensor is never written. What remains here, in order:
//! 1. [`batchnorm_statistics`] (training): `mean` and `inv_std` into [`BatchNormSaved`] and
//!    the running statistics updated, by the same passes as a training [`batchnorm_forward`]:
//!    4 bytes per value.
//! 2. [`batchnorm_scale`]: `scale = gamma * inv_std` per channel, from `saved.inv_std` in
//!    training or the running variance in eval (then `mean` is the running mean); `shift`
//!    is `beta`. One tiny kernel over `C`.
//! 3. The fused neuron's forward; its backward yields `g = scale * dL/dy` and per channel
//!    `grad_scale = sum(dL/dy * (x - mean))`, `grad_shift = sum(dL/dy)`.
//! 4. [`batchnorm_backward_fused`]: `dgamma`, `dbeta`, and `g` turned in place into the input
//!    gradient through the batch statistics: one pass reading `x` and `g`, writing `g`,
//!    12 bytes per value, against 20 for [`batchnorm_backward`] (whose sums the neuron's
//!    backward takes over) and no normalised `y` written and read back in the forward.
//!
//! The kernels are `kernels/batchnorm.cu`; its header explains how every pass over `x`
//! splits the work ([`pass::Split`]). Every operation checks all its arguments
//! ([`pass::Batch::check`]) before its first kernel runs.
//!
//! # Synchronised batch-norm
//!
//! Given a [`Communicator`] (`sync`), the training operations compute the statistics of
//! the whole batch over all ranks, as PyTorch's `SyncBatchNorm`: the forward gathers every
//! rank's per-chunk partials and merges them all in one fixed order (the same mean and
//! variance, bit for bit, on every rank; the ranks must split alike: the same batch on the
//! same kind of GPU), and the backward averages the per-channel sums over the ranks before
//! the input gradient reads them. `dgamma` and `dbeta` are then the ranks' mean, which the
//! data-parallel average of gradients leaves as it is. One rank computes exactly what it
//! computes without `sync`.

mod pass;

use std::sync::Arc;

use snn_codegen::Dtype;
use snn_nn::{BatchNorm2d, ImageShape};

use self::pass::{Batch, Operand, check_channels};
use super::{THREADS, twin};
use crate::check::{self, Access};
use crate::device::Device;
use crate::dist::{Communicator, Reduce};
use crate::error::RuntimeError;
use crate::launch::{self, programs};
use crate::tensor::DeviceTensor;

/// Batch statistics that the training forward saves for the backward, per channel: the
/// mean and `inv_std = 1 / sqrt(biased variance + eps)`, f32 `[C]` each.
#[derive(Debug)]
pub struct BatchNormSaved {
    pub mean: DeviceTensor,
    pub inv_std: DeviceTensor,
}

impl BatchNormSaved {
    /// Room for the statistics of `channels` channels.
    pub fn new(device: &Arc<Device>, channels: usize) -> Result<Self, RuntimeError> {
        Ok(Self {
            mean: DeviceTensor::empty(device, Dtype::F32, &[channels])?,
            inv_std: DeviceTensor::empty(device, Dtype::F32, &[channels])?,
        })
    }
}

/// The statistics step of a training forward: checks its tensors (`x`, the statistics'
/// outputs, and the caller's others, `like_x` and `per_channel`), then launches the passes
/// over `x`: per-(channel, chunk) mean and M2, then the fixed-order merge into `saved` and
/// the running statistics. The split depends on `x` alone, so every caller gets the same
/// bits. Returns whether there is anything to normalise (`C > 0`).
fn train_statistics(
    b: &Batch,
    x: &DeviceTensor,
    (like_x, per_channel): (&[Operand], &[Operand]),
    (running_mean, running_var): (&DeviceTensor, &DeviceTensor),
    saved: &BatchNormSaved,
    sync: Option<&Communicator>,
) -> Result<bool, RuntimeError> {
    let per_channel: Vec<Operand> = per_channel
        .iter()
        .chain(&[
            ("running_mean", running_mean, Access::Write),
            ("running_var", running_var, Access::Write),
            ("saved.mean", &saved.mean, Access::Write),
            ("saved.inv_std", &saved.inv_std, Access::Write),
        ])
        .copied()
        .collect();
    let n = b.check(x, like_x, &per_channel)?;
    if n < 2 {
        return Err(b.too_few(n));
    }
    if b.bn.channels == 0 {
        return Ok(false);
    }
    let split = b.split(&[x])?;
    let plane = check::to_i64(b.op, "plane", b.input.plane())?;
    let partial = split.partials(b.device, b.bn.channels)?;
    let kernel = |name| b.device.kernel(&programs::BATCHNORM, name);
    split.run(
        kernel(twin(x.dtype, ["snn_bn_stats", "snn_bn_stats_bf16"]))?
            .arg("x", x)
            .arg("partial", &partial),
    )?;
    // Synchronised: every rank's partials, rank after rank, merged as one batch's.
    let (partial, ranks) = match sync {
        None => (partial, 1),
        Some(comm) => {
            let ranks = comm.world().size;
            let all = DeviceTensor::empty(b.device, Dtype::F32, &[partial.len() * ranks])?;
            comm.all_gather(&partial, &all)?;
            (all, ranks)
        }
    };
    let total = (n * ranks) as f64;
    let unbias = (total / (total - 1.0)) as f32;
    split.merge(
        kernel("snn_bn_finalize")?
            .arg("partial", &partial)
            .arg("mean_out", &saved.mean)
            .arg("inv_std_out", &saved.inv_std)
            .arg("running_mean", running_mean)
            .arg("running_var", running_var)
            .arg("N", split.images)
            .arg("P", plane)
            .arg("ipc", split.per_chunk)
            .arg("ranks", check::to_i32(b.op, "ranks", ranks)?)
            .arg("eps", b.bn.eps as f32)
            .arg("momentum", b.bn.momentum as f32)
            .arg("unbias", unbias),
    )?;
    Ok(true)
}

/// The statistics half of a training [`batchnorm_forward`], for the fused path: the batch mean
/// and `inv_std = 1 / sqrt(biased variance + eps)` into `saved`, and the running statistics
/// updated in place as that function does, bit for bit; `x` is not normalised.
///
/// `x` is `[images, C, H, W]`, the rest `[C]`, all f32. No output may share memory with
/// another argument. Fails when a channel has fewer than two values. With `sync`, the
/// statistics of all ranks' batches (module docs).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_statistics(
    device: &Arc<Device>,
    bn: &BatchNorm2d,
    input: ImageShape,
    images: usize,
    x: &DeviceTensor,
    running_mean: &DeviceTensor,
    running_var: &DeviceTensor,
    saved: &BatchNormSaved,
    sync: Option<&Communicator>,
) -> Result<(), RuntimeError> {
    let b = Batch::new("batchnorm_statistics", device, bn, input, images);
    let running = (running_mean, running_var);
    train_statistics(&b, x, (&[], &[]), running, saved, sync).map(drop)
}

/// A batch-norm layer's per-channel tensors, f32 `[C]` each: the affine `gamma` and
/// `beta`, and the running statistics.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormParams<'a> {
    pub gamma: &'a DeviceTensor,
    pub beta: &'a DeviceTensor,
    pub running_mean: &'a DeviceTensor,
    pub running_var: &'a DeviceTensor,
}

/// Forward, as `F.batch_norm(x, running_mean, running_var, gamma, beta, training)`, `y`
/// overwritten; training when `saved` is given (where the batch statistics go).
///
/// Training normalises each channel with its batch mean and biased variance,
/// `y = gamma * (x - mean) * inv_std + beta`, stores the statistics in `saved`, and updates
/// the running statistics in place, `running = (1 - momentum) * running + momentum *
/// batch`, the variance with the unbiased batch variance (`n / (n - 1)`,
/// `n = images * H * W`). It fails when a channel has fewer than two values (the unbiased
/// variance is then undefined), as PyTorch does. Eval computes
/// `y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta` and only reads the
/// running statistics.
///
/// `x` and `y` are `[images, C, H, W]`, the rest `[C]`, all f32. No output may share memory
/// with another argument. With `sync`, training takes the statistics of all ranks'
/// batches (module docs).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward(
    device: &Arc<Device>,
    bn: &BatchNorm2d,
    input: ImageShape,
    images: usize,
    x: &DeviceTensor,
    params: &BatchNormParams,
    y: &DeviceTensor,
    saved: Option<&BatchNormSaved>,
    sync: Option<&Communicator>,
) -> Result<(), RuntimeError> {
    let b = Batch::new("batchnorm_forward", device, bn, input, images);
    let BatchNormParams {
        gamma,
        beta,
        running_mean: mean,
        running_var: var,
    } = *params;
    let affine = [("gamma", gamma, Access::Read), ("beta", beta, Access::Read)];
    if let Some(saved) = saved {
        let others: (&[Operand], &[Operand]) = (&[("y", y, Access::Write)], &affine);
        if !train_statistics(&b, x, others, (mean, var), saved, sync)? {
            return Ok(());
        }
        return apply(&b, x, y, (gamma, beta), Stats::Saved(saved));
    }
    let running = [
        ("running_mean", mean, Access::Read),
        ("running_var", var, Access::Read),
    ];
    let n = b.check(
        x,
        &[("y", y, Access::Write)],
        &[&affine[..], &running].concat(),
    )?;
    if n == 0 || bn.channels == 0 {
        return Ok(());
    }
    apply(&b, x, y, (gamma, beta), Stats::Running { mean, var })
}

/// A training [`batchnorm_forward`]'s normalisation replayed with the statistics it saved:
/// `y = (x - mean) * (gamma * inv_std) + beta`, bit for bit what it wrote, nothing updated
/// (the backward pass recomputing an activation it did not keep).
///
/// `x` and `y` are `[images, C, H, W]`, the rest `[C]`, all f32. No output may share memory
/// with another argument.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_replay(
    device: &Arc<Device>,
    bn: &BatchNorm2d,
    input: ImageShape,
    images: usize,
    x: &DeviceTensor,
    (gamma, beta): (&DeviceTensor, &DeviceTensor),
    saved: &BatchNormSaved,
    y: &DeviceTensor,
) -> Result<(), RuntimeError> {
    let b = Batch::new("batchnorm_replay", device, bn, input, images);
    let n = b.check(
        x,
        &[("y", y, Access::Write)],
        &[
            ("gamma", gamma, Access::Read),
            ("beta", beta, Access::Read),
            ("mean", &saved.mean, Access::Read),
            ("inv_std", &saved.inv_std, Access::Read),
        ],
    )?;
    if n == 0 || bn.channels == 0 {
        return Ok(());
    }
    apply(&b, x, y, (gamma, beta), Stats::Saved(saved))
}

/// The statistics a forward normalises with.
enum Stats<'a> {
    /// The batch's, in training.
    Saved(&'a BatchNormSaved),
    /// The running ones, in eval.
    Running {
        mean: &'a DeviceTensor,
        var: &'a DeviceTensor,
    },
}

/// `y = (x - mean) * (gamma * inv_std) + beta` (arguments checked by the caller, `C > 0`).
fn apply(
    b: &Batch,
    x: &DeviceTensor,
    y: &DeviceTensor,
    (gamma, beta): (&DeviceTensor, &DeviceTensor),
    stats: Stats,
) -> Result<(), RuntimeError> {
    let (mean, spread, from_var) = match stats {
        Stats::Saved(saved) => (&saved.mean, &saved.inv_std, false),
        Stats::Running { mean, var } => (mean, var, true),
    };
    let split = b.split(&[x, y])?;
    split.run(
        b.device
            .kernel(
                &programs::BATCHNORM,
                twin(x.dtype, ["snn_bn_apply", "snn_bn_apply_bf16"]),
            )?
            .arg("x", x)
            .arg("y", y)
            .arg("mean", mean)
            .arg("spread", spread)
            .arg("gamma", gamma)
            .arg("beta", beta)
            .arg("eps", b.bn.eps as f32)
            .arg("from_var", i32::from(from_var)),
    )
}

/// The fused path's per-channel factor, `scale = gamma * inv_std` (overwritten), where
/// `inv_std = spread` (training: pass `saved.inv_std`) or, when `from_var`,
/// `1 / sqrt(spread + eps)` (eval: pass the running variance). It equals the factor that
/// [`batchnorm_forward`] normalises with in training and eval, bit for bit.
///
/// All three are f32 `[C]`; `scale` may be exactly `gamma` or `spread` (in place) but not
/// overlap them otherwise.
pub fn batchnorm_scale(
    device: &Arc<Device>,
    bn: &BatchNorm2d,
    gamma: &DeviceTensor,
    spread: &DeviceTensor,
    from_var: bool,
    scale: &DeviceTensor,
) -> Result<(), RuntimeError> {
    const OP: &str = "batchnorm_scale";
    let args = [
        ("gamma", gamma, Access::Read),
        ("spread", spread, Access::Read),
        // Each thread reads its channel before writing it.
        ("scale", scale, Access::WriteInPlace),
    ];
    check_channels(OP, bn, &args)?;
    check::memory(OP, device, &args)?;
    if bn.channels == 0 {
        return Ok(());
    }
    let channels = check::to_i32(OP, "channels", bn.channels)?;
    let blocks = check::to_u32(OP, "blocks", bn.channels.div_ceil(THREADS as usize))?;
    device
        .kernel(&programs::BATCHNORM, "snn_bn_scale")?
        .arg("gamma", gamma)
        .arg("spread", spread)
        .arg("scale", scale)
        .arg("eps", bn.eps as f32)
        .arg("from_var", i32::from(from_var))
        .arg("C", i64::from(channels))
        .run(launch::config((blocks, 1), THREADS))
}

/// Backward of a training [`batchnorm_forward`] (`saved` is what it stored for this `x`):
/// `dgamma = sum(dy * x_hat)`, `dbeta = sum(dy)` and
/// `dx = gamma * inv_std * (dy - dbeta / n - x_hat * dgamma / n)`, with
/// `x_hat = (x - mean) * inv_std` and `n = images * H * W`; all three overwritten. No
/// output may share memory with another argument. With `sync` (the forward's statistics
/// those of all ranks), `dgamma` and `dbeta` are the ranks' mean and `dx` takes every
/// rank's part in the statistics (module docs).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    device: &Arc<Device>,
    bn: &BatchNorm2d,
    input: ImageShape,
    images: usize,
    x: &DeviceTensor,
    gamma: &DeviceTensor,
    saved: &BatchNormSaved,
    dy: &DeviceTensor,
    dx: &DeviceTensor,
    dgamma: &DeviceTensor,
    dbeta: &DeviceTensor,
    sync: Option<&Communicator>,
) -> Result<(), RuntimeError> {
    let b = Batch::new("batchnorm_backward", device, bn, input, images);
    let n = b.check(
        x,
        &[("dy", dy, Access::Read), ("dx", dx, Access::Write)],
        &[
            ("gamma", gamma, Access::Read),
            ("saved.mean", &saved.mean, Access::Read),
            ("saved.inv_std", &saved.inv_std, Access::Read),
            ("dgamma", dgamma, Access::Write),
            ("dbeta", dbeta, Access::Write),
        ],
    )?;
    if bn.channels == 0 {
        return Ok(());
    }
    if n == 0 {
        // Sums over no values; `dx` is empty.
        dgamma.clear()?;
        return dbeta.clear();
    }
    let split = b.split(&[x, dy, dx])?;
    let partial = split.partials(device, bn.channels)?;
    let kernel = |name| device.kernel(&programs::BATCHNORM, name);
    split.run(
        kernel(twin(x.dtype, ["snn_bn_grad_sums", "snn_bn_grad_sums_bf16"]))?
            .arg("x", x)
            .arg("dy", dy)
            .arg("mean", &saved.mean)
            .arg("partial", &partial),
    )?;
    split.merge(
        kernel("snn_bn_grad_finalize")?
            .arg("partial", &partial)
            .arg("inv_std", &saved.inv_std)
            .arg("dgamma", dgamma)
            .arg("dbeta", dbeta),
    )?;
    if let Some(comm) = sync {
        // Sums over all ranks' values, over the ranks: with `inv_n` of one rank's, the
        // means over the whole batch.
        comm.all_reduce(dgamma, Reduce::Mean)?;
        comm.all_reduce(dbeta, Reduce::Mean)?;
    }
    let inv_n = (1.0 / n as f64) as f32;
    split.run(
        kernel(twin(
            x.dtype,
            ["snn_bn_grad_input", "snn_bn_grad_input_bf16"],
        ))?
        .arg("x", x)
        .arg("dy", dy)
        .arg("dx", dx)
        .arg("mean", &saved.mean)
        .arg("inv_std", &saved.inv_std)
        .arg("gamma", gamma)
        .arg("dgamma", dgamma)
        .arg("dbeta", dbeta)
        .arg("inv_n", inv_n),
    )
}

/// Backward of the fused path (module docs), after the fused neuron's backward: that wrote
/// per channel `grad_scale = sum(dL/dy * (x - mean))` and `grad_shift = sum(dL/dy)`, and
/// elementwise `g = scale * dL/dy`, the input gradient with the batch statistics held
/// fixed. This writes `dgamma = inv_std * grad_scale` and `dbeta = grad_shift`
/// (overwritten) and turns `g` in place into batch-norm's input gradient,
/// `g += c1 * (x - mean) + c0` with `c1 = -scale * inv_std * dgamma / M`,
/// `c0 = -scale * dbeta / M` and `M = images * H * W`: the same
/// `dx = scale * (dy - mean(dy) - x_hat * mean(dy * x_hat))` as [`batchnorm_backward`].
///
/// `saved` holds the statistics [`batchnorm_statistics`] computed for this `x`, `scale` what
/// [`batchnorm_scale`] computed from them. `x` and `g` are `[images, C, H, W]`, the rest
/// `[C]`, all f32. No output (`g`, `dgamma`, `dbeta`) may share memory with another
/// argument. One pass over `x` and `g`: 12 bytes per value. With `sync` (the forward's
/// statistics those of all ranks), `grad_scale` and `grad_shift` are first averaged over
/// the ranks, in place (module docs).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_fused(
    device: &Arc<Device>,
    bn: &BatchNorm2d,
    input: ImageShape,
    images: usize,
    x: &DeviceTensor,
    saved: &BatchNormSaved,
    scale: &DeviceTensor,
    grad_scale: &DeviceTensor,
    grad_shift: &DeviceTensor,
    g: &DeviceTensor,
    dgamma: &DeviceTensor,
    dbeta: &DeviceTensor,
    sync: Option<&Communicator>,
) -> Result<(), RuntimeError> {
    let b = Batch::new("batchnorm_backward_fused", device, bn, input, images);
    let n = b.check(
        x,
        &[("g", g, Access::Write)],
        &[
            ("saved.mean", &saved.mean, Access::Read),
            ("saved.inv_std", &saved.inv_std, Access::Read),
            ("scale", scale, Access::Read),
            ("grad_scale", grad_scale, Access::Read),
            ("grad_shift", grad_shift, Access::Read),
            ("dgamma", dgamma, Access::Write),
            ("dbeta", dbeta, Access::Write),
        ],
    )?;
    if bn.channels == 0 {
        return Ok(());
    }
    if let Some(comm) = sync {
        comm.all_reduce(grad_scale, Reduce::Mean)?;
        comm.all_reduce(grad_shift, Reduce::Mean)?;
    }
    // With no values `g` is empty and the coefficients unused; 0 keeps them finite.
    let inv_m = if n == 0 { 0.0 } else { (1.0 / n as f64) as f32 };
    // Chunk 0 covers every channel, so `dgamma` and `dbeta` are written in full.
    b.split(&[x, g])?.run(
        device
            .kernel(
                &programs::BATCHNORM,
                twin(x.dtype, ["snn_bn_grad_fused", "snn_bn_grad_fused_bf16"]),
            )?
            .arg("x", x)
            .arg("g", g)
            .arg("mean", &saved.mean)
            .arg("inv_std", &saved.inv_std)
            .arg("scale", scale)
            .arg("grad_scale", grad_scale)
            .arg("grad_shift", grad_shift)
            .arg("dgamma", dgamma)
            .arg("dbeta", dbeta)
            .arg("inv_m", inv_m),
    )
}
