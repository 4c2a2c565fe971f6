//! The neuron zoo: every neuron builds and validates, its printed equations are pinned by
//! snapshots (reviewed by hand against the sources), and a few steps of each, evaluated
//! from the IR, agree with a direct transcription of its equations.

#![allow(clippy::unwrap_used)]

use snn_codegen::ir::eval::eval_f64;
use snn_codegen::ir::{Init, Leaf, Sink, SpikeKind};
use snn_codegen::zoo::{self, Alif, Eif, If, Izhikevich, LeakyIntegrator, Lif, PaperLif, Plif};
use snn_codegen::{Neuron, NeuronIr, ParamShape};

const NAMES: [&str; 9] = [
    "paper_lif",
    "lif",
    "integrate_and_fire",
    "plif",
    "alif",
    "izhikevich",
    "eif",
    "leaky_integrator",
    "ternary_lif",
];

fn printed(n: &dyn Neuron) -> String {
    format!("{}", n.ir().unwrap())
}

#[test]
fn every_zoo_neuron_builds_validates_and_prints() {
    let all = zoo::all();
    assert_eq!(all.len(), NAMES.len());
    assert_eq!(zoo::NAMES, NAMES);
    for (n, name) in all.iter().zip(NAMES) {
        let ir = n.ir().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ir.name, name);
        ir.validate().unwrap();
        assert!(!ir.doc.is_empty(), "{name} has no doc");
        insta::assert_snapshot!(name, format!("{ir}"));
    }
}

#[test]
fn by_name_finds_every_neuron() {
    for name in NAMES {
        let n = zoo::by_name(name).unwrap_or_else(|| panic!("{name} not found"));
        assert_eq!(n.ir().unwrap().name, name);
    }
    assert!(zoo::by_name("no_such_neuron").is_none());
    assert!(zoo::by_name("if").is_none());
}

#[test]
fn spiking_neurons_output_spikes() {
    for n in zoo::all() {
        let ir = n.ir().unwrap();
        let kind = match ir.name.as_str() {
            "leaky_integrator" => SpikeKind::General,
            "ternary_lif" => SpikeKind::Ternary,
            _ => SpikeKind::Binary,
        };
        assert_eq!(ir.output_kind(0), kind, "{}", ir.name);
    }
}

/// The defaults of `T`, changed by `f`.
fn with<T: Default>(f: impl FnOnce(&mut T)) -> T {
    let mut n = T::default();
    f(&mut n);
    n
}

#[test]
fn option_variants() {
    let variants: [(&str, Box<dyn Neuron>); 8] = [
        (
            "lif_soft_reset",
            Box::new(with(|n: &mut Lif| n.v_reset = None)),
        ),
        (
            "lif_no_decay_input",
            Box::new(with(|n: &mut Lif| n.decay_input = false)),
        ),
        (
            "lif_soft_reset_no_decay_input",
            Box::new(with(|n: &mut Lif| {
                n.v_reset = None;
                n.decay_input = false;
            })),
        ),
        (
            "integrate_and_fire_soft_reset",
            Box::new(with(|n: &mut If| n.v_reset = None)),
        ),
        (
            "plif_per_channel",
            Box::new(with(|n: &mut Plif| n.shape = ParamShape::PerChannel)),
        ),
        (
            "plif_soft_reset",
            Box::new(with(|n: &mut Plif| n.v_reset = None)),
        ),
        (
            "plif_no_decay_input",
            Box::new(with(|n: &mut Plif| n.decay_input = false)),
        ),
        (
            "leaky_integrator_learnable",
            Box::new(with(|n: &mut LeakyIntegrator| n.learnable = true)),
        ),
    ];
    for (name, n) in variants {
        let ir = n.ir().unwrap_or_else(|e| panic!("{name}: {e}"));
        insta::assert_snapshot!(name, format!("{ir}"));
    }
}

#[test]
fn soft_and_hard_reset_differ() {
    for (hard, soft) in [
        (
            printed(&Lif::default()),
            printed(&with(|n: &mut Lif| n.v_reset = None)),
        ),
        (
            printed(&If::default()),
            printed(&with(|n: &mut If| n.v_reset = None)),
        ),
        (
            printed(&Plif::default()),
            printed(&with(|n: &mut Plif| n.v_reset = None)),
        ),
    ] {
        assert_ne!(hard, soft);
        assert!(hard.contains("v_reset"), "{hard}");
        assert!(!soft.contains("v_reset"), "{soft}");
        assert!(soft.contains("v <- h - s * v_threshold"), "{soft}");
    }
    let soft = with(|n: &mut Lif| n.v_reset = None).ir().unwrap();
    assert!(soft.params.iter().all(|p| p.name != "v_reset"));
    assert_eq!(soft.states[0].init, Init::Const(0.0));
    let hard = Lif::default().ir().unwrap();
    let r = hard.param_index("v_reset").unwrap();
    assert_eq!(hard.states[0].init, Init::Param(r as u32));
}

