//! Neurons declared in Python: a step function runs once on symbolic values ([`Sym`]), and
//! every operation on them is recorded through the Rust [`NeuronBuilder`], as `#[neuron]`
//! records a Rust step. A value keeps its builder's handle and its node; operations mixing
//! neurons, or using a traced value as a Python `bool` (an `if` on it), raise at the line
//! that does it.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use snn_codegen::ir::NodeId;
use snn_codegen::{NeuronBuilder, ParamDecl, Surrogate, Value};

use crate::{Neuron, PARAM_SHAPES, value_error};

/// The builder of one neuron being traced.
#[pyclass(module = "snn._native", unsendable)]
pub(crate) struct Tracer {
    /// Taken by `finish`.
    builder: Option<NeuronBuilder>,
}

/// A traced value: node `id` of `tracer`'s graph.
#[pyclass(module = "snn._native", unsendable)]
pub(crate) struct Sym {
    tracer: Py<Tracer>,
    id: NodeId,
}

impl Tracer {
    fn builder(&self) -> PyResult<&NeuronBuilder> {
        self.builder.as_ref().ok_or_else(already_built)
    }
}

fn already_built() -> PyErr {
    PyValueError::new_err("this neuron is already built: trace a new one to change it")
}

/// What an operand is: a traced value of the same neuron, or a number.
enum Operand {
    Sym(NodeId),
    Number(f64),
}

fn operand(tracer: &Py<Tracer>, o: &Bound<'_, PyAny>) -> PyResult<Operand> {
    if let Ok(s) = o.cast::<Sym>() {
        let s = s.borrow();
        if !s.tracer.is(tracer) {
            return Err(PyValueError::new_err(
                "this value belongs to another neuron: a step combines only its own values",
            ));
        }
        return Ok(Operand::Sym(s.id));
    }
    match o.extract::<f64>() {
        Ok(v) => Ok(Operand::Number(v)),
        Err(_) => Err(PyTypeError::new_err(format!(
            "a neuron step computes with its traced values and numbers, not {}",
            o.get_type().name()?
        ))),
    }
}

fn value<'b>(b: &'b NeuronBuilder, o: &Operand) -> Value<'b> {
    match *o {
        Operand::Sym(id) => b.value(id),
        Operand::Number(v) => b.constant(v),
    }
}

impl Sym {
    /// `f` applied to this value and `others` in the tracer's builder, as a new value.
    fn apply(
        &self,
        py: Python<'_>,
        others: &[&Bound<'_, PyAny>],
        f: impl for<'b> FnOnce(Value<'b>, &[Value<'b>]) -> Value<'b>,
    ) -> PyResult<Sym> {
        let ops = others
            .iter()
            .map(|o| operand(&self.tracer, o))
            .collect::<PyResult<Vec<_>>>()?;
        let tracer = self.tracer.borrow(py);
        let b = tracer.builder()?;
        let args: Vec<Value<'_>> = ops.iter().map(|o| value(b, o)).collect();
        let id = f(b.value(self.id), &args).id();
        Ok(Sym {
            tracer: self.tracer.clone_ref(py),
            id,
        })
    }

    /// `o (op) self` for a number `o` (Python's reflected operators).
    fn reflected(
        &self,
        py: Python<'_>,
        o: &Bound<'_, PyAny>,
        f: impl for<'b> FnOnce(Value<'b>, Value<'b>) -> Value<'b>,
    ) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| f(a[0], v))
    }
}

