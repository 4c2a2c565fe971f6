//! The peak memory of a training step at a given T, predicted, and the plan (what the
//! forward pass keeps for the backward pass) that fits a memory budget.
//!
//! Every tensor of a training step either does not depend on T (parameters, gradients,
//! optimizer state, workspaces) or grows in proportion to it at a fixed batch size
//! (activations and their gradients, neuron saves, the spikes kept, the neuron states kept
//! at the start of every time chunk). So the peak is a straight line in T, or the
//! upper envelope of a few lines (one per moment of the step that could hold the most),
//! and two probe steps at T/4 and T/2 predict it at T. The envelope is convex, so a line
//! through smaller T can only fall short of it: the probes stay within a factor of 4 of T,
//! where the term that grows with T already dominates. A probe runs on synthetic input of
//! the real shape (memory does not depend on the values) after a first step that chose the
//! convolution algorithms. A probe that runs out of memory says the plan does not fit.

use std::sync::Arc;

use snn_nn::{ActivationPlan, Network};

use crate::device::Device;
use crate::error::RuntimeError;
use crate::nn::ModelOptions;

/// A predicted peak: the bytes, and the probe steps it comes from (T, measured peak).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prediction {
    pub bytes: usize,
    pub probes: Vec<(usize, usize)>,
}

/// What [`fit`] chose: the options of the first plan (the fastest) whose predicted peak is
/// within the budget, and the plans tried before it, with their predictions (`None`: a
/// probe ran out of memory).
#[derive(Clone, Debug)]
pub struct Fit {
    pub options: ModelOptions,
    pub predicted: Prediction,
    pub rejected: Vec<(ModelOptions, Option<Prediction>)>,
}

/// The steps to probe for a prediction at `steps`: T/4 and T/2, whole time chunks of the
/// plan (so that a probe holds one chunk's saves, as the real step does), or `steps`
/// itself when that leaves nothing smaller to probe.
pub fn probe_steps(steps: usize, plan: ActivationPlan) -> Vec<usize> {
    let unit = match plan {
        ActivationPlan::All => 1,
        ActivationPlan::Spikes { time_chunk } => time_chunk.max(1),
    };
    let (low, high) = ((steps / 4) / unit * unit, (steps / 2) / unit * unit);
    if low == 0 || low == high {
        vec![steps]
    } else {
        vec![low, high]
    }
}

/// The peak at `steps` on the line through the probes (or the one probe, if at `steps`).
/// A line that falls (probe noise) predicts no less than the larger probe.
pub fn extrapolate(probes: &[(usize, usize)], steps: usize) -> usize {
    match *probes {
        [(t1, p1), (t2, p2)] if t2 > t1 => {
            let slope = (p2 as f64 - p1 as f64) / (t2 - t1) as f64;
            let at = p2 as f64 + slope * (steps as f64 - t2 as f64);
            (at.round() as usize).max(p2)
        }
        _ => probes.iter().map(|&(_, p)| p).max().unwrap_or(0),
    }
}

/// The time chunk the budget's recomputing plan uses: the power of two nearest √T, which
/// balances the neuron states kept at chunk starts (T / K of them) against the saves of
/// the one chunk the backward pass recomputes at a time (K steps).
pub fn time_chunk_for(steps: usize) -> usize {
    let k = 2f64.powf((steps.max(1) as f64).sqrt().log2().round());
    (k as usize).clamp(1, steps.max(1))
}

/// The plans [`fit`] tries, fastest first: `base` keeping every activation, the same with
/// the spikes in one byte (two conversion passes more), and recomputing from the spikes
/// and the neuron states every [`time_chunk_for`] steps (about one forward pass more).
pub fn candidates(steps: usize, base: ModelOptions) -> Vec<ModelOptions> {
    let all = ModelOptions {
        plan: ActivationPlan::All,
        spikes_in_bytes: false,
        ..base
    };
    vec![
        all,
        ModelOptions {
            spikes_in_bytes: true,
            ..all
        },
        ModelOptions {
            plan: ActivationPlan::Spikes {
                time_chunk: time_chunk_for(steps),
            },
            ..all
        },
    ]
}

