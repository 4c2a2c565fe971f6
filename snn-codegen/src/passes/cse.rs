//! Common-subexpression elimination: a value written twice (by the user, by inlining or by
//! autodiff) is computed once, which also lets simplification see `x - x`.

use std::collections::HashMap;

use crate::ir::{Graph, NodeId};

/// Merges nodes that compute the same op of the same operands (in either order for
/// commutative ops). Sinks are never merged. Of each set of equal nodes the one with the
/// smallest id stays; if it has no name, it takes the first name among the others. Returns
/// whether anything changed.
///
/// Hash-consing over the topological order: a node's key is its op and the classes of its
/// operands, so a chain of equal expressions merges in one run. The result depends only on
/// the graph.
pub fn cse(g: &mut Graph) -> bool {
    let Ok(order) = g.topo_order() else {
        return false;
    };
    // Each node's class: the first node of the class in topological order.
    let mut class: HashMap<NodeId, NodeId> = HashMap::new();
    let mut by_key = HashMap::new();
    // The members of each class with more than one, in the order classes were found.
    let mut members: Vec<Vec<NodeId>> = Vec::new();
    let mut index_of: HashMap<NodeId, usize> = HashMap::new();
    for n in order {
        let op = g.op(n);
        if op.sink().is_some() {
            continue;
        }
        let mut args: Vec<NodeId> = g
            .operands(n)
            .into_iter()
            .map(|a| class.get(&a).copied().unwrap_or(a))
            .collect();
        if op.is_commutative() {
            args.sort_unstable();
        }
        let first = *by_key.entry((op.key(), args)).or_insert(n);
        class.insert(n, first);
        if first != n {
            let i = *index_of.entry(first).or_insert_with(|| {
                members.push(vec![first]);
                members.len() - 1
            });
            members[i].push(n);
        }
    }
    for mut m in members {
        m.sort_unstable();
        let keep = m[0];
        if g.name(keep).is_none() {
            let name = m.iter().find_map(|&n| g.name(n)).map(str::to_string);
            g.set_name(keep, name);
        }
        for &n in &m[1..] {
            g.replace_uses(n, keep);
            g.remove(n);
        }
    }
    !index_of.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Binary, Leaf, Op, Sink, Unary};
    use crate::passes::test_util::{
        assert_line, assert_named, assert_rewrites, assert_same_values, count, expr,
    };
    use crate::{NeuronBuilder, Surrogate};

    fn is(op: Op) -> impl Fn(Op) -> bool {
        move |o| o == op
    }

    #[test]
    fn merges_a_subexpression_written_twice() {
        let b = NeuronBuilder::new("n");
        let x = b.input("x");
        let y = b.input("y");
        b.output("o", (x * y).exp() + (x * y).exp());
        let mut ir = b.finish().expect("valid neuron");
        assert_rewrites(&mut ir.graph, cse);
        let g = &ir.graph;
        assert_eq!(count(g, is(Op::Binary(Binary::Mul))), 1);
        assert_eq!(count(g, is(Op::Unary(Unary::Exp))), 1);
        let sum = g.sink_value(Sink::Output(0)).expect("output o");
        let e = g.operands(sum);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0], e[1], "both terms are one node");
        assert_eq!(expr(&ir, e[0]), "exp(x * y)");
        assert_line(&ir, "t0 = exp(x * y)");
        assert_line(&ir, "output o = t0 + t0");
        assert!(!cse(&mut ir.graph), "a second run finds nothing");
        ir.validate().expect("still valid");
    }

    #[test]
    fn commutative_operands_match_in_either_order() {
        let b = NeuronBuilder::new("n");
        let x = b.input("x");
        let y = b.input("y");
        b.output(
            "o",
            (x * y + y * x) * (x - y) * (y - x) * x.min(y) * y.min(x),
        );
        let mut ir = b.finish().expect("valid neuron");
        assert_rewrites(&mut ir.graph, cse);
        let g = &ir.graph;
        // `x * y` once, and the four products of the factors.
        assert_eq!(count(g, is(Op::Binary(Binary::Mul))), 5);
        assert_eq!(
            count(g, is(Op::Binary(Binary::Sub))),
            2,
            "`x - y` is not `y - x`"
        );
        assert_eq!(count(g, is(Op::Binary(Binary::Min))), 1);
    }

    #[test]
    fn constants_merge_by_value() {
        let b = NeuronBuilder::new("n");
        let x = b.input("x");
        b.output("o", x * 2.0 + x * 2.0 + x * 3.0 + x.powf(2.0) + x.powf(3.0));
        let mut ir = b.finish().expect("valid neuron");
        assert_rewrites(&mut ir.graph, cse);
        let g = &ir.graph;
        assert_eq!(count(g, |op| matches!(op, Op::Const(_))), 2);
        assert_eq!(count(g, is(Op::Binary(Binary::Mul))), 2);
        assert_eq!(count(g, |op| matches!(op, Op::Powf(_))), 2);
    }

    #[test]
    fn spikes_merge_only_with_the_same_surrogate() {
        let b = NeuronBuilder::new("n").surrogate(Surrogate::atan(2.0));
        let x = b.input("x");
        let same = b.spike(x) + b.spike(x);
        let other = b.spike_with(x, Surrogate::rect(0.5));
        b.output("o", same + other + x.detach() + x.detach());
        let mut ir = b.finish().expect("valid neuron");
        assert_rewrites(&mut ir.graph, cse);
        assert_eq!(count(&ir.graph, |op| matches!(op, Op::Spike(_))), 2);
        assert_eq!(count(&ir.graph, is(Op::Detach)), 1);
    }

    #[test]
    fn sinks_are_never_merged() {
        let b = NeuronBuilder::new("n");
        let x = b.input("x");
        let v = b.state("v", 0.0);
        v.set(x.exp());
        b.output("a", x.exp());
        b.output("b", x.exp());
        let mut ir = b.finish().expect("valid neuron");
        assert_rewrites(&mut ir.graph, cse);
        assert_eq!(ir.graph.sinks().len(), 3);
        assert_eq!(count(&ir.graph, is(Op::Unary(Unary::Exp))), 1);
        ir.validate().expect("still valid");
        // Even two identical sinks (which validation rejects) both stay.
        let mut g = Graph::new();
        let x = g.leaf(Leaf::Input(0));
        g.sink(Sink::Output(0), x);
        g.sink(Sink::Output(0), x);
        assert!(!cse(&mut g));
        assert_eq!(g.sinks().len(), 2);
    }

    #[test]
    fn keeps_the_smallest_id_and_a_name() {
        let b = NeuronBuilder::new("n");
        let x = b.input("x");
        let first = x.exp();
        let second = x.exp().named("e");
        b.output("o", second * first);
        let (first, second) = (first.id(), second.id());
        let mut ir = b.finish().expect("valid neuron");
        assert!(first < second);
        assert!(cse(&mut ir.graph));
        assert!(ir.graph.contains(first));
        assert!(!ir.graph.contains(second));
        assert_eq!(ir.graph.name(first), Some("e"));
        assert_named(&ir, "e", "exp(x)");
        assert_line(&ir, "output o = e * e");
    }

    #[test]
    fn the_kept_node_keeps_its_own_name() {
        let b = NeuronBuilder::new("n");
        let x = b.input("x");
        let first = x.exp().named("a");
        let second = x.exp().named("b");
        b.output("o", second * first);
        let first = first.id();
        let mut ir = b.finish().expect("valid neuron");
        assert!(cse(&mut ir.graph));
        assert_eq!(ir.graph.name(first), Some("a"));
        assert_line(&ir, "output o = a * a");
    }

    #[test]
    fn duplicate_leaves_merge() {
        let mut g = Graph::new();
        let x = g.leaf(Leaf::Input(0));
        let x2 = g.leaf(Leaf::Input(0));
        let y = g.leaf(Leaf::Input(1));
        let s = g.binary(Binary::Sub, x2, y);
        let t = g.binary(Binary::Sub, x, y);
        let m = g.binary(Binary::Mul, s, t);
        g.sink(Sink::Output(0), m);
        let before = g.clone();
        assert!(cse(&mut g));
        assert_same_values(&before, &g);
        assert_eq!(g.operands(m), vec![s, s]);
        assert_eq!(g.operands(s), vec![x, y]);
        assert_eq!(g.len(), 5);
    }

    #[test]
    fn is_deterministic() {
        let build = || {
            let b = NeuronBuilder::new("n");
            let x = b.input("x");
            let y = b.input("y");
            let a = (x + y).exp() * (y + x).exp();
            b.output("o", a + (x + y).exp() * (x + y).exp() - y * x);
            b.output("p", x * y);
            b.finish().expect("valid neuron")
        };
        let mut one = build();
        let mut two = build();
        cse(&mut one.graph);
        cse(&mut two.graph);
        assert_eq!(format!("{one}"), format!("{two}"));
        assert_eq!(one.graph.nodes(), two.graph.nodes());
        assert_line(&one, "output o = t1 + t1 - t2");
        assert_line(&one, "output p = t2");
    }
}
