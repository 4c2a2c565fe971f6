//! 2-D convolution, as `torch.nn.Conv2d`: each image is unfolded into columns (im2col)
//! and multiplied by the weight with one `Float::gemm`, so the reference stays fast enough
//! to train a small CNN in CI.

use crate::cpu::WeightGrads;
use crate::error::NnError;
use crate::float::Float;
use crate::layers::{Conv2d, ImageShape};

/// `images * shape.len()`, or an error naming the operation when it does not fit `usize`.
pub(crate) fn image_values(op: &str, images: usize, shape: ImageShape) -> Result<usize, NnError> {
    images.checked_mul(shape.len()).ok_or_else(|| {
        NnError::shape(format!(
            "{op}: {images} images of shape {shape} have more values than memory can address"
        ))
    })
}

/// Checks that `arg` holds `images` images of `shape`.
pub(crate) fn check_images(
    op: &str,
    arg: &str,
    len: usize,
    images: usize,
    shape: ImageShape,
) -> Result<(), NnError> {
    let expected = image_values(op, images, shape)?;
    check_len(
        op,
        arg,
        len,
        expected,
        &format!("{images} images of shape {shape}"),
    )
}

/// Checks a slice length; `what` says where the expected length comes from.
pub(crate) fn check_len(
    op: &str,
    arg: &str,
    len: usize,
    expected: usize,
    what: &str,
) -> Result<(), NnError> {
    if len == expected {
        Ok(())
    } else {
        Err(NnError::shape(format!(
            "{op}: `{arg}` has {len} values, expected {expected} ({what})"
        )))
    }
}

/// Checks that a bias is given exactly when the layer has one, and its length.
pub(crate) fn check_bias(
    op: &str,
    arg: &str,
    has_bias: bool,
    len: Option<usize>,
    features: usize,
) -> Result<(), NnError> {
    match (has_bias, len) {
        (true, Some(len)) => check_len(op, arg, len, features, "one per output feature"),
        (false, None) => Ok(()),
        (true, None) => Err(NnError::shape(format!(
            "{op}: the layer has a bias but no `{arg}` was given; pass it, or build the layer without bias"
        ))),
        (false, Some(_)) => Err(NnError::shape(format!(
            "{op}: `{arg}` was given but the layer has no bias; pass None, or build the layer with bias"
        ))),
    }
}

/// A convolution's shapes for one input shape, and its im2col / col2im.
struct Geometry {
    input: ImageShape,
    output: ImageShape,
    kernel: usize,
    stride: usize,
    padding: usize,
    /// Rows of the column matrix: `in * k * k` (the weight's row length).
    rows: usize,
    /// Columns of the column matrix: output positions `OH * OW`.
    cols: usize,
}

impl Geometry {
    fn new(op: &str, conv: &Conv2d, input: ImageShape) -> Result<Self, NnError> {
        let output = conv
            .output(input)
            .map_err(|e| NnError::shape(format!("{op}: {e}")))?;
        // The weight `[out, in*k*k]` and one image's columns `[in*k*k, OH*OW]` must be
        // addressable.
        let rows = conv
            .in_channels
            .checked_mul(conv.kernel)
            .and_then(|r| r.checked_mul(conv.kernel))
            .filter(|r| {
                r.checked_mul(conv.out_channels).is_some()
                    && r.checked_mul(output.plane()).is_some()
            })
            .ok_or_else(|| {
                NnError::shape(format!(
                    "{op}: a weight {:?} over an input {input} has more values than memory can address",
                    conv.weight_shape()
                ))
            })?;
        Ok(Self {
            input,
            output,
            kernel: conv.kernel,
            stride: conv.stride,
            padding: conv.padding,
            rows,
            cols: output.plane(),
        })
    }

    /// The geometry, with `x` (`images` images of shape `input`) and the weight checked
    /// against it.
    fn checked(
        op: &str,
        conv: &Conv2d,
        (input, images): (ImageShape, usize),
        x_len: usize,
        weight_len: usize,
    ) -> Result<Self, NnError> {
        let geo = Self::new(op, conv, input)?;
        check_images(op, "x", x_len, images, input)?;
        check_weight(op, conv, &geo, weight_len)?;
        Ok(geo)
    }

    /// Images per matrix product: enough output columns that `gemm` runs near its best
    /// (one product per small image is dominated by packing the weight), with the column
    /// buffer bounded. Depends on the shapes only, so results stay deterministic.
    fn block(&self, images: usize) -> usize {
        const COLUMNS: usize = 4096;
        const VALUES: usize = 1 << 22;
        (COLUMNS / self.cols)
            .min(VALUES / (self.rows * self.cols).max(1))
            .clamp(1, images.max(1))
    }

