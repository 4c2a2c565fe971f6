//! The memory plan: what the forward pass saves for the backward pass.
//!
//! The kernels are memory-bound, so the plan minimises the bytes moved per element-step.
//! The backward step at `t` needs some forward values of step `t`; each can be
//! - recomputed from other available values (free: arithmetic is cheap),
//! - saved by the forward pass (written once, read once),
//! - re-read from a forward input or output, which exist anyway (read once).
//!
//! The states before step `t` are recomputed from what step `t - 1` saved (at `t = 0` they
//! are the initial states), so no state needs a tensor of its own unless nothing cheaper
//! rebuilds it. The plan searches the subsets of candidate values by increasing size and
//! keeps the cheapest feasible one (ties: the first found, so plans are deterministic).
//! The search is exhaustive for small subsets and bounded in total work, so a very large
//! neuron gets a good plan rather than a provably minimal one.
//!
//! With saves narrower than f32, recomputing a spike or comparison from a rounded value
//! could disagree with the forward pass; such plans are rejected and the spike itself is
//! saved or re-read (it is exact in any dtype).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::autodiff::Adjoint;
use crate::dtype::{Dtype, Storage};
use crate::ir::{Leaf, NeuronIr, NodeId, Op, Sink, SpikeKind};

/// One tensor the forward pass saves.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedValue {
    pub name: String,
    /// The forward node whose value is saved.
    pub node: NodeId,
    /// Whether its values are exactly 0 or 1 (a spike).
    pub binary: bool,
}

/// Bytes moved per element and time step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes {
    pub forward_inference: usize,
    pub forward_train: usize,
    pub backward: usize,
}

impl Bytes {
    /// Forward (train) plus backward: what one training step moves.
    pub fn train(&self) -> usize {
        self.forward_train + self.backward
    }
}

/// What the forward saves and what the backward re-reads.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    pub storage: Storage,
    /// Each output's kind of values and the dtype it is stored in.
    pub outputs: Vec<StoredOutput>,
    pub saves: Vec<SavedValue>,
    /// Forward inputs the backward reads again.
    pub reread_inputs: Vec<u32>,
    /// Forward outputs the backward reads again.
    pub reread_outputs: Vec<u32>,
    pub bytes: Bytes,
}

/// How an output is stored: spike trains (binary or ternary) narrower than real values.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredOutput {
    pub name: String,
    pub kind: SpikeKind,
    pub dtype: Dtype,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Candidate {
    Save(NodeId),
    Reread(u32),
}

/// The search state: the adjoint graph flattened for fast repeated walks.
struct Search {
    storage: Storage,
    /// Each output's spike kind (the IR's analysis, run once).
    kinds: Vec<SpikeKind>,
    ops: BTreeMap<NodeId, Op>,
    operands: BTreeMap<NodeId, Vec<NodeId>>,
    roots: Vec<NodeId>,
    /// Adjoint-graph node of each state's new value.
    next_state: Vec<NodeId>,
    candidates: Vec<(Candidate, NodeId, usize)>,
    /// Nodes that recompute forward values (the rest compute gradients).
    forward: BTreeSet<NodeId>,
}

/// Per-subset walk: memoised exactness (`None`: cannot be computed).
struct Walk<'s> {
    s: &'s Search,
    subst: BTreeMap<NodeId, Candidate>,
    memo: [BTreeMap<NodeId, Option<bool>>; 2],
    inputs: BTreeSet<u32>,
}

impl Walk<'_> {
    /// Whether `n` can be computed, and exactly; `prev` walks step `t - 1`, where states
    /// are not available.
    fn visit(&mut self, n: NodeId, prev: bool) -> Option<bool> {
        if let Some(&r) = self.memo[prev as usize].get(&n) {
            return r;
        }
        let st = self.s.storage;
        let r = if let Some(&c) = self.subst.get(&n) {
            Some(match c {
                Candidate::Save(_) => st.saves.holds_f32() || self.s.binary(n),
                // Spikes of either kind read back exactly from any dtype.
                Candidate::Reread(m) => self.s.kinds[m as usize].is_spike() || st.io.holds_f32(),
            })
        } else {
            match self.s.ops[&n] {
                Op::Leaf(Leaf::Input(k)) => {
                    self.inputs.insert(k);
                    Some(true)
                }
                Op::Leaf(Leaf::State(j)) if prev => {
                    let _ = j;
                    None
                }
                Op::Leaf(Leaf::State(j)) => self.visit(self.s.next_state[j as usize], true),
                Op::Leaf(_) | Op::Const(_) => Some(true),
                op => {
                    let mut exact = true;
                    for a in self.s.operands[&n].clone() {
                        exact &= self.visit(a, prev)?;
                    }
                    // A recomputed spike must equal the forward's; a surrogate's window test
                    // on a rounded value only perturbs the gradient slightly.
                    if op.is_discontinuous() && !exact && self.s.forward.contains(&n) {
                        None
                    } else {
                        Some(exact)
                    }
                }
            }
        };
        self.memo[prev as usize].insert(n, r);
        r
    }
}

