//! Data parallelism over NCCL. On one GPU (always possible): a data-parallel trainer of one
//! rank takes exactly the steps of a plain one, through the NCCL calls and the rendezvous,
//! with and without synchronised batch-norm. On two GPUs (`multi_device_*`, run with
//! `bash .gpu/run.sh multi_device` where lent): two ranks, each on half of the global batch,
//! take the steps of one GPU on the whole batch, to summation order: a network without
//! batch-norm, and one with it, synchronised, fused into the neurons and not. The time pipeline (a layer's steps split over
//! the ranks): one rank is the layer itself; two ranks give the unsplit layer's outputs and
//! input gradients bit for bit, its param gradients to rounding.
#![allow(clippy::unwrap_used)]

mod gpu_common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use gpu_common::{Rng, device};
use snn_codegen::{Dtype, Layout, Neuron, NeuronIr, zoo};
use snn_data::{Batch, BatchLayout};
use snn_nn::models::{spiking_cnn, spiking_mlp};
use snn_nn::train::{AsInput, RateCode, Trainer};
use snn_nn::{ImageShape, Loss, Network, Optimizer, ParamSet, init_params};
use snn_runtime::dist::pipeline::TimePipeline;
use snn_runtime::dist::rendezvous::free_port;
use snn_runtime::dist::{Communicator, Parallel, Reduce, Split, World};
use snn_runtime::nn::{ConvMath, GpuModel, GpuTrainer, ModelOptions};
use snn_runtime::{Device, DeviceTensor};
use snn_runtime::{LayerConfig, NeuronLayer};

/// Frames ignore the rate code.
const RATE: RateCode = RateCode {
    steps: STEPS,
    seed: 0,
};

const STEPS: usize = 4;

fn options() -> ModelOptions {
    ModelOptions {
        conv_math: ConvMath::F32,
        deterministic: true,
        ..ModelOptions::default()
    }
}

/// No batch-norm: unsynchronised, its statistics over each rank's part would differ from
/// the whole batch's, as in PyTorch's DDP.
fn mlp() -> Network {
    spiking_mlp(ImageShape::new(1, 6, 6), 16, 4, &zoo::PaperLif::default()).unwrap()
}

/// Convolutions with batch-norm (fused into the neurons), for synchronised batch-norm.
fn cnn() -> Network {
    spiking_cnn(ImageShape::new(1, 6, 6), 4, 4, &zoo::PaperLif::default()).unwrap()
}

/// The networks: each with whether its batch-norm (if any) is synchronised and whether it
/// is fused into the neurons (the CNN both ways: a ResNet runs plain batch-norms too).
fn networks() -> [(Network, bool, bool); 3] {
    [
        (mlp(), false, true),
        (cnn(), true, true),
        (cnn(), true, false),
    ]
}

fn join(dev: &Arc<Device>, rank: usize, size: usize, port: u16) -> Communicator {
    Communicator::join(
        dev,
        &World::local(rank, size, port),
        Duration::from_secs(60),
    )
    .unwrap()
}

/// `work` on GPUs 0 and 1, one thread and rank each (the test fails on fewer GPUs); the
/// results in rank order.
fn on_two_gpus<R: Send>(work: impl Fn(&Arc<Device>, Communicator) -> R + Sync) -> Vec<R> {
    let count = Device::count().unwrap_or(0);
    assert!(
        count >= 2,
        "this test needs 2 CUDA GPUs; this machine has {count}"
    );
    let port = free_port().unwrap();
    thread::scope(|s| {
        let work = &work;
        let ranks: Vec<_> = (0..2)
            .map(|rank| {
                s.spawn(move || {
                    let dev = Device::open(rank).unwrap();
                    let comm = join(&dev, rank, 2, port);
                    work(&dev, comm)
                })
            })
            .collect();
        ranks.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Every value of `got` within rounding of `want`'s.
fn assert_close(got: &ParamSet<f32>, want: &ParamSet<f32>, what: &str) {
    for (g, w) in got.iter().zip(want.iter()) {
        for (a, b) in g.data.iter().zip(&w.data) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1e-2),
                "{what}, {}: {a} (two ranks) vs {b} (one GPU)",
                g.name
            );
        }
    }
}

fn trainer(dev: &Arc<Device>, net: &Network, params: &ParamSet<f32>) -> GpuTrainer {
    trainer_with(dev, net, params, options())
}

