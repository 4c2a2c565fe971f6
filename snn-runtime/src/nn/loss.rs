//! The losses of [`snn_nn::loss`] on the GPU: cross-entropy of time-averaged logits (the
//! paper's) and MSE of firing rates (SpikingJelly's), each one kernel over the `[T, B, K]`
//! f32 output that writes `dL/doutput` and each sample's loss and correctness.
//!
//! One block per sample, with fixed-tree block reductions, and the per-sample values summed
//! on the host in sample order: the loss is deterministic. Time sums run in time order and
//! the average divides with correct rounding, as the CPU reference does, so the predicted
//! classes (and ties, common for spike counts) agree with it exactly.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{CudaEvent, LaunchConfig, PinnedHostSlice, PushKernelArg, sys};
use snn_codegen::Dtype;
use snn_nn::Loss;

use super::optim::{check_disjoint, check_f32, function, i64_of};
use crate::device::Device;
use crate::error::RuntimeError;
use crate::tensor::DeviceTensor;

/// The NVRTC program name of [`LOSS_SOURCE`].
pub const LOSS_PROGRAM: &str = "snn_loss";

/// The kernels of [`LOSS_SOURCE`].
pub const LOSS_KERNELS: &[&str] = &["snn_cross_entropy_rate", "snn_mse_rate"];

/// The kernels: block `b` handles sample `b`.
pub const LOSS_SOURCE: &str = r#"// snn-runtime: losses on time-averaged [T, B, K] outputs, one block per sample.
#define SNN_THREADS 256

// The output of class k of the block's sample summed over time, in time order.
__device__ __forceinline__ float snn_time_sum(const float* __restrict__ out, const long long steps,
                                             const long long stride, const long long row, const long long k) {
    float s = 0.0f;
    for (long long t = 0; t < steps; ++t) s += out[t * stride + row + k];
    return s;
}

// The class with the largest time sum, the first one on ties (as torch.argmax); its sum
// goes to *best_sum. Every thread gets both.
__device__ long long snn_block_argmax(const float* __restrict__ out, const long long steps,
                                      const long long stride, const long long row,
                                      const long long classes, float* best_sum) {
    __shared__ float sv[SNN_THREADS];
    __shared__ long long sk[SNN_THREADS];
    float v = 0.0f; // unused until k_best names a class
    long long k_best = classes;
    for (long long k = threadIdx.x; k < classes; k += SNN_THREADS) {
        const float s = snn_time_sum(out, steps, stride, row, k);
        if (k_best == classes || s > v) { v = s; k_best = k; }
    }
    sv[threadIdx.x] = v;
    sk[threadIdx.x] = k_best;
    __syncthreads();
    for (int w = SNN_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) {
            const float ov = sv[threadIdx.x + w];
            const long long ok = sk[threadIdx.x + w];
            if (ok < classes && (sk[threadIdx.x] == classes || ov > sv[threadIdx.x] ||
                                 (ov == sv[threadIdx.x] && ok < sk[threadIdx.x]))) {
                sv[threadIdx.x] = ov;
                sk[threadIdx.x] = ok;
            }
        }
        __syncthreads();
    }
    const long long k = sk[0];
    *best_sum = sv[0];
    __syncthreads();
    return k;
}

