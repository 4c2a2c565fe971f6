#![allow(clippy::unwrap_used)]
//! Malformed neurons and bad interpreter arguments: each is reported as the right error,
//! with a message that names the offending thing and says what to do, and never panics.

use std::sync::mpsc;
use std::time::Duration;

use snn_codegen::interp::{Params, Reference, RunError, Seq};
use snn_codegen::ir::{Binary, CustomSurrogate, Graph, Leaf, NodeId, Op, Sink, Unary};
use snn_codegen::{
    Dtype, Init, IrError, Neuron, NeuronBuilder, NeuronIr, ParamDecl, ParamShape, ParamSpec,
    StateSpec, Storage, Surrogate, compile, zoo,
};
use snn_codegen::{Layout, Mode};

// ---------------------------------------------------------------------------------------
// Helpers

/// The single error in `err` (fails, listing them all, if there are several).
fn only(err: &IrError) -> &IrError {
    let list = err.list();
    assert_eq!(list.len(), 1, "expected exactly one error, got:\n{err}");
    list[0]
}

/// Asserts that `msg` contains every one of `parts`.
fn says(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message does not contain {p:?}:\n{msg}");
    }
}

/// Asserts that `err` matches `pattern` and that its message contains every one of `parts`.
macro_rules! assert_error {
    ($err:expr, $pattern:pat $(if $guard:expr)?, $parts:expr) => {{
        let err = &$err;
        assert!(matches!(err, $pattern $(if $guard)?), "{err:?}");
        says(&err.to_string(), $parts);
    }};
}

/// Runs `f` on another thread and fails if it does not finish within 20 seconds.
fn within_time<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("did not finish within 20 s (hang), or panicked")
}

/// A small valid neuron with one input `x`, one state `v` and output `v`.
fn valid_low_level(name: &str) -> NeuronIr {
    let mut ir = NeuronIr::new(name);
    ir.inputs = vec!["x".into()];
    ir.outputs = vec!["y".into()];
    let g = &mut ir.graph;
    let x = g.leaf(Leaf::Input(0));
    g.sink(Sink::Output(0), x);
    ir
}

/// [`valid_low_level`] with a second output `z`, whose value `z` adds to the graph (given
/// the input `x`).
fn with_output_z(z: impl FnOnce(&mut Graph, NodeId) -> NodeId) -> NeuronIr {
    let mut ir = valid_low_level("n");
    ir.outputs.push("z".into());
    let g = &mut ir.graph;
    let x = g.find_leaf(Leaf::Input(0)).unwrap();
    let z = z(g, x);
    g.sink(Sink::Output(1), z);
    ir
}

fn lif() -> NeuronIr {
    zoo::Lif::default().ir().unwrap()
}

fn reference(ir: &NeuronIr) -> Reference {
    Reference::new(compile(ir, Storage::F32).unwrap())
}

// ---------------------------------------------------------------------------------------
// States and outputs

#[test]
fn state_never_updated() {
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    let v = b.state("v", 0.0);
    b.output("y", x + v);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::StateNotUpdated { neuron, state } if neuron == "n" && state == "v",
        &["`n`", "`v`", "v.set(new_value)"]
    );
}

#[test]
fn state_updated_twice() {
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    let v = b.state("v", 0.0);
    v.set(v + x);
    v.set(v * 2.0);
    b.output("y", v);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::StateUpdatedTwice { state, .. } if state == "v",
        &["`v`", "more than once", "`v.set(..)` once"]
    );
}

#[test]
fn output_never_set() {
    let mut ir = valid_low_level("n");
    ir.outputs.push("z".into());
    let err = ir.validate().unwrap_err();
    assert_error!(
        only(&err),
        IrError::OutputNotSet { output, .. } if output == "z",
        &["`z`", "never set", "output(\"z\", value)"]
    );
}

#[test]
fn output_set_twice() {
    let mut ir = valid_low_level("n");
    let x = ir.graph.find_leaf(Leaf::Input(0)).unwrap();
    let twice = ir.graph.unary(Unary::Neg, x);
    ir.graph.sink(Sink::Output(0), twice);
    let err = ir.validate().unwrap_err();
    assert_error!(
        only(&err),
        IrError::OutputSetTwice { output, .. } if output == "y",
        &["`y`", "more than once"]
    );
}