#[test]
fn decay_input_changes_the_charge() {
    let on = printed(&Lif::default());
    let off = printed(&Lif {
        decay_input: false,
        ..Lif::default()
    });
    assert!(on.contains("h = v + (x - (v - v_reset)) / tau"), "{on}");
    assert!(off.contains("h = v - (v - v_reset) / tau + x"), "{off}");
}

#[test]
fn plif_shape_and_initial_w() {
    let scalar = Plif::default().ir().unwrap();
    let w = &scalar.params[scalar.param_index("w").unwrap()];
    assert!(w.learnable);
    assert_eq!(w.shape, ParamShape::Scalar);
    // init_tau = 2 gives w = -ln(1) = 0, i.e. a leak of sigmoid(0) = 1/2.
    assert_eq!(w.default, 0.0);
    let tau4 = Plif {
        init_tau: 4.0,
        ..Plif::default()
    };
    assert!((1.0 / (1.0 + (-tau4.w0()).exp()) - 0.25).abs() < 1e-12);

    let per_channel = printed(&Plif {
        shape: ParamShape::PerChannel,
        ..Plif::default()
    });
    assert!(
        per_channel.contains("w = 0 (learnable, per-channel)"),
        "{per_channel}"
    );
    // init_tau <= 1 has no finite w: reported, not panicked on.
    assert!(
        Plif {
            init_tau: 1.0,
            ..Plif::default()
        }
        .ir()
        .is_err()
    );
}

#[test]
fn leaky_integrator_learnable_decay() {
    let fixed = LeakyIntegrator::default().ir().unwrap();
    let learn = LeakyIntegrator {
        learnable: true,
        ..LeakyIntegrator::default()
    }
    .ir()
    .unwrap();
    assert!(!fixed.has_learnable());
    assert!(learn.has_learnable());
    assert_eq!(learn.params[0].shape, ParamShape::Scalar);
}

#[test]
fn izhikevich_initial_states_follow_fields() {
    let n = Izhikevich {
        b: 0.25,
        c: -50.0,
        ..Izhikevich::default()
    };
    let ir = n.ir().unwrap();
    assert_eq!(
        ir.states[0].init,
        Init::Param(ir.param_index("c").unwrap() as u32)
    );
    assert_eq!(ir.states[1].init, Init::Const(-12.5));
    assert_eq!(
        Izhikevich::default().ir().unwrap().states[1].init,
        Init::Const(-13.0)
    );
}

/// Runs `ir` over `xs` (one input) from its initial states with its default params, by
/// evaluating the step graph once per step. Returns output 0 per step and the final states.
fn simulate(ir: &NeuronIr, xs: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let params: Vec<f64> = ir.params.iter().map(|p| p.default).collect();
    let mut states: Vec<f64> = ir
        .states
        .iter()
        .map(|s| match s.init {
            Init::Const(c) => c,
            Init::Param(p) => params[p as usize],
        })
        .collect();
    let mut ys = Vec::new();
    for &x in xs {
        let sinks = eval_f64(&ir.graph, |l| match l {
            Leaf::Input(0) => x,
            Leaf::State(j) => states[j as usize],
            Leaf::Param(p) => params[p as usize],
            other => panic!("unexpected leaf {other}"),
        });
        for (sink, value) in sinks {
            match sink {
                Sink::Output(0) => ys.push(value),
                Sink::NextState(j) => states[j as usize] = value,
                other => panic!("unexpected sink {other}"),
            }
        }
    }
    (ys, states)
}

/// A deterministic, irregular input around `mean`.
fn drive(mean: f64, spread: f64, t: usize) -> Vec<f64> {
    (0..t)
        .map(|i| mean + spread * ((i as f64) * 1.7).sin())
        .collect()
}

fn heaviside(h: f64) -> f64 {
    if h >= 0.0 { 1.0 } else { 0.0 }
}

