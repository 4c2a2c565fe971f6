//! The zoo as the tests drive it: shared by snn-codegen's tests, the runtime's GPU tests
//! (`gpu_common`) and the root crate's macro tests, which include this file by path.

use snn_codegen::ir::{NeuronIr, ParamShape};
use snn_codegen::zoo;

/// Each zoo neuron with the input range that makes it spike often but not always.
pub fn zoo_with_inputs() -> Vec<(NeuronIr, (f64, f64))> {
    zoo::all()
        .into_iter()
        .map(|n| {
            let ir = n.ir().unwrap();
            let range = match ir.name.as_str() {
                "izhikevich" => (0.0, 12.0),
                "paper_lif" => (0.0, 0.5),
                _ => (-0.2, 1.2),
            };
            (ir, range)
        })
        .collect()
}

/// The neuron with every param learnable, alternately scalar, per-channel and per-neuron,
/// so that gradients for every param and every sharing pattern are exercised.
pub fn all_learnable(ir: &NeuronIr) -> NeuronIr {
    let mut ir = ir.clone();
    for (p, spec) in ir.params.iter_mut().enumerate() {
        spec.learnable = true;
        spec.shape = [
            ParamShape::Scalar,
            ParamShape::PerChannel,
            ParamShape::PerNeuron,
        ][p % 3];
    }
    ir
}
