//! Prints a step graph as equations: one line per named or shared value, the rest inlined.

use std::collections::{BTreeMap, BTreeSet};

use crate::ir::{Binary, Graph, Leaf, NodeId, Op, Sink, Unary};

/// Prints one graph, with leaf names and sink labels supplied by the caller (a neuron, a
/// backward pass) so that the same printer serves every kind of graph.
pub struct Printer<'a> {
    graph: &'a Graph,
    leaf: Box<dyn Fn(Leaf) -> String + 'a>,
    sink: Box<dyn Fn(Sink) -> String + 'a>,
}

impl std::fmt::Debug for Printer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Printer").finish_non_exhaustive()
    }
}

/// Binding strength, loosest first.
const CMP: u8 = 0;
const SUM: u8 = 1;
const PRODUCT: u8 = 2;
const PREFIX: u8 = 3;
const ATOM: u8 = 4;

impl<'a> Printer<'a> {
    pub fn new(
        graph: &'a Graph,
        leaf: impl Fn(Leaf) -> String + 'a,
        sink: impl Fn(Sink) -> String + 'a,
    ) -> Self {
        Self {
            graph,
            leaf: Box::new(leaf),
            sink: Box::new(sink),
        }
    }

    /// The graph as lines of equations, in dependency order, sinks last.
    pub fn lines(&self) -> Vec<String> {
        let Ok(order) = self.graph.topo_order() else {
            return vec!["<the graph has a cycle>".into()];
        };
        let bound = self.bindings(&order);
        let mut lines = Vec::new();
        for &n in &order {
            if let Some(name) = bound.get(&n) {
                lines.push(format!("{name} = {}", self.render(n, &bound, true).0));
            }
        }
        let mut sinks = self.graph.sinks();
        sinks.sort_by_key(|(s, _)| *s);
        for (s, n) in sinks {
            let value = self.render(n, &bound, false).0;
            lines.push(format!("{} {value}", (self.sink)(s)));
        }
        lines
    }

    /// One value for an error message: its name if the user named it, else the expression
    /// with everything inlined.
    pub fn expr(&self, n: NodeId) -> String {
        match self.graph.name(n) {
            Some(name) => name.to_string(),
            None => self.inline(n),
        }
    }

    /// One value as a single expression, everything inlined.
    pub fn inline(&self, n: NodeId) -> String {
        if self.graph.topo_order().is_err() {
            return format!("{:?}", self.graph.op(n));
        }
        self.render(n, &BTreeMap::new(), true).0
    }

    /// Which nodes get a line of their own, and their names: values the user named and
    /// values used more than once, except leaves and constants.
    fn bindings(&self, order: &[NodeId]) -> BTreeMap<NodeId, String> {
        let g = self.graph;
        let mut taken: BTreeSet<String> = BTreeSet::new();
        for &n in order {
            if let Op::Leaf(l) = g.op(n) {
                taken.insert((self.leaf)(l));
            }
        }
        let mut bound = BTreeMap::new();
        let mut temp = 0;
        for &n in order {
            let op = g.op(n);
            if matches!(op, Op::Leaf(_) | Op::Const(_) | Op::Sink(_)) {
                continue;
            }
            let shared = g.use_count(n) > 1;
            let Some(base) = g.name(n).map(str::to_string).or_else(|| {
                shared.then(|| {
                    temp += 1;
                    format!("t{}", temp - 1)
                })
            }) else {
                continue;
            };
            let mut name = base.clone();
            let mut k = 1;
            while !taken.insert(name.clone()) {
                name = format!("{base}_{k}");
                k += 1;
            }
            bound.insert(n, name);
        }
        bound
    }

    /// Renders `n` and returns it with its binding strength. `top` prints `n` itself even if
    /// it is bound.
    fn render(&self, n: NodeId, bound: &BTreeMap<NodeId, String>, top: bool) -> (String, u8) {
        let g = self.graph;
        if !top && let Some(name) = bound.get(&n) {
            return (name.clone(), ATOM);
        }
        let args = g.operands(n);
        if args.len() < g.op(n).arity() {
            // Malformed (validation reports it): print the op without its operands.
            return (format!("{}(..)", g.op(n).describe()), ATOM);
        }
        let arg = |i: usize| self.render(args[i], bound, false);
        let paren = |(s, p): (String, u8), min: u8| if p < min { format!("({s})") } else { s };
        let call = |f: &str| {
            let a: Vec<String> = (0..args.len()).map(|i| arg(i).0).collect();
            (format!("{f}({})", a.join(", ")), ATOM)
        };
        match g.op(n) {
            Op::Leaf(l) => ((self.leaf)(l), ATOM),
            Op::Const(c) => (fmt_const(c), if c < 0.0 { PREFIX } else { ATOM }),
            Op::Unary(Unary::Neg) => (format!("-{}", paren(arg(0), PREFIX + 1)), PREFIX),
            Op::Unary(u) => call(u.name()),
            Op::Binary(b @ (Binary::Min | Binary::Max)) => call(b.symbol()),
            Op::Binary(b) => {
                let p = if matches!(b, Binary::Add | Binary::Sub) {
                    SUM
                } else {
                    PRODUCT
                };
                // Left-associative: the right operand of `-` and `/` needs parentheses at
                // equal strength, and so, for readability, does the right of `+` and `*`.
                let l = paren(arg(0), p);
                let r = paren(arg(1), p + 1);
                (format!("{l} {} {r}", b.symbol()), p)
            }
            Op::Cmp(c) => {
                let l = paren(arg(0), SUM);
                let r = paren(arg(1), SUM);
                (format!("{l} {} {r}", c.symbol()), CMP)
            }
            Op::Powf(e) => (format!("pow({}, {})", arg(0).0, fmt_const(e)), ATOM),
            Op::Clamp => call("clamp"),
            Op::Select => call("select"),
            Op::Detach => call("detach"),
            Op::Spike(k) => {
                let s = g
                    .surrogate(k)
                    .map_or_else(|| "?".to_string(), |s| s.to_string());
                (format!("spike[{s}]({})", arg(0).0), ATOM)
            }
            Op::Sink(_) => arg(0),
        }
    }
}

/// Shortest round-trip form of a constant, with a trailing `.0` dropped.
pub fn fmt_const(c: f64) -> String {
    format!("{c}")
}
