//! The step graph: a petgraph DAG whose edges run from operand to user.

use std::collections::BTreeMap;

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

use super::op::{Binary, Cmp, Leaf, Op, Sink, Unary};
use super::surrogate::Surrogate;

/// A node of the step graph.
pub type NodeId = NodeIndex<u32>;

/// One node: what it computes and, optionally, the name the user gave the value.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Node {
    pub op: Op,
    pub name: Option<String>,
}

/// A step graph. Each edge carries the operand slot it fills, so `a - b` keeps its order.
///
/// Surrogates live in a table on the graph (`Op::Spike(k)` names entry `k`), which keeps
/// [`Op`] `Copy` and lets passes compare ops cheaply.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Graph {
    g: StableDiGraph<Node, u8>,
    surrogates: Vec<Surrogate>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node computing `op` of `operands`. Nothing is checked here; see
    /// [`crate::NeuronIr::validate`].
    pub fn add(&mut self, op: Op, operands: &[NodeId]) -> NodeId {
        let n = self.g.add_node(Node { op, name: None });
        for (slot, &a) in operands.iter().enumerate() {
            self.g.add_edge(a, n, slot as u8);
        }
        n
    }

    pub fn add_named(&mut self, op: Op, operands: &[NodeId], name: Option<String>) -> NodeId {
        let n = self.add(op, operands);
        self.g[n].name = name;
        n
    }

    pub fn constant(&mut self, c: f64) -> NodeId {
        self.add(Op::Const(c), &[])
    }

    pub fn leaf(&mut self, leaf: Leaf) -> NodeId {
        self.add(Op::Leaf(leaf), &[])
    }

    pub fn unary(&mut self, op: Unary, x: NodeId) -> NodeId {
        self.add(Op::Unary(op), &[x])
    }

    pub fn binary(&mut self, op: Binary, a: NodeId, b: NodeId) -> NodeId {
        self.add(Op::Binary(op), &[a, b])
    }

    pub fn cmp(&mut self, op: Cmp, a: NodeId, b: NodeId) -> NodeId {
        self.add(Op::Cmp(op), &[a, b])
    }

    pub fn select(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> NodeId {
        self.add(Op::Select, &[cond, a, b])
    }

    pub fn sink(&mut self, sink: Sink, value: NodeId) -> NodeId {
        self.add(Op::Sink(sink), &[value])
    }

    /// Registers a surrogate (deduplicated) and returns its index for `Op::Spike`.
    pub fn add_surrogate(&mut self, s: Surrogate) -> u32 {
        if let Some(i) = self.surrogates.iter().position(|t| *t == s) {
            return i as u32;
        }
        self.surrogates.push(s);
        (self.surrogates.len() - 1) as u32
    }

    pub fn surrogates(&self) -> &[Surrogate] {
        &self.surrogates
    }

    pub fn surrogate(&self, k: u32) -> Option<&Surrogate> {
        self.surrogates.get(k as usize)
    }

    pub fn node(&self, n: NodeId) -> &Node {
        &self.g[n]
    }

    pub fn op(&self, n: NodeId) -> Op {
        self.g[n].op
    }

    pub fn name(&self, n: NodeId) -> Option<&str> {
        self.g[n].name.as_deref()
    }

    pub fn set_name(&mut self, n: NodeId, name: Option<String>) {
        self.g[n].name = name;
    }

    pub fn set_op(&mut self, n: NodeId, op: Op) {
        self.g[n].op = op;
    }

    pub fn contains(&self, n: NodeId) -> bool {
        self.g.contains_node(n)
    }

    /// The operands of `n`, in slot order.
    pub fn operands(&self, n: NodeId) -> Vec<NodeId> {
        let mut e: Vec<(u8, NodeId)> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        e.sort_unstable();
        e.into_iter().map(|(_, a)| a).collect()
    }

    /// The nodes that use `n`, each once, in index order.
    pub fn users(&self, n: NodeId) -> Vec<NodeId> {
        let mut u: Vec<NodeId> = self.g.neighbors_directed(n, Direction::Outgoing).collect();
        u.sort_unstable();
        u.dedup();
        u
    }

    /// How many operand slots read `n`.
    pub fn use_count(&self, n: NodeId) -> usize {
        self.g.edges_directed(n, Direction::Outgoing).count()
    }

    /// Makes operand `slot` of `n` read `new` instead.
    pub fn set_operand(&mut self, n: NodeId, slot: usize, new: NodeId) {
        let old: Vec<_> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .filter(|e| *e.weight() as usize == slot)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        self.g.add_edge(new, n, slot as u8);
    }

    /// Redirects every use of `old` to `new`.
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId) {
        if old == new {
            return;
        }
        let uses: Vec<_> = self
            .g
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (e, user, slot) in uses {
            self.g.remove_edge(e);
            self.g.add_edge(new, user, slot);
        }
    }

    pub fn remove(&mut self, n: NodeId) {
        self.g.remove_node(n);
    }

    /// Every node, in index (creation) order.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.g.node_indices().collect();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// The sinks, in index order.
    pub fn sinks(&self) -> Vec<(Sink, NodeId)> {
        self.nodes()
            .into_iter()
            .filter_map(|n| self.op(n).sink().map(|s| (s, n)))
            .collect()
    }

    /// The value a sink writes.
    pub fn sink_value(&self, sink: Sink) -> Option<NodeId> {
        let (_, n) = self.sinks().into_iter().find(|(s, _)| *s == sink)?;
        self.operands(n).first().copied()
    }

    /// The node of a leaf, if the graph reads it.
    pub fn find_leaf(&self, leaf: Leaf) -> Option<NodeId> {
        self.nodes()
            .into_iter()
            .find(|&n| self.op(n) == Op::Leaf(leaf))
    }

    /// The nodes in an order where operands come before users, deterministic for a given
    /// graph. On a cycle, returns a node on it.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, NodeId> {
        // Kahn's algorithm over index-ordered ready nodes: deterministic and independent of
        // petgraph's internal edge order.
        let nodes = self.nodes();
        let mut indeg: std::collections::BTreeMap<NodeId, usize> = nodes
            .iter()
            .map(|&n| (n, self.g.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: std::collections::BTreeSet<NodeId> = indeg
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut order = Vec::with_capacity(nodes.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        if order.len() == nodes.len() {
            Ok(order)
        } else {
            let stuck = indeg
                .into_iter()
                .find(|(_, d)| *d > 0)
                .map(|(n, _)| n)
                .expect("a cycle leaves a node with unmet operands");
            Err(stuck)
        }
    }

    /// Nodes that reach a sink, walking operands from every sink.
    pub fn live(&self) -> std::collections::BTreeSet<NodeId> {
        let mut live = std::collections::BTreeSet::new();
        let mut stack: Vec<NodeId> = self.sinks().into_iter().map(|(_, n)| n).collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        live
    }

    /// Copies `src` into this graph: each leaf of `src` becomes `leaf(self, leaf)`, every
    /// other node is copied (surrogates re-registered), and sinks are not copied but
    /// returned with the node of the value they would write. Also returns the map from
    /// `src` nodes to their copies. `src` must be acyclic.
    pub fn inline(
        &mut self,
        src: &Graph,
        leaf: &mut dyn FnMut(&mut Graph, Leaf) -> NodeId,
    ) -> (BTreeMap<NodeId, NodeId>, Vec<(Sink, NodeId)>) {
        let mut map = BTreeMap::new();
        let mut sinks = Vec::new();
        for n in src.topo_order().unwrap_or_default() {
            let args: Vec<NodeId> = src.operands(n).iter().map(|a| map[a]).collect();
            let copy = match src.op(n) {
                Op::Leaf(l) => leaf(self, l),
                Op::Sink(s) => {
                    sinks.push((s, args[0]));
                    continue;
                }
                Op::Spike(k) => {
                    let k = self.add_surrogate(src.surrogates[k as usize].clone());
                    self.add_named(Op::Spike(k), &args, src.g[n].name.clone())
                }
                op => self.add_named(op, &args, src.g[n].name.clone()),
            };
            map.insert(n, copy);
        }
        sinks.sort_by_key(|(s, _)| *s);
        (map, sinks)
    }

    /// The underlying petgraph graph, for analyses not offered here.
    pub fn petgraph(&self) -> &StableDiGraph<Node, u8> {
        &self.g
    }
}
