//! The operations of the step graph.

use std::fmt;

/// A graph leaf: a value that enters the step from outside.
///
/// Forward graphs use `Input`, `State` and `Param`. Backward graphs (see [`crate::autodiff`])
/// also read `Saved` tensors, re-read forward `OutputValue`s, and take the gradients
/// `OutputGrad` and `StateGrad` (the state adjoint arriving from step `t + 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Leaf {
    /// Input `k` at step `t`.
    Input(u32),
    /// State `j` as it was after step `t - 1` (its initial value at `t = 0`).
    State(u32),
    /// Parameter `p`, constant over time.
    Param(u32),
    /// Saved tensor `k` of the memory plan at step `t` (backward only).
    Saved(u32),
    /// Forward output `m` at step `t`, read back (backward only).
    OutputValue(u32),
    /// `dL/dy_m[t]` (backward only).
    OutputGrad(u32),
    /// `dL/ds_j[t]`, the adjoint of state `j` arriving from step `t + 1` (backward only).
    StateGrad(u32),
}

/// A graph sink: a value that leaves the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Sink {
    /// Output `m` at step `t`.
    Output(u32),
    /// The new value of state `j` (its value after step `t`).
    NextState(u32),
    /// Saved tensor `k` of the memory plan (forward-train only).
    Save(u32),
    /// `dL/dx_k[t]` (backward only).
    InputGrad(u32),
    /// `dL/ds_j[t - 1]`, the state adjoint passed to the previous step (backward only).
    StateGradOut(u32),
    /// This element-step's contribution to `dL/dp` (backward only; summed over time and over
    /// the elements that share the parameter).
    ParamGrad(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Unary {
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Atan,
    Sigmoid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

/// Comparisons produce booleans, which only `select` consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// What a node computes. Operands are the node's incoming edges, ordered by slot.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Op {
    Leaf(Leaf),
    Const(f64),
    Unary(Unary),
    Binary(Binary),
    Cmp(Cmp),
    /// `x ^ exponent`, the exponent a compile-time constant.
    Powf(f64),
    /// `clamp(x, lo, hi)`.
    Clamp,
    /// `select(cond, a, b)`: `a` where `cond` holds, else `b`.
    Select,
    /// Heaviside step `h >= 0 ? 1 : 0` forward; the graph's surrogate number `.0` backward.
    Spike(u32),
    /// The identity forward, no gradient backward.
    Detach,
    Sink(Sink),
}

/// The type of a value: every value is real except comparison results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Real,
    Bool,
}

impl Op {
    /// How many operands the op takes.
    pub fn arity(self) -> usize {
        match self {
            Op::Leaf(_) | Op::Const(_) => 0,
            Op::Unary(_) | Op::Powf(_) | Op::Spike(_) | Op::Detach | Op::Sink(_) => 1,
            Op::Binary(_) | Op::Cmp(_) => 2,
            Op::Clamp | Op::Select => 3,
        }
    }

    /// The type of the op's result (`None` for sinks, which produce no value).
    pub fn ty(self) -> Option<Ty> {
        match self {
            Op::Sink(_) => None,
            Op::Cmp(_) => Some(Ty::Bool),
            _ => Some(Ty::Real),
        }
    }

    /// The type each operand must have.
    pub fn operand_ty(self, slot: usize) -> Ty {
        match (self, slot) {
            (Op::Select, 0) => Ty::Bool,
            _ => Ty::Real,
        }
    }

    pub fn is_commutative(self) -> bool {
        matches!(
            self,
            Op::Binary(Binary::Add | Binary::Mul | Binary::Min | Binary::Max)
                | Op::Cmp(Cmp::Eq | Cmp::Ne)
        )
    }

    /// Ops whose result jumps: recomputing them from rounded inputs may change the result.
    pub fn is_discontinuous(self) -> bool {
        matches!(self, Op::Spike(_) | Op::Cmp(_))
    }

    pub fn leaf(self) -> Option<Leaf> {
        match self {
            Op::Leaf(l) => Some(l),
            _ => None,
        }
    }

    pub fn sink(self) -> Option<Sink> {
        match self {
            Op::Sink(s) => Some(s),
            _ => None,
        }
    }

    /// A short name for messages: the operator symbol or function name.
    pub fn describe(self) -> String {
        match self {
            Op::Leaf(l) => l.to_string(),
            Op::Const(c) => c.to_string(),
            Op::Unary(u) => u.name().to_string(),
            Op::Binary(b) => b.symbol().to_string(),
            Op::Cmp(c) => c.symbol().to_string(),
            Op::Powf(_) => "pow".into(),
            Op::Clamp => "clamp".into(),
            Op::Select => "select".into(),
            Op::Spike(_) => "spike".into(),
            Op::Detach => "detach".into(),
            Op::Sink(s) => s.to_string(),
        }
    }

    /// A hashable identity of the op, for common-subexpression elimination.
    pub(crate) fn key(self) -> OpKey {
        match self {
            Op::Const(c) => OpKey::Const(c.to_bits()),
            Op::Powf(e) => OpKey::Powf(e.to_bits()),
            other => OpKey::Other(format!("{other:?}")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum OpKey {
    Const(u64),
    Powf(u64),
    Other(String),
}

impl Leaf {
    /// Whether the backward reads this leaf from a `[T, N]` tensor at each step.
    pub fn is_stream(self) -> bool {
        matches!(self, Leaf::Saved(_) | Leaf::Input(_) | Leaf::OutputValue(_))
    }
}

impl Unary {
    pub fn name(self) -> &'static str {
        match self {
            Unary::Neg => "neg",
            Unary::Abs => "abs",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Sqrt => "sqrt",
            Unary::Tanh => "tanh",
            Unary::Atan => "atan",
            Unary::Sigmoid => "sigmoid",
        }
    }

    pub fn eval(self, x: f64) -> f64 {
        match self {
            Unary::Neg => -x,
            Unary::Abs => x.abs(),
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Tanh => x.tanh(),
            Unary::Atan => x.atan(),
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }
}

impl Binary {
    pub fn symbol(self) -> &'static str {
        match self {
            Binary::Add => "+",
            Binary::Sub => "-",
            Binary::Mul => "*",
            Binary::Div => "/",
            Binary::Min => "min",
            Binary::Max => "max",
        }
    }

    pub fn eval(self, a: f64, b: f64) -> f64 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Min => a.min(b),
            Binary::Max => a.max(b),
        }
    }
}

impl Cmp {
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }

    pub fn eval(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
        }
    }
}

impl fmt::Display for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leaf::Input(i) => write!(f, "input #{i}"),
            Leaf::State(i) => write!(f, "state #{i}"),
            Leaf::Param(i) => write!(f, "param #{i}"),
            Leaf::Saved(i) => write!(f, "saved #{i}"),
            Leaf::OutputValue(i) => write!(f, "output value #{i}"),
            Leaf::OutputGrad(i) => write!(f, "output gradient #{i}"),
            Leaf::StateGrad(i) => write!(f, "state gradient #{i}"),
        }
    }
}

impl fmt::Display for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Output(i) => write!(f, "output #{i}"),
            Sink::NextState(i) => write!(f, "next state #{i}"),
            Sink::Save(i) => write!(f, "save #{i}"),
            Sink::InputGrad(i) => write!(f, "input gradient #{i}"),
            Sink::StateGradOut(i) => write!(f, "state gradient out #{i}"),
            Sink::ParamGrad(i) => write!(f, "param gradient #{i}"),
        }
    }
}