impl Search {
    fn new(ir: &NeuronIr, adj: &Adjoint, storage: Storage) -> Self {
        let kinds: Vec<SpikeKind> = (0..ir.outputs.len()).map(|m| ir.output_kind(m)).collect();
        let g = &adj.graph;
        let ops = g.nodes().into_iter().map(|n| (n, g.op(n))).collect();
        let operands = g.nodes().into_iter().map(|n| (n, g.operands(n))).collect();
        let roots = g.sinks().into_iter().map(|(_, n)| n).collect();
        let fwd = &ir.graph;
        let next_state: Vec<NodeId> = (0..ir.states.len() as u32)
            .map(|j| {
                let f = fwd
                    .sink_value(Sink::NextState(j))
                    .unwrap_or_else(|| fwd.nodes()[0]);
                adj.copy[&f]
            })
            .collect();
        // Values the backward or the state rebuild may read.
        let mut live = BTreeSet::new();
        let mut stack: Vec<NodeId> = g
            .sinks()
            .into_iter()
            .map(|(_, n)| n)
            .chain(next_state.iter().copied())
            .collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(g.operands(n));
            }
        }
        let st = storage;
        let mut candidates = Vec::new();
        for f in fwd.nodes() {
            let op = fwd.op(f);
            let savable = match op {
                Op::Leaf(Leaf::State(_)) => true,
                Op::Leaf(_) | Op::Const(_) | Op::Sink(_) | Op::Cmp(_) => false,
                _ => true,
            };
            if let (true, Some(&n)) = (savable, adj.copy.get(&f))
                && live.contains(&n)
            {
                candidates.push((Candidate::Save(f), n, 2 * st.saves.size()));
            }
        }
        for m in 0..ir.outputs.len() as u32 {
            if let Some(f) = fwd.sink_value(Sink::Output(m)) {
                let n = adj.copy[&f];
                let dtype = st.output(kinds[m as usize]);
                if live.contains(&n) && !matches!(fwd.op(f), Op::Leaf(_) | Op::Const(_)) {
                    candidates.push((Candidate::Reread(m), n, dtype.size()));
                }
            }
        }
        let forward = adj.copy.values().copied().collect();
        Search {
            storage,
            kinds,
            ops,
            operands,
            roots,
            next_state,
            candidates,
            forward,
        }
    }

    fn binary(&self, n: NodeId) -> bool {
        matches!(self.ops.get(&n), Some(Op::Spike(_)))
    }

    /// The bytes the backward reads for this choice (saves count twice: written, then
    /// read), or `None` if the choice leaves some needed value uncomputable.
    fn cost(&self, chosen: &[usize]) -> Option<(usize, BTreeSet<u32>)> {
        let mut subst = BTreeMap::new();
        for &i in chosen {
            let (c, n, _) = self.candidates[i];
            subst.entry(n).or_insert(c);
        }
        let mut w = Walk {
            s: self,
            subst,
            memo: [BTreeMap::new(), BTreeMap::new()],
            inputs: BTreeSet::new(),
        };
        for &r in &self.roots {
            w.visit(r, false)?;
        }
        let cost = chosen.iter().map(|&i| self.candidates[i].2).sum::<usize>()
            + w.inputs.len() * self.storage.io.size();
        Some((cost, w.inputs))
    }

    /// The cheapest feasible subset of candidates.
    fn best(&self) -> Vec<usize> {
        let all: Vec<usize> = (0..self.candidates.len()).collect();
        let mut best = all.clone();
        let mut best_cost = self.cost(&all).map_or(usize::MAX, |c| c.0);
        let unit = self
            .candidates
            .iter()
            .map(|c| c.2)
            .min()
            .unwrap_or(1)
            .max(1);
        // Plans are found among small subsets; the budget bounds compile time for large
        // neurons (the search is exhaustive up to the size where it runs out).
        let mut budget: usize = 50_000;
        for k in 0..=all.len() {
            if k * unit >= best_cost || budget == 0 {
                break;
            }
            let mut combo: Vec<usize> = (0..k).collect();
            loop {
                budget = budget.saturating_sub(1);
                if let Some((c, _)) = self.cost(&combo)
                    && c < best_cost
                {
                    best_cost = c;
                    best = combo.clone();
                }
                if !next_combination(&mut combo, all.len()) || budget == 0 {
                    break;
                }
            }
        }
        best
    }
}

