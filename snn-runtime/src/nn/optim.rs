//! Optimizers on the GPU as fused multi-tensor kernels: all weights of a network live in
//! one flat f32 buffer (their gradients in another of the same layout), so one elementwise
//! launch updates every weight, whatever the number of tensors.
//!
//! The update is [`snn_nn::optim`]'s, operation for operation: the per-step scalars (bias
//! corrections, decoupled decay) come from the same [`Optimizer::scalars`] on the host, and
//! the kernels are compiled without fused multiply-adds and with correctly rounded
//! division and square root, so a GPU step equals the CPU `f32` step to rounding (in
//! practice bit for bit).
//!
//! Gradient-norm clipping is a deterministic two-pass reduction (per-block partial sums in
//! a grid whose size depends only on the length, then one block summing them in a fixed
//! order, in f64) and a scaling kernel that reads the norm on the device.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use snn_codegen::Dtype;
use snn_nn::optim::{Optimizer, StepScalars};

use crate::device::Device;
use crate::error::RuntimeError;
use crate::tensor::DeviceTensor;

/// The NVRTC program name of [`OPTIM_SOURCE`].
pub const OPTIM_PROGRAM: &str = "snn_optim";

/// The kernels of [`OPTIM_SOURCE`].
pub const OPTIM_KERNELS: &[&str] = &[
    "snn_adam_step",
    "snn_sgd_step",
    "snn_sum_squares_partial",
    "snn_sum_squares_final",
    "snn_scale",
    "snn_clip_scale",
];

/// The kernels. Every elementwise kernel takes `vec4`: when all its pointers are 16-byte
/// aligned, the first `n / 4 * 4` elements go as float4 and the rest one by one.
pub const OPTIM_SOURCE: &str = r#"// snn-runtime: fused optimizers, gradient norm and scaling over flat f32 buffers.
#define SNN_THREADS 256

// torch.lerp's formula: the form depends on the weight, for accuracy near both ends.
__device__ __forceinline__ float snn_lerp(float s, float e, float w) {
    return fabsf(w) < 0.5f ? s + w * (e - s) : e - (e - s) * (1.0f - w);
}

struct SnnAdam {
    float decay, wd, w1, b2, w2, step_size, bc2_sqrt, eps;
    int use_decay, use_wd;
};

__device__ __forceinline__ void snn_adam1(const SnnAdam& a, float& p, float g, float& m, float& v) {
    if (a.use_decay) p = p * a.decay;
    if (a.use_wd) g = g + a.wd * p;
    m = snn_lerp(m, g, a.w1);
    v = v * a.b2 + a.w2 * (g * g);
    const float denom = __fdiv_rn(sqrtf(v), a.bc2_sqrt) + a.eps;
    p = p - a.step_size * __fdiv_rn(m, denom);
}

// Adam and AdamW (decay = 1 - lr * wd and use_wd = 0 for AdamW).
extern "C" __global__ void snn_adam_step(
    float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
    float* __restrict__ v, const long long n, const int vec4,
    const float decay, const float wd, const float w1, const float b2, const float w2,
    const float step_size, const float bc2_sqrt, const float eps,
    const int use_decay, const int use_wd) {
    const SnnAdam a = {decay, wd, w1, b2, w2, step_size, bc2_sqrt, eps, use_decay, use_wd};
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long first = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long n4 = vec4 ? n / 4 : 0;
    for (long long i = first; i < n4; i += stride) {
        float4 P = reinterpret_cast<float4*>(p)[i], M = reinterpret_cast<float4*>(m)[i];
        float4 V = reinterpret_cast<float4*>(v)[i];
        const float4 G = reinterpret_cast<const float4*>(g)[i];
        snn_adam1(a, P.x, G.x, M.x, V.x);
        snn_adam1(a, P.y, G.y, M.y, V.y);
        snn_adam1(a, P.z, G.z, M.z, V.z);
        snn_adam1(a, P.w, G.w, M.w, V.w);
        reinterpret_cast<float4*>(p)[i] = P;
        reinterpret_cast<float4*>(m)[i] = M;
        reinterpret_cast<float4*>(v)[i] = V;
    }
    for (long long i = n4 * 4 + first; i < n; i += stride) {
        snn_adam1(a, p[i], g[i], m[i], v[i]);
    }
}

