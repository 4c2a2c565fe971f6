//! Host-to-device uploads through pinned staging buffers on a copy stream of their own, so
//! that batches travel over PCIe while the GPU computes and the GPU never waits on data in
//! steady state.
//!
//! An [`Uploader`] owns a ring of `slots` (3 by default) pinned host buffers, each with a
//! device staging buffer of the same size, and a non-blocking copy stream. One upload:
//!
//! 1. the host waits until the slot's previous copy has finished (the pinned buffer is free
//!    again), then fills the pinned buffer;
//! 2. the copy stream waits until the compute stream has finished reading the slot's
//!    staging buffer, then copies the pinned buffer into it and records `copied`;
//! 3. the compute stream (the device's one stream, which every kernel uses) waits for
//!    `copied` and converts or copies the staging buffer into a fresh tensor, then records
//!    `released`.
//!
//! All waits are events, never a stream synchronization, so with `slots` buffers the host
//! can run `slots - 1` uploads ahead of the GPU: copies of the next batches overlap the
//! current batch's compute, and the host only blocks when it is that far ahead. The
//! returned tensors are ordinary tensors of the device's stream: work on them needs no
//! further synchronization.
//!
//! Image pixels travel as `u8` (4x fewer bytes than `f32`) and become `f32` intensities in
//! `[0, 1]` on the GPU with IEEE round-to-nearest division, bit-identical to the CPU's
//! `v / 255`, so [`encode::rate_encode`](crate::encode::rate_encode) gives the same spikes
//! as the CPU encoder. Event-frame counts may travel as `u8` too (converted to `f32` as is).
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaEvent, CudaStream, PinnedHostSlice, sys};
use snn_codegen::Dtype;
use snn_data::{Batch, BatchLayout};

use crate::check;
use crate::device::Device;
use crate::error::RuntimeError;
use crate::launch::{self, programs};
use crate::tensor::DeviceTensor;

/// The conversion kernel, in `kernels/staging.cu`.
const KERNEL: &str = "snn_u8_to_f32";

/// Pinned host buffers larger than this are refused: no batch needs them, and cudarc's
/// allocator asserts below `isize::MAX`.
const MAX_BYTES_LIMIT: usize = 1 << 40;

/// What an [`Uploader`] has done since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Uploads issued.
    pub uploads: u64,
    /// Bytes copied host to device (the `u8` bytes, before conversion).
    pub bytes: u64,
    /// Time the host spent waiting for a pinned buffer whose previous copy had not
    /// finished: near zero when the GPU keeps up, growing when the host runs ahead.
    pub host_wait: Duration,
}

/// A batch on the device, as the encoders and layers take it.
#[derive(Debug)]
pub struct DeviceBatch {
    /// The values as `f32`: intensities `[B, P]` in `[0, 1]` from
    /// [`Uploader::upload_images`], or frames `[T, B, ...]` from
    /// [`Uploader::upload_counts`] and [`Uploader::upload_frames`].
    pub data: DeviceTensor,
    /// One label per sample, `u8` `[B]`.
    pub labels: DeviceTensor,
    /// The dataset index of each sample (the rate encoder's sample ids), on the host.
    pub samples: Vec<u64>,
}

/// One buffer of the ring.
#[derive(Debug)]
struct Slot {
    host: PinnedHostSlice<u8>,
    /// `u8` `[max_bytes]` on the device, written only by the copy stream and read only by
    /// the compute stream.
    staging: DeviceTensor,
    /// Recorded on the copy stream after the copy out of `host`.
    copied: CudaEvent,
    /// Recorded on the compute stream after the last read of `staging`.
    released: CudaEvent,
}

/// Uploads batches through a ring of pinned buffers on a dedicated copy stream (module
/// docs). Create one per device and training loop, sized for the largest batch.
#[derive(Debug)]
pub struct Uploader {
    device: Arc<Device>,
    copy: Arc<CudaStream>,
    slots: Vec<Slot>,
    next: usize,
    max_bytes: usize,
    stats: UploadStats,
}

