//! A small spiking CNN (the paper's LIF) learns a synthetic, separable task on the CPU
//! through the training abstraction: `fit` and `evaluate` over loaders of rate-coded `u8`
//! images, with every step and epoch observed, early stops, and bit-exact resumption.
//! Which quadrant of an 8x8 image is bright is the class.
#![allow(clippy::unwrap_used)]

use std::ops::ControlFlow;
use std::sync::Arc;

use snn_codegen::zoo;
use snn_data::{ImageDataset, Loader, LoaderConfig};
use snn_nn::cpu::{CpuModel, CpuTrainer};
use snn_nn::models::spiking_cnn;
use snn_nn::optim::CosineSchedule;
use snn_nn::train::{
    EpochReport, FitConfig, Flow, Input, LrSchedule, Observer, RateCode, StepReport, StepStats,
    evaluate, fit,
};
use snn_nn::{
    ImageShape, Loss, Network, NnError, Optimizer, Rng, TrainError, Trainer, init_params,
};

const SIDE: usize = 8;
const RATE: RateCode = RateCode { steps: 4, seed: 3 };

/// `n` noisy images whose bright quadrant is the label.
fn quadrants(seed: u64, n: usize) -> Arc<ImageDataset> {
    let mut rng = Rng::new(seed);
    let labels: Vec<u8> = (0..n).map(|_| (rng.next_u64() % 4) as u8).collect();
    let mut images = Vec::with_capacity(n * SIDE * SIDE);
    for &label in &labels {
        for y in 0..SIDE {
            for x in 0..SIDE {
                let quadrant = (y / (SIDE / 2)) * 2 + x / (SIDE / 2);
                let base = if quadrant == usize::from(label) {
                    0.6
                } else {
                    0.2
                };
                images.push(((base + rng.range(-0.2, 0.2)) * 255.0).round() as u8);
            }
        }
    }
    Arc::new(ImageDataset::new(images, [1, SIDE, SIDE], labels, 4).unwrap())
}

fn loader(data: &Arc<ImageDataset>, batch_size: usize, shuffle: bool) -> Loader {
    let config = LoaderConfig {
        batch_size,
        shuffle,
        seed: 5,
        ..LoaderConfig::default()
    };
    Loader::new(data.clone(), config).unwrap()
}

fn network() -> Network {
    spiking_cnn(
        ImageShape::new(1, SIDE, SIDE),
        4,
        4,
        &zoo::PaperLif::default(),
    )
    .unwrap()
}

fn trainer(net: &Network, seed: u64) -> CpuTrainer<f32> {
    let model = CpuModel::new(net, init_params::<f32>(net, seed).unwrap()).unwrap();
    CpuTrainer::new(model, Optimizer::adam(1e-2), Loss::CrossEntropyRate).unwrap()
}

/// Everything `fit` reports; stops after `stop_at_step` steps taken, or at the end of
/// epoch `stop_at_epoch`.
#[derive(Default)]
struct Record {
    starts: Vec<(u64, usize)>,
    steps: Vec<StepReport>,
    epochs: Vec<EpochReport>,
    stop_at_step: Option<u64>,
    stop_at_epoch: Option<u64>,
}

impl Observer for Record {
    fn epoch_start(&mut self, epoch: u64, batches: usize) {
        self.starts.push((epoch, batches));
    }