struct SnnSgd {
    float lr, wd, momentum, one_minus_dampening;
    int use_wd, first, nesterov;
};

__device__ __forceinline__ void snn_sgd1(const SnnSgd& s, float& p, float g, float& b) {
    if (s.use_wd) g = g + s.wd * p;
    b = s.first ? g : b * s.momentum + s.one_minus_dampening * g;
    g = s.nesterov ? g + s.momentum * b : b;
    p = p - s.lr * g;
}

__device__ __forceinline__ void snn_sgd0(const SnnSgd& s, float& p, float g) {
    if (s.use_wd) g = g + s.wd * p;
    p = p - s.lr * g;
}

// SGD; `buf` (the momentum buffer) is null without momentum.
extern "C" __global__ void snn_sgd_step(
    float* __restrict__ p, const float* __restrict__ g, float* __restrict__ buf,
    const long long n, const int vec4, const float lr, const float wd, const float momentum,
    const float one_minus_dampening, const int use_wd, const int first, const int nesterov) {
    const SnnSgd s = {lr, wd, momentum, one_minus_dampening, use_wd, first, nesterov};
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long start = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long n4 = vec4 ? n / 4 : 0;
    for (long long i = start; i < n4; i += stride) {
        float4 P = reinterpret_cast<float4*>(p)[i];
        const float4 G = reinterpret_cast<const float4*>(g)[i];
        if (buf) {
            float4 B = reinterpret_cast<float4*>(buf)[i];
            snn_sgd1(s, P.x, G.x, B.x);
            snn_sgd1(s, P.y, G.y, B.y);
            snn_sgd1(s, P.z, G.z, B.z);
            snn_sgd1(s, P.w, G.w, B.w);
            reinterpret_cast<float4*>(buf)[i] = B;
        } else {
            snn_sgd0(s, P.x, G.x);
            snn_sgd0(s, P.y, G.y);
            snn_sgd0(s, P.z, G.z);
            snn_sgd0(s, P.w, G.w);
        }
        reinterpret_cast<float4*>(p)[i] = P;
    }
    for (long long i = n4 * 4 + start; i < n; i += stride) {
        if (buf) snn_sgd1(s, p[i], g[i], buf[i]);
        else snn_sgd0(s, p[i], g[i]);
    }
}

// Sums `x` over the block in a fixed tree; every thread gets the sum.
__device__ __forceinline__ double snn_block_sum(double x, double* s) {
    s[threadIdx.x] = x;
    __syncthreads();
    for (int w = SNN_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    const double r = s[0];
    __syncthreads();
    return r;
}

// Pass 1: partial[block] = sum of squares of the block's grid-stride share, in f64.
extern "C" __global__ void snn_sum_squares_partial(
    const float* __restrict__ x, const long long n, const int vec4, double* __restrict__ partial) {
    __shared__ double s[SNN_THREADS];
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long start = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long n4 = vec4 ? n / 4 : 0;
    double acc = 0.0;
    for (long long i = start; i < n4; i += stride) {
        const float4 X = reinterpret_cast<const float4*>(x)[i];
        acc += (double)X.x * X.x + (double)X.y * X.y + (double)X.z * X.z + (double)X.w * X.w;
    }
    for (long long i = n4 * 4 + start; i < n; i += stride) acc += (double)x[i] * x[i];
    const double total = snn_block_sum(acc, s);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// Pass 2 (one block): norm[0] = sqrt(sum of the partials) as f64 and norm[1] as its f32.
extern "C" __global__ void snn_sum_squares_final(
    const double* __restrict__ partial, const int count, double* __restrict__ norm) {
    __shared__ double s[SNN_THREADS];
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += SNN_THREADS) acc += partial[i];
    const double total = snn_block_sum(acc, s);
    if (threadIdx.x == 0) {
        norm[0] = sqrt(total);
        reinterpret_cast<float*>(norm + 1)[0] = (float)sqrt(total);
    }
}

__device__ __forceinline__ void snn_scale4(float4& X, float f) {
    X.x = X.x * f; X.y = X.y * f; X.z = X.z * f; X.w = X.w * f;
}

__device__ __forceinline__ void snn_scale_all(float* __restrict__ x, const long long n, const int vec4, const float factor) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long start = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long n4 = vec4 ? n / 4 : 0;
    for (long long i = start; i < n4; i += stride) {
        float4 X = reinterpret_cast<float4*>(x)[i];
        snn_scale4(X, factor);
        reinterpret_cast<float4*>(x)[i] = X;
    }
    for (long long i = n4 * 4 + start; i < n; i += stride) x[i] = x[i] * factor;
}

