//! Fused neuron layers on a GPU against the CPU reference interpreter.
//!
//! 1. `gpu_layers_match_the_reference`: every zoo neuron and a two-compartment neuron
//!    declared here with `#[neuron]`, every param learnable and alternately scalar,
//!    per-channel and per-neuron with jittered values; T in {1, 7, 32, 128}; the 4-wide
//!    vector path (3 channels of 4, N = 1032) and the scalar path (7 channels of 3,
//!    N = 1029); f32 storage with atomic and with deterministic param-gradient reduction,
//!    and narrow storage (bf16 io and saves, u8 spikes). Random initial states and
//!    final-state gradients (except at T = 7, which runs from the declared initial states,
//!    so that states initialised from learnable params pass their gradient to the param).
//!    Outputs, saves, final states, input gradients, initial-state gradients and param
//!    gradients are compared, with every output poisoned (0xFF bytes: NaN, or 255 for u8
//!    spikes) before the launch, so that an element the kernel never writes fails.
//! 2. `gpu_chunked_equals_unchunked`: T = 32 run as chunks [0, 11) and [11, 32), states and
//!    state gradients handed across, param gradients accumulated into one tensor: outputs,
//!    saves, final states, input and initial-state gradients equal the whole run's bit for
//!    bit; param gradients agree to 1e-5 of the sum of their terms' magnitudes (below).
//! 3. `gpu_paper_lif_beyond_2_31_element_steps`: T * N > 2^31 (64-bit indexing), narrow
//!    storage: every value of every tensor written, a sample of 2000 elements (the last 500
//!    among them) against the reference, and the param gradients (sums over all 2^31
//!    element-steps, with the atomic and with the deterministic reduction) against the
//!    reference run over all elements on all cores.
//! 4. `gpu_bad_arguments_are_errors`: wrong inputs and params are errors, not panics.
//!
//! Each test prints one line per configuration.
//!
//! # Tolerances
//!
//! The kernels do the interpreter's f32 arithmetic in the interpreter's order (`--fmad=false`
//! keeps products and sums apart), so neurons made of `+ - *` and comparisons (the paper's
//! LIF, ALIF with its triangle surrogate, the leaky integrator) agree bit for bit. Where a
//! neuron calls a transcendental function (`expf` in EIF and in the sigmoid surrogate) or
//! divides (LIF's `/ tau`, the atan and fast-sigmoid surrogates; NVRTC's `--prec-div=false`
//! division is within 2 ulp), the GPU's result differs by a few ulp per operation.
//!
//! - **Divergence.** A few-ulp difference can move a pre-activation across the threshold:
//!   one side spikes, the other does not, and the element's trajectory then legitimately
//!   differs from that step on (and its whole backward pass with it). An element whose spike
//!   output differs anywhere from the reference is *diverged*; at most 0.5% of N may
//!   diverge (the count is printed), and diverged elements are left out of every other
//!   comparison. Only spike flips count: a real-valued output that differs beyond the value
//!   tolerance is a failure, not a divergence. Every GPU value, diverged or not, must still
//!   be written (finite where the reference is finite, and spikes exactly 0 or 1).
//! - **Values** (outputs, saves, final states, input and initial-state gradients) must
//!   satisfy `|gpu - cpu| <= rel * max(|cpu|, 1e-3 * max|cpu over the tensor|)`, with
//!   `rel = 1e-5` in f32 (the bound: relative error at most 1e-5; the floor keeps
//!   values near zero from failing on absolute noise far below the tensor's scale), *or*
//!   `|gpu - cpu| <= 4 * E`, where `E` is the f32 reference's own error on that tensor: the
//!   largest `|f32 - f64|` between the reference run in f32 and the same run in f64 (over
//!   elements that spike alike in both). The second bound is needed because many values are
//!   small results of cancelling larger terms (a gradient summed over later steps with
//!   random-signed `dL/dy`, a membrane just after a reset): their rounding error is a few
//!   ulp of the *terms*, not of the result. Measured: the GPU differs from the CPU by up to
//!   ~3e-4 relative (at the 1e-3 floor) in input and initial-state gradients of LIF, IF,
//!   PLIF, Izhikevich and EIF, and the CPU's own f32 result differs from
//!   its f64 result by as much (up to ~5e-4), so no f32 implementation meets 1e-5 there;
//!   every such GPU difference was within 1.6 E. A real bug (a wrong term, a missed step, an
//!   unwritten element) is far outside both bounds.
//!   In narrow storage a value computed a few ulp apart can round to neighbouring bf16
//!   values, one bf16 step (2^-8 to 2^-7 relative) apart, and the backward pass reads such
//!   saves, so values stored in bf16 and everything the backward computes get `rel = 2^-7`
//!   (same floor, same `4 * E`, with the f64 run rounding to bf16 as the f32 one does);
//!   final states (f32 registers) keep 1e-5.
//! - **Param gradients** are sums over all `T * N` element-steps, in f32 and another order
//!   on the GPU (per thread over time, then over elements, atomics in any order) than the
//!   interpreter's f64 sum. Their rounding error is bounded relative to the sum of the
//!   terms' magnitudes, not to the (possibly cancelling) result: per thread about
//!   `T * 2^-24` (T <= 128), over elements `log2(N) * 2^-24`, about 1e-5 of `sum|c|` in the
//!   worst case. So `|gpu - cpu| <= 1e-4 * max(|cpu|, 0.1 * sum_i |g_i|)` (2^-7 instead of
//!   1e-4 in narrow storage), where `g_i` is element `i`'s own gradient (summed over time),
//!   from a second reference run in which every param is per-element. A diverged element
//!   contributes its own (different) gradient to the GPU's sum, so param gradients are
//!   compared only where no element diverged (otherwise a note is printed). Chunked and
//!   whole GPU runs group the same terms differently: `1e-5 * max(|a|, |b|, sum_i |g_i|)`
//!   (measured: at most 3e-7 of `sum_i |g_i|`, but up to 2e-4 of the value itself, for a
//!   per-channel gradient that cancels).
#![allow(clippy::unwrap_used)]

mod gpu_common;

use std::sync::Arc;
use std::time::Instant;

use gpu_common::{
    Rng, all_learnable, band_spike, device, initial_states, jittered, mix, params_of,
    zoo_with_inputs,
};
use snn_codegen::cuda::{KernelOptions, Reduction};
use snn_codegen::interp::{Forward, Gradients, Params, Real, Reference, Seq};
use snn_codegen::ir::{NeuronIr, ParamShape};
use snn_codegen::{Dtype, Neuron, Storage, compile, zoo};
use snn_codegen::{Layout, Mode};
use snn_dsl::neuron;
use snn_runtime::{
    Device, DeviceTensor, LayerConfig, LayerForward, LayerGradients, NeuronLayer, RuntimeError,
};

/// A neuron that is not in the zoo, declared with `#[neuron]` (with params before and
/// after its states): a leaky dendrite integrates the input and drives, through a coupling
/// learned per channel, a leaky soma that spikes and resets.
#[neuron(crate = snn_codegen, surrogate = atan(alpha = 2.0))]
pub fn two_compartment(
    i: Input,
    #[param(default = 0.3, learnable, per_channel)] coupling: Param,
    #[param(default = 0.5)] dendrite_decay: Param,
    dendrite: State,
    soma: State,
    #[param(default = 0.9)] soma_decay: Param,
    #[param(default = 1.0)] threshold: Param,
) -> Spike {
    let d = dendrite_decay * dendrite + i;
    let h = soma_decay * soma + coupling * d;
    let s = spike(h - threshold);
    dendrite.set(d);
    soma.set(h * (1.0 - s));
    s
}