/// Checks the IR's simulation against `step(x, states) -> (y, states)`, and that the run
/// exercises both branches of the spike (so the resets are checked too).
fn check<N: Neuron + std::fmt::Debug>(
    n: &N,
    xs: &[f64],
    init: Vec<f64>,
    step: impl Fn(f64, &[f64]) -> (f64, Vec<f64>),
) {
    let mut ir = n.ir().unwrap();
    ir.name = format!("{}: {n:?}", ir.name);
    let (ys, end) = simulate(&ir, xs);
    let mut states = init;
    let mut want = Vec::new();
    for &x in xs {
        let (y, next) = step(x, &states);
        want.push(y);
        states = next;
    }
    for (t, (a, b)) in ys.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{} step {t}: {a} vs {b}",
            ir.name
        );
    }
    for (a, b) in end.iter().zip(&states) {
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{} final state: {a} vs {b}",
            ir.name
        );
    }
    if ir.output_kind(0).is_spike() {
        let spikes = ys.iter().filter(|&&y| y != 0.0).count();
        assert!(
            spikes > 0 && spikes < ys.len(),
            "{}: {spikes} spikes in {} steps",
            ir.name,
            ys.len()
        );
    }
}

#[test]
fn steps_match_the_equations() {
    let xs = drive(0.2, 0.3, 60);

    check(&PaperLif::default(), &xs, vec![0.0, 0.0], |x, s| {
        let (v, y) = (s[0], s[1]);
        let h = 0.2 * v * (1.0 - y) + 0.0 * y + x;
        let sp = heaviside(h - 0.3);
        (sp, vec![h, sp])
    });

    let lif = |decay_input: bool, v_reset: Option<f64>| {
        move |x: f64, s: &[f64]| {
            let v = s[0];
            let r = v_reset.unwrap_or(0.0);
            let h = if decay_input {
                v + (x - (v - r)) / 2.0
            } else {
                v - (v - r) / 2.0 + x
            };
            let sp = heaviside(h - 1.0);
            let vn = match v_reset {
                Some(r) => h * (1.0 - sp) + r * sp,
                None => h - sp * 1.0,
            };
            (sp, vec![vn])
        }
    };
    let lif_xs = drive(0.9, 0.8, 60);
    for decay_input in [true, false] {
        for v_reset in [Some(0.0), Some(-0.1), None] {
            let n = Lif {
                decay_input,
                v_reset,
                ..Lif::default()
            };
            check(
                &n,
                &lif_xs,
                vec![v_reset.unwrap_or(0.0)],
                lif(decay_input, v_reset),
            );
        }
    }

    for v_reset in [Some(0.0), None] {
        check(
            &If {
                v_reset,
                ..If::default()
            },
            &xs,
            vec![v_reset.unwrap_or(0.0)],
            move |x, s| {
                let h = s[0] + x;
                let sp = heaviside(h - 1.0);
                let vn = match v_reset {
                    Some(r) => h * (1.0 - sp) + r * sp,
                    None => h - sp,
                };
                (sp, vec![vn])
            },
        );
    }

    // init_tau = 3: leak sigmoid(-ln 2) = 1/3.
    for decay_input in [true, false] {
        for v_reset in [Some(0.0), None] {
            let n = Plif {
                init_tau: 3.0,
                decay_input,
                v_reset,
                ..Plif::default()
            };
            check(&n, &lif_xs, vec![0.0], move |x, s| {
                let v = s[0];
                let h = if decay_input {
                    v + (x - v) / 3.0
                } else {
                    v - v / 3.0 + x
                };
                let sp = heaviside(h - 1.0);
                let vn = if v_reset.is_some() {
                    h * (1.0 - sp)
                } else {
                    h - sp
                };
                (sp, vec![vn])
            });
        }
    }

    check(
        &Alif::default(),
        &drive(0.4, 0.4, 80),
        vec![0.0, 0.0],
        |x, s| {
            let (v, a) = (s[0], s[1]);
            let h = 0.9 * v + x;
            let thr = 1.0 + 0.2 * a;
            let sp = heaviside(h - thr);
            (sp, vec![h - sp * thr, 0.95 * a + sp])
        },
    );

    check(
        &Izhikevich::default(),
        &drive(10.0, 2.0, 400),
        vec![-65.0, -13.0],
        |x, s| {
            let (v, u) = (s[0], s[1]);
            let vn = v + 0.5 * (0.04 * v * v + 5.0 * v + 140.0 - u + x);
            let un = u + 0.5 * 0.02 * (0.2 * v - u);
            let sp = heaviside(vn - 30.0);
            (sp, vec![vn * (1.0 - sp) + -65.0 * sp, un + 8.0 * sp])
        },
    );

    check(&Eif::default(), &drive(0.9, 0.3, 80), vec![0.0], |x, s| {
        let v = s[0];
        let h = v + 0.5 * (-(v - 0.0) + 0.1 * ((v - 0.8) / 0.1).exp() + x);
        let sp = heaviside(h - 1.0);
        (sp, vec![h * (1.0 - sp)])
    });

    check(&LeakyIntegrator::default(), &xs, vec![0.0], |x, s| {
        let h = 0.9 * s[0] + x;
        (h, vec![h])
    });
}
