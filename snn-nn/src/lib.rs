//! Networks of spiking layers: the static layer graph, the Spiking-ResNet family and small
//! models, parameter names that match PyTorch's `state_dict`, a CPU reference for every
//! layer, loss and optimizer, and safetensors checkpoints.
//!
//! Nothing here touches a GPU: the CPU reference is the test oracle and trains small models
//! on a laptop, and `snn-runtime` runs the same graphs on GPUs.
//!
//! ```text
//! layers, graph, models   layer shapes, the static layer graph, Spiking-ResNets and CNNs
//! params, init            named tensors (PyTorch's state_dict names) and their init
//! activation_plan         what a training pass keeps for its backward (all, or spikes)
//! cpu/                    the CPU reference: every layer forward and backward, the model
//! loss, optim             losses over time-averaged output; SGD, Adam, AdamW, schedules
//! train/                  the Trainer trait, fit/evaluate (the one epoch loop), inputs
//! checkpoint              safetensors checkpoints (weights, buffers, optimizer state)
//! ```

pub mod activation_plan;
pub mod checkpoint;
pub mod cpu;
pub mod error;
pub mod float;
pub mod graph;
pub mod init;
pub mod layers;
pub mod loss;
pub mod models;
pub mod optim;
pub mod params;
pub mod train;

pub use activation_plan::ActivationPlan;
pub use checkpoint::Checkpoint;
pub use error::NnError;
pub use float::Float;
pub use graph::{Network, NetworkBuilder, Node, NodeId, Op, ParamInfo};
pub use init::{Rng, init_params};
pub use layers::{BatchNorm2d, Conv2d, ImageShape, Linear, MaxPool2d};
pub use loss::LossOutput;
pub use optim::{CosineSchedule, Optimizer, OptimizerState};
pub use params::{ParamSet, Role, Tensor};
pub use train::{Loss, StepStats, TrainError, Trainer};
