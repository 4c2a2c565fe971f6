//! Gradients through time, checked three independent ways for every zoo neuron:
//! forward-mode duals (spike differentiated as its surrogate), finite differences on the
//! smooth variant (spike replaced by its surrogate's primitive), and, for the paper's LIF,
//! the paper's closed-form backward.
#![allow(clippy::unwrap_used, clippy::needless_range_loop)]

mod common;

use common::{
    LAYOUT, Rng, all_learnable, assert_close, initial_states, jittered_params, surrogate_variants,
    zoo_with_inputs,
};
use snn_codegen::interp::{Dual, Forward, Gradients, Params, Reference, Seq};
use snn_codegen::ir::{NeuronIr, Op};
use snn_codegen::{Layout, Mode};
use snn_codegen::{Neuron, Storage, Surrogate, compile, zoo};

const T: usize = 16;
/// 25 batches of 12 neurons: more than one interpreter block, not a multiple of 256.
const N: usize = 300;

/// A random problem: params, inputs, initial states, and the weights of the loss
/// `L = sum(w_out * y) + sum(w_final * s[T-1])`.
struct Problem {
    params: Params<f64>,
    inputs: Vec<Seq<f64>>,
    init: Option<Vec<Vec<f64>>>,
    w_out: Vec<Seq<f64>>,
    w_final: Vec<Vec<f64>>,
}

fn problem(ir: &NeuronIr, range: (f64, f64), explicit_init: bool, rng: &mut Rng) -> Problem {
    let params = jittered_params::<f64>(ir, rng);
    let scale = range.1 - range.0;
    Problem {
        inputs: (0..ir.inputs.len())
            .map(|_| rng.seq(T, N, range.0, range.1))
            .collect(),
        init: explicit_init.then(|| initial_states(ir, &params, N, scale, rng)),
        w_out: (0..ir.outputs.len())
            .map(|_| rng.seq(T, N, -1.0, 1.0))
            .collect(),
        w_final: (0..ir.states.len())
            .map(|_| rng.vec(N, -1.0, 1.0))
            .collect(),
        params,
    }
}

fn reverse(r: &Reference, p: &Problem) -> Gradients<f64> {
    let fwd = r
        .forward(&p.params, &p.inputs, p.init.as_deref(), Mode::Train)
        .unwrap();
    r.backward(
        &p.params,
        &p.inputs,
        p.init.as_deref(),
        &fwd,
        &p.w_out,
        Some(&p.w_final),
    )
    .unwrap()
}

/// Which quantity a dual run differentiates with respect to.
#[derive(Clone, Copy)]
enum Wrt {
    Input(usize, usize),
    Init(usize),
    Param(usize),
}

