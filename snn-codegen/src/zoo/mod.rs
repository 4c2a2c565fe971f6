//! The neuron zoo: common neuron models, the reference set that tests, benchmarks and the
//! CLI iterate over.
//!
//! Each is written once. With `#[neuron]` ([`PaperLif`], [`Alif`], [`Eif`]) where the macro
//! expresses it: its fields are the params' values, `Default` the source's published
//! defaults, `surrogate: None` the declared surrogate. With the builder where a field
//! changes the graph's structure, which one macro function cannot: [`Lif`]'s and [`Plif`]'s
//! `decay_input`, hard or soft reset (`v_reset: Option<f64>`, also [`If`]'s) and
//! `detach_reset`; [`Plif`]'s param shape and `w`, derived from `init_tau`;
//! [`LeakyIntegrator`]'s `learnable`; [`TernaryLif`]'s `detach_reset`; [`Izhikevich`]'s initial `u = b * c`, computed from
//! two fields (a macro state starts at a number or one param).

pub mod alif;
pub mod eif;
pub mod integrate_and_fire;
pub mod izhikevich;
pub mod leaky_integrator;
pub mod lif;
pub mod paper_lif;
pub mod plif;
pub mod ternary_lif;

pub use alif::Alif;
pub use eif::Eif;
pub use integrate_and_fire::If;
pub use izhikevich::Izhikevich;
pub use leaky_integrator::LeakyIntegrator;
pub use lif::Lif;
pub use paper_lif::PaperLif;
pub use plif::Plif;
pub use ternary_lif::TernaryLif;

use crate::Neuron;
use crate::builder::{NeuronBuilder, Value};

/// The zoo neurons' IR names, in [`all`]'s order (for command lines and their errors).
pub const NAMES: [&str; 9] = [
    PaperLif::NAME,
    Lif::NAME,
    If::NAME,
    Plif::NAME,
    Alif::NAME,
    Izhikevich::NAME,
    Eif::NAME,
    LeakyIntegrator::NAME,
    TernaryLif::NAME,
];

/// Every zoo neuron with its defaults, in [`NAMES`]' order (the paper's LIF first).
pub fn all() -> Vec<Box<dyn Neuron>> {
    NAMES.iter().filter_map(|name| by_name(name)).collect()
}

/// The zoo neuron with this IR name, with its defaults (for command lines and configs).
pub fn by_name(name: &str) -> Option<Box<dyn Neuron>> {
    Some(match name {
        PaperLif::NAME => Box::new(PaperLif::default()),
        Lif::NAME => Box::new(Lif::default()),
        If::NAME => Box::new(If::default()),
        Plif::NAME => Box::new(Plif::default()),
        Alif::NAME => Box::new(Alif::default()),
        Izhikevich::NAME => Box::new(Izhikevich::default()),
        Eif::NAME => Box::new(Eif::default()),
        LeakyIntegrator::NAME => Box::new(LeakyIntegrator::default()),
        TernaryLif::NAME => Box::new(TernaryLif::default()),
        _ => return None,
    })
}

/// The membrane of SpikingJelly's nodes ([`Lif`], [`If`], [`Plif`]): a threshold, and a
/// hard reset to `v_reset` after a spike or, without one, a soft reset (subtract the
/// threshold).
struct Membrane<'a> {
    b: &'a NeuronBuilder,
    v: Value<'a>,
    v_threshold: Value<'a>,
    v_reset: Option<Value<'a>>,
}

impl<'a> Membrane<'a> {
    /// Declares the params `v_threshold` and (hard reset only) `v_reset`, then the state
    /// `v`, which starts at `v_reset`, or at 0 with a soft reset.
    fn new(b: &'a NeuronBuilder, v_threshold: f64, v_reset: Option<f64>) -> Self {
        let v_threshold = b.param("v_threshold", v_threshold);
        let v_reset = v_reset.map(|r| b.param("v_reset", r));
        let v = match v_reset {
            Some(r) => b.state("v", r),
            None => b.state("v", 0.0),
        };
        Self {
            b,
            v,
            v_threshold,
            v_reset,
        }
    }

    /// `h`, the membrane after charging with input `x` and leaking `leak(v - v_reset)`
    /// (towards 0 with a soft reset); with `decay_input` (SpikingJelly's) the input goes
    /// through `leak` too.
    fn leaky_charge(
        &self,
        x: Value<'a>,
        decay_input: bool,
        leak: impl Fn(Value<'a>) -> Value<'a>,
    ) -> Value<'a> {
        let v = self.v;
        let gap = match self.v_reset {
            Some(r) => v - r,
            None => v,
        };
        let h = if decay_input {
            v + leak(x - gap)
        } else {
            v - leak(gap) + x
        };
        h.named("h")
    }

    /// Fires where `h` reaches the threshold, resets `v` and outputs the spike `s`. With
    /// `detach_reset` (SpikingJelly's), no gradient flows through the reset's spike.
    fn fire(&self, h: Value<'a>, detach_reset: bool) {
        let s = self.b.spike(h - self.v_threshold).named("s");
        let s_reset = if detach_reset { s.detach() } else { s };
        self.v.set(match self.v_reset {
            Some(r) => h * (1.0 - s_reset) + r * s_reset,
            None => h - s_reset * self.v_threshold,
        });
        self.b.output("s", s);
    }
}
