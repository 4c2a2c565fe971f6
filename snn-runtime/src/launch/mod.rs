//! One launch path for every kernel, generated or hand-written.
//!
//! A kernel comes with its [`KernelSignature`]: the emitter's for a generated neuron
//! kernel, the parsed `extern "C"` declaration for a hand-written one (`kernels/*.cu`, see
//! [`programs`]). Callers bind arguments by name ([`Launch::arg`]) or, for neuron kernels,
//! by role; [`launch`] orders them as the signature says and checks each against its
//! parameter before anything runs: every argument bound once, scalars of the declared C
//! type, tensors of the declared dtype on the launching device, and no written tensor
//! sharing memory with another argument (an elementwise kernel declared without
//! `__restrict__` may write in place). Sizes are the operations' to check (only they know
//! how many values each tensor must hold), with the helpers of [`crate::check`].
// The one place kernels are launched: `launch` checks what it can, the callers the sizes.
#![allow(unsafe_code)]

pub mod programs;

use std::sync::Arc;

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use snn_codegen::cuda::{ArgType, KernelSignature};

pub use programs::Program;

use crate::check::{self, Access};
use crate::device::Device;
use crate::error::RuntimeError;
use crate::tensor::DeviceTensor;

/// A kernel loaded on a device, with the signature its arguments are bound by.
#[derive(Debug)]
pub struct Kernel {
    function: CudaFunction,
    signature: KernelSignature,
}

impl Kernel {
    pub(crate) fn new(function: CudaFunction, signature: KernelSignature) -> Self {
        Self {
            function,
            signature,
        }
    }

    pub fn signature(&self) -> &KernelSignature {
        &self.signature
    }

    pub fn name(&self) -> &str {
        &self.signature.name
    }
}

/// A kernel argument's value.
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    Tensor(&'a DeviceTensor),
    /// A null pointer, where the kernel reads null as "absent" (generated kernels' optional
    /// states and gradients).
    Null,
    F32(f32),
    F64(f64),
    I32(i32),
    I64(i64),
    U64(u64),
}

impl<'a> From<&'a DeviceTensor> for Arg<'a> {
    fn from(t: &'a DeviceTensor) -> Self {
        Arg::Tensor(t)
    }
}

/// Scalars bind as the C type of the same width and kind.
macro_rules! scalar_args {
    ($($ty:ty => $variant:ident),*) => {$(
        impl From<$ty> for Arg<'_> {
            fn from(v: $ty) -> Self {
                Arg::$variant(v)
            }
        }
    )*};
}

scalar_args!(f32 => F32, f64 => F64, i32 => I32, i64 => I64, u64 => U64);

/// One launch of a hand-written kernel, its arguments bound by name:
///
/// ```text
/// device.kernel(&programs::ELEMENTWISE, "snn_add")?
///     .arg("a", a).arg("b", b).arg("out", out).arg("n", n)
///     .run(config)?;
/// ```
#[derive(Debug)]
#[must_use = "a launch does nothing until it is `run`"]
pub struct Launch<'a> {
    device: &'a Device,
    kernel: Arc<Kernel>,
    args: Vec<(&'a str, Arg<'a>)>,
}

impl<'a> Launch<'a> {
    pub(crate) fn new(device: &'a Device, kernel: Arc<Kernel>) -> Self {
        let args = Vec::with_capacity(kernel.signature.args.len());
        Self {
            device,
            kernel,
            args,
        }
    }

    /// Binds the parameter named `name`.
    pub fn arg(mut self, name: &'a str, value: impl Into<Arg<'a>>) -> Self {
        self.args.push((name, value.into()));
        self
    }

    /// Orders the bound arguments as the kernel declares them, checks them ([`launch`])
    /// and queues the kernel on the device's stream.
    pub fn run(self, config: LaunchConfig) -> Result<(), RuntimeError> {
        let ordered = order(&self.kernel.signature, &self.args)?;
        launch(self.device, &self.kernel, config, &ordered)
    }
}

/// `args`, bound by name, in the order `sig` declares them; every parameter exactly once.
fn order<'a>(
    sig: &KernelSignature,
    args: &[(&str, Arg<'a>)],
) -> Result<Vec<Arg<'a>>, RuntimeError> {
    let binding = |problem: String| RuntimeError::Binding {
        kernel: sig.name.clone(),
        problem,
    };
    let mut ordered = Vec::with_capacity(sig.args.len());
    for (k, param) in sig.args.iter().enumerate() {
        // Callers bind in declaration order as a rule: look there first.
        let at = match args.get(k) {
            Some((name, _)) if *name == param.name => Some(k),
            _ => args.iter().position(|(name, _)| *name == param.name),
        };
        let Some(at) = at else {
            return Err(binding(format!("`{}` is not bound", param.name)));
        };
        ordered.push(args[at].1);
    }
    if args.len() != sig.args.len() {
        let known: Vec<&str> = sig.args.iter().map(|a| a.name.as_str()).collect();
        return Err(binding(
            match args.iter().find(|(n, _)| !known.contains(n)) {
                Some((name, _)) => format!(
                    "it has no parameter `{name}`; its parameters are {}",
                    known.join(", ")
                ),
                None => "a parameter is bound twice".into(),
            },
        ));
    }
    Ok(ordered)
}

/// A pushed argument's value, kept alive until the launch is queued.
enum Value {
    Ptr(u64),
    F32(f32),
    F64(f64),
    I32(i32),
    I64(i64),
    U64(u64),
}

