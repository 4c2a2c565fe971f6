//! A neuron: its step graph plus the signature that names the graph's leaves and sinks.

use std::fmt;

use super::graph::Graph;
use super::kind::SpikeKind;
use super::op::{Leaf, Sink};

/// How many values a parameter holds, for a layer of `batch x channels x inner` elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ParamShape {
    /// One value for the whole layer.
    Scalar,
    /// One value per channel (per feature of a dense layer), shared over batch and space.
    PerChannel,
    /// One value per neuron (`channels x inner`), shared over the batch.
    PerNeuron,
}

/// A parameter's declaration.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ParamSpec {
    pub name: String,
    pub shape: ParamShape,
    /// Learnable parameters get gradients, summed over time and sharing elements.
    pub learnable: bool,
    /// The value every element starts with.
    pub default: f64,
}

/// A state's value before the first step.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Init {
    Const(f64),
    /// The value of parameter `p` (which, if learnable, receives the initial state's
    /// gradient when the caller does not pass initial states).
    Param(u32),
}

#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StateSpec {
    pub name: String,
    pub init: Init,
}

/// A neuron's step function `(x[t], s[t-1], p) -> (y[t], s[t])` as a graph, with names.
///
/// Leaf `Input(k)` of the graph is `inputs[k]`, and so on. Only `Input`, `State` and
/// `Param` leaves and `Output` and `NextState` sinks appear in a neuron's graph.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NeuronIr {
    pub name: String,
    pub doc: String,
    pub inputs: Vec<String>,
    pub states: Vec<StateSpec>,
    pub params: Vec<ParamSpec>,
    pub outputs: Vec<String>,
    pub graph: Graph,
}

impl NeuronIr {
    /// A neuron with nothing declared yet, for [`crate::NeuronBuilder`] to fill in (or a
    /// test to fill in by hand).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            doc: String::new(),
            inputs: Vec::new(),
            states: Vec::new(),
            params: Vec::new(),
            outputs: Vec::new(),
            graph: Graph::new(),
        }
    }

    /// Sets param `name`'s default (the value a layer starts from); an unknown name is an
    /// error that lists the neuron's params.
    pub fn set_default(&mut self, name: &str, value: f64) -> Result<(), String> {
        let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        let Some(p) = self.param_index(name) else {
            return Err(format!(
                "`{}` has no parameter `{name}`; its parameters: {}",
                self.name,
                known.join(", ")
            ));
        };
        self.params[p].default = value;
        Ok(())
    }

    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }

    /// The name a leaf prints as.
    pub fn leaf_name(&self, leaf: Leaf) -> String {
        let get = |v: Option<&String>, what: &str, i: u32| {
            v.cloned().unwrap_or_else(|| format!("<{what} #{i}>"))
        };
        match leaf {
            Leaf::Input(i) => get(self.inputs.get(i as usize), "input", i),
            Leaf::State(i) => get(self.states.get(i as usize).map(|s| &s.name), "state", i),
            Leaf::Param(i) => get(self.params.get(i as usize).map(|p| &p.name), "param", i),
            other => format!("<{other}>"),
        }
    }

    /// The left-hand side a sink prints with.
    pub fn sink_label(&self, sink: Sink) -> String {
        match sink {
            Sink::Output(i) => format!("output {} =", self.leaf_name_or(&self.outputs, i)),
            Sink::NextState(i) => format!("{} <-", self.leaf_name(Leaf::State(i))),
            other => format!("<{other}> ="),
        }
    }

    fn leaf_name_or(&self, names: &[String], i: u32) -> String {
        names
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| format!("<#{i}>"))
    }

    /// What values output `m` takes: binary or ternary spikes (stored in a byte by narrow
    /// storage), or any real value.
    pub fn output_kind(&self, m: usize) -> SpikeKind {
        self.graph
            .sink_value(Sink::Output(m as u32))
            .map_or(SpikeKind::General, |n| super::kind::kind(&self.graph, n))
    }

    /// Whether any parameter is learnable.
    pub fn has_learnable(&self) -> bool {
        self.params.iter().any(|p| p.learnable)
    }
}

impl ParamSpec {
    /// Whether kernels take it by value: fixed scalars. Learnable and shaped params are
    /// read through a pointer, so that an update on the device (an optimizer step) reaches
    /// the next launch with no copy through the host, and a training step never waits for
    /// the host.
    pub fn by_value(&self) -> bool {
        self.shape == ParamShape::Scalar && !self.learnable
    }

    /// A fixed scalar parameter with this default.
    pub fn new(name: impl Into<String>, default: f64) -> Self {
        Self {
            name: name.into(),
            shape: ParamShape::Scalar,
            learnable: false,
            default,
        }
    }
}

impl fmt::Display for ParamShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamShape::Scalar => "scalar",
            ParamShape::PerChannel => "per-channel",
            ParamShape::PerNeuron => "per-neuron",
        })
    }
}

impl fmt::Display for ParamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}", self.name, self.default)?;
        let mut tags = Vec::new();
        if self.learnable {
            tags.push("learnable".to_string());
        }
        if self.shape != ParamShape::Scalar {
            tags.push(self.shape.to_string());
        }
        if !tags.is_empty() {
            write!(f, " ({})", tags.join(", "))?;
        }
        Ok(())
    }
}

impl fmt::Display for NeuronIr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "neuron {}", self.name)?;
        writeln!(f, "  inputs: {}", self.inputs.join(", "))?;
        let states: Vec<String> = self
            .states
            .iter()
            .map(|s| match s.init {
                Init::Const(c) => format!("{} = {c}", s.name),
                Init::Param(p) => format!("{} = {}", s.name, self.leaf_name(Leaf::Param(p))),
            })
            .collect();
        writeln!(f, "  states: {}", states.join(", "))?;
        let params: Vec<String> = self.params.iter().map(|p| p.to_string()).collect();
        writeln!(f, "  params: {}", params.join(", "))?;
        writeln!(f, "  outputs: {}", self.outputs.join(", "))?;
        let printer =
            crate::print::Printer::new(&self.graph, |l| self.leaf_name(l), |s| self.sink_label(s));
        for line in printer.lines() {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}
