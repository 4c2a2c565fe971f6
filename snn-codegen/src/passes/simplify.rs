//! Algebraic simplification: removes the identities that generic code (and autodiff, which
//! multiplies by ones and adds zeros) leaves behind.
//!
//! Every rewrite keeps the forward value and the gradient: a `detach` is never dropped and a
//! `spike` never rewritten. `x * 0 -> 0` and `x - x -> 0` assume `x` finite, as fast-math
//! does (with `x` infinite or NaN the original gives NaN); their gradient is zero either way.

use super::{konst, replace};
use crate::ir::{Binary, Graph, NodeId, Op, Unary};

/// How many rewrites may chain on one node (each rewrite's result is simplified again).
const MAX_CHAIN: usize = 16;

/// Applies the identities below until none applies. Returns whether anything changed.
///
/// - `x + 0`, `0 + x`, `x - 0`, `x * 1`, `1 * x`, `x / 1`, `pow(x, 1)` -> `x`
/// - `0 - x`, `x * -1`, `-1 * x` -> `-x`; `-(-x)` -> `x`
/// - `x + (-y)`, `(-y) + x` -> `x - y`; `x - (-y)` -> `x + y`; `(-x) * (-y)` -> `x * y`
/// - `x * 0`, `0 * x`, `x - x` -> `0`; `pow(x, 0)` -> `1`
/// - `min(x, x)`, `max(x, x)`, `select(c, x, x)` -> `x`
///
/// `select(c, 1, 0)` stays: it is how a boolean becomes a real.
pub fn simplify(g: &mut Graph) -> bool {
    let Ok(order) = g.topo_order() else {
        return false;
    };
    let mut changed = false;
    for n in order {
        let mut cur = n;
        for _ in 0..MAX_CHAIN {
            match rewrite(g, cur) {
                Some(new) if new != cur => {
                    replace(g, cur, new);
                    changed = true;
                    cur = new;
                }
                _ => break,
            }
        }
    }
    changed
}

/// The operand of `n` if `n` is a negation.
fn negated(g: &Graph, n: NodeId) -> Option<NodeId> {
    match g.op(n) {
        Op::Unary(Unary::Neg) => g.operands(n).first().copied(),
        _ => None,
    }
}