fn trainer_with(
    dev: &Arc<Device>,
    net: &Network,
    params: &ParamSet<f32>,
    options: ModelOptions,
) -> GpuTrainer {
    let model = GpuModel::new(dev, net, params, options).unwrap();
    GpuTrainer::new(model, Optimizer::adam(1e-2), Loss::CrossEntropyRate).unwrap()
}

/// `steps` batches: inputs `[T, B, ...]` and labels.
fn batches(net: &Network, batch: usize, steps: usize) -> Vec<(Vec<f32>, Vec<usize>)> {
    let mut rng = Rng::new(8);
    (0..steps)
        .map(|_| {
            let x = rng.vec(STEPS * batch * net.input_shape().len(), 0.0, 1.5);
            let labels = (0..batch).map(|_| rng.below(4)).collect();
            (x, labels)
        })
        .collect()
}

/// Samples `from..to` of a time-major batch `[T, B, ...]`.
fn part(x: &[f32], batch: usize, from: usize, to: usize) -> Vec<f32> {
    let per = x.len() / (STEPS * batch);
    (0..STEPS)
        .flat_map(|t| x[(t * batch + from) * per..(t * batch + to) * per].to_vec())
        .collect()
}

fn upload(dev: &Arc<Device>, x: &[f32]) -> DeviceTensor {
    DeviceTensor::from_f32(dev, Dtype::F32, &[x.len()], x).unwrap()
}

/// Gradient bucket sizes: one reduction after the backward pass, one bucket per tensor
/// (every tensor's reduction started as soon as it is written), PyTorch DDP's default.
const BUCKETS: [usize; 3] = [0, 1, Parallel::DEFAULT_BUCKET_BYTES];

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_one_rank_data_parallel_takes_the_plain_steps() {
    let dev = device();
    for net in [mlp(), cnn()] {
        let tensors = net
            .params()
            .iter()
            .filter(|p| p.role == snn_nn::Role::Weight)
            .count();
        for (sync_batch_norm, bucket_bytes) in [false, true]
            .into_iter()
            .flat_map(|s| BUCKETS.map(|b| (s, b)))
        {
            let what = format!(
                "{} (synchronised batch-norm: {sync_batch_norm}, buckets of {bucket_bytes} bytes)",
                net.name
            );
            let params = init_params::<f32>(&net, 2).unwrap();
            let mut plain = trainer(&dev, &net, &params);
            let mut ranked = trainer(&dev, &net, &params);
            (plain.graphs, ranked.graphs) = (true, true);
            let comm = join(&dev, 0, 1, free_port().unwrap());
            ranked
                .parallel(Parallel {
                    comm,
                    split: Split::Batch { sync_batch_norm },
                    bucket_bytes,
                })
                .unwrap();
            assert_eq!(ranked.model.syncs_batch_norm(), sync_batch_norm);
            // Synchronised batch-norm calls NCCL in the backward anyway: one reduction.
            let buckets = ranked.model.gradient_buckets().len();
            match bucket_bytes {
                _ if sync_batch_norm => assert_eq!(buckets, 0, "{what}"),
                0 => assert_eq!(buckets, 0, "{what}"),
                1 => assert_eq!(buckets, tensors, "{what}"),
                _ => assert_eq!(buckets, 1, "{what}"),
            }
            for (x, labels) in batches(&net, 6, 3) {
                let x = upload(&dev, &x);
                let a = plain.step(&x, &labels, STEPS, 1e-2).unwrap();
                let b = ranked.step(&x, &labels, STEPS, 1e-2).unwrap();
                assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{what}");
            }
            let (a, b) = (
                plain.model.to_host().unwrap(),
                ranked.model.to_host().unwrap(),
            );
            assert_eq!(a, b, "{what}: one rank's averages are its own");
            // Steps that call NCCL before their backward pass ends run launch by launch;
            // the others replay from the second on.
            assert_eq!(plain.graph_replays(), 2, "{what}");
            let talks = sync_batch_norm || bucket_bytes > 0;
            assert_eq!(ranked.model.talks_during_step(), talks, "{what}");
            assert_eq!(ranked.graph_replays(), if talks { 0 } else { 2 }, "{what}");
        }
    }
    // Misuse: tensors NCCL cannot take are clear errors.
    let net = mlp();
    let mut ranked = trainer(&dev, &net, &init_params::<f32>(&net, 2).unwrap());
    let comm = join(&dev, 0, 1, free_port().unwrap());
    ranked
        .parallel(Parallel::new(
            comm,
            Split::Batch {
                sync_batch_norm: false,
            },
        ))
        .unwrap();
    let comm = ranked.communicator().unwrap();
    let bf16 = DeviceTensor::zeros(&dev, Dtype::BF16, &[4]).unwrap();
    let err = comm
        .all_reduce(&bf16, Reduce::Mean)
        .unwrap_err()
        .to_string();
    assert!(err.contains("f32"), "{err}");
    let f32s = DeviceTensor::zeros(&dev, Dtype::F32, &[4]).unwrap();
    let small = DeviceTensor::zeros(&dev, Dtype::F32, &[3]).unwrap();
    let err = comm.all_gather(&f32s, &small).unwrap_err().to_string();
    assert!(err.contains("room for 4"), "{err}");
}