    /// The output columns `ox` whose input column `ox * stride + kj - padding` lies inside
    /// the image, as a range `lo..hi` (empty when none does).
    fn valid_columns(&self, kj: usize) -> (usize, usize) {
        let (s, p, w, ow) = (
            self.stride,
            self.padding,
            self.input.width,
            self.output.width,
        );
        let lo = p.saturating_sub(kj).div_ceil(s).min(ow);
        let hi = (w + p).saturating_sub(kj).div_ceil(s).min(ow);
        (lo, hi.max(lo))
    }

    /// The input row of output row `oy` at kernel row `ki`, if inside the image.
    fn input_row(&self, oy: usize, ki: usize) -> Option<usize> {
        (oy * self.stride + ki)
            .checked_sub(self.padding)
            .filter(|&iy| iy < self.input.height)
    }

    /// Visits the rows of one image's column matrix in order: for each row `r` of
    /// `[C * k * k]` and output row `oy`, the input span it reads, or `None` when the kernel
    /// row falls in the padding. im2col and its adjoint walk the same rows.
    fn for_each_row(&self, mut visit: impl FnMut(usize, usize, Option<Span>)) {
        let (w, k, s) = (self.input.width, self.kernel, self.stride);
        let plane = self.input.plane();
        for c in 0..self.input.channels {
            for ki in 0..k {
                for kj in 0..k {
                    let r = (c * k + ki) * k + kj;
                    let (lo, hi) = self.valid_columns(kj);
                    for oy in 0..self.output.height {
                        let span = self.input_row(oy, ki).filter(|_| lo < hi).map(|iy| Span {
                            // `lo * s + kj >= padding` by the choice of `lo`.
                            from: c * plane + iy * w + lo * s + kj - self.padding,
                            to: c * plane + (iy + 1) * w,
                            lo,
                            hi,
                        });
                        visit(r, oy, span);
                    }
                }
            }
        }
    }

    /// Unfolds one image `[C, H, W]` into its `OH * OW` columns of a column matrix
    /// `[C * k * k, ld]` that start at column `at` (zeros for padding).
    fn im2col<T: Float>(&self, x: &[T], cols: &mut [T], ld: usize, at: usize) {
        let zero = T::from_f64(0.0);
        let (ow, s) = (self.output.width, self.stride);
        self.for_each_row(|r, oy, span| {
            let dst = &mut cols[r * ld + at + oy * ow..r * ld + at + (oy + 1) * ow];
            let Some(Span { from, to, lo, hi }) = span else {
                dst.fill(zero);
                return;
            };
            dst[..lo].fill(zero);
            dst[hi..].fill(zero);
            let src = &x[from..to];
            if s == 1 {
                dst[lo..hi].copy_from_slice(&src[..hi - lo]);
            } else {
                for (d, &v) in dst[lo..hi].iter_mut().zip(src.iter().step_by(s)) {
                    *d = v;
                }
            }
        });
    }

    /// Unfolds images `first..first + count` of `x` side by side into `cols`
    /// `[C * k * k, count * OH * OW]`.
    fn im2col_images<T: Float>(&self, x: &[T], first: usize, count: usize, cols: &mut [T]) {
        let in_len = self.input.len();
        for j in 0..count {
            let image = first + j;
            let xi = &x[image * in_len..(image + 1) * in_len];
            self.im2col(xi, cols, count * self.cols, j * self.cols);
        }
    }

    /// Folds the columns `at..at + OH * OW` of `cols` `[C * k * k, ld]` back into one image,
    /// adding where windows overlap (im2col's adjoint). `dx` must be zeroed first.
    fn col2im<T: Float>(&self, cols: &[T], ld: usize, at: usize, dx: &mut [T]) {
        let (ow, s) = (self.output.width, self.stride);
        self.for_each_row(|r, oy, span| {
            let Some(Span { from, to, lo, hi }) = span else {
                return;
            };
            let src = &cols[r * ld + at + oy * ow..r * ld + at + (oy + 1) * ow];
            for (d, &v) in dx[from..to].iter_mut().step_by(s).zip(&src[lo..hi]) {
                *d += v;
            }
        });
    }
}

/// The part of one input row that a row of the column matrix reads: input values
/// `from..to` (every `stride`-th) fill output columns `lo..hi`.
struct Span {
    from: usize,
    to: usize,
    lo: usize,
    hi: usize,
}

