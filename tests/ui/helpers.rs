//! Mistakes in `#[neuron_helper]` functions (`Real` or `f64` parameters, a `Real` result,
//! the step language inside), one per item, named for it.

use snn::prelude::*;

#[neuron_helper]
fn helper_bad_param_type(v: f32, decay: Real) -> Real {
    decay * v
}

#[neuron_helper]
fn helper_no_return_type(v: Real, decay: f64) {
    decay * v
}

#[neuron_helper]
fn helper_returns_f64(k: f64) -> f64 {
    k * 2.0
}

#[neuron_helper]
fn helper_for_loop(v: Real, decay: Real) -> Real {
    for i in 0..3 {
        let v = v * decay;
    }
    v
}

fn main() {}
