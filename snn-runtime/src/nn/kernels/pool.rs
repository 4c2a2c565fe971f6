//! Max pooling (as `torch.nn.MaxPool2d`) and global average pooling (as
//! `torch.nn.AdaptiveAvgPool2d(1)` and a flatten) over `[images, C, H, W]` f32.
//!
//! The max-pool forward stores, per output, which element of its window won, as one byte,
//! so the backward reads neither `x` nor `y`; the backward gathers (each input sums the
//! outputs that chose it, in a fixed order), so it needs no atomics and no zeroing pass.
//! Both give each thread a strip of 4 neighbouring values of a row (outputs in the forward,
//! inputs in the backward): one 16-byte store, the row's window range worked out once for
//! the four, and, where a plane has at most 256 strips, no index division after the start.
//! At the Spiking-ResNet18 stem (`[3200, 64, 16, 16]`, 3x3 stride 2) the forward reads 210 MB
//! and writes 66 MB, the backward reads 66 MB and writes 210 MB.
//!
//! The kernels are `kernels/pool.cu`.

use std::sync::Arc;

use cudarc::driver::LaunchConfig;
use snn_codegen::Dtype;
use snn_nn::{ImageShape, MaxPool2d};

use super::{BLOCKS_PER_SM, THREADS, check_images, twin};
use crate::check;
use crate::device::Device;
use crate::error::RuntimeError;
use crate::launch::{self, Launch, programs};
use crate::tensor::DeviceTensor;

/// How the max-pool kernels split `planes` planes of `rows` x `cols` values into strips of
/// up to 4 values of a row, one per thread (`snn_pool_strips` in `kernels/pool.cu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Strips {
    /// Whole planes per block, or 0 when a plane has more than [`THREADS`] strips.
    per_block: i32,
    /// Blocks of [`THREADS`] strips per plane (used when `per_block` is 0).
    chunks: usize,
    threads: u32,
    blocks: u32,
}

impl Strips {
    fn new(device: &Device, planes: usize, rows: usize, cols: usize) -> Self {
        let block = THREADS as usize;
        // At most rows * cols (cols >= 1), so no overflow.
        let per_plane = (rows * cols.div_ceil(4)).max(1);
        // A full SM's worth of threads per multiprocessor; the grid strides over the rest.
        let resident = |threads: usize| {
            (device.info.multiprocessors as usize * BLOCKS_PER_SM * block / threads).max(1)
        };
        if per_plane <= block {
            let per_block = block / per_plane;
            let threads = (per_block * per_plane).next_multiple_of(32);
            let blocks = planes.div_ceil(per_block).clamp(1, resident(threads));
            Self {
                // Both at most THREADS.
                per_block: per_block as i32,
                chunks: 1,
                threads: threads as u32,
                blocks: blocks.min(u32::MAX as usize) as u32,
            }
        } else {
            let chunks = per_plane.div_ceil(block);
            let blocks = planes.saturating_mul(chunks).clamp(1, resident(block));
            Self {
                per_block: 0,
                chunks,
                threads: THREADS,
                blocks: blocks.min(u32::MAX as usize) as u32,
            }
        }
    }

    fn config(&self) -> LaunchConfig {
        launch::config((self.blocks, 1), self.threads)
    }
}

/// Whether indices up to `len` (plus a grid's worth of threads that a grid-stride loop
/// steps past the end) need 64 bits, which cost several times more than 32.
fn wide(len: usize) -> bool {
    len > (i32::MAX as usize) / 2
}

/// Checks a max pooling's arguments: a window whose index fits the one-byte argmax, a
/// non-empty input plane; `image` holding `images` images of `input` (the forward's input,
/// the backward's gradient), `pooled` as many of the pooled shape (both f32 or both bf16)
/// and `argmax` one byte per pooled value. Returns the pooled shape and the lengths of `image` and `pooled`.
fn check_maxpool(
    op: &str,
    pool: &MaxPool2d,
    (input, images): (ImageShape, usize),
    (image_arg, image): (&str, &DeviceTensor),
    (pooled_arg, pooled): (&str, &DeviceTensor),
    argmax: &DeviceTensor,
) -> Result<(ImageShape, usize, usize), RuntimeError> {
    let output = pool
        .output(input)
        .map_err(|e| RuntimeError::invalid(op, e.to_string()))?;
    if pool.kernel > 16 {
        return Err(RuntimeError::invalid(
            op,
            format!(
                "a {k}x{k} window has more than 256 elements, too many for the one-byte argmax; use a kernel of at most 16",
                k = pool.kernel
            ),
        ));
    }
    if input.plane() == 0 {
        return Err(RuntimeError::invalid(
            op,
            format!(
                "an empty {}x{} input plane has no maximum",
                input.height, input.width
            ),
        ));
    }
    let in_len = check_images(op, image_arg, image, images, input)?;
    let out_len = check_images(op, pooled_arg, pooled, images, output)?;
    check::tensor(
        op,
        pooled_arg,
        pooled,
        image.dtype,
        out_len,
        &format!("like `{image_arg}`"),
    )?;
    let what = format!("one per output value, like `{pooled_arg}`");
    check::tensor(op, "argmax", argmax, Dtype::U8, out_len, &what)?;
    Ok((output, in_len, out_len))
}

