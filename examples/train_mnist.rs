//! Trains a spiking network on MNIST with rate-coded input: the small spiking CNN by
//! default, or Spiking-ResNet18 (grey images expanded to 3 channels, as the paper does).
//! Runs on GPU 0 when there is one (batches uploaded through pinned buffers, encoded on
//! the GPU), else on the CPU reference (`--cpu` forces it). Prints the loss and accuracy
//! per epoch, evaluates on the test split, and writes a checkpoint that PyTorch can load.
//!
//! ```sh
//! snn data download mnist
//! cargo run --release --example train_mnist -- --epochs 1
//! cargo run --release --example train_mnist -- --resnet18 --steps 8 --batch 100
//! ```

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use snn::codegen::zoo;
use snn::data::download::{Dataset as Remote, data_dir};
use snn::data::{DataError, ImageDataset, Loader, LoaderConfig, Mnist, Split};
use snn::nn::checkpoint::{self, Checkpoint};
use snn::nn::models::{spiking_cnn, spiking_resnet};
use snn::nn::train::{
    EpochReport, FitConfig, Flow, LrSchedule, Observer, RateCode, StepReport, evaluate, fit,
};
use snn::nn::{ImageShape, Loss, Optimizer, Trainer, init_params};
use snn::runtime::nn::{Backend, ModelOptions};

#[derive(Debug, Parser)]
#[command(about = "Train a spiking network on MNIST (see the example's docs)")]
struct Args {
    /// The data directory (default: SNN_DATA_DIR, else the user's data directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    epochs: u64,
    /// Time steps per image.
    #[arg(long, default_value_t = 8)]
    steps: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Adam's learning rate (the paper's 1e-3).
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true, value_parser = positive)]
    lr: f64,
    /// Train Spiking-ResNet18 instead of the small CNN.
    #[arg(long)]
    resnet18: bool,
    /// Use at most this many training images per epoch (quick runs; at least 1).
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Train on the CPU even if there is a GPU.
    #[arg(long)]
    cpu: bool,
    /// Where to write the checkpoint.
    #[arg(long, default_value = "mnist.safetensors")]
    checkpoint: PathBuf,
}

const SEED: u64 = 0;

/// A positive, finite number.
fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{text}` is not a positive number")),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.steps == 0 || args.batch == 0 {
        bail!("--steps and --batch must be at least 1");
    }
    let dir = Remote::Mnist.dir(&data_dir(args.data_dir.as_deref())?);
    let load = |split| {
        Mnist::load(&dir, split).map_err(|e| {
            let missing = matches!(e, DataError::Missing { .. });
            let hint = format!("loading MNIST from {}", dir.display());
            let hint = if missing {
                format!("{hint}; run `snn data download mnist` first")
            } else {
                hint
            };
            anyhow::Error::new(e).context(hint)
        })
    };
    let (train, test) = (Arc::new(load(Split::Train)?), Arc::new(load(Split::Test)?));
    let lif = zoo::PaperLif::default();
    let net = if args.resnet18 {
        spiking_resnet(18, ImageShape::new(3, 28, 28), 10, &lif)?
    } else {
        spiking_cnn(ImageShape::new(1, 28, 28), 16, 10, &lif)?
    };
    let loader = |data: &Arc<ImageDataset>, shuffle| {
        Loader::new(
            data.clone(),
            LoaderConfig {
                batch_size: args.batch,
                shuffle,
                seed: SEED,
                ..LoaderConfig::default()
            },
        )
    };
    let (train_loader, test_loader) = (loader(&train, true)?, loader(&test, false)?);
    let backend = if args.cpu {
        Backend::Cpu
    } else {
        Backend::auto(ModelOptions::default())?
    };
    let start = Checkpoint::fresh(init_params(&net, SEED)?);
    let optimizer = Optimizer::adam(args.lr);
    let mut trainer = backend.trainer(&net, &start, optimizer, Loss::CrossEntropyRate, None)?;
    println!("training {} on {}", net.name, trainer.device_name());
    let rate = RateCode {
        steps: args.steps,
        seed: SEED,
    };
    let config = FitConfig {
        max_batches: args.limit.map(|l| (l as usize).div_ceil(args.batch)),
        ..FitConfig::new(args.epochs, LrSchedule::Constant(args.lr), rate)
    };
    let mut progress = Progress {
        style: ProgressStyle::with_template(
            "epoch {msg} [{elapsed_precise}] {bar:30} {pos}/{len} batches",
        )?,
        bar: ProgressBar::hidden(),
    };
    fit(&mut *trainer, &train_loader, None, &config, &mut progress)?;
    let test = evaluate(&mut *trainer, &test_loader, rate)?;
    println!(
        "test accuracy: {:.2}% ({}/{})",
        100.0 * test.accuracy(),
        test.correct,
        test.samples
    );
    checkpoint::save(
        &args.checkpoint,
        &trainer.checkpoint(args.epochs, Default::default())?,
    )?;
    println!("checkpoint: {}", args.checkpoint.display());
    Ok(())
}

/// A progress bar per epoch, then its loss and accuracy.
struct Progress {
    style: ProgressStyle,
    bar: ProgressBar,
}

impl Observer for Progress {
    fn epoch_start(&mut self, epoch: u64, batches: usize) {
        self.bar = ProgressBar::new(batches as u64).with_style(self.style.clone());
        self.bar.set_message(format!("{}", epoch + 1));
    }

    fn step(&mut self, _: &StepReport) -> Flow {
        self.bar.inc(1);
        Ok(ControlFlow::Continue(()))
    }

    fn epoch_end(&mut self, _: &dyn Trainer, report: &EpochReport) -> Flow {
        self.bar.finish_and_clear();
        println!(
            "epoch {}: loss {:.4}, train accuracy {:.2}%",
            report.epoch + 1,
            report.train.loss,
            100.0 * report.train.accuracy()
        );
        Ok(ControlFlow::Continue(()))
    }
}