const F32_REL: f64 = 1e-5;
const BF16_REL: f64 = 1.0 / 128.0;
const FLOOR: f64 = 1e-3;
const PARAM_REL: f64 = 1e-4;
const PARAM_FLOOR: f64 = 0.1;
const MAX_DIVERGED: f64 = 0.005;
const OWN_FACTOR: f64 = 4.0;
const CHUNK_REL: f64 = 1e-5;

const NARROW: Storage = Storage {
    io: Dtype::BF16,
    spikes: Dtype::U8,
    saves: Dtype::BF16,
};

/// 3 channels of 4: N = 1032 is a multiple of 4 (the vector path).
const VECTOR: (Layout, usize) = (
    Layout {
        channels: 3,
        inner: 4,
    },
    86,
);
/// 7 channels of 3: N = 1029 is not a multiple of 4 (the scalar path).
const SCALAR: (Layout, usize) = (
    Layout {
        channels: 7,
        inner: 3,
    },
    49,
);

/// How a layer stores and reduces.
#[derive(Clone, Copy, Debug)]
struct Variant {
    name: &'static str,
    storage: Storage,
    reduction: Reduction,
}

const VARIANTS: [Variant; 3] = [
    Variant {
        name: "f32/atomic",
        storage: Storage::F32,
        reduction: Reduction::Atomic,
    },
    Variant {
        name: "f32/determ",
        storage: Storage::F32,
        reduction: Reduction::Deterministic,
    },
    Variant {
        name: "narrow/atomic",
        storage: NARROW,
        reduction: Reduction::Atomic,
    },
];

impl Variant {
    fn config(&self, layout: Layout) -> LayerConfig {
        LayerConfig {
            storage: self.storage,
            layout,
            options: KernelOptions {
                reduction: self.reduction,
                ..Default::default()
            },
        }
    }
    fn narrow(&self) -> bool {
        self.storage != Storage::F32
    }
}

/// The zoo with its input ranges, the two-compartment neuron (spiking at about a fifth of
/// the steps on these inputs), and a binary output built from spikes (stored in `u8`).
fn neurons() -> Vec<(NeuronIr, (f64, f64))> {
    let mut all = zoo_with_inputs();
    all.push((TwoCompartment::new().ir().unwrap(), (-0.2, 1.2)));
    all.push(band_spike());
    all
}

/// One random problem: params, inputs, states and gradients, as both sides read them.
struct Problem {
    steps: usize,
    n: usize,
    layout: Layout,
    values: Vec<(String, Vec<f32>)>,
    x: Vec<Seq<f32>>,
    init: Option<Vec<Vec<f32>>>,
    dy: Vec<Seq<f32>>,
    dfinal: Option<Vec<Vec<f32>>>,
}

impl Problem {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ir: &NeuronIr,
        range: (f64, f64),
        storage: Storage,
        steps: usize,
        (layout, batch): (Layout, usize),
        with_states: bool,
        seed: u64,
    ) -> Self {
        let n = layout.neurons() * batch;
        let mut rng = Rng::new(seed);
        let values = jittered(ir, layout, &mut rng);
        let x = (0..ir.inputs.len())
            .map(|_| rng.seq(steps, n, range.0, range.1, storage.io))
            .collect();
        let dy = (0..ir.outputs.len())
            .map(|_| rng.seq(steps, n, -1.0, 1.0, storage.io))
            .collect();
        let init = with_states.then(|| initial_states(ir, &values, n, range.1 - range.0, &mut rng));
        let dfinal = with_states.then(|| {
            (0..ir.states.len())
                .map(|_| rng.vec(n, -1.0, 1.0))
                .collect()
        });
        Self {
            steps,
            n,
            layout,
            values,
            x,
            init,
            dy,
            dfinal,
        }
    }
}

impl Problem {
    /// The reference's training forward and backward of this problem with `params`.
    fn reference(
        &self,
        reference: &Reference,
        params: &Params<f32>,
    ) -> (Forward<f32>, Gradients<f32>) {
        let (init, dfinal) = (self.init.as_deref(), self.dfinal.as_deref());
        train(reference, params, &self.x, init, &self.dy, dfinal)
    }
}

/// The reference's training forward and backward (of a problem, or of its f64 twin).
fn train<T: Real>(
    reference: &Reference,
    params: &Params<T>,
    x: &[Seq<T>],
    init: Option<&[Vec<T>]>,
    dy: &[Seq<T>],
    dfinal: Option<&[Vec<T>]>,
) -> (Forward<T>, Gradients<T>) {
    let fwd = reference.forward(params, x, init, Mode::Train).unwrap();
    let grads = reference
        .backward(params, x, init, &fwd, dy, dfinal)
        .unwrap();
    (fwd, grads)
}

/// What the reference computes for a problem.
struct Expected {
    fwd: Forward<f32>,
    grads: Gradients<f32>,
    /// Per learnable param and value: the sum over the elements sharing it of the magnitude
    /// of each element's own gradient.
    grad_scale: Vec<Option<Vec<f64>>>,
    /// The f32 reference's own error: per tensor, the largest `|f32 - f64|` of the
    /// reference run in f32 and in f64 (over the elements that spike alike in both).
    own_error: OwnError,
}

/// Per tensor (in the order of [`Forward`] and [`Gradients`]), the f32 reference's largest
/// absolute difference from the same run in f64.
#[derive(Default)]
struct OwnError {
    outputs: Vec<f64>,
    saves: Vec<f64>,
    final_states: Vec<f64>,
    dx: Vec<f64>,
    dinit: Vec<f64>,
}

/// `Seq<f32>` as `Seq<f64>`.
fn widen(s: &Seq<f32>) -> Seq<f64> {
    Seq::new(s.steps, s.n, s.data.iter().map(|&v| f64::from(v)).collect()).unwrap()
}

fn widen_vec(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// The largest `|a - b|` over the elements (`k % n`) not in `skip`.
fn worst(a: &[f32], b: &[f64], n: usize, skip: &[bool]) -> f64 {
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(k, _)| !skip[k % n])
        .map(|(_, (&a, &b))| (f64::from(a) - b).abs())
        .filter(|d| d.is_finite())
        .fold(0.0, f64::max)
}

