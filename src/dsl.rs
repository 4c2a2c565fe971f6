//! # Writing neurons with `#[neuron]`
//!
//! A neuron is a step function: it reads this step's inputs, the states left by the
//! previous step and its params, and returns its outputs and new states. Write that
//! function once under `#[neuron]`; the macro turns it into a type that implements
//! [`Neuron`](crate::codegen::Neuron), whose step graph `snn` differentiates through time,
//! plans and turns into fused GPU kernels.
//!
//! ```
//! use snn::prelude::*;
//!
//! /// The temporal-fusion paper's LIF: multiplicative decay, reset to `rest` after a spike.
//! #[neuron(surrogate = rect(width = 0.5))]
//! pub fn paper_lif(
//!     x: Input,
//!     v: State,
//!     y: State,
//!     #[param(default = 0.2)] decay: Param,
//!     #[param(default = 0.3)] threshold: Param,
//!     #[param(default = 0.0)] rest: Param,
//! ) -> Spike {
//!     let h = decay * v * (1.0 - y) + rest * y + x;
//!     let s = spike(h - threshold);
//!     v.set(h);
//!     y.set(s);
//!     s
//! }
//!
//! let lif = PaperLif::new().threshold(0.5);          // the generated type
//! let compiled = compile(&lif, Storage::F32)?;        // IR -> gradients -> memory plan
//! assert_eq!(compiled.plan.bytes.train(), 24);        // saves only `h`
//! println!("{compiled}");                             // forward and backward equations
//! let cuda = compiled.kernels();                      // the fused kernels the GPU runs
//! assert!(cuda.backward.source.contains("__global__"));
//! # Ok::<(), snn::codegen::IrError>(())
//! ```
//!
//! ## Parameters of the step function
//!
//! | declaration | meaning |
//! |---|---|
//! | `x: Input` | an input, read at every step (`[T, N]` tensor) |
//! | `#[state(init = 0.0)] v: State` | a state: `v` is its value after the previous step; `v.set(new)` gives its value after this one. `init` is a number (default 0) or the name of a param declared earlier |
//! | `#[param(default = 0.2)] decay: Param` | a parameter, constant over time. Options: `learnable` (gets gradients), `per_channel` or `per_neuron` (one value per channel, or per neuron shared over the batch; default one scalar) |
//!
//! The return type is documentation only (`-> Spike`, `-> Real`, `-> (Spike, Real)`): the
//! outputs are the function's final expression, a named value or a tuple of named values,
//! whose names become the outputs' names.
//!
//! ## What the body may contain
//!
//! - `let` bindings (each name also names the value in printed equations and kernels);
//! - `+ - * /` and unary `-` on values and numbers (integers are read as `f64`);
//! - comparisons `< <= > >= == !=`, whose results feed `if` or `select`;
//! - `if cond { a } else { b }`, `else if` chains: a select (both branches are computed,
//!   so each branch is a single expression);
//! - methods `.exp() .ln() .sqrt() .tanh() .atan() .sigmoid() .abs() .detach()`,
//!   `.min(y) .max(y) .clamp(lo, hi)`, `.powf(c) .powi(c)` with a constant exponent;
//! - functions `spike(h)` (1 where `h >= 0`, else 0; backward, the surrogate), `detach(x)`
//!   (no gradient flows back through it), `sigmoid(x)`, `select(cond, a, b)`;
//! - `state.set(value)`, exactly once per state;
//! - calls to `#[neuron_helper]` functions.
//!
//! Anything else (loops, `return`, `match`, `&&`, assignments, casts, closures, macros,
//! unknown methods) is a compile error that points at the construct and says what to write
//! instead. So are a state never updated, an input never used, unknown attribute keys, a
//! non-constant exponent, a plain Rust function called on traced values (`f64::exp(v)`,
//! `my_fn(v)`: "a plain Rust function, which a neuron step cannot call with traced values"),
//! and a comparison stored in a state (`v.set(h > th)`).
//!
//! ## Surrogates
//!
//! `#[neuron(surrogate = ..)]` sets the derivative `spike` pretends to have:
//!
//! | surrogate | derivative at `h` |
//! |---|---|
//! | `sigmoid(alpha = 4.0)` | `alpha * s * (1 - s)`, `s = sigmoid(alpha * h)` |
//! | `atan(alpha = 2.0)` | `(alpha / 2) / (1 + (pi / 2 * alpha * h)^2)` |
//! | `rect(width = 0.5)` | `1` where `abs(h) < width` (the paper's kernel) |
//! | `triangle(width = 1.0)` | `max(0, 1 - abs(h) / width)` |
//! | `fast_sigmoid(alpha = 10.0)` | `1 / (1 + alpha * abs(h))^2` (SuperSpike) |
//! | `piecewise_quadratic(alpha = 1.0)` | `max(0, alpha - alpha^2 * abs(h))` |
//! | `custom(\|h\| expr)` | any expression of `h`, written like a step |
//!
//! ## Helpers
//!
//! ```
//! use snn::prelude::*;
//!
//! /// A hard reset to `to` after a spike, shared by several neurons.
//! #[neuron_helper]
//! fn hard_reset(v: Real, s: Real, to: Real) -> Real {
//!     v * (1.0 - s) + to * s
//! }
//!
//! #[neuron(surrogate = sigmoid(alpha = 4.0))]
//! fn integrate_and_fire(x: Input, v: State, #[param(default = 1.0)] threshold: Param) -> Spike {
//!     let h = v + x;
//!     let s = spike(h - threshold);
//!     v.set(hard_reset(h, s, 0.0));
//!     s
//! }
//! # assert!(IntegrateAndFire::new().ir().is_ok());
//! ```
//!
//! A helper's parameters are `Real` (a traced value) or `f64` (a constant); it returns
//! `Real` or a tuple of them. Its body follows the step's rules and is inlined where it is
//! called.
//!
//! ## The generated type
//!
//! `paper_lif` becomes `PaperLif`, with the function's documentation, and:
//! - one `pub f64` field per param, holding its value (the IR's default for it), and
//!   `pub surrogate: Option<Surrogate>` to replace the declared surrogate;
//! - `Default` (the declared defaults), `new()`, a setter per param
//!   (`PaperLif::new().decay(0.5)`), `with_surrogate(..)`, `NAME`;
//! - `Clone`, `Debug`, `PartialEq`, and [`Neuron`](crate::codegen::Neuron), whose `ir()`
//!   builds the step graph through [`NeuronBuilder`](crate::codegen::NeuronBuilder).
//!
//! Everything the macro expresses, the builder expresses too, so neurons can also be built
//! at run time (see [`NeuronBuilder`](crate::codegen::NeuronBuilder)).
//!
//! `#[neuron(crate = path)]` names the path to `snn_codegen` in generated code (default
//! `::snn::codegen`), for crates that depend on `snn-codegen` directly.
//!
//! ## Where this differs from the first sketch, and why
//!
//! - Outputs are named by the final expression's names rather than by the return type:
//!   a neuron with two outputs needs names for both, and the names already exist.
//! - An `if` on traced values is a select rather than control flow: kernels run every
//!   element in lockstep, and a select is what they execute.
//! - Helpers are marked with `#[neuron_helper]` and receive the builder implicitly, so that
//!   they can use `spike`, comparisons and `if` like a step.
//! - The surrogate is part of the neuron's definition but can be swapped per instance
//!   (`with_surrogate`), since comparing surrogates is a common experiment.
