use snn::prelude::*;

#[neuron(surrogate = sigmoid(alpha = 4.0), reset = zero)]
fn lif(
    x: Input,
    unused: Input,
    v: State,
    w: State,
    #[param(default = 0.9, trainable)] decay: Param,
) -> Spike {
    let mut h = decay * v + x;
    let k = h % 2.0;
    let s = spike(h.log() - 1.0);
    v.set(h - s);
    s
}

fn main() {}
