use snn::prelude::*;

#[neuron(surrogate = custom(|h| h % 2.0))]
fn lif(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

fn main() {}
