//! Convolutions on the GPU through cuDNN, as `torch.nn.Conv2d` (NCHW f32 tensors,
//! cross-correlation): forward, backward-data and backward-filter.
//!
//! Each pass runs the algorithm that cuDNN's own search (`cudnnFind*AlgorithmEx`) finds
//! fastest for the problem. The search runs on the first call of the pass with that call's
//! tensors, as PyTorch's `cudnn.benchmark` does, so it needs no buffers of its own beyond a
//! scratch workspace; its result is remembered in [`Cudnn`] per problem, so every layer of
//! the same shape shares it. By default only deterministic algorithms are taken when one of
//! them runs, ranked by cuDNN's heuristics rather than by timings, so that every run takes
//! the same algorithms and gradients repeat bit for bit ([`Cudnn::set_deterministic`]
//! lifts this: the fastest timed algorithms); [`ConvMath::F32`] takes only algorithms
//! without tensor cores.
//!
//! cudarc loads cuDNN and cuBLAS by name and panics when they are missing, so
//! [`cudnn_library`] and [`cublas_library`] find them first ([`crate::libs`]) and turn a
//! missing library into an error that lists where they looked.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cudnn::result as dnn;
use cudarc::cudnn::sys;
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use snn_codegen::Dtype;
use snn_codegen::cuda::COMPILE_OPTIONS;
use snn_nn::{Conv2d, ImageShape};

use crate::device::Device;
use crate::error::RuntimeError;
use crate::tensor::DeviceTensor;

// ---------------------------------------------------------------------------------------
// Finding the libraries.

/// Makes cuDNN 9 available to cudarc (see [`crate::libs`]): where it was found, or an
/// error that says cuDNN 9 is needed and lists where it was looked for.
pub fn cudnn_library() -> Result<String, RuntimeError> {
    crate::libs::cudnn()
}

/// Makes cuBLAS 13 available to cudarc (see [`crate::libs`]).
pub fn cublas_library() -> Result<String, RuntimeError> {
    crate::libs::cublas()
}

// ---------------------------------------------------------------------------------------
// Problems and checks.

/// How convolutions multiply: `Tf32` is what PyTorch does by default for cuDNN convolutions
/// (`torch.backends.cudnn.allow_tf32 = True`); `F32` is full precision (tests compare with
/// the CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvMath {
    Tf32,
    F32,
}

impl ConvMath {
    /// The descriptor's math type, as PyTorch sets it: default math lets cuDNN use TF32
    /// tensor cores on f32 data, FMA math forbids them.
    fn base(self) -> sys::cudnnMathType_t {
        match self {
            ConvMath::Tf32 => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
            ConvMath::F32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
        }
    }
}

/// The three passes of a convolution, each with its own algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPass {
    Forward,
    BackwardData,
    BackwardFilter,
}

impl fmt::Display for ConvPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConvPass::Forward => "forward",
            ConvPass::BackwardData => "backward-data",
            ConvPass::BackwardFilter => "backward-filter",
        })
    }
}

/// The NCHW shapes of one convolution problem, checked against what cuDNN's descriptors can
/// hold (every tensor below 2^31 values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShapes {
    /// `[images, in, H, W]`.
    pub input: [usize; 4],
    /// `[out, in, k, k]`.
    pub weight: [usize; 4],
    /// `[images, out, OH, OW]`.
    pub output: [usize; 4],
}

/// cuDNN's legacy descriptors count values in `int`.
const MAX_VALUES: usize = i32::MAX as usize;

impl ConvShapes {
    pub fn new(conv: &Conv2d, input: ImageShape, images: usize) -> Result<Self, RuntimeError> {
        if images == 0 {
            return Err(RuntimeError::Shape(
                "conv2d on the GPU got 0 images: give it at least one".into(),
            ));
        }
        if conv.in_channels == 0 || conv.out_channels == 0 {
            return Err(RuntimeError::Shape(format!(
                "conv2d needs at least one input and one output channel, got {} -> {}",
                conv.in_channels, conv.out_channels
            )));
        }
        let output = conv
            .output(input)
            .map_err(|e| RuntimeError::Shape(e.to_string()))?;
        let shapes = Self {
            input: [images, input.channels, input.height, input.width],
            weight: conv.weight_shape(),
            output: [images, output.channels, output.height, output.width],
        };
        for (name, dims) in [
            ("input", shapes.input),
            ("weight", shapes.weight),
            ("output", shapes.output),
        ] {
            let values = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if values.is_none_or(|v| v > MAX_VALUES) {
                return Err(RuntimeError::Shape(format!(
                    "conv2d {name} {dims:?} has more values than cuDNN takes in one tensor (2^31 - 1): run fewer images per call"
                )));
            }
        }
        if conv.stride > MAX_VALUES || conv.padding > MAX_VALUES {
            return Err(RuntimeError::Shape(format!(
                "conv2d stride {} or padding {} does not fit cuDNN's 32-bit settings",
                conv.stride, conv.padding
            )));
        }
        Ok(shapes)
    }

    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    pub fn weight_len(&self) -> usize {
        self.weight.iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.output.iter().product()
    }
}

/// Checks that `t` is f32 on `device` with `expected` values; `what` says what it should
/// hold (made only for the error).
pub(crate) fn check_f32(
    device: &Device,
    (op, arg): (&str, &str),
    t: &DeviceTensor,
    expected: usize,
    what: &dyn Fn() -> String,
) -> Result<(), RuntimeError> {
    let ordinal = t.device().info.ordinal;
    if ordinal != device.info.ordinal {
        return Err(RuntimeError::Shape(format!(
            "{op}: `{arg}` is on device {ordinal}, the layer runs on device {}",
            device.info.ordinal
        )));
    }
    if t.dtype != Dtype::F32 {
        return Err(RuntimeError::Shape(format!(
            "{op}: `{arg}` must be f32, got a {} tensor of shape {:?}",
            t.dtype, t.shape
        )));
    }
    if t.len() != expected {
        return Err(RuntimeError::Shape(format!(
            "{op}: `{arg}` has {} values (shape {:?}), expected {expected} ({})",
            t.len(),
            t.shape,
            what()
        )));
    }
    Ok(())
}

/// Checks that a bias (or its gradient) is given exactly when the layer has one, with one
/// f32 value per output channel.
pub(crate) fn check_bias(
    device: &Device,
    (op, arg): (&str, &str),
    has_bias: bool,
    bias: Option<&DeviceTensor>,
    channels: usize,
) -> Result<(), RuntimeError> {
    match (has_bias, bias) {
        (true, Some(b)) => check_f32(device, (op, arg), b, channels, &|| {
            "one per output channel".into()
        }),
        (false, None) => Ok(()),
        (true, None) => Err(RuntimeError::Shape(format!(
            "{op}: the layer has a bias, so `{arg}` must be given"
        ))),
        (false, Some(_)) => Err(RuntimeError::Shape(format!(
            "{op}: the layer has no bias, so `{arg}` must be None"
        ))),
    }
}