/// What the max-pool kernels take after their tensors, and how they are launched over the
/// strips of every plane of `over` (the output in the forward, the input in the backward).
struct MaxPoolLaunch {
    sizes: [(&'static str, i64); 8],
    strips: Strips,
    chunks: i64,
    /// 64-bit indices: the kernel's `_wide` twin.
    wide: bool,
}

impl MaxPoolLaunch {
    /// For `images` images of `input` pooled to `output`, both checked by the caller.
    fn new(
        op: &str,
        device: &Device,
        pool: &MaxPool2d,
        input: ImageShape,
        output: ImageShape,
        images: usize,
        over: ImageShape,
    ) -> Result<Self, RuntimeError> {
        let planes = check::product(op, &[images, input.channels], "planes")?;
        let sizes = [
            ("planes", planes),
            ("H", input.height),
            ("W", input.width),
            ("Ho", output.height),
            ("Wo", output.width),
            ("k", pool.kernel),
            ("s", pool.stride),
            ("pad", pool.padding),
        ];
        let mut args = [("", 0i64); 8];
        for (a, (name, v)) in args.iter_mut().zip(sizes) {
            *a = (name, check::to_i64(op, name, v)?);
        }
        let strips = Strips::new(device, planes, over.height, over.width);
        // The caller checked that both tensors' lengths fit.
        let most = planes.saturating_mul(input.plane().max(output.plane()));
        Ok(Self {
            sizes: args,
            chunks: check::to_i64(op, "chunks", strips.chunks)?,
            strips,
            wide: wide(most),
        })
    }

    /// A launch of the kernel of `names` (f32, then its `_wide` twin for 64-bit indices,
    /// then both for bf16) for tensors of `dtype`.
    fn kernel<'d>(
        &self,
        device: &'d Device,
        dtype: Dtype,
        names: [[&'static str; 2]; 2],
    ) -> Result<Launch<'d>, RuntimeError> {
        let [name, wide] = names.map(|n| twin(dtype, n));
        device.kernel(&programs::POOL, if self.wide { wide } else { name })
    }

    /// Runs `launch` (its tensors bound), with `vec` where every row starts aligned for
    /// the kernel's wide stores.
    fn run(&self, launch: Launch, vec: bool) -> Result<(), RuntimeError> {
        let launch = self
            .sizes
            .iter()
            .fold(launch, |launch, &(name, v)| launch.arg(name, v));
        launch
            .arg("per_block", self.strips.per_block)
            .arg("chunks", self.chunks)
            .arg("vec", i32::from(vec))
            .run(self.strips.config())
    }
}

/// Max pooling, as `torch.nn.MaxPool2d`: `y` = each window's maximum, `argmax` = the index
/// `kh * kernel + kw` within its window of the element that won (both overwritten).
/// Padding never wins; among equal maxima the first in row-major window order wins; a NaN
/// counts as a maximum. `x` is `[images, C, H, W]` f32 or bf16, `y` the pooled shape of
/// the same dtype and `argmax` u8 of the same length; no output may share memory with another argument.
pub fn maxpool2d_forward(
    device: &Arc<Device>,
    pool: &MaxPool2d,
    input: ImageShape,
    images: usize,
    x: &DeviceTensor,
    y: &DeviceTensor,
    argmax: &DeviceTensor,
) -> Result<(), RuntimeError> {
    const OP: &str = "maxpool2d_forward";
    let (output, _, out_len) =
        check_maxpool(OP, pool, (input, images), ("x", x), ("y", y), argmax)?;
    if out_len == 0 {
        return Ok(());
    }
    let m = MaxPoolLaunch::new(OP, device, pool, input, output, images, output)?;
    // 16-byte stores of `y` and 4-byte stores of `argmax` where every row starts aligned.
    let vec =
        output.width.is_multiple_of(4) && check::aligned16(&[y]) && argmax.ptr().is_multiple_of(4);
    let kernels = [
        ["snn_maxpool2d_forward", "snn_maxpool2d_forward_bf16"],
        [
            "snn_maxpool2d_forward_wide",
            "snn_maxpool2d_forward_wide_bf16",
        ],
    ];
    let launch = m.kernel(device, x.dtype, kernels)?;
    m.run(launch.arg("x", x).arg("y", y).arg("argmax", argmax), vec)
}

/// Backward of [`maxpool2d_forward`]: `dx` (overwritten) = each `dy` routed to the input its
/// window chose (`argmax` from the forward on this input shape); inputs that several
/// overlapping windows chose receive the sum, added in row-major output order. An `argmax`
/// value outside the window matches no input and is dropped. `dx` must not share memory
/// with another argument.
pub fn maxpool2d_backward(
    device: &Arc<Device>,
    pool: &MaxPool2d,
    input: ImageShape,
    images: usize,
    argmax: &DeviceTensor,
    dy: &DeviceTensor,
    dx: &DeviceTensor,
) -> Result<(), RuntimeError> {
    const OP: &str = "maxpool2d_backward";
    let (output, in_len, _) =
        check_maxpool(OP, pool, (input, images), ("dx", dx), ("dy", dy), argmax)?;
    if in_len == 0 {
        return Ok(());
    }
    let m = MaxPoolLaunch::new(OP, device, pool, input, output, images, input)?;
    // 16-byte stores of `dx` where every row starts aligned.
    let vec = input.width.is_multiple_of(4) && check::aligned16(&[dx]);
    let kernels = [
        ["snn_maxpool2d_backward", "snn_maxpool2d_backward_bf16"],
        [
            "snn_maxpool2d_backward_wide",
            "snn_maxpool2d_backward_wide_bf16",
        ],
    ];
    let launch = m.kernel(device, dy.dtype, kernels)?;
    m.run(
        launch.arg("argmax", argmax).arg("dy", dy).arg("dx", dx),
        vec,
    )
}

/// A global average pooling over `rows` planes of `plane` values each.
struct AvgPool {
    op: &'static str,
    rows: usize,
    plane: usize,
}

impl AvgPool {
    /// Checks the tensors: `image` holds `images` images of `input` (the forward's input,
    /// the backward's gradient), `pooled` one value per plane.
    fn new(
        op: &'static str,
        input: ImageShape,
        images: usize,
        (image_arg, image): (&str, &DeviceTensor),
        (pooled_arg, pooled): (&str, &DeviceTensor),
    ) -> Result<Self, RuntimeError> {
        let plane = input.plane();
        if plane == 0 {
            let (h, w) = (input.height, input.width);
            return Err(RuntimeError::invalid(
                op,
                format!("cannot average an empty {h}x{w} plane"),
            ));
        }
        let rows = check_images(op, image_arg, image, images, input)? / plane;
        let what = format!("{images} images of {} channels", input.channels);
        check::f32_tensor(op, pooled_arg, pooled, rows, &what)?;
        Ok(Self { op, rows, plane })
    }

    /// All values (they fit: checked as the image tensor's length).
    fn len(&self) -> usize {
        self.rows * self.plane
    }

    /// Runs `launch` (its tensors and own value bound), binding the sizes, as a
    /// grid-stride loop over `work` items.
    fn run(&self, device: &Device, launch: Launch, work: usize) -> Result<(), RuntimeError> {
        let config = launch::grid_stride(device, work, THREADS, BLOCKS_PER_SM);
        launch
            .arg("rows", check::to_i64(self.op, "rows", self.rows)?)
            .arg("plane", check::to_i64(self.op, "plane", self.plane)?)
            .arg("wide", i32::from(wide(self.len())))
            .run(config)
    }
}

/// Global average pooling: `y[i, c]` (overwritten) = the mean of plane `c` of image `i`,
/// `[images, C, H, W]` (f32 or bf16) -> `[images, C]` (f32). `y` must not share memory with `x`.
pub fn global_avgpool_forward(
    device: &Arc<Device>,
    input: ImageShape,
    images: usize,
    x: &DeviceTensor,
    y: &DeviceTensor,
) -> Result<(), RuntimeError> {
    let pool = AvgPool::new("global_avgpool_forward", input, images, ("x", x), ("y", y))?;
    if pool.rows == 0 {
        return Ok(());
    }
    // Lanes per row: the largest power of two up to min(32, plane).
    let lanes = 1i32 << pool.plane.min(32).ilog2();
    let per_warp = 32 / lanes as usize;
    let warps = pool.rows.div_ceil(per_warp);
    let names = ["snn_avgpool_forward", "snn_avgpool_forward_bf16"];
    let launch = device.kernel(&programs::POOL, twin(x.dtype, names))?;
    pool.run(
        device,
        launch.arg("x", x).arg("y", y).arg("lanes", lanes),
        warps * 32,
    )
}

/// Backward of [`global_avgpool_forward`]: `dx` (overwritten) = `dy / (H * W)` spread over
/// each plane (`dy` f32, `dx` f32 or bf16). `dx` must not share memory with `dy`.
pub fn global_avgpool_backward(
    device: &Arc<Device>,
    input: ImageShape,
    images: usize,
    dy: &DeviceTensor,
    dx: &DeviceTensor,
) -> Result<(), RuntimeError> {
    let pool = AvgPool::new(
        "global_avgpool_backward",
        input,
        images,
        ("dx", dx),
        ("dy", dy),
    )?;
    if pool.len() == 0 {
        return Ok(());
    }
    let vec = if pool.plane.is_multiple_of(4) && check::aligned16(&[dx]) {
        4i32
    } else {
        1
    };
    let names = ["snn_avgpool_backward", "snn_avgpool_backward_bf16"];
    let launch = device.kernel(&programs::POOL, twin(dx.dtype, names))?;
    pool.run(
        device,
        launch.arg("dy", dy).arg("dx", dx).arg("vec", vec),
        pool.len() / vec as usize,
    )
}
