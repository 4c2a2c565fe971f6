//! Exponential integrate-and-fire.

use crate::builder::NeuronBuilder;
use crate::error::IrError;
use crate::ir::{NeuronIr, Surrogate};

/// Exponential integrate-and-fire (Fourcaud-Trocmé et al. 2003), dimensionless, one
/// forward-Euler step of `dt / tau` per time step, like SpikingJelly's `EIFNode`:
///
/// ```text
/// h = v + dt_over_tau * (-(v - v_rest) + delta_t * exp((v - v_rheobase) / delta_t) + x)
/// s = spike(h - v_threshold)
/// v <- h * (1 - s) + v_reset * s
/// output s
/// ```
///
/// The membrane starts at `v_reset`. The exponential term makes the upswing self-driving
/// once `v` passes `v_rheobase`; `v_threshold` is where the spike is cut off.
#[derive(Clone, Debug, PartialEq)]
pub struct Eif {
    /// Euler step over the membrane time constant.
    pub dt_over_tau: f64,
    pub v_rest: f64,
    /// Where the exponential term takes over (SpikingJelly's `theta_rh`).
    pub v_rheobase: f64,
    /// Sharpness of the spike initiation (SpikingJelly's `delta_T`).
    pub delta_t: f64,
    pub v_threshold: f64,
    pub v_reset: f64,
    pub surrogate: Surrogate,
}

impl Eif {
    /// The neuron's IR name.
    pub const NAME: &str = "eif";
}

impl Default for Eif {
    fn default() -> Self {
        Self {
            dt_over_tau: 0.5,
            v_rest: 0.0,
            v_rheobase: 0.8,
            delta_t: 0.1,
            v_threshold: 1.0,
            v_reset: 0.0,
            surrogate: Surrogate::sigmoid(4.0),
        }
    }
}

impl crate::Neuron for Eif {
    fn ir(&self) -> Result<NeuronIr, IrError> {
        let b = NeuronBuilder::new(Self::NAME)
            .doc("Exponential integrate-and-fire (Fourcaud-Trocme et al. 2003), dimensionless, forward Euler.")
            .surrogate(self.surrogate.clone());
        let x = b.input("x");
        let dt_over_tau = b.param("dt_over_tau", self.dt_over_tau);
        let v_rest = b.param("v_rest", self.v_rest);
        let v_rheobase = b.param("v_rheobase", self.v_rheobase);
        let delta_t = b.param("delta_t", self.delta_t);
        let v_threshold = b.param("v_threshold", self.v_threshold);
        let v_reset = b.param("v_reset", self.v_reset);
        let v = b.state("v", v_reset);
        let h = (v + dt_over_tau
            * (-(v - v_rest) + delta_t * ((v - v_rheobase) / delta_t).exp() + x))
            .named("h");
        let s = b.spike(h - v_threshold).named("s");
        v.set(h * (1.0 - s) + v_reset * s);
        b.output("s", s);
        b.finish()
    }
}
