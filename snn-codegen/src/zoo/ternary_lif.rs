//! The temporal-fusion repository's ternary LIF.

use crate::builder::NeuronBuilder;
use crate::error::IrError;
use crate::ir::{NeuronIr, Surrogate};

/// The ternary LIF of the temporal-fusion paper's repository (EMI-Group/snn-temporal-fusion,
/// its second fused kernel): spikes of -1, 0 or +1.
///
/// ```text
/// h = decay * v * (1 - y * y) + x
/// s = spike(h - threshold) - spike(-h - threshold)    // +1 at h >= th, -1 at h <= -th
/// v <- h,  y <- s,  output s
/// ```
///
/// The membrane starts at `rest`, the last spike `y` at 0; a spike of either sign gates the
/// next step's decay (`y * y` is `|y|` for ternary values). The surrogate is that kernel's
/// rectangular window of half-width 0.25 (height 1) around `+threshold` and around
/// `-threshold` (the kernel takes one window where the two overlap, `threshold < 0.25`;
/// here they add). With `detach_reset` (the default) no gradient flows through the gate
/// `1 - y * y`, so the backward is the kernel's hand-written one:
/// `dL/dh[t] = dL/ds[t] * window(h[t]) + dL/dh[t+1] * decay * (1 - |y[t]|)`.
///
/// Narrow storage keeps its output in one signed byte (`i8`): the spike-kind analysis finds
/// it ternary.
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryLif {
    pub decay: f64,
    pub threshold: f64,
    /// The membrane's initial value.
    pub rest: f64,
    /// No gradient through the spike that gates the decay (the seed kernel's backward).
    pub detach_reset: bool,
    pub surrogate: Surrogate,
}

impl TernaryLif {
    /// The neuron's IR name.
    pub const NAME: &str = "ternary_lif";
}

impl Default for TernaryLif {
    /// The seed's defaults (`TernaryLIF(decay=0.2, threshold=0.3, rest=0.0)`).
    fn default() -> Self {
        Self {
            decay: 0.2,
            threshold: 0.3,
            rest: 0.0,
            detach_reset: true,
            surrogate: Surrogate::rect(0.25),
        }
    }
}

impl crate::Neuron for TernaryLif {
    fn ir(&self) -> Result<NeuronIr, IrError> {
        let b = NeuronBuilder::new(Self::NAME)
            .doc("The temporal-fusion repository's ternary LIF: spikes of -1, 0 or +1.")
            .surrogate(self.surrogate.clone());
        let x = b.input("x");
        let decay = b.param("decay", self.decay);
        let threshold = b.param("threshold", self.threshold);
        let rest = b.param("rest", self.rest);
        let v = b.state("v", rest);
        let y = b.state("y", 0.0);
        let gate = if self.detach_reset { y.detach() } else { y };
        let h = (decay * v * (1.0 - gate * gate) + x).named("h");
        let s = (b.spike(h - threshold) - b.spike(-h - threshold)).named("s");
        v.set(h);
        y.set(s);
        b.output("s", s);
        b.finish()
    }
}
