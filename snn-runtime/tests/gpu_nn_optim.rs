//! The GPU optimizers, gradient norm and losses against the CPU reference of `snn-nn`, on
//! random flat buffers: several steps of each optimizer, lengths that exercise the float4
//! body, the scalar tail and (through misaligned views) the scalar-only path.
//!
//! The GPU kernels repeat the CPU's f32 operations in the same order, without fused
//! multiply-adds and with correctly rounded division and square root, so the optimizer
//! steps agree to within 1e-6 relative (in practice exactly). The losses use `expf`/`logf`
//! (a few ulp from the CPU's) and tree sums, so they agree to 1e-5 of their scale.
#![allow(clippy::unwrap_used)]

mod gpu_common;

use std::sync::Arc;

use gpu_common::Rng;
use snn_codegen::Dtype;
use snn_nn::optim::{self as cpu, CosineSchedule, Optimizer, OptimizerState};
use snn_nn::{Loss, ParamSet, Role, Tensor};
use snn_runtime::nn::loss::{LossGpu, rate_loss};
use snn_runtime::nn::optim::{clip_grad_norm, grad_norm, optimizer_state, optimizer_step, scale};
use snn_runtime::{Device, DeviceTensor};

/// A tensor of `values`, at a 16-byte boundary or (if `misaligned`) one element past it,
/// which forces the kernels' scalar path.
fn upload(dev: &Arc<Device>, values: &[f32], misaligned: bool) -> DeviceTensor {
    if !misaligned {
        return DeviceTensor::from_f32(dev, Dtype::F32, &[values.len()], values).unwrap();
    }
    let mut padded = vec![0.0f32];
    padded.extend(values);
    let t = DeviceTensor::from_f32(dev, Dtype::F32, &[padded.len()], &padded).unwrap();
    let v = t.view(1, &[values.len()]).unwrap();
    assert_ne!(v.ptr() % 16, 0);
    v
}

fn write(t: &DeviceTensor, values: &[f32]) {
    t.write_bytes(&Dtype::F32.encode(values)).unwrap();
}

/// `|got - want| <= tol * (|want| + floor)` elementwise.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64, floor: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (f64::from(g), f64::from(w));
        assert!(
            (g - w).abs() <= tol * (w.abs() + floor),
            "{what}: element {i} of {}: GPU {g} vs CPU {w}",
            want.len()
        );
    }
}

/// One weight tensor `w` holding `values`.
fn single(values: &[f32]) -> ParamSet<f32> {
    let mut p = ParamSet::new();
    p.push(Tensor {
        name: "w".into(),
        shape: vec![values.len()],
        role: Role::Weight,
        data: values.to_vec(),
    })
    .unwrap();
    p
}

