//! Whole networks on the GPU against the CPU reference: a Spiking-ResNet18 training step
//! (forward, loss, backward, Adam) on a tiny input, several steps of a small spiking CNN
//! with a learnable neuron parameter, inference mode, and memory returning to the pool.
#![allow(clippy::unwrap_used)]

mod gpu_common;

use gpu_common::{Rng, device};
use snn_codegen::Mode;
use snn_codegen::{Dtype, Neuron, zoo};
use snn_nn::cpu::{CpuModel, CpuTrainer};
use snn_nn::models::{spiking_cnn, spiking_resnet};
use snn_nn::{
    ActivationPlan, ImageShape, Loss, Network, Optimizer, ParamSet, Role, Trainer, init_params,
};
use snn_runtime::DeviceTensor;
use snn_runtime::nn::{ConvMath, GpuModel, GpuTrainer, ModelOptions};

const F32_CONV: ModelOptions = ModelOptions {
    conv_math: ConvMath::F32,
    deterministic: true,
    conv_workspace: snn_runtime::nn::conv::DEFAULT_SEARCH_WORKSPACE,
    keep_activations: false,
    fuse: true,
    tiny_map_gemm: true,
    spikes_in_bytes: false,
    plan: ActivationPlan::All,
};

/// PLIF with its decay learnable per channel.
fn per_channel_plif() -> zoo::Plif {
    zoo::Plif {
        shape: snn_codegen::ParamShape::PerChannel,
        ..zoo::Plif::default()
    }
}

/// `[T, B, C, H, W]` spikes with firing probability `p`.
fn spikes(rng: &mut Rng, len: usize, p: f64) -> Vec<f32> {
    (0..len)
        .map(|_| if rng.uniform(0.0, 1.0) < p { 1.0 } else { 0.0 })
        .collect()
}