#[test]
#[ignore = "needs 2 CUDA GPUs: bash .gpu/run.sh multi_device"]
fn multi_device_data_parallel_takes_the_whole_batch_steps() {
    let runs = networks()
        .into_iter()
        .flat_map(|(net, sync, fuse)| BUCKETS.map(|b| (net.clone(), sync, fuse, b)));
    for (net, sync_batch_norm, fuse, bucket_bytes) in runs {
        let params = init_params::<f32>(&net, 3).unwrap();
        let (batch, steps) = (8, 3);
        let data = batches(&net, batch, steps);
        let options = ModelOptions { fuse, ..options() };
        // One GPU on the whole batch.
        let dev0 = Device::open(0).unwrap();
        let mut whole = trainer_with(&dev0, &net, &params, options);
        for (x, labels) in &data {
            whole.step(&upload(&dev0, x), labels, STEPS, 1e-2).unwrap();
        }
        let want = whole.model.to_host().unwrap();
        // Two ranks, one per GPU, each on half of every batch.
        let got = on_two_gpus(|dev, comm| {
            let rank = comm.world().rank;
            let mut t = trainer_with(dev, &net, &params, options);
            t.parallel(Parallel {
                comm,
                split: Split::Batch { sync_batch_norm },
                bucket_bytes,
            })
            .unwrap();
            let half = batch / 2;
            for (x, labels) in &data {
                let (from, to) = (rank * half, (rank + 1) * half);
                let x = upload(dev, &part(x, batch, from, to));
                t.step(&x, &labels[from..to], STEPS, 1e-2).unwrap();
            }
            t.model.to_host().unwrap()
        });
        // Batch-norm's running statistics too, when synchronised.
        let what = format!(
            "{} (synchronised batch-norm: {sync_batch_norm}, fused: {fuse}, buckets of \
             {bucket_bytes} bytes)",
            net.name
        );
        assert_eq!(
            got[0], got[1],
            "{what}: both ranks hold the same parameters"
        );
        assert_close(&got[0], &want, &what);
    }
}

/// PLIF with its one learnable `w`, gradients summed in a fixed order.
fn plif_layer(dev: &Arc<Device>) -> NeuronLayer {
    let mut config = LayerConfig::new(Layout {
        channels: 1,
        inner: 1,
    });
    config.options.reduction = snn_codegen::cuda::Reduction::Deterministic;
    NeuronLayer::new(dev, &plif(), config).unwrap()
}

fn plif() -> NeuronIr {
    zoo::Plif::default().ir().unwrap()
}

/// Micro-batches of `[steps, n]` inputs and output gradients, on the host.
fn sequences(steps: usize, n: usize, micro: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut rng = Rng::new(21);
    (0..micro)
        .map(|_| (rng.vec(steps * n, -0.2, 1.2), rng.vec(steps * n, -1.0, 1.0)))
        .collect()
}

/// What one layer run gives: per micro-batch the output and the input gradient, and the
/// param gradient summed over the micro-batches.
type Run = (Vec<(Vec<f32>, Vec<f32>)>, Vec<f32>);

/// The unsplit layer on `dev`, micro-batch by micro-batch over all steps.
fn unsplit(dev: &Arc<Device>, data: &[(Vec<f32>, Vec<f32>)], steps: usize, n: usize) -> Run {
    let layer = plif_layer(dev);
    let mut grad_w = vec![0f32];
    let per = data
        .iter()
        .map(|(x, g)| {
            let shape = [steps, n];
            let x = DeviceTensor::from_f32(dev, Dtype::F32, &shape, x).unwrap();
            let g = DeviceTensor::from_f32(dev, Dtype::F32, &shape, g).unwrap();
            let fwd = layer.forward(&[&x], None, true).unwrap();
            let grads = layer.backward(&[&x], None, &fwd, &[&g], None).unwrap();
            grad_w[0] += learned(&grads.params)[0];
            (
                fwd.outputs[0].to_f32().unwrap(),
                grads.inputs[0].to_f32().unwrap(),
            )
        })
        .collect();
    (per, grad_w)
}

