//! The builder API: write a neuron's step as ordinary arithmetic on traced [`Value`]s.
//!
//! ```
//! use snn_codegen::{NeuronBuilder, Surrogate};
//!
//! let b = NeuronBuilder::new("paper_lif").surrogate(Surrogate::rect(0.5));
//! let x = b.input("x");
//! let v = b.state("v", 0.0);
//! let y = b.state("y", 0.0);
//! let decay = b.param("decay", 0.2);
//! let threshold = b.param("threshold", 0.3);
//! let rest = b.param("rest", 0.0);
//! let h = (decay * v * (1.0 - y) + rest * y + x).named("h");
//! let s = b.spike(h - threshold).named("s");
//! v.set(h);
//! y.set(s);
//! b.output("s", s);
//! let lif = b.finish()?;
//! assert_eq!(lif.states.len(), 2);
//! # Ok::<(), snn_codegen::IrError>(())
//! ```
//!
//! Mistakes are recorded, not panicked on, and [`NeuronBuilder::finish`] reports them all
//! together with the neuron's own validation.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::ops;

use crate::error::IrError;
use crate::ir::{
    Binary, Cmp, CustomSurrogate, Init, Leaf, NeuronIr, NodeId, Op, ParamShape, ParamSpec, Sink,
    StateSpec, Surrogate, Unary,
};
use crate::print::Printer;

/// Builds a [`NeuronIr`]. Values borrow the builder, so they are `Copy` and combine with
/// the usual operators.
pub struct NeuronBuilder {
    inner: RefCell<Inner>,
}

struct Inner {
    ir: NeuronIr,
    surrogate: Option<Surrogate>,
    leaves: BTreeMap<Leaf, NodeId>,
    errors: Vec<IrError>,
}

impl fmt::Debug for NeuronBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NeuronBuilder")
            .field("name", &self.inner.borrow().ir.name)
            .finish_non_exhaustive()
    }
}

/// A parameter's declaration without its name: default, shape and whether it learns.
///
/// `b.param("decay", 0.2)` declares a fixed scalar; `ParamDecl::learnable(2.0).per_channel()`
/// a learnable per-channel one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamDecl {
    pub default: f64,
    pub shape: ParamShape,
    pub learnable: bool,
}

impl ParamDecl {
    pub fn fixed(default: f64) -> Self {
        Self {
            default,
            shape: ParamShape::Scalar,
            learnable: false,
        }
    }
    pub fn learnable(default: f64) -> Self {
        Self {
            learnable: true,
            ..Self::fixed(default)
        }
    }
    pub fn per_channel(self) -> Self {
        Self {
            shape: ParamShape::PerChannel,
            ..self
        }
    }
    pub fn per_neuron(self) -> Self {
        Self {
            shape: ParamShape::PerNeuron,
            ..self
        }
    }
    pub fn with_shape(self, shape: ParamShape) -> Self {
        Self { shape, ..self }
    }
    fn describe(&self) -> String {
        let l = if self.learnable { "learnable" } else { "fixed" };
        format!("{l} {} with default {}", self.shape, self.default)
    }
}

impl From<f64> for ParamDecl {
    fn from(default: f64) -> Self {
        Self::fixed(default)
    }
}