/// The largest `|a - b|` relative to the largest `|b|` of the tensor (gradients of a
/// tensor share one scale: relative error per element is meaningless where they cancel).
fn rel_max_err(a: &[f32], b: &[f32]) -> f64 {
    let scale = b
        .iter()
        .fold(0f64, |m, &x| m.max(f64::from(x).abs()))
        .max(1e-30);
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

fn compare_sets(what: &str, gpu: &ParamSet<f32>, cpu: &ParamSet<f32>, tol: f64) {
    for t in cpu {
        let g = gpu.get(&t.name).unwrap();
        assert_eq!(g.shape, t.shape, "{what} {}", t.name);
        let e = rel_max_err(&g.data, &t.data);
        assert!(
            e <= tol,
            "{what} `{}`: max error {e:.2e} of its largest value (tolerance {tol:.0e})",
            t.name
        );
    }
}

/// `|h - threshold|` of the paper's LIF (default parameters) at every element-step of an
/// input `[T, N]`, recomputed in f64: how far each spike decision was from flipping.
fn paper_lif_margins(x: &[f32], steps: usize) -> Vec<f64> {
    let lif = zoo::PaperLif::default();
    let n = x.len() / steps;
    let (mut v, mut y) = (vec![0f64; n], vec![0f64; n]);
    let mut margins = Vec::with_capacity(x.len());
    for t in 0..steps {
        for i in 0..n {
            let h = lif.decay * v[i] * (1.0 - y[i]) + lif.rest * y[i] + f64::from(x[t * n + i]);
            margins.push((h - lif.threshold).abs());
            v[i] = h;
            y[i] = if h >= lif.threshold { 1.0 } else { 0.0 };
        }
    }
    margins
}

/// One ResNet18 training step on both sides, from `seed`; `false` if a spike flipped
/// legitimately (see below) so the step cannot be compared.
///
/// Both sides compute in f32 (cuDNN without TF32) and differ only in summation order
/// (cuDNN's algorithms vs im2col + GEMM, tree vs sequential batch-norm sums), about 1e-7
/// relative per operation; through 20 layers and 2 time steps that stays below 1e-4 of
/// each tensor's scale. A membrane within that distance of the threshold can spike on one
/// side and not the other, which changes everything after it: such a flip is accepted
/// only where the CPU membrane is within 1e-4 of the threshold (anything else fails).
fn resnet18_step(dev: &std::sync::Arc<snn_runtime::Device>, seed: u64) -> bool {
    let (steps, batch) = (2, 2);
    let lif = zoo::PaperLif::default();
    let net = spiking_resnet(18, ImageShape::new(3, 32, 32), 10, &lif).unwrap();
    let params = init_params::<f32>(&net, seed).unwrap();
    let mut rng = Rng::new(seed);
    let x = spikes(&mut rng, steps * batch * 3 * 32 * 32, 0.4);
    let labels = vec![3, 7];
    let lr = 1e-3;

    let mut cpu = CpuTrainer::new(
        CpuModel::new(&net, params.clone()).unwrap(),
        Optimizer::adam(lr),
        Loss::CrossEntropyRate,
    )
    .unwrap();
    let cpu_trace = cpu
        .model
        .clone()
        .forward(&x, steps, batch, Mode::Train)
        .unwrap();
    let cpu_grads = {
        let out = Loss::CrossEntropyRate
            .compute(steps, batch, 10, cpu_trace.output(), &labels)
            .unwrap();
        cpu.model.clone().backward(&cpu_trace, &out.grad).unwrap()
    };

    let xd = DeviceTensor::from_f32(dev, Dtype::F32, &[steps, batch, 3, 32, 32], &x).unwrap();
    // Every node's output first, unfused so that every node has one (a separate model, so
    // the trainer's BN state stays at the initial values): the first node that differs
    // names the culprit. The training step below runs fused.
    let keep = ModelOptions {
        keep_activations: true,
        fuse: false,
        ..F32_CONV
    };
    let mut probe = GpuModel::new(dev, &net, &params, keep).unwrap();
    let gpu_trace = probe.forward(&xd, steps, batch, Mode::Train).unwrap();
    for (id, node) in net.nodes().iter().enumerate() {
        let g = gpu_trace.value(id).unwrap().to_f32().unwrap();
        let c = &cpu_trace.value(id).unwrap();
        if matches!(node.op, snn_nn::Op::Neuron(_)) {
            let flipped: Vec<usize> = (0..c.len()).filter(|&i| g[i] != c[i]).collect();
            if !flipped.is_empty() {
                let margins = paper_lif_margins(&cpu_trace.value(node.inputs[0]).unwrap(), steps);
                for &i in &flipped {
                    assert!(
                        margins[i] < 1e-4,
                        "`{}`: spike {i} differs, {:.2e} away from the threshold",
                        node.name,
                        margins[i]
                    );
                }
                eprintln!(
                    "seed {seed}: `{}` flipped {} spike(s) within {:.1e} of the threshold; trying another seed",
                    node.name,
                    flipped.len(),
                    flipped.iter().map(|&i| margins[i]).fold(0.0, f64::max)
                );
                return false;
            }
        }
        let e = rel_max_err(&g, c);
        assert!(
            e < 1e-4,
            "`{}` output differs by {e:.2e} of its scale",
            node.name
        );
    }
    drop(gpu_trace);

    let cpu_stats = cpu.step(&x, &labels, steps, lr).unwrap();
    let model = GpuModel::new(dev, &net, &params, F32_CONV).unwrap();
    let mut gpu = GpuTrainer::new(model, Optimizer::adam(lr), Loss::CrossEntropyRate).unwrap();
    let gpu_stats = gpu.step(&xd, &labels, steps, lr).unwrap();
    assert_eq!(gpu_stats.correct, cpu_stats.correct);
    assert!(
        (gpu_stats.loss - cpu_stats.loss).abs() < 1e-4 * cpu_stats.loss.abs().max(1.0),
        "loss {} vs {}",
        gpu_stats.loss,
        cpu_stats.loss
    );
    compare_sets(
        "gradient",
        &gpu.model.grads_to_host().unwrap(),
        &cpu_grads,
        1e-3,
    );

    // After Adam's first step each weight moved by lr * g / (|g| + eps), about lr *
    // sign(g): equal wherever the gradient is clearly nonzero; where it is within the
    // summation noise of zero, both moves are still bounded by lr.
    let after = gpu.model.to_host().unwrap();
    for t in cpu.model.params.iter() {
        let g = after.get(&t.name).unwrap();
        let before = params.get(&t.name).unwrap();
        match t.role {
            Role::Weight => {
                let grad = cpu_grads.get(&t.name).unwrap();
                let scale = grad.data.iter().fold(0f32, |m, &x| m.max(x.abs()));
                for i in 0..t.data.len() {
                    let (dg, dc) = (g.data[i] - before.data[i], t.data[i] - before.data[i]);
                    assert!(
                        dg.abs() <= 1.001 * lr as f32 + 1e-7,
                        "{}[{i}] moved {dg}",
                        t.name
                    );
                    if grad.data[i].abs() > 1e-2 * scale {
                        assert!(
                            (dg - dc).abs() <= 1e-3 * lr as f32,
                            "{}[{i}]: GPU moved {dg}, CPU {dc} (gradient {})",
                            t.name,
                            grad.data[i]
                        );
                    }
                }
            }
            Role::Buffer => {
                let e = rel_max_err(&g.data, &t.data);
                assert!(e < 1e-4, "`{}` differs by {e:.2e}", t.name);
            }
            Role::Counter => assert_eq!(g.data, t.data, "{}", t.name),
        }
    }
    true
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_resnet18_training_step_matches_the_cpu() {
    let dev = device();
    let compared = (11..17).filter(|&seed| resnet18_step(&dev, seed)).count();
    assert!(
        compared >= 2,
        "only {compared} of 6 seeds ran without a near-threshold flip"
    );
}

/// A small CNN trained five steps on both sides, then inference: with neurons that learn
/// their decay (PLIF's `w`, per channel, and as one scalar, which kernels read through a
/// pointer into the flat parameter buffer, so Adam's updates reach them with no copy), and
/// with the ternary LIF, whose spikes of -1 flow through batch-norm, pooling and the loss.
#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_small_cnn_trains_like_the_cpu() {
    small_cnn_trains_like_the_cpu(&per_channel_plif(), Some("sn1.w"));
    small_cnn_trains_like_the_cpu(&zoo::Plif::default(), Some("sn1.w"));
    small_cnn_trains_like_the_cpu(&zoo::TernaryLif::default(), None);
}

fn small_cnn_trains_like_the_cpu(neuron: &dyn snn_codegen::Neuron, learnable: Option<&str>) {
    let dev = device();
    let net = spiking_cnn(ImageShape::new(2, 12, 12), 6, 5, neuron).unwrap();
    let params = init_params::<f32>(&net, 5).unwrap();
    if let Some(name) = learnable {
        assert!(params.get(name).is_some(), "{name} is trained");
    }
    let (steps, batch) = (3, 4);
    let mut rng = Rng::new(2);
    let mut cpu = CpuTrainer::new(
        CpuModel::new(&net, params.clone()).unwrap(),
        Optimizer::sgd(0.05, 0.9),
        Loss::MseRate,
    )
    .unwrap();
    let model = GpuModel::new(&dev, &net, &params, F32_CONV).unwrap();
    let mut gpu = GpuTrainer::new(model, Optimizer::sgd(0.05, 0.9), Loss::MseRate).unwrap();
    for _ in 0..5 {
        let x = spikes(&mut rng, steps * batch * net.input_shape().len(), 0.3);
        let labels: Vec<usize> = (0..batch).map(|_| rng.below(5)).collect();
        let xd = DeviceTensor::from_f32(&dev, Dtype::F32, &[x.len()], &x).unwrap();
        let c = cpu.step(&x, &labels, steps, 0.05).unwrap();
        let g = gpu.step(&xd, &labels, steps, 0.05).unwrap();
        assert!(
            (c.loss - g.loss).abs() < 1e-4 * c.loss.max(1e-3),
            "{c:?} vs {g:?}"
        );
    }
    compare_sets(
        "parameters",
        &gpu.model.to_host().unwrap(),
        &cpu.model.params,
        1e-3,
    );
    let x = spikes(&mut rng, steps * batch * net.input_shape().len(), 0.3);
    let xd = DeviceTensor::from_f32(&dev, Dtype::F32, &[x.len()], &x).unwrap();
    let g = gpu
        .model
        .forward(&xd, steps, batch, Mode::Inference)
        .unwrap();
    let c = cpu
        .model
        .forward(&x, steps, batch, Mode::Inference)
        .unwrap();
    let e = rel_max_err(&g.output().unwrap().to_f32().unwrap(), c.output());
    assert!(e < 1e-4, "inference outputs differ by {e:.2e}");
}

/// Backward returns every activation to the pool, and a second iteration allocates
/// nothing new from the driver.
#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_training_memory_is_reused() {
    let dev = device();
    let lif = zoo::PaperLif::default();
    let net: Network = spiking_cnn(ImageShape::new(1, 16, 16), 8, 10, &lif).unwrap();
    let params = init_params::<f32>(&net, 0).unwrap();
    let model = GpuModel::new(&dev, &net, &params, ModelOptions::default()).unwrap();
    let mut gpu = GpuTrainer::new(model, Optimizer::adam(1e-3), Loss::CrossEntropyRate).unwrap();
    let mut rng = Rng::new(0);
    let x = spikes(&mut rng, 4 * 8 * 256, 0.3);
    let xd = DeviceTensor::from_f32(&dev, Dtype::F32, &[4, 8, 1, 16, 16], &x).unwrap();
    let labels: Vec<usize> = (0..8).map(|i| i % 10).collect();
    gpu.step(&xd, &labels, 4, 1e-3).unwrap();
    let before = dev.memory();
    gpu.step(&xd, &labels, 4, 1e-3).unwrap();
    let after = dev.memory();
    assert_eq!(after.in_use, before.in_use, "{before:?} -> {after:?}");
    assert_eq!(
        after.driver_allocs, before.driver_allocs,
        "{before:?} -> {after:?}"
    );
    // Bad input is an error, not a crash.
    let e = gpu.step(&xd, &labels[..3], 4, 1e-3).unwrap_err();
    assert!(e.to_string().contains("need f32"), "{e}");
}