// x *= factor.
extern "C" __global__ void snn_scale(float* __restrict__ x, const long long n, const int vec4, const float factor) {
    snn_scale_all(x, n, vec4, factor);
}

// clip_grad_norm_: x *= max_norm / (norm + 1e-6) where that is below 1 (never for NaN).
extern "C" __global__ void snn_clip_scale(
    float* __restrict__ x, const long long n, const int vec4, const double* __restrict__ norm,
    const double max_norm) {
    const double coef = max_norm / (norm[0] + 1e-6);
    if (coef < 1.0) snn_scale_all(x, n, vec4, (float)coef);
}
"#;

/// Threads per block of every kernel of [`OPTIM_SOURCE`] (`SNN_THREADS` there).
const THREADS: u32 = 256;
/// Blocks per multiprocessor of the grid-stride update kernels.
const BLOCKS_PER_SM: usize = 8;
/// The most blocks of the norm's first pass: fixed, so the summation order depends on the
/// length alone and the norm is the same on every GPU.
const NORM_BLOCKS: usize = 1024;

/// Kernel `kernel` of `source` on `device` (see [`Device::function`]).
pub(super) fn function(
    device: &Arc<Device>,
    program: &'static str,
    source: &'static str,
    kernel: &'static str,
) -> Result<CudaFunction, RuntimeError> {
    device.function(program, source, kernel)
}

/// Checks that `t` is an f32 tensor of `len` values on `device`.
pub(super) fn check_f32(
    device: &Arc<Device>,
    op: &str,
    arg: &str,
    t: &DeviceTensor,
    len: usize,
) -> Result<(), RuntimeError> {
    if !Arc::ptr_eq(t.device(), device) {
        return Err(RuntimeError::Shape(format!(
            "{op}: `{arg}` lives on another device (GPU {}) than the one given (GPU {})",
            t.device().info.ordinal,
            device.info.ordinal
        )));
    }
    if t.dtype == Dtype::F32 && t.len() == len {
        return Ok(());
    }
    Err(RuntimeError::Shape(format!(
        "{op}: `{arg}` must be an f32 tensor of {len} values, got a {} tensor of shape {:?} ({} values)",
        t.dtype,
        t.shape,
        t.len()
    )))
}

/// Checks that no two of `args` share device memory (the kernels take them `__restrict__`).
pub(super) fn check_disjoint(op: &str, args: &[(&str, &DeviceTensor)]) -> Result<(), RuntimeError> {
    let range = |t: &DeviceTensor| (t.ptr(), t.ptr() + t.num_bytes() as u64);
    for (i, &(name_a, a)) in args.iter().enumerate() {
        for &(name_b, b) in &args[i + 1..] {
            let ((a0, a1), (b0, b1)) = (range(a), range(b));
            if a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1 {
                return Err(RuntimeError::Shape(format!(
                    "{op}: `{name_a}` and `{name_b}` share device memory; pass separate tensors"
                )));
            }
        }
    }
    Ok(())
}

