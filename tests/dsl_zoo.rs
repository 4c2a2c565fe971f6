//! `#[neuron]` against the builder. The zoo neurons that the builder writes (those whose
//! fields change the graph's structure) are declared again here with the macro, in their
//! default configuration, and must be the same neuron: the same graph after the passes, the
//! same compiled programs and memory plan, and bit-identical CPU results forward and
//! backward. (The zoo neurons the macro writes are pinned by snn-codegen's snapshots of
//! their printed IR, plan and CUDA sources, taken from their builder versions.) Then every
//! construct and surrogate of the DSL beyond the zoo, each checked against a builder twin,
//! hand-computed values or both.

#[path = "../snn-codegen/tests/common/zoo_support.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod zoo_support;

use snn::codegen::Neuron;
use snn::codegen::interp::{Forward, Real};
use snn::codegen::ir::SpikeKind;
use snn::prelude::*;
use zoo_support::all_learnable;

type R = Result<(), Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------------
// The builder-written zoo, declared with the macro. Parameter order follows the builder's
// calls; `let` names follow the builder's `.named(..)` (values the builder leaves unnamed
// are inlined).
// ---------------------------------------------------------------------------------------

/// Leaky integrate-and-fire, as SpikingJelly's LIFNode.
#[neuron(surrogate = sigmoid(alpha = 4.0))]
pub fn lif(
    x: Input,
    #[param(default = 2.0)] tau: Param,
    #[param(default = 1.0)] v_threshold: Param,
    #[param(default = 0.0)] v_reset: Param,
    #[state(init = v_reset)] v: State,
) -> Spike {
    let h = v + (x - (v - v_reset)) / tau;
    let s = spike(h - v_threshold);
    v.set(h * (1.0 - s) + v_reset * s);
    s
}

/// Integrate-and-fire without leak, as SpikingJelly's IFNode.
#[neuron(surrogate = sigmoid(alpha = 4.0))]
pub fn integrate_and_fire(
    x: Input,
    #[param(default = 1.0)] v_threshold: Param,
    #[param(default = 0.0)] v_reset: Param,
    #[state(init = v_reset)] v: State,
) -> Spike {
    let h = v + x;
    let s = spike(h - v_threshold);
    v.set(h * (1.0 - s) + v_reset * s);
    s
}

/// Parametric LIF (Fang et al. 2021), as SpikingJelly's ParametricLIFNode: the leak sigmoid(w) is learned.
#[neuron(surrogate = sigmoid(alpha = 4.0))]
pub fn plif(
    x: Input,
    #[param(default = 0.0, learnable)] w: Param,
    #[param(default = 1.0)] v_threshold: Param,
    #[param(default = 0.0)] v_reset: Param,
    #[state(init = v_reset)] v: State,
) -> Spike {
    let h = v + (x - (v - v_reset)) * w.sigmoid();
    let s = spike(h - v_threshold);
    v.set(h * (1.0 - s) + v_reset * s);
    s
}

/// Izhikevich's simple model (2003), forward Euler with step dt, in mV.
#[neuron(surrogate = fast_sigmoid(alpha = 0.2))]
pub fn izhikevich(
    x: Input,
    #[param(default = 0.02)] a: Param,
    #[param(default = 0.2)] b: Param,
    #[param(default = -65.0)] c: Param,
    #[param(default = 8.0)] d: Param,
    #[param(default = 0.5)] dt: Param,
    #[param(default = 30.0)] v_peak: Param,
    #[state(init = c)] v: State,
    #[state(init = -13.0)] u: State,
) -> Spike {
    let vn = v + dt * (0.04 * v * v + 5.0 * v + 140.0 - u + x);
    let un = u + dt * a * (b * v - u);
    let s = spike(vn - v_peak);
    v.set(vn * (1.0 - s) + c * s);
    u.set(un + d * s);
    s
}

/// Non-spiking leaky integrator, a read-out layer: outputs its membrane.
#[neuron]
pub fn leaky_integrator(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Real {
    let h = decay * v + x;
    v.set(h);
    // The zoo prints `output v = h`: an output named `v` whose value is named `h`. The DSL
    // names an output after the final expression's binding, and every `let` renames its
    // value, so the output is bound to `v` (renaming the node to `v`) and the node is then
    // named `h` again.
    let v = h;
    let h = v;
    v
}

// ---------------------------------------------------------------------------------------
// Checks shared by the zoo tests.
// ---------------------------------------------------------------------------------------

const T: usize = 16;
const N: usize = 300;

/// Seeded random numbers: snn's generator with the draws these tests need.
struct Rng(snn::nn::Rng);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(snn::nn::Rng::new(seed))
    }
    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.0.range(lo, hi)
    }
    fn vec<T: Real>(&mut self, n: usize, lo: f64, hi: f64) -> Vec<T> {
        (0..n).map(|_| T::from_f64(self.uniform(lo, hi))).collect()
    }
    fn seq<T: Real>(&mut self, steps: usize, n: usize, lo: f64, hi: f64) -> Seq<T> {
        Seq::new(steps, n, self.vec(steps * n, lo, hi)).expect("a [T, N] sequence")
    }
}