/// Rank `rank` of `size`'s time chunk of every micro-batch through the pipeline.
fn pipelined(
    dev: &Arc<Device>,
    comm: &Communicator,
    data: &[(Vec<f32>, Vec<f32>)],
    (steps, n): (usize, usize),
) -> Run {
    let (rank, size) = (comm.world().rank, comm.world().size);
    let chunk = steps / size;
    let slice = |v: &Vec<f32>| {
        let v = v[rank * chunk * n..(rank + 1) * chunk * n].to_vec();
        DeviceTensor::from_f32(dev, Dtype::F32, &[chunk, n], &v).unwrap()
    };
    let xs: Vec<DeviceTensor> = data.iter().map(|(x, _)| slice(x)).collect();
    let gs: Vec<DeviceTensor> = data.iter().map(|(_, g)| slice(g)).collect();
    let xr: Vec<Vec<&DeviceTensor>> = xs.iter().map(|x| vec![x]).collect();
    let gr: Vec<Vec<&DeviceTensor>> = gs.iter().map(|g| vec![g]).collect();
    let layer = plif_layer(dev);
    let pipe = TimePipeline::new(&layer, comm).unwrap();
    let fwds = pipe.forward(&xr, true).unwrap();
    let grads = pipe.backward(&xr, &fwds, &gr).unwrap();
    let per = fwds
        .iter()
        .zip(&grads.inputs)
        .map(|(f, dx)| (f.fwd.outputs[0].to_f32().unwrap(), dx[0].to_f32().unwrap()))
        .collect();
    (per, learned(&grads.params))
}

/// The gradient of PLIF's one learnable param, on the host.
fn learned(params: &[Option<DeviceTensor>]) -> Vec<f32> {
    params.iter().flatten().next().unwrap().to_f32().unwrap()
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_a_one_rank_time_pipeline_is_the_layer() {
    let dev = device();
    let (steps, n) = (12, 300);
    let data = sequences(steps, n, 3);
    let (want, want_w) = unsplit(&dev, &data, steps, n);
    let comm = join(&dev, 0, 1, free_port().unwrap());
    let (got, got_w) = pipelined(&dev, &comm, &data, (steps, n));
    assert_eq!(got, want, "outputs and input gradients");
    assert!(
        (got_w[0] - want_w[0]).abs() <= 1e-5 * want_w[0].abs().max(1.0),
        "{got_w:?} vs {want_w:?}"
    );
}

#[test]
#[ignore = "needs 2 CUDA GPUs: bash .gpu/run.sh multi_device"]
fn multi_device_time_pipeline_equals_the_unsplit_layer() {
    let (steps, n) = (16, 500);
    let data = sequences(steps, n, 3);
    let (want, want_w) = unsplit(&Device::open(0).unwrap(), &data, steps, n);
    let got = on_two_gpus(|dev, comm| pipelined(dev, &comm, &data, (steps, n)));
    let half = steps / 2 * n;
    for (m, (y, dx)) in want.iter().enumerate() {
        for (rank, (per, _)) in got.iter().enumerate() {
            let part = rank * half..(rank + 1) * half;
            assert_eq!(
                per[m].0,
                y[part.clone()],
                "micro-batch {m}, rank {rank}: outputs"
            );
            assert_eq!(
                per[m].1, dx[part],
                "micro-batch {m}, rank {rank}: input gradients"
            );
        }
    }
    for (_, w) in &got {
        assert!(
            (w[0] - want_w[0]).abs() <= 1e-4 * want_w[0].abs().max(1.0),
            "{w:?} vs {want_w:?}"
        );
    }
}

/// Samples' steps `from..to` of a time-major batch `[T, B, ...]`.
fn steps_of(x: &[f32], from: usize, to: usize) -> Vec<f32> {
    let per_step = x.len() / STEPS;
    x[from * per_step..to * per_step].to_vec()
}

/// Split by time with one rank: the plain trainer's steps, bit for bit, through the
/// hand-offs, the gathered loss and the summed gradients.
#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_one_rank_split_by_time_takes_the_plain_steps() {
    let dev = device();
    let net = cnn();
    let params = init_params::<f32>(&net, 4).unwrap();
    for bucket_bytes in BUCKETS {
        let mut plain = trainer(&dev, &net, &params);
        let mut ranked = trainer(&dev, &net, &params);
        let comm = join(&dev, 0, 1, free_port().unwrap());
        ranked
            .parallel(Parallel {
                comm,
                split: Split::Time,
                bucket_bytes,
            })
            .unwrap();
        // The hand-offs call NCCL in the backward anyway: one reduction after it.
        assert!(ranked.model.gradient_buckets().is_empty());
        for (x, labels) in batches(&net, 6, 3) {
            let x = upload(&dev, &x);
            let a = plain.step(&x, &labels, STEPS, 1e-2).unwrap();
            let b = ranked.step(&x, &labels, STEPS, 1e-2).unwrap();
            assert_eq!(
                a.loss.to_bits(),
                b.loss.to_bits(),
                "buckets of {bucket_bytes}"
            );
        }
        assert_eq!(
            plain.model.to_host().unwrap(),
            ranked.model.to_host().unwrap(),
            "buckets of {bucket_bytes}"
        );
    }
}