/// How the staged `u8` bytes become the batch's data tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Convert {
    /// `v / 255` to `f32`.
    Unit,
    /// `v` to `f32`.
    Count,
    /// The bytes are already `f32` values.
    Copy,
}

impl Uploader {
    /// Buffers in the ring by default: one being filled by the host, one being copied, one
    /// being read by the GPU.
    pub const DEFAULT_SLOTS: usize = 3;

    /// An uploader whose uploads may be up to `max_bytes` bytes each (for a batch: its
    /// `u8` pixels or counts plus one byte per label), with [`Self::DEFAULT_SLOTS`]
    /// buffers. Compiles the conversion kernel now, so a missing NVRTC shows here.
    pub fn new(device: &Arc<Device>, max_bytes: usize) -> Result<Self, RuntimeError> {
        Self::with_slots(device, max_bytes, Self::DEFAULT_SLOTS)
    }

    /// The same with `slots` buffers (at least 2: with one, the host waits for every copy).
    pub fn with_slots(
        device: &Arc<Device>,
        max_bytes: usize,
        slots: usize,
    ) -> Result<Self, RuntimeError> {
        if max_bytes == 0 || max_bytes > MAX_BYTES_LIMIT {
            return Err(RuntimeError::invalid(
                "creating an uploader",
                format!(
                    "it needs 1 to 2^40 bytes per buffer, got {max_bytes}; size it for the \
                     largest batch (values plus one byte per label)"
                ),
            ));
        }
        if slots < 2 {
            return Err(RuntimeError::invalid(
                "creating an uploader",
                format!("it needs at least 2 buffers to overlap copies with compute, got {slots}"),
            ));
        }
        // Compiled and loaded now, so that a missing NVRTC shows here.
        drop(device.kernel(&programs::STAGING, KERNEL)?);
        let ctx = &device.ctx;
        let copy = ctx
            .new_stream()
            .map_err(|e| RuntimeError::driver("creating the upload stream", e))?;
        let event = |flags| {
            ctx.new_event(Some(flags))
                .map_err(|e| RuntimeError::driver("creating an upload event", e))
        };
        let mut ring = Vec::with_capacity(slots);
        for _ in 0..slots {
            // SAFETY: the memory is uninitialised until it is zeroed right below, before
            // anything reads it. Flags 0 (not write-combined) keep host reads of the buffer
            // fast for `upload_with` closures that read what they wrote.
            let mut host =
                unsafe { ctx.alloc_pinned_with_flags::<u8>(max_bytes, 0) }.map_err(|e| {
                    RuntimeError::driver(
                        format!("allocating {max_bytes} bytes of pinned memory"),
                        e,
                    )
                })?;
            host.as_mut_slice()
                .map_err(|e| RuntimeError::driver("zeroing pinned memory", e))?
                .fill(0);
            ring.push(Slot {
                host,
                staging: DeviceTensor::zeros(device, Dtype::U8, &[max_bytes])?,
                // The host blocks on `copied`: a blocking-sync event sleeps instead of
                // spinning a core that the loader's workers need.
                copied: event(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC)?,
                released: event(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)?,
            });
        }
        // The staging buffers were allocated and zeroed on the compute stream (possibly
        // reusing memory that earlier kernels still use): the copy stream starts after that.
        for slot in &ring {
            slot.released
                .record(&device.stream)
                .map_err(|e| RuntimeError::driver("recording an upload event", e))?;
        }
        Ok(Self {
            device: device.clone(),
            copy,
            slots: ring,
            next: 0,
            max_bytes,
            stats: UploadStats::default(),
        })
    }

    /// The largest upload, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Buffers in the ring.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Uploads, bytes and host waiting time so far.
    pub fn stats(&self) -> UploadStats {
        self.stats
    }

