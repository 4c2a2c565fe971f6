//! The training abstraction on the GPU against the CPU reference: the same loader batches
//! through `fit` on both backends (grey images repeated into 3 channels, rate-coded on the
//! device with the host's spikes), and event counts used as they are.
#![allow(clippy::unwrap_used)]

mod gpu_common;

use std::ops::ControlFlow;
use std::sync::Arc;

use gpu_common::{Rng, device};
use snn_codegen::zoo;
use snn_data::{Batch, BatchLayout, ImageDataset, Loader, LoaderConfig};
use snn_nn::checkpoint::Checkpoint;
use snn_nn::models::spiking_cnn;
use snn_nn::train::{
    FitConfig, Flow, Input, LrSchedule, Observer, RateCode, StepReport, evaluate, fit,
};
use snn_nn::{ImageShape, Loss, Optimizer, Trainer, init_params};
use snn_runtime::nn::{Backend, ConvMath, ModelOptions};

const RATE: RateCode = RateCode { steps: 4, seed: 3 };

fn options() -> ModelOptions {
    ModelOptions {
        conv_math: ConvMath::F32,
        deterministic: true,
        ..ModelOptions::default()
    }
}

/// A small CNN on `channels` x 8 x 8 input, on the CPU and on the GPU from the same
/// parameters.
fn trainers(channels: usize) -> [Box<dyn Trainer>; 2] {
    let dev = device();
    let net = spiking_cnn(
        ImageShape::new(channels, 8, 8),
        4,
        4,
        &zoo::PaperLif::default(),
    )
    .unwrap();
    let start = Checkpoint::fresh(init_params(&net, 4).unwrap());
    let gpu = Backend::Gpu {
        device: dev,
        options: options(),
        graphs: false,
    };
    [
        Backend::Cpu {
            plan: Default::default(),
        },
        gpu,
    ]
    .map(|b| {
        b.trainer(
            &net,
            &start,
            Optimizer::adam(1e-2),
            Loss::CrossEntropyRate,
            None,
        )
        .unwrap()
    })
}

/// The losses of every step.
#[derive(Default)]
struct Losses(Vec<f64>);

impl Observer for Losses {
    fn step(&mut self, report: &StepReport) -> Flow {
        self.0.push(report.stats.loss);
        Ok(ControlFlow::Continue(()))
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_fit_on_grey_images_trains_like_the_cpu() {
    let [mut cpu, mut gpu] = trainers(3);
    let mut rng = Rng::new(8);
    let images = (0..64 * 64).map(|_| rng.below(256) as u8).collect();
    let labels = (0..64).map(|_| rng.below(4) as u8).collect();
    let data = Arc::new(ImageDataset::new(images, [1, 8, 8], labels, 4).unwrap());
    let loader = |shuffle| {
        let config = LoaderConfig {
            batch_size: 16,
            shuffle,
            ..LoaderConfig::default()
        };
        Loader::new(data.clone(), config).unwrap()
    };
    let (train, test) = (loader(true), loader(false));
    let config = FitConfig::new(2, LrSchedule::Constant(1e-2), RATE);
    let (mut c, mut g) = (Losses::default(), Losses::default());
    fit(&mut *cpu, &train, None, &config, &mut c).unwrap();
    fit(&mut *gpu, &train, None, &config, &mut g).unwrap();
    assert_eq!((c.0.len(), g.0.len()), (8, 8));
    for (step, (c, g)) in c.0.iter().zip(&g.0).enumerate() {
        assert!(
            (c - g).abs() < 1e-3 * c.max(1e-3),
            "step {step}: {c} vs {g}"
        );
    }
    assert_eq!(gpu.steps_taken(), 8);
    let (ec, eg) = (
        evaluate(&mut *cpu, &test, RATE).unwrap(),
        evaluate(&mut *gpu, &test, RATE).unwrap(),
    );
    assert_eq!(eg.samples, 64);
    assert!(ec.correct.abs_diff(eg.correct) <= 2, "{ec:?} vs {eg:?}");
    let ckpt = gpu.checkpoint(2, Default::default()).unwrap();
    assert_eq!(ckpt.optimizer.unwrap().1.step, 8);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_event_counts_are_used_as_they_are() {
    let [mut cpu, mut gpu] = trainers(2);
    let mut rng = Rng::new(5);
    let (steps, batch) = (3, 4);
    let counts = Batch {
        indices: (0..batch as u64).collect(),
        data: (0..steps * batch * 2 * 64)
            .map(|_| rng.below(3) as u8)
            .collect(),
        labels: vec![0, 1, 2, 3],
        shape: vec![steps, batch, 2, 8, 8],
        layout: BatchLayout::TimeMajor,
    };
    let c = cpu.train_batch(Input::Counts(&counts), 1e-2).unwrap();
    let g = gpu.train_batch(Input::Counts(&counts), 1e-2).unwrap();
    assert!(
        (c.loss - g.loss).abs() < 1e-4 * c.loss.max(1e-3),
        "{c:?} vs {g:?}"
    );
}