impl NeuronBuilder {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            inner: RefCell::new(Inner {
                ir: NeuronIr::new(name),
                surrogate: None,
                leaves: BTreeMap::new(),
                errors: Vec::new(),
            }),
        }
    }

    /// Documentation carried into the IR (and into generated kernels' headers).
    pub fn doc(self, doc: impl Into<String>) -> Self {
        self.inner.borrow_mut().ir.doc = doc.into();
        self
    }

    /// The surrogate that [`NeuronBuilder::spike`] uses.
    pub fn surrogate(self, s: Surrogate) -> Self {
        self.inner.borrow_mut().surrogate = Some(s);
        self
    }

    /// The value of node `id` of this builder's graph: how bindings that hold node ids
    /// (Python's traced values) come back to values.
    pub fn value(&self, id: NodeId) -> Value<'_> {
        Value { id, b: self }
    }

    fn leaf(&self, leaf: Leaf) -> Value<'_> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let id = *inner
            .leaves
            .entry(leaf)
            .or_insert_with(|| inner.ir.graph.leaf(leaf));
        self.value(id)
    }

    fn push(&self, op: Op, args: &[NodeId]) -> Value<'_> {
        let id = self.inner.borrow_mut().ir.graph.add(op, args);
        self.value(id)
    }

    fn error(&self, make: impl FnOnce(String) -> IrError) {
        let mut inner = self.inner.borrow_mut();
        let e = make(inner.ir.name.clone());
        inner.errors.push(e);
    }

    /// Declares an input, read at every step.
    pub fn input(&self, name: impl Into<String>) -> Value<'_> {
        let k = {
            let mut inner = self.inner.borrow_mut();
            inner.ir.inputs.push(name.into());
            inner.ir.inputs.len() - 1
        };
        self.leaf(Leaf::Input(k as u32))
    }

    /// Declares a state; the value returned is the state before the step. `init` is a number
    /// or a param value.
    pub fn state<'a>(&'a self, name: impl Into<String>, init: impl IntoInit<'a>) -> Value<'a> {
        let name = name.into();
        let init = init.into_init(self).unwrap_or_else(|value| {
            let state = name.clone();
            self.error(|neuron| IrError::InitNotParam {
                neuron,
                state,
                value,
            });
            Init::Const(0.0)
        });
        let k = {
            let mut inner = self.inner.borrow_mut();
            inner.ir.states.push(StateSpec { name, init });
            inner.ir.states.len() - 1
        };
        self.leaf(Leaf::State(k as u32))
    }

    /// Declares a parameter (or returns the one already declared with this name and spec).
    pub fn param(&self, name: impl Into<String>, decl: impl Into<ParamDecl>) -> Value<'_> {
        let name = name.into();
        let decl = decl.into();
        let spec = ParamSpec {
            name: name.clone(),
            shape: decl.shape,
            learnable: decl.learnable,
            default: decl.default,
        };
        let existing = self.inner.borrow().ir.param_index(&name);
        let k = match existing {
            Some(k) => {
                let first = self.inner.borrow().ir.params[k].clone();
                if first != spec {
                    let first = ParamDecl {
                        default: first.default,
                        shape: first.shape,
                        learnable: first.learnable,
                    };
                    self.error(|neuron| IrError::ParamRedeclared {
                        neuron,
                        param: name,
                        first: first.describe(),
                        second: decl.describe(),
                    });
                }
                k
            }
            None => {
                let mut inner = self.inner.borrow_mut();
                inner.ir.params.push(spec);
                inner.ir.params.len() - 1
            }
        };
        self.leaf(Leaf::Param(k as u32))
    }

    pub fn constant(&self, c: f64) -> Value<'_> {
        self.push(Op::Const(c), &[])
    }

    /// Declares an output and gives it its value.
    pub fn output<'a>(&'a self, name: impl Into<String>, value: impl IntoValue<'a>) {
        let v = value.into_value(self);
        let m = {
            let mut inner = self.inner.borrow_mut();
            inner.ir.outputs.push(name.into());
            inner.ir.outputs.len() - 1
        };
        self.push(Op::Sink(Sink::Output(m as u32)), &[v.id]);
    }

    /// `1` where `h >= 0`, else `0`; backward, the neuron's surrogate derivative.
    pub fn spike<'a>(&'a self, h: impl IntoValue<'a>) -> Value<'a> {
        let s = self.inner.borrow().surrogate.clone();
        match s {
            Some(s) => self.spike_with(h, s),
            None => {
                self.error(|neuron| IrError::NoSurrogate { neuron });
                h.into_value(self)
            }
        }
    }

    /// [`NeuronBuilder::spike`] with an explicit surrogate.
    pub fn spike_with<'a>(&'a self, h: impl IntoValue<'a>, s: Surrogate) -> Value<'a> {
        let h = h.into_value(self);
        let k = self.inner.borrow_mut().ir.graph.add_surrogate(s);
        self.push(Op::Spike(k), &[h.id])
    }

    /// The neuron, validated. Returns every mistake made while building.
    pub fn finish(self) -> Result<NeuronIr, IrError> {
        let inner = self.inner.into_inner();
        let mut errors = inner.errors;
        if let Err(e) = inner.ir.validate() {
            errors.extend(e.list().into_iter().cloned());
        }
        IrError::from_list(errors)?;
        Ok(inner.ir)
    }
}