    /// The stream the copies run on (for timing them with events).
    pub fn copy_stream(&self) -> &Arc<CudaStream> {
        &self.copy
    }

    /// Uploads `bytes` as a tensor of `dtype` and `shape` (its storage, little-endian, as
    /// [`Dtype::encode`] writes it).
    pub fn upload_bytes(
        &mut self,
        dtype: Dtype,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<DeviceTensor, RuntimeError> {
        let len = tensor_bytes(dtype, shape)?;
        if bytes.len() != len {
            return Err(RuntimeError::invalid(
                "upload_bytes",
                format!(
                    "{} bytes for a {dtype} tensor of shape {shape:?} ({len} bytes)",
                    bytes.len()
                ),
            ));
        }
        self.upload_with(dtype, shape, |buf| buf.copy_from_slice(bytes))
    }

    /// Uploads a tensor of `dtype` and `shape` whose bytes `fill` writes straight into the
    /// pinned buffer (saving a host copy when the data are assembled there).
    pub fn upload_with(
        &mut self,
        dtype: Dtype,
        shape: &[usize],
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<DeviceTensor, RuntimeError> {
        let len = tensor_bytes(dtype, shape)?;
        let out = DeviceTensor::empty(&self.device, dtype, shape)?;
        if len == 0 {
            return Ok(out);
        }
        let k = self.stage(len, fill)?;
        let staged = self.slots[k].staging.ptr();
        let result = self.dtod(out.ptr(), staged, len);
        self.release(k)?;
        result.map(|()| out)
    }

    /// Uploads a batch of `u8` images: `pixels` is `shape` (`[B, ...]`, e.g. `[B, C, H,
    /// W]`), `labels` and `samples` have one entry per image. The data come out as `f32`
    /// intensities `v / 255` of shape `[B, P]` (`P` the pixels per image), ready for
    /// [`encode::rate_encode`](crate::encode::rate_encode).
    pub fn upload_images(
        &mut self,
        pixels: &[u8],
        shape: &[usize],
        labels: &[u8],
        samples: &[u64],
    ) -> Result<DeviceBatch, RuntimeError> {
        check_batch(pixels.len(), shape, 0, labels, samples)?;
        // A shape [B, ...] (checked) with one label per image.
        let shape = [labels.len(), shape[1..].iter().product()];
        let fill = |head: &mut [u8]| head.copy_from_slice(pixels);
        self.batch(pixels.len(), fill, &shape, labels, samples, Convert::Unit)
    }

    /// Uploads a batch of `u8` event counts of time-major `shape` (`[T, B, ...]`, e.g. the
    /// event loader's `[T, B, 2, H, W]`), converted to `f32` counts of the same shape.
    pub fn upload_counts(
        &mut self,
        counts: &[u8],
        shape: &[usize],
        labels: &[u8],
        samples: &[u64],
    ) -> Result<DeviceBatch, RuntimeError> {
        check_batch(counts.len(), shape, 1, labels, samples)?;
        let fill = |head: &mut [u8]| head.copy_from_slice(counts);
        self.batch(counts.len(), fill, shape, labels, samples, Convert::Count)
    }

    /// Uploads a batch of `f32` frames of time-major `shape` (`[T, B, ...]`) as they are.
    pub fn upload_frames(
        &mut self,
        values: &[f32],
        shape: &[usize],
        labels: &[u8],
        samples: &[u64],
    ) -> Result<DeviceBatch, RuntimeError> {
        check_batch(values.len(), shape, 1, labels, samples)?;
        let fill = |head: &mut [u8]| {
            for (out, v) in head.chunks_exact_mut(4).zip(values) {
                out.copy_from_slice(&v.to_le_bytes());
            }
        };
        self.batch(values.len(), fill, shape, labels, samples, Convert::Copy)
    }

    /// Waits until every copy issued so far has finished (the compute stream is not
    /// waited for).
    pub fn synchronize(&self) -> Result<(), RuntimeError> {
        self.copy
            .synchronize()
            .map_err(|e| RuntimeError::driver("waiting for uploads", e))
    }

    /// Stages `count` values (written by `fill`, as `u8` or, for [`Convert::Copy`], `f32`
    /// bytes) then `labels` in one copy, and converts them into a new batch of `shape`.
    fn batch(
        &mut self,
        count: usize,
        fill: impl FnOnce(&mut [u8]),
        shape: &[usize],
        labels: &[u8],
        samples: &[u64],
        convert: Convert,
    ) -> Result<DeviceBatch, RuntimeError> {
        let too_large = || {
            RuntimeError::invalid(
                "uploading a batch",
                format!(
                    "{count} values and {} labels overflow a byte count",
                    labels.len()
                ),
            )
        };
        let width = if convert == Convert::Copy { 4 } else { 1 };
        let bytes = count.checked_mul(width).ok_or_else(too_large)?;
        let len = bytes.checked_add(labels.len()).ok_or_else(too_large)?;
        let data = DeviceTensor::empty(&self.device, Dtype::F32, shape)?;
        let label_tensor = DeviceTensor::empty(&self.device, Dtype::U8, &[labels.len()])?;
        if len > 0 {
            let k = self.stage(len, |buf| {
                let (head, tail) = buf.split_at_mut(bytes);
                fill(head);
                tail.copy_from_slice(labels);
            })?;
            let result = self.finish(k, &data, &label_tensor, count, bytes, convert);
            self.release(k)?;
            result?;
        }
        Ok(DeviceBatch {
            data,
            labels: label_tensor,
            samples: samples.to_vec(),
        })
    }

    /// On the compute stream: the `count` values at the start of slot `k` into `data`, the
    /// labels at byte `labels_at` into `labels`.
    fn finish(
        &self,
        k: usize,
        data: &DeviceTensor,
        labels: &DeviceTensor,
        count: usize,
        labels_at: usize,
        convert: Convert,
    ) -> Result<(), RuntimeError> {
        let staging = &self.slots[k].staging;
        match convert {
            Convert::Copy => self.dtod(data.ptr(), staging.ptr(), count * 4)?,
            Convert::Unit | Convert::Count => {
                self.convert(staging, data, count, convert == Convert::Unit)?
            }
        }
        let labels_src = staging.ptr() + labels_at as u64;
        self.dtod(labels.ptr(), labels_src, labels.num_bytes())
    }

    /// Fills slot `next` through `fill` and copies its first `len` bytes to its staging
    /// buffer on the copy stream; the compute stream waits for the copy. Returns the slot,
    /// which the caller must [`release`](Self::release) after enqueueing its reads.
    fn stage(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<usize, RuntimeError> {
        if len > self.max_bytes {
            return Err(RuntimeError::invalid(
                "uploading",
                format!(
                    "{len} bytes do not fit the uploader's {}-byte buffers; create the \
                     Uploader with max_bytes of at least {len}",
                    self.max_bytes
                ),
            ));
        }
        let driver = |doing: &str| {
            let doing = doing.to_string();
            move |e| RuntimeError::driver(doing, e)
        };
        self.device
            .ctx
            .bind_to_thread()
            .map_err(driver("binding the device's context"))?;
        let k = self.next;
        self.next = (k + 1) % self.slots.len();
        let slot = &mut self.slots[k];
        // 1. The pinned buffer is free once its previous copy has finished.
        if !slot.copied.is_complete() {
            let start = Instant::now();
            slot.copied
                .synchronize()
                .map_err(driver("waiting for a pinned buffer"))?;
            self.stats.host_wait += start.elapsed();
        }
        let host = slot
            .host
            .as_mut_slice()
            .map_err(driver("reading a pinned buffer"))?;
        fill(&mut host[..len]);
        // 2. The staging buffer is free once the compute stream has read it.
        self.copy
            .wait(&slot.released)
            .map_err(driver("ordering an upload after its buffer's last use"))?;
        // SAFETY: the source is `len` bytes of this slot's pinned buffer, which is neither
        // written (step 1 waits for `copied`) nor freed (`Drop` synchronizes the copy
        // stream) before the copy finishes; the destination is this slot's staging buffer
        // of `max_bytes >= len` bytes, which no kernel reads until the compute stream has
        // waited for `copied`, and which has no other reader left (the wait above).
        unsafe {
            cudarc::driver::result::memcpy_htod_async(
                slot.staging.ptr(),
                &host[..len],
                self.copy.cu_stream(),
            )
        }
        .map_err(driver("copying a batch to the device"))?;
        slot.copied
            .record(&self.copy)
            .map_err(driver("recording an upload event"))?;
        // 3. Everything the compute stream does from here on sees the data.
        self.device
            .stream
            .wait(&slot.copied)
            .map_err(driver("making the compute stream wait for an upload"))?;
        self.stats.uploads += 1;
        self.stats.bytes += len as u64;
        Ok(k)
    }

    /// Marks slot `k`'s staging buffer free once the compute work enqueued so far is done.
    fn release(&self, k: usize) -> Result<(), RuntimeError> {
        self.slots[k]
            .released
            .record(&self.device.stream)
            .map_err(|e| RuntimeError::driver("recording an upload event", e))
    }

    /// A device-to-device copy of `bytes` bytes on the compute stream.
    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<(), RuntimeError> {
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: the callers pass a staging slot's address (at an offset within the
        // staged bytes) and a tensor of at least `bytes` bytes; the copy is ordered on the
        // compute stream after the upload it reads.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                dst,
                src,
                bytes,
                self.device.stream.cu_stream(),
            )
        }
        .map_err(|e| RuntimeError::driver("copying a staged batch", e))
    }

    /// The first `n` bytes of `staging` to the `n` `f32` of `data`, divided by 255 when
    /// `unit`, on the compute stream (after its wait for the upload).
    fn convert(
        &self,
        staging: &DeviceTensor,
        data: &DeviceTensor,
        n: usize,
        unit: bool,
    ) -> Result<(), RuntimeError> {
        if n == 0 {
            return Ok(());
        }
        check::f32_tensor(KERNEL, "out", data, n, "one per staged byte")?;
        self.device
            .kernel(&programs::STAGING, KERNEL)?
            .arg("in", &staging.view(0, &[n])?)
            .arg("out", data)
            .arg("n", check::to_i64(KERNEL, "n", n)?)
            .arg("unit", i32::from(unit))
            .run(launch::grid_stride(&self.device, n, 256, 32))
    }
}

/// Uploading the host batches of `snn_data`'s loaders: `batch.upload_images(&mut
/// uploader)`. Each checks that the batch has the layout its upload expects.
pub trait Upload {
    /// An image batch (`u8` `[B, C, H, W]`): `f32` intensities `[B, C * H * W]` in
    /// `[0, 1]`, ready for [`rate_encode`](crate::encode::rate_encode), with the labels
    /// and sample indices.
    fn upload_images(&self, uploader: &mut Uploader) -> Result<DeviceBatch, RuntimeError>;
    /// A time-major batch of `u8` event counts, as `f32` counts of the same shape.
    fn upload_counts(&self, uploader: &mut Uploader) -> Result<DeviceBatch, RuntimeError>;
}

impl Upload for Batch<u8> {
    fn upload_images(&self, uploader: &mut Uploader) -> Result<DeviceBatch, RuntimeError> {
        require(self, BatchLayout::SampleMajor, "upload_images")?;
        uploader.upload_images(&self.data, &self.shape, &self.labels, &self.indices)
    }

