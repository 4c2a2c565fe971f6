//! How batch-norm's passes over `x` are checked and shaped: the one argument check of every
//! operation, and the work split that every pass shares.

use std::sync::Arc;

use snn_codegen::Dtype;
use snn_nn::{BatchNorm2d, ImageShape};

use crate::check::{self, Access};
use crate::device::Device;
use crate::error::RuntimeError;
use crate::launch::{self, Launch};
use crate::nn::kernels::{THREADS, check_images};
use crate::tensor::DeviceTensor;

/// A tensor argument: its name in errors, the tensor, and how the operation uses it.
pub(super) type Operand<'a> = (&'a str, &'a DeviceTensor, Access);

/// One batch-norm operation over `images` images of `input`.
pub(super) struct Batch<'a> {
    pub(super) op: &'static str,
    pub(super) device: &'a Arc<Device>,
    pub(super) bn: &'a BatchNorm2d,
    pub(super) input: ImageShape,
    pub(super) images: usize,
}

impl<'a> Batch<'a> {
    pub(super) fn new(
        op: &'static str,
        device: &'a Arc<Device>,
        bn: &'a BatchNorm2d,
        input: ImageShape,
        images: usize,
    ) -> Self {
        Self {
            op,
            device,
            bn,
            input,
            images,
        }
    }

    /// Checks the operation's tensors: the layer against `input`; `x` (read) and `like_x`
    /// `images` images of `input` each, all f32 or all bf16; `per_channel` one value per channel; all on the
    /// device, no written one sharing memory with another argument. Returns the values per
    /// channel, `images * H * W`.
    pub(super) fn check(
        &self,
        x: &DeviceTensor,
        like_x: &[Operand],
        per_channel: &[Operand],
    ) -> Result<usize, RuntimeError> {
        let op = self.op;
        self.bn
            .output(self.input)
            .map_err(|e| RuntimeError::invalid(op, e.to_string()))?;
        let len = check_images(op, "x", x, self.images, self.input)?;
        for &(name, t, _) in like_x {
            check::tensor(op, name, t, x.dtype, len, "like `x`")?;
        }
        check_channels(op, self.bn, per_channel)?;
        let x = [("x", x, Access::Read)];
        let all: Vec<Operand> = x.iter().chain(like_x).chain(per_channel).copied().collect();
        check::memory(op, self.device, &all)?;
        Ok(self.images * self.input.plane())
    }

    /// The error of a training batch with fewer than two values per channel (`n`), whose
    /// unbiased variance is undefined.
    pub(super) fn too_few(&self, n: usize) -> RuntimeError {
        RuntimeError::invalid(
            self.op,
            format!(
                "training needs more than one value per channel, got {} images of shape {} ({n} per channel); use a larger batch or eval mode",
                self.images, self.input
            ),
        )
    }

    /// The split of a pass over `x` whose large tensors are `large` (float4 access where
    /// they are all 16-byte aligned).
    pub(super) fn split(&self, large: &[&DeviceTensor]) -> Result<Split, RuntimeError> {
        Split::new(
            self.op,
            self.device,
            self.bn.channels,
            self.images,
            self.input.plane(),
            check::aligned16(large),
        )
    }
}

/// Checks that every tensor of `args` holds one f32 per channel.
pub(super) fn check_channels(
    op: &str,
    bn: &BatchNorm2d,
    args: &[Operand],
) -> Result<(), RuntimeError> {
    for &(name, t, _) in args {
        check::f32_tensor(op, name, t, bn.channels, "one per channel")?;
    }
    Ok(())
}

/// Blocks per multiprocessor the passes over `x` aim for (the kernels' launch bounds let 4
/// blocks of 256 threads share an SM, so the grid runs in one wave).
const BLOCKS_PER_SM: usize = 4;

/// Values a thread takes at least in a pass over `x`, so partials stay a small fraction of
/// the data.
const MIN_PER_THREAD: usize = 16;