/// `dL_i / d(wrt)` for every element `i` (elements are independent, so one forward-mode run
/// gives every element's derivative at once).
fn dual_derivatives(r: &Reference, p: &Problem, wrt: Wrt) -> Vec<f64> {
    let ir = &r.compiled().neuron;
    let lift = |v: &[f64], on: bool| -> Vec<Dual> {
        v.iter()
            .map(|&x| Dual::new(x, f64::from(u8::from(on))))
            .collect()
    };
    let mut params = Params::<Dual>::defaults(ir, p.params.layout);
    for (q, spec) in ir.params.iter().enumerate() {
        let on = matches!(wrt, Wrt::Param(w) if w == q);
        params
            .set(&spec.name, lift(p.params.get(&spec.name).unwrap(), on))
            .unwrap();
    }
    let inputs: Vec<Seq<Dual>> = p
        .inputs
        .iter()
        .enumerate()
        .map(|(k, x)| {
            let mut d = Seq::new(T, N, lift(&x.data, false)).unwrap();
            if let Wrt::Input(wk, t) = wrt
                && wk == k
            {
                for v in &mut d.data[t * N..(t + 1) * N] {
                    v.d = 1.0;
                }
            }
            d
        })
        .collect();
    let init: Option<Vec<Vec<Dual>>> = p.init.as_ref().map(|s| {
        s.iter()
            .enumerate()
            .map(|(j, v)| lift(v, matches!(wrt, Wrt::Init(w) if w == j)))
            .collect()
    });
    let fwd: Forward<Dual> = r
        .forward(&params, &inputs, init.as_deref(), Mode::Inference)
        .unwrap();
    let mut d = vec![0.0; N];
    for (y, w) in fwd.outputs.iter().zip(&p.w_out) {
        for (idx, (y, w)) in y.data.iter().zip(&w.data).enumerate() {
            d[idx % N] += y.d * w;
        }
    }
    for (s, w) in fwd.final_states.iter().zip(&p.w_final) {
        for (i, (s, w)) in s.iter().zip(w).enumerate() {
            d[i] += s.d * w;
        }
    }
    d
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn check_against_duals(ir: &NeuronIr, range: (f64, f64), explicit_init: bool, seed: u64) {
    let r = Reference::new(compile(ir, Storage::F64).unwrap());
    let mut rng = Rng::new(seed);
    let p = problem(ir, range, explicit_init, &mut rng);
    let g = reverse(&r, &p);
    let name = &ir.name;
    let rel = 1e-9;
    for k in 0..ir.inputs.len() {
        let floor = 1e-6 * max_abs(&g.inputs[k].data);
        for t in 0..T {
            let d = dual_derivatives(&r, &p, Wrt::Input(k, t));
            for i in 0..N {
                assert_close(
                    &format!("{name}: dL/dx{k}[{t}, {i}]"),
                    g.inputs[k].data[t * N + i],
                    d[i],
                    rel,
                    floor,
                );
            }
        }
    }
    if explicit_init {
        for j in 0..ir.states.len() {
            let d = dual_derivatives(&r, &p, Wrt::Init(j));
            let floor = 1e-6 * max_abs(&g.init_states[j]);
            for i in 0..N {
                assert_close(
                    &format!("{name}: dL/ds{j}[-1, {i}]"),
                    g.init_states[j][i],
                    d[i],
                    rel,
                    floor,
                );
            }
        }
    }
    for (q, spec) in ir.params.iter().enumerate() {
        let grad = g.params[q].as_ref().unwrap();
        let d = dual_derivatives(&r, &p, Wrt::Param(q));
        let mut want = vec![0.0; grad.len()];
        for (i, v) in d.iter().enumerate() {
            want[LAYOUT.index(spec.shape, i)] += v;
        }
        let floor = 1e-6 * max_abs(grad);
        for (c, (a, b)) in grad.iter().zip(&want).enumerate() {
            assert_close(
                &format!("{name}: dL/d{}[{c}]", spec.name),
                *a,
                *b,
                rel,
                floor,
            );
        }
    }
}

#[test]
fn reverse_mode_equals_forward_mode_duals() {
    let cases = zoo_with_inputs().into_iter().chain(surrogate_variants());
    for (seed, (ir, range)) in cases.enumerate() {
        let ir = all_learnable(&ir);
        check_against_duals(&ir, range, true, seed as u64);
        // Default initial states: states that start from a param pass it their gradient.
        check_against_duals(&ir, range, false, 100 + seed as u64);
    }
}

#[test]
fn fixed_params_get_no_gradient() {
    let r = Reference::new(compile(&zoo::PaperLif::default(), Storage::F64).unwrap());
    let mut rng = Rng::new(7);
    let p = problem(&r.compiled().neuron, (0.0, 0.5), true, &mut rng);
    let g = reverse(&r, &p);
    assert!(g.params.iter().all(Option::is_none));
}

/// The neuron with every spike replaced by its surrogate's primitive: a smooth function
/// whose true derivative is what the surrogate gradient computes.
fn smooth_variant(ir: &NeuronIr) -> NeuronIr {
    let mut ir = ir.clone();
    let g = &mut ir.graph;
    for n in g.nodes() {
        if let Op::Spike(k) = g.op(n) {
            let h = g.operands(n)[0];
            let s = g.surrogate(k).unwrap().clone();
            let prim = s.emit_primitive(g, h).unwrap();
            g.replace_uses(n, prim);
            g.remove(n);
        }
    }
    ir
}

fn loss(r: &Reference, p: &Problem) -> f64 {
    let fwd = r
        .forward(&p.params, &p.inputs, p.init.as_deref(), Mode::Inference)
        .unwrap();
    let mut l = 0.0;
    for (y, w) in fwd.outputs.iter().zip(&p.w_out) {
        l += y.data.iter().zip(&w.data).map(|(a, b)| a * b).sum::<f64>();
    }
    for (s, w) in fwd.final_states.iter().zip(&p.w_final) {
        l += s.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
    }
    l
}

/// `p + eps * d` for a direction `d` over inputs, initial states and params.
fn shifted(ir: &NeuronIr, p: &Problem, d: &Problem, eps: f64) -> Problem {
    let add = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(a, b)| a + eps * b)
            .collect::<Vec<_>>()
    };
    let mut params = p.params.clone();
    for spec in &ir.params {
        params
            .set(
                &spec.name,
                add(
                    p.params.get(&spec.name).unwrap(),
                    d.params.get(&spec.name).unwrap(),
                ),
            )
            .unwrap();
    }
    Problem {
        params,
        inputs: p
            .inputs
            .iter()
            .zip(&d.inputs)
            .map(|(a, b)| Seq::new(T, N, add(&a.data, &b.data)).unwrap())
            .collect(),
        init: p.init.as_ref().map(|s| {
            s.iter()
                .zip(d.init.as_ref().unwrap())
                .map(|(a, b)| add(a, b))
                .collect()
        }),
        w_out: p.w_out.clone(),
        w_final: p.w_final.clone(),
    }
}