/// Asserts bit equality, value by value.
fn same_bits<T: Real>(what: &str, a: &[T], b: &[T]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.value().to_bits() == y.value().to_bits(),
            "{what}[{i}]: macro {} vs builder {}",
            x.value(),
            y.value()
        );
    }
}

fn same_seqs<T: Real>(what: &str, a: &[Seq<T>], b: &[Seq<T>]) {
    assert_eq!(a.len(), b.len(), "{what}: counts differ");
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!((x.steps, x.n), (y.steps, y.n), "{what} {k}: shapes differ");
        same_bits(&format!("{what} {k}"), &x.data, &y.data);
    }
}

fn same_vecs<T: Real>(what: &str, a: &[Vec<T>], b: &[Vec<T>]) {
    assert_eq!(a.len(), b.len(), "{what}: counts differ");
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        same_bits(&format!("{what} {k}"), x, y);
    }
}

/// The input range that makes each neuron spike often but not always.
fn input_range(name: &str) -> (f64, f64) {
    match name {
        "izhikevich" => (0.0, 12.0),
        "paper_lif" => (0.0, 0.5),
        _ => (-0.2, 1.2),
    }
}

/// Runs both compiled neurons forward (training) and backward on the same random problem
/// and asserts bit-identical results. Returns the macro version's forward pass.
fn run_both(
    mac: &Compiled,
    zoo: &Compiled,
    params: &Params<f32>,
    init: Option<&[Vec<f32>]>,
    rng: &mut Rng,
) -> Result<Forward<f32>, Box<dyn std::error::Error>> {
    let ir = &mac.neuron;
    let (lo, hi) = input_range(&ir.name);
    let x: Vec<Seq<f32>> = (0..ir.inputs.len())
        .map(|_| rng.seq(T, N, lo, hi))
        .collect();
    let dy: Vec<Seq<f32>> = (0..ir.outputs.len())
        .map(|_| rng.seq(T, N, -1.0, 1.0))
        .collect();
    let d_final: Vec<Vec<f32>> = (0..ir.states.len())
        .map(|_| rng.vec(N, -1.0, 1.0))
        .collect();
    let (ra, rb) = (Reference::new(mac.clone()), Reference::new(zoo.clone()));

    let fa = ra.forward(params, &x, init, Mode::Train)?;
    let fb = rb.forward(params, &x, init, Mode::Train)?;
    let name = &ir.name;
    same_seqs(&format!("{name}: output"), &fa.outputs, &fb.outputs);
    same_seqs(&format!("{name}: save"), &fa.saved, &fb.saved);
    same_vecs(
        &format!("{name}: final state"),
        &fa.final_states,
        &fb.final_states,
    );

    let ga = ra.backward(params, &x, init, &fa, &dy, Some(&d_final))?;
    let gb = rb.backward(params, &x, init, &fb, &dy, Some(&d_final))?;
    same_seqs(&format!("{name}: input grad"), &ga.inputs, &gb.inputs);
    same_vecs(
        &format!("{name}: initial-state grad"),
        &ga.init_states,
        &gb.init_states,
    );
    assert_eq!(ga.params.len(), gb.params.len());
    for (p, (a, b)) in ga.params.iter().zip(&gb.params).enumerate() {
        let pname = &ir.params[p].name;
        assert_eq!(a.is_some(), b.is_some(), "{name}: grad of {pname}");
        assert_eq!(
            a.is_some(),
            ir.params[p].learnable,
            "{name}: grad of {pname}"
        );
        if let (Some(a), Some(b)) = (a, b) {
            same_bits(&format!("{name}: grad of {pname}"), a, b);
            assert!(
                a.iter().any(|g| *g != 0.0),
                "{name}: grad of {pname} is all zero"
            );
        }
    }
    // Something was exercised.
    assert!(
        ga.inputs[0].data.iter().any(|g| *g != 0.0),
        "{name}: input gradient is all zero"
    );
    Ok(fa)
}