/// A value of the step being built.
#[derive(Clone, Copy)]
pub struct Value<'a> {
    id: NodeId,
    b: &'a NeuronBuilder,
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value({})", self.expr())
    }
}

/// Anything that can stand where a value is expected: values and numbers.
pub trait IntoValue<'a> {
    fn into_value(self, b: &'a NeuronBuilder) -> Value<'a>;
}

impl<'a> IntoValue<'a> for Value<'a> {
    fn into_value(self, b: &'a NeuronBuilder) -> Value<'a> {
        if std::ptr::eq(self.b, b) {
            self
        } else {
            b.error(|neuron| IrError::ForeignValue { neuron });
            b.constant(0.0)
        }
    }
}

impl<'a> IntoValue<'a> for f64 {
    fn into_value(self, b: &'a NeuronBuilder) -> Value<'a> {
        b.constant(self)
    }
}

/// A `#[neuron_helper]` function as a `#[neuron]` step calls it: the step's builder, then
/// the arguments as written (`Args`, a tuple). Every function of a helper's generated shape
/// (`fn(&NeuronBuilder, ..) -> ..`) is one; a plain Rust function is not, and calling one
/// in a step is this trait's compile error, which says what to write instead.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is a plain Rust function, which a neuron step cannot call with traced values",
    label = "not a `#[neuron_helper]` function",
    note = "a step calls its own operations (`x.exp()`, `spike(h)`, `select(c, a, b)`, ..) and functions marked `#[neuron_helper]` (parameters `Real` or `f64`, returning `Real`)"
)]
pub trait NeuronHelper<'a, Args> {
    type Output;
    fn call(&self, b: &'a NeuronBuilder, args: Args) -> Self::Output;
}

/// [`NeuronHelper`] for functions of up to eight arguments.
macro_rules! neuron_helper_arities {
    ($($arg:ident),*) => {
        impl<'a, F, R, $($arg),*> NeuronHelper<'a, ($($arg,)*)> for F
        where
            F: Fn(&'a NeuronBuilder, $($arg),*) -> R,
        {
            type Output = R;
            #[allow(non_snake_case)]
            fn call(&self, b: &'a NeuronBuilder, ($($arg,)*): ($($arg,)*)) -> R {
                self(b, $($arg),*)
            }
        }
    };
}

neuron_helper_arities!();
neuron_helper_arities!(A1);
neuron_helper_arities!(A1, A2);
neuron_helper_arities!(A1, A2, A3);
neuron_helper_arities!(A1, A2, A3, A4);
neuron_helper_arities!(A1, A2, A3, A4, A5);
neuron_helper_arities!(A1, A2, A3, A4, A5, A6);
neuron_helper_arities!(A1, A2, A3, A4, A5, A6, A7);
neuron_helper_arities!(A1, A2, A3, A4, A5, A6, A7, A8);

/// A state's initial value: a number or a param.
pub trait IntoInit<'a> {
    /// The initial value, or the printed value that cannot be one.
    fn into_init(self, b: &'a NeuronBuilder) -> Result<Init, String>;
}

impl<'a> IntoInit<'a> for f64 {
    fn into_init(self, _: &'a NeuronBuilder) -> Result<Init, String> {
        Ok(Init::Const(self))
    }
}

impl<'a> IntoInit<'a> for Value<'a> {
    fn into_init(self, b: &'a NeuronBuilder) -> Result<Init, String> {
        let v = self.into_value(b);
        match v.op() {
            Op::Leaf(Leaf::Param(p)) => Ok(Init::Param(p)),
            _ => Err(v.expr()),
        }
    }
}