/// How a pass over `x` splits the work (`kernels/batchnorm.cu` explains the fields), as
/// the kernels take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Split {
    /// `C`.
    channels: i64,
    /// `N`.
    pub(super) images: i64,
    /// `PU`: units per plane (`P / vec`).
    units: i64,
    /// `ipc`: images per chunk.
    pub(super) per_chunk: i64,
    /// `tg`: threads per channel group.
    lanes: i32,
    groups: i32,
    vec: i32,
    /// Blocks: (tiles of channel groups, chunks of images).
    grid: (u32, u32),
    /// `chunks` of the merges of a reduction's partials (at most 65535), and their blocks
    /// of one warp per channel.
    chunks: i32,
    merge_blocks: u32,
}

impl Split {
    pub(super) fn new(
        op: &str,
        device: &Device,
        channels: usize,
        images: usize,
        plane: usize,
        vec4: bool,
    ) -> Result<Self, RuntimeError> {
        let threads = THREADS as usize;
        let vec = if vec4 && plane.is_multiple_of(4) {
            4
        } else {
            1
        };
        let units = plane / vec;
        let (lanes, groups) = if units >= threads {
            (threads, 1)
        } else {
            (units.max(1), threads / units.max(1))
        };
        let tiles = channels.div_ceil(groups).max(1);
        let target = device.info.multiprocessors as usize * BLOCKS_PER_SM;
        // Values per thread per image: `vec` times its units of the plane.
        let per_image = vec * units.div_ceil(lanes).max(1);
        let max_chunks = images.div_ceil(MIN_PER_THREAD.div_ceil(per_image)).max(1);
        let wanted = target.div_ceil(tiles).clamp(1, max_chunks.min(65535));
        let per_chunk = images.div_ceil(wanted).max(1);
        let chunks = images.div_ceil(per_chunk).max(1);
        Ok(Self {
            // A grid dimension: `tiles` <= channels.
            channels: check::to_i32(op, "channels", channels)?.into(),
            images: check::to_i64(op, "images", images)?,
            units: check::to_i64(op, "units per plane", units)?,
            per_chunk: check::to_i64(op, "images per chunk", per_chunk)?,
            // Both at most THREADS.
            lanes: check::to_i32(op, "lanes", lanes)?,
            groups: check::to_i32(op, "groups", groups)?,
            vec: vec as i32,
            grid: (
                check::to_u32(op, "channel tiles", tiles)?,
                check::to_u32(op, "chunks", chunks)?,
            ),
            chunks: check::to_i32(op, "chunks", chunks)?,
            merge_blocks: check::to_u32(op, "blocks", channels.div_ceil(THREADS as usize / 32))?,
        })
    }

    /// Runs `launch`, a pass over `x` with its tensors and own values bound, binding the
    /// split.
    pub(super) fn run(&self, launch: Launch) -> Result<(), RuntimeError> {
        launch
            .arg("C", self.channels)
            .arg("N", self.images)
            .arg("PU", self.units)
            .arg("ipc", self.per_chunk)
            .arg("tg", self.lanes)
            .arg("groups", self.groups)
            .arg("vec", self.vec)
            .run(launch::config(self.grid, THREADS))
    }

    /// Room for a reduction's partials, two f32 per (channel, chunk).
    pub(super) fn partials(
        &self,
        device: &Arc<Device>,
        channels: usize,
    ) -> Result<DeviceTensor, RuntimeError> {
        DeviceTensor::empty(device, Dtype::F32, &[channels * self.grid.1 as usize * 2])
    }

    /// Runs `launch`, a merge of a reduction's partials, one warp per channel.
    pub(super) fn merge(&self, launch: Launch) -> Result<(), RuntimeError> {
        launch
            .arg("C", self.channels)
            .arg("chunks", self.chunks)
            .run(launch::config((self.merge_blocks, 1), THREADS))
    }
}
