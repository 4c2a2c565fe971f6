//! Adaptive LIF in the style of the LSNN.

use snn_dsl::neuron;

/// Adaptive LIF (LSNN style, Bellec et al. 2018): each spike raises the threshold b0 + beta * a.
///
/// After Bellec et al.'s LSNN (NeurIPS 2018): every spike raises the threshold, which then
/// relaxes back to the base threshold `b0`:
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
/// `decay` is the membrane's decay per step, `rho` the adaptation's, `beta` the threshold's
/// increase per unit of adaptation. Unlike the LSNN paper, the adaptation increment is `s`,
/// not `(1 - rho) * s`; scale `beta` to compare. The triangle surrogate is the LSNN's
/// pseudo-derivative shape.
#[neuron(crate = crate, surrogate = triangle(width = 1.0))]
pub fn alif(
    x: Input,
    v: State,
    a: State,
    #[param(default = 0.9)] decay: Param,
    #[param(default = 0.95)] rho: Param,
    #[param(default = 0.2)] beta: Param,
    #[param(default = 1.0)] b0: Param,
) -> Spike {
    let h = decay * v + x;
    let thr = b0 + beta * a;
    let s = spike(h - thr);
    v.set(h - s * thr);
    a.set(rho * a + s);
    s
}