/// Queues `kernel` with `args` in its signature's order, after checking each against its
/// parameter (module docs).
pub fn launch(
    device: &Device,
    kernel: &Kernel,
    config: LaunchConfig,
    args: &[Arg],
) -> Result<(), RuntimeError> {
    let sig = &kernel.signature;
    let binding = |problem: String| RuntimeError::Binding {
        kernel: sig.name.clone(),
        problem,
    };
    if args.len() != sig.args.len() {
        return Err(binding(format!(
            "{} arguments for {} parameters",
            args.len(),
            sig.args.len()
        )));
    }
    let mut values = Vec::with_capacity(args.len());
    let mut tensors = Vec::new();
    for (param, &arg) in sig.args.iter().zip(args) {
        let value = match (param.ty, arg) {
            (ArgType::Ptr { dtype, .. }, Arg::Tensor(t)) => {
                if t.dtype != dtype {
                    return Err(RuntimeError::Tensor {
                        op: sig.name.clone(),
                        arg: param.name.clone(),
                        expected: format!("a {dtype} tensor"),
                        got: format!("{} of shape {:?}", t.dtype, t.shape),
                    });
                }
                let access = match param.ty {
                    ArgType::Ptr {
                        mutable: true,
                        restrict: false,
                        ..
                    } => Access::WriteInPlace,
                    ArgType::Ptr { mutable: true, .. } => Access::Write,
                    _ => Access::Read,
                };
                tensors.push((param.name.as_str(), t, access));
                Value::Ptr(t.ptr())
            }
            (ArgType::Ptr { .. }, Arg::Null) => Value::Ptr(0),
            (ArgType::F32, Arg::F32(v)) => Value::F32(v),
            (ArgType::F64, Arg::F64(v)) => Value::F64(v),
            (ArgType::I32, Arg::I32(v)) => Value::I32(v),
            (ArgType::I64, Arg::I64(v)) => Value::I64(v),
            (ArgType::U64, Arg::U64(v)) => Value::U64(v),
            (ty, arg) => {
                return Err(binding(format!("`{}` takes {ty}, got {arg:?}", param.name)));
            }
        };
        values.push(value);
    }
    check::memory(&sig.name, device, &tensors)?;
    let mut builder = device.stream.launch_builder(&kernel.function);
    for v in &values {
        match v {
            Value::Ptr(p) => builder.arg(p),
            Value::F32(x) => builder.arg(x),
            Value::F64(x) => builder.arg(x),
            Value::I32(x) => builder.arg(x),
            Value::I64(x) => builder.arg(x),
            Value::U64(x) => builder.arg(x),
        };
    }
    // SAFETY: the values follow the kernel's own declaration, in order and C type (checked
    // above against the signature it was loaded with); every pointer is null where the
    // caller's binding allows it, or a tensor of the declared dtype on this device whose
    // memory no other argument overlaps where the kernel writes (checked above), sized by
    // the calling operation for what the kernel indexes with these arguments.
    unsafe { builder.launch(config) }
        .map_err(|e| RuntimeError::driver(format!("launching `{}`", sig.name), e))?;
    Ok(())
}

/// A launch of `blocks` blocks of `threads` threads.
pub fn config(blocks: (u32, u32), threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks.0, blocks.1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A 1-D grid-stride launch over `work` items of one thread each: blocks of `threads`
/// threads, no more than `blocks_per_sm` per multiprocessor (beyond that, each thread
/// takes several items), at least one.
pub fn grid_stride(
    device: &Device,
    work: usize,
    threads: u32,
    blocks_per_sm: usize,
) -> LaunchConfig {
    let most = (device.info.multiprocessors as usize * blocks_per_sm).max(1);
    // At most `most`: a u32 times a small factor, far below u32::MAX on any real device.
    let blocks = work
        .div_ceil(threads as usize)
        .clamp(1, most)
        .min(u32::MAX as usize) as u32;
    config((blocks, 1), threads)
}

#[cfg(test)]
mod tests {
    use snn_codegen::cuda::parse_kernels;

    use super::*;

    fn sig() -> KernelSignature {
        parse_kernels(
            "extern \"C\" __global__ void snn_k(const float* x, long long n, const int v) {}",
        )
        .unwrap()
        .remove(0)
    }

    #[test]
    fn arguments_bound_by_name_come_out_in_declaration_order() {
        let args = [("v", Arg::I32(3)), ("x", Arg::Null), ("n", Arg::I64(7))];
        let got = order(&sig(), &args).unwrap();
        assert!(matches!(got[..], [Arg::Null, Arg::I64(7), Arg::I32(3)]));
    }

    #[test]
    fn missing_unknown_and_repeated_arguments_are_errors() {
        let err = |args: &[(&str, Arg)]| order(&sig(), args).unwrap_err().to_string();
        let e = err(&[("x", Arg::Null), ("n", Arg::I64(1))]);
        assert!(e.contains("`v` is not bound") && e.contains("snn_k"), "{e}");
        let e = err(&[
            ("x", Arg::Null),
            ("n", Arg::I64(1)),
            ("v", Arg::I32(0)),
            ("w", Arg::I32(0)),
        ]);
        assert!(
            e.contains("no parameter `w`") && e.contains("x, n, v"),
            "{e}"
        );
        let e = err(&[
            ("x", Arg::Null),
            ("n", Arg::I64(1)),
            ("v", Arg::I32(0)),
            ("n", Arg::I64(2)),
        ]);
        assert!(e.contains("bound twice"), "{e}");
    }
}
