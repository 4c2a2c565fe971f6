//! What a training pass keeps for the backward ([`ActivationPlan`]): keeping only the spikes
//! and the neurons' states every few steps, and recomputing the rest, trains exactly like
//! keeping everything (loss, every gradient, batch-norm buffers), for chunks that divide T
//! and chunks that do not, and holds a fraction of the bytes.
#![allow(clippy::unwrap_used)]

mod common;

use common::tiny_net;
use snn_codegen::{Mode, Neuron, NeuronIr, ParamShape, zoo};
use snn_nn::cpu::{CpuModel, CpuTrainer};
use snn_nn::{
    ActivationPlan, Float, Loss, Network, Op, Optimizer, ParamSet, Rng, Role, init_params,
};

fn neurons() -> Vec<NeuronIr> {
    let plif = zoo::Plif {
        shape: ParamShape::PerChannel,
        ..zoo::Plif::default()
    };
    vec![
        zoo::PaperLif::default().ir().unwrap(),
        zoo::TernaryLif::default().ir().unwrap(),
        plif.ir().unwrap(),
        // A real-valued output: kept as values, not as spikes.
        zoo::LeakyIntegrator::default().ir().unwrap(),
    ]
}

fn random<T: Float>(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<T> {
    (0..n).map(|_| T::from_f64(rng.range(lo, hi))).collect()
}

/// A training pass and its backward under `plan`: the output, the gradients and the
/// parameters afterwards (batch-norm buffers updated), and the bytes the trace held.
fn pass<T: Float>(
    net: &Network,
    params: &ParamSet<T>,
    plan: ActivationPlan,
    x: &[T],
    r: &[T],
    (steps, batch): (usize, usize),
) -> (Vec<T>, ParamSet<T>, ParamSet<T>, usize) {
    let mut m = CpuModel::new(net, params.clone()).unwrap().with_plan(plan);
    let trace = m.forward(x, steps, batch, Mode::Train).unwrap();
    let grads = m.backward(&trace, r).unwrap();
    (
        trace.output().to_vec(),
        grads,
        m.params,
        trace.saved_bytes(),
    )
}

/// Names of the learnable neuron parameters: their gradients are sums over time, which
/// chunks split, so they agree to rounding; everything else agrees to the bit.
fn summed_over_time(net: &Network, name: &str) -> bool {
    net.nodes().iter().any(|n| match &n.op {
        Op::Neuron(ir) => ir
            .params
            .iter()
            .any(|p| p.learnable && name == format!("{}.{}", n.name, p.name)),
        _ => false,
    })
}

fn plans_agree<T: Float>(rel: f64) {
    let (steps, batch) = (5, 2);
    for neuron in neurons() {
        let net = tiny_net(&neuron);
        let mut rng = Rng::new(11);
        let mut params = init_params::<T>(&net, 3).unwrap();
        for t in params.iter_mut().filter(|t| t.role == Role::Weight) {
            for v in &mut t.data {
                *v += T::from_f64(rng.range(-0.3, 0.3));
            }
        }
        let x = random::<T>(&mut rng, steps * batch * net.input_shape().len(), -1.0, 2.0);
        let r = random::<T>(&mut rng, steps * batch * 3, -1.0, 1.0);
        let whole = pass(&net, &params, ActivationPlan::All, &x, &r, (steps, batch));
        let grads = whole
            .1
            .iter()
            .map(|t| t.data.iter().map(|v| v.value().abs()));
        assert!(
            grads.flatten().any(|g| g > 0.0),
            "{}: no gradient at all",
            neuron.name
        );
        for time_chunk in [1, 2, 3, 5, 8] {
            let what = format!("{} with time chunks of {time_chunk}", neuron.name);
            let chunked = pass(
                &net,
                &params,
                ActivationPlan::Spikes { time_chunk },
                &x,
                &r,
                (steps, batch),
            );
            assert_eq!(chunked.0, whole.0, "{what}: outputs");
            assert_eq!(
                chunked.2, whole.2,
                "{what}: parameters and buffers after the pass"
            );
            for (a, b) in chunked.1.iter().zip(whole.1.iter()) {
                assert_eq!(a.name, b.name);
                if summed_over_time(&net, &a.name) {
                    for (u, v) in a.data.iter().zip(&b.data) {
                        let (u, v) = (u.value(), v.value());
                        assert!(
                            (u - v).abs() <= rel * v.abs().max(1.0),
                            "{what}: {} {u} vs {v}",
                            a.name
                        );
                    }
                } else {
                    assert_eq!(a.data, b.data, "{what}: gradient of {}", a.name);
                }
            }
            assert!(
                chunked.3 < whole.3,
                "{what}: keeps {} bytes, everything is {}",
                chunked.3,
                whole.3
            );
        }
    }
}

#[test]
fn keeping_spikes_and_chunk_states_trains_exactly_like_keeping_everything_f64() {
    plans_agree::<f64>(1e-12);
}

#[test]
fn keeping_spikes_and_chunk_states_trains_exactly_like_keeping_everything_f32() {
    plans_agree::<f32>(1e-5);
}

/// Training steps with an optimizer: the same losses and parameters, to the bit.
#[test]
fn a_recomputing_trainer_takes_the_same_steps() {
    let lif = zoo::PaperLif::default().ir().unwrap();
    let net = tiny_net(&lif);
    let params = init_params::<f32>(&net, 1).unwrap();
    let (steps, batch) = (7, 3);
    let trainer = |plan| {
        let model = CpuModel::new(&net, params.clone()).unwrap().with_plan(plan);
        CpuTrainer::new(model, Optimizer::adam(0.01), Loss::CrossEntropyRate).unwrap()
    };
    let mut whole = trainer(ActivationPlan::All);
    let mut chunked = trainer(ActivationPlan::Spikes { time_chunk: 3 });
    let mut rng = Rng::new(4);
    for _ in 0..3 {
        let x = random::<f32>(&mut rng, steps * batch * net.input_shape().len(), 0.0, 1.5);
        let labels: Vec<usize> = (0..batch).map(|_| (rng.next_u64() % 3) as usize).collect();
        let a = whole.step(&x, &labels, steps, 0.01).unwrap();
        let b = chunked.step(&x, &labels, steps, 0.01).unwrap();
        assert_eq!(a.loss.to_bits(), b.loss.to_bits());
    }
    assert_eq!(whole.model.params, chunked.model.params);
}

/// The bytes a recomputing trace holds: the input and the output as values, one byte per
/// spike, two numbers per batch-norm channel, and the neurons' states at each chunk start
/// but the first.
#[test]
fn a_recomputing_trace_holds_the_spikes_and_little_else() {
    let lif = zoo::PaperLif::default().ir().unwrap();
    let states = lif.states.len();
    let net = tiny_net(&lif);
    let params = init_params::<f32>(&net, 0).unwrap();
    let (steps, batch, time_chunk) = (10, 2, 4);
    let images = steps * batch;
    let mut rng = Rng::new(9);
    let x = random::<f32>(&mut rng, images * net.input_shape().len(), 0.0, 2.0);
    let mut m = CpuModel::new(&net, params)
        .unwrap()
        .with_plan(ActivationPlan::Spikes { time_chunk });
    let trace = m.forward(&x, steps, batch, Mode::Train).unwrap();
    let mut want = 4 * images * (net.input_shape().len() + net.output_shape().len());
    for node in net.nodes() {
        match &node.op {
            Op::Neuron(_) => {
                let starts = steps.div_ceil(time_chunk) - 1;
                want += images * node.shape.len();
                want += starts * states * batch * node.shape.len() * 4;
            }
            Op::BatchNorm2d(bn) => want += 2 * bn.channels * 4,
            _ => {}
        }
    }
    assert_eq!(trace.saved_bytes(), want);
    // Kept spikes read back as they were.
    let whole = CpuModel::new(&net, m.params.clone())
        .unwrap()
        .forward(&x, steps, batch, Mode::Inference)
        .unwrap();
    let sn1 = net.nodes().iter().position(|n| n.name == "sn1").unwrap();
    assert!(trace.value(sn1).unwrap().contains(&1.0));
    assert!(trace.value(sn1 - 1).is_none(), "batch-norm output not kept");
    let pool = net.nodes().iter().position(|n| n.name == "pool").unwrap();
    assert!(trace.value(pool).is_none(), "pooled spikes not kept");
    assert_eq!(whole.output().len(), trace.output().len());
}

#[test]
fn a_time_chunk_of_zero_is_refused() {
    let lif = zoo::PaperLif::default().ir().unwrap();
    let net = tiny_net(&lif);
    let mut m = CpuModel::new(&net, init_params::<f32>(&net, 0).unwrap())
        .unwrap()
        .with_plan(ActivationPlan::Spikes { time_chunk: 0 });
    let x = vec![0.5; 2 * net.input_shape().len()];
    let err = m.forward(&x, 2, 1, Mode::Train).unwrap_err();
    assert!(err.to_string().contains("time chunk of 0"), "{err}");
}
