use snn::prelude::*;

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn exp_of_a_value(x: Input, v: State) -> Spike {
    let h = v + f64::exp(x);
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn a_condition_stored_in_a_state(x: Input, v: State, #[param(default = 1.0)] threshold: Param) -> Spike {
    let h = v + x;
    v.set(h > threshold);
    let s = spike(h - threshold);
    s
}

fn main() {}
