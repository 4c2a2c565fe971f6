//! One convolution problem on the GPU ([`ConvGpu`]): a layer at one input shape and image
//! count, its descriptors, and its three passes, each with the algorithm cuDNN's search
//! chose for it.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::fmt;
use std::sync::Arc;

use cudarc::cudnn::sys;
use snn_nn::{Conv2d, ImageShape};

use super::cudnn::{ConvDesc, Cudnn, FilterDesc, ProblemKey, State, TensorDesc, ints};
use super::search::{self, Bound, Candidate, ConvAlgorithm, DATA, FILTER, FORWARD, Pass};
use super::taps::Taps;
use super::{ConvMath, ConvPass, ConvShapes};
use crate::check::{self, Access};
use crate::error::RuntimeError;
use crate::nn::bias;
use crate::tensor::DeviceTensor;

/// One convolution problem (a layer at one input shape and image count) with its
/// descriptors; its forward / backward-data / backward-filter algorithms are chosen by
/// cuDNN's search (`cudnnFind*AlgorithmEx`) on each pass's first call, once per problem, and
/// remembered in [`Cudnn`]. A problem on a map so small that it is one matrix product runs
/// every pass through cuBLAS instead (`taps`).
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
    /// The matrix product that runs every pass instead of cuDNN, for tiny maps.
    taps: Option<Box<Taps>>,
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

/// A pass's operands, in its cuDNN calls' order: inputs `a` and `b`, then output `c`
/// (forward: x, w -> y; backward-data: w, dy -> dx; backward-filter: x, dy -> dw).
#[derive(Clone, Copy, Debug)]
struct Operands {
    pass: ConvPass,
    a: u64,
    b: u64,
    c: u64,
    /// Add to `c` (cuDNN's beta = 1) instead of overwriting it.
    accumulate: bool,
}

