//! Mistakes in the body of a `#[neuron]` step, one per item, named for it: the macro
//! reports each and still emits the item, so one file checks them all.

use snn::prelude::*;

// Control flow the step language does not have: blocks, loops, `if`s that are not selects,
// `&&`, `match`, `return`, closures.

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn block_expr(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = {
        let leak = decay * v;
        leak + x
    };
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn for_loop(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    for i in 0..3 {
        let h = h * decay;
    }
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn while_loop(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    while h > 1.0 {
        v.set(h);
    }
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn if_branch_let(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let r = if h > 2.0 {
        let c = h * 0.5;
        c
    } else {
        h
    };
    let s = spike(h - 1.0);
    v.set(r - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn if_without_else(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let r = if h > 2.0 { 2.0 };
    let s = spike(h - 1.0);
    v.set(r - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn logical_and(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let r = if h > 0.0 && h < 2.0 { h } else { 0.0 };
    let s = spike(h - 1.0);
    v.set(r - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn match_expr(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let r = match h {
        _ => 0.0,
    };
    let s = spike(h - 1.0);
    v.set(h - s + r);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn return_in_middle(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    return s;
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn closure(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let leak = |a| a * decay;
    let h = leak(v) + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

// Values are immutable real numbers: no assignment, `mut`, types or casts.

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn assign(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v = h - s;
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn compound_assign(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v;
    h += x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn let_mut(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let mut h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn typed_let(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h: f64 = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn cast(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x as f64;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

// Operations a step cannot trace: `%` (also inside `.set`), unknown methods, wrong arities,
// a traced `powf` exponent, macros.

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn remainder(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = (decay * v + x) % 2.0;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn set_arg_error(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h % 2.0);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn unknown_method(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = (decay * v + x).foo();
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn unknown_method_log(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x.log();
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn method_arity(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = (decay * v + x).clamp(0.0);
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn powf_non_constant(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v.powf(x);
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn macro_expr(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = dbg!(decay * v + x);
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn macro_statement(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    println!("h = {:?}", h);
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

// The step ends with its outputs: named values, each once, without `;`.

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn no_tail(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn tail_not_named(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    x + 1.0
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn tail_with_semicolon(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s;
}

#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn output_twice(x: Input, v: State, #[param(default = 0.9)] decay: Param) -> Spike {
    let h = decay * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    (s, s)
}

fn main() {}
