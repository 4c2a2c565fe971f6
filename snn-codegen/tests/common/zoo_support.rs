//! The zoo as the tests drive it: shared by snn-codegen's tests, the runtime's GPU tests
//! (`gpu_common`) and the root crate's macro tests, which include this file by path.

use snn_codegen::ir::{NeuronIr, ParamShape};
use snn_codegen::{NeuronBuilder, Surrogate, zoo};

/// Each zoo neuron with the input range that makes it spike often but not always.
pub fn zoo_with_inputs() -> Vec<(NeuronIr, (f64, f64))> {
    zoo::all()
        .into_iter()
        .map(|n| {
            let ir = n.ir().unwrap();
            let range = match ir.name.as_str() {
                "izhikevich" => (0.0, 12.0),
                "paper_lif" => (0.0, 0.5),
                // Both signs of spike.
                "ternary_lif" => (-0.6, 0.6),
                _ => (-0.2, 1.2),
            };
            (ir, range)
        })
        .collect()
}

/// A neuron whose output is binary though it is no `spike(..)` itself: a band spike
/// `s1 * (1 - s2)`, above one threshold and below another, which narrow storage keeps in
/// `u8` (the spike-kind analysis finds it binary), with its input range.
pub fn band_spike() -> (NeuronIr, (f64, f64)) {
    let b = NeuronBuilder::new("band_spike")
        .doc("Fires between two thresholds: a binary output built from two spikes.")
        .surrogate(Surrogate::sigmoid(4.0));
    let x = b.input("x");
    let (lo, hi) = (b.param("lo", 0.6), b.param("hi", 1.4));
    let v = b.state("v", 0.0);
    let h = (v * 0.5 + x).named("h");
    let (s1, s2) = (b.spike(h - lo), b.spike(h - hi));
    v.set(h * (1.0 - s1));
    b.output("s", s1 * (1.0 - s2));
    (b.finish().unwrap(), (-0.2, 2.0))
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