/// How much the f32 reference itself differs from an f64 run of the same problem.
fn own_error(
    reference: &Reference,
    p: &Problem,
    fwd: &Forward<f32>,
    grads: &Gradients<f32>,
) -> OwnError {
    let ir = &reference.compiled().neuron;
    let mut params = Params::<f64>::defaults(ir, p.layout);
    for (name, v) in &p.values {
        params.set(name, widen_vec(v)).unwrap();
    }
    let x: Vec<Seq<f64>> = p.x.iter().map(widen).collect();
    let dy: Vec<Seq<f64>> = p.dy.iter().map(widen).collect();
    let init: Option<Vec<Vec<f64>>> = p
        .init
        .as_ref()
        .map(|s| s.iter().map(|v| widen_vec(v)).collect());
    let dfinal: Option<Vec<Vec<f64>>> = p
        .dfinal
        .as_ref()
        .map(|s| s.iter().map(|v| widen_vec(v)).collect());
    let (init, dfinal) = (init.as_deref(), dfinal.as_deref());
    let (f, g) = train(reference, &params, &x, init, &dy, dfinal);
    let n = p.n;
    // Elements whose spikes differ between f32 and f64 (a legitimate flip) tell nothing
    // about rounding.
    let mut skip = vec![false; n];
    for (m, (a, b)) in fwd.outputs.iter().zip(&f.outputs).enumerate() {
        if ir.output_kind(m).is_spike() {
            for (k, (&a, &b)) in a.data.iter().zip(&b.data).enumerate() {
                if f64::from(a) != b {
                    skip[k % n] = true;
                }
            }
        }
    }
    let seqs = |a: &[Seq<f32>], b: &[Seq<f64>]| -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(a, b)| worst(&a.data, &b.data, n, &skip))
            .collect()
    };
    let vecs = |a: &[Vec<f32>], b: &[Vec<f64>]| -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(a, b)| worst(a, b, n, &skip))
            .collect()
    };
    OwnError {
        outputs: seqs(&fwd.outputs, &f.outputs),
        saves: seqs(&fwd.saved, &f.saved),
        final_states: vecs(&fwd.final_states, &f.final_states),
        dx: seqs(&grads.inputs, &g.inputs),
        dinit: vecs(&grads.init_states, &g.init_states),
    }
}

/// The IR with every param per-neuron, so that a run over `Layout::flat(n)` gives each
/// element's own param gradients.
fn per_element(ir: &NeuronIr) -> NeuronIr {
    let mut ir = ir.clone();
    for p in &mut ir.params {
        p.shape = ParamShape::PerNeuron;
    }
    ir
}

fn expected(reference: &Reference, flat: &Reference, p: &Problem) -> Expected {
    let ir = &reference.compiled().neuron;
    let (fwd, grads) = p.reference(reference, &params_of(ir, p.layout, &p.values));

    // The same problem with one param value per element.
    let flat_ir = &flat.compiled().neuron;
    let mut flat_params = Params::<f32>::defaults(flat_ir, Layout::flat(p.n));
    for (spec, (name, v)) in ir.params.iter().zip(&p.values) {
        let each = (0..p.n).map(|i| v[p.layout.index(spec.shape, i)]).collect();
        flat_params.set(name, each).unwrap();
    }
    let (ffwd, fgrads) = p.reference(flat, &flat_params);
    assert_eq!(ffwd.outputs, fwd.outputs, "per-element run: same forward");
    let grad_scale = ir
        .params
        .iter()
        .enumerate()
        .map(|(q, spec)| {
            let (Some(each), Some(want)) = (&fgrads.params[q], &grads.params[q]) else {
                return None;
            };
            let mut sum = vec![0.0f64; want.len()];
            let mut scale = vec![0.0f64; want.len()];
            for (i, g) in each.iter().enumerate() {
                let j = p.layout.index(spec.shape, i);
                sum[j] += f64::from(*g);
                scale[j] += f64::from(g.abs());
            }
            // The per-element run must be the same computation.
            for j in 0..want.len() {
                assert!(
                    (sum[j] - f64::from(want[j])).abs() <= 1e-6 * scale[j] + 1e-30,
                    "per-element run of `{}`: param `{}`[{j}] sums to {}, the grouped run gives {}",
                    ir.name,
                    spec.name,
                    sum[j],
                    want[j]
                );
            }
            Some(scale)
        })
        .collect();
    let own_error = own_error(reference, p, &fwd, &grads);
    Expected {
        fwd,
        grads,
        grad_scale,
        own_error,
    }
}

/// What the GPU computed, downloaded.
struct Got {
    /// Whether the inference forward gave the training forward's outputs and final states.
    inference_matches: bool,
    outputs: Vec<Vec<f32>>,
    saves: Vec<Vec<f32>>,
    final_states: Vec<Vec<f32>>,
    dx: Vec<Vec<f32>>,
    dinit: Vec<Vec<f32>>,
    dparams: Vec<Option<Vec<f32>>>,
}

fn download(ts: &[DeviceTensor]) -> Result<Vec<Vec<f32>>, RuntimeError> {
    ts.iter().map(DeviceTensor::to_f32).collect()
}

fn upload_all(
    dev: &Arc<Device>,
    dtype: Dtype,
    shape: &[usize],
    values: &[&[f32]],
) -> Result<Vec<DeviceTensor>, RuntimeError> {
    values
        .iter()
        .map(|v| DeviceTensor::from_f32(dev, dtype, shape, v))
        .collect()
}

/// Fills what a forward pass writes with 0xFF bytes.
fn poison_forward(f: &mut LayerForward) -> Result<(), RuntimeError> {
    for t in f
        .outputs
        .iter_mut()
        .chain(&mut f.saves)
        .chain(&mut f.final_states)
    {
        t.fill_bytes(0xFF)?;
    }
    Ok(())
}

/// Fills the input and initial-state gradients with 0xFF bytes (not the param gradients,
/// which the backward adds to).
fn poison_backward(g: &mut LayerGradients) -> Result<(), RuntimeError> {
    for t in g.inputs.iter_mut().chain(&mut g.init_states) {
        t.fill_bytes(0xFF)?;
    }
    Ok(())
}

fn refs(ts: &[DeviceTensor]) -> Vec<&DeviceTensor> {
    ts.iter().collect()
}

fn run_gpu(dev: &Arc<Device>, layer: &mut NeuronLayer, p: &Problem) -> Result<Got, RuntimeError> {
    let st = layer.config().storage;
    for (name, v) in &p.values {
        layer.set_param(name, v)?;
    }
    let seq = [p.steps, p.n];
    let x = upload_all(dev, st.io, &seq, &seqs(&p.x))?;
    let dy = upload_all(dev, st.io, &seq, &seqs(&p.dy))?;
    let states = |s: &Option<Vec<Vec<f32>>>| {
        s.as_ref()
            .map(|s| upload_all(dev, Dtype::F32, &[p.n], &slices(s)))
            .transpose()
    };
    let (init, dfinal) = (states(&p.init)?, states(&p.dfinal)?);
    let init = init.as_deref().map(refs);
    let dfinal = dfinal.as_deref().map(refs);

    let mut fwd = layer.alloc_forward(p.steps, p.n, true)?;
    poison_forward(&mut fwd)?;
    layer.forward_into(&refs(&x), init.as_deref(), true, &mut fwd)?;
    let mut g = layer.alloc_backward(p.steps, p.n)?;
    poison_backward(&mut g)?;
    layer.backward_into(
        &refs(&x),
        init.as_deref(),
        &fwd,
        &refs(&dy),
        dfinal.as_deref(),
        &mut g,
    )?;
    // The inference kernel computes the same outputs and final states, bit for bit.
    let mut inf = layer.alloc_forward(p.steps, p.n, false)?;
    poison_forward(&mut inf)?;
    layer.forward_into(&refs(&x), init.as_deref(), false, &mut inf)?;
    let same = |a: &[DeviceTensor], b: &[DeviceTensor]| -> Result<bool, RuntimeError> {
        Ok(bits(a)? == bits(b)?)
    };
    let inference_matches =
        same(&inf.outputs, &fwd.outputs)? && same(&inf.final_states, &fwd.final_states)?;
    Ok(Got {
        inference_matches,
        outputs: download(&fwd.outputs)?,
        saves: download(&fwd.saves)?,
        final_states: download(&fwd.final_states)?,
        dx: download(&g.inputs)?,
        dinit: download(&g.init_states)?,
        dparams: g
            .params
            .iter()
            .map(|t| t.as_ref().map(DeviceTensor::to_f32).transpose())
            .collect::<Result<_, _>>()?,
    })
}