// Sums `x` over the block in a fixed tree; every thread gets the sum.
__device__ float snn_block_sum(float x) {
    __shared__ float s[SNN_THREADS];
    s[threadIdx.x] = x;
    __syncthreads();
    for (int w = SNN_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    const float r = s[0];
    __syncthreads();
    return r;
}

// F.cross_entropy(output.mean(0), labels): sample_loss[b] = logsumexp(z) - z[label],
// grad = (softmax(z) - onehot) * inv_batch * inv_steps at every step.
extern "C" __global__ void snn_cross_entropy_rate(
    const float* __restrict__ out, const unsigned* __restrict__ labels, float* __restrict__ grad,
    float* __restrict__ sample_loss, float* __restrict__ sample_correct,
    const long long steps, const long long batch, const long long classes,
    const float steps_f, const float inv_batch, const float inv_steps) {
    const long long b = blockIdx.x, row = b * classes, stride = batch * classes;
    const long long label = labels[b];
    float best;
    const long long k_best = snn_block_argmax(out, steps, stride, row, classes, &best);
    const float m = __fdiv_rn(best, steps_f);
    float local = 0.0f;
    for (long long k = threadIdx.x; k < classes; k += SNN_THREADS) {
        const float z = __fdiv_rn(snn_time_sum(out, steps, stride, row, k), steps_f);
        local += expf(z - m);
    }
    const float lse = m + logf(snn_block_sum(local));
    for (long long k = threadIdx.x; k < classes; k += SNN_THREADS) {
        const float z = __fdiv_rn(snn_time_sum(out, steps, stride, row, k), steps_f);
        const float g = (expf(z - lse) - (k == label ? 1.0f : 0.0f)) * inv_batch * inv_steps;
        for (long long t = 0; t < steps; ++t) grad[t * stride + row + k] = g;
    }
    if (threadIdx.x == 0) {
        const float z = __fdiv_rn(snn_time_sum(out, steps, stride, row, label), steps_f);
        sample_loss[b] = lse - z;
        sample_correct[b] = k_best == label ? 1.0f : 0.0f;
    }
}

// F.mse_loss(output.mean(0), one_hot(labels)): sample_loss[b] = sum_k (r_k - y_k)^2,
// grad = 2 (r - y) * inv_count * inv_steps at every step.
extern "C" __global__ void snn_mse_rate(
    const float* __restrict__ out, const unsigned* __restrict__ labels, float* __restrict__ grad,
    float* __restrict__ sample_loss, float* __restrict__ sample_correct,
    const long long steps, const long long batch, const long long classes,
    const float steps_f, const float inv_count, const float inv_steps) {
    const long long b = blockIdx.x, row = b * classes, stride = batch * classes;
    const long long label = labels[b];
    float best;
    const long long k_best = snn_block_argmax(out, steps, stride, row, classes, &best);
    float local = 0.0f;
    for (long long k = threadIdx.x; k < classes; k += SNN_THREADS) {
        const float r = __fdiv_rn(snn_time_sum(out, steps, stride, row, k), steps_f);
        const float diff = r - (k == label ? 1.0f : 0.0f);
        local += diff * diff;
        const float g = 2.0f * diff * inv_count * inv_steps;
        for (long long t = 0; t < steps; ++t) grad[t * stride + row + k] = g;
    }
    const float total = snn_block_sum(local);
    if (threadIdx.x == 0) {
        sample_loss[b] = total;
        sample_correct[b] = k_best == label ? 1.0f : 0.0f;
    }
}
"#;

/// Threads per block (`SNN_THREADS` in the source).
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

/// [`snn_nn::loss::cross_entropy_rate`] on the GPU: `output` is the network's f32 output
/// of shape `[T, B, K]`, `labels` one class per sample; `grad` (f32, as many values)
/// receives `dL/doutput`. Waits for the device twice (label upload, loss read-back); a
/// training loop that should not wait keeps a [`LossGpu`] instead.
pub fn cross_entropy_rate(
    device: &Arc<Device>,
    output: &DeviceTensor,
    labels: &[usize],
    grad: &DeviceTensor,
) -> Result<LossValue, RuntimeError> {
    rate_loss(device, Loss::CrossEntropyRate, output, labels, grad)
}

/// [`snn_nn::loss::mse_rate`] on the GPU (arguments as [`cross_entropy_rate`]).
pub fn mse_rate(
    device: &Arc<Device>,
    output: &DeviceTensor,
    labels: &[usize],
    grad: &DeviceTensor,
) -> Result<LossValue, RuntimeError> {
    rate_loss(device, Loss::MseRate, output, labels, grad)
}

/// `loss` of `output` (`[T, B, K]`), as [`cross_entropy_rate`].
pub fn rate_loss(
    device: &Arc<Device>,
    loss: Loss,
    output: &DeviceTensor,
    labels: &[usize],
    grad: &DeviceTensor,
) -> Result<LossValue, RuntimeError> {
    let &[steps, batch, classes] = &output.shape[..] else {
        return Err(RuntimeError::Shape(format!(
            "{}: the output must be [T, B, K], got shape {:?}",
            op_name(loss),
            output.shape
        )));
    };
    let problem = Problem::check(device, loss, steps, batch, classes, output, labels, grad)?;
    // Scratch, [3, B]: the labels (as raw u32 words), then each sample's loss and
    // correctness.
    let scratch = DeviceTensor::empty(device, Dtype::F32, &[3 * batch])?;
    let words: Vec<u8> = labels
        .iter()
        .flat_map(|&l| (l as u32).to_le_bytes())
        .collect();
    scratch.view(0, &[batch])?.write_bytes(&words)?;
    let results = scratch.view(batch, &[2 * batch])?;
    problem.launch(device, scratch.ptr(), results.ptr())?;
    let values = results.to_f32()?;
    Ok(problem.reduce(&values))
}

/// A checked loss launch.
#[derive(Clone, Copy, Debug)]
struct Problem {
    loss: Loss,
    steps: usize,
    batch: usize,
    classes: usize,
    output: u64,
    grad: u64,
}

fn op_name(loss: Loss) -> &'static str {
    match loss {
        Loss::CrossEntropyRate => "cross-entropy loss",
        Loss::MseRate => "MSE loss",
    }
}