/// Converts a length to the `long long` a kernel takes.
pub(super) fn i64_of(op: &str, n: usize) -> Result<i64, RuntimeError> {
    i64::try_from(n).map_err(|_| RuntimeError::Shape(format!("{op}: {n} values are too many")))
}

/// Whether every tensor starts on a 16-byte boundary (float4 access).
fn aligned16(tensors: &[&DeviceTensor]) -> i32 {
    i32::from(tensors.iter().all(|t| t.ptr() % 16 == 0))
}

/// A grid-stride launch over `work` items: enough blocks to fill the device, no more.
fn fill(device: &Device, work: usize) -> LaunchConfig {
    let most = (device.info.multiprocessors as usize * BLOCKS_PER_SM).max(1);
    let blocks = work.div_ceil(THREADS as usize).clamp(1, most);
    launch(blocks)
}

fn launch(blocks: usize) -> LaunchConfig {
    LaunchConfig {
        // At most a few thousand blocks (`fill`, `NORM_BLOCKS`): fits a u32.
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Work items of an elementwise kernel over `n` values (float4 groups count as one).
fn items(n: usize, vec4: i32) -> usize {
    if vec4 == 1 { n / 4 + n % 4 } else { n }
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
    opt.validate()
        .map_err(|e| RuntimeError::Shape(format!("{OP}: {e}")))?;
    if !(lr.is_finite() && lr >= 0.0) {
        return Err(RuntimeError::Shape(format!(
            "{OP}: learning rate {lr} is invalid: it must be finite and >= 0"
        )));
    }
    if step == 0 {
        return Err(RuntimeError::Shape(format!(
            "{OP}: step 0: pass the step number after incrementing it (1 for the first step)"
        )));
    }
    let names = opt.state_names();
    if state.len() != names.len() {
        return Err(RuntimeError::Shape(format!(
            "{OP}: {} keeps {} state tensors ({names:?}), got {}",
            opt.kind(),
            names.len(),
            state.len()
        )));
    }
    let n = params.len();
    check_f32(device, OP, "params", params, n)?;
    check_f32(device, OP, "grads", grads, n)?;
    let mut args = vec![("params", params), ("grads", grads)];
    for (name, t) in names.iter().zip(state) {
        check_f32(device, OP, name, t, n)?;
        args.push((name, t));
    }
    check_disjoint(OP, &args)?;
    if n == 0 {
        return Ok(());
    }
    let mut all: Vec<&DeviceTensor> = vec![params, grads];
    all.extend(state);
    let vec4 = aligned16(&all);
    let len = i64_of(OP, n)?;
    let cfg = fill(device, items(n, vec4));
    let (p, g) = (params.ptr(), grads.ptr());
    match opt.scalars(lr, step) {
        StepScalars::Adam {
            decay,
            grad_weight_decay,
            one_minus_beta1,
            beta2,
            one_minus_beta2,
            step_size,
            bias_correction2_sqrt,
            eps,
        } => {
            let f = function(device, OPTIM_PROGRAM, OPTIM_SOURCE, "snn_adam_step")?;
            let (m, v) = (state[0].ptr(), state[1].ptr());
            let floats = [
                decay,
                grad_weight_decay,
                one_minus_beta1,
                beta2,
                one_minus_beta2,
                step_size,
                bias_correction2_sqrt,
                eps,
            ]
            .map(|x| x as f32);
            let use_decay = i32::from(decay != 1.0);
            let use_wd = i32::from(grad_weight_decay != 0.0);
            let mut b = device.stream.launch_builder(&f);
            b.arg(&p).arg(&g).arg(&m).arg(&v).arg(&len).arg(&vec4);
            for x in &floats {
                b.arg(x);
            }
            b.arg(&use_decay).arg(&use_wd);
            // SAFETY: the arguments match `snn_adam_step`'s parameters in order and type;
            // the four buffers hold `n` f32 each (checked), do not overlap (checked), and
            // float4 access is used only where all four are 16-byte aligned.
            unsafe { b.launch(cfg) }
                .map_err(|e| RuntimeError::driver("launching `snn_adam_step`", e))?;
        }
        StepScalars::Sgd {
            lr,
            weight_decay,
            momentum,
            one_minus_dampening,
            first,
            nesterov,
        } => {
            let f = function(device, OPTIM_PROGRAM, OPTIM_SOURCE, "snn_sgd_step")?;
            let buf = state.first().map_or(0u64, |t| t.ptr());
            let floats = [lr, weight_decay, momentum, one_minus_dampening].map(|x| x as f32);
            let flags = [
                i32::from(weight_decay != 0.0),
                i32::from(first),
                i32::from(nesterov),
            ];
            let mut b = device.stream.launch_builder(&f);
            b.arg(&p).arg(&g).arg(&buf).arg(&len).arg(&vec4);
            for x in &floats {
                b.arg(x);
            }
            for x in &flags {
                b.arg(x);
            }
            // SAFETY: the arguments match `snn_sgd_step`'s parameters in order and type;
            // params, grads and the momentum buffer (null without momentum, which the
            // kernel checks) hold `n` f32 each and do not overlap (checked); float4 access
            // is used only where all are 16-byte aligned.
            unsafe { b.launch(cfg) }
                .map_err(|e| RuntimeError::driver("launching `snn_sgd_step`", e))?;
        }
    }
    Ok(())
}

/// Launches the two norm passes over `grads`; the returned tensor holds the norm as an
/// f64 followed by it as an f32 (the `F64` tensor of 2 values is scratch).
fn norm_on_device(
    device: &Arc<Device>,
    grads: &DeviceTensor,
) -> Result<DeviceTensor, RuntimeError> {
    const OP: &str = "gradient norm";
    let n = grads.len();
    check_f32(device, OP, "grads", grads, n)?;
    let vec4 = aligned16(&[grads]);
    let blocks = items(n, vec4)
        .div_ceil(THREADS as usize)
        .clamp(1, NORM_BLOCKS);
    let partial = DeviceTensor::empty(device, Dtype::F64, &[blocks])?;
    let norm = DeviceTensor::empty(device, Dtype::F64, &[2])?;
    let (x, part, out) = (grads.ptr(), partial.ptr(), norm.ptr());
    let len = i64_of(OP, n)?;
    let f = function(
        device,
        OPTIM_PROGRAM,
        OPTIM_SOURCE,
        "snn_sum_squares_partial",
    )?;
    let mut b = device.stream.launch_builder(&f);
    b.arg(&x).arg(&len).arg(&vec4).arg(&part);
    // SAFETY: the arguments match `snn_sum_squares_partial`'s parameters; `x` holds `n`
    // f32 (float4 access only if 16-byte aligned), `part` one f64 per block.
    unsafe { b.launch(launch(blocks)) }
        .map_err(|e| RuntimeError::driver("launching `snn_sum_squares_partial`", e))?;
    let count = blocks as i32;
    let f = function(device, OPTIM_PROGRAM, OPTIM_SOURCE, "snn_sum_squares_final")?;
    let mut b = device.stream.launch_builder(&f);
    b.arg(&part).arg(&count).arg(&out);
    // SAFETY: the arguments match `snn_sum_squares_final`'s parameters; `part` holds
    // `count` f64, `out` 16 bytes (an f64, then an f32).
    unsafe { b.launch(launch(1)) }
        .map_err(|e| RuntimeError::driver("launching `snn_sum_squares_final`", e))?;
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
            RuntimeError::Shape(format!("gradient norm: read {} bytes, not 16", bytes.len()))
        })
}

