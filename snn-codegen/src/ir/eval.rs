//! Scalar evaluation of ops in f64: constant folding and one-off evaluations use it. The
//! interpreter in [`crate::interp`] evaluates whole blocks generically instead.

use super::graph::Graph;
use super::op::{Leaf, Op, Sink};

/// The value of a non-leaf, non-sink op applied to `args`. Booleans are 1.0 and 0.0.
pub fn eval_op(op: Op, args: &[f64]) -> f64 {
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    match op {
        Op::Const(c) => c,
        Op::Unary(u) => u.eval(args[0]),
        Op::Binary(o) => o.eval(args[0], args[1]),
        Op::Cmp(c) => b(c.eval(args[0], args[1])),
        Op::Powf(e) => args[0].powf(e),
        Op::Clamp => args[0].max(args[1]).min(args[2]),
        Op::Select => {
            if args[0] != 0.0 {
                args[1]
            } else {
                args[2]
            }
        }
        Op::Spike(_) => b(args[0] >= 0.0),
        Op::Detach | Op::Sink(_) => args[0],
        Op::Leaf(_) => f64::NAN,
    }
}

/// Evaluates every sink of `g` once, with leaves given by `leaf`. A graph with a cycle
/// yields no sinks.
pub fn eval_f64(g: &Graph, leaf: impl Fn(Leaf) -> f64) -> Vec<(Sink, f64)> {
    let Ok(order) = g.topo_order() else {
        return Vec::new();
    };
    let mut val = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for n in order {
        let args: Vec<f64> = g.operands(n).iter().map(|a| val[a]).collect();
        let v = match g.op(n) {
            Op::Leaf(l) => leaf(l),
            Op::Sink(s) => {
                out.push((s, args[0]));
                args[0]
            }
            op => eval_op(op, &args),
        };
        val.insert(n, v);
    }
    out.sort_by_key(|(s, _)| *s);
    out
}
