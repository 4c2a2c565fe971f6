//! Training steps replayed from a CUDA graph against the same steps launched kernel by
//! kernel: with deterministic algorithms both run the same kernels with the same arguments
//! on the same data, so every loss, weight, optimizer state and batch-norm statistic must
//! agree bit for bit, across a change of batch size (which drops the graph and captures a
//! new one) and inference passes between steps. Both models take the convolution
//! algorithms a third one chose, which the kernel cache remembers (so not with
//! `SNN_CACHE=off`).
#![allow(clippy::unwrap_used)]

mod gpu_common;

use gpu_common::{Rng, device};
use snn_codegen::{Dtype, Mode, zoo};
use snn_nn::models::{spiking_cnn, spiking_resnet};
use snn_nn::{ImageShape, Loss, Network, Optimizer, init_params};
use snn_runtime::DeviceTensor;
use snn_runtime::nn::{ConvMath, GpuModel, GpuTrainer, ModelOptions};

const STEPS: usize = 4;

/// Random spikes `[T, B, C, H, W]` and labels for a batch of `batch`.
fn batch(
    dev: &std::sync::Arc<snn_runtime::Device>,
    net: &Network,
    batch: usize,
    rng: &mut Rng,
) -> (DeviceTensor, Vec<usize>) {
    let input = net.input_shape();
    let (c, h, w) = (input.channels, input.height, input.width);
    let spikes: Vec<f32> = (0..STEPS * batch * c * h * w)
        .map(|_| (rng.below(3) == 0) as u8 as f32)
        .collect();
    let x = DeviceTensor::from_f32(dev, Dtype::F32, &[STEPS, batch, c, h, w], &spikes).unwrap();
    let labels = (0..batch).map(|_| rng.below(10)).collect();
    (x, labels)
}

fn trainer(net: &Network, math: ConvMath, graphs: bool) -> GpuTrainer {
    let options = ModelOptions {
        conv_math: math,
        deterministic: true,
        ..ModelOptions::default()
    };
    let params = init_params::<f32>(net, 7).unwrap();
    let model = GpuModel::new(&device(), net, &params, options).unwrap();
    let mut t = GpuTrainer::new(model, Optimizer::adam(1e-2), Loss::CrossEntropyRate).unwrap();
    t.graphs = graphs;
    t
}

const INFERENCE_BATCH: usize = 9;

/// Runs every shape of the test once on a model of its own, so that the models compared
/// read the convolution algorithms it chose from beside the kernel cache instead of
/// timing their own: two searches may pick different deterministic algorithms, whose
/// results differ by rounding.
fn choose_algorithms(net: &Network, math: ConvMath, train: &[usize], inference: usize) {
    let dev = device();
    let mut scout = trainer(net, math, false);
    let mut rng = Rng::new(1);
    for &b in train {
        let (x, labels) = batch(&dev, net, b, &mut rng);
        scout.step(&x, &labels, STEPS, 1e-2).unwrap();
    }
    let (x, _) = batch(&dev, net, inference, &mut rng);
    scout
        .model
        .forward(&x, STEPS, inference, Mode::Inference)
        .unwrap();
}

/// Everything a step changes, as bits.
fn state_bits(t: &GpuTrainer) -> Vec<Vec<u32>> {
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut all = vec![bits(t.model.params().to_f32().unwrap())];
    all.extend(t.state().iter().map(|s| bits(s.to_f32().unwrap())));
    // Parameters again, and the batch-norm running statistics with them.
    all.extend(
        t.model
            .to_host()
            .unwrap()
            .iter()
            .map(|t| bits(t.data.clone())),
    );
    all
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_graph_replays_train_bit_for_bit_like_eager_launches() {
    let dev = device();
    let lif = zoo::PaperLif::default();
    let nets = [
        spiking_resnet(18, ImageShape::new(3, 16, 16), 10, &lif).unwrap(),
        spiking_cnn(ImageShape::new(2, 12, 12), 8, 10, &lif).unwrap(),
    ];
    // Batch sizes step by step: a change drops the graph, the next step captures anew.
    let sizes = [6, 6, 6, 6, 6, 4, 6, 6];
    for net in &nets {
        for math in [ConvMath::F32, ConvMath::Bf16] {
            let what = format!("{} in {math:?}", net.name);
            choose_algorithms(net, math, &[6, 4], INFERENCE_BATCH);
            let mut eager = trainer(net, math, false);
            let mut graphed = trainer(net, math, true);
            let mut rng = Rng::new(11);
            let mut replayed = Vec::new();
            for (i, &b) in sizes.iter().enumerate() {
                let (x, labels) = batch(&dev, net, b, &mut rng);
                let e = eager.step(&x, &labels, STEPS, 1e-2).unwrap();
                let before = graphed.graph_replays();
                let g = graphed.step(&x, &labels, STEPS, 1e-2).unwrap();
                replayed.push(graphed.graph_replays() > before);
                assert_eq!(
                    (e.loss.to_bits(), e.correct),
                    (g.loss.to_bits(), g.correct),
                    "{what}, step {i}: {e:?} vs {g:?}"
                );
                if i == 3 {
                    // An inference pass in between, of another batch size.
                    let (x, _) = batch(&dev, net, INFERENCE_BATCH, &mut rng);
                    for t in [&mut eager, &mut graphed] {
                        t.model
                            .forward(&x, STEPS, INFERENCE_BATCH, Mode::Inference)
                            .unwrap();
                    }
                }
            }
            assert_eq!(graphed.capture_error(), None, "{what}");
            // A step is captured right after one like it ran launch by launch: not the
            // first, nor the sixth (another batch size) or the seventh (after it); the
            // second too when the first grew the convolution workspace.
            let want = [false, replayed[1], true, true, true, false, false, true];
            assert_eq!(replayed, want, "{what}: which steps replayed a graph");
            assert_eq!(eager.graph_replays(), 0, "{what}");
            assert!(graphed.graph_bytes() > 0, "{what}");
            let (e, g) = (state_bits(&eager), state_bits(&graphed));
            let differ: Vec<usize> = (0..e.len()).filter(|&k| e[k] != g[k]).collect();
            assert!(
                differ.is_empty(),
                "{what}: weights, optimizer state or batch-norm statistics differ (tensors {differ:?} of {}: 0 the weights, 1 and 2 Adam's moments, then each parameter and buffer)",
                e.len()
            );
        }
    }
}
