//! Dead-code elimination: what reaches no sink costs kernel time and registers for nothing.

use crate::ir::Graph;

/// Removes every node that no sink depends on, leaves included. Returns whether anything
/// changed.
pub fn dce(g: &mut Graph) -> bool {
    let live = g.live();
    let dead: Vec<_> = g
        .nodes()
        .into_iter()
        .filter(|n| !live.contains(n))
        .collect();
    for &n in &dead {
        g.remove(n);
    }
    !dead.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NeuronBuilder;
    use crate::ir::{Leaf, Op, Sink, Unary};
    use crate::passes::test_util::{assert_same_values, count};

    #[test]
    fn removes_what_reaches_no_sink() {
        let b = NeuronBuilder::new("n");
        let x = b.input("x");
        let v = b.state("v", 0.0);
        let _unused = (x * v).exp().named("unused");
        let _also = b.constant(3.0);
        v.set(v + x);
        b.output("v", v);
        let mut ir = b.finish().expect("valid neuron");
        let before = ir.graph.clone();
        let len = ir.graph.len();
        assert!(dce(&mut ir.graph));
        assert_same_values(&before, &ir.graph);
        // `x * v`, `exp` and the constant.
        assert_eq!(ir.graph.len(), len - 3);
        assert_eq!(count(&ir.graph, |op| op == Op::Unary(Unary::Exp)), 0);
        assert_eq!(count(&ir.graph, |op| matches!(op, Op::Const(_))), 0);
        assert_eq!(ir.graph.sinks().len(), 2);
        assert!(!dce(&mut ir.graph), "nothing left to remove");
        ir.validate().expect("still valid");
    }

    #[test]
    fn removes_unread_leaves() {
        let mut g = Graph::new();
        let x = g.leaf(Leaf::Input(0));
        g.leaf(Leaf::Param(0));
        g.sink(Sink::Output(0), x);
        assert!(dce(&mut g));
        assert_eq!(g.find_leaf(Leaf::Param(0)), None);
        assert_eq!(g.find_leaf(Leaf::Input(0)), Some(x));
    }
}
