//! Reverse-mode differentiation of one step.
//!
//! The adjoint graph starts as a copy of the forward step (so every forward value can be
//! recomputed from `Input` and `State` leaves), then sweeps it in reverse: each value's
//! adjoint is the sum of its users' contributions, seeded by `OutputGrad` on outputs and by
//! `StateGrad` (the adjoint arriving from step `t + 1`) on new states. The sinks are
//! `InputGrad`, `StateGradOut` (passed to step `t - 1`) and `ParamGrad` for learnable
//! params. The memory plan then replaces recomputation by saved tensors where that is
//! cheaper, and the passes remove what is left unused.

use std::collections::{BTreeMap, BTreeSet};

use crate::ir::{Binary, Cmp, Graph, Leaf, NeuronIr, NodeId, Op, Sink, Unary};

/// The forward step copied into a graph together with its reverse sweep.
#[derive(Clone, Debug)]
pub struct Adjoint {
    pub graph: Graph,
    /// Forward node -> its copy in `graph`.
    pub copy: BTreeMap<NodeId, NodeId>,
}

/// Which forward values carry gradient: those reached from inputs, states or learnable
/// params other than through `detach` or a comparison.
fn active(ir: &NeuronIr, order: &[NodeId]) -> BTreeSet<NodeId> {
    let g = &ir.graph;
    let mut active = BTreeSet::new();
    for &n in order {
        let is = match g.op(n) {
            Op::Leaf(Leaf::Input(_) | Leaf::State(_)) => true,
            Op::Leaf(Leaf::Param(p)) => ir.params.get(p as usize).is_some_and(|p| p.learnable),
            Op::Leaf(_) | Op::Const(_) | Op::Detach | Op::Cmp(_) | Op::Sink(_) => false,
            _ => g.operands(n).iter().any(|a| active.contains(a)),
        };
        if is {
            active.insert(n);
        }
    }
    active
}

