//! A network: a static graph of layers, built once, run by the CPU reference and by the
//! GPU runtime, and the unit later passes fuse neighbours in.
//!
//! Nodes are kept in the order they were added, which is a topological order (a node can
//! only use earlier nodes) and PyTorch's module order, so parameters come out in the order
//! of the equivalent model's `state_dict`. Each node's name is its PyTorch module path
//! (`layer1.0.conv1`), and its parameters are named below it (`layer1.0.conv1.weight`).

use std::collections::BTreeSet;
use std::fmt;

use snn_codegen::Layout;
use snn_codegen::{Neuron, NeuronIr, ParamShape};

use crate::checkpoint::check_shapes;
use crate::error::NnError;
use crate::float::Float;
use crate::layers::{BatchNorm2d, Conv2d, ImageShape, Linear, MaxPool2d};
use crate::params::{ParamSet, Role};

/// A node's index in its network.
pub type NodeId = usize;

/// What a node computes. Layers other than neurons act on each of the `T * B` images
/// independently; a neuron runs through the `T` steps of each of its `B * C * H * W`
/// elements.
#[derive(Clone, Debug)]
pub enum Op {
    /// The network's input, `[T, B, C, H, W]`.
    Input,
    Conv2d(Conv2d),
    BatchNorm2d(BatchNorm2d),
    /// A spiking neuron with one input and one output; its per-channel params follow the
    /// image's channels (a linear layer's features).
    Neuron(Box<NeuronIr>),
    MaxPool2d(MaxPool2d),
    /// Mean over each channel's plane: `[C, H, W] -> [C, 1, 1]`.
    GlobalAvgPool,
    /// `[C, H, W] -> [C * H * W, 1, 1]`.
    Flatten,
    Linear(Linear),
    /// The sum of two same-shaped values (a residual connection).
    Add,
}

impl Op {
    /// The PyTorch class the node corresponds to.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "Input",
            Op::Conv2d(_) => "Conv2d",
            Op::BatchNorm2d(_) => "BatchNorm2d",
            Op::Neuron(_) => "Neuron",
            Op::MaxPool2d(_) => "MaxPool2d",
            Op::GlobalAvgPool => "AdaptiveAvgPool2d",
            Op::Flatten => "Flatten",
            Op::Linear(_) => "Linear",
            Op::Add => "Add",
        }
    }
}

/// One layer application.
#[derive(Clone, Debug)]
pub struct Node {
    /// The PyTorch module path.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<NodeId>,
    /// The shape of one output image.
    pub shape: ImageShape,
}

impl Node {
    /// Whether the node is a neuron whose output is spikes (exactly -1, 0 or 1), which a
    /// byte holds exactly.
    pub fn emits_spikes(&self) -> bool {
        matches!(&self.op, Op::Neuron(ir) if ir.output_kind(0).is_spike())
    }

    /// The shape of the node's (first) input, for layers that have one.
    pub fn input_shape(&self, net: &Network) -> ImageShape {
        self.inputs
            .first()
            .map_or(self.shape, |&i| net.nodes[i].shape)
    }
}

/// A tensor the network owns: a weight, a bias, a running statistic, a counter.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    /// `node name + "." + field`, as in PyTorch's `state_dict`.
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
    pub node: NodeId,
}

/// A network of layers (see the module docs).
#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    nodes: Vec<Node>,
    output: NodeId,
}

impl Network {
    /// Starts a network whose input images have shape `input`; node 0 is the input.
    pub fn builder(name: impl Into<String>, input: ImageShape) -> NetworkBuilder {
        NetworkBuilder {
            name: name.into(),
            nodes: vec![Node {
                name: "input".into(),
                op: Op::Input,
                inputs: vec![],
                shape: input,
            }],
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    pub fn input_shape(&self) -> ImageShape {
        self.nodes[0].shape
    }

    pub fn output(&self) -> NodeId {
        self.output
    }

    /// The output of one image at one step (`[classes, 1, 1]` for classifiers).
    pub fn output_shape(&self) -> ImageShape {
        self.nodes[self.output].shape
    }

    /// How many nodes read each node's output.
    pub fn uses(&self) -> Vec<usize> {
        let mut uses = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                uses[i] += 1;
            }
        }
        uses
    }

    /// The neuron layout of a node's input: channels, and values per channel per image.
    pub fn layout(shape: ImageShape) -> Layout {
        Layout {
            channels: shape.channels,
            inner: shape.plane(),
        }
    }

