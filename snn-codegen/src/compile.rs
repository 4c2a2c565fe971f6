//! From a neuron to the three step programs the kernels and the interpreter run.

use std::collections::BTreeMap;
use std::fmt;

use crate::autodiff::differentiate;
use crate::dtype::{Dtype, Storage};
use crate::error::IrError;
use crate::ir::{Graph, Leaf, NeuronIr, NodeId, Sink};
use crate::neuron::Neuron;
use crate::passes::optimize;
use crate::plan::{MemoryPlan, plan};
use crate::print::Printer;

/// A neuron lowered for execution.
///
/// - `neuron.graph`: the optimised forward step (inference).
/// - `forward_train`: the same step, also writing the plan's `Save` sinks.
/// - `backward`: one reverse step. Leaves: `Saved`, re-read `Input`s and `OutputValue`s of
///   step `t`, `OutputGrad`, `StateGrad` (adjoints from `t + 1`), `Param`, and `State`
///   (the states before step `t`). Sinks: `InputGrad`, `StateGradOut`, `ParamGrad`.
/// - `prev_states`: rebuilds the states before step `t` from step `t - 1`'s saved and
///   re-read tensors (sinks `NextState(j)` for each state `backward` reads). At `t = 0`
///   the initial states are used instead.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub neuron: NeuronIr,
    pub forward_train: Graph,
    pub backward: Graph,
    pub prev_states: Graph,
    pub plan: MemoryPlan,
}

/// Validates, optimises, differentiates and plans a neuron.
pub fn compile(neuron: &dyn Neuron, storage: Storage) -> Result<Compiled, IrError> {
    storage.check().map_err(IrError::Storage)?;
    let mut ir = neuron.ir()?;
    // Validated before optimising: an optimised graph may legitimately stop reading an
    // input (say `0 * x`), which the checks for user mistakes would flag.
    ir.optimize();
    let adj = differentiate(&ir);
    let plan = plan(&ir, &adj, storage);

    // Substitute saved and re-read tensors for recomputation.
    let mut g = adj.graph.clone();
    let mut subst: BTreeMap<NodeId, NodeId> = BTreeMap::new();
    for (k, s) in plan.saves.iter().enumerate() {
        let n = adj.copy[&s.node];
        let leaf = g.leaf(Leaf::Saved(k as u32));
        g.set_name(leaf, Some(s.name.clone()));
        g.replace_uses(n, leaf);
        subst.insert(n, leaf);
    }
    for &m in &plan.reread_outputs {
        if let Some(f) = ir.graph.sink_value(Sink::Output(m)) {
            let n = adj.copy[&f];
            if let std::collections::btree_map::Entry::Vacant(e) = subst.entry(n) {
                let leaf = g.leaf(Leaf::OutputValue(m));
                g.replace_uses(n, leaf);
                e.insert(leaf);
            }
        }
    }

    let mut backward = g.clone();
    optimize(&mut backward);

    let mut prev_states = g;
    for (_, n) in prev_states.sinks() {
        prev_states.remove(n);
    }
    for j in 0..ir.states.len() as u32 {
        if backward.find_leaf(Leaf::State(j)).is_none() {
            continue;
        }
        let f = ir.graph.sink_value(Sink::NextState(j));
        if let Some(n) = f.map(|f| adj.copy[&f]) {
            let n = subst.get(&n).copied().unwrap_or(n);
            prev_states.sink(Sink::NextState(j), n);
        }
    }
    optimize(&mut prev_states);

    let mut forward_train = ir.graph.clone();
    for (k, s) in plan.saves.iter().enumerate() {
        forward_train.sink(Sink::Save(k as u32), s.node);
    }
    Ok(Compiled {
        neuron: ir,
        forward_train,
        backward,
        prev_states,
        plan,
    })
}

impl Compiled {
    /// The CUDA kernels the runtime compiles for this neuron (default options): print
    /// `kernels().backward.source` to read one.
    pub fn kernels(&self) -> crate::cuda::KernelSet {
        crate::cuda::generate(self, &crate::cuda::KernelOptions::default())
    }

    /// The dtype output `m` is stored in.
    pub fn output_dtype(&self, m: usize) -> Dtype {
        self.plan
            .outputs
            .get(m)
            .map_or(self.plan.storage.io, |o| o.dtype)
    }

    /// The name a leaf of the backward graphs prints as.
    pub fn leaf_name(&self, leaf: Leaf) -> String {
        let ir = &self.neuron;
        match leaf {
            Leaf::Saved(k) => self
                .plan
                .saves
                .get(k as usize)
                .map_or_else(|| format!("saved{k}"), |s| s.name.clone()),
            Leaf::OutputValue(m) => ir.outputs.get(m as usize).cloned().unwrap_or_default(),
            Leaf::OutputGrad(m) => format!(
                "grad_{}",
                ir.outputs.get(m as usize).cloned().unwrap_or_default()
            ),
            Leaf::StateGrad(j) => format!("grad_{}", ir.leaf_name(Leaf::State(j))),
            l => ir.leaf_name(l),
        }
    }

    /// The left-hand side a sink of the backward graphs prints with.
    pub fn sink_label(&self, sink: Sink) -> String {
        let ir = &self.neuron;
        match sink {
            Sink::InputGrad(k) => format!("grad_{} =", ir.leaf_name(Leaf::Input(k))),
            Sink::StateGradOut(j) => format!("grad_{} <-", ir.leaf_name(Leaf::State(j))),
            Sink::ParamGrad(p) => format!("grad_{} +=", ir.leaf_name(Leaf::Param(p))),
            Sink::NextState(j) => format!("{} =", ir.leaf_name(Leaf::State(j))),
            Sink::Save(k) => format!("save {} =", self.leaf_name(Leaf::Saved(k))),
            s => ir.sink_label(s),
        }
    }

    /// Prints a graph of this neuron (forward, backward or prev-state) as equations.
    pub fn equations(&self, g: &Graph) -> Vec<String> {
        Printer::new(g, |l| self.leaf_name(l), |s| self.sink_label(s)).lines()
    }
}

impl fmt::Display for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.neuron)?;
        writeln!(f, "{}", self.plan)?;
        writeln!(f, "forward (training) also saves:")?;
        for line in self
            .equations(&self.forward_train)
            .into_iter()
            .filter(|l| l.starts_with("save "))
        {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "backward, for t = T-1 down to 0:")?;
        if !self.prev_states.is_empty() {
            writeln!(
                f,
                "  states before step t, rebuilt from step t-1 (initial states at t = 0):"
            )?;
            for line in self.equations(&self.prev_states) {
                writeln!(f, "    {line}")?;
            }
        }
        for line in self.equations(&self.backward) {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}
