//! Well-formedness of a neuron: every problem is collected and named.

use std::collections::{BTreeMap, BTreeSet};

use super::neuron::{Init, NeuronIr};
use super::op::{Leaf, Op, Sink, Ty};
use crate::error::IrError;
use crate::print::Printer;

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl NeuronIr {
    /// Checks that the neuron is well formed; returns every problem found.
    pub fn validate(&self) -> Result<(), IrError> {
        let neuron = self.name.clone();
        let mut errs = Vec::new();
        let g = &self.graph;
        let printer = Printer::new(g, |l| self.leaf_name(l), |s| self.sink_label(s));

        // Names.
        let leaf_names = self
            .inputs
            .iter()
            .map(|n| ("input", n))
            .chain(self.states.iter().map(|s| ("state", &s.name)))
            .chain(self.params.iter().map(|p| ("param", &p.name)));
        let mut seen = BTreeSet::new();
        for (kind, name) in leaf_names.chain(self.outputs.iter().map(|n| ("output", n))) {
            if !is_ident(name) {
                errs.push(IrError::BadName {
                    neuron: neuron.clone(),
                    name: name.clone(),
                });
            }
            // Outputs have a namespace of their own: `output v` may export state `v`.
            let space = if kind == "output" { "output" } else { "leaf" };
            if !seen.insert((space, name.clone())) {
                errs.push(IrError::DuplicateName {
                    neuron: neuron.clone(),
                    kind,
                    name: name.clone(),
                });
            }
        }
        if self.outputs.is_empty() {
            errs.push(IrError::NoOutputs {
                neuron: neuron.clone(),
            });
        }

        // Params, initial values and surrogates.
        for p in &self.params {
            if !p.default.is_finite() {
                errs.push(IrError::BadDefault {
                    neuron: neuron.clone(),
                    param: p.name.clone(),
                    value: p.default,
                });
            }
        }
        for s in &self.states {
            if let Init::Param(p) = s.init
                && p as usize >= self.params.len()
            {
                errs.push(IrError::InitUndeclared {
                    neuron: neuron.clone(),
                    state: s.name.clone(),
                    param: p,
                });
            }
        }
        for s in g.surrogates() {
            if let Err(problem) = s.check() {
                errs.push(IrError::BadSurrogate {
                    neuron: neuron.clone(),
                    surrogate: s.to_string(),
                    problem,
                });
            }
        }

        // Nodes.
        let mut sinks: BTreeMap<Sink, usize> = BTreeMap::new();
        for n in g.nodes() {
            let op = g.op(n);
            let args = g.operands(n);
            let node = || printer.expr(n);
            if args.len() != op.arity() {
                errs.push(IrError::Arity {
                    neuron: neuron.clone(),
                    node: node(),
                    expected: op.arity(),
                    found: args.len(),
                });
                continue;
            }
            match op {
                Op::Leaf(l) if !self.declares_leaf(l) => {
                    errs.push(IrError::UndeclaredLeaf {
                        neuron: neuron.clone(),
                        leaf: l.to_string(),
                    });
                }
                Op::Sink(s) => {
                    if !self.declares_sink(s) {
                        errs.push(IrError::BadSink {
                            neuron: neuron.clone(),
                            sink: s.to_string(),
                        });
                    }
                    *sinks.entry(s).or_default() += 1;
                }
                Op::Const(c) if !c.is_finite() => {
                    let user = g.users(n).first().copied().unwrap_or(n);
                    errs.push(IrError::NonFiniteConst {
                        neuron: neuron.clone(),
                        what: "constant",
                        value: c,
                        context: printer.expr(user),
                    });
                }
                Op::Powf(e) if !e.is_finite() => {
                    errs.push(IrError::NonFiniteConst {
                        neuron: neuron.clone(),
                        what: "exponent",
                        value: e,
                        context: node(),
                    });
                }
                Op::Spike(k) if g.surrogate(k).is_none() => {
                    errs.push(IrError::NoSurrogate {
                        neuron: neuron.clone(),
                    });
                }
                _ => {}
            }
            for (slot, &a) in args.iter().enumerate() {
                let Some(found) = g.op(a).ty() else {
                    let sink = g.op(a).sink().map(|s| s.to_string()).unwrap_or_default();
                    errs.push(IrError::SinkAsOperand {
                        neuron: neuron.clone(),
                        sink,
                    });
                    continue;
                };
                match (op.operand_ty(slot), found) {
                    (Ty::Real, Ty::Bool) => errs.push(IrError::BoolAsReal {
                        neuron: neuron.clone(),
                        node: printer.expr(a),
                    }),
                    (Ty::Bool, Ty::Real) => errs.push(IrError::RealAsBool {
                        neuron: neuron.clone(),
                        node: node(),
                    }),
                    _ => {}
                }
            }
        }
        if let Err(n) = g.topo_order() {
            let node = g.name(n).map_or_else(
                || format!("a `{}` node", g.op(n).describe()),
                |name| format!("`{name}`"),
            );
            errs.push(IrError::Cycle {
                neuron: neuron.clone(),
                node,
            });
        }

        // Every state updated once, every output set once, every input used.
        for (j, s) in self.states.iter().enumerate() {
            match sinks.get(&Sink::NextState(j as u32)).copied().unwrap_or(0) {
                0 => errs.push(IrError::StateNotUpdated {
                    neuron: neuron.clone(),
                    state: s.name.clone(),
                }),
                1 => {}
                _ => errs.push(IrError::StateUpdatedTwice {
                    neuron: neuron.clone(),
                    state: s.name.clone(),
                }),
            }
        }
        for (m, o) in self.outputs.iter().enumerate() {
            match sinks.get(&Sink::Output(m as u32)).copied().unwrap_or(0) {
                0 => errs.push(IrError::OutputNotSet {
                    neuron: neuron.clone(),
                    output: o.clone(),
                }),
                1 => {}
                _ => errs.push(IrError::OutputSetTwice {
                    neuron: neuron.clone(),
                    output: o.clone(),
                }),
            }
        }
        let live = g.live();
        for (k, name) in self.inputs.iter().enumerate() {
            let used = live
                .iter()
                .any(|&n| g.op(n) == Op::Leaf(Leaf::Input(k as u32)));
            if !used {
                errs.push(IrError::UnusedInput {
                    neuron: neuron.clone(),
                    input: name.clone(),
                });
            }
        }
        IrError::from_list(errs)
    }
}

impl NeuronIr {
    /// Whether `leaf` is one of the neuron's declared inputs, states or params.
    fn declares_leaf(&self, leaf: Leaf) -> bool {
        match leaf {
            Leaf::Input(i) => has(i, &self.inputs),
            Leaf::State(i) => has(i, &self.states),
            Leaf::Param(i) => has(i, &self.params),
            _ => false,
        }
    }

    /// Whether `sink` writes one of the neuron's declared outputs or states.
    fn declares_sink(&self, sink: Sink) -> bool {
        match sink {
            Sink::Output(i) => has(i, &self.outputs),
            Sink::NextState(i) => has(i, &self.states),
            _ => false,
        }
    }
}

/// Whether `list` has an item `i`.
fn has<T>(i: u32, list: &[T]) -> bool {
    (i as usize) < list.len()
}