impl Problem {
    /// Checks the sizes, tensors and labels (each label below `classes`, so below 2^32).
    #[allow(clippy::too_many_arguments)]
    fn check(
        device: &Arc<Device>,
        loss: Loss,
        steps: usize,
        batch: usize,
        classes: usize,
        output: &DeviceTensor,
        labels: &[usize],
        grad: &DeviceTensor,
    ) -> Result<Self, RuntimeError> {
        let op = op_name(loss);
        if steps == 0 || batch == 0 || classes == 0 {
            return Err(RuntimeError::Shape(format!(
                "{op}: a loss needs at least one step, sample and class: got T = {steps}, B = {batch}, K = {classes}"
            )));
        }
        let len = steps
            .checked_mul(batch)
            .and_then(|n| n.checked_mul(classes))
            .filter(|_| u32::try_from(batch).is_ok() && u32::try_from(classes).is_ok())
            .ok_or_else(|| {
                RuntimeError::Shape(format!(
                    "{op}: [T, B, K] = [{steps}, {batch}, {classes}] is too large for one launch"
                ))
            })?;
        check_f32(device, op, "output", output, len)?;
        check_f32(device, op, "grad", grad, len)?;
        check_disjoint(op, &[("output", output), ("grad", grad)])?;
        if labels.len() != batch {
            return Err(RuntimeError::Shape(format!(
                "{op}: {} labels for a batch of {batch}: give one label per sample",
                labels.len()
            )));
        }
        if let Some((b, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
            return Err(RuntimeError::Shape(format!(
                "{op}: label {label} of sample {b} is out of range for {classes} classes (labels are 0..{classes})"
            )));
        }
        Ok(Self {
            loss,
            steps,
            batch,
            classes,
            output: output.ptr(),
            grad: grad.ptr(),
        })
    }

    /// The factor of the mean: over the batch (cross-entropy) or over `B * K` (MSE).
    fn scale(&self) -> f64 {
        match self.loss {
            Loss::CrossEntropyRate => 1.0 / self.batch as f64,
            Loss::MseRate => 1.0 / (self.batch as f64 * self.classes as f64),
        }
    }

    /// Queues the kernel: `labels` holds `batch` u32 labels, `results` room for `2 *
    /// batch` f32 (each sample's loss, then each sample's correctness).
    fn launch(&self, device: &Arc<Device>, labels: u64, results: u64) -> Result<(), RuntimeError> {
        let kernel = match self.loss {
            Loss::CrossEntropyRate => "snn_cross_entropy_rate",
            Loss::MseRate => "snn_mse_rate",
        };
        let op = op_name(self.loss);
        let (t, b, k) = (
            i64_of(op, self.steps)?,
            i64_of(op, self.batch)?,
            i64_of(op, self.classes)?,
        );
        let correct = results + 4 * self.batch as u64;
        let steps_f = self.steps as f32;
        let inv_steps = (1.0 / self.steps as f64) as f32;
        let scale = self.scale() as f32;
        let f = function(device, LOSS_PROGRAM, LOSS_SOURCE, kernel)?;
        let mut l = device.stream.launch_builder(&f);
        l.arg(&self.output)
            .arg(&labels)
            .arg(&self.grad)
            .arg(&results)
            .arg(&correct)
            .arg(&t)
            .arg(&b)
            .arg(&k)
            .arg(&steps_f)
            .arg(&scale)
            .arg(&inv_steps);
        let cfg = LaunchConfig {
            // The batch fits a u32 (checked).
            grid_dim: (self.batch as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's parameters in order and type; the
        // output and gradient hold T * B * K f32 each and do not overlap (checked), the
        // caller passes `labels` with B u32 labels below K (checked) and `results` with
        // room for 2 * B f32; one block per sample.
        unsafe { l.launch(cfg) }
            .map_err(|e| RuntimeError::driver(format!("launching `{kernel}`"), e))?;
        Ok(())
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
/// queued after them, such as the backward pass).
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
    /// `capacity` labels as raw `u32` words (the tensor's f32 dtype only sizes it).
    labels_dev: DeviceTensor,
    /// Room for `2 * capacity` results.
    results_dev: DeviceTensor,
    labels_copied: CudaEvent,
    results_ready: CudaEvent,
    /// The last launch, whose results [`LossGpu::read`] reports.
    last: Option<Problem>,
}

impl LossGpu {
    /// `loss` over `classes` classes on `device`.
    pub fn new(device: &Arc<Device>, loss: Loss, classes: usize) -> Result<Self, RuntimeError> {
        if classes == 0 {
            return Err(RuntimeError::Shape(format!(
                "{}: a loss needs at least one class",
                op_name(loss)
            )));
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
            last: None,
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
    /// values).
    pub fn compute(
        &mut self,
        steps: usize,
        batch: usize,
        output: &DeviceTensor,
        labels: &[usize],
        grad: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        let problem = Problem::check(
            &self.device,
            self.loss,
            steps,
            batch,
            self.classes,
            output,
            labels,
            grad,
        )?;
        self.reserve(batch)?;
        let driver = |doing: &'static str| move |e| RuntimeError::driver(doing, e);
        let stream = &self.device.stream;
        self.device
            .ctx
            .bind_to_thread()
            .map_err(driver("binding the device's context"))?;
        // 1. The labels' pinned buffer is free once its previous upload has finished.
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
        // 2. The kernel.
        problem.launch(&self.device, self.labels_dev.ptr(), self.results_dev.ptr())?;
        // 3. The results back to the host. `read` borrows `self`, so no read overlaps the
        // refill of the pinned buffer, and copies into it are ordered on the stream.
        let res = self
            .results_host
            .as_mut_slice()
            .map_err(driver("reaching the results' pinned buffer"))?;
        // SAFETY: the destination is 2 * batch floats of the pinned buffer (2 * capacity
        // long), not freed before `results_ready` completes (`reserve` and `Drop` wait);
        // the source is the kernel's 2 * batch results, written before on the stream.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(
                &mut res[..2 * batch],
                self.results_dev.ptr(),
                stream.cu_stream(),
            )
        }
        .map_err(driver("copying the loss back"))?;
        self.results_ready
            .record(stream)
            .map_err(driver("recording the loss copy"))?;
        self.last = Some(problem);
        Ok(())
    }

    /// The loss and correct count of the last [`LossGpu::compute`], once its results
    /// are on the host (waits for them only).
    pub fn read(&self) -> Result<LossValue, RuntimeError> {
        let problem = self.last.ok_or_else(|| {
            RuntimeError::Shape(format!(
                "{}: nothing computed yet: call compute first",
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
        DeviceTensor::zeros(device, Dtype::F32, &[capacity])?,
        DeviceTensor::zeros(device, Dtype::F32, &[2 * capacity])?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_kernels_compile_for_sm90() {
        super::super::optim::check_compiles(LOSS_PROGRAM, LOSS_SOURCE, LOSS_KERNELS);
    }
}
