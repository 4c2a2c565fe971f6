//! Exponential integrate-and-fire.

use snn_dsl::neuron;

/// Exponential integrate-and-fire (Fourcaud-Trocme et al. 2003), dimensionless, forward Euler.
///
/// After Fourcaud-Trocmé et al. (2003): one forward-Euler step of `dt_over_tau` (the Euler
/// step over the membrane time constant) per time step, like SpikingJelly's `EIFNode`:
///
/// ```text
/// h = v + dt_over_tau * (-(v - v_rest) + delta_t * exp((v - v_rheobase) / delta_t) + x)
/// s = spike(h - v_threshold)
/// v <- h * (1 - s) + v_reset * s
/// output s
/// ```
///
/// The membrane starts at `v_reset`. The exponential term makes the upswing self-driving
/// once `v` passes `v_rheobase` (SpikingJelly's `theta_rh`), with sharpness `delta_t`
/// (SpikingJelly's `delta_T`); `v_threshold` is where the spike is cut off.
#[neuron(crate = crate, surrogate = sigmoid(alpha = 4.0))]
pub fn eif(
    x: Input,
    #[param(default = 0.5)] dt_over_tau: Param,
    #[param(default = 0.0)] v_rest: Param,
    #[param(default = 0.8)] v_rheobase: Param,
    #[param(default = 0.1)] delta_t: Param,
    #[param(default = 1.0)] v_threshold: Param,
    #[param(default = 0.0)] v_reset: Param,
    #[state(init = v_reset)] v: State,
) -> Spike {
    let h = v + dt_over_tau * (-(v - v_rest) + delta_t * ((v - v_rheobase) / delta_t).exp() + x);
    let s = spike(h - v_threshold);
    v.set(h * (1.0 - s) + v_reset * s);
    s
}
