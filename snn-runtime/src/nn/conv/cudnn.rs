//! cuDNN for one device ([`Cudnn`]): the handle on the device's stream, the workspace that
//! every convolution shares, the algorithms chosen per problem, and the descriptors a
//! problem is described to cuDNN with.
//!
//! cudarc loads cuDNN by name and panics when it is missing, so [`Cudnn::new`] finds it
//! first ([`crate::libs::cudnn`]), turning a missing library into an error that lists where
//! it was looked for.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_int;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cudnn::result as dnn;
use cudarc::cudnn::result::CudnnError;
use cudarc::cudnn::sys;
use snn_codegen::Dtype;
use snn_nn::{Conv2d, ImageShape};

use super::remember::Remembered;
use super::search::Candidate;
use super::{ConvMath, ConvPass};
use crate::device::Device;
use crate::error::RuntimeError;
use crate::libs;
use crate::nn::linear::Cublas;
use crate::tensor::DeviceTensor;

owned!(
    /// A cuDNN handle (used with the `Cudnn` mutex held).
    Handle,
    sys::cudnnHandle_t,
    dnn::destroy_handle
);
owned!(
    TensorDesc,
    sys::cudnnTensorDescriptor_t,
    dnn::destroy_tensor_descriptor
);
owned!(
    FilterDesc,
    sys::cudnnFilterDescriptor_t,
    dnn::destroy_filter_descriptor
);
owned!(
    ConvDesc,
    sys::cudnnConvolutionDescriptor_t,
    dnn::destroy_convolution_descriptor
);

const NCHW: sys::cudnnTensorFormat_t = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
/// The data type of tensors and filters, and always the compute type (bf16 data
/// accumulates in f32).
const FLOAT: sys::cudnnDataType_t = sys::cudnnDataType_t::CUDNN_DATA_FLOAT;

/// cuDNN's data type for tensors of `math`.
fn data_type(math: ConvMath) -> sys::cudnnDataType_t {
    match math {
        ConvMath::Tf32 | ConvMath::F32 => FLOAT,
        ConvMath::Bf16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
    }
}

/// `usize` dimensions as cuDNN's `int`s (checked by [`super::ConvShapes::new`]).
pub(super) fn ints(dims: [usize; 4]) -> [c_int; 4] {
    dims.map(|d| d as c_int)
}

/// A descriptor that `create` makes and `set` sets up (`calls` names both for errors),
/// owned by `wrap` from the start, so that a failed setup destroys it.
fn described<R: Copy, D>(
    create: fn() -> Result<R, CudnnError>,
    wrap: fn(R) -> D,
    set: impl FnOnce(R) -> Result<(), CudnnError>,
    calls: [&str; 2],
) -> Result<D, RuntimeError> {
    let raw = create().map_err(|e| RuntimeError::cudnn(calls[0], e))?;
    let owned = wrap(raw);
    set(raw).map_err(|e| RuntimeError::cudnn(calls[1], e))?;
    Ok(owned)
}

impl TensorDesc {
    /// An NCHW tensor of `dims` holding `math`'s data type.
    pub(super) fn new(dims: [usize; 4], math: ConvMath) -> Result<Self, RuntimeError> {
        described(
            dnn::create_tensor_descriptor,
            Self,
            // SAFETY: the descriptor was just created.
            |d| unsafe { dnn::set_tensor4d_descriptor(d, NCHW, data_type(math), ints(dims)) },
            ["cudnnCreateTensorDescriptor", "cudnnSetTensor4dDescriptor"],
        )
    }
}

impl FilterDesc {
    /// An NCHW filter of `dims` (`[out, in, k, k]`) holding `math`'s data type.
    pub(super) fn new(dims: [usize; 4], math: ConvMath) -> Result<Self, RuntimeError> {
        described(
            dnn::create_filter_descriptor,
            Self,
            // SAFETY: the descriptor was just created.
            |d| unsafe { dnn::set_filter4d_descriptor(d, data_type(math), NCHW, ints(dims)) },
            ["cudnnCreateFilterDescriptor", "cudnnSetFilter4dDescriptor"],
        )
    }
}