/// Checks that an output does not share memory with an input (cuDNN and cuBLAS do not
/// compute in place).
pub(crate) fn check_distinct(
    op: &str,
    out: (&str, &DeviceTensor),
    input: (&str, &DeviceTensor),
) -> Result<(), RuntimeError> {
    if !out.1.is_empty() && !input.1.is_empty() && out.1.ptr() == input.1.ptr() {
        return Err(RuntimeError::Shape(format!(
            "{op}: `{}` and `{}` are the same memory; give the output its own tensor",
            out.0, input.0
        )));
    }
    Ok(())
}

/// Sets every byte of `bytes` bytes at `ptr` to zero, on the device's stream.
pub(crate) fn zero_bytes(device: &Device, ptr: u64, bytes: usize) -> Result<(), RuntimeError> {
    if bytes == 0 {
        return Ok(());
    }
    // SAFETY: callers pass the address and size of a live tensor; work on it is ordered by
    // the device's one stream.
    unsafe { cudarc::driver::result::memset_d8_async(ptr, 0, bytes, device.stream.cu_stream()) }
        .map_err(|e| RuntimeError::driver("zeroing a tensor", e))
}

// ---------------------------------------------------------------------------------------
// Bias kernels (shared with the linear layers).

/// Per-channel bias for `[N, C, P]` f32 tensors: the forward add, and the gradient summed
/// over `N` and `P` in double precision in an order fixed by the problem's shape alone, so
/// it is the same on every run and every device.
pub const BIAS_KERNELS_SOURCE: &str = r#"// Generated by snn-runtime: per-channel bias, forward and gradient, for [N, C, P] tensors.
extern "C" __global__ void snn_bias_add(float* __restrict__ y, const float* __restrict__ bias,
                                        const long long total, const long long channels,
                                        const long long plane) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        y[i] += bias[(i / plane) % channels];
    }
}

// partial[c * gridDim.y + s] = the sum of dy[n, c, :] over the images n of chunk s.
extern "C" __global__ void __launch_bounds__(256) snn_bias_grad_partial(
    const float* __restrict__ dy, double* __restrict__ partial, const long long images,
    const long long channels, const long long plane, const long long chunk) {
    __shared__ double sums[256];
    const long long c = blockIdx.x;
    const long long first = (long long)blockIdx.y * chunk;
    const long long last = first + chunk < images ? first + chunk : images;
    const long long count = (last - first) * plane;
    double acc = 0.0;
    for (long long j = threadIdx.x; j < count; j += 256) {
        const long long n = first + j / plane, p = j % plane;
        acc += (double)dy[(n * channels + c) * plane + p];
    }
    sums[threadIdx.x] = acc;
    __syncthreads();
    for (int width = 128; width > 0; width >>= 1) {
        if (threadIdx.x < width) sums[threadIdx.x] += sums[threadIdx.x + width];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[c * gridDim.y + blockIdx.y] = sums[0];
}

// dbias[c] = the sum of partial[c, :], in order.
extern "C" __global__ void snn_bias_grad_finish(const double* __restrict__ partial,
                                                float* __restrict__ dbias,
                                                const long long channels,
                                                const long long splits) {
    const long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (c >= channels) return;
    double acc = 0.0;
    for (long long s = 0; s < splits; ++s) acc += partial[c * splits + s];
    dbias[c] = (float)acc;
}
"#;

/// Values each block of the bias gradient sums (before splitting is capped).
const BIAS_VALUES_PER_BLOCK: usize = 16384;
/// At most this many blocks per channel (CUDA allows 65535 in a grid's y).
const BIAS_MAX_SPLITS: usize = 1024;

/// The loaded bias kernels.
#[derive(Debug)]
pub(crate) struct BiasKernels {
    add: CudaFunction,
    partial: CudaFunction,
    finish: CudaFunction,
}

impl BiasKernels {
    pub(crate) fn load(device: &Arc<Device>) -> Result<Self, RuntimeError> {
        let module = device.cache.module(
            &device.ctx,
            BIAS_KERNELS_SOURCE,
            "snn_bias",
            &device.info.arch(),
            &COMPILE_OPTIONS,
        )?;
        let load = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| RuntimeError::driver(format!("loading `{name}`"), e))
        };
        Ok(Self {
            add: load("snn_bias_add")?,
            partial: load("snn_bias_grad_partial")?,
            finish: load("snn_bias_grad_finish")?,
        })
    }

    /// `y[n, c, p] += bias[c]` for f32 `y` `[images, channels, plane]` at `y` and `bias`
    /// `[channels]` at `bias`.
    pub(crate) fn add(
        &self,
        device: &Arc<Device>,
        y: u64,
        bias: u64,
        (images, channels, plane): (usize, usize, usize),
    ) -> Result<(), RuntimeError> {
        let total = images * channels * plane;
        if total == 0 {
            return Ok(());
        }
        let block = 256u32;
        let grid = total
            .div_ceil(block as usize)
            .min(device.info.multiprocessors as usize * 32) as u32;
        let (total, channels, plane) = (total as i64, channels as i64, plane as i64);
        let mut b = device.stream.launch_builder(&self.add);
        b.arg(&y).arg(&bias).arg(&total).arg(&channels).arg(&plane);
        let cfg = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match `snn_bias_add`'s parameters in order and type; `y`
        // holds `total` f32 values and `bias` `channels`.
        unsafe { b.launch(cfg) }
            .map_err(|e| RuntimeError::driver("launching `snn_bias_add`", e))?;
        Ok(())
    }

    /// `dbias[c]` = the sum of f32 `dy` `[images, channels, plane]` over images and plane
    /// (overwritten).
    pub(crate) fn grad(
        &self,
        device: &Arc<Device>,
        dy: u64,
        dbias: u64,
        (images, channels, plane): (usize, usize, usize),
    ) -> Result<(), RuntimeError> {
        if channels == 0 {
            return Ok(());
        }
        if images == 0 || plane == 0 {
            return zero_bytes(device, dbias, channels * 4);
        }
        let mut chunk = BIAS_VALUES_PER_BLOCK.div_ceil(plane).min(images);
        if images.div_ceil(chunk) > BIAS_MAX_SPLITS {
            chunk = images.div_ceil(BIAS_MAX_SPLITS);
        }
        let splits = images.div_ceil(chunk);
        if channels > i32::MAX as usize {
            return Err(RuntimeError::Shape(format!(
                "bias gradient over {channels} channels: at most 2^31 - 1 are supported"
            )));
        }
        // Every one of the `channels * splits` values is written by exactly one block of
        // `snn_bias_grad_partial` before `snn_bias_grad_finish` reads it.
        // Kept alive until both kernels are queued, so that the pool does not hand its
        // memory out in between.
        let scratch = DeviceTensor::empty(device, Dtype::F64, &[channels * splits])?;
        let partial = scratch.ptr();
        let (images_i, channels_i, plane_i, chunk_i, splits_i) = (
            images as i64,
            channels as i64,
            plane as i64,
            chunk as i64,
            splits as i64,
        );
        let mut b = device.stream.launch_builder(&self.partial);
        b.arg(&dy)
            .arg(&partial)
            .arg(&images_i)
            .arg(&channels_i)
            .arg(&plane_i)
            .arg(&chunk_i);
        let cfg = LaunchConfig {
            grid_dim: (channels as u32, splits as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match `snn_bias_grad_partial`'s parameters in order and
        // type; `dy` holds images * channels * plane f32 values and `partial` has one double
        // per block; the block size is the 256 the kernel's shared array is sized for.
        unsafe { b.launch(cfg) }
            .map_err(|e| RuntimeError::driver("launching `snn_bias_grad_partial`", e))?;
        let block = 128u32;
        let mut b = device.stream.launch_builder(&self.finish);
        b.arg(&partial).arg(&dbias).arg(&channels_i).arg(&splits_i);
        let cfg = LaunchConfig {
            grid_dim: (channels.div_ceil(block as usize) as u32, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match `snn_bias_grad_finish`'s parameters in order and type;
        // `partial` holds channels * splits doubles and `dbias` channels f32 values.
        unsafe { b.launch(cfg) }
            .map_err(|e| RuntimeError::driver("launching `snn_bias_grad_finish`", e))?;
        drop(scratch);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// cuDNN handle, workspace and remembered algorithms.

/// An algorithm of one of the three passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    Data(sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

impl Algo {
    fn name(self) -> String {
        match self {
            Algo::Forward(a) => format!("{a:?}"),
            Algo::Data(a) => format!("{a:?}"),
            Algo::Filter(a) => format!("{a:?}"),
        }
    }
}

const FORWARD_ALGOS: [sys::cudnnConvolutionFwdAlgo_t; 8] = {
    use sys::cudnnConvolutionFwdAlgo_t::*;
    [
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
    ]
};

const DATA_ALGOS: [sys::cudnnConvolutionBwdDataAlgo_t; 6] = {
    use sys::cudnnConvolutionBwdDataAlgo_t::*;
    [
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED,
    ]
};

const FILTER_ALGOS: [sys::cudnnConvolutionBwdFilterAlgo_t; 7] = {
    use sys::cudnnConvolutionBwdFilterAlgo_t::*;
    [
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING,
    ]
};

/// One algorithm that ran in cuDNN's search, with what it needed.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Candidate {
    algo: Algo,
    math: sys::cudnnMathType_t,
    workspace: usize,
    millis: f32,
    deterministic: bool,
}

/// The algorithm a pass runs with, as cuDNN's search reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvAlgorithm {
    /// cuDNN's name, e.g. `CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM`.
    pub name: String,
    /// The math type it runs with (`CUDNN_FMA_MATH` never uses tensor cores).
    pub math: String,
    pub workspace_bytes: usize,
    /// Its time in the search.
    pub millis: f32,
    /// Whether cuDNN guarantees the same result on every run.
    pub deterministic: bool,
}

/// What the search results are remembered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ProblemKey {
    conv: Conv2d,
    input: ImageShape,
    images: usize,
    math: ConvMath,
    pass: ConvPass,
    deterministic: bool,
}

/// The raw cuDNN handle.
struct Handle(sys::cudnnHandle_t);

// SAFETY: a cuDNN handle may be used from any thread, one thread at a time; `Cudnn` only
// touches it with its mutex held.
unsafe impl Send for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle was created by `cudnnCreate` and is destroyed once, here.
        // An error while tearing down cannot be acted on.
        let _ = unsafe { dnn::destroy_handle(self.0) };
    }
}