/// With `deterministic`, two runs of the same training steps give bit-identical weights,
/// statistics and optimizer state.
#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_deterministic_training_repeats_bit_for_bit() {
    let dev = device();
    let plif = per_channel_plif();
    let net = spiking_resnet(18, ImageShape::new(3, 16, 16), 10, &plif).unwrap();
    let params = init_params::<f32>(&net, 9).unwrap();
    let mut rng = Rng::new(9);
    let (steps, batch) = (3, 4);
    let x = spikes(&mut rng, steps * batch * 3 * 16 * 16, 0.4);
    let xd = DeviceTensor::from_f32(&dev, Dtype::F32, &[steps, batch, 3, 16, 16], &x).unwrap();
    let labels = vec![1, 2, 3, 4];
    let run = || {
        let options = ModelOptions {
            deterministic: true,
            ..ModelOptions::default()
        };
        let model = GpuModel::new(&dev, &net, &params, options).unwrap();
        let mut t = GpuTrainer::new(model, Optimizer::adam(1e-3), Loss::CrossEntropyRate).unwrap();
        for _ in 0..3 {
            t.step(&xd, &labels, steps, 1e-3).unwrap();
        }
        let ckpt = t.checkpoint(0, Default::default()).unwrap();
        (ckpt.params, ckpt.optimizer.unwrap().1)
    };
    let (a, b) = (run(), run());
    let differing = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .filter(|(p, q)| p.to_bits() != q.to_bits())
            .count()
    };
    for (x, y) in a.0.iter().zip(b.0.iter()) {
        let n = differing(&x.data, &y.data);
        assert_eq!(
            n,
            0,
            "`{}`: {n} of {} values differ between runs",
            x.name,
            x.data.len()
        );
    }
    for (sa, sb) in a.1.buffers.iter().zip(&b.1.buffers) {
        for (x, y) in sa.iter().zip(sb.iter()) {
            let n = differing(&x.data, &y.data);
            assert_eq!(n, 0, "optimizer state of `{}`: {n} values differ", x.name);
        }
    }
}

