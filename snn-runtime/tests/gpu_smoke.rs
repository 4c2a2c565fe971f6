//! A first check on a GPU: the paper's LIF forward and backward agree with the CPU
//! reference.
#![allow(clippy::unwrap_used)]

mod gpu_common;

use snn_codegen::interp::{Params, Reference, Seq};
use snn_codegen::{Layout, Mode};
use snn_codegen::{Storage, compile, zoo};
use snn_runtime::{DeviceTensor, LayerConfig, NeuronLayer};

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_paper_lif_smoke() {
    let dev = gpu_common::device();
    eprintln!("device: {:?}", dev.info);
    let lif = zoo::PaperLif::default();
    let (steps, n) = (32, 1003);
    let layer = NeuronLayer::new(&dev, &lif, LayerConfig::new(Layout::flat(n))).unwrap();
    let x: Vec<f32> = (0..steps * n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1600.0)
        .collect();
    let dy: Vec<f32> = (0..steps * n)
        .map(|i| ((i * 104_729) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let xd = DeviceTensor::from_f32(&dev, snn_codegen::Dtype::F32, &[steps, n], &x).unwrap();
    let dyd = DeviceTensor::from_f32(&dev, snn_codegen::Dtype::F32, &[steps, n], &dy).unwrap();
    let fwd = layer.forward(&[&xd], None, true).unwrap();
    let g = layer.backward(&[&xd], None, &fwd, &[&dyd], None).unwrap();

    let r = Reference::new(compile(&lif, Storage::F32).unwrap());
    let params = Params::<f32>::defaults(&r.compiled().neuron, Layout::flat(n));
    let xs = vec![Seq::new(steps, n, x).unwrap()];
    let want = r.forward(&params, &xs, None, Mode::Train).unwrap();
    let wg = r
        .backward(
            &params,
            &xs,
            None,
            &want,
            &[Seq::new(steps, n, dy).unwrap()],
            None,
        )
        .unwrap();
    assert_eq!(fwd.outputs[0].to_f32().unwrap(), want.outputs[0].data);
    assert_eq!(g.inputs[0].to_f32().unwrap(), wg.inputs[0].data);
    eprintln!("cache: {:?}", dev.cache.stats());
}