    /// Every tensor the network owns, in PyTorch's `state_dict` order.
    pub fn params(&self) -> Vec<ParamInfo> {
        let mut out = Vec::new();
        for (id, n) in self.nodes.iter().enumerate() {
            let mut add = |field: &str, shape: Vec<usize>, role| {
                out.push(ParamInfo {
                    name: format!("{}.{field}", n.name),
                    shape,
                    role,
                    node: id,
                });
            };
            match &n.op {
                Op::Conv2d(c) => {
                    add("weight", c.weight_shape().to_vec(), Role::Weight);
                    if c.bias {
                        add("bias", vec![c.out_channels], Role::Weight);
                    }
                }
                Op::BatchNorm2d(bn) => {
                    add("weight", vec![bn.channels], Role::Weight);
                    add("bias", vec![bn.channels], Role::Weight);
                    add("running_mean", vec![bn.channels], Role::Buffer);
                    add("running_var", vec![bn.channels], Role::Buffer);
                    add("num_batches_tracked", vec![], Role::Counter);
                }
                Op::Linear(l) => {
                    add("weight", vec![l.out_features, l.in_features], Role::Weight);
                    if l.bias {
                        add("bias", vec![l.out_features], Role::Weight);
                    }
                }
                Op::Neuron(ir) => {
                    let layout = Self::layout(n.shape);
                    for p in ir.params.iter().filter(|p| p.learnable) {
                        let shape = match p.shape {
                            ParamShape::Scalar => vec![],
                            _ => vec![layout.len(p.shape)],
                        };
                        add(&p.name, shape, Role::Weight);
                    }
                }
                Op::Input | Op::MaxPool2d(_) | Op::GlobalAvgPool | Op::Flatten | Op::Add => {}
            }
        }
        out
    }

    /// Checks that `params` holds exactly this network's tensors (names and shapes); the
    /// error lists the first few missing, unexpected and mis-shaped ones.
    pub fn check_params<T: Float>(&self, params: &ParamSet<T>) -> Result<(), NnError> {
        let expected: Vec<(String, Vec<usize>)> = self
            .params()
            .into_iter()
            .map(|p| (p.name, p.shape))
            .collect();
        let given: Vec<(String, Vec<usize>)> = params
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        check_shapes(
            (
                &format!("the set of tensors given for network `{}`", self.name),
                "given",
            ),
            "give every tensor of `Network::params`, e.g. from `init_params` or a checkpoint of this network",
            &expected,
            &given,
        )
    }

    /// Trained values in the network.
    pub fn num_weights(&self) -> usize {
        self.params()
            .iter()
            .filter(|p| p.role == Role::Weight)
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }
}

