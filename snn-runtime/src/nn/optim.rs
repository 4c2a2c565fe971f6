//! Optimizers on the GPU as fused multi-tensor kernels: all weights of a network live in
//! one flat f32 buffer (their gradients in another of the same layout), so one elementwise
//! launch updates every weight, whatever the number of tensors.
//!
//! The update is [`snn_nn::optim`]'s, operation for operation: the per-step scalars (bias
//! corrections, decoupled decay) come from the same [`Optimizer::scalars`] on the host, and
//! the kernels (`kernels/optim.cu`) are compiled without fused multiply-adds and with
//! correctly rounded division and square root, so a GPU step equals the CPU `f32` step to
//! rounding (in practice bit for bit).
//!
//! Gradient-norm clipping is a deterministic two-pass reduction (per-block partial sums in
//! a grid whose size depends only on the length, then one block summing them in a fixed
//! order, in f64) and a scaling kernel that reads the norm on the device.

use std::sync::Arc;

use cudarc::driver::LaunchConfig;
use snn_codegen::Dtype;
use snn_nn::optim::{Optimizer, StepScalars};

use crate::check;
use crate::device::Device;
use crate::error::RuntimeError;
use crate::launch::{self, Arg, Launch, programs};
use crate::tensor::DeviceTensor;

/// Threads per block of every kernel of `kernels/optim.cu` (`SNN_THREADS` there).
const THREADS: u32 = 256;
/// Blocks per multiprocessor of the grid-stride update kernels.
const BLOCKS_PER_SM: usize = 8;
/// The most blocks of the norm's first pass: fixed, so the summation order depends on the
/// length alone and the norm is the same on every GPU.
const NORM_BLOCKS: usize = 1024;

/// Whether every tensor starts on a 16-byte boundary (the kernels' `vec4`: float4 access).
fn aligned16(tensors: &[&DeviceTensor]) -> i32 {
    i32::from(tensors.iter().all(|t| t.ptr() % 16 == 0))
}

/// Work items of an elementwise kernel over `n` values (float4 groups count as one).
fn items(n: usize, vec4: i32) -> usize {
    if vec4 == 1 { n / 4 + n % 4 } else { n }
}

/// The grid of an elementwise kernel over `items` work items: enough blocks to fill the
/// device.
fn fill(device: &Device, items: usize) -> LaunchConfig {
    launch::grid_stride(device, items, THREADS, BLOCKS_PER_SM)
}

/// A pass of `kernel` over all of the f32 tensor `x`, with its `x`, `n` and `vec4` bound,
/// and the pass's work items (see [`items`]).
fn whole<'a>(
    device: &'a Device,
    op: &str,
    kernel: &'static str,
    x: &'a DeviceTensor,
) -> Result<(Launch<'a>, usize), RuntimeError> {
    let n = x.len();
    check::f32_tensor(op, "x", x, n, "any length")?;
    let vec4 = aligned16(&[x]);
    let launch = device
        .kernel(&programs::OPTIM, kernel)?
        .arg("x", x)
        .arg("n", check::to_i64(op, "length", n)?)
        .arg("vec4", vec4);
    Ok((launch, items(n, vec4)))
}

/// Zeroed optimizer state for `len` flat weights: one f32 tensor per
/// [state name](Optimizer::state_names), in that order.
pub fn optimizer_state(
    device: &Arc<Device>,
    opt: &Optimizer,
    len: usize,
) -> Result<Vec<DeviceTensor>, RuntimeError> {
    opt.state_names()
        .iter()
        .map(|_| DeviceTensor::zeros(device, Dtype::F32, &[len]))
        .collect()
}