/// The L2 norm of `grads` (accumulated in f64, deterministically: the same value on every
/// run and every GPU). Waits for the device.
pub fn grad_norm(device: &Arc<Device>, grads: &DeviceTensor) -> Result<f32, RuntimeError> {
    read_norm(&norm_on_device(device, grads)?)
}

/// `x *= factor`, elementwise.
pub fn scale(device: &Arc<Device>, x: &DeviceTensor, factor: f32) -> Result<(), RuntimeError> {
    const OP: &str = "scale";
    let n = x.len();
    check_f32(device, OP, "x", x, n)?;
    if n == 0 {
        return Ok(());
    }
    let vec4 = aligned16(&[x]);
    let (p, len) = (x.ptr(), i64_of(OP, n)?);
    let f = function(device, OPTIM_PROGRAM, OPTIM_SOURCE, "snn_scale")?;
    let mut b = device.stream.launch_builder(&f);
    b.arg(&p).arg(&len).arg(&vec4).arg(&factor);
    // SAFETY: the arguments match `snn_scale`'s parameters; `p` holds `n` f32 (float4
    // access only if 16-byte aligned).
    unsafe { b.launch(fill(device, items(n, vec4))) }
        .map_err(|e| RuntimeError::driver("launching `snn_scale`", e))?;
    Ok(())
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
        return Err(RuntimeError::Shape(format!(
            "{OP} at max norm {max_norm} is invalid: it must be finite and > 0"
        )));
    }
    let norm = norm_on_device(device, grads)?;
    let n = grads.len();
    if n > 0 {
        let vec4 = aligned16(&[grads]);
        let (p, len, nrm) = (grads.ptr(), i64_of(OP, n)?, norm.ptr());
        let f = function(device, OPTIM_PROGRAM, OPTIM_SOURCE, "snn_clip_scale")?;
        let mut b = device.stream.launch_builder(&f);
        b.arg(&p).arg(&len).arg(&vec4).arg(&nrm).arg(&max_norm);
        // SAFETY: the arguments match `snn_clip_scale`'s parameters; `p` holds `n` f32
        // (float4 access only if 16-byte aligned), `nrm` the norm as an f64.
        unsafe { b.launch(fill(device, items(n, vec4))) }
            .map_err(|e| RuntimeError::driver("launching `snn_clip_scale`", e))?;
    }
    read_norm(&norm)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
