//! A step graph as C statements: one `const` local per computed value, in dependency
//! order, named after the user's names where there are any.

use std::collections::BTreeMap;

use crate::ir::{Binary, Graph, Leaf, NodeId, Op, Sink, Ty, Unary};

/// The statements of a graph and the C expressions its sinks write.
pub struct Statements {
    pub lines: Vec<String>,
    pub sinks: Vec<(Sink, String)>,
}

/// A float literal that reads back as the same f32.
pub fn float(c: f64) -> String {
    let f = c as f32;
    let s = format!("{f:?}");
    let s = if s.contains(['.', 'e', 'E']) {
        s
    } else {
        format!("{s}.0")
    };
    if f < 0.0 {
        format!("({s}f)")
    } else {
        format!("{s}f")
    }
}

/// A C identifier fragment from a user's name (letters, digits and `_` only).
fn ident(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Emits `g`'s computation. `leaf` gives each leaf's C expression; locals are named
/// `{prefix}{k}` or `{prefix}{k}_{name}`, so several graphs can share one scope.
pub fn statements(g: &Graph, prefix: &str, leaf: &dyn Fn(Leaf) -> String) -> Statements {
    let order = g.topo_order().unwrap_or_default();
    let mut expr: BTreeMap<NodeId, String> = BTreeMap::new();
    let mut lines = Vec::new();
    let mut sinks = Vec::new();
    let mut k = 0;
    for n in order {
        let a: Vec<String> = g.operands(n).iter().map(|o| expr[o].clone()).collect();
        let e = match g.op(n) {
            Op::Leaf(l) => {
                expr.insert(n, leaf(l));
                continue;
            }
            Op::Const(c) => {
                expr.insert(n, float(c));
                continue;
            }
            Op::Sink(s) => {
                sinks.push((s, a[0].clone()));
                continue;
            }
            Op::Detach => {
                expr.insert(n, a[0].clone());
                continue;
            }
            Op::Unary(u) => match u {
                Unary::Neg => format!("-{}", a[0]),
                Unary::Abs => format!("fabsf({})", a[0]),
                Unary::Exp => format!("expf({})", a[0]),
                Unary::Log => format!("logf({})", a[0]),
                Unary::Sqrt => format!("sqrtf({})", a[0]),
                Unary::Tanh => format!("tanhf({})", a[0]),
                Unary::Atan => format!("atanf({})", a[0]),
                Unary::Sigmoid => format!("snn_sigmoid({})", a[0]),
            },
            Op::Binary(b) => match b {
                Binary::Add => format!("{} + {}", a[0], a[1]),
                Binary::Sub => format!("{} - {}", a[0], a[1]),
                Binary::Mul => format!("{} * {}", a[0], a[1]),
                Binary::Div => format!("{} / {}", a[0], a[1]),
                // Ties pick the first operand, as the interpreter and the gradient do.
                Binary::Min => format!("{0} <= {1} ? {0} : {1}", a[0], a[1]),
                Binary::Max => format!("{0} >= {1} ? {0} : {1}", a[0], a[1]),
            },
            Op::Cmp(c) => format!("{} {} {}", a[0], c.symbol(), a[1]),
            Op::Powf(e) => format!("powf({}, {})", a[0], float(e)),
            Op::Clamp => format!(
                "{0} < {1} ? {1} : ({0} > {2} ? {2} : {0})",
                a[0], a[1], a[2]
            ),
            Op::Select => format!("{} ? {} : {}", a[0], a[1], a[2]),
            Op::Spike(_) => format!("snn_spike({})", a[0]),
        };
        let ty = if g.op(n).ty() == Some(Ty::Bool) {
            "bool"
        } else {
            "float"
        };
        let var = match g.name(n) {
            Some(name) => format!("{prefix}{k}_{}", ident(name)),
            None => format!("{prefix}{k}"),
        };
        k += 1;
        lines.push(format!("const {ty} {var} = {e};"));
        expr.insert(n, var);
    }
    sinks.sort_by_key(|s| s.0);
    Statements { lines, sinks }
}
