//! SpikingJelly's `ParametricLIFNode`.

use crate::builder::{NeuronBuilder, ParamDecl};
use crate::error::IrError;
use crate::ir::{NeuronIr, ParamShape, Surrogate};

use super::Membrane;

/// Parametric LIF (Fang et al., ICCV 2021), following SpikingJelly's `ParametricLIFNode`:
/// a LIF whose leak `1 / tau = sigmoid(w)` is learned.
///
/// ```text
/// h = v + (x - (v - v_reset)) * sigmoid(w)     // decay_input = true
/// h = v - (v - v_reset) * sigmoid(w) + x       // decay_input = false
/// s = spike(h - v_threshold)
/// v <- h * (1 - s) + v_reset * s               // hard reset, v_reset = Some(..)
/// v <- h - s * v_threshold                     // soft reset, v_reset = None
/// output s
/// ```
///
/// With a soft reset the charge leaks towards 0. `w` starts at `-ln(init_tau - 1)`, so that
/// `sigmoid(w) = 1 / init_tau`; `init_tau` must exceed 1 (otherwise the default is not
/// finite and [`crate::Neuron::ir`] reports it). The membrane starts at `v_reset` (hard
/// reset) or 0 (soft reset).
#[derive(Clone, Debug, PartialEq)]
pub struct Plif {
    /// The time constant `w` starts from (`> 1`).
    pub init_tau: f64,
    /// How many `w` values a layer learns: SpikingJelly learns one (`Scalar`); per channel
    /// is a common variant.
    pub shape: ParamShape,
    /// Whether the input is scaled by the leak too (SpikingJelly's `decay_input`).
    pub decay_input: bool,
    pub v_threshold: f64,
    /// `Some(r)`: hard reset to `r` after a spike; `None`: soft reset (subtract the threshold).
    pub v_reset: Option<f64>,
    pub surrogate: Surrogate,
}

impl Plif {
    /// The neuron's IR name.
    pub const NAME: &str = "plif";

    /// The initial value of `w`: `-ln(init_tau - 1)`.
    pub fn w0(&self) -> f64 {
        // `0 - ..` rather than `-..`: init_tau = 2 gives 0, not -0.
        0.0 - (self.init_tau - 1.0).ln()
    }
}

impl Default for Plif {
    fn default() -> Self {
        Self {
            init_tau: 2.0,
            shape: ParamShape::Scalar,
            decay_input: true,
            v_threshold: 1.0,
            v_reset: Some(0.0),
            surrogate: Surrogate::sigmoid(4.0),
        }
    }
}

impl crate::Neuron for Plif {
    fn ir(&self) -> Result<NeuronIr, IrError> {
        let b = NeuronBuilder::new(Self::NAME)
            .doc("Parametric LIF (Fang et al. 2021), as SpikingJelly's ParametricLIFNode: the leak sigmoid(w) is learned.")
            .surrogate(self.surrogate.clone());
        let x = b.input("x");
        let w = b.param("w", ParamDecl::learnable(self.w0()).with_shape(self.shape));
        let membrane = Membrane::new(&b, self.v_threshold, self.v_reset);
        let k = w.sigmoid();
        let h = membrane.leaky_charge(x, self.decay_input, |d| d * k);
        membrane.fire(h, false);
        b.finish()
    }
}
