//! Errors for malformed neurons. Each message names the problem and what to write instead.

use thiserror::Error;

/// A neuron that cannot be built or is not well formed.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum IrError {
    #[error(
        "neuron `{neuron}`: the step has a cycle through {node}; a value cannot depend on itself within one step, carry it to the next step through a state instead"
    )]
    Cycle { neuron: String, node: String },
    #[error(
        "neuron `{neuron}`: state `{state}` is never updated; call `{state}.set(new_value)` in the step (`{state}.set({state})` keeps it constant)"
    )]
    StateNotUpdated { neuron: String, state: String },
    #[error(
        "neuron `{neuron}`: state `{state}` is updated more than once in one step; compute the final value and call `{state}.set(..)` once"
    )]
    StateUpdatedTwice { neuron: String, state: String },
    #[error(
        "neuron `{neuron}`: output `{output}` is never set; give it a value with `output(\"{output}\", value)`"
    )]
    OutputNotSet { neuron: String, output: String },
    #[error(
        "neuron `{neuron}`: output `{output}` is set more than once; give each output one value"
    )]
    OutputSetTwice { neuron: String, output: String },
    #[error("neuron `{neuron}` has no outputs; a neuron must produce at least one value per step")]
    NoOutputs { neuron: String },
    #[error("neuron `{neuron}`: input `{input}` is never used; remove it or use it in the step")]
    UnusedInput { neuron: String, input: String },
    #[error(
        "neuron `{neuron}`: two {kind}s are named `{name}`; names of inputs, states, params and outputs must be unique"
    )]
    DuplicateName {
        neuron: String,
        kind: &'static str,
        name: String,
    },
    #[error(
        "neuron `{neuron}`: `{name}` is not a valid name; use a Rust-style identifier (letters, digits, `_`, not starting with a digit)"
    )]
    BadName { neuron: String, name: String },
    #[error(
        "neuron `{neuron}`: param `{param}` is declared twice, as {first} and as {second}; declare it once"
    )]
    ParamRedeclared {
        neuron: String,
        param: String,
        first: String,
        second: String,
    },
    #[error(
        "neuron `{neuron}`: param `{param}` has default {value}; defaults must be finite numbers"
    )]
    BadDefault {
        neuron: String,
        param: String,
        value: f64,
    },
    #[error("neuron `{neuron}`: surrogate {surrogate}: {problem}")]
    BadSurrogate {
        neuron: String,
        surrogate: String,
        problem: String,
    },
    #[error(
        "neuron `{neuron}`: `{node}` is a comparison (true or false) and cannot be used as a number; turn it into one with `select(cond, 1.0, 0.0)`, or use `spike(h)` for a spike"
    )]
    BoolAsReal { neuron: String, node: String },
    #[error(
        "neuron `{neuron}`: the condition of `{node}` is a number; compare it first, for example `select(x > 0.0, a, b)`"
    )]
    RealAsBool { neuron: String, node: String },
    #[error(
        "neuron `{neuron}`: `{node}` takes {expected} operand(s) but has {found}; connect exactly {expected}"
    )]
    Arity {
        neuron: String,
        node: String,
        expected: usize,
        found: usize,
    },
    #[error(
        "neuron `{neuron}`: the step reads {leaf}, which is not one of the neuron's declared inputs, states or params (saved tensors and gradients exist only in generated backward graphs)"
    )]
    UndeclaredLeaf { neuron: String, leaf: String },
    #[error(
        "neuron `{neuron}`: the step writes {sink}, which is not one of the neuron's declared outputs or states (saves and gradients exist only in generated graphs)"
    )]
    BadSink { neuron: String, sink: String },
    #[error(
        "neuron `{neuron}`: a sink ({sink}) is used as an operand; sinks end the step and have no value"
    )]
    SinkAsOperand { neuron: String, sink: String },
    #[error(
        "neuron `{neuron}`: {what} {value} in `{context}` is not a finite number; use a finite value"
    )]
    NonFiniteConst {
        neuron: String,
        what: &'static str,
        value: f64,
        context: String,
    },
    #[error(
        "neuron `{neuron}`: `{value}` is not a state, so it cannot be `set`; declare it with `state(..)`"
    )]
    SetNonState { neuron: String, value: String },
    #[error(
        "neuron `{neuron}`: state `{state}` starts from param #{param}, which the neuron does not declare"
    )]
    InitUndeclared {
        neuron: String,
        state: String,
        param: u32,
    },
    #[error(
        "neuron `{neuron}`: state `{state}` starts from `{value}`; an initial value must be a number or a param"
    )]
    InitNotParam {
        neuron: String,
        state: String,
        value: String,
    },
    #[error(
        "neuron `{neuron}`: `spike` is used but no surrogate is set; give the neuron one (`NeuronBuilder::surrogate`) or use `spike_with(h, surrogate)`"
    )]
    NoSurrogate { neuron: String },
    #[error(
        "neuron `{neuron}`: a value from another builder was used; values belong to the builder that made them"
    )]
    ForeignValue { neuron: String },
    #[error("neuron `{neuron}`: cannot fuse batch-norm into it: {problem}")]
    Fusion { neuron: String, problem: String },
    #[error("bad storage: {0}")]
    Storage(String),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<IrError>),
}

impl IrError {
    /// One error, or all of them.
    pub fn from_list(mut errors: Vec<IrError>) -> Result<(), IrError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(IrError::Many(errors)),
        }
    }

    /// The individual errors.
    pub fn list(&self) -> Vec<&IrError> {
        match self {
            IrError::Many(v) => v.iter().collect(),
            e => vec![e],
        }
    }
}
