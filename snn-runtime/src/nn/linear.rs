//! Linear layers on the GPU through cuBLAS, as `torch.nn.Linear`, in full f32 (PyTorch's
//! default for matrix products, `allow_tf32 = False`).
//!
//! Tensors are row-major and cuBLAS is column-major: a row-major `[r, c]` matrix is the
//! column-major `[c, r]` one, its transpose, so `y = x W^T` is computed as `y^T = W x^T`
//! with no copies (one `sgemm` that transposes the column-major view of `W`), and likewise
//! the gradients. The bias and its gradient use the small deterministic kernels shared with
//! the convolutions.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cublas::result as blas;
use cudarc::cublas::sys;
use snn_nn::Linear;

use super::conv::{BiasKernels, check_bias, check_distinct, check_f32, cublas_library, zero_bytes};
use crate::device::Device;
use crate::error::RuntimeError;
use crate::tensor::DeviceTensor;

/// The raw cuBLAS handle.
struct Handle(sys::cublasHandle_t);

// SAFETY: a cuBLAS handle may be used from any thread, one thread at a time; `Cublas` only
// touches it with its mutex held.
unsafe impl Send for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle was created by `cublasCreate` and is destroyed once, here. An
        // error while tearing down cannot be acted on.
        let _ = unsafe { blas::destroy_handle(self.0) };
    }
}

/// The mutable part of [`Cublas`], behind its mutex.
struct State {
    handle: Handle,
    bias: Option<Arc<BiasKernels>>,
}

/// cuBLAS for one device, on the device's stream, in full f32 math.
pub struct Cublas {
    device: Arc<Device>,
    state: Mutex<State>,
}

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
        cublas_library()?;
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
        Ok(Arc::new(Self {
            device: device.clone(),
            state: Mutex::new(State { handle, bias: None }),
        }))
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, RuntimeError> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.device
            .ctx
            .bind_to_thread()
            .map_err(|e| RuntimeError::driver("binding the context for cuBLAS", e))?;
        Ok(st)
    }

    fn bias_kernels(&self, st: &mut State) -> Result<Arc<BiasKernels>, RuntimeError> {
        if let Some(k) = &st.bias {
            return Ok(k.clone());
        }
        let k = Arc::new(BiasKernels::load(&self.device)?);
        st.bias = Some(k.clone());
        Ok(k)
    }

    /// Column-major `c = op(a) op(b)` (`[m, k] x [k, n]`), overwriting `c`.
    #[allow(clippy::too_many_arguments)]
    fn sgemm(
        &self,
        st: &State,
        what: &str,
        (trans_a, trans_b): (bool, bool),
        (m, n, k): (usize, usize, usize),
        (a, lda): (u64, usize),
        (b, ldb): (u64, usize),
        (c, ldc): (u64, usize),
    ) -> Result<(), RuntimeError> {
        let op = |t| {
            if t {
                sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (one, zero) = (1.0f32, 0.0f32);
        // SAFETY: the handle is live (mutex held); `a`, `b` and `c` address f32 tensors whose
        // lengths the callers checked against these extents and leading dimensions, which
        // fit `int` (checked by `Dims::new`); alpha and beta are host scalars, cuBLAS's
        // default pointer mode.
        unsafe {
            blas::sgemm(
                st.handle.0,
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
    fn new(op: &str, linear: &Linear, rows: usize) -> Result<Self, RuntimeError> {
        let (fin, fout) = (linear.in_features, linear.out_features);
        if [rows, fin, fout].iter().any(|&d| d > i32::MAX as usize) {
            return Err(RuntimeError::Shape(format!(
                "{op}: {rows} rows of {fin} -> {fout} features: cuBLAS takes extents below 2^31; split the rows"
            )));
        }
        Ok(Self { rows, fin, fout })
    }

    /// Whether a product has an empty extent (then cuBLAS is not called).
    fn degenerate(&self) -> bool {
        self.rows == 0 || self.fin == 0 || self.fout == 0
    }
}

fn shape(r: usize, c: usize) -> String {
    format!("[{r}, {c}]")
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
    let dev = &*blas.device;
    let d = Dims::new(OP, linear, rows)?;
    check_f32(dev, (OP, "x"), x, d.rows * d.fin, &|| shape(d.rows, d.fin))?;
    check_f32(dev, (OP, "weight"), weight, d.fout * d.fin, &|| {
        shape(d.fout, d.fin)
    })?;
    check_f32(dev, (OP, "y"), y, d.rows * d.fout, &|| {
        shape(d.rows, d.fout)
    })?;
    check_bias(dev, (OP, "bias"), linear.bias, bias, d.fout)?;
    check_distinct(OP, ("y", y), ("x", x))?;
    check_distinct(OP, ("y", y), ("weight", weight))?;
    let mut st = blas.lock()?;
    if d.degenerate() {
        zero_bytes(&blas.device, y.ptr(), y.num_bytes())?;
    } else {
        // y^T [out, rows] = (W^T [in, out])^T x^T [in, rows].
        blas.sgemm(
            &st,
            "the linear forward",
            (true, false),
            (d.fout, d.rows, d.fin),
            (weight.ptr(), d.fin),
            (x.ptr(), d.fin),
            (y.ptr(), d.fout),
        )?;
    }
    if let Some(b) = bias {
        let k = blas.bias_kernels(&mut st)?;
        k.add(&blas.device, y.ptr(), b.ptr(), (d.rows, d.fout, 1))?;
    }
    Ok(())
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
    let dev = &*blas.device;
    let d = Dims::new(OP, linear, rows)?;
    check_f32(dev, (OP, "x"), x, d.rows * d.fin, &|| shape(d.rows, d.fin))?;
    check_f32(dev, (OP, "weight"), weight, d.fout * d.fin, &|| {
        shape(d.fout, d.fin)
    })?;
    check_f32(dev, (OP, "dy"), dy, d.rows * d.fout, &|| {
        shape(d.rows, d.fout)
    })?;
    check_f32(dev, (OP, "dweight"), dweight, d.fout * d.fin, &|| {
        "like `weight`".into()
    })?;
    check_bias(dev, (OP, "dbias"), linear.bias, dbias, d.fout)?;
    check_distinct(OP, ("dweight", dweight), ("x", x))?;
    check_distinct(OP, ("dweight", dweight), ("dy", dy))?;
    if let Some(dx) = dx {
        check_f32(dev, (OP, "dx"), dx, d.rows * d.fin, &|| "like `x`".into())?;
        check_distinct(OP, ("dx", dx), ("dy", dy))?;
        check_distinct(OP, ("dx", dx), ("weight", weight))?;
    }
    if let Some(db) = dbias {
        check_distinct(OP, ("dbias", db), ("dy", dy))?;
    }
    let mut st = blas.lock()?;
    if d.degenerate() {
        if let Some(dx) = dx {
            zero_bytes(&blas.device, dx.ptr(), dx.num_bytes())?;
        }
        zero_bytes(&blas.device, dweight.ptr(), dweight.num_bytes())?;
    } else {
        if let Some(dx) = dx {
            // dx^T [in, rows] = W^T [in, out] dy^T [out, rows].
            blas.sgemm(
                &st,
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
            &st,
            "the linear weight gradient",
            (false, true),
            (d.fin, d.fout, d.rows),
            (x.ptr(), d.fin),
            (dy.ptr(), d.fout),
            (dweight.ptr(), d.fin),
        )?;
    }
    if let Some(db) = dbias {
        let k = blas.bias_kernels(&mut st)?;
        k.grad(&blas.device, dy.ptr(), db.ptr(), (d.rows, d.fout, 1))?;
    }
    Ok(())
}
