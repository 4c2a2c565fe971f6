//! The optimizers against PyTorch's documented algorithms (transcribed literally from the
//! pseudo-code of `torch.optim.SGD`, `Adam` and `AdamW`), hand-computed steps, the cosine
//! schedule and gradient clipping.
#![allow(clippy::unwrap_used)]

use snn_nn::optim::{self, CosineSchedule, Optimizer, OptimizerState, clip_grad_norm};
use snn_nn::{ParamSet, Role, Tensor};

fn tensor(name: &str, shape: &[usize], role: Role, data: &[f64]) -> Tensor<f64> {
    Tensor {
        name: name.into(),
        shape: shape.to_vec(),
        role,
        data: data.to_vec(),
    }
}

/// Two weights and a buffer (which no optimizer may touch).
fn params() -> ParamSet<f64> {
    let mut p = ParamSet::new();
    p.push(tensor(
        "fc.weight",
        &[2, 2],
        Role::Weight,
        &[0.5, -1.0, 2.0, 0.0],
    ))
    .unwrap();
    p.push(tensor("bn.running_mean", &[2], Role::Buffer, &[3.0, 4.0]))
        .unwrap();
    p.push(tensor("fc.bias", &[2], Role::Weight, &[0.1, -0.2]))
        .unwrap();
    p
}

/// The gradients of step `i` (varying, with a zero and mixed signs).
fn grads(i: usize) -> ParamSet<f64> {
    let mut g = params().zeros_like();
    let s = i as f64 + 1.0;
    g.get_mut("fc.weight").unwrap().data = vec![0.3 * s, -0.7, 0.0, 1.5 / s];
    g.get_mut("fc.bias").unwrap().data = vec![-0.05 * s, 2.0];
    g.get_mut("bn.running_mean").unwrap().data = vec![9.0, 9.0];
    g
}

fn flat(p: &ParamSet<f64>) -> Vec<f64> {
    p.weights().flat_map(|t| t.data.clone()).collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: {g} vs {w}"
        );
    }
}

/// Runs `steps` steps of `opt` and checks every step against `reference`, which advances
/// flat parameters from flat gradients (its own state in the closure).
fn against_reference(
    opt: Optimizer,
    steps: usize,
    mut reference: impl FnMut(usize, &mut [f64], &[f64]),
) {
    let mut p = params();
    let mut state = OptimizerState::new(&opt, &p);
    let mut want = flat(&p);
    for i in 0..steps {
        let g = grads(i);
        optim::step(&opt, opt.lr(), &mut state, &mut p, &g).unwrap();
        reference(i + 1, &mut want, &flat(&g));
        assert_close(&flat(&p), &want, 1e-13);
        assert_eq!(p.data("bn.running_mean").unwrap(), &[3.0, 4.0]);
    }
    assert_eq!(state.step, steps as u64);
}

