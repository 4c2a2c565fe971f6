//! The compiler core of snn: the neuron IR, its passes, automatic differentiation through
//! time, the memory plan and the CPU reference interpreter. Nothing here touches a GPU.
//!
//! ```text
//! neuron, builder   the Neuron trait; the builder API that #[neuron] expands to
//! ir/               the step graph (petgraph), ops, surrogates, validation, evaluation
//! passes/           constant folding, simplification, CSE, dead-code elimination
//! autodiff          the backward step through time (surrogate gradients)
//! plan, compile     what the forward saves for the backward; the three step programs
//! dtype, layer      storage dtypes; Layout, Mode: what a layer is on any device
//! fuse              batch-norm (and residual) fused into a neuron's step
//! interp/           the CPU reference interpreter every kernel is checked against
//! cuda/             the CUDA emitter (kernel/: forward, backward, reduction) and the
//!                   kernel signatures that hand-written kernels share
//! print             equations and memory plans as text
//! zoo/              the built-in neurons
//! ```

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

pub use builder::{IntoInit, IntoValue, NeuronBuilder, NeuronHelper, ParamDecl, Value};
pub use compile::{Compiled, compile};
pub use dtype::{Dtype, Storage};
pub use error::IrError;
pub use ir::{Init, NeuronIr, ParamShape, ParamSpec, StateSpec, Surrogate};
pub use layer::{Layout, Mode};
pub use neuron::Neuron;
pub use plan::MemoryPlan;