/// Host copies of the tensors' values, as bits (for exact comparisons, NaN included).
fn bits(ts: &[DeviceTensor]) -> Result<Vec<Vec<u32>>, RuntimeError> {
    ts.iter()
        .map(|t| Ok(t.to_f32()?.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

fn seqs(s: &[Seq<f32>]) -> Vec<&[f32]> {
    s.iter().map(|s| s.data.as_slice()).collect()
}

fn slices(v: &[Vec<f32>]) -> Vec<&[f32]> {
    v.iter().map(Vec::as_slice).collect()
}

/// Comparisons of one configuration: failures, and the largest relative error seen.
struct Compare {
    label: String,
    failures: Vec<String>,
    failed: usize,
    max_rel: f64,
    worst: String,
    /// Values beyond the relative tolerance but within the f32 reference's own error, and
    /// the largest ratio of such a difference to that error.
    widened: usize,
    own_ratio: f64,
}

impl Compare {
    fn new(label: String) -> Self {
        Self {
            label,
            failures: Vec::new(),
            failed: 0,
            max_rel: 0.0,
            worst: String::new(),
            widened: 0,
            own_ratio: 0.0,
        }
    }

    fn fail(&mut self, msg: String) {
        self.failed += 1;
        if self.failures.len() < 8 {
            self.failures.push(format!("{}: {msg}", self.label));
        }
    }

    /// Compares a `[T, N]` or `[N]` tensor elementwise (element `k % n`), skipping the
    /// elements marked in `skip` except for the check that every value was written.
    /// `own`: the f32 reference's own error on this tensor (see the module docs).
    #[allow(clippy::too_many_arguments)]
    fn tensor(
        &mut self,
        what: &str,
        gpu: &[f32],
        cpu: &[f32],
        n: usize,
        rel: f64,
        own: f64,
        spikes: bool,
        skip: &[bool],
    ) {
        if gpu.len() != cpu.len() {
            self.fail(format!(
                "{what}: {} values, expected {}",
                gpu.len(),
                cpu.len()
            ));
            return;
        }
        let scale = cpu
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
        for (k, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
            let (t, i) = (k / n, k % n);
            let written = if spikes {
                g == 0.0 || g == 1.0
            } else {
                g.is_finite() || !c.is_finite()
            };
            if !written {
                self.fail(format!(
                    "{what}[t = {t}, i = {i}]: GPU gives {g} (unwritten?), the reference {c}"
                ));
                continue;
            }
            if skip[i] {
                continue;
            }
            if !c.is_finite() {
                if g.is_finite() {
                    self.fail(format!(
                        "{what}[t = {t}, i = {i}]: GPU {g}, the reference {c}"
                    ));
                }
                continue;
            }
            let (g, c) = (f64::from(g), f64::from(c));
            let denom = c.abs().max(FLOOR * scale);
            let diff = (g - c).abs();
            let tol = (rel * denom).max(OWN_FACTOR * own);
            if diff.is_nan() || diff > tol {
                self.fail(format!(
                    "{what}[t = {t}, i = {i}]: GPU {g}, the reference {c} (difference {diff:.3e}, tolerance {tol:.3e}: relative {:.3e}, {OWN_FACTOR} x the f32 reference's own error {own:.3e})",
                    rel * denom
                ));
            } else if diff > rel * denom {
                self.widened += 1;
                self.own_ratio = self.own_ratio.max(diff / own);
            }
            if denom > 0.0 && diff / denom > self.max_rel {
                self.max_rel = diff / denom;
                self.worst = what.to_string();
            }
        }
    }

    /// Compares a param gradient with `|gpu - cpu| <= rel * max(|cpu|, 0.1 * scale)`.
    fn param(&mut self, what: &str, gpu: &[f32], cpu: &[f32], scale: &[f64], rel: f64) {
        for (j, ((&g, &c), &s)) in gpu.iter().zip(cpu).zip(scale).enumerate() {
            let (g, c) = (f64::from(g), f64::from(c));
            let denom = c.abs().max(PARAM_FLOOR * s);
            let diff = (g - c).abs();
            if diff.is_nan() || diff > rel * denom {
                self.fail(format!(
                    "{what}[{j}]: GPU {g}, the reference {c} (difference {diff:.3e}, tolerance {:.3e}, sum of |per-element gradients| {s:.3e})",
                    rel * denom
                ));
            }
            if denom > 0.0 && diff / denom > self.max_rel {
                self.max_rel = diff / denom;
                self.worst = what.to_string();
            }
        }
    }
}

/// Elements whose spike outputs differ anywhere from the reference's.
fn diverged(ir: &NeuronIr, got: &Got, want: &Forward<f32>, n: usize) -> Vec<bool> {
    let mut div = vec![false; n];
    for (m, out) in got.outputs.iter().enumerate() {
        if !ir.output_kind(m).is_spike() {
            continue;
        }
        for (k, (g, c)) in out.iter().zip(&want.outputs[m].data).enumerate() {
            if g != c {
                div[k % n] = true;
            }
        }
    }
    div
}

/// Runs one configuration on the GPU and compares; returns the failures.
fn check(
    dev: &Arc<Device>,
    layer: &mut NeuronLayer,
    variant: &Variant,
    p: &Problem,
    want: &Expected,
) -> Compare {
    let ir = layer.neuron().clone();
    let st = variant.storage;
    let label = format!(
        "{} {} T={} N={} states={}",
        ir.name,
        variant.name,
        p.steps,
        p.n,
        if p.init.is_some() { "given" } else { "default" }
    );
    let mut cmp = Compare::new(label);
    let got = match run_gpu(dev, layer, p) {
        Ok(g) => g,
        Err(e) => {
            cmp.fail(format!("GPU run failed: {e}"));
            return cmp;
        }
    };
    let n = p.n;
    if !got.inference_matches {
        cmp.fail(
            "the inference forward's outputs or final states differ from the training forward's"
                .into(),
        );
    }
    let div = diverged(&ir, &got, &want.fwd, n);
    let ndiv = div.iter().filter(|&&d| d).count();
    if ndiv as f64 > MAX_DIVERGED * n as f64 {
        cmp.fail(format!(
            "{ndiv} of {n} elements diverged (spike flips), more than {}%",
            MAX_DIVERGED * 100.0
        ));
    }
    let narrow = variant.narrow();
    let back_rel = if narrow { BF16_REL } else { F32_REL };
    let dtype_rel = |d: Dtype| if d.holds_f32() { F32_REL } else { BF16_REL };
    for (m, g) in got.outputs.iter().enumerate() {
        let spikes = ir.output_kind(m).is_spike();
        let rel = dtype_rel(st.output(ir.output_kind(m)));
        let what = format!("output `{}`", ir.outputs[m]);
        let own = want.own_error.outputs[m];
        cmp.tensor(
            &what,
            g,
            &want.fwd.outputs[m].data,
            n,
            rel,
            own,
            spikes,
            &div,
        );
    }
    for (k, g) in got.saves.iter().enumerate() {
        let what = format!("save {k}");
        let rel = dtype_rel(st.saves);
        let own = want.own_error.saves[k];
        cmp.tensor(&what, g, &want.fwd.saved[k].data, n, rel, own, false, &div);
    }
    for (j, g) in got.final_states.iter().enumerate() {
        let what = format!("final state `{}`", ir.states[j].name);
        let own = want.own_error.final_states[j];
        cmp.tensor(
            &what,
            g,
            &want.fwd.final_states[j],
            n,
            F32_REL,
            own,
            false,
            &div,
        );
    }
    for (k, g) in got.dx.iter().enumerate() {
        let what = format!("gradient of input `{}`", ir.inputs[k]);
        cmp.tensor(
            &what,
            g,
            &want.grads.inputs[k].data,
            n,
            back_rel,
            want.own_error.dx[k],
            false,
            &div,
        );
    }
    for (j, g) in got.dinit.iter().enumerate() {
        let what = format!("gradient of initial state `{}`", ir.states[j].name);
        cmp.tensor(
            &what,
            g,
            &want.grads.init_states[j],
            n,
            back_rel,
            want.own_error.dinit[j],
            false,
            &div,
        );
    }
    let param_rel = if narrow { BF16_REL } else { PARAM_REL };
    let mut params_note = "params compared";
    if ndiv > 0 {
        params_note = "params NOT compared (diverged elements contribute to the sums)";
    } else {
        for (q, spec) in ir.params.iter().enumerate() {
            match (&got.dparams[q], &want.grads.params[q], &want.grad_scale[q]) {
                (Some(g), Some(c), Some(s)) => {
                    let what = format!("gradient of param `{}` ({})", spec.name, spec.shape);
                    cmp.param(&what, g, c, s, param_rel);
                }
                (None, None, _) => {}
                _ => cmp.fail(format!("param `{}`: gradient presence differs", spec.name)),
            }
        }
    }
    let spikes: f64 = got
        .outputs
        .iter()
        .enumerate()
        .filter(|(m, _)| ir.output_kind(*m).is_spike())
        .map(|(_, o)| o.iter().map(|&v| f64::from(v)).sum::<f64>() / o.len() as f64)
        .sum();
    let widened = if cmp.widened > 0 {
        format!(
            "  {} value(s) within {OWN_FACTOR} x the f32 reference's own error (at most {:.2} x)",
            cmp.widened, cmp.own_ratio
        )
    } else {
        String::new()
    };
    eprintln!(
        "{:<48} spikes {spikes:.3}  max rel err {:.2e} ({})  diverged {ndiv}{widened}  {params_note}{}",
        cmp.label,
        cmp.max_rel,
        if cmp.worst.is_empty() {
            "-"
        } else {
            &cmp.worst
        },
        if cmp.failed > 0 {
            format!("  FAILED ({} mismatches)", cmp.failed)
        } else {
            String::new()
        }
    );
    cmp
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_layers_match_the_reference() {
    let dev = device();
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut configs = 0;
    for (g, (base, range)) in neurons().into_iter().enumerate() {
        let ir = all_learnable(&base);
        for (v, variant) in VARIANTS.iter().enumerate() {
            let st = variant.storage;
            let reference = Reference::new(compile(&ir, st).unwrap());
            let flat = Reference::new(compile(&per_element(&ir), st).unwrap());
            let mut problems = Vec::new();
            for steps in [1, 7, 32, 128] {
                for shape in [VECTOR, SCALAR] {
                    let seed = mix((g * 1000 + v * 100 + steps) as u64 ^ shape.1 as u64);
                    problems.push(Problem::new(&ir, range, st, steps, shape, steps != 7, seed));
                }
            }
            // The reference runs on all cores while this thread builds the layers.
            let (layers, wanted) = std::thread::scope(|s| {
                let handles: Vec<_> = problems
                    .iter()
                    .map(|p| s.spawn(|| expected(&reference, &flat, p)))
                    .collect();
                let layers: Vec<Result<NeuronLayer, RuntimeError>> = [VECTOR, SCALAR]
                    .iter()
                    .map(|(layout, _)| NeuronLayer::new(&dev, &ir, variant.config(*layout)))
                    .collect();
                let wanted: Vec<Expected> =
                    handles.into_iter().map(|h| h.join().unwrap()).collect();
                (layers, wanted)
            });
            let mut layers: Vec<NeuronLayer> = match layers.into_iter().collect() {
                Ok(l) => l,
                Err(e) => {
                    failures.push(format!(
                        "{} {}: building the layer: {e}",
                        ir.name, variant.name
                    ));
                    continue;
                }
            };
            for (p, want) in problems.iter().zip(&wanted) {
                let layer = if p.layout == VECTOR.0 {
                    &mut layers[0]
                } else {
                    &mut layers[1]
                };
                configs += 1;
                failures.extend(check(&dev, layer, variant, p, want).failures);
            }
        }
    }
    eprintln!(
        "{configs} configurations in {:.1} s; kernel cache: {:?}",
        start.elapsed().as_secs_f64(),
        dev.cache.stats()
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_chunked_equals_unchunked() {
    let dev = device();
    const STEPS: usize = 32;
    const SPLIT: usize = 11;
    let mut failures = Vec::new();
    for (g, (base, range)) in zoo_with_inputs().into_iter().enumerate() {
        let ir = all_learnable(&base);
        // The reference only gives the scale of the param gradients' terms (see below).
        let reference = Reference::new(compile(&ir, Storage::F32).unwrap());
        let flat = Reference::new(compile(&per_element(&ir), Storage::F32).unwrap());
        for reduction in [Reduction::Atomic, Reduction::Deterministic] {
            for shape in [VECTOR, SCALAR] {
                let (layout, n) = (shape.0, shape.0.neurons() * shape.1);
                let label = format!("{} {reduction:?} N={n}", ir.name);
                let seed = mix(g as u64 * 31 + n as u64);
                let p = Problem::new(&ir, range, Storage::F32, STEPS, shape, false, seed);
                let want = expected(&reference, &flat, &p);
                let config = LayerConfig {
                    storage: Storage::F32,
                    layout,
                    options: KernelOptions {
                        reduction,
                        ..Default::default()
                    },
                };
                let mut layer = NeuronLayer::new(&dev, &ir, config).unwrap();
                for (name, v) in &p.values {
                    layer.set_param(name, v).unwrap();
                }
                let (x, dy) = (&p.x, &p.dy);
                let upload = |s: &[Seq<f32>], from: usize, to: usize| -> Vec<DeviceTensor> {
                    s.iter()
                        .map(|s| {
                            let part = s.steps(from, to);
                            DeviceTensor::from_f32(&dev, Dtype::F32, &[to - from, n], &part.data)
                                .unwrap()
                        })
                        .collect()
                };

                // Whole.
                let (xw, dyw) = (upload(x, 0, STEPS), upload(dy, 0, STEPS));
                let mut fw = layer.alloc_forward(STEPS, n, true).unwrap();
                poison_forward(&mut fw).unwrap();
                layer.forward_into(&refs(&xw), None, true, &mut fw).unwrap();
                let mut gw = layer.alloc_backward(STEPS, n).unwrap();
                poison_backward(&mut gw).unwrap();
                layer
                    .backward_into(&refs(&xw), None, &fw, &refs(&dyw), None, &mut gw)
                    .unwrap();

                // Chunks: forward in order, each from the last one's final states.
                let (x1, dy1) = (upload(x, 0, SPLIT), upload(dy, 0, SPLIT));
                let (x2, dy2) = (upload(x, SPLIT, STEPS), upload(dy, SPLIT, STEPS));
                let mut f1 = layer.alloc_forward(SPLIT, n, true).unwrap();
                poison_forward(&mut f1).unwrap();
                layer.forward_into(&refs(&x1), None, true, &mut f1).unwrap();
                let init2 = refs(&f1.final_states);
                let mut f2 = layer.alloc_forward(STEPS - SPLIT, n, true).unwrap();
                poison_forward(&mut f2).unwrap();
                layer
                    .forward_into(&refs(&x2), Some(&init2), true, &mut f2)
                    .unwrap();
                // Backward in reverse: the later chunk's initial-state gradients are the
                // earlier chunk's final-state gradients; param gradients accumulate in the
                // same tensors (moved from one chunk's gradients to the next, since the
                // input-gradient tensors of chunks of different lengths differ in shape).
                let mut g2 = layer.alloc_backward(STEPS - SPLIT, n).unwrap();
                poison_backward(&mut g2).unwrap();
                layer
                    .backward_into(&refs(&x2), Some(&init2), &f2, &refs(&dy2), None, &mut g2)
                    .unwrap();
                let mut g1 = layer.alloc_backward(SPLIT, n).unwrap();
                poison_backward(&mut g1).unwrap();
                g1.params = std::mem::take(&mut g2.params);
                let dfinal1 = refs(&g2.init_states);
                layer
                    .backward_into(&refs(&x1), None, &f1, &refs(&dy1), Some(&dfinal1), &mut g1)
                    .unwrap();

                let b = |ts: &[DeviceTensor]| bits(ts).unwrap();
                let mut same = |what: &str, got: Vec<Vec<u32>>, want: Vec<Vec<u32>>| {
                    if let Some(msg) = first_difference(&got, &want, n) {
                        failures.push(format!("{label}: chunked {what} differ: {msg}"));
                    }
                };
                same(
                    "outputs",
                    joined(b(&f1.outputs), b(&f2.outputs)),
                    b(&fw.outputs),
                );
                same("saves", joined(b(&f1.saves), b(&f2.saves)), b(&fw.saves));
                same("final states", b(&f2.final_states), b(&fw.final_states));
                same(
                    "input gradients",
                    joined(b(&g1.inputs), b(&g2.inputs)),
                    b(&gw.inputs),
                );
                same(
                    "initial-state gradients",
                    b(&g1.init_states),
                    b(&gw.init_states),
                );
                // Chunked and whole sum the same terms in another grouping (and the atomics
                // in any order): compared relative to the sum of the terms' magnitudes, as in
                // `gpu_layers_match_the_reference`; and both against the reference.
                let (mut max_rel, mut max_scaled) = (0.0f64, 0.0f64);
                for (q, spec) in ir.params.iter().enumerate() {
                    let (Some(a), Some(b), Some(c), Some(scale)) = (
                        &g1.params[q],
                        &gw.params[q],
                        &want.grads.params[q],
                        &want.grad_scale[q],
                    ) else {
                        panic!("{label}: param `{}` has no gradient", spec.name);
                    };
                    let (a, b) = (a.to_f32().unwrap(), b.to_f32().unwrap());
                    for (j, ((&a, &b), &s)) in a.iter().zip(&b).zip(scale).enumerate() {
                        let (a, b) = (f64::from(a), f64::from(b));
                        let diff = (a - b).abs();
                        let tol = CHUNK_REL * a.abs().max(b.abs()).max(s);
                        if diff.is_nan() || diff > tol {
                            failures.push(format!(
                                "{label}: gradient of `{}`[{j}]: chunked {a}, unchunked {b} (difference {diff:.3e}, tolerance {tol:.3e}, sum of |per-element gradients| {s:.3e})",
                                spec.name
                            ));
                        }
                        if a.abs().max(b.abs()) > 0.0 {
                            max_rel = max_rel.max(diff / a.abs().max(b.abs()));
                        }
                        if s > 0.0 {
                            max_scaled = max_scaled.max(diff / s);
                        }
                        let c = f64::from(c[j]);
                        let ctol = PARAM_REL * c.abs().max(PARAM_FLOOR * s);
                        for (what, v) in [("chunked", a), ("whole", b)] {
                            if (v - c).abs().is_nan() || (v - c).abs() > ctol {
                                failures.push(format!(
                                    "{label}: gradient of `{}`[{j}]: {what} {v}, the reference {c} (tolerance {ctol:.3e})",
                                    spec.name
                                ));
                            }
                        }
                    }
                }
                eprintln!(
                    "{label:<40} chunked == whole (bit for bit); param gradients: max diff {max_rel:.2e} relative, {max_scaled:.2e} of the sum of |per-element gradients|"
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Joins per-tensor values of two chunks along time.
fn joined(a: Vec<Vec<u32>>, b: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
    a.into_iter()
        .zip(b)
        .map(|(mut a, b)| {
            a.extend(b);
            a
        })
        .collect()
}

/// Where two lists of tensors (as bits, element `k % n` at step `k / n`) first differ.
fn first_difference(got: &[Vec<u32>], want: &[Vec<u32>], n: usize) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{} tensors, expected {}", got.len(), want.len()));
    }
    for (j, (g, w)) in got.iter().zip(want).enumerate() {
        if g.len() != w.len() {
            return Some(format!(
                "tensor {j}: {} values, expected {}",
                g.len(),
                w.len()
            ));
        }
        let differing = g.iter().zip(w).filter(|(a, b)| a != b).count();
        if let Some(k) = g.iter().zip(w).position(|(a, b)| a != b) {
            return Some(format!(
                "tensor {j}: {differing} value(s) differ, first at t = {}, i = {}: {} vs {}",
                k / n,
                k % n,
                f32::from_bits(g[k]),
                f32::from_bits(w[k])
            ));
        }
    }
    None
}

/// `x` of the large test at flat index `k = t * N + i`: a multiple of 1/512 in [0, 0.5),
/// exact in bf16.
fn big_x(k: usize) -> f32 {
    (mix(k as u64 ^ 0x5EED) >> 56) as f32 / 512.0
}

/// `dL/dy` of the large test: a multiple of 1/128 in [-1, 1), exact in bf16.
fn big_dy(k: usize) -> f32 {
    ((mix(k as u64 ^ 0xD1D1) >> 56) as f32 - 128.0) / 128.0
}

/// `[T, N]` values `f(t * N + i)`, filled on all cores.
fn generate(steps: usize, n: usize, f: fn(usize) -> f32) -> Vec<f32> {
    let mut data = vec![0.0f32; steps * n];
    let threads = std::thread::available_parallelism().map_or(4, |p| p.get());
    let chunk = data.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (c, part) in data.chunks_mut(chunk).enumerate() {
            s.spawn(move || {
                for (j, v) in part.iter_mut().enumerate() {
                    *v = f(c * chunk + j);
                }
            });
        }
    });
    data
}

/// `[T, sample]`: the columns `idx` of a `[T, N]` tensor.
fn gather(all: &[f32], steps: usize, n: usize, idx: &[usize]) -> Vec<f32> {
    (0..steps)
        .flat_map(|t| idx.iter().map(move |&i| all[t * n + i]))
        .collect()
}

/// A sampled tensor of the large test: what it is, the GPU's values, the reference's, the
/// relative tolerance, and whether it holds spikes.
type Sampled<'a> = (&'a str, &'a [f32], &'a [f32], f64, bool);

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_paper_lif_beyond_2_31_element_steps() {
    let dev = device();
    const STEPS: usize = 16;
    const N: usize = (1 << 27) + 12;
    const { assert!(STEPS * N > 1 << 31) };
    let start = Instant::now();
    let layout = Layout::flat(4);
    // Every param learnable (and scalar), so that the backward also sums over all 2^31
    // element-steps.
    let mut ir = zoo::PaperLif::default().ir().unwrap();
    for p in &mut ir.params {
        p.learnable = true;
    }
    let config = LayerConfig {
        storage: NARROW,
        layout,
        options: KernelOptions::default(),
    };
    let layer = NeuronLayer::new(&dev, &ir, config).unwrap();
    let lap = |what: &str| eprintln!("  {:6.1} s  {what}", start.elapsed().as_secs_f64());
    let seq = [STEPS, N];
    let x = {
        let host = generate(STEPS, N, big_x);
        lap("generated x");
        DeviceTensor::from_f32(&dev, NARROW.io, &seq, &host).unwrap()
    };
    lap("uploaded x");
    let mut fwd = layer.alloc_forward(STEPS, N, true).unwrap();
    poison_forward(&mut fwd).unwrap();
    layer.forward_into(&[&x], None, true, &mut fwd).unwrap();
    let dy = {
        let host = generate(STEPS, N, big_dy);
        DeviceTensor::from_f32(&dev, NARROW.io, &seq, &host).unwrap()
    };
    let mut g = layer.alloc_backward(STEPS, N).unwrap();
    poison_backward(&mut g).unwrap();
    layer
        .backward_into(&[&x], None, &fwd, &[&dy], None, &mut g)
        .unwrap();
    dev.synchronize().unwrap();
    lap(&format!(
        "T = {STEPS}, N = {N} (T * N = {}): uploaded dL/dy, ran forward and backward",
        STEPS * N
    ));
    // The same backward with the deterministic reduction (per-element partials, then a
    // fixed-order reduction over 2^27 of them); only its param gradients are checked.
    let deterministic: Vec<f32> = {
        let config = LayerConfig {
            options: KernelOptions {
                reduction: Reduction::Deterministic,
                ..Default::default()
            },
            ..config
        };
        let det = NeuronLayer::new(&dev, &ir, config).unwrap();
        let mut g = det.alloc_backward(STEPS, N).unwrap();
        poison_backward(&mut g).unwrap();
        det.backward_into(&[&x], None, &fwd, &[&dy], None, &mut g)
            .unwrap();
        g.params
            .iter()
            .map(|t| t.as_ref().unwrap().to_f32().unwrap()[0])
            .collect()
    };
    lap("ran the backward with the deterministic reduction");
    drop((x, dy));

    // 1500 random elements and the last 500 (whose late steps sit past index 2^31).
    let mut rng = Rng::new(2026);
    let mut idx: Vec<usize> = (0..1500).map(|_| rng.below(N - 500)).collect();
    idx.extend(N - 500..N);
    let m = idx.len();
    assert!((STEPS - 1) * N + idx[m - 1] > 1 << 31);

    // Download each [T, N] tensor once, check that every value was written, keep the sample.
    let sample = |what: &str, t: &DeviceTensor, spikes: bool| -> Vec<f32> {
        let all = t.to_f32().unwrap();
        let bad = if spikes {
            all.iter().position(|&v| v != 0.0 && v != 1.0)
        } else {
            all.iter().position(|v| !v.is_finite())
        };
        if let Some(k) = bad {
            panic!(
                "{what}[t = {}, i = {}] = {} was not written",
                k / N,
                k % N,
                all[k]
            );
        }
        let s = if all.len() == N {
            idx.iter().map(|&i| all[i]).collect()
        } else {
            gather(&all, STEPS, N, &idx)
        };
        lap(&format!(
            "{what}: downloaded, all {} values written",
            all.len()
        ));
        s
    };
    let out = sample("output", &fwd.outputs[0], true);
    let saves: Vec<Vec<f32>> = fwd.saves.iter().map(|t| sample("save", t, false)).collect();
    let finals: Vec<Vec<f32>> = fwd
        .final_states
        .iter()
        .map(|t| sample("final state", t, false))
        .collect();
    let dx = sample("input gradient", &g.inputs[0], false);
    lap("downloaded");
    let dinit: Vec<Vec<f32>> = g
        .init_states
        .iter()
        .map(|t| sample("initial-state gradient", t, false))
        .collect();
    drop(fwd);
    let dparams: Vec<f32> = g
        .params
        .iter()
        .map(|t| t.as_ref().unwrap().to_f32().unwrap()[0])
        .collect();
    drop(g);

    // The reference on the sampled elements (independent elements, scalar params).
    let reference = Reference::new(compile(&ir, NARROW).unwrap());
    let params = Params::<f32>::defaults(&ir, Layout::flat(1));
    let column = |f: fn(usize) -> f32| -> Seq<f32> {
        let data = (0..STEPS)
            .flat_map(|t| idx.iter().map(move |&i| f(t * N + i)))
            .collect();
        Seq::new(STEPS, m, data).unwrap()
    };
    let xs = vec![column(big_x)];
    let want = reference.forward(&params, &xs, None, Mode::Train).unwrap();
    let wg = reference
        .backward(&params, &xs, None, &want, &[column(big_dy)], None)
        .unwrap();
    let div = {
        let mut d = vec![false; m];
        for (k, (a, b)) in out.iter().zip(&want.outputs[0].data).enumerate() {
            if a != b {
                d[k % m] = true;
            }
        }
        d
    };
    let ndiv = div.iter().filter(|&&d| d).count();
    let mut cmp = Compare::new(format!("paper_lif narrow T={STEPS} N={N} (sample of {m})"));
    let mut tensors: Vec<Sampled> = vec![("output", &out, &want.outputs[0].data, 0.0, true)];
    for (s, w) in saves.iter().zip(&want.saved) {
        tensors.push(("save", s, &w.data, BF16_REL, false));
    }
    for (s, w) in finals.iter().zip(&want.final_states) {
        tensors.push(("final state", s, w, F32_REL, false));
    }
    tensors.push(("input gradient", &dx, &wg.inputs[0].data, BF16_REL, false));
    for (s, w) in dinit.iter().zip(&wg.init_states) {
        tensors.push(("initial-state gradient", s, w, BF16_REL, false));
    }
    for (what, got, want, rel, spikes) in tensors {
        cmp.tensor(what, got, want, m, rel, 0.0, spikes, &div);
    }
    eprintln!(
        "{}: max rel err {:.2e} ({}), diverged {ndiv}",
        cmp.label, cmp.max_rel, cmp.worst
    );
    assert!(
        ndiv as f64 <= MAX_DIVERGED * m as f64,
        "{ndiv} of {m} sampled elements diverged"
    );
    assert!(
        cmp.failures.is_empty(),
        "{} mismatches:\n{}",
        cmp.failed,
        cmp.failures.join("\n")
    );

    // The param gradients sum over every element: the reference over all N elements, in
    // blocks of elements on all cores (each element's own gradient from a per-element run,
    // for the sum of magnitudes that bounds the GPU's f32 rounding).
    lap("sample compared");
    let flat = Reference::new(compile(&per_element(&ir), NARROW).unwrap());
    let block = 1 << 16;
    let blocks = N.div_ceil(block);
    let threads = std::thread::available_parallelism().map_or(4, |p| p.get());
    let nparams = ir.params.len();
    let sums = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                let flat = &flat;
                s.spawn(move || {
                    let mut acc = vec![(0.0f64, 0.0f64); nparams];
                    for b in (w..blocks).step_by(threads) {
                        let (lo, hi) = (b * block, ((b + 1) * block).min(N));
                        let len = hi - lo;
                        let col = |f: fn(usize) -> f32| {
                            let data = (0..STEPS)
                                .flat_map(|t| (lo..hi).map(move |i| f(t * N + i)))
                                .collect();
                            Seq::new(STEPS, len, data).unwrap()
                        };
                        let params =
                            Params::<f32>::defaults(&flat.compiled().neuron, Layout::flat(len));
                        let xs = vec![col(big_x)];
                        let f = flat.forward(&params, &xs, None, Mode::Train).unwrap();
                        let g = flat
                            .backward(&params, &xs, None, &f, &[col(big_dy)], None)
                            .unwrap();
                        for (q, a) in acc.iter_mut().enumerate() {
                            for v in g.params[q].as_ref().unwrap() {
                                a.0 += f64::from(*v);
                                a.1 += f64::from(v.abs());
                            }
                        }
                    }
                    acc
                })
            })
            .collect();
        let mut total = vec![(0.0f64, 0.0f64); nparams];
        for h in handles {
            for (t, a) in total.iter_mut().zip(h.join().unwrap()) {
                t.0 += a.0;
                t.1 += a.1;
            }
        }
        total
    });
    for (q, spec) in ir.params.iter().enumerate() {
        let (want, scale) = sums[q];
        // As in `gpu_layers_match_the_reference`: relative to the larger of the result and a
        // tenth of the sum of the terms' magnitudes.
        let tol = PARAM_REL * want.abs().max(PARAM_FLOOR * scale);
        for (how, got) in [("atomic", dparams[q]), ("deterministic", deterministic[q])] {
            let got = f64::from(got);
            eprintln!(
                "  gradient of `{}` ({how}): GPU {got}, reference {want} (difference {:.2e}, tolerance {tol:.2e}; sum of |per-element| {scale:.3e})",
                spec.name,
                (got - want).abs()
            );
            assert!(
                (got - want).abs() <= tol,
                "gradient of `{}` over all {N} elements ({how} reduction): GPU {got}, reference {want} (tolerance {tol:.3e})",
                spec.name
            );
        }
    }
    lap("reference param gradients over all elements compared; done");
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_bad_arguments_are_errors() {
    let dev = device();
    let (layout, batch, steps) = (VECTOR.0, 2, 5);
    let n = layout.neurons() * batch;
    let lif = zoo::PaperLif::default();
    let mut layer = NeuronLayer::new(&dev, &lif, LayerConfig::new(layout)).unwrap();
    let t = |d: Dtype, shape: &[usize]| DeviceTensor::zeros(&dev, d, shape).unwrap();
    let x = t(Dtype::F32, &[steps, n]);
    let dy = t(Dtype::F32, &[steps, n]);
    let expect_shape_error = |what: &str, r: Result<(), RuntimeError>| match r {
        Err(
            e @ (RuntimeError::Invalid { .. }
            | RuntimeError::Tensor { .. }
            | RuntimeError::Overlap { .. }
            | RuntimeError::Order(_)),
        ) => eprintln!("{what}: {e}"),
        other => panic!("{what}: expected an argument error, got {other:?}"),
    };
    let fwd = |inputs: &[&DeviceTensor], init: Option<&[&DeviceTensor]>| {
        layer.forward(inputs, init, true).map(|_| ())
    };

    expect_shape_error("no inputs", fwd(&[], None));
    expect_shape_error("two inputs", fwd(&[&x, &x], None));
    expect_shape_error(
        "a bf16 input to an f32 layer",
        fwd(&[&t(Dtype::BF16, &[steps, n])], None),
    );
    expect_shape_error("a 1-D input", fwd(&[&t(Dtype::F32, &[steps * n])], None));
    expect_shape_error(
        "a 3-D input",
        fwd(&[&t(Dtype::F32, &[steps, n / 2, 2])], None),
    );
    expect_shape_error(
        "N not a multiple of the layout",
        fwd(&[&t(Dtype::F32, &[steps, n + 1])], None),
    );
    let s = t(Dtype::F32, &[n]);
    expect_shape_error("one initial state of two", fwd(&[&x], Some(&[&s])));
    expect_shape_error(
        "initial states of the wrong length",
        fwd(&[&x], Some(&[&t(Dtype::F32, &[n + 12]), &s])),
    );
    expect_shape_error(
        "bf16 initial states",
        fwd(&[&x], Some(&[&t(Dtype::BF16, &[n]), &s])),
    );
    let mut small = layer.alloc_forward(steps - 1, n, true).unwrap();
    expect_shape_error(
        "forward_into tensors of another T",
        layer.forward_into(&[&x], None, true, &mut small),
    );
    let mut inference_sized = layer.alloc_forward(steps, n, false).unwrap();
    expect_shape_error(
        "a training forward into an inference allocation (no saves)",
        layer.forward_into(&[&x], None, true, &mut inference_sized),
    );

    let inference = layer.forward(&[&x], None, false).unwrap();
    assert!(inference.saves.is_empty());
    expect_shape_error(
        "backward after an inference forward",
        layer
            .backward(&[&x], None, &inference, &[&dy], None)
            .map(|_| ()),
    );
    let train = layer.forward(&[&x], None, true).unwrap();
    expect_shape_error(
        "backward without output gradients",
        layer.backward(&[&x], None, &train, &[], None).map(|_| ()),
    );
    expect_shape_error(
        "backward with output gradients of another T",
        layer
            .backward(
                &[&x],
                None,
                &train,
                &[&t(Dtype::F32, &[steps + 1, n])],
                None,
            )
            .map(|_| ()),
    );
    expect_shape_error(
        "backward with bf16 output gradients",
        layer
            .backward(&[&x], None, &train, &[&t(Dtype::BF16, &[steps, n])], None)
            .map(|_| ()),
    );
    expect_shape_error(
        "backward with one final-state gradient of two",
        layer
            .backward(&[&x], None, &train, &[&dy], Some(&[&s]))
            .map(|_| ()),
    );
    let mut small_g = layer.alloc_backward(steps - 1, n).unwrap();
    expect_shape_error(
        "backward_into tensors of another T",
        layer.backward_into(&[&x], None, &train, &[&dy], None, &mut small_g),
    );

    expect_shape_error(
        "set_param with an unknown name",
        layer.set_param("tau", &[1.0]),
    );
    expect_shape_error(
        "set_param with two values for a scalar",
        layer.set_param("decay", &[0.1, 0.2]),
    );
    expect_shape_error("set_param with no values", layer.set_param("decay", &[]));
    let per_channel = {
        let mut ir = lif.ir().unwrap();
        ir.params[0].shape = ParamShape::PerChannel;
        ir
    };
    let mut pc = NeuronLayer::new(&dev, &per_channel, LayerConfig::new(layout)).unwrap();
    expect_shape_error(
        "set_param with one value for a per-channel param",
        pc.set_param("decay", &[0.1]),
    );
    pc.set_param("decay", &[0.1, 0.2, 0.3]).unwrap();
    assert_eq!(pc.param("decay"), Some(&[0.1f32, 0.2, 0.3][..]));
    assert_eq!(layer.param("decay"), Some(&[0.2f32][..]));

    // After all that, the layer still works.
    let out = layer.forward(&[&x], None, true).unwrap();
    assert_eq!(out.outputs[0].to_f32().unwrap(), vec![0.0; steps * n]);
}