#[test]
fn output_declared_twice_by_builder() {
    // The builder declares an output at each `output` call, so setting one twice is a
    // duplicate name.
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    b.output("y", x);
    b.output("y", x * 2.0);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::DuplicateName { kind: "output", name, .. } if name == "y",
        &["`y`", "must be unique"]
    );
}

#[test]
fn no_outputs() {
    let b = NeuronBuilder::new("silent");
    let v = b.state("v", 0.0);
    v.set(v + 1.0);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::NoOutputs { neuron } if neuron == "silent",
        &["`silent`", "no outputs", "at least one"]
    );
}

#[test]
fn unused_input() {
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    let _unused = b.input("bias");
    b.output("y", x * 2.0);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::UnusedInput { input, .. } if input == "bias",
        &["`bias`", "never used", "remove it"]
    );
}

// ---------------------------------------------------------------------------------------
// Names and params

#[test]
fn duplicate_input_names() {
    let b = NeuronBuilder::new("n");
    let x1 = b.input("x");
    let x2 = b.input("x");
    b.output("y", x1 + x2);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::DuplicateName { kind: "input", name, .. } if name == "x",
        &["two inputs", "`x`", "must be unique"]
    );
}

#[test]
fn bad_name() {
    let b = NeuronBuilder::new("n");
    let x = b.input("2x");
    b.output("y", x);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::BadName { name, .. } if name == "2x",
        &["`2x`", "not a valid name", "identifier"]
    );
}

#[test]
fn param_redeclared_with_another_shape() {
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    let t1 = b.param("tau", 2.0);
    let t2 = b.param("tau", ParamDecl::fixed(2.0).per_channel());
    b.output("y", x * t1 + t2);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::ParamRedeclared { param, first, second, .. }
            if param == "tau" && first.contains("scalar") && second.contains("per-channel"),
        &["`tau`", "declared twice", "scalar", "per-channel", "declare it once"]
    );
}

#[test]
fn param_redeclared_identically_is_fine() {
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    let t1 = b.param("tau", 2.0);
    let t2 = b.param("tau", ParamDecl::fixed(2.0));
    b.output("y", x * t1 + t2);
    let ir = b.finish().unwrap();
    assert_eq!(ir.params.len(), 1);
}

#[test]
fn param_non_finite_default() {
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    let tau = b.param("tau", f64::NAN);
    b.output("y", x * tau);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::BadDefault { param, .. } if param == "tau",
        &["`tau`", "NaN", "finite"]
    );
}

// ---------------------------------------------------------------------------------------
// Cycles

#[test]
fn cycle_through_itself() {
    let mut ir = NeuronIr::new("loop");
    ir.inputs = vec!["x".into()];
    ir.outputs = vec!["y".into()];
    let g = &mut ir.graph;
    let x = g.leaf(Leaf::Input(0));
    let one = g.constant(1.0);
    let h = g.add_named(Op::Binary(Binary::Add), &[x, one], Some("h".into()));
    g.set_operand(h, 1, h); // h = x + h
    g.sink(Sink::Output(0), h);

    let err = within_time(move || {
        // Printing a cyclic neuron must not hang either.
        let _ = ir.to_string();
        let compiled = compile(&ir, Storage::F32).map(|_| ());
        (ir.validate().unwrap_err(), compiled)
    });
    let (err, compiled) = err;
    assert_error!(
        only(&err),
        IrError::Cycle { node, .. } if node == "`h`",
        &["cycle", "`h`", "through a state"]
    );
    assert!(
        matches!(compiled, Err(IrError::Cycle { .. })),
        "{compiled:?}"
    );
}

#[test]
fn cycle_through_two_unnamed_nodes() {
    let mut ir = NeuronIr::new("loop2");
    ir.inputs = vec!["x".into()];
    ir.outputs = vec!["y".into()];
    let g = &mut ir.graph;
    let x = g.leaf(Leaf::Input(0));
    let one = g.constant(1.0);
    let a = g.binary(Binary::Add, x, one);
    let b = g.binary(Binary::Mul, a, one);
    g.set_operand(a, 1, b); // a = x + a * 1
    g.sink(Sink::Output(0), b);

    let err = within_time(move || ir.validate().unwrap_err());
    assert_error!(
        only(&err),
        IrError::Cycle { .. },
        &["`loop2`", "cycle", "through a state"]
    );
}

// ---------------------------------------------------------------------------------------
// Surrogates

