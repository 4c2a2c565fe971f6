use snn::prelude::*;

#[neuron(surrogate = sigmoid(alpha = 4.0))]
struct Lif {
    decay: f64,
}

fn main() {}
