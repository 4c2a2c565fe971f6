//! The temporal-fusion paper's LIF.

use snn_dsl::neuron;

/// The temporal-fusion paper's LIF (Li et al., ICANN 2024): multiplicative decay gated by the last spike, restart from `rest`.
///
/// The LIF of that paper's fused kernel (EMI-Group/snn-temporal-fusion), exactly as the
/// kernel computes it:
///
/// ```text
/// h = decay * v * (1 - y) + rest * y + x
/// s = spike(h - threshold)
/// v <- h,  y <- s,  output s
/// ```
///
/// The reset is multiplicative: the last step's spike `y` is carried as a state and gates
/// the decay (`decay` per step), and the membrane restarts from `rest` after a spike. The
/// expression is written in exactly the kernel's form so that the derived backward step
/// matches the paper's closed-form gradient term for term. The surrogate is the paper's
/// rectangular window of half-width 0.5 (height 1).
#[neuron(crate = crate, surrogate = rect(width = 0.5))]
pub fn paper_lif(
    x: Input,
    v: State,
    y: State,
    #[param(default = 0.2)] decay: Param,
    #[param(default = 0.3)] threshold: Param,
    #[param(default = 0.0)] rest: Param,
) -> Spike {
    let h = decay * v * (1.0 - y) + rest * y + x;
    let s = spike(h - threshold);
    v.set(h);
    y.set(s);
    s
}
