//! Izhikevich's simple model.

use crate::builder::NeuronBuilder;
use crate::error::IrError;
use crate::ir::{NeuronIr, Surrogate};

/// Izhikevich's simple model (IEEE TNN 2003), in mV and ms, one forward-Euler step of
/// `dt` per time step (both updates read the old `v` and `u`):
///
/// ```text
/// vn = v + dt * (0.04 * v * v + 5 * v + 140 - u + x)
/// un = u + dt * a * (b * v - u)
/// s  = spike(vn - v_peak)
/// v <- vn * (1 - s) + c * s
/// u <- un + d * s
/// output s
/// ```
///
/// The defaults are the paper's regular-spiking cell. `v` starts at `c` and `u` at
/// `b * c`; the latter is a constant computed from the fields (an initial value can only be
/// a number or one param), so it does not follow a changed `b` or `c` at run time.
#[derive(Clone, Debug, PartialEq)]
pub struct Izhikevich {
    /// Recovery time scale.
    pub a: f64,
    /// Sensitivity of the recovery to `v`.
    pub b: f64,
    /// Reset potential (mV).
    pub c: f64,
    /// Recovery increment after a spike.
    pub d: f64,
    /// Euler step (ms).
    pub dt: f64,
    /// Spike cut-off (mV).
    pub v_peak: f64,
    /// Fast sigmoid with a small `alpha`, because `vn - v_peak` is in mV.
    pub surrogate: Surrogate,
}

impl Izhikevich {
    /// The neuron's IR name.
    pub const NAME: &str = "izhikevich";
}

impl Default for Izhikevich {
    fn default() -> Self {
        Self {
            a: 0.02,
            b: 0.2,
            c: -65.0,
            d: 8.0,
            dt: 0.5,
            v_peak: 30.0,
            surrogate: Surrogate::fast_sigmoid(0.2),
        }
    }
}

impl crate::Neuron for Izhikevich {
    fn ir(&self) -> Result<NeuronIr, IrError> {
        let bld = NeuronBuilder::new(Self::NAME)
            .doc("Izhikevich's simple model (2003), forward Euler with step dt, in mV.")
            .surrogate(self.surrogate.clone());
        let x = bld.input("x");
        let a = bld.param("a", self.a);
        let b = bld.param("b", self.b);
        let c = bld.param("c", self.c);
        let d = bld.param("d", self.d);
        let dt = bld.param("dt", self.dt);
        let v_peak = bld.param("v_peak", self.v_peak);
        let v = bld.state("v", c);
        let u = bld.state("u", self.b * self.c);
        let vn = (v + dt * (0.04 * v * v + 5.0 * v + 140.0 - u + x)).named("vn");
        let un = (u + dt * a * (b * v - u)).named("un");
        let s = bld.spike(vn - v_peak).named("s");
        v.set(vn * (1.0 - s) + c * s);
        u.set(un + d * s);
        bld.output("s", s);
        bld.finish()
    }
}
