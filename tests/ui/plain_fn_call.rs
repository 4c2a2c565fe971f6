use snn::prelude::*;

fn double(a: f64) -> f64 {
    a * 2.0
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn lif(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + double(x);
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

fn main() {}
