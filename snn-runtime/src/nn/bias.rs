//! The per-channel bias of convolutions and linear layers (`kernels/bias.cu`), on f32 or
//! bf16 tensors viewed as `[images, channels, plane]` (a linear layer's rows are images of one
//! channel per feature and a plane of 1): the forward add, and the gradient summed over
//! images and plane in double precision in an order fixed by the shape alone, so that it
//! is the same on every run and every device.

use std::sync::Arc;

use snn_codegen::Dtype;

use crate::check;
use crate::device::Device;
use crate::error::RuntimeError;
use crate::launch::{self, programs};
use crate::nn::kernels::{activation, twin};
use crate::tensor::DeviceTensor;

/// Values each block of the gradient sums (before splitting is capped).
const VALUES_PER_BLOCK: usize = 16384;
/// At most this many blocks per channel (CUDA allows 65535 in a grid's y).
const MAX_SPLITS: usize = 1024;
/// Threads of `snn_bias_grad_partial` (its shared array is sized for them).
const PARTIAL_THREADS: u32 = 256;
/// Threads of `snn_bias_grad_finish` (one per channel).
const FINISH_THREADS: u32 = 128;

/// `y[n, c, p] += bias[c]` for `y` `[images, channels, plane]`.
pub(crate) fn add(
    device: &Arc<Device>,
    y: &DeviceTensor,
    bias: &DeviceTensor,
    (images, channels, plane): (usize, usize, usize),
) -> Result<(), RuntimeError> {
    const OP: &str = "bias add";
    let total = check_sizes(OP, ("y", y), ("bias", bias), (images, channels, plane))?;
    if total == 0 {
        return Ok(());
    }
    device
        .kernel(
            &programs::BIAS,
            twin(y.dtype, ["snn_bias_add", "snn_bias_add_bf16"]),
        )?
        .arg("y", y)
        .arg("bias", bias)
        .arg("total", check::to_i64(OP, "values", total)?)
        .arg("channels", check::to_i64(OP, "channels", channels)?)
        .arg("plane", check::to_i64(OP, "plane", plane)?)
        .run(launch::grid_stride(device, total, 256, 32))
}

/// `dbias[c]` = the sum of `dy` `[images, channels, plane]` over images and plane
/// (overwritten).
pub(crate) fn grad(
    device: &Arc<Device>,
    dy: &DeviceTensor,
    dbias: &DeviceTensor,
    (images, channels, plane): (usize, usize, usize),
) -> Result<(), RuntimeError> {
    const OP: &str = "bias gradient";
    check_sizes(OP, ("dy", dy), ("dbias", dbias), (images, channels, plane))?;
    if channels == 0 {
        return Ok(());
    }
    if images == 0 || plane == 0 {
        return dbias.clear();
    }
    let mut chunk = VALUES_PER_BLOCK.div_ceil(plane).min(images);
    if images.div_ceil(chunk) > MAX_SPLITS {
        chunk = images.div_ceil(MAX_SPLITS);
    }
    let splits = images.div_ceil(chunk);
    // A grid's x extent is below 2^31; `splits` is at most MAX_SPLITS.
    let grid = (
        check::to_i32(OP, "channels", channels)? as u32,
        splits as u32,
    );
    // Every one of the `channels * splits` values is written by exactly one block of
    // `snn_bias_grad_partial` before `snn_bias_grad_finish` reads it.
    let partial = DeviceTensor::empty(device, Dtype::F64, &[channels * splits])?;
    let (channels, splits) = (
        check::to_i64(OP, "channels", channels)?,
        check::to_i64(OP, "splits", splits)?,
    );
    device
        .kernel(
            &programs::BIAS,
            twin(
                dy.dtype,
                ["snn_bias_grad_partial", "snn_bias_grad_partial_bf16"],
            ),
        )?
        .arg("dy", dy)
        .arg("partial", &partial)
        .arg("images", check::to_i64(OP, "images", images)?)
        .arg("channels", channels)
        .arg("plane", check::to_i64(OP, "plane", plane)?)
        .arg("chunk", check::to_i64(OP, "chunk", chunk)?)
        .run(launch::config(grid, PARTIAL_THREADS))?;
    let blocks = grid.0.div_ceil(FINISH_THREADS);
    device
        .kernel(&programs::BIAS, "snn_bias_grad_finish")?
        .arg("partial", &partial)
        .arg("dbias", dbias)
        .arg("channels", channels)
        .arg("splits", splits)
        .run(launch::config((blocks, 1), FINISH_THREADS))
}

/// Checks that the tensor named `values.0` holds f32 `[images, channels, plane]` and the
/// one named `bias.0` one f32 per channel; returns how many values the first holds.
fn check_sizes(
    op: &str,
    (name, values): (&str, &DeviceTensor),
    (bias_name, bias): (&str, &DeviceTensor),
    (images, channels, plane): (usize, usize, usize),
) -> Result<usize, RuntimeError> {
    let total = check::product(op, &[images, channels, plane], name)?;
    let dtype = activation(op, name, values)?;
    check::tensor(op, name, values, dtype, total, "[images, channels, plane]")?;
    check::f32_tensor(op, bias_name, bias, channels, "one per channel")?;
    Ok(total)
}
