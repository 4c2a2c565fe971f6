//! SpikingJelly's `IFNode`.

use crate::builder::NeuronBuilder;
use crate::error::IrError;
use crate::ir::{NeuronIr, Surrogate};

use super::Membrane;

/// Integrate-and-fire without leak, following SpikingJelly's `IFNode`:
///
/// ```text
/// h = v + x
/// s = spike(h - v_threshold)
/// v <- h * (1 - s) + v_reset * s         // hard reset, v_reset = Some(..)
/// v <- h - s * v_threshold               // soft reset, v_reset = None
/// output s
/// ```
///
/// The membrane starts at `v_reset` (hard reset) or 0 (soft reset). The IR name (and the
/// module's) is `integrate_and_fire` because `if` is a keyword in Rust and CUDA C++.
#[derive(Clone, Debug, PartialEq)]
pub struct If {
    pub v_threshold: f64,
    /// `Some(r)`: hard reset to `r` after a spike; `None`: soft reset (subtract the threshold).
    pub v_reset: Option<f64>,
    pub surrogate: Surrogate,
}

impl If {
    /// The neuron's IR name.
    pub const NAME: &str = "integrate_and_fire";
}

impl Default for If {
    fn default() -> Self {
        Self {
            v_threshold: 1.0,
            v_reset: Some(0.0),
            surrogate: Surrogate::sigmoid(4.0),
        }
    }
}

impl crate::Neuron for If {
    fn ir(&self) -> Result<NeuronIr, IrError> {
        let b = NeuronBuilder::new(Self::NAME)
            .doc("Integrate-and-fire without leak, as SpikingJelly's IFNode.")
            .surrogate(self.surrogate.clone());
        let x = b.input("x");
        let membrane = Membrane::new(&b, self.v_threshold, self.v_reset);
        membrane.fire((membrane.v + x).named("h"), false);
        b.finish()
    }
}