/// (a), (b) and (c) for one pair: the macro version `mac`, the builder version `zoo`.
fn check_pair(mac: &dyn Neuron, zoo: &dyn Neuron, seed: u64) -> R {
    // (a) The same graph after the passes, the same docs and surrogates.
    let (mut a, mut b) = (mac.ir()?, zoo.ir()?);
    assert_eq!(a.name, b.name);
    assert_eq!(a.doc, b.doc, "{}: doc", a.name);
    assert_eq!(a.graph.surrogates(), b.graph.surrogates(), "{}", a.name);
    assert_eq!(
        a.to_string(),
        b.to_string(),
        "{}: IR before the passes",
        a.name
    );
    a.optimize();
    b.optimize();
    assert_eq!(a.to_string(), b.to_string(), "{}: optimized IR", a.name);
    assert_eq!(a.states, b.states, "{}: states", a.name);
    assert_eq!(a.params, b.params, "{}: params", a.name);

    // (b) The same compiled programs and memory plan.
    let ca = compile(mac, Storage::F32)?;
    let cb = compile(zoo, Storage::F32)?;
    assert_eq!(ca.plan, cb.plan, "{}: memory plan", a.name);
    assert_eq!(ca.to_string(), cb.to_string(), "{}: compiled", a.name);

    // (c) Bit-identical CPU results, with the defaults on a flat layer.
    let mut rng = Rng::new(seed);
    let params = Params::<f32>::defaults(&ca.neuron, Layout::flat(N));
    let fwd = run_both(&ca, &cb, &params, None, &mut rng)?;
    if ca.neuron.output_kind(0).is_spike() {
        let spikes = fwd.outputs[0].data.iter().filter(|s| **s != 0.0).count();
        assert!(
            spikes > 0 && spikes < T * N,
            "{}: {spikes} spikes of {}; the inputs exercise nothing",
            a.name,
            T * N
        );
    }

    // And with every param learnable (scalar, per-channel, per-neuron in turn), jittered
    // param values and random initial states: gradients for every param.
    let (la, lb) = (all_learnable(&mac.ir()?), all_learnable(&zoo.ir()?));
    let ca = compile(&la, Storage::F32)?;
    let cb = compile(&lb, Storage::F32)?;
    assert_eq!(ca.plan, cb.plan, "{}: memory plan, learnable", a.name);
    assert_eq!(
        ca.to_string(),
        cb.to_string(),
        "{}: compiled, learnable",
        a.name
    );
    let layout = Layout {
        channels: 3,
        inner: 4,
    };
    let mut params = Params::<f32>::defaults(&la, layout);
    for spec in &la.params {
        let len = layout.len(spec.shape);
        let v = (0..len)
            .map(|_| spec.default as f32 * rng.uniform(0.95, 1.05) as f32)
            .collect();
        params.set(&spec.name, v)?;
    }
    let init: Vec<Vec<f32>> = la
        .states
        .iter()
        .map(|s| {
            let base = match s.init {
                snn::codegen::Init::Const(c) => c,
                snn::codegen::Init::Param(p) => la.params[p as usize].default,
            };
            (0..N)
                .map(|_| (base + rng.uniform(-0.1, 0.1)) as f32)
                .collect()
        })
        .collect();
    run_both(&ca, &cb, &params, Some(&init), &mut rng)?;
    Ok(())
}

#[test]
fn the_macro_declares_the_builder_zoo() -> R {
    // The zoo's defaults are the configuration declared here.
    let lif = zoo::Lif::default();
    assert!(lif.decay_input && lif.v_reset.is_some() && !lif.detach_reset);
    let plif = zoo::Plif::default();
    assert_eq!(plif.w0(), 0.0);
    let izhikevich = zoo::Izhikevich::default();
    assert_eq!(izhikevich.b * izhikevich.c, -13.0, "u's initial value");
    let pairs: [(&dyn Neuron, &dyn Neuron, &str, &str, u64); 5] = [
        (&Lif::default(), &lif, Lif::NAME, zoo::Lif::NAME, 2),
        (
            &IntegrateAndFire::default(),
            &zoo::If::default(),
            IntegrateAndFire::NAME,
            zoo::If::NAME,
            3,
        ),
        (&Plif::default(), &plif, Plif::NAME, zoo::Plif::NAME, 4),
        (
            &Izhikevich::default(),
            &izhikevich,
            Izhikevich::NAME,
            zoo::Izhikevich::NAME,
            6,
        ),
        (
            &LeakyIntegrator::default(),
            &zoo::LeakyIntegrator::default(),
            LeakyIntegrator::NAME,
            zoo::LeakyIntegrator::NAME,
            8,
        ),
    ];
    for (mac, zoo, mac_name, zoo_name, seed) in pairs {
        assert_eq!(mac_name, zoo_name);
        check_pair(mac, zoo, seed)?;
    }
    Ok(())
}