impl Operands {
    fn new(pass: ConvPass, a: &DeviceTensor, b: &DeviceTensor, c: &DeviceTensor) -> Self {
        Self {
            pass,
            a: a.ptr(),
            b: b.ptr(),
            c: c.ptr(),
            accumulate: false,
        }
    }
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
        let x_desc = TensorDesc::new(shapes.input, math)?;
        let y_desc = TensorDesc::new(shapes.output, math)?;
        let w_desc = FilterDesc::new(shapes.weight, math)?;
        let conv_descs = [
            ConvDesc::new(conv, math)?,
            ConvDesc::new(conv, math)?,
            ConvDesc::new(conv, math)?,
        ];
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
            return Err(RuntimeError::Internal(format!(
                "cuDNN computes an output of {dims:?} for conv2d {conv:?} over {images} images of {input}, expected {:?}",
                shapes.output
            )));
        }
        let taps = if cudnn.lock().tiny_map_gemm && Taps::fit(conv, input, output) {
            let blas = cudnn.blas()?;
            Some(Box::new(Taps::new(blas, conv, input, images, math)))
        } else {
            None
        };
        Ok(Self {
            taps,
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
        if self.taps.is_some() {
            return Some(ConvAlgorithm {
                name: "cuBLAS GEMM over the taps that touch the input".into(),
                math: format!("{:?}", self.math),
                workspace_bytes: 0,
                millis: 0.0,
                deterministic: true,
            });
        }
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
        let bias_arg = Some(("bias", bias, Access::Read));
        self.check(OP, &[("x", x), ("weight", weight)], ("y", y), bias_arg)?;
        match &self.taps {
            Some(taps) => taps.forward(x, weight, y)?,
            None => {
                let operands = Operands::new(ConvPass::Forward, x, weight, y);
                self.run(&mut self.cudnn.lock(), operands)?;
            }
        }
        match bias {
            Some(b) => bias::add(self.cudnn.device(), y, b, self.bias_dims()),
            None => Ok(()),
        }
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
        self.check(OP, &[("dy", dy), ("weight", weight)], ("dx", dx), None)?;
        if let Some(taps) = &self.taps {
            return taps.backward_data(dy, weight, dx, accumulate);
        }
        let mut st = self.cudnn.lock();
        let searched = st
            .chosen
            .contains_key(&self.key(ConvPass::BackwardData, st.deterministic));
        let operands = |dx| Operands::new(ConvPass::BackwardData, weight, dy, dx);
        if accumulate && !searched {
            let scratch = DeviceTensor::empty(dx.device(), self.math.dtype(), &dx.shape)?;
            self.run(&mut st, operands(&scratch))?;
            drop(st);
            return crate::nn::kernels::add_assign(dx.device(), dx, &scratch);
        }
        let operands = Operands {
            accumulate,
            ..operands(dx)
        };
        self.run(&mut st, operands)
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
        let bias_arg = Some(("dbias", dbias, Access::Write));
        self.check(OP, &[("x", x), ("dy", dy)], ("dweight", dweight), bias_arg)?;
        match &self.taps {
            Some(taps) => taps.backward_filter(x, dy, dweight)?,
            None => {
                let operands = Operands::new(ConvPass::BackwardFilter, x, dy, dweight);
                self.run(&mut self.cudnn.lock(), operands)?;
            }
        }
        match dbias {
            Some(db) => bias::grad(self.cudnn.device(), dy, db, self.bias_dims()),
            None => Ok(()),
        }
    }

    /// `(images, out channels, output plane)`, the bias kernels' view of `y`.
    fn bias_dims(&self) -> (usize, usize, usize) {
        (self.images, self.output.channels, self.output.plane())
    }

    /// The shape a pass's tensor named `arg` must have (whatever its own shape: only the
    /// value count matters, so views that fold time into the batch are fine).
    fn dims(&self, arg: &str) -> [usize; 4] {
        match arg {
            "x" | "dx" => self.shapes.input,
            "weight" | "dweight" => self.shapes.weight,
            _ => self.shapes.output,
        }
    }

    /// Checks a pass's tensors: its `inputs` and its `output` (each of its shape, of the
    /// math's dtype: f32, or bf16 for [`ConvMath::Bf16`]), the
    /// bias that the forward reads or the gradient that the backward-filter writes (given
    /// exactly when the layer has one), and that the written tensors share memory with no
    /// other (cuDNN does not compute in place).
    fn check(
        &self,
        op: &str,
        inputs: &[(&str, &DeviceTensor)],
        output: (&str, &DeviceTensor),
        bias: Option<(&str, Option<&DeviceTensor>, Access)>,
    ) -> Result<(), RuntimeError> {
        let mut args = Vec::with_capacity(inputs.len() + 2);
        for &(name, t) in inputs {
            args.push((name, t, Access::Read));
        }
        args.push((output.0, output.1, Access::Write));
        for &(name, t, _) in &args {
            let dims = self.dims(name);
            let len = dims.iter().product();
            let dtype = self.math.dtype();
            if t.dtype == dtype && t.len() == len {
                // Passes run often: the description is only made for the error.
                continue;
            }
            let what = format!(
                "{dims:?} for {} images of {} through {}x{} stride {} padding {}",
                self.images,
                self.input,
                self.conv.kernel,
                self.conv.kernel,
                self.conv.stride,
                self.conv.padding
            );
            check::tensor(op, name, t, dtype, len, &what)?;
        }
        if let Some((name, t, access)) = bias {
            check::bias(op, name, t, self.conv.bias, self.conv.out_channels)?;
            args.extend(t.map(|t| (name, t, access)));
        }
        check::memory(op, self.cudnn.device(), &args)
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

    /// The math type `c` runs with: FMA for [`ConvMath::F32`] whatever the search reports
    /// (it never reports tensor-core results for it, see `search::choose`), the reported
    /// one for TF32 and bf16.
    fn math_for(&self, c: &Candidate) -> sys::cudnnMathType_t {
        match self.math {
            ConvMath::F32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
            ConvMath::Tf32 | ConvMath::Bf16 => c.math,
        }
    }

    /// Calls `f` with the pass of `operands` bound to them: this problem's descriptors and
    /// their addresses.
    fn bind<R>(&self, operands: Operands, f: impl FnOnce(&dyn Pass) -> R) -> R {
        let (x, w, y) = (self.x_desc.0, self.w_desc.0, self.y_desc.0);
        let Operands { a, b, c, .. } = operands;
        match operands.pass {
            ConvPass::Forward => f(&Bound {
                api: &FORWARD,
                a: (x, a),
                b: (w, b),
                c: (y, c),
            }),
            ConvPass::BackwardData => f(&Bound {
                api: &DATA,
                a: (w, a),
                b: (y, b),
                c: (x, c),
            }),
            ConvPass::BackwardFilter => f(&Bound {
                api: &FILTER,
                a: (x, a),
                b: (y, b),
                c: (w, c),
            }),
        }
    }

    /// Runs one pass: searches for its algorithms on the first call of the problem, then
    /// runs the fastest one whose workspace can be had (falling back to ones that need less
    /// when memory runs out).
    fn run(&self, st: &mut State, operands: Operands) -> Result<(), RuntimeError> {
        let device = self.cudnn.device();
        device.bind()?;
        let pass = operands.pass;
        let key = self.key(pass, st.deterministic);
        let desc = &self.conv_descs[pass.index()];
        self.bind(operands, |op| {
            if !st.chosen.contains_key(&key) {
                let limit = st.search_limit;
                let chosen = match st.remembered.get(&key, limit) {
                    Some(chosen) => chosen,
                    None => {
                        desc.set_math(self.math.base())?;
                        let (found, ws_bytes) = search::search(op, st, desc.0, device)?;
                        let chosen = search::choose(self.math, st.deterministic, &found);
                        if chosen.is_empty() {
                            return Err(self.none_ran(pass, &found, ws_bytes));
                        }
                        st.remembered.insert(&key, limit, &chosen);
                        chosen
                    }
                };
                st.chosen.insert(key, chosen);
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
                    Ok(()) => {
                        desc.set_math(self.math_for(&c))?;
                        let ws = st.workspace();
                        return op.run(st.handle.0, desc.0, c.algo, ws, operands.accumulate);
                    }
                    Err(RuntimeError::OutOfMemory { .. }) => {
                        refused.push((c.algo.name(), c.workspace));
                        if let Some(v) = st.chosen.get_mut(&key) {
                            v.remove(0);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }

    /// The error of a search in which no algorithm that may run succeeded.
    fn none_ran(
        &self,
        pass: ConvPass,
        found: &[(Candidate, sys::cudnnStatus_t)],
        ws_bytes: usize,
    ) -> RuntimeError {
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
        RuntimeError::invalid(
            format!(
                "searching cuDNN's conv2d {pass} algorithms for {:?} over {} images of {} ({:?} math, {ws_bytes} bytes of workspace)",
                self.conv, self.images, self.input, self.math
            ),
            format!("no algorithm ran: {}", tried.join("; ")),
        )
    }
}