/// Split by time over two GPUs (each half of the steps of the whole batch), with and
/// without recomputation in time chunks: the steps of one GPU over all of T, to rounding.
/// Fed as `snn train` feeds it (the whole batch's frames to every rank, which takes its
/// chunk), and evaluated by one rank alone over the whole T.
#[test]
#[ignore = "needs 2 CUDA GPUs: bash .gpu/run.sh multi_device"]
fn multi_device_split_by_time_takes_the_whole_steps() {
    let net = cnn();
    let params = init_params::<f32>(&net, 5).unwrap();
    let (batch, steps) = (4, 3);
    let data = batches(&net, batch, steps);
    let frames = |x: &[f32], labels: &[usize]| Batch {
        indices: (0..batch as u64).collect(),
        data: x.to_vec(),
        labels: labels.iter().map(|&l| l as u8).collect(),
        shape: {
            let s = net.input_shape();
            vec![STEPS, batch, s.channels, s.height, s.width]
        },
        layout: BatchLayout::TimeMajor,
    };
    let plans = [
        snn_nn::ActivationPlan::All,
        snn_nn::ActivationPlan::Spikes { time_chunk: 1 },
    ];
    for plan in plans {
        let options = ModelOptions { plan, ..options() };
        let make = |dev: &Arc<Device>| {
            let model = GpuModel::new(dev, &net, &params, options).unwrap();
            GpuTrainer::new(model, Optimizer::adam(1e-2), Loss::CrossEntropyRate).unwrap()
        };
        let dev0 = Device::open(0).unwrap();
        let mut whole = make(&dev0);
        let losses: Vec<f64> = data
            .iter()
            .map(|(x, labels)| {
                whole
                    .step(&upload(&dev0, x), labels, STEPS, 1e-2)
                    .unwrap()
                    .loss
            })
            .collect();
        let want = whole.model.to_host().unwrap();
        let (x, labels) = &data[0];
        let test = frames(x, labels);
        let want_test = whole.test_batch(test.as_input(RATE)).unwrap();
        let got = on_two_gpus(|dev, comm| {
            let rank = comm.world().rank;
            let mut t = make(dev);
            t.parallel(Parallel::new(comm, Split::Time)).unwrap();
            let half = STEPS / 2;
            let losses: Vec<f64> = data
                .iter()
                .enumerate()
                .map(|(i, (x, labels))| match i % 2 {
                    // As `snn train`: every rank the whole batch, of which it takes its steps.
                    0 => {
                        let b = frames(x, labels);
                        t.train_batch(b.as_input(RATE), 1e-2).unwrap().loss
                    }
                    _ => {
                        let x = upload(dev, &steps_of(x, rank * half, (rank + 1) * half));
                        t.step(&x, labels, half, 1e-2).unwrap().loss
                    }
                })
                .collect();
            // Rank 0 alone evaluates, over the whole T.
            let test = (rank == 0).then(|| t.test_batch(test.as_input(RATE)).unwrap());
            (losses, t.model.to_host().unwrap(), test)
        });
        let what = format!("{plan:?}");
        assert_eq!(
            got[0].1, got[1].1,
            "{what}: both ranks hold the same parameters"
        );
        for (a, b) in got[0].0.iter().zip(&losses) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{what}: loss {a} vs {b}"
            );
        }
        assert_close(&got[0].1, &want, &what);
        let test = got[0].2.as_ref().unwrap();
        assert!(
            (test.loss - want_test.loss).abs() <= 1e-4 * want_test.loss.abs().max(1.0),
            "{what}: test loss {} vs {}",
            test.loss,
            want_test.loss
        );
    }
}
