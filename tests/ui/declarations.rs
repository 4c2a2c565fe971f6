//! Mistakes in what a `#[neuron]` declares (its options, signature and states), one per
//! item, named for it: the macro reports each and still emits the item.

use snn::prelude::*;

// The options of `#[neuron(..)]`: known keys, and a surrogate that exists, with its own
// parameter, positive, and given where the step spikes.

#[neuron(surrogate = sigmoid(alpha = 4.0), reset = subtract)]
fn unknown_neuron_key(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate)]
fn surrogate_without_value(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = gaussian(alpha = 4.0))]
fn unknown_surrogate(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = rect(alpha = 1.0))]
fn surrogate_wrong_param(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 0.0))]
fn surrogate_non_positive(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = custom(|h| h % 2.0))]
fn custom_surrogate_error(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron]
fn spike_without_surrogate(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

// The step's signature: a free, non-generic function of inputs, states and params, each
// param with a default and a name the generated type does not use, each input used.

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn self_param(&self, x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn generic_step<T>(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn unknown_role_type(x: f32, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn duplicate_param(
    x: Input,
    v: State,
    #[param(default = 0.9)] decay: Param,
    #[param(default = 0.5)] decay: Param,
) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn param_without_default(x: Input, v: State, decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn unknown_param_key(x: Input, v: State, #[param(default = 0.9, trainable)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn param_named_name(x: Input, v: State, #[param(default = 0.9)] NAME: Param) -> Spike {
    let h = NAME * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn reserved_param(
    x: Input,
    v: State,
    #[param(default = 0.9)] decay: Param,
    #[param(default = 4.0)] surrogate: Param,
) -> Spike {
    let h = decay * v + x;
    let s = spike(surrogate * (h - 1.0));
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn unused_input(x: Input, bias: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

// States: declared initial values, updated once with `.set`, and only states.

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn state_init_expression(
    x: Input,
    #[param(default = 0.1)] rest: Param,
    #[state(init = -rest)] v: State,
    #[param(default = 0.9)] decay: Param,
) -> Spike {
    let h = decay * (v - rest) + rest + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn state_init_param_after(
    x: Input,
    #[state(init = rest)] v: State,
    #[param(default = 0.9)] decay: Param,
    #[param(default = -0.1)] rest: Param,
) -> Spike {
    let h = decay * (v - rest) + rest + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn state_init_undeclared(
    x: Input,
    #[state(init = rest)] v: State,
    #[param(default = 0.9)] decay: Param,
) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn unknown_state_key(
    x: Input,
    #[state(initial = 0.0)] v: State,
    #[param(default = 0.9)] decay: Param,
) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn state_never_updated(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn state_updated_twice(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    v.set(h);
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn set_non_state(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    decay.set(0.5);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn set_shadowed_state(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let v = decay * v + x;
    let s = spike(v - 1.0);
    v.set(v * (1.0 - s));
    s
}

fn main() {}
