//! `#[neuron]`: declare a spiking neuron as a Rust step function.
//!
//! The macro lands with the DSL issue; this crate exists now so that the workspace has its
//! final shape. Until then, neurons are built with `snn_codegen::NeuronBuilder`.