/// Adam / AdamW as the PyTorch documentation writes them.
fn adam_docs(
    lr: f64,
    (b1, b2): (f64, f64),
    eps: f64,
    wd: f64,
    decoupled: bool,
) -> impl FnMut(usize, &mut [f64], &[f64]) {
    let (mut m, mut v) = ([0.0; 6], [0.0; 6]);
    move |t, p, g| {
        for i in 0..p.len() {
            let mut g = g[i];
            if decoupled {
                p[i] -= lr * wd * p[i];
            } else {
                g += wd * p[i];
            }
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let m_hat = m[i] / (1.0 - b1.powi(t as i32));
            let v_hat = v[i] / (1.0 - b2.powi(t as i32));
            p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    }
}

#[test]
fn adam_follows_the_pytorch_algorithm() {
    against_reference(
        Optimizer::adam(1e-3),
        5,
        adam_docs(1e-3, (0.9, 0.999), 1e-8, 0.0, false),
    );
    let opt = Optimizer::Adam {
        lr: 0.05,
        beta1: 0.8,
        beta2: 0.99,
        eps: 1e-3,
        weight_decay: 0.1,
    };
    against_reference(opt, 5, adam_docs(0.05, (0.8, 0.99), 1e-3, 0.1, false));
}

#[test]
fn adamw_follows_the_pytorch_algorithm() {
    against_reference(
        Optimizer::adamw(0.01, 0.5),
        5,
        adam_docs(0.01, (0.9, 0.999), 1e-8, 0.5, true),
    );
}

#[test]
fn adam_first_step_moves_each_weight_by_the_learning_rate() {
    // m_hat = g and v_hat = g^2 after one step: p -= lr * g / (|g| + eps).
    let mut p = params();
    let opt = Optimizer::adam(0.1);
    let mut state = OptimizerState::new(&opt, &p);
    optim::step(&opt, 0.1, &mut state, &mut p, &grads(0)).unwrap();
    let want = [
        0.5 - 0.1 * 0.3 / (0.3 + 1e-8),
        -1.0 + 0.1 * 0.7 / (0.7 + 1e-8),
    ];
    assert_close(&p.data("fc.weight").unwrap()[..2], &want, 1e-15);
    // A zero gradient leaves its weight alone.
    assert_eq!(p.data("fc.weight").unwrap()[2], 2.0);
}

/// SGD as the PyTorch documentation writes it.
fn sgd_docs(
    lr: f64,
    momentum: f64,
    dampening: f64,
    wd: f64,
    nesterov: bool,
) -> impl FnMut(usize, &mut [f64], &[f64]) {
    let mut b = [0.0; 6];
    move |t, p, g| {
        for i in 0..p.len() {
            let mut g = g[i] + wd * p[i];
            if momentum != 0.0 {
                b[i] = if t > 1 {
                    momentum * b[i] + (1.0 - dampening) * g
                } else {
                    g
                };
                g = if nesterov { g + momentum * b[i] } else { b[i] };
            }
            p[i] -= lr * g;
        }
    }
}

#[test]
fn sgd_follows_the_pytorch_algorithm() {
    let sgd = |momentum, dampening, weight_decay, nesterov| Optimizer::Sgd {
        lr: 0.1,
        momentum,
        dampening,
        weight_decay,
        nesterov,
    };
    for (m, d, wd, n) in [
        (0.0, 0.0, 0.0, false),
        (0.9, 0.0, 0.0, false),
        (0.9, 0.3, 0.01, false),
        (0.8, 0.0, 0.05, true),
    ] {
        against_reference(sgd(m, d, wd, n), 4, sgd_docs(0.1, m, d, wd, n));
    }
}

#[test]
fn sgd_momentum_by_hand() {
    // One weight, constant gradient 1, lr 0.1, momentum 0.9, dampening 0.5: the buffer is
    // 1 (the first step is not dampened), then 0.9 + 0.5 = 1.4, then 1.26 + 0.5 = 1.76.
    let mut p = ParamSet::new();
    p.push(tensor("w", &[1], Role::Weight, &[1.0])).unwrap();
    let mut g = p.zeros_like();
    g.get_mut("w").unwrap().data[0] = 1.0;
    let opt = Optimizer::Sgd {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.5,
        weight_decay: 0.0,
        nesterov: false,
    };
    let mut state = OptimizerState::new(&opt, &p);
    let mut want = 1.0;
    for buf in [1.0, 1.4, 1.76] {
        optim::step(&opt, 0.1, &mut state, &mut p, &g).unwrap();
        want -= 0.1 * buf;
        assert!((p.data("w").unwrap()[0] - want).abs() < 1e-15);
        assert!((state.buffers[0].data("w").unwrap()[0] - buf).abs() < 1e-15);
    }
}

#[test]
fn f32_steps_agree_with_f64_steps() {
    for opt in [
        Optimizer::adam(1e-2),
        Optimizer::adamw(1e-2, 0.1),
        Optimizer::sgd(0.1, 0.9),
    ] {
        let (mut p64, mut p32) = (params(), params().cast::<f32>());
        let (mut s64, mut s32) = (
            OptimizerState::new(&opt, &p64),
            OptimizerState::new(&opt, &p32),
        );
        for i in 0..4 {
            optim::step(&opt, opt.lr(), &mut s64, &mut p64, &grads(i)).unwrap();
            optim::step(&opt, opt.lr(), &mut s32, &mut p32, &grads(i).cast()).unwrap();
        }
        assert_close(&flat(&p32.cast()), &flat(&p64), 1e-6);
    }
}

#[test]
fn bad_steps_are_errors_and_change_nothing() {
    let opt = Optimizer::adam(1e-3);
    let mut p = params();
    let mut state = OptimizerState::new(&opt, &p);
    let before = (p.clone(), state.clone());
    let err = |r: Result<(), snn_nn::NnError>| r.unwrap_err().to_string();

    let mut g = ParamSet::new();
    g.push(tensor("fc.weight", &[2, 2], Role::Weight, &[0.0; 4]))
        .unwrap();
    assert!(
        err(optim::step(&opt, 1e-3, &mut state, &mut p, &g))
            .contains("no gradient for weight `fc.bias`")
    );
    g.push(tensor("fc.bias", &[1, 2], Role::Weight, &[0.0; 2]))
        .unwrap();
    assert!(err(optim::step(&opt, 1e-3, &mut state, &mut p, &g)).contains("[1, 2]"));
    assert!(
        err(optim::step(&opt, f64::NAN, &mut state, &mut p, &grads(0))).contains("learning rate")
    );
    let mut sgd_state = OptimizerState::new(&Optimizer::sgd(0.1, 0.9), &p);
    assert!(
        err(optim::step(&opt, 1e-3, &mut sgd_state, &mut p, &grads(0)))
            .contains("keeps 2 state tensors")
    );
    let mut other = ParamSet::new();
    other
        .push(tensor("fc.weight", &[2, 2], Role::Weight, &[0.0; 4]))
        .unwrap();
    let mut foreign = OptimizerState::new(&opt, &other);
    assert!(
        err(optim::step(&opt, 1e-3, &mut foreign, &mut p, &grads(0)))
            .contains("no optimizer state `exp_avg` for weight `fc.bias`")
    );
    assert_eq!((p, state), before);
}

#[test]
fn hyper_parameters_are_checked_as_pytorch_does() {
    let msg = |o: Optimizer| o.validate().unwrap_err().to_string();
    assert!(msg(Optimizer::adam(-1.0)).contains("learning rate -1"));
    let mut o = Optimizer::adam(1e-3);
    if let Optimizer::Adam { beta1, .. } = &mut o {
        *beta1 = 1.0;
    }
    assert!(msg(o).contains("beta1 = 1"));
    assert!(msg(Optimizer::adamw(1e-3, -0.1)).contains("weight_decay"));
    let nesterov = Optimizer::Sgd {
        lr: 0.1,
        momentum: 0.0,
        dampening: 0.0,
        weight_decay: 0.0,
        nesterov: true,
    };
    assert!(msg(nesterov).contains("nesterov"));
    assert!(Optimizer::sgd(0.1, 0.9).validate().is_ok());
    assert_eq!(
        Optimizer::adam(1e-3).state_names(),
        ["exp_avg", "exp_avg_sq"]
    );
    assert_eq!(Optimizer::sgd(0.1, 0.9).state_names(), ["momentum_buffer"]);
    assert!(Optimizer::sgd(0.1, 0.0).state_names().is_empty());
}

#[test]
fn cosine_schedule_follows_the_closed_form() {
    let s = CosineSchedule {
        base_lr: 0.1,
        min_lr: 0.001,
        total_steps: 100,
        warmup_steps: 0,
    };
    s.validate().unwrap();
    assert_eq!(s.lr(0), 0.1);
    assert!((s.lr(50) - 0.0505).abs() < 1e-15);
    // A quarter of the way: min + (base - min) (1 + cos(pi / 4)) / 2.
    let quarter = 0.001 + 0.099 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0;
    assert!((s.lr(25) - quarter).abs() < 1e-15);
    assert_eq!(s.lr(100), 0.001);
    assert_eq!(s.lr(1000), 0.001);

    let w = CosineSchedule {
        warmup_steps: 10,
        total_steps: 110,
        ..s
    };
    w.validate().unwrap();
    assert_eq!(w.lr(0), 0.0);
    assert!((w.lr(5) - 0.05).abs() < 1e-15);
    assert_eq!(w.lr(10), 0.1);
    assert!((w.lr(60) - 0.0505).abs() < 1e-15);
    assert_eq!(w.lr(110), 0.001);

    let bad = CosineSchedule {
        warmup_steps: 100,
        ..s
    };
    assert!(bad.validate().unwrap_err().to_string().contains("warm-up"));
    let bad = CosineSchedule { min_lr: 0.2, ..s };
    assert!(bad.validate().unwrap_err().to_string().contains("min_lr"));
}

#[test]
fn clipping_scales_weight_gradients_above_the_limit() {
    let mut g = params().zeros_like();
    g.get_mut("fc.weight").unwrap().data = vec![3.0, 0.0, 0.0, 0.0];
    g.get_mut("fc.bias").unwrap().data = vec![0.0, 4.0];
    g.get_mut("bn.running_mean").unwrap().data = vec![100.0, 100.0];
    // Below the limit: unchanged.
    let mut below = g.clone();
    assert_eq!(clip_grad_norm(&mut below, 10.0).unwrap(), 5.0);
    assert_eq!(below, g);
    // Above: scaled by 1 / (5 + 1e-6); the buffer is no gradient and stays.
    assert_eq!(clip_grad_norm(&mut g, 1.0).unwrap(), 5.0);
    let coef = 1.0 / (5.0 + 1e-6);
    assert_eq!(g.data("fc.weight").unwrap(), &[3.0 * coef, 0.0, 0.0, 0.0]);
    assert_eq!(g.data("fc.bias").unwrap(), &[0.0, 4.0 * coef]);
    assert_eq!(g.data("bn.running_mean").unwrap(), &[100.0, 100.0]);
    // A non-finite norm is reported, and the gradients are left for the caller to skip.
    g.get_mut("fc.bias").unwrap().data[0] = f64::NAN;
    assert!(clip_grad_norm(&mut g, 1.0).unwrap().is_nan());
    assert_eq!(g.data("fc.bias").unwrap()[1], 4.0 * coef);
    assert!(clip_grad_norm(&mut g, 0.0).is_err());
}