impl<'a> Value<'a> {
    /// The node this value is.
    pub fn id(self) -> NodeId {
        self.id
    }

    /// The builder this value belongs to (the `#[neuron]` macro reaches it this way inside
    /// custom surrogates).
    pub fn builder(self) -> &'a NeuronBuilder {
        self.b
    }

    fn op(self) -> Op {
        self.b.inner.borrow().ir.graph.op(self.id)
    }

    fn expr(self) -> String {
        let inner = self.b.inner.borrow();
        let ir = &inner.ir;
        Printer::new(&ir.graph, |l| ir.leaf_name(l), |s| ir.sink_label(s)).expr(self.id)
    }

    fn other(self, o: impl IntoValue<'a>) -> NodeId {
        o.into_value(self.b).id
    }

    fn unary(self, op: Unary) -> Self {
        self.b.push(Op::Unary(op), &[self.id])
    }

    fn binary(self, op: Binary, o: impl IntoValue<'a>) -> Self {
        let o = self.other(o);
        self.b.push(Op::Binary(op), &[self.id, o])
    }

    fn cmp(self, op: Cmp, o: impl IntoValue<'a>) -> Self {
        let o = self.other(o);
        self.b.push(Op::Cmp(op), &[self.id, o])
    }

    /// Names the value unless it already has a name (what `let` does in `#[neuron]`: in
    /// `let o = h;` the value keeps the name `h`).
    pub fn or_named(self, name: impl Into<String>) -> Self {
        let named = self.b.inner.borrow().ir.graph.name(self.id).is_some();
        if named { self } else { self.named(name) }
    }

    /// Names the value: the printer and generated code use the name.
    pub fn named(self, name: impl Into<String>) -> Self {
        self.b
            .inner
            .borrow_mut()
            .ir
            .graph
            .set_name(self.id, Some(name.into()));
        self
    }

    /// Gives this state its value after the step. Only states can be set.
    pub fn set(self, new: impl IntoValue<'a>) {
        let new = self.other(new);
        match self.op() {
            Op::Leaf(Leaf::State(j)) => {
                self.b.push(Op::Sink(Sink::NextState(j)), &[new]);
            }
            _ => {
                let value = self.expr();
                self.b
                    .error(|neuron| IrError::SetNonState { neuron, value });
            }
        }
    }

    pub fn min(self, o: impl IntoValue<'a>) -> Self {
        self.binary(Binary::Min, o)
    }
    pub fn max(self, o: impl IntoValue<'a>) -> Self {
        self.binary(Binary::Max, o)
    }
    pub fn clamp(self, lo: impl IntoValue<'a>, hi: impl IntoValue<'a>) -> Self {
        let (lo, hi) = (self.other(lo), self.other(hi));
        self.b.push(Op::Clamp, &[self.id, lo, hi])
    }
    /// `self ^ exponent`; the exponent is a constant.
    pub fn powf(self, exponent: f64) -> Self {
        self.b.push(Op::Powf(exponent), &[self.id])
    }
    /// `a` where this comparison holds, else `b`.
    pub fn select(self, a: impl IntoValue<'a>, b: impl IntoValue<'a>) -> Self {
        let (a, b) = (self.other(a), self.other(b));
        self.b.push(Op::Select, &[self.id, a, b])
    }
    /// The same value, with no gradient flowing back through it.
    pub fn detach(self) -> Self {
        self.unary_op(Op::Detach)
    }

    fn unary_op(self, op: Op) -> Self {
        self.b.push(op, &[self.id])
    }
}