    fn upload_counts(&self, uploader: &mut Uploader) -> Result<DeviceBatch, RuntimeError> {
        require(self, BatchLayout::TimeMajor, "upload_counts")?;
        uploader.upload_counts(&self.data, &self.shape, &self.labels, &self.indices)
    }
}

/// Uploading a host batch of `f32` event frames (time-major), as they are.
pub trait UploadFrames {
    fn upload_frames(&self, uploader: &mut Uploader) -> Result<DeviceBatch, RuntimeError>;
}

impl UploadFrames for Batch<f32> {
    fn upload_frames(&self, uploader: &mut Uploader) -> Result<DeviceBatch, RuntimeError> {
        require(self, BatchLayout::TimeMajor, "upload_frames")?;
        uploader.upload_frames(&self.data, &self.shape, &self.labels, &self.indices)
    }
}

fn require<E>(batch: &Batch<E>, layout: BatchLayout, what: &str) -> Result<(), RuntimeError> {
    if batch.layout == layout {
        return Ok(());
    }
    Err(RuntimeError::invalid(
        what,
        format!(
            "takes a {layout:?} batch, but this batch of shape {:?} is {:?}",
            batch.shape, batch.layout
        ),
    ))
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // Pinned buffers must outlive the copies out of them; staging buffers go back to the
        // compute stream's allocator, which orders their reuse after the reads it waited for.
        let _ = self.device.ctx.bind_to_thread();
        let _ = self.copy.synchronize();
    }
}

