//! What a run shows and keeps while it trains: a progress bar per epoch on stderr, one
//! line per epoch on stdout, `metrics.jsonl`, and the `last` and `best` checkpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use snn::nn::checkpoint;
use snn::nn::train::{EpochReport, Flow, Observer, StepReport, TrainError};
use snn::nn::{NnError, Trainer};

/// The observer of `snn train`.
#[derive(Debug)]
pub struct RunObserver {
    out: PathBuf,
    epochs: u64,
    /// The checkpoint metadata (the run's config).
    metadata: BTreeMap<String, String>,
    /// Set by Ctrl-C: finish the current step, then stop.
    interrupted: Arc<AtomicBool>,
    /// The best test accuracy so far (that of `best.safetensors`).
    pub best: Option<f64>,
    /// Optimizer steps when the run stopped (for the message after Ctrl-C).
    pub stopped_at: Option<u64>,
    metrics: File,
    bar: ProgressBar,
    epoch_started: Instant,
    samples: usize,
    loss_sum: f64,
    correct: usize,
    /// The trainer's warnings already printed (each is printed once).
    warned: BTreeSet<String>,
}

impl RunObserver {
    /// Appends to `out/metrics.jsonl`.
    pub fn new(
        out: &Path,
        epochs: u64,
        metadata: BTreeMap<String, String>,
        interrupted: Arc<AtomicBool>,
    ) -> Result<Self, std::io::Error> {
        let metrics = OpenOptions::new()
            .create(true)
            .append(true)
            .open(out.join("metrics.jsonl"))?;
        Ok(Self {
            out: out.to_path_buf(),
            epochs,
            metadata,
            interrupted,
            best: None,
            stopped_at: None,
            metrics,
            bar: ProgressBar::hidden(),
            epoch_started: Instant::now(),
            samples: 0,
            loss_sum: 0.0,
            correct: 0,
            warned: BTreeSet::new(),
        })
    }

    /// One JSON object as a line of `metrics.jsonl`.
    pub fn record(&mut self, value: &serde_json::Value) -> Result<(), TrainError> {
        writeln!(self.metrics, "{value}")
            .and_then(|()| self.metrics.flush())
            .map_err(|e| io_error(&self.out.join("metrics.jsonl"), e))
    }

    /// Saves `trainer` as `out/<name>.safetensors` (atomically).
    pub fn save(&self, trainer: &dyn Trainer, name: &str, epoch: u64) -> Result<(), TrainError> {
        let ckpt = trainer.checkpoint(epoch, self.metadata.clone())?;
        checkpoint::save(&self.out.join(format!("{name}.safetensors")), &ckpt)?;
        Ok(())
    }
}

fn io_error(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Nn(NnError::Run(format!(
        "cannot write {}: {e}",
        path.display()
    )))
}

impl Observer for RunObserver {
    fn epoch_start(&mut self, epoch: u64, batches: usize) {
        let style = ProgressStyle::with_template(
            "epoch {prefix} {bar:25} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        self.bar = ProgressBar::new(batches as u64).with_style(style);
        self.bar
            .set_prefix(format!("{}/{}", epoch + 1, self.epochs));
        self.epoch_started = Instant::now();
        (self.samples, self.loss_sum, self.correct) = (0, 0.0, 0);
    }

    fn step(&mut self, report: &StepReport) -> Flow {
        let s = &report.stats;
        self.samples += s.batch;
        self.loss_sum += s.loss * s.batch as f64;
        self.correct += s.correct;
        let n = self.samples.max(1) as f64;
        let rate = self.samples as f64 / self.epoch_started.elapsed().as_secs_f64().max(1e-9);
        self.bar.set_message(format!(
            "loss {:.4} acc {:.1}% {rate:.0} samples/s",
            self.loss_sum / n,
            100.0 * self.correct as f64 / n
        ));
        self.bar.inc(1);
        if self.interrupted.load(Ordering::SeqCst) {
            self.bar.abandon();
            self.stopped_at = Some(report.steps_taken);
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    }

    fn epoch_end(&mut self, trainer: &dyn Trainer, report: &EpochReport) -> Flow {
        self.bar.finish_and_clear();
        for w in trainer.warnings() {
            if self.warned.insert(w.clone()) {
                eprintln!("warning: {w}");
            }
        }
        let epoch = report.epoch + 1;
        let train = &report.train;
        let test = report.test.unwrap_or_default();
        println!(
            "epoch {epoch}/{}: train {:.2} s, test {:.2} s, loss {:.4}, train accuracy {:.2}%, \
             test loss {:.4}, test accuracy {:.2}%",
            self.epochs,
            train.time.as_secs_f64(),
            test.time.as_secs_f64(),
            train.loss,
            100.0 * train.accuracy(),
            test.loss,
            100.0 * test.accuracy()
        );
        self.record(&json!({
            "epoch": epoch,
            "steps": trainer.steps_taken(),
            "train_seconds": train.time.as_secs_f64(),
            "test_seconds": test.time.as_secs_f64(),
            "train_loss": train.loss,
            "train_accuracy": train.accuracy(),
            "train_samples": train.samples,
            "test_loss": test.loss,
            "test_accuracy": test.accuracy(),
            "test_samples": test.samples,
        }))?;
        self.save(trainer, "last", epoch)?;
        if self.best.is_none_or(|b| test.accuracy() > b) {
            self.best = Some(test.accuracy());
            self.save(trainer, "best", epoch)?;
        }
        if self.interrupted.load(Ordering::SeqCst) {
            self.stopped_at = Some(trainer.steps_taken());
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    }
}