fn spiking_with(s: Surrogate) -> Result<NeuronIr, IrError> {
    let b = NeuronBuilder::new("n").surrogate(s);
    let x = b.input("x");
    b.output("s", b.spike(x - 1.0));
    b.finish()
}

#[test]
fn surrogates_with_bad_parameters() {
    for (surrogate, parts) in [
        (
            Surrogate::rect(-1.0),
            ["rect", "width", "positive and finite", "-1"],
        ),
        (
            Surrogate::sigmoid(f64::NAN),
            ["sigmoid", "alpha", "positive and finite", "NaN"],
        ),
        (
            Surrogate::atan(0.0),
            ["atan", "alpha", "positive and finite", "got 0"],
        ),
    ] {
        let err = spiking_with(surrogate).unwrap_err();
        assert_error!(
            only(&err),
            IrError::BadSurrogate { surrogate, .. } if surrogate.starts_with(parts[0]),
            &parts
        );
    }
}

#[test]
fn custom_surrogate_reading_a_param() {
    // A derivative graph that reads a param besides `h`: only buildable by hand.
    let mut g = Graph::new();
    let h = g.leaf(Leaf::Input(0));
    let p = g.leaf(Leaf::Param(0));
    let d = g.binary(Binary::Mul, h, p);
    g.sink(Sink::Output(0), d);
    let s = Surrogate::Custom(CustomSurrogate::new(g, "h * p".into()));
    assert!(s.check().is_err());

    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    b.output("s", b.spike_with(x, s));
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::BadSurrogate { surrogate, .. } if surrogate.contains("h * p"),
        &["custom", "`h` alone"]
    );
}

#[test]
fn custom_surrogate_using_a_value_of_another_builder() {
    // The only way to smuggle something other than `h` into `Surrogate::custom`: a value of
    // a builder that lives forever.
    let other: &'static NeuronBuilder = Box::leak(Box::new(NeuronBuilder::new("other")));
    let err = Surrogate::custom(move |h| h * other.param("k", 2.0)).unwrap_err();
    assert!(
        err.list()
            .iter()
            .any(|e| matches!(e, IrError::ForeignValue { .. })),
        "{err:?}"
    );
    says(&err.to_string(), &["another builder"]);
}

#[test]
fn custom_surrogate_returning_a_comparison() {
    let err = Surrogate::custom(|h| h.gt(0.0)).unwrap_err();
    assert_error!(
        only(&err),
        IrError::BoolAsReal { node, .. } if node == "h > 0",
        &["`h > 0`", "select(cond, 1.0, 0.0)"]
    );
}

#[test]
fn spike_without_surrogate() {
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    b.output("s", b.spike(x - 1.0));
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::NoSurrogate { neuron } if neuron == "n",
        &["`spike`", "no surrogate", "NeuronBuilder::surrogate", "spike_with"]
    );
}

#[test]
fn spike_with_missing_surrogate_entry() {
    let mut ir = NeuronIr::new("n");
    ir.inputs = vec!["x".into()];
    ir.outputs = vec!["s".into()];
    let g = &mut ir.graph;
    let x = g.leaf(Leaf::Input(0));
    let s = g.add(Op::Spike(7), &[x]);
    g.sink(Sink::Output(0), s);
    let err = ir.validate().unwrap_err();
    assert_error!(
        only(&err),
        IrError::NoSurrogate { .. },
        &["`spike`", "no surrogate"]
    );
}

// ---------------------------------------------------------------------------------------
// Types of values

#[test]
fn comparison_used_as_number() {
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    b.output("y", x.gt(0.0) * 2.0);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::BoolAsReal { node, .. } if node == "x > 0",
        &["`x > 0`", "comparison", "select(cond, 1.0, 0.0)"]
    );
}

#[test]
fn number_used_as_select_condition() {
    let ir = with_output_z(|g, x| {
        let one = g.constant(1.0);
        let zero = g.constant(0.0);
        g.select(x, one, zero)
    });
    let err = ir.validate().unwrap_err();
    assert_error!(
        only(&err),
        IrError::RealAsBool { node, .. } if node == "select(x, 1, 0)",
        &["`select(x, 1, 0)`", "is a number", "compare it first"]
    );
}

#[test]
fn sink_used_as_operand() {
    let ir = with_output_z(|g, _| {
        let (_, out) = g.sinks()[0];
        g.unary(Unary::Neg, out)
    });
    let err = ir.validate().unwrap_err();
    assert_error!(
        only(&err),
        IrError::SinkAsOperand { sink, .. } if sink == "output #0",
        &["output #0", "used as an operand"]
    );
}