/// Predicts the peak at `steps` under `options` from the probes [`probe_steps`] names;
/// `measure(T, options)` runs one (`None`: out of memory, and so is the prediction).
pub fn predict(
    measure: &mut dyn FnMut(usize, ModelOptions) -> Result<Option<usize>, RuntimeError>,
    steps: usize,
    options: ModelOptions,
) -> Result<Option<Prediction>, RuntimeError> {
    let mut probes = Vec::new();
    for t in probe_steps(steps, options.plan) {
        match measure(t, options)? {
            Some(peak) => probes.push((t, peak)),
            None => return Ok(None),
        }
    }
    Ok(Some(Prediction {
        bytes: extrapolate(&probes, steps),
        probes,
    }))
}

/// The fastest of [`candidates`] whose predicted peak at `steps` is at most `budget` bytes.
/// None fitting is [`RuntimeError::OutOfMemory`], naming the leanest plan's need.
pub fn fit(
    measure: &mut dyn FnMut(usize, ModelOptions) -> Result<Option<usize>, RuntimeError>,
    steps: usize,
    base: ModelOptions,
    budget: usize,
) -> Result<Fit, RuntimeError> {
    let mut rejected = Vec::new();
    for options in candidates(steps, base) {
        match predict(measure, steps, options)? {
            Some(predicted) if predicted.bytes <= budget => {
                return Ok(Fit {
                    options,
                    predicted,
                    rejected,
                });
            }
            other => rejected.push((options, other)),
        }
    }
    let leanest = match rejected.last() {
        Some((options, Some(p))) => format!(
            "the leanest plan ({}) needs about {:.2} GiB",
            options.kept(),
            gib(p.bytes)
        ),
        _ => "the leanest plan ran out of device memory at half of T".into(),
    };
    Err(RuntimeError::OutOfMemory {
        doing: format!(
            "fitting a training step of T = {steps} in a budget of {:.2} GiB: {leanest}; \
             lower the batch size or T, or raise the budget",
            gib(budget)
        ),
    })
}

/// [`fit`] with probes of `net` at `batch` on `device` ([`crate::bench::train_peak`]).
pub fn fit_on_device(
    device: &Arc<Device>,
    net: &Network,
    (steps, batch): (usize, usize),
    base: ModelOptions,
    budget: usize,
) -> Result<Fit, RuntimeError> {
    let mut measure = |t, options| crate::bench::train_peak(device, net, t, batch, options);
    fit(&mut measure, steps, base, budget)
}

/// [`predict`] with probes of `net` at `batch` on `device`.
pub fn predict_on_device(
    device: &Arc<Device>,
    net: &Network,
    (steps, batch): (usize, usize),
    options: ModelOptions,
) -> Result<Option<Prediction>, RuntimeError> {
    let mut measure = |t, options| crate::bench::train_peak(device, net, t, batch, options);
    predict(&mut measure, steps, options)
}

