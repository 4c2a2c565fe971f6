//! Losses on a network's output over time, `[T, B, K]` (steps, batch, classes), row-major,
//! and the accuracy that comes with them.
//!
//! Both losses read the output through its time average (the rate), so their gradient
//! reaches every step equally: `dL/doutput[t, b, k] = dL/drate[b, k] / T`. The predicted
//! class is the argmax of the summed output (the same as of the average, without a division
//! that could merge near-ties), the first maximum winning ties, as `torch.argmax` does.

use crate::error::NnError;
use crate::float::Float;

/// A loss value, its gradient with respect to the output, and how many samples were right.
#[derive(Clone, Debug, PartialEq)]
pub struct LossOutput<T> {
    /// The loss, averaged as the corresponding PyTorch loss averages it.
    pub loss: T,
    /// `dL/doutput`, `[T, B, K]` like the output.
    pub grad: Vec<T>,
    /// Samples whose predicted class (argmax of the time-averaged output) is the label.
    pub correct: usize,
}

/// The paper's loss: cross-entropy (mean over the batch) of the time-averaged logits, as
/// `F.cross_entropy(output.mean(0), labels)`; `dims` is `[T, B, K]`.
pub fn cross_entropy_rate<T: Float>(
    dims: [usize; 3],
    output: &[T],
    labels: &[usize],
) -> Result<LossOutput<T>, NnError> {
    let steps_t = T::from_f64(dims[0] as f64);
    let inv_batch = T::from_f64(1.0 / dims[1] as f64);
    rate_loss(
        dims,
        output,
        labels,
        inv_batch,
        |sums, label, grad, total| {
            let logits: Vec<T> = sums.iter().map(|&s| s / steps_t).collect();
            // Stable log-softmax: log sum exp z = m + log sum exp (z - m), m = max z.
            let m = logits.iter().copied().fold(logits[0], Float::max);
            let sum_exp: T = logits.iter().map(|&z| (z - m).exp()).sum();
            let log_sum_exp = m + sum_exp.ln();
            *total += log_sum_exp - logits[label];
            for (k, (&z, g)) in logits.iter().zip(grad).enumerate() {
                let softmax = (z - log_sum_exp).exp();
                let onehot = T::from_f64(if k == label { 1.0 } else { 0.0 });
                *g = (softmax - onehot) * inv_batch;
            }
        },
    )
}

/// SpikingJelly's loss: the mean squared error between firing rates (time-averaged output)
/// and one-hot labels, averaged over `B * K`, as `F.mse_loss(output.mean(0),
/// F.one_hot(labels, K).float())`; `dims` is `[T, B, K]`.
pub fn mse_rate<T: Float>(
    dims: [usize; 3],
    output: &[T],
    labels: &[usize],
) -> Result<LossOutput<T>, NnError> {
    let [steps, batch, classes] = dims;
    let inv_count = T::from_f64(1.0 / batch.saturating_mul(classes) as f64);
    let (steps_t, two) = (T::from_f64(steps as f64), T::from_f64(2.0));
    rate_loss(
        dims,
        output,
        labels,
        inv_count,
        |sums, label, grad, total| {
            for (k, (&s, g)) in sums.iter().zip(grad).enumerate() {
                let onehot = T::from_f64(if k == label { 1.0 } else { 0.0 });
                let diff = s / steps_t - onehot;
                *total += diff * diff;
                *g = two * diff * inv_count;
            }
        },
    )
}

/// What both losses share: checks the problem, sums each sample's output over time, counts
/// the correct predictions, and spreads `dL/drate` evenly over the steps. `sample` adds one
/// sample's terms to the running total and writes `dL/drate` per class; the loss is the
/// total times `scale`.
fn rate_loss<T: Float>(
    [steps, batch, classes]: [usize; 3],
    output: &[T],
    labels: &[usize],
    scale: T,
    mut sample: impl FnMut(&[T], usize, &mut [T], &mut T),
) -> Result<LossOutput<T>, NnError> {
    check(steps, batch, classes, output.len(), labels)?;
    let mut grad = vec![T::default(); output.len()];
    let mut rate_grad = vec![T::default(); classes];
    let (mut total, mut correct) = (T::default(), 0);
    let inv_steps = T::from_f64(1.0 / steps as f64);
    for (b, &label) in labels.iter().enumerate() {
        let sums = time_sums(steps, batch, classes, output, b);
        correct += usize::from(argmax(&sums) == label);
        sample(&sums, label, &mut rate_grad, &mut total);
        for (k, &g) in rate_grad.iter().enumerate() {
            for t in 0..steps {
                grad[(t * batch + b) * classes + k] = g * inv_steps;
            }
        }
    }
    Ok(LossOutput {
        loss: total * scale,
        grad,
        correct,
    })
}

/// The output of sample `b` summed over time, in time order.
fn time_sums<T: Float>(
    steps: usize,
    batch: usize,
    classes: usize,
    output: &[T],
    b: usize,
) -> Vec<T> {
    let mut sums = vec![T::default(); classes];
    for t in 0..steps {
        let row = &output[(t * batch + b) * classes..][..classes];
        for (s, &x) in sums.iter_mut().zip(row) {
            *s += x;
        }
    }
    sums
}

/// The index of the first maximum (NaN never wins).
fn argmax<T: Float>(values: &[T]) -> usize {
    let mut best = 0;
    for (k, &v) in values.iter().enumerate().skip(1) {
        if v > values[best] {
            best = k;
        }
    }
    best
}

/// Checks a loss problem: at least one step, sample and class, an output of `values =
/// T * B * K` values, and one label per sample, each below `classes` (the GPU losses check
/// the same).
pub fn check(
    steps: usize,
    batch: usize,
    classes: usize,
    values: usize,
    labels: &[usize],
) -> Result<(), NnError> {
    if steps == 0 || batch == 0 || classes == 0 {
        return Err(NnError::shape(format!(
            "a loss needs at least one step, sample and class: got T = {steps}, B = {batch}, K = {classes}"
        )));
    }
    let len = steps
        .checked_mul(batch)
        .and_then(|n| n.checked_mul(classes));
    if len != Some(values) {
        return Err(NnError::shape(format!(
            "the output has {values} values but [T, B, K] = [{steps}, {batch}, {classes}] needs {}",
            len.map_or_else(|| "more than fit in memory".into(), |n| n.to_string())
        )));
    }
    if labels.len() != batch {
        return Err(NnError::shape(format!(
            "{} labels for a batch of {batch}: give one label per sample",
            labels.len()
        )));
    }
    if let Some((b, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
        return Err(NnError::shape(format!(
            "label {label} of sample {b} is out of range for {classes} classes (labels are 0..{classes})"
        )));
    }
    Ok(())
}
