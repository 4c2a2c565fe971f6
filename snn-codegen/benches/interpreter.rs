//! Throughput of the CPU reference interpreter (element-steps per second), forward
//! (inference and training) and backward, for each zoo neuron in f32.
//!
//! `cargo bench -p snn-codegen --bench interpreter`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use snn_codegen::interp::{Params, Reference, Seq};
use snn_codegen::{Layout, Mode};
use snn_codegen::{Storage, compile, zoo};

const T: usize = 32;
const N: usize = 1 << 14;

fn interpreter(c: &mut Criterion) {
    let mut group = c.benchmark_group("interpreter");
    group.throughput(Throughput::Elements((T * N) as u64));
    group.sample_size(10);
    for neuron in zoo::all() {
        let Ok(compiled) = compile(neuron.as_ref(), Storage::F32) else {
            continue;
        };
        let name = compiled.neuron.name.clone();
        let r = Reference::new(compiled);
        let ir = &r.compiled().neuron;
        let params = Params::<f32>::defaults(ir, Layout::flat(N));
        // A deterministic input in [0, 1) that makes every neuron spike now and then.
        let x: Vec<Seq<f32>> = (0..ir.inputs.len())
            .map(|k| Seq {
                steps: T,
                n: N,
                data: (0..T * N)
                    .map(|i| ((i * 7919 + k * 104_729) % 1000) as f32 / 1000.0)
                    .collect(),
            })
            .collect();
        let dy: Vec<Seq<f32>> = (0..ir.outputs.len())
            .map(|_| Seq {
                steps: T,
                n: N,
                data: vec![1.0; T * N],
            })
            .collect();
        group.bench_function(format!("{name}/forward_inference"), |b| {
            b.iter(|| black_box(r.forward(&params, &x, None, Mode::Inference)))
        });
        group.bench_function(format!("{name}/forward_train"), |b| {
            b.iter(|| black_box(r.forward(&params, &x, None, Mode::Train)))
        });
        let Ok(fwd) = r.forward(&params, &x, None, Mode::Train) else {
            continue;
        };
        group.bench_function(format!("{name}/backward"), |b| {
            b.iter(|| black_box(r.backward(&params, &x, None, &fwd, &dy, None)))
        });
    }
    group.finish();
}

criterion_group!(benches, interpreter);
criterion_main!(benches);
