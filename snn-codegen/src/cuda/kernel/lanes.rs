//! The element loop every kernel shares, and the plumbing between it and the step
//! functions: `[T, N]` streams, per-lane locals, step functions and their calls.
//!
//! On the vector path a local is an array of [`V`] lanes (`x[l]`) and work on it runs in an
//! unrolled lane loop; on the scalar path the same code runs once, on plain locals.

use crate::dtype::Dtype;
use crate::ir::Sink;

use super::super::expr::Statements;
use super::super::signature::{ArgRole, KernelArg};
use super::super::writer::Writer;
use super::{Gen, V, ptr_arg};

/// A `[T, N]` tensor a kernel reads or writes per step.
pub struct Stream {
    /// The kernel argument (a pointer).
    pub arg: String,
    /// The local the step function sees.
    pub local: String,
    pub dtype: Dtype,
}

impl Stream {
    /// Tensor `name` as argument `{arg}{name}` and local `{local}{name}`.
    pub fn new(arg: &str, local: &str, name: &str, dtype: Dtype) -> Self {
        Self {
            arg: format!("{arg}{name}"),
            local: format!("{local}{name}"),
            dtype,
        }
    }

    /// Its kernel argument, written through when `mutable`.
    pub fn kernel_arg(&self, role: ArgRole, mutable: bool) -> KernelArg {
        ptr_arg(self.arg.clone(), role, self.dtype, mutable)
    }

    /// Reads step `at` of the element (the group on the vector path) into `local`.
    pub fn load(&self, w: &mut Writer, local: &str, at: &str, vec: bool) {
        let d = self.dtype.name();
        if vec {
            w.line(format!("snn_ld4_{d}({} + {at}, {local});", self.arg));
        } else {
            w.line(format!("{local} = snn_ld_{d}({}[{at}]);", self.arg));
        }
    }

    /// Writes the local to step `at`.
    pub fn store(&self, w: &mut Writer, at: &str, vec: bool) {
        let (d, local) = (self.dtype.name(), &self.local);
        if vec {
            w.line(format!("snn_st4_{d}({} + {at}, {local});", self.arg));
        } else {
            w.line(format!("{}[{at}] = snn_st_{d}({local});", self.arg));
        }
    }
}

/// The kernel arguments of `streams`, the `k`th with role `role(k)`.
pub fn stream_args(
    streams: &[Stream],
    role: fn(usize) -> ArgRole,
    mutable: bool,
) -> impl Iterator<Item = KernelArg> + '_ {
    (streams.iter().enumerate()).map(move |(k, s)| s.kernel_arg(role(k), mutable))
}

/// The element the loop body works on: the group's first on the vector path.
pub fn element(vec: bool) -> &'static str {
    if vec { "i0" } else { "i" }
}

/// `v`, or its lane `l` on the vector path.
pub fn lane(v: &str, vec: bool) -> String {
    if vec {
        format!("{v}[l]")
    } else {
        v.to_string()
    }
}

/// The declaration of a local float (an array of lanes on the vector path).
pub fn decl(local: &str, vec: bool) -> String {
    if vec {
        format!("float {local}[{V}];")
    } else {
        format!("float {local};")
    }
}

/// Sets a local in a [`per_lane`] body: declared here on the scalar path, before the lane
/// loop (with [`decl`]) on the vector path.
pub fn init(w: &mut Writer, local: &str, value: &str, vec: bool) {
    if vec {
        w.line(format!("{local}[l] = {value};"));
    } else {
        w.line(format!("float {local} = {value};"));
    }
}

/// `body` once per lane (an unrolled loop over `l`) on the vector path, once on the scalar.
pub fn each_lane(w: &mut Writer, vec: bool, body: impl FnOnce(&mut Writer)) {
    if vec {
        w.line("#pragma unroll");
        w.block(format!("for (int l = 0; l < {V}; ++l)"), "", body);
    } else {
        body(w);
    }
}

/// [`each_lane`], with `i` the lane's element.
pub fn per_lane(w: &mut Writer, vec: bool, body: impl FnOnce(&mut Writer)) {
    each_lane(w, vec, |w| {
        if vec {
            w.line("const long long i = i0 + l;");
        }
        body(w);
    });
}

