//! The losses of [`snn_nn::loss`] on the GPU: cross-entropy of time-averaged logits (the
//! paper's) and MSE of firing rates (SpikingJelly's), each one kernel (`kernels/loss.cu`)
//! over the `[T, B, K]` f32 output that writes `dL/doutput` and each sample's loss and
//! correctness.
//!
//! One block per sample, with fixed-tree block reductions, and the per-sample values summed
//! on the host in sample order: the loss is deterministic. Time sums run in time order and
//! the average divides with correct rounding, as the CPU reference does, so the predicted
//! classes (and ties, common for spike counts) agree with it exactly.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{CudaEvent, PinnedHostSlice, sys};
use snn_codegen::Dtype;
use snn_nn::Loss;

use crate::check::{self, Access};
use crate::device::Device;
use crate::error::RuntimeError;
use crate::launch::{self, programs};
use crate::tensor::DeviceTensor;

/// Threads per block (`SNN_THREADS` in `kernels/loss.cu`).
const THREADS: u32 = 256;

/// The smallest batch a [`LossGpu`]'s buffers are made for (they grow to the largest
/// batch seen).
const MIN_CAPACITY: usize = 256;

/// A batch's loss and how many of its samples were classified right (the gradient went to
/// the tensor passed in).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossValue {
    pub loss: f32,
    pub correct: usize,
}

/// `loss` ([`snn_nn::loss`]) on the GPU: `output` is the network's f32 output of shape
/// `[T, B, K]`, `labels` one class per sample; `grad` (f32, as many values) receives
/// `dL/doutput`. Waits for the device twice (label upload, loss read-back); a training
/// loop that should not wait keeps a [`LossGpu`] instead.
pub fn rate_loss(
    device: &Arc<Device>,
    loss: Loss,
    output: &DeviceTensor,
    labels: &[usize],
    grad: &DeviceTensor,
) -> Result<LossValue, RuntimeError> {
    let &[steps, batch, classes] = &output.shape[..] else {
        return Err(RuntimeError::Tensor {
            op: op_name(loss).into(),
            arg: "output".into(),
            expected: "an f32 tensor of shape [T, B, K]".into(),
            got: format!("shape {:?}", output.shape),
        });
    };
    let problem = Problem::new(loss, steps, batch, classes, labels)?;
    problem.check_tensors(device, output, grad)?;
    let labels_dev = DeviceTensor::empty(device, Dtype::U32, &[batch])?;
    labels_dev.write_bytes(&label_words(labels))?;
    let results = DeviceTensor::empty(device, Dtype::F32, &[2 * batch])?;
    problem.launch(device, output, &labels_dev, grad, &results)?;
    Ok(problem.reduce(&results.to_f32()?))
}

/// Labels as the kernels read them: `u32`, little-endian (each below the class count,
/// which fits a `u32`: see [`Problem::check`]).
fn label_words(labels: &[usize]) -> Vec<u8> {
    labels
        .iter()
        .flat_map(|&l| (l as u32).to_le_bytes())
        .collect()
}

/// A checked loss problem.
#[derive(Clone, Copy, Debug)]
struct Problem {
    loss: Loss,
    steps: usize,
    batch: usize,
    classes: usize,
}

fn op_name(loss: Loss) -> &'static str {
    match loss {
        Loss::CrossEntropyRate => "cross-entropy loss",
        Loss::MseRate => "MSE loss",
    }
}

impl Problem {
    /// Checks the sizes and labels as [`snn_nn::loss::check`] does, and that the batch
    /// (one block per sample) and the classes (labels are `u32`) fit a `u32`.
    fn new(
        loss: Loss,
        steps: usize,
        batch: usize,
        classes: usize,
        labels: &[usize],
    ) -> Result<Self, RuntimeError> {
        let op = op_name(loss);
        let values = steps.saturating_mul(batch).saturating_mul(classes);
        snn_nn::loss::check(steps, batch, classes, values, labels)
            .map_err(|e| RuntimeError::invalid(op, e.to_string()))?;
        check::to_u32(op, "the batch", batch)?;
        check::to_u32(op, "the number of classes", classes)?;
        Ok(Self {
            loss,
            steps,
            batch,
            classes,
        })
    }