/// Spikes kept in one byte for the backward pass: the same gradients, batch-norm buffers
/// and output bit for bit (in f32 and in bf16 activations), in a smaller trace.
#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_spikes_in_bytes_train_bit_for_bit_like_full_width() {
    let dev = device();
    for neuron in [
        zoo::PaperLif::default().ir().unwrap(),
        zoo::TernaryLif::default().ir().unwrap(),
    ] {
        let net = spiking_resnet(18, ImageShape::new(3, 16, 16), 10, &neuron).unwrap();
        let params = init_params::<f32>(&net, 4).unwrap();
        let mut rng = Rng::new(4);
        let (steps, batch) = (3, 4);
        let x = spikes(&mut rng, steps * batch * 3 * 16 * 16, 0.4);
        let xd = DeviceTensor::from_f32(&dev, Dtype::F32, &[steps, batch, 3, 16, 16], &x).unwrap();
        for conv_math in [ConvMath::F32, ConvMath::Bf16] {
            let run = |spikes_in_bytes: bool| {
                let options = ModelOptions {
                    conv_math,
                    spikes_in_bytes,
                    ..F32_CONV
                };
                let mut model = GpuModel::new(&dev, &net, &params, options).unwrap();
                let before = dev.memory().in_use;
                let trace = model.forward(&xd, steps, batch, Mode::Train).unwrap();
                // What the trace holds, counted and as the pool sees it.
                let bytes = (trace.bytes(), dev.memory().in_use - before);
                let out = trace.output().unwrap().to_f32().unwrap();
                let grad =
                    DeviceTensor::from_f32(&dev, Dtype::F32, &[out.len()], &vec![0.01; out.len()])
                        .unwrap();
                model.backward(trace, &grad).unwrap();
                (
                    out,
                    model.grads_to_host().unwrap(),
                    model.to_host().unwrap(),
                    bytes,
                )
            };
            let (wide, narrow) = (run(false), run(true));
            let what = format!("{} with {conv_math:?}", neuron.name);
            assert_eq!(wide.0, narrow.0, "{what}: outputs");
            assert_eq!(wide.1, narrow.1, "{what}: gradients");
            assert_eq!(wide.2, narrow.2, "{what}: parameters and buffers");
            assert!(
                narrow.3.0 < wide.3.0 && narrow.3.1 < wide.3.1,
                "{what}: the trace holds {:?} bytes (counted, in the pool), {:?} at full width",
                narrow.3,
                wide.3
            );
        }
    }
}