/// A negative control: the bit-level comparison notices a different graph (the interpreter
/// takes param values from `Params`, so only the step can differ).
#[test]
#[should_panic(expected = "lif: output 0")]
fn run_both_notices_a_difference() {
    let a = compile(&Lif::default(), Storage::F32).expect("compiles");
    let b = compile(
        &zoo::Lif {
            decay_input: false,
            ..Default::default()
        },
        Storage::F32,
    )
    .expect("compiles");
    let params = Params::<f32>::defaults(&a.neuron, Layout::flat(N));
    let _ = run_both(&a, &b, &params, None, &mut Rng::new(13));
}

/// Param values set on the generated type reach the IR like the zoo's fields do.
#[test]
fn setters_match_zoo_fields() -> R {
    let a = Izhikevich::new().a(0.1).d(2.0).v_peak(25.0);
    let z = zoo::Izhikevich {
        a: 0.1,
        d: 2.0,
        v_peak: 25.0,
        ..Default::default()
    };
    assert_eq!(a.ir()?.to_string(), z.ir()?.to_string());
    let a = Lif::new().tau(3.0).with_surrogate(Surrogate::atan(2.0));
    let z = zoo::Lif {
        tau: 3.0,
        surrogate: Surrogate::atan(2.0),
        ..Default::default()
    };
    check_pair(&a, &z, 9)
}

