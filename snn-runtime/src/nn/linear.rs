//! Linear layers on the GPU through cuBLAS, as `torch.nn.Linear`, in full f32 (PyTorch's
//! default for matrix products, `allow_tf32 = False`).
//!
//! Tensors are row-major and cuBLAS is column-major: a row-major `[r, c]` matrix is the
//! column-major `[c, r]` one, its transpose, so `y = x W^T` is computed as `y^T = W x^T`
//! with no copies (one `sgemm` that transposes the column-major view of `W`), and likewise
//! the gradients. The bias and its gradient use the small deterministic kernels shared with
//! the convolutions ([`super::bias`]).
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cublas::result as blas;
use cudarc::cublas::sys;
use snn_nn::Linear;

use super::bias;
use crate::check::{self, Access};
use crate::device::Device;
use crate::error::RuntimeError;
use crate::libs;
use crate::nn::ConvMath;
use crate::tensor::DeviceTensor;

owned!(
    /// A cuBLAS handle (`Cublas` uses it with its mutex held).
    Handle,
    sys::cublasHandle_t,
    blas::destroy_handle
);

/// cuBLAS for one device, on the device's stream, in full f32 math.
pub struct Cublas {
    device: Arc<Device>,
    handle: Mutex<Handle>,
    /// The handle's workspace (declared after it, so it outlives it): given, so that
    /// cuBLAS never allocates its own, which a CUDA graph capture would not allow.
    _workspace: DeviceTensor,
}

/// cuBLAS's workspace: one of the 4 MiB buffers PyTorch gives cuBLAS
/// (`CUBLAS_WORKSPACE_CONFIG=:4096:8`), ample for the classifiers' small products.
const WORKSPACE_BYTES: usize = 4 << 20;

impl fmt::Debug for Cublas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cublas")
            .field("device", &self.device.info.ordinal)
            .finish()
    }
}

impl Cublas {
    /// Loads cuBLAS 13 and creates a handle on `device`'s stream, in default math (no TF32).
    pub fn new(device: &Arc<Device>) -> Result<Arc<Self>, RuntimeError> {
        libs::cublas()?;
        device
            .ctx
            .bind_to_thread()
            .map_err(|e| RuntimeError::driver("binding the context for cuBLAS", e))?;
        let handle =
            Handle(blas::create_handle().map_err(|e| RuntimeError::cublas("cublasCreate", e))?);
        // SAFETY: the handle is live and the stream belongs to the device's context, which
        // outlives the handle (`Cublas` holds the device).
        unsafe { blas::set_stream(handle.0, device.stream.cu_stream() as sys::cudaStream_t) }
            .map_err(|e| RuntimeError::cublas("cublasSetStream", e))?;
        // SAFETY: a live handle.
        unsafe { sys::cublasSetMathMode(handle.0, sys::cublasMath_t::CUBLAS_DEFAULT_MATH) }
            .result()
            .map_err(|e| RuntimeError::cublas("cublasSetMathMode", e))?;
        let workspace = DeviceTensor::empty(device, snn_codegen::Dtype::U8, &[WORKSPACE_BYTES])?;
        // SAFETY: a live handle, and a workspace of that many bytes on the handle's device
        // that lives as long as the handle (see the field order).
        unsafe {
            sys::cublasSetWorkspace_v2(
                handle.0,
                workspace.ptr() as *mut std::ffi::c_void,
                WORKSPACE_BYTES,
            )
        }
        .result()
        .map_err(|e| RuntimeError::cublas("cublasSetWorkspace", e))?;
        Ok(Arc::new(Self {
            device: device.clone(),
            handle: Mutex::new(handle),
            _workspace: workspace,
        }))
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    fn lock(&self) -> Result<MutexGuard<'_, Handle>, RuntimeError> {
        let st = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        self.device
            .ctx
            .bind_to_thread()
            .map_err(|e| RuntimeError::driver("binding the context for cuBLAS", e))?;
        Ok(st)
    }

