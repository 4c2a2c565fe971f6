//! Max pooling, as `torch.nn.MaxPool2d`, and global average pooling, as
//! `torch.nn.AdaptiveAvgPool2d(1)` followed by a flatten.

use crate::cpu::conv::{check_images, check_len};
use crate::error::NnError;
use crate::float::Float;
use crate::layers::{ImageShape, MaxPool2d};

/// The pooled shape, with the error naming the operation.
fn pooled(op: &str, pool: &MaxPool2d, input: ImageShape) -> Result<ImageShape, NnError> {
    let output = pool
        .output(input)
        .map_err(|e| NnError::shape(format!("{op}: {e}")))?;
    if input.plane() == 0 {
        return Err(NnError::shape(format!(
            "{op}: cannot pool an empty {}x{} plane",
            input.height, input.width
        )));
    }
    if u32::try_from(input.plane()).is_err() {
        return Err(NnError::shape(format!(
            "{op}: an input plane of {}x{} values does not fit the u32 argmax",
            input.height, input.width
        )));
    }
    Ok(output)
}

/// The rows (or columns) `lo..hi` of the input that window `o` covers, clipped to the image.
fn window(o: usize, pool: &MaxPool2d, extent: usize) -> (usize, usize) {
    let start = o * pool.stride;
    let lo = start.saturating_sub(pool.padding);
    let hi = (start + pool.kernel)
        .saturating_sub(pool.padding)
        .min(extent);
    (lo, hi)
}

/// `y` = the maximum of each window, and `argmax` = the index `h * W + w` within its
/// channel plane of the value each output took (both overwritten).
///
/// Matches PyTorch exactly: padding never wins; among equal maxima the first in row-major
/// window order wins; a NaN counts as a maximum (the window's last NaN wins).
pub fn maxpool2d_forward<T: Float>(
    pool: &MaxPool2d,
    input: ImageShape,
    images: usize,
    x: &[T],
    y: &mut [T],
    argmax: &mut [u32],
) -> Result<(), NnError> {
    const OP: &str = "maxpool2d_forward";
    let output = pooled(OP, pool, input)?;
    check_images(OP, "x", x.len(), images, input)?;
    check_images(OP, "y", y.len(), images, output)?;
    check_len(
        OP,
        "argmax",
        argmax.len(),
        y.len(),
        "one per output value, like `y`",
    )?;

    let (width, plane, out_plane) = (input.width, input.plane(), output.plane());
    let planes = images * input.channels;
    for p in 0..planes {
        let xp = &x[p * plane..(p + 1) * plane];
        let yp = &mut y[p * out_plane..(p + 1) * out_plane];
        let ap = &mut argmax[p * out_plane..(p + 1) * out_plane];
        for oy in 0..output.height {
            let (h0, h1) = window(oy, pool, input.height);
            for ox in 0..output.width {
                let (w0, w1) = window(ox, pool, width);
                let mut best = T::from_f64(f64::NEG_INFINITY);
                let mut index = h0 * width + w0;
                for h in h0..h1 {
                    for (w, &v) in xp[h * width + w0..h * width + w1].iter().enumerate() {
                        if v > best || v.value().is_nan() {
                            best = v;
                            index = h * width + w0 + w;
                        }
                    }
                }
                let o = oy * output.width + ox;
                yp[o] = best;
                // The plane fits u32 (checked above), so its indices do too.
                ap[o] = index as u32;
            }
        }
    }
    Ok(())
}

/// `dx` = `dy` routed back to the input each output took (`argmax` from
/// [`maxpool2d_forward`]); `dx` is zeroed first, and inputs shared by overlapping windows
/// receive the sum.
pub fn maxpool2d_backward<T: Float>(
    pool: &MaxPool2d,
    input: ImageShape,
    images: usize,
    argmax: &[u32],
    dy: &[T],
    dx: &mut [T],
) -> Result<(), NnError> {
    const OP: &str = "maxpool2d_backward";
    let output = pooled(OP, pool, input)?;
    check_images(OP, "dy", dy.len(), images, output)?;
    check_len(
        OP,
        "argmax",
        argmax.len(),
        dy.len(),
        "one per output value, like `dy`",
    )?;
    check_images(OP, "dx", dx.len(), images, input)?;

    let (plane, out_plane) = (input.plane(), output.plane());
    if let Some((i, &a)) = argmax
        .iter()
        .enumerate()
        .find(|&(_, &a)| a as usize >= plane)
    {
        return Err(NnError::shape(format!(
            "{OP}: argmax[{i}] = {a} lies outside the {}x{} input plane; pass the argmax that maxpool2d_forward wrote for this input shape",
            input.height, input.width
        )));
    }
    dx.fill(T::from_f64(0.0));
    for p in 0..images * input.channels {
        let dxp = &mut dx[p * plane..(p + 1) * plane];
        let range = p * out_plane..(p + 1) * out_plane;
        for (&a, &d) in argmax[range.clone()].iter().zip(&dy[range]) {
            dxp[a as usize] += d;
        }
    }
    Ok(())
}

/// The values per plane, which must be at least one to average.
fn avg_plane(op: &str, input: ImageShape) -> Result<usize, NnError> {
    match input.plane() {
        0 => Err(NnError::shape(format!(
            "{op}: cannot average an empty {}x{} plane",
            input.height, input.width
        ))),
        plane => Ok(plane),
    }
}

/// `y[i, c]` = the mean of plane `c` of image `i`: `[images, C, H, W]` -> `[images, C]`
/// (overwritten).
pub fn global_avgpool_forward<T: Float>(
    input: ImageShape,
    images: usize,
    x: &[T],
    y: &mut [T],
) -> Result<(), NnError> {
    const OP: &str = "global_avgpool_forward";
    let plane = avg_plane(OP, input)?;
    check_images(OP, "x", x.len(), images, input)?;
    let features = ImageShape::features(input.channels);
    check_images(OP, "y", y.len(), images, features)?;
    let count = T::from_f64(plane as f64);
    for (yv, xp) in y.iter_mut().zip(x.chunks_exact(plane)) {
        *yv = xp.iter().copied().sum::<T>() / count;
    }
    Ok(())
}

/// `dx` = `dy / (H * W)` spread over each plane (overwritten).
pub fn global_avgpool_backward<T: Float>(
    input: ImageShape,
    images: usize,
    dy: &[T],
    dx: &mut [T],
) -> Result<(), NnError> {
    const OP: &str = "global_avgpool_backward";
    let plane = avg_plane(OP, input)?;
    check_images(
        OP,
        "dy",
        dy.len(),
        images,
        ImageShape::features(input.channels),
    )?;
    check_images(OP, "dx", dx.len(), images, input)?;
    let count = T::from_f64(plane as f64);
    for (dxp, &d) in dx.chunks_exact_mut(plane).zip(dy) {
        dxp.fill(d / count);
    }
    Ok(())
}