#[test]
fn smooth_variants_match_finite_differences() {
    // Izhikevich's fast-sigmoid primitive is unbounded enough to make its reset diverge;
    // its smooth variant uses a sigmoid (whose primitive stays in (0, 1)) instead.
    let izhikevich = zoo::Izhikevich {
        surrogate: Surrogate::sigmoid(0.1),
        ..Default::default()
    };
    // Finite differences see through `detach`: the ternary LIF's seed backward detaches
    // its reset, so its gradient is checked here with the reset attached (and against the
    // seed's closed form below).
    let ternary = zoo::TernaryLif {
        detach_reset: false,
        ..Default::default()
    };
    let cases = zoo_with_inputs()
        .into_iter()
        .map(|(ir, range)| match ir.name.as_str() {
            "izhikevich" => (izhikevich.ir().unwrap(), (0.0, 6.0)),
            "ternary_lif" => (ternary.ir().unwrap(), range),
            _ => (ir, range),
        })
        .chain(
            surrogate_variants()
                .into_iter()
                // No primitive is known for a custom surrogate; finite differences see through
                // `detach`, which is the point of it.
                .filter(|(ir, _)| !matches!(ir.name.as_str(), "lif_custom" | "lif_detach_reset")),
        );
    for (seed, (ir, range)) in cases.enumerate() {
        let ir = smooth_variant(&all_learnable(&ir));
        assert!(
            ir.graph
                .nodes()
                .iter()
                .all(|&n| !matches!(ir.graph.op(n), Op::Spike(_)))
        );
        let r = Reference::new(compile(&ir, Storage::F64).unwrap());
        let mut rng = Rng::new(1000 + seed as u64);
        let p = problem(&ir, range, true, &mut rng);
        let g = reverse(&r, &p);
        // Three directions: inputs only, initial states only, params only.
        for part in 0..3 {
            let mut d = problem(&ir, (-1.0, 1.0), true, &mut rng);
            let mut expected = 0.0;
            for (k, x) in d.inputs.iter_mut().enumerate() {
                if part != 0 {
                    x.data.fill(0.0);
                }
                expected += x
                    .data
                    .iter()
                    .zip(&g.inputs[k].data)
                    .map(|(a, b)| a * b)
                    .sum::<f64>();
            }
            for (j, s) in d.init.as_mut().unwrap().iter_mut().enumerate() {
                if part != 1 {
                    s.fill(0.0);
                }
                expected += s
                    .iter()
                    .zip(&g.init_states[j])
                    .map(|(a, b)| a * b)
                    .sum::<f64>();
            }
            for (q, spec) in ir.params.iter().enumerate() {
                let base = p.params.get(&spec.name).unwrap();
                // Relative steps, so that params of any magnitude move comparably.
                let dir: Vec<f64> = base
                    .iter()
                    .map(|b| {
                        if part == 2 {
                            rng.uniform(-1.0, 1.0) * b.abs().max(0.1)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                expected += dir
                    .iter()
                    .zip(g.params[q].as_ref().unwrap())
                    .map(|(a, b)| a * b)
                    .sum::<f64>();
                d.params.set(&spec.name, dir).unwrap();
            }
            // Central differences with one Richardson step: error O(eps^4).
            let central = |eps: f64| {
                (loss(&r, &shifted(&ir, &p, &d, eps)) - loss(&r, &shifted(&ir, &p, &d, -eps)))
                    / (2.0 * eps)
            };
            let eps = 1e-5;
            let fd = (4.0 * central(eps / 2.0) - central(eps)) / 3.0;
            assert_close(
                &format!("{} (smooth), direction {part}", ir.name),
                expected,
                fd,
                1e-5,
                1e-3,
            );
        }
    }
}

#[test]
fn paper_lif_backward_equals_the_papers_closed_form() {
    let lif = zoo::PaperLif::default();
    let (decay, threshold) = (lif.decay, lif.threshold);
    assert_eq!(lif.rest, 0.0);
    let r = Reference::new(compile(&lif, Storage::F64).unwrap());
    let mut rng = Rng::new(42);
    let n = 1000;
    let steps = 32;
    let x: Seq<f64> = rng.seq(steps, n, 0.0, 0.6);
    let dy: Seq<f64> = rng.seq(steps, n, -1.0, 1.0);
    let params = Params::defaults(&r.compiled().neuron, Layout::flat(n));
    let fwd = r
        .forward(&params, std::slice::from_ref(&x), None, Mode::Train)
        .unwrap();
    let g = r
        .backward(
            &params,
            std::slice::from_ref(&x),
            None,
            &fwd,
            std::slice::from_ref(&dy),
            None,
        )
        .unwrap();

    let mut spikes = 0;
    for i in 0..n {
        // The paper's kernel, forward: v[t] = decay * v[t-1] * (1 - y[t-1]) + x[t], y = v >= thr.
        let (mut v, mut y) = (vec![0.0; steps], vec![0.0; steps]);
        let (mut vp, mut yp) = (0.0, 0.0);
        for t in 0..steps {
            v[t] = decay * vp * (1.0 - yp) + x.data[t * n + i];
            y[t] = if v[t] >= threshold { 1.0 } else { 0.0 };
            assert_eq!(fwd.outputs[0].data[t * n + i], y[t]);
            spikes += y[t] as usize;
            (vp, yp) = (v[t], y[t]);
        }
        // Backward: g = dy[t] r[t] + g_next decay (1 - y[t] - v[t] r[t]), dx[t] = g.
        let mut g_next = 0.0;
        for t in (0..steps).rev() {
            let r = if (v[t] - threshold).abs() < 0.5 {
                1.0
            } else {
                0.0
            };
            let gt = dy.data[t * n + i] * r + g_next * decay * (1.0 - y[t] - v[t] * r);
            assert_close(
                &format!("dx[{t}, {i}]"),
                g.inputs[0].data[t * n + i],
                gt,
                1e-12,
                1e-12,
            );
            g_next = gt;
        }
    }
    assert!(
        spikes > steps * n / 20 && spikes < steps * n * 9 / 10,
        "the test input should make the neurons spike sometimes ({spikes})"
    );
}

#[test]
fn detach_stops_the_gradient_through_the_reset_and_nothing_else() {
    let run = |detach_reset| {
        let lif = zoo::Lif {
            detach_reset,
            ..Default::default()
        };
        let r = Reference::new(compile(&lif, Storage::F64).unwrap());
        let mut rng = Rng::new(5);
        let p = problem(&r.compiled().neuron, (-0.2, 1.2), true, &mut rng);
        let fwd = r
            .forward(&p.params, &p.inputs, p.init.as_deref(), Mode::Train)
            .unwrap();
        (fwd.outputs, reverse(&r, &p).inputs)
    };
    let (through_out, through) = run(false);
    let (detached_out, detached) = run(true);
    assert_eq!(
        through_out, detached_out,
        "detach must not change the forward pass"
    );
    let differing = through[0]
        .data
        .iter()
        .zip(&detached[0].data)
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        differing > N,
        "detaching the reset should change many gradients ({differing})"
    );
}

#[test]
fn ternary_lif_backward_equals_the_seed_kernels_closed_form() {
    let lif = zoo::TernaryLif::default();
    assert!(lif.detach_reset);
    let (decay, threshold) = (lif.decay, lif.threshold);
    let r = Reference::new(compile(&lif, Storage::F64).unwrap());
    let mut rng = Rng::new(43);
    let (n, steps) = (1000, 32);
    let x: Seq<f64> = rng.seq(steps, n, -0.6, 0.6);
    let dy: Seq<f64> = rng.seq(steps, n, -1.0, 1.0);
    let params = Params::defaults(&r.compiled().neuron, Layout::flat(n));
    let xs = std::slice::from_ref(&x);
    let fwd = r.forward(&params, xs, None, Mode::Train).unwrap();
    let g = r
        .backward(&params, xs, None, &fwd, std::slice::from_ref(&dy), None)
        .unwrap();

    let (mut positive, mut negative) = (0, 0);
    for i in 0..n {
        // The seed's forward: v = decay * v * (1 - |y|) + x; y = +1 at v >= th, -1 at
        // v <= -th, else 0; v starts at `rest` = 0.
        let (mut v, mut y) = (vec![0.0; steps], vec![0.0; steps]);
        let (mut vp, mut yp) = (lif.rest, 0.0_f64);
        for t in 0..steps {
            v[t] = decay * vp * (1.0 - yp.abs()) + x.data[t * n + i];
            y[t] = if v[t] >= threshold {
                1.0
            } else if v[t] <= -threshold {
                -1.0
            } else {
                0.0
            };
            assert_eq!(fwd.outputs[0].data[t * n + i], y[t]);
            positive += usize::from(y[t] > 0.0);
            negative += usize::from(y[t] < 0.0);
            (vp, yp) = (v[t], y[t]);
        }
        // Its backward: l2v = dy[t] * window(v[t]) + l2v * decay * (1 - |y[t]|), dx[t] = l2v,
        // the window 1 within 0.25 of +th or of -th.
        let mut l2v = 0.0;
        for t in (0..steps).rev() {
            let near = |c: f64| (v[t] - c).abs() < 0.25;
            let window = if near(threshold) || near(-threshold) {
                1.0
            } else {
                0.0
            };
            l2v = dy.data[t * n + i] * window + l2v * decay * (1.0 - y[t].abs());
            assert_close(
                &format!("dx[{t}, {i}]"),
                g.inputs[0].data[t * n + i],
                l2v,
                1e-12,
                1e-12,
            );
        }
    }
    let all = steps * n;
    assert!(
        positive > all / 20 && negative > all / 20 && positive + negative < all * 9 / 10,
        "{positive} positive and {negative} negative spikes of {all}: the inputs exercise too little"
    );
}
