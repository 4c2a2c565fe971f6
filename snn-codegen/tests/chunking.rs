//! Splitting time into chunks, carrying states forward and state adjoints backward, gives
//! the same results as one run over the whole sequence.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Rng, all_learnable, assert_close, jittered_params, zoo_with_inputs};
use snn_codegen::Mode;
use snn_codegen::interp::{Reference, Seq};
use snn_codegen::{Storage, compile};

const T: usize = 24;
const N: usize = 300;
const CHUNKS: [(usize, usize); 3] = [(0, 7), (7, 17), (17, 24)];

/// With lossless saves everything matches bit for bit. With narrow saves, the backward
/// rebuilds states from rounded saves except at a chunk's first step, where it has the exact
/// initial states, so gradients there differ within the save dtype's precision.
fn check(storage: Storage, grad_rel: f64) {
    for (seed, (ir, range)) in zoo_with_inputs().into_iter().enumerate() {
        let ir = all_learnable(&ir);
        let r = Reference::new(compile(&ir, storage).unwrap());
        let mut rng = Rng::new(seed as u64);
        let params = jittered_params::<f32>(&ir, &mut rng);
        let x: Vec<Seq<f32>> = (0..ir.inputs.len())
            .map(|_| rng.seq(T, N, range.0, range.1))
            .collect();
        let dy: Vec<Seq<f32>> = (0..ir.outputs.len())
            .map(|_| rng.seq(T, N, -1.0, 1.0))
            .collect();

        let whole = r.forward(&params, &x, None, Mode::Train).unwrap();
        let whole_grads = r.backward(&params, &x, None, &whole, &dy, None).unwrap();

        // Forward chunk by chunk, each starting from the previous chunk's final states.
        let part = |s: &[Seq<f32>], (a, b): (usize, usize)| {
            s.iter().map(|s| s.steps(a, b)).collect::<Vec<_>>()
        };
        let mut fwds = Vec::new();
        let mut inits = vec![None];
        for c in CHUNKS {
            let init: Option<Vec<Vec<f32>>> = inits.last().unwrap().clone();
            let f = r
                .forward(&params, &part(&x, c), init.as_deref(), Mode::Train)
                .unwrap();
            inits.push(Some(f.final_states.clone()));
            fwds.push(f);
        }
        for m in 0..ir.outputs.len() {
            let joined = Seq::concat(
                &fwds
                    .iter()
                    .map(|f| f.outputs[m].clone())
                    .collect::<Vec<_>>(),
            );
            assert_eq!(joined, whole.outputs[m], "{}: output {m}", ir.name);
        }
        assert_eq!(
            fwds.last().unwrap().final_states,
            whole.final_states,
            "{}: final states",
            ir.name
        );

        // Backward chunk by chunk in reverse, passing state adjoints to the earlier chunk.
        let mut grad_final: Option<Vec<Vec<f32>>> = None;
        let mut dx = Vec::new();
        let mut param_grads = vec![vec![0.0f64; 0]; ir.params.len()];
        for (i, c) in CHUNKS.iter().enumerate().rev() {
            let g = r
                .backward(
                    &params,
                    &part(&x, *c),
                    inits[i].as_deref(),
                    &fwds[i],
                    &part(&dy, *c),
                    grad_final.as_deref(),
                )
                .unwrap();
            for (acc, p) in param_grads.iter_mut().zip(&g.params) {
                let p = p.as_ref().unwrap();
                acc.resize(p.len(), 0.0);
                acc.iter_mut().zip(p).for_each(|(a, v)| *a += f64::from(*v));
            }
            grad_final = Some(g.init_states);
            dx.push(g.inputs);
        }
        dx.reverse();
        let close = |what: String, a: &[f32], b: &[f32]| {
            if grad_rel == 0.0 {
                assert!(a == b, "{what} differs");
            } else {
                let scale = b.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
                for (x, y) in a.iter().zip(b) {
                    assert_close(&what, f64::from(*x), f64::from(*y), grad_rel, scale);
                }
            }
        };
        for k in 0..ir.inputs.len() {
            let joined = Seq::concat(&dx.iter().map(|d| d[k].clone()).collect::<Vec<_>>());
            close(
                format!("{}: input gradient {k}", ir.name),
                &joined.data,
                &whole_grads.inputs[k].data,
            );
        }
        for (j, g) in grad_final.unwrap().iter().enumerate() {
            close(
                format!("{}: initial-state gradient {j}", ir.name),
                g,
                &whole_grads.init_states[j],
            );
        }
        // Parameter gradients are sums, so chunking changes only their rounding.
        for (q, acc) in param_grads.iter().enumerate() {
            for (a, b) in acc.iter().zip(whole_grads.params[q].as_ref().unwrap()) {
                assert_close(
                    &format!("{}: param gradient {q}", ir.name),
                    *a,
                    f64::from(*b),
                    1e-5_f64.max(grad_rel),
                    1e-3,
                );
            }
        }
    }
}

#[test]
fn chunked_equals_unchunked_in_f32() {
    check(Storage::F32, 0.0);
}

#[test]
fn chunked_equals_unchunked_with_narrow_storage() {
    // bf16 keeps 8 significant bits: a relative error of 2^-8 per rounding.
    check(Storage::NARROW, 0.05);
}