/// What `n` simplifies to, if anything: an existing node or a new one.
fn rewrite(g: &mut Graph, n: NodeId) -> Option<NodeId> {
    let op = g.op(n);
    let args = g.operands(n);
    if args.len() != op.arity() {
        return None;
    }
    let is = |g: &Graph, a: NodeId, c: f64| konst(g, a) == Some(c);
    match op {
        Op::Binary(b) => {
            let (x, y) = (args[0], args[1]);
            match b {
                Binary::Add if is(g, y, 0.0) => Some(x),
                Binary::Add if is(g, x, 0.0) => Some(y),
                Binary::Add => {
                    if let Some(y) = negated(g, y) {
                        Some(g.binary(Binary::Sub, x, y))
                    } else {
                        negated(g, x).map(|x| g.binary(Binary::Sub, y, x))
                    }
                }
                Binary::Sub if is(g, y, 0.0) => Some(x),
                Binary::Sub if is(g, x, 0.0) => Some(g.unary(Unary::Neg, y)),
                Binary::Sub if x == y => Some(g.constant(0.0)),
                Binary::Sub => negated(g, y).map(|y| g.binary(Binary::Add, x, y)),
                Binary::Mul if is(g, y, 1.0) => Some(x),
                Binary::Mul if is(g, x, 1.0) => Some(y),
                Binary::Mul if is(g, x, 0.0) || is(g, y, 0.0) => Some(g.constant(0.0)),
                Binary::Mul if is(g, y, -1.0) => Some(g.unary(Unary::Neg, x)),
                Binary::Mul if is(g, x, -1.0) => Some(g.unary(Unary::Neg, y)),
                Binary::Mul => {
                    let (x, y) = (negated(g, x)?, negated(g, y)?);
                    Some(g.binary(Binary::Mul, x, y))
                }
                Binary::Div if is(g, y, 1.0) => Some(x),
                Binary::Min | Binary::Max if x == y => Some(x),
                _ => None,
            }
        }
        Op::Unary(Unary::Neg) => negated(g, args[0]),
        Op::Powf(1.0) => Some(args[0]),
        Op::Powf(0.0) => Some(g.constant(1.0)),
        Op::Select if args[1] == args[2] => Some(args[1]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::Value;
    use crate::passes::dce;
    use crate::passes::test_util::{assert_line, assert_named, assert_same_values, count};
    use crate::{NeuronBuilder, NeuronIr, Surrogate};

    /// The neuron `output o = f(x, y)`, plus `output u = x + y` so that both inputs are
    /// used.
    fn neuron(
        f: impl for<'a> Fn(&'a NeuronBuilder, Value<'a>, Value<'a>) -> Value<'a>,
    ) -> NeuronIr {
        let b = NeuronBuilder::new("n").surrogate(Surrogate::sigmoid(4.0));
        let x = b.input("x");
        let y = b.input("y");
        b.output("o", f(&b, x, y));
        b.output("u", x + y);
        b.finish().expect("valid neuron")
    }

    /// Simplifies [`neuron`]`(f)` and checks the printed result and that values are
    /// unchanged.
    fn case(
        f: impl for<'a> Fn(&'a NeuronBuilder, Value<'a>, Value<'a>) -> Value<'a>,
        expected: &str,
    ) {
        let mut ir = neuron(f);
        let before = ir.graph.clone();
        let changed = simplify(&mut ir.graph);
        dce(&mut ir.graph);
        assert_same_values(&before, &ir.graph);
        assert_line(&ir, &format!("output o = {expected}"));
        assert_line(&ir, "output u = x + y");
        assert!(changed, "`{expected}`: simplify reported no change");
        ir.validate().expect("still valid");
    }

    #[test]
    fn additive_identities() {
        case(|_, x, _| x + 0.0, "x");
        case(|_, x, _| 0.0 + x, "x");
        case(|_, x, _| x - 0.0, "x");
        case(|_, x, _| 0.0 - x, "-x");
        case(|_, x, _| x - x, "0");
        case(|_, x, y| x + -y, "x - y");
        case(|_, x, y| -y + x, "x - y");
        case(|_, x, y| x - -y, "x + y");
    }

    #[test]
    fn multiplicative_identities() {
        case(|_, x, _| x * 1.0, "x");
        case(|_, x, _| 1.0 * x, "x");
        case(|_, x, _| x / 1.0, "x");
        case(|_, x, _| x * 0.0, "0");
        case(|_, x, _| 0.0 * x, "0");
        case(|_, x, _| x * -1.0, "-x");
        case(|_, x, _| -1.0 * x, "-x");
        case(|_, x, y| -x * -y, "x * y");
    }

    #[test]
    fn negation_powers_and_choices() {
        case(|_, x, _| -(-x), "x");
        case(|_, x, _| -(-(-x)), "-x");
        case(|_, x, _| 0.0 - -x, "x");
        case(|_, x, _| x.powf(1.0), "x");
        case(|_, x, _| x.powf(0.0), "1");
        case(|_, x, _| x.min(x), "x");
        case(|_, x, _| x.max(x), "x");
        case(|_, x, y| x.lt(y).select(x, x), "x");
    }

    #[test]
    fn chained_identities_simplify_in_one_run() {
        case(|_, x, y| ((x * 1.0 + 0.0) - 0.0) * (y / 1.0), "x * y");
    }

    /// Expressions that must come out exactly as written.
    fn unchanged(
        f: impl for<'a> Fn(&'a NeuronBuilder, Value<'a>, Value<'a>) -> Value<'a>,
        expected: &str,
    ) {
        let mut ir = neuron(f);
        assert!(!simplify(&mut ir.graph), "`{expected}` was rewritten");
        assert_line(&ir, &format!("output o = {expected}"));
    }

    #[test]
    fn non_identities_stay() {
        unchanged(|_, x, _| x.powf(2.0), "pow(x, 2)");
        unchanged(|_, x, y| x.lt(y).select(1.0, 0.0), "select(x < y, 1, 0)");
        unchanged(|_, x, y| x.min(y), "min(x, y)");
        unchanged(|_, x, y| x - y, "x - y");
        unchanged(|_, x, _| x * 2.0 + 1.0, "x * 2 + 1");
        unchanged(|_, x, _| 0.0 / x, "0 / x");
        unchanged(|_, x, _| x.detach(), "detach(x)");
        unchanged(|b, x, _| b.spike(x), "spike[sigmoid(alpha = 4)](x)");
    }

    #[test]
    fn detach_and_spike_survive() {
        case(|_, x, _| x.detach() * 1.0 + 0.0, "detach(x)");
        case(
            |b, x, y| b.spike(x - y) * 1.0,
            "spike[sigmoid(alpha = 4)](x - y)",
        );
        case(
            |b, x, _| -(-b.spike(x).detach()),
            "detach(spike[sigmoid(alpha = 4)](x))",
        );
        let b = NeuronBuilder::new("n").surrogate(Surrogate::sigmoid(4.0));
        let x = b.input("x");
        b.output("o", b.spike(x).detach() + 0.0);
        let mut ir = b.finish().expect("valid neuron");
        simplify(&mut ir.graph);
        assert_eq!(count(&ir.graph, |op| op == Op::Detach), 1);
        assert_eq!(count(&ir.graph, |op| matches!(op, Op::Spike(_))), 1);
    }

    #[test]
    fn the_name_moves_to_the_replacement() {
        let b = NeuronBuilder::new("n");
        let x = b.input("x");
        let h = ((x * 2.0) + 0.0).named("h");
        b.output("o", h * h);
        let mut ir = b.finish().expect("valid neuron");
        assert!(simplify(&mut ir.graph));
        assert_named(&ir, "h", "x * 2");
        assert_line(&ir, "output o = h * h");
    }
}