/// The mutable part of [`Cudnn`], behind its mutex.
struct State {
    handle: Handle,
    /// Bytes from the device's pool, so that its statistics count them.
    workspace: Option<DeviceTensor>,
    search_limit: usize,
    /// Take only deterministic algorithms (when any runs).
    deterministic: bool,
    chosen: HashMap<ProblemKey, Vec<Candidate>>,
    bias: Option<Arc<BiasKernels>>,
}

impl State {
    /// The workspace's address and size.
    fn workspace(&self) -> (u64, usize) {
        self.workspace
            .as_ref()
            .map_or((0, 0), |ws| (ws.ptr(), ws.num_bytes()))
    }

    /// Grows the workspace to at least `bytes` (the old one is freed first, in stream
    /// order, so growing never holds both).
    fn ensure_workspace(&mut self, device: &Arc<Device>, bytes: usize) -> Result<(), RuntimeError> {
        if bytes <= self.workspace().1 {
            return Ok(());
        }
        self.workspace = None;
        // Scratch space that cuDNN writes before it reads.
        self.workspace = Some(DeviceTensor::empty(device, Dtype::U8, &[bytes])?);
        Ok(())
    }

    fn bias_kernels(&mut self, device: &Arc<Device>) -> Result<Arc<BiasKernels>, RuntimeError> {
        if let Some(k) = &self.bias {
            return Ok(k.clone());
        }
        let k = Arc::new(BiasKernels::load(device)?);
        self.bias = Some(k.clone());
        Ok(k)
    }
}

/// The search workspace cuDNN gets unless told otherwise: algorithms that need more are not
/// considered, so the workspace never grows past it.
pub const DEFAULT_SEARCH_WORKSPACE: usize = 256 << 20;

/// How many times a problem's algorithms are timed before the fastest is chosen.
const SEARCH_ROUNDS: usize = 3;

/// cuDNN for one device: the handle (on the device's stream), a workspace buffer grown on
/// demand and reused by every convolution, and the algorithms chosen per problem
/// (remembered per (conv, input shape, images, math, pass)).
pub struct Cudnn {
    device: Arc<Device>,
    state: Mutex<State>,
}

impl fmt::Debug for Cudnn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Cudnn")
            .field("device", &self.device.info.ordinal)
            .field("workspace_bytes", &st.workspace().1)
            .field("search_limit", &st.search_limit)
            .field("problems", &st.chosen.len())
            .finish()
    }
}

impl Cudnn {
    /// Loads cuDNN 9 and creates a handle on `device`'s stream.
    pub fn new(device: &Arc<Device>) -> Result<Arc<Self>, RuntimeError> {
        let path = cudnn_library()?;
        let version = dnn::get_version();
        if version < 90000 {
            return Err(RuntimeError::invalid(
                "loading cuDNN",
                format!(
                    "cudarc loaded cuDNN {}.{}.{} (found {path}), snn needs cuDNN 9: put cuDNN 9 first on LD_LIBRARY_PATH",
                    version / 10000,
                    version / 100 % 100,
                    version % 100
                ),
            ));
        }
        device
            .ctx
            .bind_to_thread()
            .map_err(|e| RuntimeError::driver("binding the context for cuDNN", e))?;
        let handle =
            Handle(dnn::create_handle().map_err(|e| RuntimeError::cudnn("cudnnCreate", e))?);
        // SAFETY: the handle is live and the stream belongs to the device's context, which
        // outlives the handle (`Cudnn` holds the device).
        unsafe { dnn::set_stream(handle.0, device.stream.cu_stream() as sys::cudaStream_t) }
            .map_err(|e| RuntimeError::cudnn("cudnnSetStream", e))?;
        Ok(Arc::new(Self {
            device: device.clone(),
            state: Mutex::new(State {
                handle,
                workspace: None,
                search_limit: DEFAULT_SEARCH_WORKSPACE,
                deterministic: true,
                chosen: HashMap::new(),
                bias: None,
            }),
        }))
    }

