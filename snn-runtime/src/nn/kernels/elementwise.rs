//! Elementwise sums: the residual add of a ResNet block, and gradient accumulation for a
//! tensor used twice (a block's input feeds both its branch and its shortcut). The kernel
//! is `kernels/elementwise.cu`.

use std::sync::Arc;

use super::{BLOCKS_PER_SM, THREADS};
use crate::check::{self, Access};
use crate::device::Device;
use crate::error::RuntimeError;
use crate::launch::{self, programs};
use crate::tensor::DeviceTensor;

/// `out = a + b` (f32, any shape, equal lengths; overwritten), e.g. a residual add. `out`
/// may be `a` or `b` itself (in place), but must not overlap either otherwise; `a` and `b`
/// may be the same tensor. Exact: bit-identical to the CPU's f32 sum.
pub fn add(
    device: &Arc<Device>,
    a: &DeviceTensor,
    b: &DeviceTensor,
    out: &DeviceTensor,
) -> Result<(), RuntimeError> {
    const OP: &str = "add";
    let n = a.len();
    check::f32_tensor(OP, "a", a, n, "any shape")?;
    check::f32_tensor(OP, "b", b, n, "like `a`")?;
    check::f32_tensor(OP, "out", out, n, "like `a`")?;
    launch(OP, device, a, b, out)
}

/// `acc += x` (f32, equal lengths), e.g. the gradient of a tensor used twice. `x` must not
/// overlap `acc` unless it is `acc` itself (which doubles it).
pub fn add_assign(
    device: &Arc<Device>,
    acc: &DeviceTensor,
    x: &DeviceTensor,
) -> Result<(), RuntimeError> {
    const OP: &str = "add_assign";
    let n = acc.len();
    check::f32_tensor(OP, "acc", acc, n, "any shape")?;
    check::f32_tensor(OP, "x", x, n, "like `acc`")?;
    // Checked under this operation's names: the kernel's own (`a`, `b`, `out`) would puzzle.
    check::memory(
        OP,
        device,
        &[("x", x, Access::Read), ("acc", acc, Access::WriteInPlace)],
    )?;
    launch(OP, device, acc, x, acc)
}

/// Launches `snn_add` on tensors of equal lengths (the launch checks devices and overlaps).
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
        .kernel(&programs::ELEMENTWISE, "snn_add")?
        .arg("a", a)
        .arg("b", b)
        .arg("out", out)
        .arg("n", check::to_i64(op, "length", n)?)
        .run(config)
}
