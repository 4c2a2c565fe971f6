use snn::prelude::*;

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn lif(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = (decay * v + x) % 2.0;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

fn main() {}