    /// The workspace's size now, in bytes.
    pub fn workspace_bytes(&self) -> usize {
        self.lock().workspace().1
    }

    /// The most workspace a search offers cuDNN (and so the most any chosen algorithm
    /// uses); [`DEFAULT_SEARCH_WORKSPACE`] unless set.
    pub fn search_limit(&self) -> usize {
        self.lock().search_limit
    }

    /// Sets the search's workspace limit for problems searched from now on (more can find
    /// faster algorithms, e.g. FFT ones, at the cost of memory).
    pub fn set_search_limit(&self, bytes: usize) {
        self.lock().search_limit = bytes;
    }

    /// Whether only deterministic algorithms are taken (when any runs; the default), so
    /// gradients repeat bit for bit, or the fastest of all (PyTorch's default,
    /// `cudnn.deterministic = False`). Applies to problems searched from now on.
    pub fn set_deterministic(&self, on: bool) {
        self.lock().deterministic = on;
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Cudnn {
    fn drop(&mut self) {
        // cuDNN frees its resources in the current context: make it the device's before the
        // fields (the handle, the workspace) are dropped. A failure here cannot be acted on.
        let _ = self.device.ctx.bind_to_thread();
    }
}

// ---------------------------------------------------------------------------------------
// Descriptors.

/// Declares an owning wrapper for a cuDNN descriptor.
macro_rules! descriptor {
    ($name:ident, $raw:ty, $destroy:path) => {
        struct $name($raw);

        // SAFETY: a descriptor is host memory that cuDNN reads during calls; `ConvGpu` only
        // changes it (the math type) with the `Cudnn` mutex held, as it does every call.
        unsafe impl Send for $name {}
        // SAFETY: as above.
        unsafe impl Sync for $name {}

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: created once by cuDNN and destroyed once, here.
                let _ = unsafe { $destroy(self.0) };
            }
        }
    };
}

descriptor!(
    TensorDesc,
    sys::cudnnTensorDescriptor_t,
    dnn::destroy_tensor_descriptor
);
descriptor!(
    FilterDesc,
    sys::cudnnFilterDescriptor_t,
    dnn::destroy_filter_descriptor
);
descriptor!(
    ConvDesc,
    sys::cudnnConvolutionDescriptor_t,
    dnn::destroy_convolution_descriptor
);

/// `usize` dimensions as cuDNN's `int`s (checked by [`ConvShapes::new`]).
fn ints(dims: [usize; 4]) -> [c_int; 4] {
    dims.map(|d| d as c_int)
}

fn tensor_desc(dims: [usize; 4]) -> Result<TensorDesc, RuntimeError> {
    let desc = TensorDesc(
        dnn::create_tensor_descriptor()
            .map_err(|e| RuntimeError::cudnn("cudnnCreateTensorDescriptor", e))?,
    );
    // SAFETY: the descriptor was just created.
    unsafe {
        dnn::set_tensor4d_descriptor(
            desc.0,
            sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
            sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            ints(dims),
        )
    }
    .map_err(|e| RuntimeError::cudnn("cudnnSetTensor4dDescriptor", e))?;
    Ok(desc)
}

// ---------------------------------------------------------------------------------------
// One convolution problem.

/// One convolution problem (a layer at one input shape and image count) with its
/// descriptors; its forward / backward-data / backward-filter algorithms are chosen by
/// cuDNN's search (`cudnnFind*AlgorithmEx`) on each pass's first call, once per problem, and
/// remembered in [`Cudnn`].
pub struct ConvGpu {
    cudnn: Arc<Cudnn>,
    conv: Conv2d,
    input: ImageShape,
    output: ImageShape,
    images: usize,
    math: ConvMath,
    shapes: ConvShapes,
    x_desc: TensorDesc,
    y_desc: TensorDesc,
    w_desc: FilterDesc,
    /// One per pass (forward, backward-data, backward-filter), since each pass's algorithm
    /// may need its own math type.
    conv_descs: [ConvDesc; 3],
}

impl fmt::Debug for ConvGpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConvGpu")
            .field("conv", &self.conv)
            .field("input", &self.input)
            .field("output", &self.output)
            .field("images", &self.images)
            .field("math", &self.math)
            .finish()
    }
}

/// The device addresses a pass works on.
#[derive(Clone, Copy, Debug)]
enum Ptrs {
    Forward {
        x: u64,
        w: u64,
        y: u64,
    },
    /// `accumulate`: add to `dx` (cuDNN's beta = 1) instead of overwriting it.
    Data {
        dy: u64,
        w: u64,
        dx: u64,
        accumulate: bool,
    },
    Filter {
        x: u64,
        dy: u64,
        dw: u64,
    },
}

impl Ptrs {
    fn pass(self) -> ConvPass {
        match self {
            Ptrs::Forward { .. } => ConvPass::Forward,
            Ptrs::Data { .. } => ConvPass::BackwardData,
            Ptrs::Filter { .. } => ConvPass::BackwardFilter,
        }
    }
}

fn pass_index(pass: ConvPass) -> usize {
    match pass {
        ConvPass::Forward => 0,
        ConvPass::BackwardData => 1,
        ConvPass::BackwardFilter => 2,
    }
}

/// A device address as the `void*` cuDNN takes.
fn vp(ptr: u64) -> *mut c_void {
    ptr as usize as *mut c_void
}

impl ConvGpu {
    /// Describes `conv` over `images` images of shape `input`, with `math`.
    pub fn new(
        cudnn: &Arc<Cudnn>,
        conv: &Conv2d,
        input: ImageShape,
        images: usize,
        math: ConvMath,
    ) -> Result<Self, RuntimeError> {
        let shapes = ConvShapes::new(conv, input, images)?;
        let output = ImageShape::new(shapes.output[1], shapes.output[2], shapes.output[3]);
        let x_desc = tensor_desc(shapes.input)?;
        let y_desc = tensor_desc(shapes.output)?;
        let w_desc = FilterDesc(
            dnn::create_filter_descriptor()
                .map_err(|e| RuntimeError::cudnn("cudnnCreateFilterDescriptor", e))?,
        );
        // SAFETY: the descriptor was just created.
        unsafe {
            dnn::set_filter4d_descriptor(
                w_desc.0,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                ints(shapes.weight),
            )
        }
        .map_err(|e| RuntimeError::cudnn("cudnnSetFilter4dDescriptor", e))?;
        let conv_desc = || -> Result<ConvDesc, RuntimeError> {
            let desc = ConvDesc(
                dnn::create_convolution_descriptor()
                    .map_err(|e| RuntimeError::cudnn("cudnnCreateConvolutionDescriptor", e))?,
            );
            let (pad, stride) = (conv.padding as c_int, conv.stride as c_int);
            // SAFETY: the descriptor was just created.
            unsafe {
                dnn::set_convolution2d_descriptor(
                    desc.0,
                    pad,
                    pad,
                    stride,
                    stride,
                    1,
                    1,
                    sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                    sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                )
            }
            .map_err(|e| RuntimeError::cudnn("cudnnSetConvolution2dDescriptor", e))?;
            // SAFETY: as above.
            unsafe { dnn::set_convolution_math_type(desc.0, math.base()) }
                .map_err(|e| RuntimeError::cudnn("cudnnSetConvolutionMathType", e))?;
            Ok(desc)
        };
        let conv_descs = [conv_desc()?, conv_desc()?, conv_desc()?];
        // cuDNN's own idea of the output shape must be ours (PyTorch's).
        let mut dims: [c_int; 4] = [0; 4];
        // SAFETY: live descriptors and four `int` out-parameters.
        unsafe {
            sys::cudnnGetConvolution2dForwardOutputDim(
                conv_descs[0].0,
                x_desc.0,
                w_desc.0,
                &mut dims[0],
                &mut dims[1],
                &mut dims[2],
                &mut dims[3],
            )
        }
        .result()
        .map_err(|e| RuntimeError::cudnn("cudnnGetConvolution2dForwardOutputDim", e))?;
        if dims != ints(shapes.output) {
            return Err(RuntimeError::Shape(format!(
                "cuDNN computes an output of {dims:?} for conv2d {conv:?} over {images} images of {input}, expected {:?}",
                shapes.output
            )));
        }
        Ok(Self {
            cudnn: cudnn.clone(),
            conv: *conv,
            input,
            output,
            images,
            math,
            shapes,
            x_desc,
            y_desc,
            w_desc,
            conv_descs,
        })
    }

