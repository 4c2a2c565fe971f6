//! Graph passes: constant folding, algebraic simplification, common-subexpression
//! elimination and dead-code elimination.
//!
//! Every pass preserves both the forward value of every sink and the gradient that
//! [`crate::autodiff`] will later derive from the graph: no pass drops a `detach` or rewrites a
//! `spike`. Passes only rewire uses; the node a rewrite replaces is removed at once (so that
//! running a pass twice reports no change), while the operands it leaves unused are left to
//! [`dce`].

mod cse;
mod dce;
mod fold;
mod simplify;

pub use cse::cse;
pub use dce::dce;
pub use fold::fold;
pub use simplify::simplify;

use crate::ir::{Graph, NeuronIr, NodeId, Op};

/// The most rounds [`optimize`] runs; every pass shrinks or canonicalizes the graph, so a
/// fixpoint comes long before this on real neurons.
const MAX_ROUNDS: usize = 32;

/// Runs [`fold`], [`simplify`], [`cse`] and [`dce`] until none of them changes the graph (at
/// most 32 rounds): each pass exposes work for the others (folding makes equal constants
/// that CSE merges, CSE makes `x - x` that simplification zeroes, and so on).
pub fn optimize(g: &mut Graph) {
    for _ in 0..MAX_ROUNDS {
        // Every pass runs each round: no short-circuiting.
        let changed = [fold(g), simplify(g), cse(g), dce(g)];
        if !changed.contains(&true) {
            break;
        }
    }
}

impl NeuronIr {
    /// Runs the passes on the step graph (see [`optimize`]).
    pub fn optimize(&mut self) {
        optimize(&mut self.graph);
    }
}

/// Makes every user of `old` read `new`, then removes `old` (which then has no users; sinks
/// are never replaced). A user's name for `old` moves to `new` when `new` is an unnamed
/// computed value: it is the same value.
fn replace(g: &mut Graph, old: NodeId, new: NodeId) {
    if old == new {
        return;
    }
    g.replace_uses(old, new);
    let computed = !matches!(g.op(new), Op::Leaf(_) | Op::Const(_));
    if computed && g.name(new).is_none() {
        let name = g.name(old).map(str::to_string);
        g.set_name(new, name);
    }
    if g.use_count(old) == 0 && g.op(old).sink().is_none() {
        g.remove(old);
    }
}

