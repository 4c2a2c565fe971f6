//! Adaptive LIF in the style of the LSNN.

use crate::builder::NeuronBuilder;
use crate::error::IrError;
use crate::ir::{NeuronIr, Surrogate};

/// Adaptive LIF in the style of Bellec et al.'s LSNN (NeurIPS 2018): every spike raises the
/// threshold, which then relaxes back to `b0`.
///
/// ```text
/// h   = decay * v + x
/// thr = b0 + beta * a
/// s   = spike(h - thr)
/// v  <- h - s * thr          // soft reset by the current threshold
/// a  <- rho * a + s
/// output s
/// ```
///
/// Unlike the LSNN paper, the adaptation increment is `s`, not `(1 - rho) * s`; scale
/// `beta` to compare. The triangle surrogate is the LSNN's pseudo-derivative shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Alif {
    /// Membrane decay per step.
    pub decay: f64,
    /// Adaptation decay per step.
    pub rho: f64,
    /// Threshold increase per unit of adaptation.
    pub beta: f64,
    /// Base threshold.
    pub b0: f64,
    pub surrogate: Surrogate,
}

impl Alif {
    /// The neuron's IR name.
    pub const NAME: &str = "alif";
}

impl Default for Alif {
    fn default() -> Self {
        Self {
            decay: 0.9,
            rho: 0.95,
            beta: 0.2,
            b0: 1.0,
            surrogate: Surrogate::triangle(1.0),
        }
    }
}

impl crate::Neuron for Alif {
    fn ir(&self) -> Result<NeuronIr, IrError> {
        let b = NeuronBuilder::new(Self::NAME)
            .doc("Adaptive LIF (LSNN style, Bellec et al. 2018): each spike raises the threshold b0 + beta * a.")
            .surrogate(self.surrogate.clone());
        let x = b.input("x");
        let v = b.state("v", 0.0);
        let a = b.state("a", 0.0);
        let decay = b.param("decay", self.decay);
        let rho = b.param("rho", self.rho);
        let beta = b.param("beta", self.beta);
        let b0 = b.param("b0", self.b0);
        let h = (decay * v + x).named("h");
        let thr = (b0 + beta * a).named("thr");
        let s = b.spike(h - thr).named("s");
        v.set(h - s * thr);
        a.set(rho * a + s);
        b.output("s", s);
        b.finish()
    }
}