impl fmt::Display for Network {
    /// One line per node: name, kind, settings, output shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} nodes, {} trained values",
            self.name,
            self.nodes.len(),
            self.num_weights()
        )?;
        for n in &self.nodes {
            let inputs: Vec<_> = n
                .inputs
                .iter()
                .map(|&i| self.nodes[i].name.as_str())
                .collect();
            let what = match &n.op {
                Op::Conv2d(c) => format!(
                    "Conv2d({}, {}, k={}, s={}, p={}{})",
                    c.in_channels,
                    c.out_channels,
                    c.kernel,
                    c.stride,
                    c.padding,
                    if c.bias { ", bias" } else { "" }
                ),
                Op::BatchNorm2d(b) => format!("BatchNorm2d({})", b.channels),
                Op::Neuron(ir) => format!("Neuron({})", ir.name),
                Op::MaxPool2d(p) => {
                    format!("MaxPool2d(k={}, s={}, p={})", p.kernel, p.stride, p.padding)
                }
                Op::Linear(l) => format!("Linear({}, {})", l.in_features, l.out_features),
                op => op.kind().to_string(),
            };
            writeln!(
                f,
                "  {:<24} {:<36} {:<16} <- {}",
                n.name,
                what,
                n.shape.to_string(),
                inputs.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Builds a [`Network`]; each method checks its node and returns the new node's id.
#[derive(Debug)]
pub struct NetworkBuilder {
    name: String,
    nodes: Vec<Node>,
}

impl NetworkBuilder {
    /// The input node.
    pub fn input(&self) -> NodeId {
        0
    }

    pub fn shape(&self, id: NodeId) -> Result<ImageShape, NnError> {
        self.nodes.get(id).map(|n| n.shape).ok_or_else(|| {
            NnError::Graph(format!(
                "node {id} does not exist (the network has {})",
                self.nodes.len()
            ))
        })
    }

    /// Adds any node (the typed methods below are shorthands).
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[NodeId],
    ) -> Result<NodeId, NnError> {
        let name = name.into();
        let in_shapes = inputs
            .iter()
            .map(|&i| self.shape(i))
            .collect::<Result<Vec<_>, _>>()?;
        let err = |e: NnError| NnError::Graph(format!("node `{name}`: {e}"));
        if name.is_empty() || name.contains(char::is_whitespace) || name.ends_with('.') {
            return Err(NnError::Graph(format!(
                "`{name}` is not a usable name: use a PyTorch module path such as `layer1.0.conv1`"
            )));
        }
        if self.nodes.iter().any(|n| n.name == name) {
            return Err(NnError::Graph(format!("two nodes are named `{name}`")));
        }
        let arity = if matches!(op, Op::Add) { 2 } else { 1 };
        if inputs.len() != arity {
            return Err(NnError::Graph(format!(
                "node `{name}` ({}) takes {arity} input(s), got {}",
                op.kind(),
                inputs.len()
            )));
        }
        let x = in_shapes[0];
        let shape = match &op {
            Op::Input => {
                return Err(NnError::Graph(format!(
                    "node `{name}`: a network has one input node, made by the builder"
                )));
            }
            Op::Conv2d(c) => c.output(x).map_err(err)?,
            Op::BatchNorm2d(b) => b.output(x).map_err(err)?,
            Op::MaxPool2d(p) => p.output(x).map_err(err)?,
            Op::Linear(l) => l.output(x).map_err(err)?,
            Op::GlobalAvgPool => ImageShape::features(x.channels),
            Op::Flatten => ImageShape::features(x.len()),
            Op::Add => {
                if in_shapes[1] != x {
                    return Err(NnError::Graph(format!(
                        "node `{name}` adds shapes {x} and {}: they must be equal",
                        in_shapes[1]
                    )));
                }
                x
            }
            Op::Neuron(ir) => {
                if ir.inputs.len() != 1 || ir.outputs.len() != 1 {
                    return Err(NnError::Graph(format!(
                        "node `{name}`: neuron `{}` has {} inputs and {} outputs; a network layer needs one of each",
                        ir.name,
                        ir.inputs.len(),
                        ir.outputs.len()
                    )));
                }
                x
            }
        };
        if shape.is_empty() {
            return Err(NnError::Graph(format!(
                "node `{name}` would produce an empty output ({shape})"
            )));
        }
        self.nodes.push(Node {
            name,
            op,
            inputs: inputs.to_vec(),
            shape,
        });
        Ok(self.nodes.len() - 1)
    }

    /// A square convolution without bias; input channels come from `x`.
    pub fn conv(
        &mut self,
        name: impl Into<String>,
        x: NodeId,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<NodeId, NnError> {
        let c = self.shape(x)?.channels;
        self.add_node(
            name,
            Op::Conv2d(Conv2d::new(c, out_channels, kernel, stride, padding)),
            &[x],
        )
    }

    /// Batch-norm over `x`'s channels with PyTorch's defaults.
    pub fn batch_norm(&mut self, name: impl Into<String>, x: NodeId) -> Result<NodeId, NnError> {
        let c = self.shape(x)?.channels;
        self.add_node(name, Op::BatchNorm2d(BatchNorm2d::new(c)), &[x])
    }

    /// A spiking neuron over `x`.
    pub fn neuron(
        &mut self,
        name: impl Into<String>,
        x: NodeId,
        neuron: &dyn Neuron,
    ) -> Result<NodeId, NnError> {
        let ir = neuron.ir()?;
        self.add_node(name, Op::Neuron(Box::new(ir)), &[x])
    }

    pub fn max_pool(
        &mut self,
        name: impl Into<String>,
        x: NodeId,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<NodeId, NnError> {
        self.add_node(
            name,
            Op::MaxPool2d(MaxPool2d::new(kernel, stride, padding)),
            &[x],
        )
    }

    pub fn global_avg_pool(
        &mut self,
        name: impl Into<String>,
        x: NodeId,
    ) -> Result<NodeId, NnError> {
        self.add_node(name, Op::GlobalAvgPool, &[x])
    }

    pub fn flatten(&mut self, name: impl Into<String>, x: NodeId) -> Result<NodeId, NnError> {
        self.add_node(name, Op::Flatten, &[x])
    }

    /// A linear layer with bias over `x`'s features.
    pub fn linear(
        &mut self,
        name: impl Into<String>,
        x: NodeId,
        out_features: usize,
    ) -> Result<NodeId, NnError> {
        let f = self.shape(x)?.len();
        self.add_node(name, Op::Linear(Linear::new(f, out_features)), &[x])
    }

    pub fn add(
        &mut self,
        name: impl Into<String>,
        a: NodeId,
        b: NodeId,
    ) -> Result<NodeId, NnError> {
        self.add_node(name, Op::Add, &[a, b])
    }

    /// Finishes the network with `output` as its result. Every node must contribute to
    /// the output, and parameter names must be unique.
    pub fn finish(self, output: NodeId) -> Result<Network, NnError> {
        self.shape(output)?;
        let mut live = vec![false; self.nodes.len()];
        live[output] = true;
        for id in (0..self.nodes.len()).rev() {
            if live[id] {
                for &i in &self.nodes[id].inputs {
                    live[i] = true;
                }
            }
        }
        if let Some(dead) = self.nodes.iter().zip(&live).find(|(_, l)| !**l) {
            return Err(NnError::Graph(format!(
                "node `{}` does not contribute to the output `{}`",
                dead.0.name, self.nodes[output].name
            )));
        }
        let net = Network {
            name: self.name,
            nodes: self.nodes,
            output,
        };
        let mut seen = BTreeSet::new();
        for p in net.params() {
            if !seen.insert(p.name.clone()) {
                return Err(NnError::Graph(format!(
                    "two tensors are named `{}`: rename one of the nodes",
                    p.name
                )));
            }
        }
        Ok(net)
    }
}