/// Each surrogate the macro parses is the builder's: the zoo's macro-written neurons and
/// the neurons declared here cover every kind (`custom` has its own test).
#[test]
fn surrogates_match_the_builder() -> R {
    let declared = [
        (zoo::PaperLif::new().ir()?, Surrogate::rect(0.5)),
        (zoo::Alif::new().ir()?, Surrogate::triangle(1.0)),
        (zoo::Eif::new().ir()?, Surrogate::sigmoid(4.0)),
        (Izhikevich::new().ir()?, Surrogate::fast_sigmoid(0.2)),
        (Kitchen::new().ir()?, Surrogate::atan(2.0)),
        (SplitDrive::new().ir()?, Surrogate::piecewise_quadratic(1.0)),
    ];
    for (ir, builder) in declared {
        assert_eq!(ir.graph.surrogates(), [builder], "{}", ir.name);
    }
    // The zoo's macro-written types have the generated API: fields, setters, `surrogate`.
    let lif = zoo::PaperLif::new().threshold(0.5);
    assert_eq!((lif.decay, lif.threshold, lif.rest), (0.2, 0.5, 0.0));
    assert_eq!(lif.surrogate, None);
    assert_eq!(lif.ir()?.params[1].default, 0.5);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// DSL features beyond the zoo.
// ---------------------------------------------------------------------------------------

/// `tanh(x / k) * k`, with `k` a constant.
#[neuron_helper]
fn soft_clip(x: Real, k: f64) -> Real {
    let y = (x / k).tanh() * k;
    y
}

/// The positive and negative parts (a tuple-returning helper, with the `crate` override).
#[neuron_helper(crate = snn_codegen)]
fn parts(x: Real) -> (Real, Real) {
    (x.max(0.0), x.min(0.0))
}

/// Every construct of a step body.
///
/// Second paragraph of the doc.
#[neuron(surrogate = atan(alpha = 2.0))]
pub fn kitchen(
    x: Input,
    v: State,
    #[param(default = 0.9)] decay: Param,
    #[param(default = 0.5, learnable, per_channel)] gain: Param,
) -> (Spike, Real) {
    let h = decay * v + gain * x;
    let r = if 0.5 < h {
        h - 1.0
    } else if h <= -0.5 {
        2 * h
    } else {
        h
    };
    let q = select(h >= 2, h * h, detach(h));
    let m = sigmoid(-h).powf(2) + h.powi(3);
    let f = h.min(1.0).max(-1.0)
        + h.clamp(-0.5, 0.5)
        + h.abs().exp()
        + (1.0 + h * h).ln()
        + (1.0 + h.abs()).sqrt()
        + h.tanh()
        + h.atan();
    let c = soft_clip(h, 2.0);
    let e = select(h == 0, 1, 0) + select(x != 0.25, 1.0, 0.0) + soft_clip(0.5, 1.0);
    let s = spike(h - 1.0);
    let v2 = r + q + m + f + c + e;
    v.set(h * (1.0 - s));
    (s, v2)
}

/// `kitchen`, written with the builder.
fn kitchen_builder() -> Result<NeuronIr, IrError> {
    let b = NeuronBuilder::new("kitchen")
        .doc("Every construct of a step body.\n\nSecond paragraph of the doc.")
        .surrogate(Surrogate::atan(2.0));
    let x = b.input("x");
    let v = b.state("v", 0.0);
    let decay = b.param("decay", 0.9);
    let gain = b.param("gain", ParamDecl::learnable(0.5).per_channel());
    let h = (decay * v + gain * x).named("h");
    let r = b
        .constant(0.5)
        .lt(h)
        .select(h - 1.0, h.le(-0.5).select(2.0 * h, h))
        .named("r");
    let q = h.ge(2.0).select(h * h, h.detach()).named("q");
    let m = ((-h).sigmoid().powf(2.0) + h.powf(3.0)).named("m");
    let f = (h.min(1.0).max(-1.0)
        + h.clamp(-0.5, 0.5)
        + h.abs().exp()
        + (1.0 + h * h).ln()
        + (1.0 + h.abs()).sqrt()
        + h.tanh()
        + h.atan())
    .named("f");
    let c = soft_clip(&b, h, 2.0).named("c");
    let e = (h.eq(0.0).select(1.0, 0.0) + x.ne(0.25).select(1.0, 0.0) + soft_clip(&b, 0.5, 1.0))
        .named("e");
    let s = b.spike(h - 1.0).named("s");
    let v2 = (r + q + m + f + c + e).named("v2");
    v.set(h * (1.0 - s));
    b.output("s", s);
    b.output("v2", v2);
    b.finish()
}

/// `kitchen` computed by hand for one element: (s, v2) per step.
fn kitchen_by_hand(xs: &[f64], decay: f64, gain: f64) -> Vec<(f64, f64)> {
    let mut v = 0.0;
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let soft_clip = |z: f64, k: f64| (z / k).tanh() * k;
    xs.iter()
        .map(|&x| {
            let h = decay * v + gain * x;
            let r = if 0.5 < h {
                h - 1.0
            } else if h <= -0.5 {
                2.0 * h
            } else {
                h
            };
            let q = if h >= 2.0 { h * h } else { h };
            let m = sigmoid(-h).powi(2) + h.powi(3);
            let f = h.clamp(-1.0, 1.0)
                + h.clamp(-0.5, 0.5)
                + h.abs().exp()
                + (1.0 + h * h).ln()
                + (1.0 + h.abs()).sqrt()
                + h.tanh()
                + h.atan();
            let c = soft_clip(h, 2.0);
            let e = f64::from(u8::from(h == 0.0))
                + f64::from(u8::from(x != 0.25))
                + soft_clip(0.5, 1.0);
            let s = if h - 1.0 >= 0.0 { 1.0 } else { 0.0 };
            v = h * (1.0 - s);
            (s, r + q + m + f + c + e)
        })
        .collect()
}

#[test]
fn kitchen_matches_its_builder_twin() -> R {
    let (a, b) = (Kitchen::default().ir()?, kitchen_builder()?);
    assert_eq!(a.to_string(), b.to_string(), "before the passes");
    assert_eq!(a.doc, b.doc);
    let (mut a, mut b) = (a, b);
    a.optimize();
    b.optimize();
    assert_eq!(a.to_string(), b.to_string(), "after the passes");
    let ca = compile(&Kitchen::default(), Storage::F32)?;
    let cb = compile(&kitchen_builder()?, Storage::F32)?;
    assert_eq!(ca.plan, cb.plan);
    assert_eq!(ca.to_string(), cb.to_string());
    Ok(())
}

#[test]
fn kitchen_printed_constructs() -> R {
    let ir = Kitchen::default().ir()?;
    let text = ir.to_string();
    for needle in [
        "h = decay * v + gain * x",
        "select(0.5 < h, h - 1, select(h <= -0.5, 2 * h, h))",
        "select(h >= 2, h * h, detach(h))",
        "pow(sigmoid(-h), 2) + pow(h, 3)",
        "max(min(h, 1), -1) + clamp(h, -0.5, 0.5) + exp(abs(h))",
        "log(1 + h * h)",
        "sqrt(1 + abs(h))",
        "tanh(h)",
        "atan(h)",
        "select(h == 0, 1, 0) + select(x != 0.25, 1, 0)",
        "spike[atan(alpha = 2)](h - 1)",
        "output s = s",
        "output v2 = v2",
        "v <- h * (1 - s)",
    ] {
        assert!(text.contains(needle), "no `{needle}` in:\n{text}");
    }
    Ok(())
}

/// The interpreter, in f64, agrees with the step computed by hand, branch by branch.
#[test]
fn kitchen_matches_hand_computed_values() -> R {
    // Per element: a sequence that visits every branch (h = 0, x = 0.25, h >= 2, h <= -0.5,
    // 0.5 < h, a spike and none).
    let seqs: [[f64; 6]; 4] = [
        [0.0, 0.25, 5.0, -2.0, 1.5, 0.7],
        [0.25, 0.0, -3.0, 4.5, 1.9, -0.2],
        [1.2, 2.1, 0.0, 0.0, 6.0, -1.5],
        [-0.9, 0.25, 0.3, 3.3, -4.0, 2.2],
    ];
    let n = seqs.len();
    let steps = seqs[0].len();
    let mut data = vec![0.0; steps * n];
    for (i, s) in seqs.iter().enumerate() {
        for (t, x) in s.iter().enumerate() {
            data[t * n + i] = *x;
        }
    }
    let x = Seq::new(steps, n, data)?;
    let neuron = Kitchen::new().decay(0.8);
    let r = Reference::new(compile(&neuron, Storage::F64)?);
    // Per-channel gain: one value per element of a flat layer.
    let gains = [0.5, 1.0, 0.75, 1.25];
    let mut params = Params::<f64>::defaults(&neuron.ir()?, Layout::flat(n));
    params.set("gain", gains.to_vec())?;
    let fwd = r.forward(&params, &[x], None, Mode::Inference)?;
    let mut branches = [false; 6];
    for (i, s) in seqs.iter().enumerate() {
        let expected = kitchen_by_hand(s, 0.8, gains[i]);
        for (t, (es, ev)) in expected.iter().enumerate() {
            let (gs, gv) = (
                fwd.outputs[0].data[t * n + i],
                fwd.outputs[1].data[t * n + i],
            );
            assert_eq!(gs, *es, "s at element {i}, step {t}");
            assert!(
                (gv - ev).abs() <= 1e-12 * ev.abs().max(1.0),
                "v2 at element {i}, step {t}: {gv} vs {ev}"
            );
            branches[0] |= *es == 1.0;
            branches[1] |= *es == 0.0;
        }
        // Which branches the hand computation visited.
        let mut v = 0.0;
        for x in s {
            let h = 0.8 * v + gains[i] * x;
            branches[2] |= h == 0.0;
            branches[3] |= h >= 2.0;
            branches[4] |= h <= -0.5;
            branches[5] |= 0.5 < h && h < 2.0;
            v = if h >= 1.0 { 0.0 } else { h };
        }
    }
    assert_eq!(
        branches, [true; 6],
        "spike, no spike, h = 0, h >= 2, h <= -0.5, 0.5 < h < 2"
    );
    Ok(())
}

/// The structure the macro made: outputs, params, per-channel shape, doc.
#[test]
fn kitchen_signature() -> R {
    let ir = Kitchen::default().ir()?;
    assert_eq!(ir.outputs, ["s", "v2"]);
    assert_eq!(ir.output_kind(0), SpikeKind::Binary);
    assert_eq!(ir.output_kind(1), SpikeKind::General);
    assert_eq!(ir.inputs, ["x"]);
    assert_eq!(ir.params.len(), 2);
    assert_eq!(ir.params[0].name, "decay");
    assert_eq!(ir.params[0].shape, ParamShape::Scalar);
    assert!(!ir.params[0].learnable);
    assert_eq!(ir.params[1].name, "gain");
    assert_eq!(ir.params[1].shape, ParamShape::PerChannel);
    assert!(ir.params[1].learnable);
    assert_eq!(ir.params[1].default, 0.5);
    assert_eq!(
        ir.doc,
        "Every construct of a step body.\n\nSecond paragraph of the doc."
    );
    assert!(
        ir.to_string()
            .contains("gain = 0.5 (learnable, per-channel)")
    );

    // A per-channel learnable param gets one gradient per channel.
    let layout = Layout {
        channels: 3,
        inner: 4,
    };
    let r = Reference::new(compile(&Kitchen::default(), Storage::F32)?);
    let params = Params::<f32>::defaults(&ir, layout);
    assert_eq!(params.get("gain").map(<[f32]>::len), Some(3));
    let mut rng = Rng::new(11);
    let x = vec![rng.seq::<f32>(T, N, -0.5, 2.5)];
    let dy = vec![rng.seq(T, N, -1.0, 1.0), rng.seq(T, N, -1.0, 1.0)];
    let fwd = r.forward(&params, &x, None, Mode::Train)?;
    let g = r.backward(&params, &x, None, &fwd, &dy, None)?;
    assert!(g.params[0].is_none(), "decay is fixed");
    let gain = g.params[1].as_ref().ok_or("gain is learnable")?;
    assert_eq!(gain.len(), 3);
    assert!(gain.iter().all(|v| v.is_finite() && *v != 0.0), "{gain:?}");
    Ok(())
}

// `detach`, `select` and free `sigmoid` differentiate as they should. (No doc comment: the
// IR's doc stays empty.)
#[neuron]
fn grads(x: Input) -> Real {
    let o = detach(x) * x + if x > 0 { x * x } else { 3 * x } + sigmoid(x);
    o
}

#[test]
fn detach_select_and_sigmoid_gradients() -> R {
    let xs = [-1.5, -0.25, 0.0, 0.5, 2.0];
    let n = xs.len();
    let r = Reference::new(compile(&Grads::new(), Storage::F64)?);
    let ir = Grads::new().ir()?;
    let params = Params::<f64>::defaults(&ir, Layout::flat(n));
    let x = vec![Seq::new(1, n, xs.to_vec())?];
    let dy = vec![Seq::new(1, n, vec![1.0; n])?];
    let fwd = r.forward(&params, &x, None, Mode::Train)?;
    let g = r.backward(&params, &x, None, &fwd, &dy, None)?;
    for (i, &x) in xs.iter().enumerate() {
        let s = 1.0 / (1.0 + (-x).exp());
        let value = x * x + if x > 0.0 { x * x } else { 3.0 * x } + s;
        // `detach(x) * x` contributes `x`, not `2 * x`.
        let grad = x + if x > 0.0 { 2.0 * x } else { 3.0 } + s * (1.0 - s);
        let (gv, gg) = (fwd.outputs[0].data[i], g.inputs[0].data[i]);
        assert!((gv - value).abs() <= 1e-12, "value at {x}: {gv} vs {value}");
        assert!(
            (gg - grad).abs() <= 1e-12,
            "gradient at {x}: {gg} vs {grad}"
        );
    }
    Ok(())
}

/// A custom surrogate, and the `crate` override.
#[neuron(crate = ::snn::codegen, surrogate = custom(|h| 1.0 / (1.0 + (3.0 * h) * (3.0 * h))))]
fn custom_lif(x: Input, v: State, #[param(default = 0.5)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h * (1.0 - s));
    s
}

#[test]
fn custom_surrogate() -> R {
    let ir = CustomLif::default().ir()?;
    let sur = ir.graph.surrogates();
    assert_eq!(sur.len(), 1);
    for h in [-2.0, -0.5, -0.1, 0.0, 0.1, 0.3, 1.0, 4.0] {
        let expected = 1.0 / (1.0 + (3.0 * h) * (3.0 * h));
        let got = sur[0].derivative(h);
        assert!(
            (got - expected).abs() <= 1e-15,
            "derivative at {h}: {got} vs {expected}"
        );
    }
    // The same as the builder's custom surrogate, and the same neuron as the builder twin.
    let built = Surrogate::custom(|h| 1.0 / (1.0 + (3.0 * h) * (3.0 * h)))?;
    assert_eq!(sur[0], built);
    let b = NeuronBuilder::new("custom_lif").surrogate(built);
    let x = b.input("x");
    let v = b.state("v", 0.0);
    let decay = b.param("decay", 0.5);
    let h = (decay * v + x).named("h");
    let s = b.spike(h - 1.0).named("s");
    v.set(h * (1.0 - s));
    b.output("s", s);
    let twin = b.finish()?;
    assert_eq!(ir.to_string(), twin.to_string());
    let ca = compile(&CustomLif::default(), Storage::F32)?;
    let cb = compile(&twin, Storage::F32)?;
    assert_eq!(ca.to_string(), cb.to_string());
    let params = Params::<f32>::defaults(&ca.neuron, Layout::flat(N));
    run_both(&ca, &cb, &params, None, &mut Rng::new(12))?;
    // `with_surrogate` replaces it.
    let ir = CustomLif::new().with_surrogate(Surrogate::rect(0.5)).ir()?;
    assert_eq!(ir.graph.surrogates(), [Surrogate::rect(0.5)]);
    Ok(())
}

/// The generated type's API.
#[test]
fn generated_type_api() -> R {
    assert_eq!(Kitchen::NAME, "kitchen");
    assert_eq!(Kitchen::default().ir()?.name, "kitchen");
    assert_eq!(Kitchen::new(), Kitchen::default());
    let k = Kitchen::new();
    assert_eq!((k.decay, k.gain), (0.9, 0.5));
    assert_eq!(k.surrogate, None);

    // Setters change the field and the IR's default, and only that.
    let k2 = Kitchen::new().decay(0.5).gain(0.125);
    assert_eq!((k2.decay, k2.gain), (0.5, 0.125));
    assert_ne!(k2, k);
    let ir = k2.ir()?;
    assert_eq!(ir.params[0].default, 0.5);
    assert_eq!(ir.params[1].default, 0.125);
    assert!(ir.params[1].learnable);
    assert_eq!(ir.params[1].shape, ParamShape::PerChannel);
    let base = k.ir()?;
    let strip = |ir: &NeuronIr| {
        ir.to_string()
            .lines()
            .skip(4)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&ir), strip(&base), "the equations do not change");

    // `with_surrogate`.
    assert_eq!(base.graph.surrogates(), [Surrogate::atan(2.0)]);
    let k3 = Kitchen::new().with_surrogate(Surrogate::sigmoid(4.0));
    assert_eq!(k3.surrogate, Some(Surrogate::sigmoid(4.0)));
    assert_ne!(k3, k);
    let ir = k3.ir()?;
    assert_eq!(ir.graph.surrogates(), [Surrogate::sigmoid(4.0)]);
    assert!(ir.to_string().contains("spike[sigmoid(alpha = 4)](h - 1)"));
    // A neuron without a declared surrogate (and without a spike) accepts one too.
    let li = LeakyIntegrator::new().with_surrogate(Surrogate::rect(0.5));
    assert!(
        li.ir()?.graph.surrogates().is_empty(),
        "no spike, no surrogate used"
    );

    // Clone, PartialEq, Debug.
    let c = k3.clone();
    assert_eq!(c, k3);
    let debug = format!("{k2:?}");
    assert!(
        debug.contains("Kitchen") && debug.contains("decay: 0.5") && debug.contains("gain: 0.125"),
        "{debug}"
    );

    // A neuron without doc comments has an empty doc.
    assert_eq!(Grads::new().ir()?.doc, "");
    Ok(())
}

