//! The compiler core of snn: the neuron IR, its passes, automatic differentiation through
//! time, the memory plan and the CPU reference interpreter. Nothing here touches a GPU.

pub mod builder;
pub mod error;
pub mod ir;
pub mod neuron;
pub mod passes;
pub mod zoo;
pub mod print;

pub use builder::{IntoInit, IntoValue, NeuronBuilder, ParamDecl, Value};
pub use error::IrError;
pub use neuron::Neuron;
pub use ir::{Init, NeuronIr, ParamShape, ParamSpec, StateSpec, Surrogate};