impl ConvDesc {
    /// `conv`'s cross-correlation computed in f32, with `math`'s base math type (its stride and
    /// padding fit an `int`: checked by [`super::ConvShapes::new`]).
    pub(super) fn new(conv: &Conv2d, math: ConvMath) -> Result<Self, RuntimeError> {
        let (pad, stride) = (conv.padding as c_int, conv.stride as c_int);
        let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
        let desc = described(
            dnn::create_convolution_descriptor,
            Self,
            // SAFETY: the descriptor was just created.
            |d| unsafe {
                dnn::set_convolution2d_descriptor(d, pad, pad, stride, stride, 1, 1, mode, FLOAT)
            },
            [
                "cudnnCreateConvolutionDescriptor",
                "cudnnSetConvolution2dDescriptor",
            ],
        )?;
        desc.set_math(math.base())?;
        Ok(desc)
    }

    /// Sets the math type the next search or run uses (with the `Cudnn` mutex held, so no
    /// other call reads the descriptor meanwhile).
    pub(super) fn set_math(&self, math: sys::cudnnMathType_t) -> Result<(), RuntimeError> {
        // SAFETY: a live descriptor, changed by one thread at a time (see above).
        unsafe { dnn::set_convolution_math_type(self.0, math) }
            .map_err(|e| RuntimeError::cudnn("cudnnSetConvolutionMathType", e))
    }
}

/// What the search results are remembered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ProblemKey {
    pub conv: Conv2d,
    pub input: ImageShape,
    pub images: usize,
    pub math: ConvMath,
    pub pass: ConvPass,
    pub deterministic: bool,
}

/// The mutable part of [`Cudnn`], behind its mutex.
pub(super) struct State {
    pub handle: Handle,
    /// Bytes from the device's pool, so that its statistics count them.
    workspace: Option<DeviceTensor>,
    pub search_limit: usize,
    /// Take only deterministic algorithms (when any runs).
    pub deterministic: bool,
    /// Run convolutions of tiny maps as matrix products through cuBLAS (`taps`).
    pub tiny_map_gemm: bool,
    /// cuBLAS for them, made on first use.
    blas: Option<Arc<Cublas>>,
    /// Each searched problem's algorithms that may run, best first.
    pub chosen: HashMap<ProblemKey, Vec<Candidate>>,
    /// The choices of earlier runs on this device.
    pub remembered: Remembered,
}

impl State {
    /// The workspace's address and size.
    pub fn workspace(&self) -> (u64, usize) {
        self.workspace
            .as_ref()
            .map_or((0, 0), |ws| (ws.ptr(), ws.num_bytes()))
    }

    /// Grows the workspace to at least `bytes` (the old one is freed first, in stream
    /// order, so growing never holds both).
    pub fn ensure_workspace(
        &mut self,
        device: &Arc<Device>,
        bytes: usize,
    ) -> Result<(), RuntimeError> {
        if bytes <= self.workspace().1 {
            return Ok(());
        }
        self.workspace = None;
        // Scratch space that cuDNN writes before it reads.
        self.workspace = Some(DeviceTensor::empty(device, Dtype::U8, &[bytes])?);
        Ok(())
    }
}

/// The search workspace cuDNN gets unless told otherwise: algorithms that need more are not
/// considered, so the workspace never grows past it.
pub const DEFAULT_SEARCH_WORKSPACE: usize = 256 << 20;

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
        let path = libs::cudnn()?;
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
        device.bind()?;
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
                tiny_map_gemm: true,
                blas: None,
                chosen: HashMap::new(),
                remembered: Remembered::open(device, version),
            }),
        }))
    }

    /// The workspace's size now, in bytes.
    pub fn workspace_bytes(&self) -> usize {
        self.workspace().1
    }

    /// The workspace's address and size (it moves when it grows).
    pub fn workspace(&self) -> (u64, usize) {
        self.lock().workspace()
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

    /// Whether convolutions of maps so small that they are one matrix product run through
    /// cuBLAS (the default) or through cuDNN like the others. Applies to problems described
    /// from now on.
    pub fn set_tiny_map_gemm(&self, on: bool) {
        self.lock().tiny_map_gemm = on;
    }

    pub fn tiny_map_gemm(&self) -> bool {
        self.lock().tiny_map_gemm
    }

    /// cuBLAS on this device, for the convolutions it runs.
    pub(super) fn blas(&self) -> Result<Arc<Cublas>, RuntimeError> {
        let mut st = self.lock();
        if let Some(b) = &st.blas {
            return Ok(b.clone());
        }
        Ok(st.blas.insert(Cublas::new(&self.device)?).clone())
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Cudnn {
    fn drop(&mut self) {
        // cuDNN frees its resources in the current context: make it the device's before the
        // fields (the handle, the workspace) are dropped. A failure here cannot be acted on.
        let _ = self.device.bind();
    }
}
