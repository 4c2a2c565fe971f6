//! SpikingJelly's `LIFNode`.

use crate::builder::NeuronBuilder;
use crate::error::IrError;
use crate::ir::{NeuronIr, Surrogate};

use super::Membrane;

/// Leaky integrate-and-fire, following SpikingJelly's `LIFNode` (its defaults too).
///
/// Charge, with `decay_input` (the input is divided by `tau` as well):
///
/// ```text
/// h = v + (x - (v - v_reset)) / tau      // decay_input = true
/// h = v - (v - v_reset) / tau + x        // decay_input = false
/// s = spike(h - v_threshold)
/// ```
///
/// With a soft reset (`v_reset = None`) the charge leaks towards 0. Reset:
///
/// ```text
/// v <- h * (1 - s) + v_reset * s         // hard reset, v_reset = Some(..)
/// v <- h - s * v_threshold               // soft reset, v_reset = None
/// ```
///
/// Output `s`. As in SpikingJelly (`detach_reset = False` by default), gradients flow
/// through the reset unless `detach_reset` is set.
/// The membrane starts at `v_reset` (hard reset) or 0 (soft reset).
#[derive(Clone, Debug, PartialEq)]
pub struct Lif {
    /// Membrane time constant in steps; the leak per step is `1 / tau`.
    pub tau: f64,
    /// Whether the input is scaled by `1 / tau` too (SpikingJelly's `decay_input`). A
    /// structural option: it changes the graph, not a parameter value.
    pub decay_input: bool,
    pub v_threshold: f64,
    /// `Some(r)`: hard reset to `r` after a spike; `None`: soft reset (subtract the threshold).
    pub v_reset: Option<f64>,
    /// SpikingJelly's `detach_reset`: no gradient flows through the reset's spike.
    pub detach_reset: bool,
    pub surrogate: Surrogate,
}

impl Lif {
    /// The neuron's IR name.
    pub const NAME: &str = "lif";
}

impl Default for Lif {
    fn default() -> Self {
        Self {
            tau: 2.0,
            decay_input: true,
            v_threshold: 1.0,
            v_reset: Some(0.0),
            detach_reset: false,
            surrogate: Surrogate::sigmoid(4.0),
        }
    }
}

impl crate::Neuron for Lif {
    fn ir(&self) -> Result<NeuronIr, IrError> {
        let b = NeuronBuilder::new(Self::NAME)
            .doc("Leaky integrate-and-fire, as SpikingJelly's LIFNode.")
            .surrogate(self.surrogate.clone());
        let x = b.input("x");
        let tau = b.param("tau", self.tau);
        let membrane = Membrane::new(&b, self.v_threshold, self.v_reset);
        let h = membrane.leaky_charge(x, self.decay_input, |d| d / tau);
        membrane.fire(h, self.detach_reset);
        b.finish()
    }
}
