//! Batch-norm fusion: a fused neuron equals "affine map (+ residual), then the neuron",
//! forward and backward, for every zoo neuron; and its memory plan.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Rng, assert_close, zoo_with_inputs};
use snn_codegen::fuse::{BN_MEAN, BN_SCALE, BN_SHIFT, batch_norm_input};
use snn_codegen::interp::{Params, Reference, Seq};
use snn_codegen::{IrError, NeuronBuilder, ParamDecl, Storage, compile, zoo};
use snn_codegen::{Layout, Mode};

const STEPS: usize = 6;
const LAYOUT: Layout = Layout {
    channels: 3,
    inner: 5,
};
const N: usize = 2 * 15;

#[test]
fn fused_neurons_equal_affine_then_neuron() {
    for (ir, (lo, hi)) in zoo_with_inputs() {
        for residual in [false, true] {
            let fused = batch_norm_input(&ir, residual).unwrap();
            let plain = Reference::new(compile(&ir, Storage::F64).unwrap());
            let fref = Reference::new(compile(&fused, Storage::F64).unwrap());
            let mut rng = Rng::new(5);
            let mean: Vec<f64> = rng.vec(3, -1.0, 1.0);
            let scale: Vec<f64> = rng.vec(3, 0.5, 1.5);
            let shift: Vec<f64> = rng.vec(3, -0.1, 0.1);
            let x: Seq<f64> = rng.seq(STEPS, N, -1.0, 1.0);
            let r: Seq<f64> = rng.seq(STEPS, N, -0.2, 0.2);
            let c = |i: usize| LAYOUT.index(snn_codegen::ParamShape::PerChannel, i % N);
            // The neuron's own input, computed as the fused prologue does.
            let y: Vec<f64> = (0..STEPS * N)
                .map(|i| {
                    let v = scale[c(i)] * (x.data[i] - mean[c(i)]) + shift[c(i)];
                    let v = if residual { v + r.data[i] } else { v };
                    // Spread into the neuron's spiking range.
                    lo + (hi - lo) * (v + 1.5) / 3.0
                })
                .collect();
            // Feed the fused neuron inputs that map to the same y: undo the spreading.
            let k = (hi - lo) / 3.0;
            let x_in: Vec<f64> = x.data.clone();
            let p_plain = Params::<f64>::defaults(&ir, LAYOUT);
            let mut p_fused = Params::<f64>::defaults(&fused, LAYOUT);
            // y = lo + k * (v + 1.5) = (k*scale) * (x - mean) + (k*shift + lo + 1.5k) [+ k*r]
            p_fused.set(BN_MEAN, mean.clone()).unwrap();
            p_fused
                .set(BN_SCALE, scale.iter().map(|s| k * s).collect())
                .unwrap();
            p_fused
                .set(
                    BN_SHIFT,
                    shift.iter().map(|s| k * s + lo + 1.5 * k).collect(),
                )
                .unwrap();
            let r_in: Vec<f64> = r.data.iter().map(|v| k * v).collect();
            let mut inputs = vec![Seq::new(STEPS, N, x_in).unwrap()];
            if residual {
                inputs.push(Seq::new(STEPS, N, r_in).unwrap());
            }
            let yseq = Seq::new(STEPS, N, y).unwrap();
            let fp = plain
                .forward(&p_plain, std::slice::from_ref(&yseq), None, Mode::Train)
                .unwrap();
            let ff = fref.forward(&p_fused, &inputs, None, Mode::Train).unwrap();
            for (a, b) in fp.outputs[0].data.iter().zip(&ff.outputs[0].data) {
                assert_close(&format!("{} output", fused.name), *a, *b, 1e-12, 1.0);
            }
            let dy: Seq<f64> = rng.seq(STEPS, N, -1.0, 1.0);
            let gp = plain
                .backward(
                    &p_plain,
                    &[yseq],
                    None,
                    &fp,
                    std::slice::from_ref(&dy),
                    None,
                )
                .unwrap();
            let gf = fref
                .backward(&p_fused, &inputs, None, &ff, &[dy], None)
                .unwrap();
            let gy = &gp.inputs[0].data;
            let (mut gs, mut gb) = (vec![0.0; 3], vec![0.0; 3]);
            for i in 0..STEPS * N {
                let s = k * scale[c(i)];
                assert_close("dL/dx", gf.inputs[0].data[i], s * gy[i], 1e-12, 1.0);
                if residual {
                    assert_close("dL/dr", gf.inputs[1].data[i], gy[i], 1e-12, 1.0);
                }
                gs[c(i)] += gy[i] * (x.data[i] - mean[c(i)]);
                gb[c(i)] += gy[i];
            }
            let pi = |name: &str| fused.param_index(name).unwrap();
            assert!(gf.params[pi(BN_MEAN)].is_none(), "the mean is not learned");
            let got_s = gf.params[pi(BN_SCALE)].as_ref().unwrap();
            let got_b = gf.params[pi(BN_SHIFT)].as_ref().unwrap();
            for ch in 0..3 {
                assert_close("d bn_scale", got_s[ch], gs[ch], 1e-10, 1.0);
                assert_close("d bn_shift", got_b[ch], gb[ch], 1e-10, 1.0);
            }
        }
    }
}

#[test]
fn fused_paper_lif_saves_what_the_neuron_saves() {
    let ir = zoo::PaperLif::default().ir_checked();
    for residual in [false, true] {
        let fused = compile(&batch_norm_input(&ir, residual).unwrap(), Storage::F32).unwrap();
        let plain = compile(&ir, Storage::F32).unwrap();
        assert_eq!(fused.plan.saves.len(), plain.plan.saves.len());
        // At most: the neuron's own traffic, the raw input read again by the backward (for
        // the scale gradient), and the residual read forward and its gradient written.
        let bound = plain.plan.bytes.train() + 4 + 8 * usize::from(residual);
        assert!(fused.plan.bytes.train() <= bound, "{fused}");
    }
}

#[test]
fn fusion_refuses_neurons_it_cannot_extend() {
    let b = NeuronBuilder::new("two_inputs");
    let (x, z) = (b.input("x"), b.input("z"));
    let v = b.state("v", 0.0);
    v.set(v + x + z);
    b.output("v", v);
    let e = batch_norm_input(&b.finish().unwrap(), false).unwrap_err();
    assert!(
        matches!(e, IrError::Fusion { .. }) && e.to_string().contains("2 inputs"),
        "{e}"
    );
    let b = NeuronBuilder::new("clash");
    let x = b.input("x");
    let s = b.param("bn_scale", ParamDecl::fixed(1.0));
    let v = b.state("v", 0.0);
    v.set(v * s + x);
    b.output("v", v);
    let e = batch_norm_input(&b.finish().unwrap(), false).unwrap_err();
    assert!(e.to_string().contains("`bn_scale`"), "{e}");
}

trait Checked {
    fn ir_checked(&self) -> snn_codegen::NeuronIr;
}
impl<N: snn_codegen::Neuron> Checked for N {
    fn ir_checked(&self) -> snn_codegen::NeuronIr {
        self.ir().unwrap()
    }
}
