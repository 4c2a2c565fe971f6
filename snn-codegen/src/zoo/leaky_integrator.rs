//! A non-spiking leaky integrator, the usual read-out layer.

use crate::builder::{NeuronBuilder, ParamDecl};
use crate::error::IrError;
use crate::ir::NeuronIr;

/// A leaky integrator that never spikes: the usual read-out of an SNN classifier, whose
/// membrane (not a spike count) feeds the loss.
///
/// ```text
/// h = decay * v + x
/// v <- h
/// output v = h
/// ```
///
/// It has no spike and hence no surrogate.
#[derive(Clone, Debug, PartialEq)]
pub struct LeakyIntegrator {
    /// Membrane decay per step.
    pub decay: f64,
    /// Whether `decay` is learned (a scalar either way).
    pub learnable: bool,
}

impl LeakyIntegrator {
    /// The neuron's IR name.
    pub const NAME: &str = "leaky_integrator";
}

impl Default for LeakyIntegrator {
    fn default() -> Self {
        Self {
            decay: 0.9,
            learnable: false,
        }
    }
}

impl crate::Neuron for LeakyIntegrator {
    fn ir(&self) -> Result<NeuronIr, IrError> {
        let b = NeuronBuilder::new(Self::NAME)
            .doc("Non-spiking leaky integrator, a read-out layer: outputs its membrane.");
        let x = b.input("x");
        let v = b.state("v", 0.0);
        let decl = if self.learnable {
            ParamDecl::learnable(self.decay)
        } else {
            ParamDecl::fixed(self.decay)
        };
        let decay = b.param("decay", decl);
        let h = (decay * v + x).named("h");
        v.set(h);
        b.output("v", h);
        b.finish()
    }
}
