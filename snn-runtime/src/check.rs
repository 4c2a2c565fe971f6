//! The argument checks every GPU operation shares: a tensor's device, dtype and size, and
//! that written memory overlaps nothing it must not. Kernel launches run the device and
//! memory checks themselves ([`crate::launch`]); operations check sizes before, because
//! only they know how many values each tensor must hold. cuDNN and cuBLAS calls, which are
//! not kernels of ours, run the same checks through these functions.

use std::ops::Range;
use std::sync::Arc;

use snn_codegen::Dtype;

use crate::device::Device;
use crate::error::RuntimeError;
use crate::tensor::DeviceTensor;

/// Checks that `t` is a `dtype` tensor of `len` values; `what` says where `len` comes from
/// ("one per output channel", "like `a`").
pub fn tensor(
    op: &str,
    arg: &str,
    t: &DeviceTensor,
    dtype: Dtype,
    len: usize,
    what: &str,
) -> Result<(), RuntimeError> {
    if t.dtype == dtype && t.len() == len {
        return Ok(());
    }
    Err(RuntimeError::Tensor {
        op: op.into(),
        arg: arg.into(),
        expected: format!("{dtype} with {len} values ({what})"),
        got: format!("{} of shape {:?} ({} values)", t.dtype, t.shape, t.len()),
    })
}

/// [`tensor`] for the common case of f32.
pub fn f32_tensor(
    op: &str,
    arg: &str,
    t: &DeviceTensor,
    len: usize,
    what: &str,
) -> Result<(), RuntimeError> {
    tensor(op, arg, t, Dtype::F32, len, what)
}

/// Checks that a layer's bias (or its gradient) is given exactly when the layer has one,
/// as an f32 tensor of one value per output channel.
pub fn bias(
    op: &str,
    arg: &str,
    t: Option<&DeviceTensor>,
    has_bias: bool,
    channels: usize,
) -> Result<(), RuntimeError> {
    match (has_bias, t) {
        (true, Some(t)) => f32_tensor(op, arg, t, channels, "one per output channel"),
        (false, None) => Ok(()),
        (true, None) => Err(RuntimeError::invalid(
            op,
            format!("the layer has a bias, so `{arg}` must be given"),
        )),
        (false, Some(_)) => Err(RuntimeError::invalid(
            op,
            format!("the layer has no bias, so `{arg}` must be None"),
        )),
    }
}

/// Checks that `t` lives on `device` (its kernels run on that device's stream).
pub fn on_device(
    op: &str,
    arg: &str,
    t: &DeviceTensor,
    device: &Device,
) -> Result<(), RuntimeError> {
    if std::ptr::eq(Arc::as_ptr(t.device()), device) {
        return Ok(());
    }
    Err(RuntimeError::ForeignTensor {
        op: op.into(),
        arg: arg.into(),
    })
}

/// How an operation uses a tensor, for [`memory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Written, and declared `__restrict__` (or a library call): no other argument may
    /// share its memory.
    Write,
    /// Written by an elementwise kernel that reads each element before writing it: may be
    /// exactly one of the read arguments (in place), though never overlap one partly.
    WriteInPlace,
}

/// Checks that every tensor lives on `device` and that no written tensor shares memory with
/// another argument, except an in-place output that is exactly one of its inputs:
/// overlapping buffers would race inside a kernel. Read-only tensors may overlap freely.
pub fn memory(
    op: &str,
    device: &Device,
    args: &[(&str, &DeviceTensor, Access)],
) -> Result<(), RuntimeError> {
    for (name, t, _) in args {
        on_device(op, name, t, device)?;
    }
    let range = |t: &DeviceTensor| t.ptr()..t.ptr() + t.num_bytes() as u64;
    for (i, &(name_a, a, use_a)) in args.iter().enumerate() {
        for &(name_b, b, use_b) in &args[i + 1..] {
            if conflict((range(a), use_a), (range(b), use_b)) {
                return Err(RuntimeError::Overlap {
                    op: op.into(),
                    a: name_a.into(),
                    b: name_b.into(),
                });
            }
        }
    }
    Ok(())
}

/// Whether two arguments' memory may not be given to one launch (see [`memory`]).
fn conflict((a, use_a): (Range<u64>, Access), (b, use_b): (Range<u64>, Access)) -> bool {
    let both_read = use_a == Access::Read && use_b == Access::Read;
    let overlap = !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end;
    let in_place = matches!(
        (use_a, use_b),
        (Access::WriteInPlace, Access::Read) | (Access::Read, Access::WriteInPlace)
    ) && a == b;
    overlap && !both_read && !in_place
}

/// The product of `dims` (a tensor's element count), or an error naming what overflows.
pub fn product(op: &str, dims: &[usize], what: &str) -> Result<usize, RuntimeError> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            RuntimeError::invalid(
                op,
                format!("{what} of shape {dims:?} overflow the address space"),
            )
        })
}

/// `v` as the `long long` a kernel takes (the size of any real tensor fits).
pub fn to_i64(op: &str, what: &str, v: usize) -> Result<i64, RuntimeError> {
    i64::try_from(v).map_err(|_| RuntimeError::invalid(op, format!("{what} = {v} is too large")))
}

/// `v` as an `int` kernel argument or grid dimension.
pub fn to_i32(op: &str, what: &str, v: usize) -> Result<i32, RuntimeError> {
    i32::try_from(v).map_err(|_| {
        RuntimeError::invalid(
            op,
            format!("{what} = {v} is too large (at most {})", i32::MAX),
        )
    })
}

/// `v` as a grid dimension.
pub fn to_u32(op: &str, what: &str, v: usize) -> Result<u32, RuntimeError> {
    u32::try_from(v).map_err(|_| {
        RuntimeError::invalid(
            op,
            format!("{what} = {v} is too large (at most {})", u32::MAX),
        )
    })
}

/// Whether every tensor starts on a 16-byte boundary, as kernels that move 16 bytes per
/// access (float4) need.
pub fn aligned16(tensors: &[&DeviceTensor]) -> bool {
    tensors.iter().all(|t| t.ptr().is_multiple_of(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_memory_overlaps_nothing_but_its_own_input_in_place() {
        use Access::{Read, Write, WriteInPlace};
        let c = |a: Range<u64>, ua, b: Range<u64>, ub| conflict((a, ua), (b, ub));
        assert!(!c(0..8, Read, 4..12, Read), "reads may overlap");
        assert!(c(0..8, Write, 4..12, Read));
        assert!(c(0..8, Read, 0..8, Write), "restricted outputs never alias");
        assert!(!c(0..8, WriteInPlace, 0..8, Read), "in place");
        assert!(!c(0..8, Read, 0..8, WriteInPlace), "in place, either order");
        assert!(c(0..8, WriteInPlace, 4..12, Read), "partly overlapping");
        assert!(c(0..8, WriteInPlace, 0..8, WriteInPlace), "two writers");
        assert!(!c(0..8, Write, 8..16, Write), "adjacent");
        assert!(!c(4..4, Write, 0..8, Read), "empty");
    }
}