impl Gen<'_> {
    /// The grid-stride loop over element groups, with the vector and scalar paths: `path`
    /// writes a group's work (`vec`) or one element's.
    pub(super) fn group_loop(
        &self,
        w: &mut Writer,
        streams: &[&Stream],
        path: &dyn Fn(&mut Writer, bool),
    ) {
        let vec_ok = if self.vectorizable() {
            let aligned = streams
                .iter()
                .map(|s| format!("snn_aligned4({}, {})", s.arg, s.dtype.size()));
            std::iter::once("(n & 3) == 0".to_string())
                .chain(aligned)
                .collect::<Vec<_>>()
                .join(" && ")
        } else {
            "false".into()
        };
        w.line(format!("const bool vec = {vec_ok};"));
        w.line(format!("const long long groups = (n + {}) / {V};", V - 1));
        w.block(
            "for (long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x; g < groups; g += (long long)gridDim.x * blockDim.x)",
            "",
            |w| {
                w.line(format!("const long long i0 = g * {V};"));
                w.block("if (vec)", "", |w| path(w, true));
                w.block("else", "", |w| {
                    w.line(format!("const long long end = i0 + {V} < n ? i0 + {V} : n;"));
                    w.block("for (long long i = i0; i < end; ++i)", "", |w| path(w, false));
                });
            },
        );
    }
}

/// What a kernel passes for a step function's parameter.
#[derive(Clone, Copy)]
pub enum Pass {
    /// The local of the same name.
    Local,
    /// The local of the same name with the call's stream prefix (`cur_`, `nxt_`): which
    /// step of a re-read stream.
    Stream,
    /// Param `p`'s value for the element.
    Param(usize),
}

/// A parameter of a step function: `const float name`, or `float& name` when `by_ref`.
pub struct StepParam {
    pub name: String,
    pub by_ref: bool,
    pub pass: Pass,
}

impl StepParam {
    pub fn new(name: impl Into<String>, by_ref: bool, pass: Pass) -> Self {
        Self {
            name: name.into(),
            by_ref,
            pass,
        }
    }

    /// Parameters that pass the locals of the same names.
    pub fn locals<I: IntoIterator<Item = String>>(
        names: I,
        by_ref: bool,
    ) -> impl Iterator<Item = StepParam> + use<I> {
        names
            .into_iter()
            .map(move |n| StepParam::new(n, by_ref, Pass::Local))
    }

    /// Param `p`, named `p_{name}`.
    pub fn param(g: &Gen, p: usize) -> Self {
        Self::new(format!("p_{}", g.param(p)), false, Pass::Param(p))
    }
}

/// How a step function writes a sink of its graph.
pub enum Assign {
    /// `var = value;`
    Set(String),
    /// `var += value;`
    Add(String),
    /// Through `const float temp = value;`, assigned to `var` after every other sink:
    /// a new state (or adjoint) may be computed from another's old value.
    Deferred { temp: String, var: String },
}

/// A `__device__` function of one element.
pub struct StepFn {
    pub name: String,
    pub params: Vec<StepParam>,
    pub body: Vec<String>,
}

impl StepFn {
    /// The function computing `stmts`, writing each sink as `assign` says (or not at all).
    pub fn new(
        name: String,
        params: Vec<StepParam>,
        stmts: &Statements,
        assign: impl Fn(Sink) -> Option<Assign>,
    ) -> Self {
        let mut body = stmts.lines.clone();
        let mut deferred = Vec::new();
        for (sink, e) in &stmts.sinks {
            match assign(*sink) {
                Some(Assign::Set(var)) => body.push(format!("{var} = {e};")),
                Some(Assign::Add(var)) => body.push(format!("{var} += {e};")),
                Some(Assign::Deferred { temp, var }) => {
                    body.push(format!("const float {temp} = {e};"));
                    deferred.push(format!("{var} = {temp};"));
                }
                None => {}
            }
        }
        body.extend(deferred);
        Self { name, params, body }
    }

    pub fn declare(&self, w: &mut Writer) {
        let decls: Vec<String> = self
            .params
            .iter()
            .map(|p| {
                if p.by_ref {
                    format!("float& {}", p.name)
                } else {
                    format!("const float {}", p.name)
                }
            })
            .collect();
        w.line(format!("__device__ __forceinline__ void {}(", self.name));
        w.line(format!("    {}", decls.join(", ")));
        w.block(")", "", |w| w.lines(&self.body));
    }

    /// Calls it in every lane, re-read streams from the locals prefixed `streams`.
    pub fn call(&self, w: &mut Writer, g: &Gen, vec: bool, streams: &str) {
        let args: Vec<String> = self
            .params
            .iter()
            .map(|p| match p.pass {
                Pass::Local => lane(&p.name, vec),
                Pass::Stream => lane(&format!("{streams}{}", p.name), vec),
                Pass::Param(q) => g.param_value(q, vec),
            })
            .collect();
        let call = format!("{}({});", self.name, args.join(", "));
        each_lane(w, vec, |w| w.line(call));
    }
}