/// Compiles `source` for sm_90 with the runtime's options and checks that every kernel
/// is there and uses no local memory. Skipped without NVRTC unless
/// `SNN_REQUIRE_NVRTC=1`.
pub(super) fn check_compiles(program: &str, source: &str, kernels: &[&str]) {
    if let Err(e) = crate::nvrtc::version() {
        assert!(
            std::env::var("SNN_REQUIRE_NVRTC").as_deref() != Ok("1"),
            "SNN_REQUIRE_NVRTC=1 but NVRTC is unavailable: {e}"
        );
        eprintln!("skipping: NVRTC is unavailable ({e})");
        return;
    }
    let mut opts: Vec<&str> = snn_codegen::cuda::COMPILE_OPTIONS.to_vec();
    opts.push("--ptxas-options=-v");
    let out =
        crate::nvrtc::compile(source, program, "sm_90", &opts).unwrap_or_else(|e| panic!("{e}"));
    let res = crate::nvrtc::resources(&out.log);
    for k in kernels {
        let r = res
            .iter()
            .find(|r| r.kernel == *k)
            .unwrap_or_else(|| panic!("no kernel `{k}` in:\n{}", out.log));
        assert_eq!(
            (r.stack_frame_bytes, r.spill_store_bytes, r.spill_load_bytes),
            (0, 0, 0),
            "{k} uses local memory: {r:?}"
        );
    }
    assert_eq!(res.len(), kernels.len(), "kernels: {res:?}");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn optimizer_kernels_compile_for_sm90() {
        check_compiles(OPTIM_PROGRAM, OPTIM_SOURCE, OPTIM_KERNELS);
    }

    #[test]
    fn vector_work_counts_float4_groups_and_the_tail() {
        assert_eq!(items(10, 1), 4);
        assert_eq!(items(10, 0), 10);
        assert_eq!(items(8, 1), 2);
    }
}