    fn step(&mut self, report: &StepReport) -> Flow {
        self.steps.push(*report);
        if Some(report.steps_taken) == self.stop_at_step {
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    }

    fn epoch_end(&mut self, trainer: &dyn Trainer, report: &EpochReport) -> Flow {
        assert_eq!(
            trainer.steps_taken(),
            self.steps.last().unwrap().steps_taken
        );
        self.epochs.push(*report);
        Ok(if Some(report.epoch) == self.stop_at_epoch {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    }
}

#[test]
fn small_spiking_cnn_learns_a_separable_task_through_fit() {
    let net = network();
    let mut trainer = trainer(&net, 0);
    let (train, test) = (loader(&quadrants(42, 320), 16, true), quadrants(7, 200));
    let test = loader(&test, 50, false);
    let mut record = Record::default();
    let config = FitConfig::new(15, LrSchedule::Constant(1e-2), RATE);
    fit(&mut trainer, &train, Some(&test), &config, &mut record).unwrap();

    // Every step and epoch seen, in order.
    assert_eq!(record.starts, (0..15).map(|e| (e, 20)).collect::<Vec<_>>());
    assert_eq!(record.steps.len(), 300);
    for (k, s) in record.steps.iter().enumerate() {
        assert_eq!((s.epoch, s.batch, s.batches), (k as u64 / 20, k % 20, 20));
        assert_eq!(
            (s.steps_taken, s.lr, s.stats.batch),
            (k as u64 + 1, 1e-2, 16)
        );
    }
    assert_eq!(record.epochs.len(), 15);
    for (e, r) in record.epochs.iter().enumerate() {
        let steps = &record.steps[e * 20..(e + 1) * 20];
        let loss = steps.iter().map(|s| s.stats.loss * 16.0).sum::<f64>() / 320.0;
        let correct: usize = steps.iter().map(|s| s.stats.correct).sum();
        assert_eq!(r.epoch, e as u64);
        assert!((r.train.loss - loss).abs() < 1e-12);
        assert_eq!((r.train.correct, r.train.samples), (correct, 320));
        assert_eq!(r.test.unwrap().samples, 200);
    }
    assert_eq!(trainer.steps_taken(), 300);

    // It learned: the loss fell and held-out images are classified (running statistics).
    let (first, last) = (&record.epochs[0].train, &record.epochs[14].train);
    assert!(
        last.loss < 0.3 * first.loss,
        "loss fell only from {:.3} to {:.3}",
        first.loss,
        last.loss
    );
    let accuracy = record.epochs[14].test.unwrap().accuracy();
    assert!(
        accuracy >= 0.9,
        "held-out accuracy {accuracy} (chance: 0.25)"
    );
    // `evaluate` alone agrees with the last epoch's evaluation.
    let again = evaluate(&mut trainer, &test, RATE).unwrap();
    assert_eq!(again.correct, record.epochs[14].test.unwrap().correct);
}

#[test]
fn an_observer_stops_fit_after_a_step_or_an_epoch() {
    let net = network();
    let train = loader(&quadrants(1, 40), 8, true);
    let config = FitConfig::new(3, LrSchedule::Constant(1e-2), RATE);

    let mut t = trainer(&net, 1);
    let mut mid = Record {
        stop_at_step: Some(7),
        ..Record::default()
    };
    fit(&mut t, &train, None, &config, &mut mid).unwrap();
    assert_eq!(t.steps_taken(), 7);
    assert_eq!(mid.steps.len(), 7);
    assert_eq!(
        mid.epochs.len(),
        1,
        "epoch 0 ends; epoch 1 is stopped at its batch 1"
    );

    let mut t = trainer(&net, 1);
    let mut end = Record {
        stop_at_epoch: Some(0),
        ..Record::default()
    };
    fit(&mut t, &train, None, &config, &mut end).unwrap();
    assert_eq!((t.steps_taken(), end.epochs.len()), (5, 1));
    assert!(end.epochs[0].test.is_none());

    // An observer's failure (a checkpoint it could not write) ends the run with it.
    struct Failing;
    impl Observer for Failing {
        fn step(&mut self, report: &StepReport) -> Flow {
            if report.steps_taken == 2 {
                return Err(NnError::Config("disk full".into()).into());
            }
            Ok(ControlFlow::Continue(()))
        }
    }
    let mut t = trainer(&net, 1);
    let e = fit(&mut t, &train, None, &config, &mut Failing).unwrap_err();
    assert!(
        matches!(&e, TrainError::Nn(NnError::Config(m)) if m == "disk full"),
        "{e}"
    );
    assert_eq!(t.steps_taken(), 2);

    // `max_batches` caps the epochs.
    let mut t = trainer(&net, 1);
    let capped = FitConfig {
        max_batches: Some(2),
        ..config
    };
    fit(&mut t, &train, None, &capped, &mut ()).unwrap();
    assert_eq!(t.steps_taken(), 6);
}

#[test]
fn fit_resumes_from_a_checkpoint_bit_exactly() {
    let net = network();
    let train = loader(&quadrants(9, 40), 8, true);
    let schedule = CosineSchedule {
        base_lr: 1e-2,
        min_lr: 1e-4,
        total_steps: 15,
        warmup_steps: 3,
    };
    let config = FitConfig::new(3, LrSchedule::Cosine(schedule), RATE);
    // Fifteen steps straight through.
    let mut straight = trainer(&net, 1);
    let mut all = Record::default();
    fit(&mut straight, &train, None, &config, &mut all).unwrap();
    assert_eq!(all.steps.len(), 15);

    // Seven steps, stopped in epoch 1, through a checkpoint file, then the rest.
    let mut first = trainer(&net, 1);
    let mut stopped = Record {
        stop_at_step: Some(7),
        ..Record::default()
    };
    fit(&mut first, &train, None, &config, &mut stopped).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    snn_nn::checkpoint::save(&path, &first.checkpoint(1, Default::default()).unwrap()).unwrap();
    let ckpt = snn_nn::checkpoint::load(&path).unwrap();
    assert_eq!(ckpt.epoch, 1);
    let mut resumed =
        CpuTrainer::from_checkpoint(&net, &ckpt, Optimizer::adam(1e-2), Loss::CrossEntropyRate)
            .unwrap();
    let mut rest = Record::default();
    fit(&mut resumed, &train, None, &config, &mut rest).unwrap();

    assert_eq!(rest.starts, vec![(1, 3), (2, 5)]);
    assert_eq!(stopped.steps[..], all.steps[..7]);
    assert_eq!(rest.steps[..], all.steps[7..]);
    assert_eq!(rest.epochs.len(), 2);
    assert_eq!(
        rest.epochs[0].train.samples, 24,
        "epoch 1's last three batches"
    );
    let (a, b) = (&rest.epochs[1].train, &all.epochs[2].train);
    assert_eq!(
        (a.loss, a.correct, a.samples),
        (b.loss, b.correct, b.samples)
    );
    assert_eq!(resumed.model.params, straight.model.params);
    assert_eq!(resumed.state, straight.state);

    // A checkpoint of another network is refused, naming what differs.
    let other = spiking_cnn(
        ImageShape::new(1, SIDE, SIDE),
        6,
        4,
        &zoo::PaperLif::default(),
    )
    .unwrap();
    let e =
        CpuTrainer::from_checkpoint(&other, &ckpt, Optimizer::adam(1e-2), Loss::CrossEntropyRate)
            .unwrap_err();
    assert!(e.to_string().contains("conv1.weight"), "{e}");
}

#[test]
fn a_diverging_run_stops_with_a_clear_error() {
    let net = network();
    let model = CpuModel::new(&net, init_params::<f32>(&net, 2).unwrap()).unwrap();
    let mut t = CpuTrainer::new(model, Optimizer::sgd(0.1, 0.0), Loss::CrossEntropyRate).unwrap();
    let train = loader(&quadrants(3, 40), 8, true);
    // A rate beyond f32's range makes the parameters infinite or NaN, and the next loss.
    let config = FitConfig::new(3, LrSchedule::Constant(f64::MAX), RATE);
    let mut record = Record::default();
    let e = fit(&mut t, &train, None, &config, &mut record).unwrap_err();
    let TrainError::Diverged { epoch, step, loss } = e else {
        panic!("{e}");
    };
    assert!(!loss.is_finite());
    assert_eq!((epoch, step), (0, record.steps.len() as u64 + 1));
    assert!(e.to_string().contains("diverged"), "{e}");
}

/// A trainer whose updates from step `from` on use a rate beyond f32's range.
#[derive(Debug)]
struct BreaksAt {
    inner: CpuTrainer<f32>,
    from: u64,
}

impl Trainer for BreaksAt {
    fn network(&self) -> &Network {
        self.inner.network()
    }
    fn device_name(&self) -> String {
        self.inner.device_name()
    }
    fn steps_taken(&self) -> u64 {
        self.inner.steps_taken()
    }
    fn train_batch(&mut self, input: Input<'_>, lr: f64) -> Result<StepStats, TrainError> {
        let lr = if self.steps_taken() + 1 >= self.from {
            f64::MAX
        } else {
            lr
        };
        self.inner.train_batch(input, lr)
    }
    fn test_batch(&mut self, input: Input<'_>) -> Result<StepStats, TrainError> {
        self.inner.test_batch(input)
    }
    fn checkpoint(
        &self,
        epoch: u64,
        metadata: std::collections::BTreeMap<String, String>,
    ) -> Result<snn_nn::checkpoint::Checkpoint, TrainError> {
        self.inner.checkpoint(epoch, metadata)
    }
}

/// The last step of an epoch may break the parameters while its own loss (computed
/// before the update) is finite: the test loss catches it, and the broken epoch never
/// reaches the observer (which is where checkpoints are written).
#[test]
fn parameters_broken_by_an_epochs_last_step_never_reach_the_observer() {
    let net = network();
    let model = CpuModel::new(&net, init_params::<f32>(&net, 2).unwrap()).unwrap();
    let inner = CpuTrainer::new(model, Optimizer::sgd(0.1, 0.0), Loss::CrossEntropyRate).unwrap();
    let data = quadrants(3, 40);
    let (train, test) = (loader(&data, 8, true), loader(&data, 8, false));
    // 5 batches per epoch: epoch 1 is sound, the last step of epoch 2 breaks it.
    let mut t = BreaksAt { inner, from: 10 };
    let config = FitConfig::new(3, LrSchedule::Constant(0.1), RATE);
    let mut record = Record::default();
    let e = fit(&mut t, &train, Some(&test), &config, &mut record).unwrap_err();
    let TrainError::Diverged { epoch, step, loss } = e else {
        panic!("{e}");
    };
    assert!(!loss.is_finite());
    assert_eq!((epoch, step), (1, 10));
    assert_eq!(record.steps.len(), 10, "every step's own loss was finite");
    assert_eq!(record.epochs.len(), 1, "only the sound epoch was observed");
    assert!(record.epochs[0].test.unwrap().loss.is_finite());
}
