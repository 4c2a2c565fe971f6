//! The temporal-fusion paper's LIF.

use crate::builder::NeuronBuilder;
use crate::error::IrError;
use crate::ir::{NeuronIr, Surrogate};

/// The LIF of the temporal-fusion paper's fused kernel (Li et al., ICANN 2024,
/// EMI-Group/snn-temporal-fusion), exactly as that kernel computes it:
///
/// ```text
/// h = decay * v * (1 - y) + rest * y + x
/// s = spike(h - threshold)
/// v <- h,  y <- s,  output s
/// ```
///
/// The reset is multiplicative: the last step's spike `y` is carried as a state and gates
/// the decay. The expression is written in exactly the kernel's form so that the derived
/// backward step matches the paper's closed-form gradient term for term.
#[derive(Clone, Debug, PartialEq)]
pub struct PaperLif {
    /// Multiplicative membrane decay per step.
    pub decay: f64,
    /// Firing threshold.
    pub threshold: f64,
    /// The value the membrane restarts from after a spike.
    pub rest: f64,
    /// The paper uses a rectangular window of half-width 0.5 (height 1).
    pub surrogate: Surrogate,
}

impl PaperLif {
    /// The neuron's IR name.
    pub const NAME: &str = "paper_lif";
}

impl Default for PaperLif {
    fn default() -> Self {
        Self {
            decay: 0.2,
            threshold: 0.3,
            rest: 0.0,
            surrogate: Surrogate::rect(0.5),
        }
    }
}

impl crate::Neuron for PaperLif {
    fn ir(&self) -> Result<NeuronIr, IrError> {
        let b = NeuronBuilder::new(Self::NAME)
            .doc("The temporal-fusion paper's LIF (Li et al., ICANN 2024): multiplicative decay gated by the last spike, restart from `rest`.")
            .surrogate(self.surrogate.clone());
        let x = b.input("x");
        let v = b.state("v", 0.0);
        let y = b.state("y", 0.0);
        let decay = b.param("decay", self.decay);
        let threshold = b.param("threshold", self.threshold);
        let rest = b.param("rest", self.rest);
        let h = (decay * v * (1.0 - y) + rest * y + x).named("h");
        let s = b.spike(h - threshold).named("s");
        v.set(h);
        y.set(s);
        b.output("s", s);
        b.finish()
    }
}