    /// Column-major `c = op(a) op(b)` (`[m, k] x [k, n]`), overwriting `c`.
    #[allow(clippy::too_many_arguments)]
    fn sgemm(
        &self,
        handle: &Handle,
        what: &str,
        (trans_a, trans_b): (bool, bool),
        (m, n, k): (usize, usize, usize),
        (a, lda): (u64, usize),
        (b, ldb): (u64, usize),
        (c, ldc): (u64, usize),
    ) -> Result<(), RuntimeError> {
        let (one, zero) = (1.0f32, 0.0f32);
        // SAFETY: the handle is live (mutex held); `a`, `b` and `c` address f32 tensors whose
        // lengths the callers checked against these extents and leading dimensions, which
        // fit `int` (checked by `Dims::new`); alpha and beta are host scalars, cuBLAS's
        // default pointer mode.
        unsafe {
            blas::sgemm(
                handle.0,
                op(trans_a),
                op(trans_b),
                m as c_int,
                n as c_int,
                k as c_int,
                &one,
                a as usize as *const f32,
                lda as c_int,
                b as usize as *const f32,
                ldb as c_int,
                &zero,
                c as usize as *mut f32,
                ldc as c_int,
            )
        }
        .map_err(|e| RuntimeError::cublas(format!("cublasSgemm for {what}"), e))
    }