    /// Checks that `output` and `grad` hold this problem's `[T, B, K]` values. The launch
    /// checks the same memory rules: checking them here too fails before anything is
    /// queued.
    fn check_tensors(
        &self,
        device: &Device,
        output: &DeviceTensor,
        grad: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        let op = op_name(self.loss);
        let len = self.steps * self.batch * self.classes;
        if output.len() != len {
            return Err(RuntimeError::invalid(
                op,
                format!(
                    "the output has {} values but [T, B, K] = [{}, {}, {}] needs {len}",
                    output.len(),
                    self.steps,
                    self.batch,
                    self.classes
                ),
            ));
        }
        check::f32_tensor(op, "output", output, len, "[T, B, K]")?;
        check::f32_tensor(op, "grad", grad, len, "like `output`")?;
        check::memory(
            op,
            device,
            &[
                ("output", output, Access::Read),
                ("grad", grad, Access::Write),
            ],
        )
    }

    /// Queues the kernel: `labels` holds `batch` u32 labels, `results` room for `2 *
    /// batch` f32 (each sample's loss, then each sample's correctness).
    fn launch(
        &self,
        device: &Device,
        output: &DeviceTensor,
        labels: &DeviceTensor,
        grad: &DeviceTensor,
        results: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        let kernel = match self.loss {
            Loss::CrossEntropyRate => "snn_cross_entropy_rate",
            Loss::MseRate => "snn_mse_rate",
        };
        let op = op_name(self.loss);
        let b = self.batch;
        device
            .kernel(&programs::LOSS, kernel)?
            .arg("out", output)
            .arg("labels", &labels.view(0, &[b])?)
            .arg("grad", grad)
            .arg("sample_loss", &results.view(0, &[b])?)
            .arg("sample_correct", &results.view(b, &[b])?)
            .arg("steps", check::to_i64(op, "T", self.steps)?)
            .arg("batch", check::to_i64(op, "B", b)?)
            .arg("classes", check::to_i64(op, "K", self.classes)?)
            .arg("steps_f", self.steps as f32)
            .arg("inv_count", self.scale() as f32)
            .arg("inv_steps", (1.0 / self.steps as f64) as f32)
            .run(launch::config((check::to_u32(op, "B", b)?, 1), THREADS))
    }

    /// The factor of the mean: over the batch (cross-entropy) or over `B * K` (MSE).
    fn scale(&self) -> f64 {
        match self.loss {
            Loss::CrossEntropyRate => 1.0 / self.batch as f64,
            Loss::MseRate => 1.0 / (self.batch as f64 * self.classes as f64),
        }
    }

    /// The loss and correct count from the kernel's `2 * batch` results: the per-sample
    /// losses summed in sample order, then averaged, as the CPU reference does.
    fn reduce(&self, results: &[f32]) -> LossValue {
        let (losses, correct) = results.split_at(self.batch.min(results.len()));
        let mut total = 0.0f32;
        for &x in losses {
            total += x;
        }
        LossValue {
            loss: total * self.scale() as f32,
            correct: correct.iter().filter(|&&c| c == 1.0).count(),
        }
    }
}

/// A loss on the GPU with its buffers, reused from step to step: [`LossGpu::compute`]
/// queues the label upload, the kernel and the copy of each sample's results back without
/// waiting for the device; [`LossGpu::read`] waits for those results only (not for work
/// queued after them, such as the backward pass). A CUDA graph can capture
/// [`LossGpu::launch`], between an [`LossGpu::upload`] per batch and a
/// [`LossGpu::replayed`] per replay.
///
/// Labels go up and results come back through pinned host memory, so neither copy blocks
/// the host; each pinned buffer is refilled only after its previous copy has finished.
#[derive(Debug)]
pub struct LossGpu {
    device: Arc<Device>,
    loss: Loss,
    classes: usize,
    capacity: usize,
    labels_host: PinnedHostSlice<u32>,
    results_host: PinnedHostSlice<f32>,
    /// Room for `capacity` labels, `u32`.
    labels_dev: DeviceTensor,
    /// Room for `2 * capacity` results.
    results_dev: DeviceTensor,
    labels_copied: CudaEvent,
    results_ready: CudaEvent,
    /// The problem of the labels uploaded last.
    uploaded: Option<Problem>,
    /// The problem of the last launch (or replay), whose results [`LossGpu::read`] reports.
    launched: Option<Problem>,
}

impl LossGpu {
    /// `loss` over `classes` classes on `device`.
    pub fn new(device: &Arc<Device>, loss: Loss, classes: usize) -> Result<Self, RuntimeError> {
        if classes == 0 {
            return Err(RuntimeError::invalid(
                op_name(loss),
                "a loss needs at least one class",
            ));
        }
        let event = || {
            // A blocking-sync event sleeps the waiting host thread instead of spinning.
            device
                .ctx
                .new_event(Some(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC))
                .map_err(|e| RuntimeError::driver("creating a loss event", e))
        };
        let (labels_copied, results_ready) = (event()?, event()?);
        let (labels_host, results_host, labels_dev, results_dev) = buffers(device, MIN_CAPACITY)?;
        Ok(Self {
            device: device.clone(),
            loss,
            classes,
            capacity: MIN_CAPACITY,
            labels_host,
            results_host,
            labels_dev,
            results_dev,
            labels_copied,
            results_ready,
            uploaded: None,
            launched: None,
        })
    }