fn optimizers() -> Vec<Optimizer> {
    vec![
        Optimizer::adam(1e-2),
        Optimizer::Adam {
            lr: 5e-3,
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 0.1,
        },
        Optimizer::adamw(1e-2, 0.05),
        Optimizer::sgd(0.1, 0.0),
        Optimizer::Sgd {
            lr: 0.05,
            momentum: 0.9,
            dampening: 0.25,
            weight_decay: 1e-2,
            nesterov: false,
        },
        Optimizer::Sgd {
            lr: 0.05,
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: true,
        },
    ]
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_optimizer_steps_match_the_cpu() {
    let dev = gpu_common::device();
    let mut rng = Rng::new(7);
    // Lengths: below one float4, a float4 exactly, odd, and float4 groups plus a tail.
    for (len, misaligned) in [
        (1, false),
        (4, false),
        (7, false),
        (1000, false),
        (4099, false),
        (4099, true),
        (64, true),
    ] {
        for opt in optimizers() {
            let what = format!("{opt:?}, {len} values, misaligned {misaligned}");
            let schedule = CosineSchedule {
                base_lr: opt.lr(),
                min_lr: opt.lr() / 10.0,
                total_steps: 5,
                warmup_steps: 1,
            };
            let p0 = rng.vec(len, -1.0, 1.0);
            let mut host = single(&p0);
            let mut host_state = OptimizerState::new(&opt, &host);
            let params = upload(&dev, &p0, misaligned);
            let grads = upload(&dev, &vec![0.0; len], misaligned);
            let state: Vec<DeviceTensor> = if misaligned {
                opt.state_names()
                    .iter()
                    .map(|_| upload(&dev, &vec![0.0; len], true))
                    .collect()
            } else {
                optimizer_state(&dev, &opt, len).unwrap()
            };
            let state_refs: Vec<&DeviceTensor> = state.iter().collect();
            for s in 0..4u64 {
                // Step 0 of the schedule is the warm-up's lr 0: start at 1.
                let lr = schedule.lr(s + 1);
                let g = rng.vec(len, -2.0, 2.0);
                cpu::step(&opt, lr, &mut host_state, &mut host, &single(&g)).unwrap();
                write(&grads, &g);
                optimizer_step(&dev, &opt, lr, s + 1, &params, &grads, &state_refs).unwrap();
            }
            assert_close(
                &what,
                &params.to_f32().unwrap(),
                host.data("w").unwrap(),
                1e-6,
                1e-3,
            );
            for (i, name) in opt.state_names().iter().enumerate() {
                assert_close(
                    &format!("{what}: {name}"),
                    &state[i].to_f32().unwrap(),
                    host_state.buffers[i].data("w").unwrap(),
                    1e-6,
                    1e-6,
                );
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_grad_norm_and_clipping_match_the_cpu() {
    let dev = gpu_common::device();
    let mut rng = Rng::new(11);
    for (len, misaligned) in [
        (1, false),
        (5, false),
        (4096, false),
        (1_000_003, false),
        (999, true),
    ] {
        let g = rng.vec(len, -1.0, 1.0);
        let mut host = single(&g);
        let norm = cpu::clip_grad_norm(&mut host.clone(), 1e30).unwrap();
        let t = upload(&dev, &g, misaligned);
        let got = grad_norm(&dev, &t).unwrap();
        assert!(
            (f64::from(got) - f64::from(norm)).abs() <= 1e-6 * f64::from(norm),
            "{len} values: GPU norm {got} vs CPU {norm}"
        );
        // Deterministic: the same bits again.
        assert_eq!(grad_norm(&dev, &t).unwrap().to_bits(), got.to_bits());
        // Clipping to half the norm scales like the CPU; above the norm it changes nothing.
        assert_eq!(
            clip_grad_norm(&dev, &t, f64::from(norm) * 2.0).unwrap(),
            got
        );
        assert_eq!(t.to_f32().unwrap(), g);
        let max = f64::from(norm) / 2.0;
        cpu::clip_grad_norm(&mut host, max).unwrap();
        assert_eq!(clip_grad_norm(&dev, &t, max).unwrap(), got);
        assert_close(
            &format!("clipped, {len} values"),
            &t.to_f32().unwrap(),
            host.data("w").unwrap(),
            1e-6,
            1e-6,
        );
        // Plain scaling is exact.
        let x = upload(&dev, &g, misaligned);
        scale(&dev, &x, 0.5).unwrap();
        let half: Vec<f32> = g.iter().map(|v| v * 0.5).collect();
        assert_eq!(x.to_f32().unwrap(), half);
    }
    // A non-finite norm leaves the gradients alone, as on the CPU.
    let t = upload(&dev, &[1.0, f32::NAN, 2.0], false);
    assert!(clip_grad_norm(&dev, &t, 1.0).unwrap().is_nan());
    let back = t.to_f32().unwrap();
    assert_eq!((back[0], back[2]), (1.0, 2.0));
}

/// `[T, B, K]` outputs: logits for cross-entropy, spikes (with many tied counts) for MSE.
fn outputs(rng: &mut Rng, loss: Loss, n: usize) -> Vec<f32> {
    match loss {
        Loss::CrossEntropyRate => rng.vec(n, -3.0, 3.0),
        Loss::MseRate => (0..n)
            .map(|_| f32::from(u8::from(rng.below(2) == 1)))
            .collect(),
    }
}

/// Checks a GPU loss value and gradient against the CPU's.
fn check_loss(what: &str, got: (f32, usize, &[f32]), want: &snn_nn::LossOutput<f32>) {
    let (loss, correct, grad) = got;
    assert_eq!(correct, want.correct, "{what}: correct");
    let scale = want
        .grad
        .iter()
        .fold(0.0f64, |m, g| m.max(f64::from(g.abs())));
    assert!(
        (f64::from(loss) - f64::from(want.loss)).abs()
            <= 1e-5 * f64::from(want.loss.abs()).max(1e-3),
        "{what}: GPU loss {loss} vs CPU {}",
        want.loss
    );
    for (i, (&g, &w)) in grad.iter().zip(&want.grad).enumerate() {
        assert!(
            (f64::from(g) - f64::from(w)).abs() <= 1e-5 * scale,
            "{what}: gradient {i}: GPU {g} vs CPU {w}"
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_losses_match_the_cpu() {
    let dev = gpu_common::device();
    let mut rng = Rng::new(3);
    for loss in [Loss::CrossEntropyRate, Loss::MseRate] {
        // Few classes, more classes than threads per block, one step.
        for (steps, batch, classes) in [(4, 5, 10), (3, 2, 1000), (1, 7, 3)] {
            let what = format!("{loss:?}, [T, B, K] = [{steps}, {batch}, {classes}]");
            let n = steps * batch * classes;
            let out = outputs(&mut rng, loss, n);
            let labels: Vec<usize> = (0..batch).map(|_| rng.below(classes)).collect();
            let want = loss.compute(steps, batch, classes, &out, &labels).unwrap();
            let o =
                DeviceTensor::from_f32(&dev, Dtype::F32, &[steps, batch, classes], &out).unwrap();
            let g = DeviceTensor::zeros(&dev, Dtype::F32, &[steps, batch, classes]).unwrap();
            g.fill_bytes(0xff).unwrap();
            let v = rate_loss(&dev, loss, &o, &labels, &g).unwrap();
            check_loss(&what, (v.loss, v.correct, &g.to_f32().unwrap()), &want);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_loss_buffers_are_reused_and_grow() {
    let dev = gpu_common::device();
    let mut rng = Rng::new(5);
    for loss in [Loss::CrossEntropyRate, Loss::MseRate] {
        let classes = 6;
        let mut gpu = LossGpu::new(&dev, loss, classes).unwrap();
        assert!(gpu.read().is_err(), "nothing computed yet");
        // Growing past the initial 256 samples, then back to a small batch.
        for (steps, batch) in [(2, 3), (2, 300), (3, 4)] {
            let what = format!("{loss:?}, T = {steps}, B = {batch}");
            let n = steps * batch * classes;
            let out = outputs(&mut rng, loss, n);
            let labels: Vec<usize> = (0..batch).map(|_| rng.below(classes)).collect();
            let want = loss.compute(steps, batch, classes, &out, &labels).unwrap();
            // The output flat, as a layer leaves it: `compute` takes T and B explicitly.
            let o = DeviceTensor::from_f32(&dev, Dtype::F32, &[n], &out).unwrap();
            let g = DeviceTensor::zeros(&dev, Dtype::F32, &[n]).unwrap();
            gpu.compute(steps, batch, &o, &labels, &g).unwrap();
            let v = gpu.read().unwrap();
            check_loss(&what, (v.loss, v.correct, &g.to_f32().unwrap()), &want);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_bad_arguments_are_errors() {
    let dev = gpu_common::device();
    let f32s = |n: usize| DeviceTensor::zeros(&dev, Dtype::F32, &[n]).unwrap();
    let (p, g) = (f32s(8), f32s(8));
    let (m, v) = (f32s(8), f32s(8));
    let adam = Optimizer::adam(1e-3);
    let msg = |r: Result<(), snn_runtime::RuntimeError>| r.unwrap_err().to_string();
    assert!(
        msg(optimizer_step(&dev, &adam, 1e-3, 1, &p, &g, &[&m])).contains("keeps 2 state tensors")
    );
    assert!(
        msg(optimizer_step(
            &dev,
            &adam,
            1e-3,
            1,
            &p,
            &f32s(7),
            &[&m, &v]
        ))
        .contains("`grads` must be f32 with 8 values")
    );
    let half = DeviceTensor::zeros(&dev, Dtype::F16, &[8]).unwrap();
    assert!(msg(optimizer_step(&dev, &adam, 1e-3, 1, &p, &half, &[&m, &v])).contains("f16"));
    assert!(
        msg(optimizer_step(&dev, &adam, 1e-3, 1, &p, &p, &[&m, &v]))
            .contains("share device memory")
    );
    assert!(msg(optimizer_step(&dev, &adam, 1e-3, 0, &p, &g, &[&m, &v])).contains("step 0"));
    assert!(
        msg(optimizer_step(&dev, &adam, f64::NAN, 1, &p, &g, &[&m, &v])).contains("learning rate")
    );
    assert!(clip_grad_norm(&dev, &g, 0.0).is_err());

    let out = DeviceTensor::zeros(&dev, Dtype::F32, &[2, 3, 4]).unwrap();
    let grad = f32s(24);
    let err = |r: Result<_, snn_runtime::RuntimeError>| r.unwrap_err().to_string();
    let (ce, mse) = (Loss::CrossEntropyRate, Loss::MseRate);
    assert!(err(rate_loss(&dev, ce, &out, &[0, 1, 4], &grad)).contains("label 4 of sample 2"));
    assert!(err(rate_loss(&dev, mse, &out, &[0, 1], &grad)).contains("2 labels for a batch of 3"));
    assert!(err(rate_loss(&dev, mse, &f32s(24), &[0], &grad)).contains("[T, B, K]"));
    assert!(err(rate_loss(&dev, ce, &out, &[0, 1, 2], &out)).contains("share device memory"));
    assert!(err(rate_loss(&dev, ce, &out, &[0, 1, 2], &f32s(23))).contains("`grad`"));
}