/// `ir`'s outputs after one inference step of one input, `xs` (one value per element), in
/// f64 with the default params.
fn one_step(ir: &NeuronIr, xs: &[f64]) -> Result<Vec<Vec<f64>>, Box<dyn std::error::Error>> {
    let r = Reference::new(compile(ir, Storage::F64)?);
    let params = Params::<f64>::defaults(ir, Layout::flat(xs.len()));
    let x = Seq::new(1, xs.len(), xs.to_vec())?;
    let fwd = r.forward(&params, &[x], None, Mode::Inference)?;
    Ok(fwd.outputs.into_iter().map(|o| o.data).collect())
}

/// A tuple-returning helper, called with the builder (a step cannot destructure a tuple).
#[test]
fn tuple_helper() -> R {
    let b = NeuronBuilder::new("parts");
    let x = b.input("x");
    let (p, n) = parts(&b, x);
    b.output("p", p);
    b.output("n", n);
    let ir = b.finish()?;
    let text = ir.to_string();
    assert!(text.contains("output p = max(x, 0)"), "{text}");
    assert!(text.contains("output n = min(x, 0)"), "{text}");
    let out = one_step(&ir, &[-2.0, 0.0, 3.0])?;
    assert_eq!(out, [[0.0, 0.0, 3.0], [-2.0, 0.0, 0.0]]);
    Ok(())
}

/// A step destructures a tuple-returning helper with `let (a, b) = ..`.
#[neuron(surrogate = piecewise_quadratic(alpha = 1.0))]
fn split_drive(x: Input, v: State) -> (Spike, Real) {
    let (p, n) = parts(x);
    let h = v + p;
    let s = spike(h - 1.0);
    v.set(h * (1.0 - s));
    (s, n)
}

#[test]
fn a_step_destructures_a_tuple_helper() -> R {
    let ir = SplitDrive::new().ir()?;
    let text = ir.to_string();
    assert!(text.contains("p = max(x, 0)"), "{text}");
    assert!(
        text.contains("output n = n") || text.contains("n = min(x, 0)"),
        "{text}"
    );
    let out = one_step(&ir, &[-2.0, 0.5, 3.0])?;
    assert_eq!(out, [[0.0, 0.0, 1.0], [-2.0, 0.0, 0.0]]);
    Ok(())
}