    pub fn loss(&self) -> Loss {
        self.loss
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Queues the loss of `output` (f32, `[T, B, K]` values in that order, whatever its
    /// shape) for `labels` (one per sample), writing `dL/doutput` into `grad` (f32, as many
    /// values): [`LossGpu::upload`] then [`LossGpu::launch`].
    pub fn compute(
        &mut self,
        steps: usize,
        batch: usize,
        output: &DeviceTensor,
        labels: &[usize],
        grad: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        if labels.len() != batch {
            return Err(RuntimeError::invalid(
                op_name(self.loss),
                format!(
                    "{} labels for a batch of {batch}: give one label per sample",
                    labels.len()
                ),
            ));
        }
        self.upload(steps, labels)?;
        self.launch(output, grad)
    }

    /// Checks `labels` (one per sample) for an output of `steps` steps and queues their
    /// upload: the part of [`LossGpu::compute`] that changes from batch to batch, apart
    /// from [`LossGpu::launch`], which a CUDA graph can replay.
    pub fn upload(&mut self, steps: usize, labels: &[usize]) -> Result<(), RuntimeError> {
        let batch = labels.len();
        let problem = Problem::new(self.loss, steps, batch, self.classes, labels)?;
        self.reserve(batch)?;
        let driver = |doing: &'static str| move |e| RuntimeError::driver(doing, e);
        let stream = &self.device.stream;
        self.device.bind()?;
        // The labels' pinned buffer is free once its previous upload has finished.
        self.labels_copied
            .synchronize()
            .map_err(driver("waiting for the previous label upload"))?;
        let host = self
            .labels_host
            .as_mut_slice()
            .map_err(driver("writing the labels' pinned buffer"))?;
        for (h, &l) in host.iter_mut().zip(labels) {
            // Below `classes`, which fits a u32 (checked).
            *h = l as u32;
        }
        // SAFETY: the source is `batch` labels of the pinned buffer, which is neither
        // written (the wait above, at the next call) nor freed (`reserve` and `Drop` wait)
        // before `labels_copied` completes; the destination holds `capacity >= batch`
        // words, and the kernels that read it earlier are ordered before on the stream.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(
                self.labels_dev.ptr(),
                &host[..batch],
                stream.cu_stream(),
            )
        }
        .map_err(driver("uploading the labels"))?;
        self.labels_copied
            .record(stream)
            .map_err(driver("recording the label upload"))?;
        self.uploaded = Some(problem);
        self.launched = None;
        Ok(())
    }

    /// Queues the kernel over `output` for the labels of the last [`LossGpu::upload`],
    /// writing `dL/doutput` into `grad`, and the copy of its results back to the host.
    ///
    /// A CUDA graph may capture it: the kernel reads and writes buffers that stay in place
    /// while the batch size does. The copy back is then left out (the host's pinned buffer
    /// cannot be reached during a capture): call [`LossGpu::replayed`] after each replay.
    pub fn launch(
        &mut self,
        output: &DeviceTensor,
        grad: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        let problem = self.uploaded()?;
        problem.check_tensors(&self.device, output, grad)?;
        self.device.bind()?;
        problem.launch(
            &self.device,
            output,
            &self.labels_dev,
            grad,
            &self.results_dev,
        )?;
        let capturing = self
            .device
            .stream
            .capture_status()
            .map_err(|e| RuntimeError::driver("asking whether the stream is captured", e))?
            == sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE;
        if capturing {
            return Ok(());
        }
        self.send_back(problem)
    }

    /// Queues the copy of a replayed [`LossGpu::launch`]'s results back to the host, for
    /// the labels uploaded last.
    pub fn replayed(&mut self) -> Result<(), RuntimeError> {
        let problem = self.uploaded()?;
        self.send_back(problem)
    }

    /// The problem of the labels uploaded last.
    fn uploaded(&self) -> Result<Problem, RuntimeError> {
        self.uploaded.ok_or_else(|| {
            RuntimeError::Order(format!(
                "{}: no labels uploaded: call upload first",
                op_name(self.loss)
            ))
        })
    }

