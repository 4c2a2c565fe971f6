//! Constant folding: computes at compile time what depends on no leaf, so that kernels do not
//! recompute it for every element and step.

use super::{konst, replace};
use crate::ir::eval::eval_op;
use crate::ir::{Graph, NodeId, Op};

/// Folds every value whose operands are all constants into a constant, and every `select`
/// whose condition compares two constants into the branch it picks. Returns whether anything
/// changed.
///
/// Comparisons are not folded themselves: they are booleans, and a real constant may not
/// stand where `select` expects one. `spike` is kept too, so that a spike output still reads
/// as one. A result that is not finite (`log(0)`, `1 / 0`) stays unfolded: the IR admits
/// only finite constants.
pub fn fold(g: &mut Graph) -> bool {
    let Ok(order) = g.topo_order() else {
        return false;
    };
    let mut changed = false;
    for n in order {
        if let Some(new) = folded(g, n) {
            replace(g, n, new);
            changed = true;
        }
    }
    changed
}

/// What `n` folds to, if anything.
fn folded(g: &mut Graph, n: NodeId) -> Option<NodeId> {
    let op = g.op(n);
    match op {
        Op::Leaf(_) | Op::Const(_) | Op::Sink(_) | Op::Cmp(_) | Op::Spike(_) => None,
        Op::Select => {
            let args = g.operands(n);
            let cond = condition(g, *args.first()?)?;
            Some(if cond { args[1] } else { args[2] })
        }
        _ => {
            let args: Vec<f64> = g
                .operands(n)
                .into_iter()
                .map(|a| konst(g, a))
                .collect::<Option<_>>()?;
            if args.len() != op.arity() {
                return None;
            }
            let v = eval_op(op, &args);
            v.is_finite().then(|| g.constant(v))
        }
    }
}

/// The value of a condition known at compile time: a comparison of two constants (or, in a
/// graph that does not type-check, a constant).
fn condition(g: &Graph, cond: NodeId) -> Option<bool> {
    match g.op(cond) {
        Op::Cmp(c) => match g.operands(cond).as_slice() {
            &[a, b] => Some(c.eval(konst(g, a)?, konst(g, b)?)),
            _ => None,
        },
        Op::Const(c) => Some(c != 0.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NeuronBuilder;
    use crate::Surrogate;
    use crate::ir::{Binary, Cmp, Leaf, Sink, Unary};
    use crate::passes::dce;
    use crate::passes::test_util::{assert_line, assert_rewrites, assert_same_values, count};

    #[test]
    fn folds_arithmetic_on_constants() {
        let b = NeuronBuilder::new("n");
        let x = b.input("x");
        let k = (b.constant(2.0) * 3.0 + 1.0).clamp(0.0, 10.0).powf(2.0) / 7.0;
        b.output("o", x * k);
        let mut ir = b.finish().expect("valid neuron");
        assert_rewrites(&mut ir.graph, fold);
        assert_line(&ir, "output o = x * 7");
        // Only `x * 7` is left to compute.
        let g = &ir.graph;
        assert_eq!(count(g, |op| matches!(op, Op::Binary(_))), 1);
        assert_eq!(
            count(g, |op| op == Op::Clamp || matches!(op, Op::Powf(_))),
            0
        );
        assert!(!fold(&mut ir.graph), "a second run finds nothing");
    }

    #[test]
    fn folds_unary_and_detach_of_constants() {
        let b = NeuronBuilder::new("n");
        let x = b.input("x");
        let k = -(b.constant(0.0).exp().detach());
        b.output("o", x + k);
        let mut ir = b.finish().expect("valid neuron");
        assert_rewrites(&mut ir.graph, fold);
        assert_line(&ir, "output o = x + -1");
        assert_eq!(
            count(&ir.graph, |op| matches!(op, Op::Unary(_))
                || op == Op::Detach),
            0
        );
    }

    #[test]
    fn select_with_constant_condition_picks_its_branch() {
        for (threshold, expected) in [(2.0, "output o = x"), (0.5, "output o = x * 2")] {
            let b = NeuronBuilder::new("n");
            let x = b.input("x");
            b.output("o", b.constant(1.0).lt(threshold).select(x, x * 2.0));
            let mut ir = b.finish().expect("valid neuron");
            let before = ir.graph.clone();
            assert!(fold(&mut ir.graph));
            dce(&mut ir.graph);
            assert_same_values(&before, &ir.graph);
            assert_line(&ir, expected);
            assert_eq!(count(&ir.graph, |op| op == Op::Select), 0);
            assert_eq!(count(&ir.graph, |op| matches!(op, Op::Cmp(_))), 0);
            ir.validate().expect("still valid");
        }
    }

    /// A graph of inputs `x`, `y` and constants 1, 2, built by hand so that its nodes are
    /// known.
    fn inputs_and_constants() -> (Graph, [NodeId; 4]) {
        let mut g = Graph::new();
        let x = g.leaf(Leaf::Input(0));
        let y = g.leaf(Leaf::Input(1));
        let one = g.constant(1.0);
        let two = g.constant(2.0);
        (g, [x, y, one, two])
    }

    #[test]
    fn comparisons_stay_booleans() {
        // `select(1 < 2, x, y)`.
        let (mut g, [x, y, one, two]) = inputs_and_constants();
        let c = g.cmp(Cmp::Lt, one, two);
        let s = g.select(c, x, y);
        g.sink(Sink::Output(0), s);
        let before = g.clone();
        assert!(fold(&mut g));
        assert_same_values(&before, &g);
        assert_eq!(
            g.op(c),
            Op::Cmp(Cmp::Lt),
            "the comparison is not made a constant"
        );
        assert_eq!(g.sink_value(Sink::Output(0)), Some(x));
        // A comparison of a leaf cannot fold, and neither can its select.
        let (mut g, [x, _, one, two]) = inputs_and_constants();
        let c = g.cmp(Cmp::Lt, x, one);
        let s = g.select(c, one, two);
        g.sink(Sink::Output(0), s);
        assert!(!fold(&mut g));
        assert_eq!(g.op(s), Op::Select);
    }

    #[test]
    fn non_finite_results_are_not_folded() {
        let b = NeuronBuilder::new("n");
        let x = b.input("x");
        b.output("o", x + b.constant(0.0).ln() + 1.0 / b.constant(0.0));
        let mut ir = b.finish().expect("valid neuron");
        assert!(!fold(&mut ir.graph));
        assert_eq!(count(&ir.graph, |op| op == Op::Unary(Unary::Log)), 1);
        assert_eq!(count(&ir.graph, |op| op == Op::Binary(Binary::Div)), 1);
        ir.validate().expect("still valid");
    }

    #[test]
    fn spikes_of_constants_are_kept() {
        let b = NeuronBuilder::new("n").surrogate(Surrogate::rect(0.5));
        let x = b.input("x");
        let s = b.spike(b.constant(1.0) - 0.5);
        b.output("s", s);
        b.output("o", x);
        let mut ir = b.finish().expect("valid neuron");
        let before = ir.graph.clone();
        assert!(fold(&mut ir.graph), "`1 - 0.5` folds");
        assert_same_values(&before, &ir.graph);
        assert_eq!(count(&ir.graph, |op| matches!(op, Op::Spike(_))), 1);
        assert_eq!(ir.output_kind(0), crate::ir::SpikeKind::Binary);
    }
}