/// The value of `n` if it is a constant.
fn konst(g: &Graph, n: NodeId) -> Option<f64> {
    match g.op(n) {
        Op::Const(c) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use crate::ir::eval::eval_f64;
    use crate::ir::{Graph, Leaf, NeuronIr, NodeId, Op};
    use crate::print::Printer;

    /// Deterministic leaf values, different for every seed and leaf, finite, some negative and
    /// some zero.
    pub fn leaf_value(seed: u32) -> impl Fn(Leaf) -> f64 {
        move |l| {
            let (kind, i) = match l {
                Leaf::Input(i) => (1, i),
                Leaf::State(i) => (2, i),
                Leaf::Param(i) => (3, i),
                Leaf::Saved(i) => (4, i),
                Leaf::OutputValue(i) => (5, i),
                Leaf::OutputGrad(i) => (6, i),
                Leaf::StateGrad(i) => (7, i),
            };
            f64::from((i * 37 + seed * 101 + kind * 13) % 17) / 4.0 - 2.0
        }
    }

    /// Asserts that every sink of `after` computes the same as in `before`, at several leaf
    /// assignments.
    pub fn assert_same_values(before: &Graph, after: &Graph) {
        for seed in 0..8 {
            let a = eval_f64(before, leaf_value(seed));
            let b = eval_f64(after, leaf_value(seed));
            assert!(!a.is_empty(), "the graph before has no sinks");
            assert_eq!(a.len(), b.len(), "sinks differ");
            for ((sa, va), (sb, vb)) in a.iter().zip(&b) {
                assert_eq!(sa, sb);
                assert!(
                    va == vb || (va.is_nan() && vb.is_nan()),
                    "{sa} was {va}, is {vb} (seed {seed})"
                );
            }
        }
    }

    /// Runs `pass` on `g`, asserting that it rewrites something and that every sink still
    /// computes the same.
    pub fn assert_rewrites(g: &mut Graph, pass: fn(&mut Graph) -> bool) {
        let before = g.clone();
        assert!(pass(g), "the pass rewrote nothing");
        assert_same_values(&before, g);
    }

    /// How many nodes satisfy `pred`.
    pub fn count(g: &Graph, pred: impl Fn(Op) -> bool) -> usize {
        g.nodes().into_iter().filter(|&n| pred(g.op(n))).count()
    }

    /// The neuron's printed lines, trimmed.
    pub fn lines(ir: &NeuronIr) -> Vec<String> {
        format!("{ir}")
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// The value of `n`, fully inlined.
    pub fn expr(ir: &NeuronIr, n: NodeId) -> String {
        Printer::new(&ir.graph, |l| ir.leaf_name(l), |s| ir.sink_label(s)).inline(n)
    }

    /// Asserts that exactly one node is named `name` and that it computes `expected` (fully
    /// inlined), independently of how the printer lays out its lines.
    pub fn assert_named(ir: &NeuronIr, name: &str, expected: &str) {
        let g = &ir.graph;
        let named: Vec<NodeId> = g
            .nodes()
            .into_iter()
            .filter(|&n| g.name(n) == Some(name))
            .collect();
        assert_eq!(named.len(), 1, "nodes named `{name}`");
        assert_eq!(expr(ir, named[0]), expected);
    }

    /// Asserts that the neuron prints the line `line`.
    pub fn assert_line(ir: &NeuronIr, line: &str) {
        let lines = lines(ir);
        assert!(
            lines.iter().any(|l| l == line),
            "no line `{line}` in:\n{}",
            lines.join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{assert_line, assert_named, assert_same_values, count};
    use super::*;
    use crate::ir::{Binary, Unary};
    use crate::{NeuronBuilder, Surrogate};

    /// A LIF neuron whose membrane update is written twice, with clutter to clean up.
    fn lif_written_twice() -> NeuronIr {
        let b = NeuronBuilder::new("lif").surrogate(Surrogate::atan(2.0));
        let x = b.input("x");
        let v = b.state("v", 0.0);
        let decay = b.param("decay", 0.5);
        let th = b.param("threshold", 1.0);
        let h = (decay * v + x).named("h");
        let h_again = (decay * v + x) * 1.0 + 0.0;
        let s = b.spike(h - th).named("s");
        let reset = (s.detach() * (2.0 * 0.5)) * h_again;
        v.set(h - reset);
        b.output("s", s);
        b.finish().expect("valid neuron")
    }

    #[test]
    fn optimize_merges_a_subexpression_written_twice() {
        let mut ir = lif_written_twice();
        let before = ir.graph.clone();
        ir.optimize();
        let g = &ir.graph;
        assert_same_values(&before, g);
        assert_eq!(
            count(g, |op| op == Op::Binary(Binary::Add)),
            1,
            "one `decay * v + x`"
        );
        // `decay * v` and `detach(s) * h`.
        assert_eq!(count(g, |op| op == Op::Binary(Binary::Mul)), 2);
        assert_eq!(count(g, |op| matches!(op, Op::Const(_))), 0);
        assert_named(&ir, "h", "decay * v + x");
        assert_line(&ir, "h = decay * v + x");
        assert_line(&ir, "v <- h - detach(s) * h");
        ir.validate().expect("still valid");
    }

    #[test]
    fn optimize_keeps_detach_and_spike() {
        let mut ir = lif_written_twice();
        ir.optimize();
        let g = &ir.graph;
        assert_eq!(count(g, |op| matches!(op, Op::Spike(_))), 1);
        assert_eq!(count(g, |op| op == Op::Detach), 1);
        assert_eq!(ir.output_kind(0), crate::ir::SpikeKind::Binary);
    }

    #[test]
    fn optimize_reaches_a_fixpoint() {
        let mut ir = lif_written_twice();
        ir.optimize();
        let g = &mut ir.graph;
        assert!(!fold(g));
        assert!(!simplify(g));
        assert!(!cse(g));
        assert!(!dce(g));
    }

    #[test]
    fn optimize_chains_the_passes() {
        // `(2 * 3) * x - 6 * x`: folding makes two `6 * x`, CSE merges them, simplification
        // turns `t - t` into 0, and DCE drops the rest.
        let b = NeuronBuilder::new("n");
        let x = b.input("x");
        let y = b.input("y");
        let six = b.constant(2.0) * 3.0;
        b.output("o", six * x - 6.0 * x + y.exp());
        let mut ir = b.finish().expect("valid neuron");
        let before = ir.graph.clone();
        ir.optimize();
        assert_same_values(&before, &ir.graph);
        assert_line(&ir, "output o = exp(y)");
        // The sink, `exp` and `y`: `x` is no longer read.
        assert_eq!(ir.graph.len(), 3);
        assert_eq!(count(&ir.graph, |op| op == Op::Unary(Unary::Exp)), 1);
    }
}