#[pymethods]
impl Sym {
    fn __add__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| v + a[0])
    }
    fn __radd__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.reflected(py, o, |a, v| a + v)
    }
    fn __sub__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| v - a[0])
    }
    fn __rsub__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.reflected(py, o, |a, v| a - v)
    }
    fn __mul__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| v * a[0])
    }
    fn __rmul__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.reflected(py, o, |a, v| a * v)
    }
    fn __truediv__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| v / a[0])
    }
    fn __rtruediv__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.reflected(py, o, |a, v| a / v)
    }
    fn __neg__(&self, py: Python<'_>) -> PyResult<Sym> {
        self.apply(py, &[], |v, _| -v)
    }
    fn __pow__(&self, py: Python<'_>, exponent: f64, modulo: Option<i64>) -> PyResult<Sym> {
        if modulo.is_some() {
            return Err(PyTypeError::new_err(
                "pow with a modulus is not a neuron operation",
            ));
        }
        self.apply(py, &[], |v, _| v.powf(exponent))
    }
    fn __lt__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| v.lt(a[0]))
    }
    fn __le__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| v.le(a[0]))
    }
    fn __gt__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| v.gt(a[0]))
    }
    fn __ge__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| v.ge(a[0]))
    }
    /// A condition too (so `v == 0.0` is traced, not Python's identity test).
    fn __eq__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| v.eq(a[0]))
    }
    fn __ne__(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| v.ne(a[0]))
    }

    /// A traced value has no truth value while tracing: an `if` on it would record one
    /// branch only.
    fn __bool__(&self) -> PyResult<bool> {
        Err(PyTypeError::new_err(
            "a traced value has no truth value: the step runs once to record it; write \
             snn.where(condition, a, b) instead of `if`, and snn.spike(h) for a threshold",
        ))
    }

    fn exp(&self, py: Python<'_>) -> PyResult<Sym> {
        self.apply(py, &[], |v, _| v.exp())
    }
    fn log(&self, py: Python<'_>) -> PyResult<Sym> {
        self.apply(py, &[], |v, _| v.ln())
    }
    fn sqrt(&self, py: Python<'_>) -> PyResult<Sym> {
        self.apply(py, &[], |v, _| v.sqrt())
    }
    fn tanh(&self, py: Python<'_>) -> PyResult<Sym> {
        self.apply(py, &[], |v, _| v.tanh())
    }
    fn atan(&self, py: Python<'_>) -> PyResult<Sym> {
        self.apply(py, &[], |v, _| v.atan())
    }
    fn sigmoid(&self, py: Python<'_>) -> PyResult<Sym> {
        self.apply(py, &[], |v, _| v.sigmoid())
    }
    fn __abs__(&self, py: Python<'_>) -> PyResult<Sym> {
        self.apply(py, &[], |v, _| v.abs())
    }
    fn minimum(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| v.min(a[0]))
    }
    fn maximum(&self, py: Python<'_>, o: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[o], |v, a| v.max(a[0]))
    }
    fn clamp(&self, py: Python<'_>, lo: &Bound<'_, PyAny>, hi: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[lo, hi], |v, a| v.clamp(a[0], a[1]))
    }
    /// No gradient flows back through the result.
    fn detach(&self, py: Python<'_>) -> PyResult<Sym> {
        self.apply(py, &[], |v, _| v.detach())
    }
    /// `a` where this condition holds, else `b`.
    fn select(&self, py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<Sym> {
        self.apply(py, &[a, b], |v, x| v.select(x[0], x[1]))
    }
    /// `1` where this value is `>= 0`, else `0`; backward, the neuron's surrogate.
    fn spike(&self, py: Python<'_>) -> PyResult<Sym> {
        self.apply(py, &[], |v, _| v.builder().spike(v))
    }

    /// The same value, named `name` in printed equations and generated code (as a `let`
    /// names it in a Rust step).
    fn named(&self, py: Python<'_>, name: &str) -> PyResult<Sym> {
        self.apply(py, &[], |v, _| v.named(name))
    }

    /// Gives this state its value after the step.
    fn set(&self, py: Python<'_>, new: &Bound<'_, PyAny>) -> PyResult<()> {
        let o = operand(&self.tracer, new)?;
        let tracer = self.tracer.borrow(py);
        let b = tracer.builder()?;
        b.value(self.id).set(value(b, &o));
        Ok(())
    }
}

#[pymethods]
impl Tracer {
    /// A neuron named `name` whose `spike` uses the built-in surrogate `surrogate` with
    /// shape parameter `parameter` (alpha or width).
    #[new]
    #[pyo3(signature = (name, surrogate = "sigmoid", parameter = 4.0, doc = ""))]
    fn new(name: &str, surrogate: &str, parameter: f64, doc: &str) -> PyResult<Self> {
        let s = Surrogate::named(surrogate, parameter).map_err(value_error)?;
        Ok(Self {
            builder: Some(NeuronBuilder::new(name).doc(doc).surrogate(s)),
        })
    }

    /// Declares an input.
    fn input(slf: &Bound<'_, Self>, name: &str) -> PyResult<Sym> {
        let id = slf.borrow().builder()?.input(name).id();
        Ok(Sym {
            tracer: slf.clone().unbind(),
            id,
        })
    }

    /// Declares a state starting at `init` (a number or a param); the value is the state
    /// before the step.
    #[pyo3(signature = (name, init = None))]
    fn state(slf: &Bound<'_, Self>, name: &str, init: Option<&Bound<'_, PyAny>>) -> PyResult<Sym> {
        let tracer = slf.clone().unbind();
        let init = match init {
            Some(o) => operand(&tracer, o)?,
            None => Operand::Number(0.0),
        };
        let this = slf.borrow();
        let b = this.builder()?;
        let id = match init {
            Operand::Number(v) => b.state(name, v).id(),
            Operand::Sym(p) => b.state(name, b.value(p)).id(),
        };
        Ok(Sym { tracer, id })
    }

    /// Declares a parameter: `shape` "scalar", "per_channel" or "per_neuron".
    #[pyo3(signature = (name, default, learnable = false, shape = "scalar"))]
    fn param(
        slf: &Bound<'_, Self>,
        name: &str,
        default: f64,
        learnable: bool,
        shape: &str,
    ) -> PyResult<Sym> {
        let Some(&(_, shape)) = PARAM_SHAPES.iter().find(|(name, _)| *name == shape) else {
            return Err(value_error(format!(
                "param shape `{shape}`: use \"scalar\", \"per_channel\" or \"per_neuron\""
            )));
        };
        let decl = if learnable {
            ParamDecl::learnable(default)
        } else {
            ParamDecl::fixed(default)
        }
        .with_shape(shape);
        let id = slf.borrow().builder()?.param(name, decl).id();
        Ok(Sym {
            tracer: slf.clone().unbind(),
            id,
        })
    }

    /// Declares an output with its value (which takes the output's name, unless named).
    fn output(slf: &Bound<'_, Self>, name: &str, value_: &Bound<'_, PyAny>) -> PyResult<()> {
        let o = operand(&slf.clone().unbind(), value_)?;
        let this = slf.borrow();
        let b = this.builder()?;
        b.output(name, value(b, &o).or_named(name));
        Ok(())
    }

    /// The neuron: validated, compiled, ready to run. Every mistake the step made is in the
    /// error.
    fn finish(&mut self) -> PyResult<Neuron> {
        let b = self.builder.take().ok_or_else(already_built)?;
        let ir = b.finish().map_err(value_error)?;
        Neuron::new(ir)
    }
}