    /// The shape of one output image.
    pub fn output(&self) -> ImageShape {
        self.output
    }

    pub fn shapes(&self) -> &ConvShapes {
        &self.shapes
    }

    /// The algorithm `pass` runs with, once its first call has searched for it.
    pub fn algorithm(&self, pass: ConvPass) -> Option<ConvAlgorithm> {
        let st = self.cudnn.lock();
        let c = st.chosen.get(&self.key(pass, st.deterministic))?.first()?;
        Some(ConvAlgorithm {
            name: c.algo.name(),
            math: format!("{:?}", self.math_for(c)),
            workspace_bytes: c.workspace,
            millis: c.millis,
            deterministic: c.deterministic,
        })
    }

    /// `y = conv(x, weight) + bias`: `x` `[images, in, H, W]`, `weight` `[out, in, k, k]`,
    /// `bias` `[out]` (given exactly when the layer has one), `y` `[images, out, OH, OW]`
    /// (overwritten).
    pub fn forward(
        &self,
        x: &DeviceTensor,
        weight: &DeviceTensor,
        bias: Option<&DeviceTensor>,
        y: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        const OP: &str = "conv2d forward (cuDNN)";
        self.check(OP, "x", x, self.shapes.input)?;
        self.check(OP, "weight", weight, self.shapes.weight)?;
        self.check(OP, "y", y, self.shapes.output)?;
        check_bias(
            &self.cudnn.device,
            (OP, "bias"),
            self.conv.bias,
            bias,
            self.conv.out_channels,
        )?;
        check_distinct(OP, ("y", y), ("x", x))?;
        check_distinct(OP, ("y", y), ("weight", weight))?;
        let mut st = self.cudnn.lock();
        self.run(
            &mut st,
            Ptrs::Forward {
                x: x.ptr(),
                w: weight.ptr(),
                y: y.ptr(),
            },
        )?;
        if let Some(b) = bias {
            let k = st.bias_kernels(&self.cudnn.device)?;
            k.add(&self.cudnn.device, y.ptr(), b.ptr(), self.bias_dims())?;
        }
        Ok(())
    }

    /// `dx` = the gradient of the forward with respect to `x`, from `dy` `[images, out, OH,
    /// OW]` and `weight` (overwritten).
    pub fn backward_data(
        &self,
        dy: &DeviceTensor,
        weight: &DeviceTensor,
        dx: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        self.backward_data_into(dy, weight, dx, false)
    }

    /// [`ConvGpu::backward_data`] that adds to `dx` when `accumulate` (a tensor that feeds
    /// several layers collects its gradient in one pass, with no separate sum). The
    /// algorithm search writes its output, so the first call of a problem that
    /// accumulates computes into a scratch tensor and adds that.
    pub fn backward_data_into(
        &self,
        dy: &DeviceTensor,
        weight: &DeviceTensor,
        dx: &DeviceTensor,
        accumulate: bool,
    ) -> Result<(), RuntimeError> {
        const OP: &str = "conv2d backward-data (cuDNN)";
        self.check(OP, "dy", dy, self.shapes.output)?;
        self.check(OP, "weight", weight, self.shapes.weight)?;
        self.check(OP, "dx", dx, self.shapes.input)?;
        check_distinct(OP, ("dx", dx), ("dy", dy))?;
        check_distinct(OP, ("dx", dx), ("weight", weight))?;
        let mut st = self.cudnn.lock();
        let searched = st
            .chosen
            .contains_key(&self.key(ConvPass::BackwardData, st.deterministic));
        if accumulate && !searched {
            let scratch = DeviceTensor::empty(dx.device(), Dtype::F32, &dx.shape)?;
            self.run(
                &mut st,
                Ptrs::Data {
                    dy: dy.ptr(),
                    w: weight.ptr(),
                    dx: scratch.ptr(),
                    accumulate: false,
                },
            )?;
            drop(st);
            return crate::nn::kernels::add_assign(dx.device(), dx, &scratch);
        }
        self.run(
            &mut st,
            Ptrs::Data {
                dy: dy.ptr(),
                w: weight.ptr(),
                dx: dx.ptr(),
                accumulate,
            },
        )
    }

    /// `dweight` (summed over the images) and `dbias` (given exactly when the layer has a
    /// bias) from the forward's `x` and `dy` (overwritten).
    pub fn backward_filter(
        &self,
        x: &DeviceTensor,
        dy: &DeviceTensor,
        dweight: &DeviceTensor,
        dbias: Option<&DeviceTensor>,
    ) -> Result<(), RuntimeError> {
        const OP: &str = "conv2d backward-filter (cuDNN)";
        self.check(OP, "x", x, self.shapes.input)?;
        self.check(OP, "dy", dy, self.shapes.output)?;
        self.check(OP, "dweight", dweight, self.shapes.weight)?;
        check_bias(
            &self.cudnn.device,
            (OP, "dbias"),
            self.conv.bias,
            dbias,
            self.conv.out_channels,
        )?;
        check_distinct(OP, ("dweight", dweight), ("x", x))?;
        check_distinct(OP, ("dweight", dweight), ("dy", dy))?;
        if let Some(db) = dbias {
            check_distinct(OP, ("dbias", db), ("dy", dy))?;
        }
        let mut st = self.cudnn.lock();
        self.run(
            &mut st,
            Ptrs::Filter {
                x: x.ptr(),
                dy: dy.ptr(),
                dw: dweight.ptr(),
            },
        )?;
        if let Some(db) = dbias {
            let k = st.bias_kernels(&self.cudnn.device)?;
            k.grad(&self.cudnn.device, dy.ptr(), db.ptr(), self.bias_dims())?;
        }
        Ok(())
    }