/// `y = conv(x, weight) + bias` for `images` images of shape `input`, as `torch.nn.Conv2d`.
///
/// `x` is `[images, in, H, W]`, `weight` `[out, in, k, k]`, `bias` `[out]` (given exactly
/// when `conv.bias`), `y` `[images, out, OH, OW]` (overwritten).
pub fn conv2d_forward<T: Float>(
    conv: &Conv2d,
    input: ImageShape,
    images: usize,
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) -> Result<(), NnError> {
    const OP: &str = "conv2d_forward";
    let geo = Geometry::checked(OP, conv, (input, images), x.len(), weight.len())?;
    check_images(OP, "y", y.len(), images, geo.output)?;
    check_bias(
        OP,
        "bias",
        conv.bias,
        bias.map(<[T]>::len),
        conv.out_channels,
    )?;
    if images == 0 {
        return Ok(());
    }

    let (one, zero) = (T::from_f64(1.0), T::from_f64(0.0));
    let (out_len, ohw) = (geo.output.len(), geo.cols);
    let block = geo.block(images);
    let mut cols = vec![zero; geo.rows * block * ohw];
    let mut product = vec![zero; conv.out_channels * block * ohw];
    for first in (0..images).step_by(block) {
        let count = block.min(images - first);
        let ld = count * ohw;
        geo.im2col_images(x, first, count, &mut cols);
        // product [out, count * OHW] = weight [out, in*k*k] . cols [in*k*k, count * OHW]
        T::gemm(
            conv.out_channels,
            geo.rows,
            ld,
            one,
            (weight, geo.rows, 1),
            (&cols, ld, 1),
            zero,
            (&mut product, ld, 1),
        );
        for j in 0..count {
            let yi = &mut y[(first + j) * out_len..(first + j + 1) * out_len];
            for (o, plane) in yi.chunks_exact_mut(ohw).enumerate() {
                let src = &product[o * ld + j * ohw..o * ld + (j + 1) * ohw];
                let b = bias.map_or(zero, |b| b[o]);
                for (d, &v) in plane.iter_mut().zip(src) {
                    *d = v + b;
                }
            }
        }
    }
    Ok(())
}

/// The gradients of [`conv2d_forward`] from `dy` `[images, out, OH, OW]`, given the
/// forward's `x` and `weight`.
pub fn conv2d_backward<T: Float>(
    conv: &Conv2d,
    input: ImageShape,
    images: usize,
    x: &[T],
    weight: &[T],
    dy: &[T],
    grads: WeightGrads<'_, T>,
) -> Result<(), NnError> {
    const OP: &str = "conv2d_backward";
    let geo = Geometry::checked(OP, conv, (input, images), x.len(), weight.len())?;
    check_images(OP, "dy", dy.len(), images, geo.output)?;
    grads.check(OP, weight.len(), conv.bias, conv.out_channels)?;
    if let Some(dx) = &grads.input {
        check_images(OP, "grads.input", dx.len(), images, input)?;
    }

    let (one, zero) = (T::from_f64(1.0), T::from_f64(0.0));
    let WeightGrads {
        input: mut dx,
        weight: dw,
        bias: mut db,
    } = grads;
    dw.fill(zero);
    if let Some(db) = db.as_deref_mut() {
        db.fill(zero);
    }
    if images == 0 {
        return Ok(());
    }

    let (in_len, out_len, ohw) = (input.len(), geo.output.len(), geo.cols);
    let block = geo.block(images);
    let mut cols = vec![zero; geo.rows * block * ohw];
    let mut dy_block = vec![zero; conv.out_channels * block * ohw];
    let mut dcols = vec![
        zero;
        if dx.is_some() {
            geo.rows * block * ohw
        } else {
            0
        }
    ];
    for first in (0..images).step_by(block) {
        let count = block.min(images - first);
        let ld = count * ohw;
        geo.im2col_images(x, first, count, &mut cols);
        for j in 0..count {
            let image = first + j;
            let dyi = &dy[image * out_len..(image + 1) * out_len];
            for (o, plane) in dyi.chunks_exact(ohw).enumerate() {
                dy_block[o * ld + j * ohw..o * ld + (j + 1) * ohw].copy_from_slice(plane);
            }
        }
        // dW += dy_block [out, count * OHW] . cols^T [count * OHW, in*k*k]
        T::gemm(
            conv.out_channels,
            ld,
            geo.rows,
            one,
            (&dy_block, ld, 1),
            (&cols, 1, ld),
            one,
            (dw, geo.rows, 1),
        );
        if let Some(db) = db.as_deref_mut() {
            for (d, row) in db.iter_mut().zip(dy_block.chunks_exact(ld)) {
                *d += row.iter().copied().sum::<T>();
            }
        }
        if let Some(dx) = dx.as_deref_mut() {
            // dcols [in*k*k, count * OHW] = W^T [in*k*k, out] . dy_block [out, count * OHW]
            T::gemm(
                geo.rows,
                conv.out_channels,
                ld,
                one,
                (weight, 1, geo.rows),
                (&dy_block, ld, 1),
                zero,
                (&mut dcols, ld, 1),
            );
            for j in 0..count {
                let dxi = &mut dx[(first + j) * in_len..(first + j + 1) * in_len];
                dxi.fill(zero);
                geo.col2im(&dcols, ld, j * ohw, dxi);
            }
        }
    }
    Ok(())
}

fn check_weight(op: &str, conv: &Conv2d, geo: &Geometry, len: usize) -> Result<(), NnError> {
    check_len(
        op,
        "weight",
        len,
        conv.out_channels * geo.rows,
        &format!("[out, in, k, k] = {:?}", conv.weight_shape()),
    )
}
