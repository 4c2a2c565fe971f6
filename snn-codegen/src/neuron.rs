//! The `Neuron` trait: anything that can produce a neuron's IR.

use crate::error::IrError;
use crate::ir::NeuronIr;

/// A neuron model. The zoo's types and the types `#[neuron]` generates implement it; their
/// fields are the parameters' values, which become the IR's parameter defaults.
pub trait Neuron {
    /// The neuron's step graph, validated, before optimisation.
    fn ir(&self) -> Result<NeuronIr, IrError>;
}

impl Neuron for NeuronIr {
    fn ir(&self) -> Result<NeuronIr, IrError> {
        self.validate()?;
        Ok(self.clone())
    }
}
