//! Elementwise sums: the residual add of a ResNet block, and gradient accumulation for a
//! tensor used twice (a block's input feeds both its branch and its shortcut); and
//! conversions between f32 and bf16 (narrow storage). The kernels are
//! `kernels/elementwise.cu`.

use std::sync::Arc;

use snn_codegen::Dtype;

use super::{BLOCKS_PER_SM, THREADS, activation, twin};
use crate::check::{self, Access};
use crate::device::Device;
use crate::error::RuntimeError;
use crate::launch::{self, programs};
use crate::tensor::DeviceTensor;

/// `out = a + b` (f32 or bf16, all three alike, any shape, equal lengths; overwritten), e.g.
/// a residual add. `out` may be `a` or `b` itself (in place), but must not overlap either
/// otherwise; `a` and `b` may be the same tensor. Exact for f32: bit-identical to the CPU's
/// f32 sum (bf16: the f32 sum rounded to bf16).
pub fn add(
    device: &Arc<Device>,
    a: &DeviceTensor,
    b: &DeviceTensor,
    out: &DeviceTensor,
) -> Result<(), RuntimeError> {
    const OP: &str = "add";
    let (n, dtype) = (a.len(), activation(OP, "a", a)?);
    check::tensor(OP, "b", b, dtype, n, "like `a`")?;
    check::tensor(OP, "out", out, dtype, n, "like `a`")?;
    launch(OP, device, a, b, out)
}

/// `acc += x` (f32 or bf16, both alike, equal lengths), e.g. the gradient of a tensor used
/// twice. `x` must not
/// overlap `acc` unless it is `acc` itself (which doubles it).
pub fn add_assign(
    device: &Arc<Device>,
    acc: &DeviceTensor,
    x: &DeviceTensor,
) -> Result<(), RuntimeError> {
    const OP: &str = "add_assign";
    let (n, dtype) = (acc.len(), activation(OP, "acc", acc)?);
    check::tensor(OP, "x", x, dtype, n, "like `acc`")?;
    // Checked under this operation's names: the kernel's own (`a`, `b`, `out`) would puzzle.
    check::memory(
        OP,
        device,
        &[("x", x, Access::Read), ("acc", acc, Access::WriteInPlace)],
    )?;
    launch(OP, device, acc, x, acc)
}

/// Launches `snn_add` (or its bf16 twin) on tensors of equal lengths (the launch checks devices and overlaps).
fn launch(
    op: &str,
    device: &Arc<Device>,
    a: &DeviceTensor,
    b: &DeviceTensor,
    out: &DeviceTensor,
) -> Result<(), RuntimeError> {
    let n = a.len();
    if n == 0 {
        return Ok(());
    }
    let config = launch::grid_stride(device, n.div_ceil(4), THREADS, BLOCKS_PER_SM);
    device
        .kernel(
            &programs::ELEMENTWISE,
            twin(a.dtype, ["snn_add", "snn_add_bf16"]),
        )?
        .arg("a", a)
        .arg("b", b)
        .arg("out", out)
        .arg("n", check::to_i64(op, "length", n)?)
        .run(config)
}

/// `y = x` converted between f32 and bf16 (either way; bf16 rounds to nearest even), equal
/// lengths, any shapes: the narrow copies of weights and inputs, and widened gradients. Also
/// spikes (exactly -1, 0 or 1, which it does not check) between f32 or bf16 and one signed
/// byte, exactly.
pub fn convert(
    device: &Arc<Device>,
    x: &DeviceTensor,
    y: &DeviceTensor,
) -> Result<(), RuntimeError> {
    const OP: &str = "convert";
    let n = x.len();
    // The kernel, and how many values each thread converts per access.
    let (kernel, per_access) = match (x.dtype, y.dtype) {
        (Dtype::F32, Dtype::BF16) => ("snn_f32_to_bf16", 4),
        (Dtype::BF16, Dtype::F32) => ("snn_bf16_to_f32", 4),
        (Dtype::F32, Dtype::I8) => ("snn_f32_to_i8", 1),
        (Dtype::BF16, Dtype::I8) => ("snn_bf16_to_i8", 1),
        (Dtype::I8, Dtype::F32) => ("snn_i8_to_f32", 1),
        (Dtype::I8, Dtype::BF16) => ("snn_i8_to_bf16", 1),
        (from, to) => {
            return Err(RuntimeError::invalid(
                OP,
                format!(
                    "from {from} to {to}; it converts f32 to bf16 and back, and spikes between f32 or bf16 and i8"
                ),
            ));
        }
    };
    check::tensor(OP, "y", y, y.dtype, n, "as many values as `x`")?;
    check::memory(
        OP,
        device,
        &[("x", x, Access::Read), ("y", y, Access::Write)],
    )?;
    if n == 0 {
        return Ok(());
    }
    let config = launch::grid_stride(device, n.div_ceil(per_access), THREADS, BLOCKS_PER_SM);
    device
        .kernel(&programs::ELEMENTWISE, kernel)?
        .arg("x", x)
        .arg("y", y)
        .arg("n", check::to_i64(OP, "length", n)?)
        .run(config)
}
