//! Helpers shared by the integration tests: a seeded generator and random problems.
#![allow(dead_code, clippy::unwrap_used)]

mod zoo_support;

#[allow(unused_imports)] // Each test binary uses part of it.
pub use zoo_support::{all_learnable, band_spike, zoo_with_inputs};

use rand_xoshiro::SplitMix64;
use rand_xoshiro::rand_core::{Rng as _, SeedableRng};
use snn_codegen::Layout;
use snn_codegen::interp::{Params, Real, Seq};
use snn_codegen::ir::NeuronIr;
use snn_codegen::{Neuron, zoo};

/// Seeded random numbers for tests: SplitMix64 (`rand_xoshiro`) with the draws they need.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::seed_from_u64(seed))
    }
    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn seq<T: Real>(&mut self, steps: usize, n: usize, lo: f64, hi: f64) -> Seq<T> {
        let data = (0..steps * n)
            .map(|_| T::from_f64(self.uniform(lo, hi)))
            .collect();
        Seq::new(steps, n, data).unwrap()
    }
    pub fn vec<T: Real>(&mut self, n: usize, lo: f64, hi: f64) -> Vec<T> {
        (0..n).map(|_| T::from_f64(self.uniform(lo, hi))).collect()
    }
}

/// A layout of 3 channels of 4, so that per-channel and per-neuron params differ.
pub const LAYOUT: Layout = Layout {
    channels: 3,
    inner: 4,
};

/// Defaults perturbed by up to 5%, so that per-channel values differ.
pub fn jittered_params<T: Real>(ir: &NeuronIr, rng: &mut Rng) -> Params<T> {
    jittered_params_for(ir, LAYOUT, rng)
}

/// [`jittered_params`] for another layout.
pub fn jittered_params_for<T: Real>(ir: &NeuronIr, layout: Layout, rng: &mut Rng) -> Params<T> {
    let mut params = Params::<T>::defaults(ir, layout);
    for spec in &ir.params {
        let len = params.get(&spec.name).unwrap().len();
        let v = (0..len)
            .map(|_| T::from_f64(spec.default * rng.uniform(0.95, 1.05)))
            .collect();
        params.set(&spec.name, v).unwrap();
    }
    params
}

/// Initial states near the declared ones.
pub fn initial_states<T: Real>(
    ir: &NeuronIr,
    params: &Params<T>,
    n: usize,
    scale: f64,
    rng: &mut Rng,
) -> Vec<Vec<T>> {
    ir.states
        .iter()
        .map(|s| {
            let base = match s.init {
                snn_codegen::Init::Const(c) => c,
                snn_codegen::Init::Param(p) => {
                    params.get(&ir.params[p as usize].name).unwrap()[0].value()
                }
            };
            (0..n)
                .map(|_| T::from_f64(base + scale * rng.uniform(-0.1, 0.1)))
                .collect()
        })
        .collect()
}

/// `|a - b|` within `rel` of the larger magnitude, or of `floor` for values near zero.
pub fn assert_close(what: &str, a: f64, b: f64, rel: f64, floor: f64) {
    let tol = rel * a.abs().max(b.abs()).max(floor);
    assert!(
        (a - b).abs() <= tol && a.is_finite() == b.is_finite(),
        "{what}: {a} vs {b} (difference {}, tolerance {tol})",
        (a - b).abs()
    );
}

/// SpikingJelly's LIF with each kind of surrogate (shape parameters chosen so that the
/// surrogates' primitives stay bounded), to exercise every surrogate's derivative, and
/// with a detached reset.
pub fn surrogate_variants() -> Vec<(NeuronIr, (f64, f64))> {
    use snn_codegen::Surrogate;
    let custom = Surrogate::custom(|h| 1.0 / (1.0 + (3.0 * h) * (3.0 * h))).unwrap();
    [
        ("sigmoid", Surrogate::sigmoid(4.0)),
        ("atan", Surrogate::atan(2.0)),
        ("rect", Surrogate::rect(0.5)),
        ("triangle", Surrogate::triangle(1.0)),
        ("fast_sigmoid", Surrogate::fast_sigmoid(10.0)),
        ("piecewise_quadratic", Surrogate::piecewise_quadratic(1.0)),
        ("custom", custom),
    ]
    .into_iter()
    .map(|(name, surrogate)| {
        let mut ir = zoo::Lif {
            surrogate,
            ..Default::default()
        }
        .ir()
        .unwrap();
        ir.name = format!("lif_{name}");
        (ir, (-0.2, 1.2))
    })
    .chain(std::iter::once({
        let mut ir = zoo::Lif {
            detach_reset: true,
            ..Default::default()
        }
        .ir()
        .unwrap();
        ir.name = "lif_detach_reset".into();
        (ir, (-0.2, 1.2))
    }))
    .collect()
}