// ---------------------------------------------------------------------------------------
// Builder misuse

#[test]
fn set_on_non_state() {
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    let h = x + 1.0;
    h.set(x);
    b.output("y", h);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::SetNonState { value, .. } if value == "x + 1",
        &["`x + 1`", "not a state", "state(..)"]
    );
}

#[test]
fn state_initialised_from_non_param() {
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    let v = b.state("v", x * 2.0);
    v.set(v + x);
    b.output("y", v);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::InitNotParam { value, .. } if value == "x * 2",
        &["`x * 2`", "initial value", "a number or a param"]
    );
}

#[test]
fn state_initialised_from_undeclared_param() {
    let mut ir = valid_low_level("n");
    ir.states.push(StateSpec {
        name: "v".into(),
        init: Init::Param(4),
    });
    let g = &mut ir.graph;
    let v = g.leaf(Leaf::State(0));
    g.sink(Sink::NextState(0), v);
    let err = ir.validate().unwrap_err();
    assert_error!(
        only(&err),
        IrError::InitUndeclared { state, param: 4, .. } if state == "v",
        &["param #4", "`v`", "does not declare"]
    );
}

#[test]
fn non_finite_constant() {
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    b.output("y", x * f64::INFINITY);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::NonFiniteConst { value, .. } if value.is_infinite(),
        &["constant inf", "not a finite number"]
    );
}

#[test]
fn non_finite_exponent() {
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    b.output("y", x.powf(f64::NAN));
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::NonFiniteConst { value, .. } if value.is_nan(),
        &["NaN", "not a finite number"]
    );
}

#[test]
fn value_from_another_builder() {
    let other = NeuronBuilder::new("other");
    let y = other.input("y");
    let b = NeuronBuilder::new("n");
    let x = b.input("x");
    b.output("s", x + y);
    let err = b.finish().unwrap_err();
    assert_error!(
        only(&err),
        IrError::ForeignValue { neuron } if neuron == "n",
        &["`n`", "another builder", "belong to the builder that made them"]
    );
}

#[test]
fn many_mistakes_reported_together() {
    let b = NeuronBuilder::new("messy");
    let x = b.input("x");
    let _unused = b.input("2y");
    let v = b.state("v", 0.0); // never updated
    let h = (x + v).named("h");
    h.set(x); // not a state
    b.output("s", b.spike(h)); // no surrogate
    let err = b.finish().unwrap_err();
    assert!(matches!(err, IrError::Many(_)), "{err:?}");
    let list = err.list();
    let has = |f: &dyn Fn(&IrError) -> bool| list.iter().any(|e| f(e));
    assert!(
        has(&|e| matches!(e, IrError::SetNonState { value, .. } if value == "h")),
        "{list:?}"
    );
    assert!(
        has(&|e| matches!(e, IrError::NoSurrogate { .. })),
        "{list:?}"
    );
    assert!(
        has(&|e| matches!(e, IrError::BadName { name, .. } if name == "2y")),
        "{list:?}"
    );
    assert!(
        has(&|e| matches!(e, IrError::StateNotUpdated { state, .. } if state == "v")),
        "{list:?}"
    );
    assert!(
        has(&|e| matches!(e, IrError::UnusedInput { input, .. } if input == "2y")),
        "{list:?}"
    );
    assert_eq!(list.len(), 5, "{err}");
    let msg = err.to_string();
    assert_eq!(msg.lines().count(), 5, "one line per error:\n{msg}");
    says(&msg, &["`h`", "`spike`", "`2y`", "`v`"]);
}

// ---------------------------------------------------------------------------------------
// Hand-built graphs the builder cannot make

#[test]
fn undeclared_input_leaf() {
    let ir = with_output_z(|g, x| {
        let ghost = g.leaf(Leaf::Input(3));
        g.binary(Binary::Add, x, ghost)
    });
    let err = ir.validate().unwrap_err();
    assert_error!(
        only(&err),
        IrError::UndeclaredLeaf { leaf, .. } if leaf == "input #3",
        &["input #3", "not one of the neuron's declared inputs"]
    );
}

#[test]
fn backward_only_leaf_in_neuron() {
    let ir = with_output_z(|g, _| g.leaf(Leaf::Saved(0)));
    let err = ir.validate().unwrap_err();
    assert_error!(
        only(&err),
        IrError::UndeclaredLeaf { leaf, .. } if leaf == "saved #0",
        &["saved #0"]
    );
}

