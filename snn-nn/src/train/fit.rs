//! The one epoch loop: training epochs over a loader with a learning-rate schedule,
//! evaluation on a test loader, an observer that sees every step and epoch and may stop
//! the run, and resumption where the trainer's optimizer left off.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use snn_data::{Batch, Dataset, Loader};

use crate::error::NnError;
use crate::optim::CosineSchedule;
use crate::train::{AsInput, RateCode, StepStats, TrainError, Trainer};

/// The learning rate of each step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    Constant(f64),
    Cosine(CosineSchedule),
}

impl LrSchedule {
    /// The rate of 0-based optimizer step `step`.
    pub fn lr(&self, step: u64) -> f64 {
        match self {
            LrSchedule::Constant(lr) => *lr,
            LrSchedule::Cosine(schedule) => schedule.lr(step),
        }
    }
}

/// What [`fit`] runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitConfig {
    /// Train until this many epochs are complete.
    pub epochs: u64,
    pub lr: LrSchedule,
    /// How image batches are encoded, for training and evaluation alike.
    pub rate: RateCode,
    /// At most this many batches per epoch (quick runs); `None`: all of them.
    pub max_batches: Option<usize>,
}

impl FitConfig {
    /// `epochs` whole epochs.
    pub fn new(epochs: u64, lr: LrSchedule, rate: RateCode) -> Self {
        Self {
            epochs,
            lr,
            rate,
            max_batches: None,
        }
    }
    /// The training steps of an epoch over a loader of `available` batches.
    pub fn batches(&self, available: usize) -> usize {
        self.max_batches.map_or(available, |m| m.min(available))
    }
}

/// One finished training step, as an [`Observer`] sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The epoch, counting from 0.
    pub epoch: u64,
    /// The batch within the epoch, counting from 0, of `batches`.
    pub batch: usize,
    pub batches: usize,
    /// Optimizer steps taken, this one included.
    pub steps_taken: u64,
    pub lr: f64,
    pub stats: StepStats,
}

/// The training steps of an epoch (those this call of [`fit`] ran, when it resumed in
/// the middle of one).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct TrainStats {
    /// The mean loss per sample.
    pub loss: f64,
    /// Samples predicted right, each before its step's update.
    pub correct: usize,
    pub samples: usize,
    /// Wall time on the host.
    pub time: Duration,
}

impl TrainStats {
    /// The fraction of samples predicted right.
    pub fn accuracy(&self) -> f64 {
        fraction(self.correct, self.samples)
    }
}

/// Predictions on a test loader.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Evaluation {
    /// The mean loss per sample.
    pub loss: f64,
    pub correct: usize,
    pub samples: usize,
    /// Wall time on the host.
    pub time: Duration,
}

impl Evaluation {
    /// The fraction of samples predicted right.
    pub fn accuracy(&self) -> f64 {
        fraction(self.correct, self.samples)
    }
}

fn fraction(correct: usize, samples: usize) -> f64 {
    if samples == 0 {
        return 0.0;
    }
    correct as f64 / samples as f64
}

/// One finished epoch, as an [`Observer`] sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochReport {
    /// The epoch, counting from 0.
    pub epoch: u64,
    pub train: TrainStats,
    /// On the test loader, when [`fit`] was given one.
    pub test: Option<Evaluation>,
}

/// What an [`Observer`] tells [`fit`]: go on (`Ok(Continue(()))`), stop there
/// (`Ok(Break(()))`: Ctrl-C, early stopping), or fail (a checkpoint it could not write).
pub type Flow = Result<ControlFlow<()>, TrainError>;

/// Watches [`fit`]: progress, metrics, checkpoints, and when to stop. Every method does
/// nothing and continues unless implemented; `()` is the observer that watches nothing.
pub trait Observer {
    /// Before epoch `epoch`'s `batches` training steps.
    fn epoch_start(&mut self, epoch: u64, batches: usize) {
        let _ = (epoch, batches);
    }

    /// After each training step; `Break` stops [`fit`] there (the trainer keeps the
    /// step's update, and a checkpoint of it resumes after it).
    fn step(&mut self, report: &StepReport) -> Flow {
        let _ = report;
        Ok(ControlFlow::Continue(()))
    }

