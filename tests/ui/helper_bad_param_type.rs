use snn::prelude::*;

#[neuron_helper]
fn leak(v: f32, decay: Real) -> Real {
    decay * v
}

fn main() {}
