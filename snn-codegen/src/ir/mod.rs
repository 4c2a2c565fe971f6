//! The neuron IR: a step graph of typed nodes (petgraph) and the signature around it.

pub mod eval;
mod graph;
mod kind;
mod neuron;
mod op;
mod surrogate;
mod validate;

pub use graph::{Graph, Node, NodeId};
pub use kind::SpikeKind;
pub use neuron::{Init, NeuronIr, ParamShape, ParamSpec, StateSpec};
pub use op::{Binary, Cmp, Leaf, Op, Sink, Ty, Unary};
pub use surrogate::{CustomSurrogate, Surrogate};