/// Methods that are one op: `unary` on the value, `cmp` of it and another value.
macro_rules! op_methods {
    ($($(#[$doc:meta])* $name:ident($kind:ident $op:expr $(, $o:ident)?);)*) => {
        impl<'a> Value<'a> {
            $(
                $(#[$doc])*
                pub fn $name(self $(, $o: impl IntoValue<'a>)?) -> Self {
                    self.$kind($op $(, $o)?)
                }
            )*
        }
    };
}

op_methods! {
    exp(unary Unary::Exp);
    /// The natural logarithm.
    ln(unary Unary::Log);
    sqrt(unary Unary::Sqrt);
    tanh(unary Unary::Tanh);
    atan(unary Unary::Atan);
    /// `1 / (1 + exp(-x))`.
    sigmoid(unary Unary::Sigmoid);
    abs(unary Unary::Abs);
    /// `self < o`, a condition for [`Value::select`].
    lt(cmp Cmp::Lt, o);
    /// `self <= o`.
    le(cmp Cmp::Le, o);
    /// `self > o`.
    gt(cmp Cmp::Gt, o);
    /// `self >= o`.
    ge(cmp Cmp::Ge, o);
    /// `self == o`.
    eq(cmp Cmp::Eq, o);
    /// `self != o`.
    ne(cmp Cmp::Ne, o);
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $op:expr) => {
        impl<'a> ops::$trait<Value<'a>> for Value<'a> {
            type Output = Value<'a>;
            fn $method(self, o: Value<'a>) -> Value<'a> {
                self.binary($op, o)
            }
        }
        impl<'a> ops::$trait<f64> for Value<'a> {
            type Output = Value<'a>;
            fn $method(self, o: f64) -> Value<'a> {
                self.binary($op, o)
            }
        }
        impl<'a> ops::$trait<Value<'a>> for f64 {
            type Output = Value<'a>;
            fn $method(self, o: Value<'a>) -> Value<'a> {
                o.b.constant(self).binary($op, o)
            }
        }
    };
}

binary_operator!(Add, add, Binary::Add);
binary_operator!(Sub, sub, Binary::Sub);
binary_operator!(Mul, mul, Binary::Mul);
binary_operator!(Div, div, Binary::Div);

impl<'a> ops::Neg for Value<'a> {
    type Output = Value<'a>;
    fn neg(self) -> Value<'a> {
        self.unary(Unary::Neg)
    }
}

impl Surrogate {
    /// A surrogate whose derivative is the expression `f(h)`.
    ///
    /// ```
    /// use snn_codegen::Surrogate;
    /// // SpikingJelly's ATan with alpha = 2, written out.
    /// let s = Surrogate::custom(|h| 1.0 / (1.0 + (std::f64::consts::FRAC_PI_2 * 2.0 * h) * (std::f64::consts::FRAC_PI_2 * 2.0 * h)))?;
    /// assert!((s.derivative(0.0) - 1.0).abs() < 1e-12);
    /// # Ok::<(), snn_codegen::IrError>(())
    /// ```
    pub fn custom(f: impl for<'a> FnOnce(Value<'a>) -> Value<'a>) -> Result<Surrogate, IrError> {
        let b = NeuronBuilder::new("custom_surrogate");
        let h = b.input("h");
        let d = f(h);
        b.output("dh", d);
        let ir = b.finish()?;
        // `finish` validated the neuron, so its one output is set.
        let text = {
            let printer = Printer::new(&ir.graph, |l| ir.leaf_name(l), |s| ir.sink_label(s));
            ir.graph
                .sink_value(Sink::Output(0))
                .map_or_else(String::new, |out| printer.inline(out))
        };
        let s = Surrogate::Custom(CustomSurrogate::new(ir.graph, text));
        s.check().map_err(|problem| IrError::BadSurrogate {
            neuron: "custom_surrogate".into(),
            surrogate: s.to_string(),
            problem,
        })?;
        Ok(s)
    }
}