    /// Column-major `c = op(a) op(b) + beta c` (`[m, k] x [k, n]`) in `math`: f32 operands in
    /// full f32 or TF32 arithmetic, or bf16 operands with f32 accumulation. The callers
    /// check that the operands hold tensors of `math`'s dtype with these extents and leading
    /// dimensions.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        what: &str,
        math: ConvMath,
        (trans_a, trans_b): (bool, bool),
        (m, n, k): (usize, usize, usize),
        (a, lda): Operand,
        (b, ldb): Operand,
        (c, ldc): Operand,
        beta: f32,
    ) -> Result<(), RuntimeError> {
        let int = |v: usize| {
            c_int::try_from(v).map_err(|_| {
                RuntimeError::invalid(format!("cuBLAS for {what}"), format!("{v} exceeds an int"))
            })
        };
        let (data, compute) = match math {
            ConvMath::F32 => (
                sys::cudaDataType_t::CUDA_R_32F,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
            ConvMath::Tf32 => (
                sys::cudaDataType_t::CUDA_R_32F,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
            ),
            ConvMath::Bf16 => (
                sys::cudaDataType_t::CUDA_R_16BF,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
        };
        let ptr = |p: u64| p as usize as *mut std::ffi::c_void;
        let one = 1.0f32;
        let (m, n, k, lda, ldb, ldc) = (int(m)?, int(n)?, int(k)?, int(lda)?, int(ldb)?, int(ldc)?);
        let handle = self.lock()?;
        // SAFETY: the handle is live (lock held); the callers checked that `a`, `b` and `c`
        // address tensors of `data` with these extents and leading dimensions on the
        // handle's device; alpha and beta are f32 host scalars, as an f32 compute type and
        // the default pointer mode want.
        unsafe {
            blas::gemm_ex(
                handle.0,
                op(trans_a),
                op(trans_b),
                m,
                n,
                k,
                (&one as *const f32).cast(),
                ptr(a),
                data,
                lda,
                ptr(b),
                data,
                ldb,
                (&beta as *const f32).cast(),
                ptr(c),
                data,
                ldc,
                compute,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| RuntimeError::cublas(format!("cublasGemmEx for {what}"), e))
    }
}

/// A column-major matrix operand of [`Cublas::gemm`]: its address and leading dimension.
pub(crate) type Operand = (u64, usize);

/// cuBLAS's transpose flag: `op(a)` is `a^T` when `transpose`.
fn op(transpose: bool) -> sys::cublasOperation_t {
    if transpose {
        sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        sys::cublasOperation_t::CUBLAS_OP_N
    }
}

impl Drop for Cublas {
    fn drop(&mut self) {
        // cuBLAS frees its resources in the current context: make it the device's before the
        // handle is dropped. A failure here cannot be acted on.
        let _ = self.device.ctx.bind_to_thread();
    }
}

/// A linear problem's extents, checked to fit cuBLAS's `int`s.
#[derive(Clone, Copy)]
struct Dims {
    rows: usize,
    fin: usize,
    fout: usize,
}

impl Dims {
    /// The extents of `linear` over `rows` rows, with the tensors both passes read checked:
    /// `x` `[rows, in]` and `weight` `[out, in]`.
    fn new(
        op: &str,
        linear: &Linear,
        rows: usize,
        x: &DeviceTensor,
        weight: &DeviceTensor,
    ) -> Result<Self, RuntimeError> {
        let (fin, fout) = (linear.in_features, linear.out_features);
        for (what, v) in [("rows", rows), ("in features", fin), ("out features", fout)] {
            check::to_i32(op, what, v)?;
        }
        check::f32_tensor(op, "x", x, rows * fin, "[rows, in features]")?;
        check::f32_tensor(op, "weight", weight, fout * fin, "[out, in features]")?;
        Ok(Self { rows, fin, fout })
    }

    /// Whether a product has an empty extent (then cuBLAS is not called).
    fn degenerate(&self) -> bool {
        self.rows == 0 || self.fin == 0 || self.fout == 0
    }

    /// The bias kernels' view of a `[rows, out]` tensor: images of one plane per feature.
    fn bias(&self) -> (usize, usize, usize) {
        (self.rows, self.fout, 1)
    }
}

/// `torch.nn.Linear` on `x` `[rows, in]` -> `y` `[rows, out]` (overwritten), `weight`
/// `[out, in]`, `bias` `[out]` (given exactly when the layer has one). Full f32.
pub fn linear_forward(
    blas: &Cublas,
    linear: &Linear,
    rows: usize,
    x: &DeviceTensor,
    weight: &DeviceTensor,
    bias: Option<&DeviceTensor>,
    y: &DeviceTensor,
) -> Result<(), RuntimeError> {
    const OP: &str = "linear forward (cuBLAS)";
    let d = Dims::new(OP, linear, rows, x, weight)?;
    check::f32_tensor(OP, "y", y, d.rows * d.fout, "[rows, out features]")?;
    check::bias(OP, "bias", bias, linear.bias, d.fout)?;
    let mut args = vec![("x", x, Access::Read), ("weight", weight, Access::Read)];
    args.extend(bias.map(|b| ("bias", b, Access::Read)));
    args.push(("y", y, Access::Write));
    check::memory(OP, &blas.device, &args)?;
    let handle = blas.lock()?;
    if d.degenerate() {
        y.clear()?;
    } else {
        // y^T [out, rows] = (W^T [in, out])^T x^T [in, rows].
        blas.sgemm(
            &handle,
            "the linear forward",
            (true, false),
            (d.fout, d.rows, d.fin),
            (weight.ptr(), d.fin),
            (x.ptr(), d.fin),
            (y.ptr(), d.fout),
        )?;
    }
    match bias {
        Some(b) => bias::add(&blas.device, y, b, d.bias()),
        None => Ok(()),
    }
}

/// The gradients of [`linear_forward`] from `dy` `[rows, out]`, each overwritten:
/// `dx = dy W` (`None` skips it, e.g. for a first layer), `dweight = dy^T x` and `dbias` =
/// `dy` summed over the rows (given exactly when the layer has a bias).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    blas: &Cublas,
    linear: &Linear,
    rows: usize,
    x: &DeviceTensor,
    weight: &DeviceTensor,
    dy: &DeviceTensor,
    dx: Option<&DeviceTensor>,
    dweight: &DeviceTensor,
    dbias: Option<&DeviceTensor>,
) -> Result<(), RuntimeError> {
    const OP: &str = "linear backward (cuBLAS)";
    let d = Dims::new(OP, linear, rows, x, weight)?;
    check::f32_tensor(OP, "dy", dy, d.rows * d.fout, "[rows, out features]")?;
    if let Some(dx) = dx {
        check::f32_tensor(OP, "dx", dx, d.rows * d.fin, "like `x`")?;
    }
    check::f32_tensor(OP, "dweight", dweight, d.fout * d.fin, "like `weight`")?;
    check::bias(OP, "dbias", dbias, linear.bias, d.fout)?;
    let mut args = vec![
        ("x", x, Access::Read),
        ("weight", weight, Access::Read),
        ("dy", dy, Access::Read),
        ("dweight", dweight, Access::Write),
    ];
    args.extend(dx.map(|t| ("dx", t, Access::Write)));
    args.extend(dbias.map(|t| ("dbias", t, Access::Write)));
    check::memory(OP, &blas.device, &args)?;
    let handle = blas.lock()?;
    if d.degenerate() {
        if let Some(dx) = dx {
            dx.clear()?;
        }
        dweight.clear()?;
    } else {
        if let Some(dx) = dx {
            // dx^T [in, rows] = W^T [in, out] dy^T [out, rows].
            blas.sgemm(
                &handle,
                "the linear input gradient",
                (false, false),
                (d.fin, d.rows, d.fout),
                (weight.ptr(), d.fin),
                (dy.ptr(), d.fout),
                (dx.ptr(), d.fin),
            )?;
        }
        // dW^T [in, out] = x^T [in, rows] (dy^T [out, rows])^T.
        blas.sgemm(
            &handle,
            "the linear weight gradient",
            (false, true),
            (d.fin, d.fout, d.rows),
            (x.ptr(), d.fin),
            (dy.ptr(), d.fout),
            (dweight.ptr(), d.fin),
        )?;
    }
    match dbias {
        Some(db) => bias::grad(&blas.device, dy, db, d.bias()),
        None => Ok(()),
    }
}