    /// After each epoch's training and evaluation, with the trainer (to save checkpoints);
    /// `Break` stops [`fit`] there.
    fn epoch_end(&mut self, trainer: &dyn Trainer, report: &EpochReport) -> Flow {
        let _ = (trainer, report);
        Ok(ControlFlow::Continue(()))
    }
}

impl Observer for () {}

/// Trains `trainer` on `train` until `config.epochs` epochs are complete, evaluating on
/// `test` after each epoch and telling `observer` about every step and epoch.
///
/// It continues where the trainer's optimizer is: after `k` steps taken (a checkpoint's),
/// at batch `k % n` of epoch `k / n` with `n` batches per epoch, at the schedule's step
/// `k`. The loaders' orders depend only on the seed and the epoch, so a run stopped and
/// resumed with the same loaders and `config` takes the same steps as one that was not.
/// A training or test loss that is not finite stops it with [`TrainError::Diverged`]
/// (before the epoch's end reaches the observer).
pub fn fit<D>(
    trainer: &mut dyn Trainer,
    train: &Loader<D>,
    test: Option<&Loader<D>>,
    config: &FitConfig,
    observer: &mut dyn Observer,
) -> Result<(), TrainError>
where
    D: Dataset,
    Batch<D::Elem>: AsInput,
{
    let batches = config.batches(train.num_batches());
    if batches == 0 {
        return Err(NnError::Config(
            "the training loader has no batch: give it samples (and a max_batches of at least 1)"
                .into(),
        )
        .into());
    }
    let per_epoch = batches as u64;
    let mut step = trainer.steps_taken();
    // Below `batches`, a usize.
    let mut skip = (step % per_epoch) as usize;
    for epoch in step / per_epoch..config.epochs {
        observer.epoch_start(epoch, batches - skip);
        let started = Instant::now();
        let (mut loss, mut correct, mut samples) = (0.0, 0, 0);
        // Skipped batches are still read: only a resumed run's first epoch skips any.
        for (i, batch) in train.epoch(epoch).enumerate().take(batches).skip(skip) {
            let batch = batch?;
            let lr = config.lr.lr(step);
            let stats = trainer.train_batch(batch.as_input(config.rate), lr)?;
            step += 1;
            if !stats.loss.is_finite() {
                return Err(TrainError::Diverged {
                    epoch,
                    step,
                    loss: stats.loss,
                });
            }
            loss += stats.loss * stats.batch as f64;
            correct += stats.correct;
            samples += stats.batch;
            let report = StepReport {
                epoch,
                batch: i,
                batches,
                steps_taken: step,
                lr,
                stats,
            };
            if observer.step(&report)?.is_break() {
                return Ok(());
            }
        }
        skip = 0;
        let train = TrainStats {
            loss: loss / samples.max(1) as f64,
            correct,
            samples,
            time: started.elapsed(),
        };
        let test = test
            .map(|t| evaluate(trainer, t, config.rate))
            .transpose()?;
        // The last step's loss was finite, but its update may not have been: a test loss
        // that is not stops the run before the parameters reach a checkpoint.
        if let Some(t) = test.filter(|t| !t.loss.is_finite()) {
            return Err(TrainError::Diverged {
                epoch,
                step,
                loss: t.loss,
            });
        }
        let report = EpochReport { epoch, train, test };
        if observer.epoch_end(trainer, &report)?.is_break() {
            return Ok(());
        }
    }
    Ok(())
}

/// Predicts every sample of `test` (its epoch 0, in inference mode) and counts those
/// predicted right; images are encoded by `rate`.
pub fn evaluate<D>(
    trainer: &mut dyn Trainer,
    test: &Loader<D>,
    rate: RateCode,
) -> Result<Evaluation, TrainError>
where
    D: Dataset,
    Batch<D::Elem>: AsInput,
{
    let started = Instant::now();
    let (mut loss, mut correct, mut samples) = (0.0, 0, 0);
    for batch in test.epoch(0) {
        let stats = trainer.test_batch(batch?.as_input(rate))?;
        loss += stats.loss * stats.batch as f64;
        correct += stats.correct;
        samples += stats.batch;
    }
    Ok(Evaluation {
        loss: loss / samples.max(1) as f64,
        correct,
        samples,
        time: started.elapsed(),
    })
}