    /// `(images, out channels, output plane)`, the bias kernels' view of `y`.
    fn bias_dims(&self) -> (usize, usize, usize) {
        (self.images, self.output.channels, self.output.plane())
    }

    fn check(
        &self,
        op: &str,
        arg: &str,
        t: &DeviceTensor,
        dims: [usize; 4],
    ) -> Result<(), RuntimeError> {
        let what = || {
            format!(
                "{dims:?} for {} images of {} through {}x{} stride {} padding {}",
                self.images,
                self.input,
                self.conv.kernel,
                self.conv.kernel,
                self.conv.stride,
                self.conv.padding
            )
        };
        check_f32(
            &self.cudnn.device,
            (op, arg),
            t,
            dims.iter().product(),
            &what,
        )
    }

    fn key(&self, pass: ConvPass, deterministic: bool) -> ProblemKey {
        ProblemKey {
            deterministic,
            conv: Conv2d {
                bias: false,
                ..self.conv
            },
            input: self.input,
            images: self.images,
            math: self.math,
            pass,
        }
    }

    /// Runs one pass: searches for its algorithms on the first call of the problem, then
    /// runs the fastest one whose workspace can be had (falling back to ones that need less
    /// when memory runs out).
    fn run(&self, st: &mut State, ptrs: Ptrs) -> Result<(), RuntimeError> {
        let device = &self.cudnn.device;
        device
            .ctx
            .bind_to_thread()
            .map_err(|e| RuntimeError::driver("binding the context for cuDNN", e))?;
        let pass = ptrs.pass();
        let key = self.key(pass, st.deterministic);
        if !st.chosen.contains_key(&key) {
            let found = self.search(st, ptrs)?;
            st.chosen.insert(key, found);
        }
        let mut refused = Vec::new();
        loop {
            let Some(c) = st.chosen.get(&key).and_then(|v| v.first()).copied() else {
                // Search again next time: memory may have been freed by then.
                st.chosen.remove(&key);
                return Err(RuntimeError::OutOfMemory {
                    doing: format!(
                        "finding workspace for the conv2d {pass} of {:?} over {} images of {} (no algorithm's workspace could be allocated: {refused:?})",
                        self.conv, self.images, self.input
                    ),
                });
            };
            match st.ensure_workspace(device, c.workspace) {
                Ok(()) => return self.launch(st, ptrs, c),
                Err(RuntimeError::OutOfMemory { .. }) => {
                    refused.push((c.algo.name(), c.workspace));
                    if let Some(v) = st.chosen.get_mut(&key) {
                        v.remove(0);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The math type `c` runs with: FMA for [`ConvMath::F32`] whatever the search reports
    /// (it never reports tensor-core results for it, see `search`), the reported one for
    /// TF32.
    fn math_for(&self, c: &Candidate) -> sys::cudnnMathType_t {
        match self.math {
            ConvMath::F32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
            ConvMath::Tf32 => c.math,
        }
    }

    fn launch(&self, st: &State, ptrs: Ptrs, c: Candidate) -> Result<(), RuntimeError> {
        let h = st.handle.0;
        let desc = self.conv_descs[pass_index(ptrs.pass())].0;
        // SAFETY: a live descriptor; the mutex is held, so no other call reads it.
        unsafe { dnn::set_convolution_math_type(desc, self.math_for(&c)) }
            .map_err(|e| RuntimeError::cudnn("cudnnSetConvolutionMathType", e))?;
        let (ws, ws_bytes) = st.workspace();
        let (one, zero) = (1.0f32, 0.0f32);
        let (one, zero) = (
            &one as *const f32 as *const c_void,
            &zero as *const f32 as *const c_void,
        );
        let mismatch = || RuntimeError::Shape(format!("internal: {c:?} for {ptrs:?}"));
        // In all three calls: the handle and descriptors are live and describe the tensors
        // behind the addresses, whose f32 lengths `forward` / `backward_*` checked against
        // these descriptors; the workspace holds `ws_bytes` >= what the algorithm needs; the
        // scalars are host f32s, as cuDNN takes for float data.
        match (ptrs, c.algo) {
            (Ptrs::Forward { x, w, y }, Algo::Forward(algo)) => {
                // SAFETY: as said above the match.
                unsafe {
                    dnn::convolution_forward(
                        h,
                        one,
                        self.x_desc.0,
                        vp(x),
                        self.w_desc.0,
                        vp(w),
                        desc,
                        algo,
                        vp(ws),
                        ws_bytes,
                        zero,
                        self.y_desc.0,
                        vp(y),
                    )
                }
                .map_err(|e| RuntimeError::cudnn("cudnnConvolutionForward", e))
            }
            (
                Ptrs::Data {
                    dy,
                    w,
                    dx,
                    accumulate,
                },
                Algo::Data(algo),
            ) => {
                // SAFETY: as said above the match.
                unsafe {
                    dnn::convolution_backward_data(
                        h,
                        one,
                        self.w_desc.0,
                        vp(w),
                        self.y_desc.0,
                        vp(dy),
                        desc,
                        algo,
                        vp(ws),
                        ws_bytes,
                        if accumulate { one } else { zero },
                        self.x_desc.0,
                        vp(dx),
                    )
                }
                .map_err(|e| RuntimeError::cudnn("cudnnConvolutionBackwardData", e))
            }
            (Ptrs::Filter { x, dy, dw }, Algo::Filter(algo)) => {
                // SAFETY: as said above the match.
                unsafe {
                    dnn::convolution_backward_filter(
                        h,
                        one,
                        self.x_desc.0,
                        vp(x),
                        self.y_desc.0,
                        vp(dy),
                        desc,
                        algo,
                        vp(ws),
                        ws_bytes,
                        zero,
                        self.w_desc.0,
                        vp(dw),
                    )
                }
                .map_err(|e| RuntimeError::cudnn("cudnnConvolutionBackwardFilter", e))
            }
            _ => Err(mismatch()),
        }
    }

    /// The workspace algorithm `algo` needs, or `None` where cuDNN does not support it here.
    fn workspace_of(&self, st: &State, pass: ConvPass, index: usize) -> Option<usize> {
        let (h, desc) = (st.handle.0, self.conv_descs[pass_index(pass)].0);
        // SAFETY: live handle and descriptors; the result is an out-value.
        let r = unsafe {
            match pass {
                ConvPass::Forward => dnn::get_convolution_forward_workspace_size(
                    h,
                    self.x_desc.0,
                    self.w_desc.0,
                    desc,
                    self.y_desc.0,
                    FORWARD_ALGOS[index],
                ),
                ConvPass::BackwardData => dnn::get_convolution_backward_data_workspace_size(
                    h,
                    self.w_desc.0,
                    self.y_desc.0,
                    desc,
                    self.x_desc.0,
                    DATA_ALGOS[index],
                ),
                ConvPass::BackwardFilter => dnn::get_convolution_backward_filter_workspace_size(
                    h,
                    self.x_desc.0,
                    self.y_desc.0,
                    desc,
                    self.w_desc.0,
                    FILTER_ALGOS[index],
                ),
            }
        };
        r.ok()
    }

    /// cuDNN's search for `ptrs`'s pass, on the call's own tensors (the output is written,
    /// and overwritten again by the real call). Returns the algorithms that ran, fastest
    /// first: only the deterministic ones when any is, and for [`ConvMath::F32`] only those
    /// without tensor cores.
    fn search(&self, st: &mut State, ptrs: Ptrs) -> Result<Vec<Candidate>, RuntimeError> {
        let device = self.cudnn.device.clone();
        let pass = ptrs.pass();
        let desc = self.conv_descs[pass_index(pass)].0;
        // SAFETY: a live descriptor; the mutex is held.
        unsafe { dnn::set_convolution_math_type(desc, self.math.base()) }
            .map_err(|e| RuntimeError::cudnn("cudnnSetConvolutionMathType", e))?;
        let count = match pass {
            ConvPass::Forward => FORWARD_ALGOS.len(),
            ConvPass::BackwardData => DATA_ALGOS.len(),
            ConvPass::BackwardFilter => FILTER_ALGOS.len(),
        };
        let limit = st.search_limit;
        let want = (0..count)
            .filter_map(|i| self.workspace_of(st, pass, i))
            .filter(|&b| b <= limit)
            .max()
            .unwrap_or(0);
        // The search's scratch: the shared workspace when big enough, else a temporary one,
        // halved while memory is short. The temporary one comes from the driver, not the
        // pool, so that it is given back after the search (searches happen once per
        // problem) and the shared workspace only grows to what the chosen algorithm needs.
        let mut scratch: Option<CudaSlice<u8>> = None;
        let (mut ws, mut ws_bytes) = st.workspace();
        let mut size = want;
        while size > ws_bytes {
            // SAFETY: scratch that cuDNN writes before it reads.
            match unsafe { device.stream.alloc::<u8>(size) } {
                Ok(buf) => {
                    ws = {
                        let (p, _sync) = buf.device_ptr(&device.stream);
                        p
                    };
                    ws_bytes = size;
                    scratch = Some(buf);
                }
                Err(e) => match RuntimeError::driver("allocating the search workspace", e) {
                    RuntimeError::OutOfMemory { .. } => size /= 2,
                    other => return Err(other),
                },
            }
        }
        let h = st.handle.0;
        let mut returned: c_int = 0;
        // One search: a results array of cuDNN's `$perf` type, filled by `$find` (an unsafe
        // call of `$call` that writes up to `count` entries and sets `returned`).
        macro_rules! find {
            ($perf:ty, $first:expr, $algo:path, $call:literal, |$results:ident| $find:expr) => {{
                let mut $results = vec![<$perf>::new_unrun($first); count];
                // SAFETY: live handle and descriptors describing the tensors the caller
                // checked; the results array holds `count` entries; the scratch holds
                // `ws_bytes`.
                unsafe { $find }
                    .result()
                    .map_err(|e| RuntimeError::cudnn($call, e))?;
                $results
                    .iter()
                    .take(returned.clamp(0, count as c_int) as usize)
                    .map(|p| {
                        let candidate = Candidate {
                            algo: $algo(p.algo),
                            math: p.mathType,
                            workspace: p.memory,
                            millis: p.time,
                            deterministic: p.determinism
                                == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
                        };
                        (candidate, p.status)
                    })
                    .collect()
            }};
        }
        // cuDNN times each algorithm once per search, and close timings swap places from
        // run to run: search a few times and rank by each algorithm's median time.
        let mut rounds = Vec::with_capacity(SEARCH_ROUNDS);
        for _ in 0..SEARCH_ROUNDS {
            let found: Vec<(Candidate, sys::cudnnStatus_t)> = match ptrs {
                Ptrs::Forward { x, w, y } => find!(
                    sys::cudnnConvolutionFwdAlgoPerf_t,
                    FORWARD_ALGOS[0],
                    Algo::Forward,
                    "cudnnFindConvolutionForwardAlgorithmEx",
                    |perf| sys::cudnnFindConvolutionForwardAlgorithmEx(
                        h,
                        self.x_desc.0,
                        vp(x),
                        self.w_desc.0,
                        vp(w),
                        desc,
                        self.y_desc.0,
                        vp(y),
                        count as c_int,
                        &mut returned,
                        perf.as_mut_ptr(),
                        vp(ws),
                        ws_bytes,
                    )
                ),
                Ptrs::Data { dy, w, dx, .. } => find!(
                    sys::cudnnConvolutionBwdDataAlgoPerf_t,
                    DATA_ALGOS[0],
                    Algo::Data,
                    "cudnnFindConvolutionBackwardDataAlgorithmEx",
                    |perf| sys::cudnnFindConvolutionBackwardDataAlgorithmEx(
                        h,
                        self.w_desc.0,
                        vp(w),
                        self.y_desc.0,
                        vp(dy),
                        desc,
                        self.x_desc.0,
                        vp(dx),
                        count as c_int,
                        &mut returned,
                        perf.as_mut_ptr(),
                        vp(ws),
                        ws_bytes,
                    )
                ),
                Ptrs::Filter { x, dy, dw } => find!(
                    sys::cudnnConvolutionBwdFilterAlgoPerf_t,
                    FILTER_ALGOS[0],
                    Algo::Filter,
                    "cudnnFindConvolutionBackwardFilterAlgorithmEx",
                    |perf| sys::cudnnFindConvolutionBackwardFilterAlgorithmEx(
                        h,
                        self.x_desc.0,
                        vp(x),
                        self.y_desc.0,
                        vp(dy),
                        desc,
                        self.w_desc.0,
                        vp(dw),
                        count as c_int,
                        &mut returned,
                        perf.as_mut_ptr(),
                        vp(ws),
                        ws_bytes,
                    )
                ),
            };
            rounds.push(found);
        }
        let mut found = rounds.first().cloned().unwrap_or_default();
        for (c, _) in &mut found {
            let mut times: Vec<f32> = rounds
                .iter()
                .flatten()
                .filter(|(o, st)| {
                    o.algo == c.algo
                        && o.math == c.math
                        && *st == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                })
                .map(|(o, _)| o.millis)
                .collect();
            if !times.is_empty() {
                times.sort_by(f32::total_cmp);
                c.millis = times[times.len() / 2];
            }
        }
        if st.deterministic {
            // Timings differ between runs, and so would the choice (different algorithms
            // round differently): rank by cuDNN's heuristics instead, which depend only on
            // the problem and the device, so every run takes the same algorithms.
            macro_rules! heuristic {
                ($perf:ty, $first:expr, $algo:path, $call:literal, |$results:ident| $get:expr) => {{
                    let mut $results = vec![<$perf>::new_unrun($first); count];
                    // SAFETY: live handle and descriptors; the results array holds `count`
                    // entries.
                    unsafe { $get }
                        .result()
                        .map_err(|e| RuntimeError::cudnn($call, e))?;
                    $results
                        .iter()
                        .take(returned.clamp(0, count as c_int) as usize)
                        .map(|p| $algo(p.algo))
                        .collect::<Vec<Algo>>()
                }};
            }
            let order = match ptrs {
                Ptrs::Forward { .. } => heuristic!(
                    sys::cudnnConvolutionFwdAlgoPerf_t,
                    FORWARD_ALGOS[0],
                    Algo::Forward,
                    "cudnnGetConvolutionForwardAlgorithm_v7",
                    |perf| sys::cudnnGetConvolutionForwardAlgorithm_v7(
                        h,
                        self.x_desc.0,
                        self.w_desc.0,
                        desc,
                        self.y_desc.0,
                        count as c_int,
                        &mut returned,
                        perf.as_mut_ptr(),
                    )
                ),
                Ptrs::Data { .. } => heuristic!(
                    sys::cudnnConvolutionBwdDataAlgoPerf_t,
                    DATA_ALGOS[0],
                    Algo::Data,
                    "cudnnGetConvolutionBackwardDataAlgorithm_v7",
                    |perf| sys::cudnnGetConvolutionBackwardDataAlgorithm_v7(
                        h,
                        self.w_desc.0,
                        self.y_desc.0,
                        desc,
                        self.x_desc.0,
                        count as c_int,
                        &mut returned,
                        perf.as_mut_ptr(),
                    )
                ),
                Ptrs::Filter { .. } => heuristic!(
                    sys::cudnnConvolutionBwdFilterAlgoPerf_t,
                    FILTER_ALGOS[0],
                    Algo::Filter,
                    "cudnnGetConvolutionBackwardFilterAlgorithm_v7",
                    |perf| sys::cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                        h,
                        self.x_desc.0,
                        self.y_desc.0,
                        desc,
                        self.w_desc.0,
                        count as c_int,
                        &mut returned,
                        perf.as_mut_ptr(),
                    )
                ),
            };
            for (c, _) in &mut found {
                c.millis = order
                    .iter()
                    .position(|a| *a == c.algo)
                    .map_or(f32::MAX, |i| i as f32);
            }
        }
        drop(scratch);
        let candidates = choose(self.math, st.deterministic, &found);
        if candidates.is_empty() {
            let tried: Vec<String> = found
                .iter()
                .map(|(c, status)| {
                    format!(
                        "{} ({status:?}, {} bytes, {:?})",
                        c.algo.name(),
                        c.workspace,
                        c.math
                    )
                })
                .collect();
            return Err(RuntimeError::invalid(
                format!(
                    "searching cuDNN's conv2d {pass} algorithms for {:?} over {} images of {} ({:?} math, {ws_bytes} bytes of workspace)",
                    self.conv, self.images, self.input, self.math
                ),
                format!("no algorithm ran: {}", tried.join("; ")),
            ));
        }
        Ok(candidates)
    }
}

/// A results entry that no algorithm has filled in (cuDNN overwrites the first `returned`).
trait NewUnrun<A> {
    fn new_unrun(algo: A) -> Self;
}

macro_rules! new_unrun {
    ($perf:ty, $algo:ty) => {
        impl NewUnrun<$algo> for $perf {
            fn new_unrun(algo: $algo) -> Self {
                Self {
                    algo,
                    status: sys::cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED,
                    time: 0.0,
                    memory: 0,
                    determinism: sys::cudnnDeterminism_t::CUDNN_NON_DETERMINISTIC,
                    mathType: sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
                    reserved: [0; 3],
                }
            }
        }
    };
}

new_unrun!(
    sys::cudnnConvolutionFwdAlgoPerf_t,
    sys::cudnnConvolutionFwdAlgo_t
);
new_unrun!(
    sys::cudnnConvolutionBwdDataAlgoPerf_t,
    sys::cudnnConvolutionBwdDataAlgo_t
);
new_unrun!(
    sys::cudnnConvolutionBwdFilterAlgoPerf_t,
    sys::cudnnConvolutionBwdFilterAlgo_t
);

/// The search results that may run, fastest first: those that succeeded, never with
/// conversion to f16 (`CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION`), without tensor cores for
/// [`ConvMath::F32`], and only the deterministic ones when any is.
fn choose(
    math: ConvMath,
    deterministic: bool,
    found: &[(Candidate, sys::cudnnStatus_t)],
) -> Vec<Candidate> {
    use sys::cudnnMathType_t::{CUDNN_TENSOR_OP_MATH, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION};
    let mut ok: Vec<Candidate> = found
        .iter()
        .filter(|(_, status)| *status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
        .map(|(c, _)| *c)
        .filter(|c| match math {
            ConvMath::Tf32 => c.math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION,
            ConvMath::F32 => !matches!(
                c.math,
                CUDNN_TENSOR_OP_MATH | CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
            ),
        })
        .collect();
    if deterministic && ok.iter().any(|c| c.deterministic) {
        ok.retain(|c| c.deterministic);
    }
    // cuDNN sorts by time already; a stable sort keeps its order for ties.
    ok.sort_by(|a, b| a.millis.total_cmp(&b.millis));
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(
        algo: usize,
        status: sys::cudnnStatus_t,
        millis: f32,
        deterministic: bool,
        math: sys::cudnnMathType_t,
    ) -> (Candidate, sys::cudnnStatus_t) {
        let candidate = Candidate {
            algo: Algo::Filter(FILTER_ALGOS[algo]),
            math,
            workspace: algo * 100,
            millis,
            deterministic,
        };
        (candidate, status)
    }

    #[test]
    fn the_choice_keeps_deterministic_successes_fastest_first() {
        use sys::cudnnMathType_t::*;
        use sys::cudnnStatus_t::*;
        let results = [
            found(0, CUDNN_STATUS_SUCCESS, 0.1, false, CUDNN_FMA_MATH),
            found(3, CUDNN_STATUS_SUCCESS, 0.3, true, CUDNN_TENSOR_OP_MATH),
            found(1, CUDNN_STATUS_SUCCESS, 0.4, true, CUDNN_FMA_MATH),
            found(2, CUDNN_STATUS_NOT_SUPPORTED, 0.0, true, CUDNN_FMA_MATH),
            found(5, CUDNN_STATUS_SUCCESS, 0.2, true, CUDNN_DEFAULT_MATH),
            found(
                6,
                CUDNN_STATUS_SUCCESS,
                0.05,
                true,
                CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION,
            ),
        ];
        let names = |v: Vec<Candidate>| v.iter().map(|c| c.algo).collect::<Vec<_>>();
        use sys::cudnnConvolutionBwdFilterAlgo_t::*;
        assert_eq!(
            names(choose(ConvMath::Tf32, true, &results)),
            [
                Algo::Filter(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED),
                Algo::Filter(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3),
                Algo::Filter(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1),
            ]
        );
        assert_eq!(
            names(choose(ConvMath::F32, true, &results)),
            [
                Algo::Filter(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED),
                Algo::Filter(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1),
            ]
        );
        // With no deterministic success, the non-deterministic ones are still taken.
        assert_eq!(
            names(choose(ConvMath::F32, true, &results[..1])),
            [Algo::Filter(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0)]
        );
        assert!(choose(ConvMath::F32, true, &results[3..4]).is_empty());
    }
}
