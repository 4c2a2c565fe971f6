use snn::prelude::*;

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn lif(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let v = decay * v + x;
    let s = spike(v - 1.0);
    v.set(v * (1.0 - s));
    s
}

fn main() {}
