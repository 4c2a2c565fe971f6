use snn::prelude::*;

#[neuron_helper]
fn leak(v: Real, decay: Real) -> Real {
    for i in 0..3 {
        let v = v * decay;
    }
    v
}

fn main() {}