/// Keeping only the spikes and the neurons' states every few steps, the backward
/// recomputing the rest ([`ActivationPlan::Spikes`]), trains like keeping every activation:
/// the same outputs and batch-norm buffers bit for bit, the same gradients bit for bit with
/// one chunk and to rounding with several (the fused batch-norms' sums over time are split
/// by chunk), from a smaller trace; chunks that divide T and chunks that do not.
#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_spikes_plan_trains_like_keeping_everything() {
    let dev = device();
    let (steps, batch) = (5, 3);
    for neuron in [
        zoo::PaperLif::default().ir().unwrap(),
        zoo::TernaryLif::default().ir().unwrap(),
    ] {
        let net = spiking_resnet(18, ImageShape::new(3, 16, 16), 10, &neuron).unwrap();
        let params = init_params::<f32>(&net, 6).unwrap();
        let mut rng = Rng::new(6);
        let x = spikes(&mut rng, steps * batch * 3 * 16 * 16, 0.4);
        let xd = DeviceTensor::from_f32(&dev, Dtype::F32, &[steps, batch, 3, 16, 16], &x).unwrap();
        for (conv_math, tol) in [(ConvMath::F32, 1e-3), (ConvMath::Bf16, 3e-2)] {
            let run = |plan: ActivationPlan| {
                let options = ModelOptions {
                    conv_math,
                    plan,
                    ..F32_CONV
                };
                let mut model = GpuModel::new(&dev, &net, &params, options).unwrap();
                let trace = model.forward(&xd, steps, batch, Mode::Train).unwrap();
                let bytes = trace.bytes();
                let out = trace.output().unwrap().to_f32().unwrap();
                let r: Vec<f32> = (0..out.len())
                    .map(|i| ((i % 7) as f32 - 3.0) * 0.01)
                    .collect();
                let grad = DeviceTensor::from_f32(&dev, Dtype::F32, &[r.len()], &r).unwrap();
                model.backward(trace, &grad).unwrap();
                (
                    out,
                    model.grads_to_host().unwrap(),
                    model.to_host().unwrap(),
                    bytes,
                )
            };
            let whole = run(ActivationPlan::All);
            for time_chunk in [steps, 2, 3] {
                let what = format!("{} with {conv_math:?}, chunks of {time_chunk}", neuron.name);
                let kept = run(ActivationPlan::Spikes { time_chunk });
                assert_eq!(kept.0, whole.0, "{what}: outputs");
                assert_eq!(kept.2, whole.2, "{what}: parameters and buffers");
                assert!(
                    kept.3 < whole.3,
                    "{what}: {} bytes kept, {} in all",
                    kept.3,
                    whole.3
                );
                if time_chunk == steps {
                    assert_eq!(kept.1, whole.1, "{what}: gradients");
                    continue;
                }
                for (a, b) in kept.1.iter().zip(whole.1.iter()) {
                    let scale = b.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                    let worst = a
                        .data
                        .iter()
                        .zip(&b.data)
                        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
                    assert!(
                        worst <= tol * scale,
                        "{what}: gradient of {} off by {worst:e} (largest {scale:e})",
                        a.name
                    );
                }
            }
        }
    }
}

