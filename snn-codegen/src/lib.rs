//! The compiler core of snn: the neuron IR, its passes, automatic differentiation through
//! time, the memory plan and the CPU reference interpreter. Nothing here touches a GPU.

pub mod autodiff;
pub mod builder;
pub mod compile;
pub mod cuda;
pub mod dtype;
pub mod error;
pub mod fuse;
pub mod interp;
pub mod ir;
pub mod layer;
pub mod neuron;
pub mod passes;
pub mod plan;
pub mod print;
pub mod zoo;

pub use builder::{IntoInit, IntoValue, NeuronBuilder, ParamDecl, Value};
pub use compile::{Compiled, compile};
pub use dtype::{Dtype, Storage};
pub use error::IrError;
pub use ir::{Init, NeuronIr, ParamShape, ParamSpec, StateSpec, Surrogate};
pub use layer::{Layout, Mode};
pub use neuron::Neuron;
pub use plan::MemoryPlan;
