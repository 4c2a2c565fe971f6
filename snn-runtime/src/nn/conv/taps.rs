//! Convolutions on maps so small that one output pixel's window holds the whole input (a
//! 3x3 convolution with padding 1 of a 1x1 map, the strided one from a 2x2 map onto 1x1:
//! a ResNet's last stage on 32x32 images). Such a convolution is one matrix product over
//! the taps that touch the input, `y[n, :] = W_taps x[n, :]` with `x[n]` the image's
//! `in * H * W` values, which cuBLAS runs at its GEMM rate; cuDNN's convolution kernels run
//! all k x k taps and take several times longer. The taps are gathered out of the weight
//! (`kernels/taps.cu`) unless they are all of it (a 1x1 convolution of a 1x1 map), and the
//! weight gradient is zero at the others.

use std::sync::Arc;

use snn_nn::{Conv2d, ImageShape};

use super::ConvMath;
use crate::check;
use crate::error::RuntimeError;
use crate::launch::{self, programs};
use crate::nn::kernels::twin;
use crate::nn::linear::{Cublas, Operand};
use crate::tensor::DeviceTensor;

/// A convolution run as a product over its taps.
pub(super) struct Taps {
    blas: Arc<Cublas>,
    math: ConvMath,
    images: usize,
    out: usize,
    /// Values per image: `in * H * W`, one per tap that touches the input.
    len: usize,
    /// Where the taps sit in the weight, unless they are all of it.
    window: Option<Window>,
}

/// The taps of an `[out, in, k, k]` weight that touch an `h x w` input through padding
/// `pad`: rows and columns `pad..pad + h` and `pad..pad + w`.
#[derive(Clone, Copy)]
struct Window {
    filters: usize,
    k: usize,
    h: usize,
    w: usize,
    pad: usize,
}

impl Taps {
    /// Whether `conv` of `input` onto `output` is such a product: one output pixel whose
    /// window holds the whole input.
    pub fn fit(conv: &Conv2d, input: ImageShape, output: ImageShape) -> bool {
        let (k, pad) = (conv.kernel, conv.padding);
        output.height == 1 && output.width == 1 && input.height + pad <= k && input.width + pad <= k
    }

    /// The product form of `conv` over `images` images of `input` (see [`Taps::fit`]).
    pub fn new(
        blas: Arc<Cublas>,
        conv: &Conv2d,
        input: ImageShape,
        images: usize,
        math: ConvMath,
    ) -> Self {
        let (k, pad) = (conv.kernel, conv.padding);
        let whole = pad == 0 && input.height == k && input.width == k;
        Self {
            blas,
            math,
            images,
            out: conv.out_channels,
            len: input.len(),
            window: (!whole).then_some(Window {
                filters: conv.out_channels * conv.in_channels,
                k,
                h: input.height,
                w: input.width,
                pad,
            }),
        }
    }

    /// `y [images, out] = x [images, len] W_taps^T`.
    pub fn forward(
        &self,
        x: &DeviceTensor,
        weight: &DeviceTensor,
        y: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        let taps = self.taps(weight)?;
        let dims = (self.out, self.images, self.len);
        let (a, b, c) = (
            (taps.ptr(), self.len),
            (x.ptr(), self.len),
            (y.ptr(), self.out),
        );
        self.gemm("conv2d forward", (true, false), dims, a, b, c, 0.0)
    }

    /// `dx [images, len] (+)= dy [images, out] W_taps`.
    pub fn backward_data(
        &self,
        dy: &DeviceTensor,
        weight: &DeviceTensor,
        dx: &DeviceTensor,
        accumulate: bool,
    ) -> Result<(), RuntimeError> {
        let taps = self.taps(weight)?;
        let dims = (self.len, self.images, self.out);
        let (a, b, c) = (
            (taps.ptr(), self.len),
            (dy.ptr(), self.out),
            (dx.ptr(), self.len),
        );
        let beta = if accumulate { 1.0 } else { 0.0 };
        self.gemm("conv2d backward-data", (false, false), dims, a, b, c, beta)
    }

    /// `dweight`: `dy^T x` at the taps, zero elsewhere (overwritten).
    pub fn backward_filter(
        &self,
        x: &DeviceTensor,
        dy: &DeviceTensor,
        dweight: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        let dtaps = match self.window {
            Some(_) => {
                DeviceTensor::empty(dweight.device(), dweight.dtype, &[self.out * self.len])?
            }
            None => dweight.clone(),
        };
        let dims = (self.len, self.out, self.images);
        let (a, b, c) = (
            (x.ptr(), self.len),
            (dy.ptr(), self.out),
            (dtaps.ptr(), self.len),
        );
        self.gemm("conv2d backward-filter", (false, true), dims, a, b, c, 0.0)?;
        match self.window {
            Some(window) => window.run(Move::Scatter, &dtaps, dweight),
            None => Ok(()),
        }
    }

    /// The taps of `weight`, dense `[out, in, H, W]`.
    fn taps(&self, weight: &DeviceTensor) -> Result<DeviceTensor, RuntimeError> {
        let Some(window) = self.window else {
            return Ok(weight.clone());
        };
        let taps = DeviceTensor::empty(weight.device(), weight.dtype, &[self.out * self.len])?;
        window.run(Move::Gather, weight, &taps)?;
        Ok(taps)
    }

    /// One product, column-major as cuBLAS sees the row-major tensors (ConvGpu checked
    /// every tensor's dtype and length for these extents).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        what: &str,
        trans: (bool, bool),
        dims: (usize, usize, usize),
        a: Operand,
        b: Operand,
        c: Operand,
        beta: f32,
    ) -> Result<(), RuntimeError> {
        self.blas.gemm(what, self.math, trans, dims, a, b, c, beta)
    }
}

/// Which way values move between the weight and its taps.
#[derive(Clone, Copy)]
enum Move {
    /// Weight to taps.
    Gather,
    /// Taps' gradient to the weight's, zero elsewhere.
    Scatter,
}

impl Window {
    fn run(&self, how: Move, from: &DeviceTensor, to: &DeviceTensor) -> Result<(), RuntimeError> {
        const OP: &str = "convolution taps";
        let (kernels, source, dest, total) = match how {
            Move::Gather => (
                ["snn_taps_gather", "snn_taps_gather_bf16"],
                "w",
                "taps",
                self.filters * self.h * self.w,
            ),
            Move::Scatter => (
                ["snn_taps_scatter", "snn_taps_scatter_bf16"],
                "dtaps",
                "dw",
                self.filters * self.k * self.k,
            ),
        };
        let device = to.device();
        let int = |what, v| check::to_i64(OP, what, v);
        device
            .kernel(&programs::TAPS, twin(to.dtype, kernels))?
            .arg(source, from)
            .arg(dest, to)
            .arg("filters", int("filters", self.filters)?)
            .arg("k", int("k", self.k)?)
            .arg("h", int("h", self.h)?)
            .arg("wd", int("w", self.w)?)
            .arg("pad", int("pad", self.pad)?)
            .run(launch::grid_stride(device, total, 256, 32))
    }
}