    /// Queues the copy of the kernel's results for `problem` back to the host.
    fn send_back(&mut self, problem: Problem) -> Result<(), RuntimeError> {
        let driver = |doing: &'static str| move |e| RuntimeError::driver(doing, e);
        let stream = &self.device.stream;
        // `read` borrows `self`, so no read overlaps the refill of the pinned buffer, and
        // copies into it are ordered on the stream.
        let res = self
            .results_host
            .as_mut_slice()
            .map_err(driver("reaching the results' pinned buffer"))?;
        // SAFETY: the destination is 2 * batch floats of the pinned buffer (2 * capacity
        // long), not freed before `results_ready` completes (`reserve` and `Drop` wait);
        // the source is the kernel's 2 * batch results, written before on the stream.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(
                &mut res[..2 * problem.batch],
                self.results_dev.ptr(),
                stream.cu_stream(),
            )
        }
        .map_err(driver("copying the loss back"))?;
        self.results_ready
            .record(stream)
            .map_err(driver("recording the loss copy"))?;
        self.launched = Some(problem);
        Ok(())
    }

    /// The buffers a captured [`LossGpu::launch`] uses, by address: they move only when
    /// a larger batch than any before comes.
    pub fn buffers(&self) -> (u64, u64) {
        (self.labels_dev.ptr(), self.results_dev.ptr())
    }

    /// The loss and correct count of the last [`LossGpu::launch`], once its results
    /// are on the host (waits for them only).
    pub fn read(&self) -> Result<LossValue, RuntimeError> {
        let problem = self.launched.ok_or_else(|| {
            RuntimeError::Order(format!(
                "{}: nothing computed for the labels uploaded last: call launch first",
                op_name(self.loss)
            ))
        })?;
        self.results_ready
            .synchronize()
            .map_err(|e| RuntimeError::driver("waiting for the loss", e))?;
        let res = self
            .results_host
            .as_slice()
            .map_err(|e| RuntimeError::driver("reading the loss", e))?;
        Ok(problem.reduce(&res[..2 * problem.batch]))
    }

    /// Grows the buffers to hold `batch` samples, once no copy uses the old ones.
    fn reserve(&mut self, batch: usize) -> Result<(), RuntimeError> {
        if batch <= self.capacity {
            return Ok(());
        }
        self.wait_for_copies()?;
        let capacity = batch.next_power_of_two();
        let (labels_host, results_host, labels_dev, results_dev) = buffers(&self.device, capacity)?;
        self.labels_host = labels_host;
        self.results_host = results_host;
        self.labels_dev = labels_dev;
        self.results_dev = results_dev;
        self.capacity = capacity;
        Ok(())
    }

    fn wait_for_copies(&self) -> Result<(), RuntimeError> {
        self.labels_copied
            .synchronize()
            .and_then(|()| self.results_ready.synchronize())
            .map_err(|e| RuntimeError::driver("waiting for the loss's copies", e))
    }
}

impl Drop for LossGpu {
    fn drop(&mut self) {
        // The pinned buffers must outlive the copies in flight. An error here means the
        // context is broken, and its copies with it: nothing is left to wait for.
        let _ = self.wait_for_copies();
    }
}

type Buffers = (
    PinnedHostSlice<u32>,
    PinnedHostSlice<f32>,
    DeviceTensor,
    DeviceTensor,
);

/// Pinned and device buffers for `capacity` samples.
fn buffers(device: &Arc<Device>, capacity: usize) -> Result<Buffers, RuntimeError> {
    let pinned_err = |e| RuntimeError::driver("allocating the loss's pinned buffers", e);
    // SAFETY: the memory is uninitialised until zeroed right below, before any read.
    // Write-combined for the labels (the host only writes them).
    let mut labels_host = unsafe {
        device
            .ctx
            .alloc_pinned_with_flags::<u32>(capacity, sys::CU_MEMHOSTALLOC_WRITECOMBINED)
    }
    .map_err(pinned_err)?;
    // SAFETY: as above; cached (flags 0), since the host reads the results.
    let mut results_host = unsafe { device.ctx.alloc_pinned_with_flags::<f32>(2 * capacity, 0) }
        .map_err(pinned_err)?;
    labels_host.as_mut_slice().map_err(pinned_err)?.fill(0);
    results_host.as_mut_slice().map_err(pinned_err)?.fill(0.0);
    Ok((
        labels_host,
        results_host,
        DeviceTensor::zeros(device, Dtype::U32, &[capacity])?,
        DeviceTensor::zeros(device, Dtype::F32, &[2 * capacity])?,
    ))
}
