//! The IR's serialized form (feature `serde`, which the Python package pickles neurons
//! with): every zoo neuron, every surrogate (a custom one too) and a binary-from-spikes
//! neuron come back from JSON printing and compiling to the very same kernels.
#![cfg(feature = "serde")]
#![allow(clippy::unwrap_used)]

mod common;

use snn_codegen::{NeuronIr, Storage, compile};

#[test]
fn every_neuron_comes_back_from_json_compiling_to_the_same_kernels() {
    let neurons = common::zoo_with_inputs()
        .into_iter()
        .chain(common::surrogate_variants())
        .chain([common::band_spike()]);
    for (ir, _) in neurons {
        let json = serde_json::to_string(&ir).unwrap();
        let back: NeuronIr = serde_json::from_str(&json).unwrap();
        back.validate().unwrap();
        assert_eq!(format!("{back}"), format!("{ir}"), "{}", ir.name);
        for storage in [Storage::F32, Storage::NARROW] {
            let (a, b) = (
                compile(&ir, storage).unwrap(),
                compile(&back, storage).unwrap(),
            );
            assert_eq!(a.to_string(), b.to_string(), "{} in {storage:?}", ir.name);
            for (ka, kb) in a.kernels().all().into_iter().zip(b.kernels().all()) {
                assert_eq!(ka.source, kb.source, "{} in {storage:?}", ir.name);
            }
        }
    }
}

#[test]
fn json_that_is_no_neuron_is_an_error() {
    assert!(serde_json::from_str::<NeuronIr>(r#"{"name": "lif"}"#).is_err());
}