/// The peak predicted from probes at T/4 and T/2 is the peak measured at T (to the
/// convolution workspace, which the algorithms chosen for smaller problems may size
/// differently), for each plan; a budget between two plans' peaks takes the leaner one,
/// whose step then stays within it.
#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_the_predicted_peak_is_the_measured_one_and_a_budget_holds() {
    use snn_runtime::bench::train_peak;
    use snn_runtime::nn::memory::{fit_on_device, predict_on_device};
    let dev = device();
    let net = spiking_resnet(
        18,
        ImageShape::new(3, 16, 16),
        10,
        &zoo::PaperLif::default(),
    )
    .unwrap();
    let (steps, batch) = (64, 8);
    let workspace = 16 << 20;
    let base = ModelOptions {
        conv_workspace: workspace,
        deterministic: false,
        ..F32_CONV
    };
    let mut peaks = Vec::new();
    for plan in [
        ActivationPlan::All,
        ActivationPlan::Spikes { time_chunk: 8 },
    ] {
        let options = ModelOptions { plan, ..base };
        let predicted = predict_on_device(&dev, &net, (steps, batch), options)
            .unwrap()
            .unwrap();
        assert_eq!(
            predicted.probes.iter().map(|p| p.0).collect::<Vec<_>>(),
            [16, 32]
        );
        let measured = train_peak(&dev, &net, steps, batch, options)
            .unwrap()
            .unwrap();
        let error = predicted.bytes.abs_diff(measured);
        assert!(
            error <= measured / 20 + workspace,
            "{plan:?}: predicted {} bytes, measured {measured} (probes {:?})",
            predicted.bytes,
            predicted.probes
        );
        peaks.push(measured);
    }
    assert!(peaks[1] < peaks[0], "recomputing keeps less: {peaks:?}");
    let budget = (peaks[0] + peaks[1]) / 2;
    let fit = fit_on_device(&dev, &net, (steps, batch), base, budget).unwrap();
    assert!(
        fit.options.plan != ActivationPlan::All || fit.options.spikes_in_bytes,
        "keeping every activation does not fit: {fit:?}"
    );
    let measured = train_peak(&dev, &net, steps, batch, fit.options)
        .unwrap()
        .unwrap();
    assert!(
        measured <= budget,
        "{measured} bytes in a budget of {budget}: {fit:?}"
    );
}