/// `bytes` in GiB, as the messages about memory print it.
pub fn gib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step whose peak is the envelope of two lines in T: a fixed 256 MiB (parameters,
    /// workspace) with a little per step, and activations of 100 MiB per step (less when
    /// spikes are kept in bytes, less still recomputing), which dominate from T = 9 on.
    fn envelope(t: usize, options: ModelOptions) -> usize {
        let per_step = match (options.plan, options.spikes_in_bytes) {
            (ActivationPlan::All, false) => 100 << 20,
            (ActivationPlan::All, true) => 70 << 20,
            (ActivationPlan::Spikes { .. }, _) => 30 << 20,
        };
        ((256 << 20) + t * (1 << 20)).max(t * per_step)
    }

    #[test]
    fn probes_are_a_quarter_and_half_of_t_in_whole_chunks() {
        assert_eq!(probe_steps(32, ActivationPlan::All), vec![8, 16]);
        let chunked = |k| ActivationPlan::Spikes { time_chunk: k };
        assert_eq!(probe_steps(1024, chunked(32)), vec![256, 512]);
        assert_eq!(probe_steps(100, chunked(8)), vec![24, 48]);
        // Nothing smaller to probe: the step itself.
        assert_eq!(probe_steps(3, ActivationPlan::All), vec![3]);
        assert_eq!(probe_steps(16, chunked(8)), vec![16]);
        assert_eq!(probe_steps(1, chunked(1)), vec![1]);
    }

    #[test]
    fn the_line_through_the_probes_predicts_a_linear_peak_exactly() {
        let line = |t: usize| 3_000 + 70 * t;
        for steps in [64, 100, 1000, 4096] {
            let probes: Vec<_> = probe_steps(steps, ActivationPlan::All)
                .into_iter()
                .map(|t| (t, line(t)))
                .collect();
            assert_eq!(extrapolate(&probes, steps), line(steps));
        }
        // One probe at T is the measurement; a falling line never predicts less than
        // what a probe measured.
        assert_eq!(extrapolate(&[(8, 500)], 8), 500);
        assert_eq!(extrapolate(&[(8, 500), (16, 400)], 32), 400);
    }

    #[test]
    fn the_time_chunk_is_the_power_of_two_nearest_the_square_root() {
        let ks: Vec<_> = [1, 2, 4, 32, 100, 1024, 4096]
            .into_iter()
            .map(time_chunk_for)
            .collect();
        assert_eq!(ks, vec![1, 2, 2, 8, 8, 32, 64]);
    }

    #[test]
    fn the_budget_takes_the_fastest_plan_that_fits() {
        let mut probed = Vec::new();
        let mut measure = |t, o: ModelOptions| {
            probed.push((t, o.plan, o.spikes_in_bytes));
            Ok(Some(envelope(t, o)))
        };
        // At T = 64 keeping every activation takes 6.25 GiB, in bytes 4.38 GiB,
        // recomputing 1.88 GiB (the probes at 16 and 32 are on the steep lines).
        let base = ModelOptions::default();
        let fit = fit(&mut measure, 64, base, 5 << 30).unwrap();
        assert_eq!(fit.options.plan, ActivationPlan::All);
        assert!(fit.options.spikes_in_bytes);
        assert_eq!(fit.predicted.bytes, 64 * (70 << 20));
        assert_eq!(fit.rejected.len(), 1);
        assert_eq!(fit.rejected[0].1.as_ref().unwrap().bytes, 64 * (100 << 20));
        assert_eq!(probed.len(), 4);
        // Tighter: recompute, in chunks of 8 steps.
        let fit2 = super::fit(&mut |t, o| Ok(Some(envelope(t, o))), 64, base, 3 << 30).unwrap();
        assert_eq!(fit2.options.plan, ActivationPlan::Spikes { time_chunk: 8 });
        assert_eq!(fit2.rejected.len(), 2);
    }

    #[test]
    fn nothing_fitting_names_the_leanest_plans_need() {
        let e = fit(
            &mut |t, o| Ok(Some(envelope(t, o))),
            64,
            ModelOptions::default(),
            1 << 30,
        )
        .unwrap_err();
        assert!(e.is_out_of_memory());
        let text = e.to_string();
        assert!(
            text.contains("1.88 GiB") && text.contains("every 8 steps"),
            "{text}"
        );
        // A probe out of memory rejects its plan without a prediction.
        let e = fit(&mut |_, _| Ok(None), 64, ModelOptions::default(), 1 << 40).unwrap_err();
        assert!(e.to_string().contains("ran out of device memory"), "{e}");
    }

    #[test]
    fn other_probe_errors_are_passed_on() {
        let e = fit(
            &mut |_, _| Err(RuntimeError::Internal("probe".into())),
            64,
            ModelOptions::default(),
            1 << 40,
        )
        .unwrap_err();
        assert!(matches!(e, RuntimeError::Internal(_)));
    }
}
