use snn::prelude::*;

#[neuron_helper]
fn twice(k: f64) -> f64 {
    k * 2.0
}

fn main() {}