/// Differentiates a validated neuron's step.
pub fn differentiate(ir: &NeuronIr) -> Adjoint {
    let fwd = &ir.graph;
    let order = fwd.topo_order().unwrap_or_default();
    let active = active(ir, &order);
    let mut g = Graph::new();
    let (copy, sinks) = g.inline(fwd, &mut |g, l| g.leaf(l));

    let mut adj: BTreeMap<NodeId, NodeId> = BTreeMap::new();
    let add = |g: &mut Graph, adj: &mut BTreeMap<NodeId, NodeId>, n: NodeId, a: NodeId| {
        let sum = match adj.get(&n) {
            Some(&old) => g.binary(Binary::Add, old, a),
            None => a,
        };
        adj.insert(n, sum);
    };
    for (sink, value) in &sinks {
        let seed = match *sink {
            Sink::Output(m) => g.leaf(Leaf::OutputGrad(m)),
            Sink::NextState(j) => g.leaf(Leaf::StateGrad(j)),
            _ => continue,
        };
        add(&mut g, &mut adj, *value, seed);
    }

    for &f in order.iter().rev() {
        let n = match copy.get(&f) {
            Some(&n) if active.contains(&f) => n,
            _ => continue,
        };
        let Some(&a) = adj.get(&n) else { continue };
        let args = g.operands(n);
        let fargs = fwd.operands(f);
        let wants = |i: usize| active.contains(&fargs[i]);
        let mut contrib: Vec<(usize, NodeId)> = Vec::new();
        match g.op(n) {
            Op::Unary(u) => {
                let x = args[0];
                let d = match u {
                    Unary::Neg => g.unary(Unary::Neg, a),
                    Unary::Abs => {
                        let zero = g.constant(0.0);
                        let neg = g.cmp(Cmp::Lt, x, zero);
                        let na = g.unary(Unary::Neg, a);
                        g.select(neg, na, a)
                    }
                    Unary::Exp => g.binary(Binary::Mul, a, n),
                    Unary::Log => g.binary(Binary::Div, a, x),
                    Unary::Sqrt => {
                        let two = g.constant(2.0);
                        let den = g.binary(Binary::Mul, two, n);
                        g.binary(Binary::Div, a, den)
                    }
                    Unary::Tanh => {
                        let one = g.constant(1.0);
                        let sq = g.binary(Binary::Mul, n, n);
                        let d = g.binary(Binary::Sub, one, sq);
                        g.binary(Binary::Mul, a, d)
                    }
                    Unary::Atan => {
                        let one = g.constant(1.0);
                        let sq = g.binary(Binary::Mul, x, x);
                        let den = g.binary(Binary::Add, one, sq);
                        g.binary(Binary::Div, a, den)
                    }
                    Unary::Sigmoid => {
                        let one = g.constant(1.0);
                        let om = g.binary(Binary::Sub, one, n);
                        let d = g.binary(Binary::Mul, n, om);
                        g.binary(Binary::Mul, a, d)
                    }
                };
                contrib.push((0, d));
            }
            Op::Binary(b) => {
                let (x, y) = (args[0], args[1]);
                match b {
                    Binary::Add => contrib.extend([(0, a), (1, a)]),
                    Binary::Sub => {
                        contrib.push((0, a));
                        if wants(1) {
                            contrib.push((1, g.unary(Unary::Neg, a)));
                        }
                    }
                    Binary::Mul => {
                        if wants(0) {
                            contrib.push((0, g.binary(Binary::Mul, a, y)));
                        }
                        if wants(1) {
                            contrib.push((1, g.binary(Binary::Mul, a, x)));
                        }
                    }
                    Binary::Div => {
                        if wants(0) {
                            contrib.push((0, g.binary(Binary::Div, a, y)));
                        }
                        if wants(1) {
                            // d(x / y)/dy = -(x / y) / y
                            let q = g.binary(Binary::Div, n, y);
                            let aq = g.binary(Binary::Mul, a, q);
                            contrib.push((1, g.unary(Unary::Neg, aq)));
                        }
                    }
                    Binary::Min | Binary::Max => {
                        // The gradient goes to the chosen operand; ties go to the first.
                        let c = if b == Binary::Min { Cmp::Le } else { Cmp::Ge };
                        let first = g.cmp(c, x, y);
                        route(&mut g, first, a, [0, 1], &wants, &mut contrib);
                    }
                }
            }
            Op::Powf(e) => {
                let x = args[0];
                let d = if e == 1.0 {
                    a
                } else {
                    let p = g.add(Op::Powf(e - 1.0), &[x]);
                    let k = g.constant(e);
                    let kp = g.binary(Binary::Mul, k, p);
                    g.binary(Binary::Mul, a, kp)
                };
                if e != 0.0 {
                    contrib.push((0, d));
                }
            }
            Op::Clamp => {
                let (x, lo, hi) = (args[0], args[1], args[2]);
                let zero = g.constant(0.0);
                let below = g.cmp(Cmp::Lt, x, lo);
                let above = g.cmp(Cmp::Gt, x, hi);
                if wants(0) {
                    let inner = g.select(above, zero, a);
                    contrib.push((0, g.select(below, zero, inner)));
                }
                if wants(1) {
                    contrib.push((1, g.select(below, a, zero)));
                }
                if wants(2) {
                    contrib.push((2, g.select(above, a, zero)));
                }
            }
            Op::Select => route(&mut g, args[0], a, [1, 2], &wants, &mut contrib),
            Op::Spike(k) => {
                let s = g.surrogate(k).cloned();
                if let Some(s) = s {
                    let d = s.emit_derivative(&mut g, args[0]);
                    contrib.push((0, g.binary(Binary::Mul, a, d)));
                }
            }
            Op::Leaf(_) | Op::Const(_) | Op::Cmp(_) | Op::Detach | Op::Sink(_) => {}
        }
        for (slot, d) in contrib {
            if wants(slot) {
                add(&mut g, &mut adj, args[slot], d);
            }
        }
    }

    // Sinks: every input and state gets its adjoint (zero if it has none), every learnable
    // param its contribution.
    let leaf_adjoint = |g: &mut Graph, adj: &BTreeMap<NodeId, NodeId>, leaf: Leaf| {
        fwd.find_leaf(leaf)
            .and_then(|f| copy.get(&f))
            .and_then(|n| adj.get(n))
            .copied()
            .unwrap_or_else(|| g.constant(0.0))
    };
    for k in 0..ir.inputs.len() as u32 {
        let a = leaf_adjoint(&mut g, &adj, Leaf::Input(k));
        g.sink(Sink::InputGrad(k), a);
    }
    for j in 0..ir.states.len() as u32 {
        let a = leaf_adjoint(&mut g, &adj, Leaf::State(j));
        g.sink(Sink::StateGradOut(j), a);
    }
    for (p, spec) in ir.params.iter().enumerate() {
        if spec.learnable {
            let a = leaf_adjoint(&mut g, &adj, Leaf::Param(p as u32));
            g.sink(Sink::ParamGrad(p as u32), a);
        }
    }
    Adjoint { graph: g, copy }
}

/// Adjoint `a` routed by `cond`: to operand `then` where it holds, to operand `other` where
/// it does not (for the operands that want a gradient).
fn route(
    g: &mut Graph,
    cond: NodeId,
    a: NodeId,
    [then, other]: [usize; 2],
    wants: &dyn Fn(usize) -> bool,
    contrib: &mut Vec<(usize, NodeId)>,
) {
    let zero = g.constant(0.0);
    if wants(then) {
        contrib.push((then, g.select(cond, a, zero)));
    }
    if wants(other) {
        contrib.push((other, g.select(cond, zero, a)));
    }
}