/// One step of `opt` at learning rate `lr` over the flat weights `params` with gradients
/// `grads`; `step` is the step number, already incremented (1 for the first step), and
/// `state` the optimizer's state tensors in [`Optimizer::state_names`] order (see
/// [`optimizer_state`]). The same update as [`snn_nn::optim::step`].
pub fn optimizer_step(
    device: &Arc<Device>,
    opt: &Optimizer,
    lr: f64,
    step: u64,
    params: &DeviceTensor,
    grads: &DeviceTensor,
    state: &[&DeviceTensor],
) -> Result<(), RuntimeError> {
    const OP: &str = "optimizer step";
    opt.check_step(lr, state.len())?;
    if step == 0 {
        return Err(RuntimeError::invalid(
            OP,
            "step 0: pass the step number after incrementing it (1 for the first step)",
        ));
    }
    let n = params.len();
    check::f32_tensor(OP, "params", params, n, "the flat weights")?;
    check::f32_tensor(OP, "grads", grads, n, "like `params`")?;
    for (name, t) in opt.state_names().iter().zip(state) {
        check::f32_tensor(OP, name, t, n, "like `params`")?;
    }
    if n == 0 {
        return Ok(());
    }
    let mut all: Vec<&DeviceTensor> = vec![params, grads];
    all.extend(state);
    let vec4 = aligned16(&all);
    let len = check::to_i64(OP, "length", n)?;
    // The arguments both update kernels take.
    let update = |kernel| -> Result<Launch<'_>, RuntimeError> {
        Ok(device
            .kernel(&programs::OPTIM, kernel)?
            .arg("p", params)
            .arg("g", grads)
            .arg("n", len)
            .arg("vec4", vec4))
    };
    let f = |x: f64| x as f32;
    let launch = match opt.scalars(lr, step) {
        StepScalars::Adam(s) => {
            // `check_step` saw one state tensor per state name.
            let &[m, v] = state else {
                return Err(RuntimeError::Internal(format!(
                    "adam got {} state tensors",
                    state.len()
                )));
            };
            update("snn_adam_step")?
                .arg("m", m)
                .arg("v", v)
                .arg("decay", f(s.decay))
                .arg("wd", f(s.grad_weight_decay))
                .arg("w1", f(s.one_minus_beta1))
                .arg("b2", f(s.beta2))
                .arg("w2", f(s.one_minus_beta2))
                .arg("step_size", f(s.step_size))
                .arg("bc2_sqrt", f(s.bias_correction2_sqrt))
                .arg("eps", f(s.eps))
                .arg("use_decay", i32::from(s.decay != 1.0))
                .arg("use_wd", i32::from(s.grad_weight_decay != 0.0))
        }
        StepScalars::Sgd(s) => update("snn_sgd_step")?
            // Null without momentum (the kernel checks).
            .arg("buf", state.first().map_or(Arg::Null, |&t| Arg::Tensor(t)))
            .arg("lr", f(s.lr))
            .arg("wd", f(s.weight_decay))
            .arg("momentum", f(s.momentum))
            .arg("one_minus_dampening", f(s.one_minus_dampening))
            .arg("use_wd", i32::from(s.weight_decay != 0.0))
            .arg("first", i32::from(s.first))
            .arg("nesterov", i32::from(s.nesterov)),
    };
    launch.run(fill(device, items(n, vec4)))
}

/// Launches the two norm passes over `grads`; the returned `F64` tensor of 2 values holds
/// the norm as an f64, then its bytes 8..12 hold it as an f32.
fn norm_on_device(
    device: &Arc<Device>,
    grads: &DeviceTensor,
) -> Result<DeviceTensor, RuntimeError> {
    let (sum, items) = whole(device, "gradient norm", "snn_sum_squares_partial", grads)?;
    let blocks = items.div_ceil(THREADS as usize).clamp(1, NORM_BLOCKS);
    let partial = DeviceTensor::empty(device, Dtype::F64, &[blocks])?;
    let norm = DeviceTensor::empty(device, Dtype::F64, &[2])?;
    // At most NORM_BLOCKS.
    let grid = blocks as u32;
    sum.arg("partial", &partial)
        .run(launch::config((grid, 1), THREADS))?;
    device
        .kernel(&programs::OPTIM, "snn_sum_squares_final")?
        .arg("partial", &partial)
        .arg("count", grid as i32)
        .arg("norm", &norm)
        .run(launch::config((1, 1), THREADS))?;
    Ok(norm)
}

/// The f32 read back from [`norm_on_device`]'s result.
fn read_norm(norm: &DeviceTensor) -> Result<f32, RuntimeError> {
    let bytes = norm.read_bytes()?;
    bytes
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .map(f32::from_le_bytes)
        .ok_or_else(|| {
            RuntimeError::Internal(format!(
                "the gradient norm read back {} bytes, not 16",
                bytes.len()
            ))
        })
}

/// The L2 norm of `grads` (accumulated in f64, deterministically: the same value on every
/// run and every GPU). Waits for the device.
pub fn grad_norm(device: &Arc<Device>, grads: &DeviceTensor) -> Result<f32, RuntimeError> {
    read_norm(&norm_on_device(device, grads)?)
}

/// `x *= factor`, elementwise.
pub fn scale(device: &Arc<Device>, x: &DeviceTensor, factor: f32) -> Result<(), RuntimeError> {
    if x.is_empty() {
        return check::f32_tensor("scale", "x", x, 0, "any length");
    }
    let (scale, items) = whole(device, "scale", "snn_scale", x)?;
    scale.arg("factor", factor).run(fill(device, items))
}

/// `torch.nn.utils.clip_grad_norm_` over the flat gradients, as
/// [`snn_nn::optim::clip_grad_norm`]: the scaling factor is computed on the device, so the
/// work is queued without waiting; the norm before clipping is then read back (a
/// non-finite norm leaves the gradients unchanged, for the caller to skip the step).
pub fn clip_grad_norm(
    device: &Arc<Device>,
    grads: &DeviceTensor,
    max_norm: f64,
) -> Result<f32, RuntimeError> {
    const OP: &str = "gradient clipping";
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(RuntimeError::invalid(
            OP,
            format!("max norm {max_norm} is invalid: it must be finite and > 0"),
        ));
    }
    let norm = norm_on_device(device, grads)?;
    if !grads.is_empty() {
        let (clip, items) = whole(device, OP, "snn_clip_scale", grads)?;
        clip.arg("norm", &norm)
            .arg("max_norm", max_norm)
            .run(fill(device, items))?;
    }
    read_norm(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_work_counts_float4_groups_and_the_tail() {
        assert_eq!(items(10, 1), 4);
        assert_eq!(items(10, 0), 10);
        assert_eq!(items(8, 1), 2);
    }
}