/// Advances `c` to the next k-combination of `0..n` in lexicographic order.
fn next_combination(c: &mut [usize], n: usize) -> bool {
    let k = c.len();
    for i in (0..k).rev() {
        if c[i] < n - k + i {
            c[i] += 1;
            for j in i + 1..k {
                c[j] = c[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

/// Chooses what to save for `ir` (optimised and validated) given its adjoint graph.
pub fn plan(ir: &NeuronIr, adj: &Adjoint, storage: Storage) -> MemoryPlan {
    let search = Search::new(ir, adj, storage);
    let chosen = search.best();
    let inputs = search.cost(&chosen).map(|c| c.1).unwrap_or_default();
    let mut saves = Vec::new();
    let mut reread_outputs = Vec::new();
    for &i in &chosen {
        match search.candidates[i].0 {
            Candidate::Save(f) => saves.push(f),
            Candidate::Reread(m) => reread_outputs.push(m),
        }
    }
    saves.sort_unstable();
    let fwd = &ir.graph;
    let mut names = BTreeSet::new();
    let saves: Vec<SavedValue> = saves
        .into_iter()
        .enumerate()
        .map(|(k, f)| {
            let base = match fwd.op(f) {
                Op::Leaf(l) => Some(format!("{}_prev", ir.leaf_name(l))),
                _ => fwd.name(f).map(str::to_string),
            }
            .unwrap_or_else(|| format!("save{k}"));
            let mut name = base.clone();
            let mut i = 1;
            while !names.insert(name.clone()) {
                name = format!("{base}_{i}");
                i += 1;
            }
            SavedValue {
                name,
                node: f,
                binary: matches!(fwd.op(f), Op::Spike(_)),
            }
        })
        .collect();
    let reread_inputs: Vec<u32> = inputs.into_iter().collect();
    let bytes = bytes(ir, storage, &saves, &reread_inputs, &reread_outputs);
    MemoryPlan {
        storage,
        outputs: (ir.outputs.iter().zip(&search.kinds))
            .map(|(name, &kind)| StoredOutput {
                name: name.clone(),
                kind,
                dtype: storage.output(kind),
            })
            .collect(),
        saves,
        reread_inputs,
        reread_outputs,
        bytes,
    }
}

fn output_size(ir: &NeuronIr, st: Storage, m: usize) -> usize {
    st.output(ir.output_kind(m)).size()
}

fn bytes(
    ir: &NeuronIr,
    st: Storage,
    saves: &[SavedValue],
    inputs: &[u32],
    outputs: &[u32],
) -> Bytes {
    let io = st.io.size();
    let outs: usize = (0..ir.outputs.len()).map(|m| output_size(ir, st, m)).sum();
    let forward_inference = ir.inputs.len() * io + outs;
    let save_bytes = saves.len() * st.saves.size();
    let rereads = inputs.len() * io
        + outputs
            .iter()
            .map(|&m| output_size(ir, st, m as usize))
            .sum::<usize>();
    Bytes {
        forward_inference,
        forward_train: forward_inference + save_bytes,
        // dL/dy in, dL/dx out, saves and re-reads in.
        backward: ir.outputs.len() * io + ir.inputs.len() * io + save_bytes + rereads,
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let saves: Vec<String> = self.saves.iter().map(|s| s.name.clone()).collect();
        writeln!(f, "memory plan ({})", self.storage)?;
        let outputs: Vec<String> = self
            .outputs
            .iter()
            .map(|o| format!("{} ({}, {})", o.name, o.kind, o.dtype))
            .collect();
        writeln!(f, "  outputs: {}", outputs.join(", "))?;
        writeln!(
            f,
            "  saves: {}",
            if saves.is_empty() {
                "nothing".into()
            } else {
                saves.join(", ")
            }
        )?;
        writeln!(
            f,
            "  backward re-reads {} input(s), {} output(s)",
            self.reread_inputs.len(),
            self.reread_outputs.len()
        )?;
        let b = self.bytes;
        write!(
            f,
            "  bytes per element-step: forward {} (inference {}), backward {}, training total {}",
            b.forward_train,
            b.forward_inference,
            b.backward,
            b.train()
        )
    }
}