#[test]
fn backward_only_sink_in_neuron() {
    let mut ir = valid_low_level("n");
    let g = &mut ir.graph;
    let x = g.find_leaf(Leaf::Input(0)).unwrap();
    g.sink(Sink::InputGrad(0), x);
    let err = ir.validate().unwrap_err();
    assert_error!(
        only(&err),
        IrError::BadSink { sink, .. } if sink == "input gradient #0",
        &["input gradient #0", "not one of the neuron's declared outputs"]
    );
}

#[test]
fn arity_wrong_operand_counts() {
    let too_few = with_output_z(|g, x| g.add(Op::Binary(Binary::Add), &[x]));
    let err = too_few.validate().unwrap_err();
    assert_error!(
        only(&err),
        IrError::Arity {
            expected: 2,
            found: 1,
            ..
        },
        &["takes 2 operand(s)", "has 1"]
    );
    let too_many = with_output_z(|g, x| g.add(Op::Unary(Unary::Neg), &[x, x]));
    let err = too_many.validate().unwrap_err();
    assert_error!(
        only(&err),
        IrError::Arity {
            expected: 1,
            found: 2,
            ..
        },
        &["`-x`", "takes 1", "has 2"]
    );
}

#[test]
fn arity_sink_without_operand() {
    let mut ir = valid_low_level("n");
    ir.outputs.push("z".into());
    ir.graph.add(Op::Sink(Sink::Output(1)), &[]);
    let err = ir.validate().unwrap_err();
    assert!(
        err.list().iter().any(|e| matches!(
            e,
            IrError::Arity {
                expected: 1,
                found: 0,
                ..
            }
        )),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Storage

#[test]
fn storage_u8_saves() {
    let storage = Storage {
        io: Dtype::F32,
        spikes: Dtype::U8,
        saves: Dtype::U8,
    };
    let err = compile(&lif(), storage).unwrap_err();
    assert_error!(
        err,
        IrError::Storage(_),
        &["saved tensors", "f32, bf16 or f16"]
    );
}

#[test]
fn storage_u8_io() {
    let storage = Storage {
        io: Dtype::U8,
        spikes: Dtype::U8,
        saves: Dtype::F32,
    };
    let err = compile(&lif(), storage).unwrap_err();
    assert_error!(
        err,
        IrError::Storage(_),
        &["u8", "spikes", "f32, f16 or bf16"]
    );
}

#[test]
fn storage_u8_spikes_is_fine() {
    let storage = Storage {
        io: Dtype::F32,
        spikes: Dtype::U8,
        saves: Dtype::F32,
    };
    assert!(compile(&lif(), storage).is_ok());
}

// ---------------------------------------------------------------------------------------
// Params at run time

fn per_channel_lif() -> NeuronIr {
    let mut ir = lif();
    let p = ir.param_index("tau").unwrap();
    ir.params[p].shape = ParamShape::PerChannel;
    ir
}

const LAYOUT: Layout = Layout {
    channels: 3,
    inner: 4,
};

#[test]
fn param_values_of_wrong_length() {
    let ir = per_channel_lif();
    let mut params = Params::<f32>::defaults(&ir, LAYOUT);
    let err = params.set("tau", vec![2.0, 2.0]).unwrap_err();
    assert_error!(
        err,
        RunError::ParamLength { param, expected: 3, got: 2, .. } if param == "tau",
        &["`tau`", "per-channel", "needs 3 value(s)", "got 2"]
    );
    // The failed set leaves the old values.
    assert_eq!(params.get("tau").unwrap().len(), 3);
}

#[test]
fn param_values_of_wrong_length_after_layout_change() {
    let ir = per_channel_lif();
    let r = reference(&ir);
    let mut params = Params::<f32>::defaults(&ir, LAYOUT);
    params.layout = Layout {
        channels: 6,
        inner: 2,
    };
    let x = vec![Seq::zeros(4, 24)];
    let err = r.forward(&params, &x, None, Mode::Inference).unwrap_err();
    assert_error!(
        err,
        RunError::ParamLength { param, expected: 6, got: 3, .. } if param == "tau",
        &["`tau`", "needs 6 value(s)", "got 3"]
    );
}

#[test]
fn unknown_param_name() {
    let ir = lif();
    let mut params = Params::<f32>::defaults(&ir, LAYOUT);
    let err = params.set("taau", vec![2.0]).unwrap_err();
    assert_error!(
        err,
        RunError::UnknownParam { name, .. } if name == "taau",
        &["`taau`", "tau", "v_threshold"]
    );
}

#[test]
fn params_of_another_neuron() {
    let r = reference(&zoo::PaperLif::default().ir().unwrap());
    let params = Params::<f32>::defaults(&lif(), LAYOUT);
    let x = vec![Seq::zeros(4, 24)];
    let err = r.forward(&params, &x, None, Mode::Inference).unwrap_err();
    assert_error!(
        err,
        RunError::ParamsOfOtherNeuron { neuron } if neuron == "paper_lif",
        &["another neuron", "`paper_lif`", "Params::defaults"]
    );
}

#[test]
fn params_of_a_neuron_with_same_names_but_other_shapes() {
    // Same param names, but `tau` is per-channel here and scalar in the params: the params
    // do not fit this neuron and must be rejected, not silently broadcast.
    let r = reference(&per_channel_lif());
    let params = Params::<f32>::defaults(&lif(), LAYOUT);
    let x = vec![Seq::zeros(4, 24)];
    let res = r.forward(&params, &x, None, Mode::Inference);
    assert!(
        matches!(
            &res,
            Err(RunError::ParamsOfOtherNeuron { .. } | RunError::ParamLength { .. })
        ),
        "params with the wrong shapes were accepted: {:?}",
        res.map(|_| ())
    );
}

// ---------------------------------------------------------------------------------------
// Interpreter arguments

fn two_input_neuron() -> NeuronIr {
    let b = NeuronBuilder::new("pair");
    let x = b.input("x");
    let y = b.input("y");
    let v = b.state("v", 0.0);
    v.set(v + x * y);
    b.output("v", v);
    b.finish().unwrap()
}

#[test]
fn wrong_number_of_inputs() {
    let ir = lif();
    let r = reference(&ir);
    let params = Params::<f32>::defaults(&ir, LAYOUT);
    let x = vec![Seq::zeros(4, 24), Seq::zeros(4, 24)];
    let err = r.forward(&params, &x, None, Mode::Inference).unwrap_err();
    assert_error!(
        err,
        RunError::Count {
            what: "inputs",
            expected: 1,
            got: 2,
            ..
        },
        &["`lif`", "takes 1, got 2", "got 2"]
    );
}

#[test]
fn no_inputs_for_a_neuron_that_takes_one() {
    let ir = lif();
    let r = reference(&ir);
    let params = Params::<f32>::defaults(&ir, LAYOUT);
    let err = r.forward(&params, &[], None, Mode::Inference).unwrap_err();
    assert!(
        matches!(
            &err,
            RunError::Count {
                expected: 1,
                got: 0,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn input_of_wrong_shape() {
    let ir = two_input_neuron();
    let r = reference(&ir);
    let params = Params::<f32>::defaults(&ir, LAYOUT);
    let x = vec![Seq::zeros(4, 24), Seq::zeros(4, 12)];
    let err = r.forward(&params, &x, None, Mode::Inference).unwrap_err();
    assert_error!(
        err,
        RunError::Shape { what, steps: 4, n: 24, got_steps: 4, got_n: 12 } if what == "input `y`",
        &["input `y`", "[4, 12]", "expected [4, 24]"]
    );
}

#[test]
fn input_with_data_of_wrong_length() {
    let ir = lif();
    let r = reference(&ir);
    let params = Params::<f32>::defaults(&ir, LAYOUT);
    let bad = Seq {
        steps: 4,
        n: 24,
        data: vec![0.0f32; 90],
    };
    let err = r
        .forward(&params, &[bad], None, Mode::Inference)
        .unwrap_err();
    assert_error!(
        err,
        RunError::Shape { .. } | RunError::Length { .. },
        &["input `x`"]
    );
}

#[test]
fn seq_new_checks_length() {
    let err = Seq::new(4, 24, vec![0.0f32; 90]).unwrap_err();
    assert_error!(
        err,
        RunError::Length {
            expected: 96,
            got: 90,
            ..
        },
        &["90 values", "expected 96"]
    );
}

#[test]
fn elements_not_a_multiple_of_the_layout() {
    let ir = lif();
    let r = reference(&ir);
    let params = Params::<f32>::defaults(&ir, LAYOUT);
    let x = vec![Seq::zeros(4, 10)];
    let err = r.forward(&params, &x, None, Mode::Inference).unwrap_err();
    assert_error!(
        err,
        RunError::Layout { n: 10, neurons: 12 },
        &["10 elements", "12 neurons", "fix the layout"]
    );
}

#[test]
fn empty_layout() {
    let ir = lif();
    let r = reference(&ir);
    let params = Params::<f32>::defaults(
        &ir,
        Layout {
            channels: 0,
            inner: 4,
        },
    );
    let x = vec![Seq::zeros(4, 8)];
    let err = r.forward(&params, &x, None, Mode::Inference).unwrap_err();
    assert!(
        matches!(&err, RunError::Layout { neurons: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn initial_states_of_wrong_count_and_length() {
    let ir = lif();
    let r = reference(&ir);
    let params = Params::<f32>::defaults(&ir, LAYOUT);
    let x = vec![Seq::zeros(4, 24)];
    let two = vec![vec![0.0f32; 24]; 2];
    let err = r
        .forward(&params, &x, Some(&two), Mode::Inference)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RunError::Count {
                what: "initial states",
                expected: 1,
                got: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let short = vec![vec![0.0f32; 5]];
    let err = r
        .forward(&params, &x, Some(&short), Mode::Inference)
        .unwrap_err();
    assert_error!(
        err,
        RunError::Length {
            expected: 24,
            got: 5,
            ..
        },
        &["initial states", "5 values", "expected 24"]
    );
}

#[test]
fn backward_on_inference_forward() {
    let ir = lif();
    let r = reference(&ir);
    assert!(
        !r.compiled().plan.saves.is_empty(),
        "the LIF's plan saves something"
    );
    let params = Params::<f32>::defaults(&ir, LAYOUT);
    let x = vec![Seq::zeros(4, 24)];
    let fwd = r.forward(&params, &x, None, Mode::Inference).unwrap();
    let dy = vec![Seq::zeros(4, 24)];
    let err = r.backward(&params, &x, None, &fwd, &dy, None).unwrap_err();
    assert_eq!(err, RunError::NoSaves);
    says(&err.to_string(), &["saved tensors", "Mode::Train"]);
}

#[test]
fn backward_with_wrong_number_of_output_gradients() {
    let ir = lif();
    let r = reference(&ir);
    let params = Params::<f32>::defaults(&ir, LAYOUT);
    let x = vec![Seq::zeros(4, 24)];
    let fwd = r.forward(&params, &x, None, Mode::Train).unwrap();
    let err = r.backward(&params, &x, None, &fwd, &[], None).unwrap_err();
    assert!(
        matches!(
            &err,
            RunError::Count {
                what: "output gradients",
                expected: 1,
                got: 0,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn forward_of_a_neuron_without_inputs() {
    // A neuron may have no inputs (a pacemaker); the interpreter then cannot tell T and N
    // from the inputs, but must not panic.
    let b = NeuronBuilder::new("pacemaker");
    let v = b.state("v", 0.0);
    v.set(v + 1.0);
    b.output("v", v);
    let ir = b.finish().unwrap();
    let r = reference(&ir);
    let params = Params::<f32>::defaults(&ir, LAYOUT);
    let res = within_time(move || r.forward(&params, &[], None, Mode::Inference).map(|_| ()));
    let err = res.unwrap_err();
    assert!(matches!(err, RunError::NoInputs { .. }), "{err:?}");
    assert!(err.to_string().contains("pacemaker"), "{err}");
}

#[test]
fn hand_built_valid_neuron_compiles_and_runs() {
    // Sanity: a hand-built valid neuron with a param compiles and runs.
    let mut ir = valid_low_level("n");
    ir.params.push(ParamSpec::new("k", 2.0));
    let g = &mut ir.graph;
    let x = g.find_leaf(Leaf::Input(0)).unwrap();
    let k = g.leaf(Leaf::Param(0));
    let kx = g.binary(Binary::Mul, k, x);
    ir.outputs.push("z".into());
    g.sink(Sink::Output(1), kx);
    ir.validate().unwrap();
    let r = reference(&ir);
    let params = Params::<f32>::defaults(&ir, LAYOUT);
    let out = r
        .forward(&params, &[Seq::zeros(2, 12)], None, Mode::Inference)
        .unwrap();
    assert_eq!(out.outputs.len(), 2);
}
