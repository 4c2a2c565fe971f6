use snn::prelude::*;

#[neuron_helper]
fn leak(v: Real, decay: f64) {
    decay * v
}

fn main() {}