/// Bytes of a `dtype` tensor of `shape`, or an error when that overflows.
fn tensor_bytes(dtype: Dtype, shape: &[usize]) -> Result<usize, RuntimeError> {
    shape
        .iter()
        .try_fold(dtype.size(), |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            RuntimeError::invalid(
                "uploading",
                format!("a {dtype} tensor of shape {shape:?} is too large"),
            )
        })
}

/// Checks that `values` values fill `shape`, whose axis `batch_axis` is the batch, and that
/// there are as many labels and sample ids as samples.
fn check_batch(
    values: usize,
    shape: &[usize],
    batch_axis: usize,
    labels: &[u8],
    samples: &[u64],
) -> Result<(), RuntimeError> {
    let layout = if batch_axis == 0 {
        "[B, ...]"
    } else {
        "[T, B, ...]"
    };
    const OP: &str = "uploading a batch";
    let Some(&batch) = shape.get(batch_axis) else {
        return Err(RuntimeError::invalid(
            OP,
            format!("it needs a shape {layout}, got {shape:?}"),
        ));
    };
    let len = check::product(OP, shape, "values")?;
    if len != values {
        return Err(RuntimeError::invalid(
            OP,
            format!("{values} values for a batch of shape {shape:?} ({len} values)"),
        ));
    }
    if labels.len() != batch || samples.len() != batch {
        return Err(RuntimeError::invalid(
            OP,
            format!(
                "a batch of shape {shape:?} ({layout}) holds {batch} samples, but got {} \
                 labels and {} sample indices",
                labels.len(),
                samples.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_shapes_are_checked() {
        assert!(check_batch(12, &[3, 4], 0, &[0; 3], &[0; 3]).is_ok());
        assert!(check_batch(24, &[2, 3, 4], 1, &[0; 3], &[0; 3]).is_ok());
        let err = check_batch(11, &[3, 4], 0, &[0; 3], &[0; 3]).unwrap_err();
        assert!(err.to_string().contains("11 values"), "{err}");
        let err = check_batch(24, &[2, 3, 4], 1, &[0; 2], &[0; 3]).unwrap_err();
        assert!(err.to_string().contains("holds 3 samples"), "{err}");
        let err = check_batch(0, &[5], 1, &[], &[]).unwrap_err();
        assert!(err.to_string().contains("[T, B, ...]"), "{err}");
        assert!(check_batch(0, &[usize::MAX, 3], 0, &[], &[]).is_err());
        assert!(tensor_bytes(Dtype::F32, &[usize::MAX / 2, 3]).is_err());
        assert_eq!(tensor_bytes(Dtype::F32, &[2, 3]).ok(), Some(24));
    }
}
