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

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use snn::codegen::Mode;
use snn::codegen::zoo;
use snn::data::download::{Dataset as Remote, data_dir};
use snn::data::encode::rate_encode_batch;
use snn::data::{Batch, ImageDataset, Loader, LoaderConfig, Mnist, Split};
use snn::nn::cpu::{CpuModel, CpuTrainer};
use snn::nn::models::{spiking_cnn, spiking_resnet};
use snn::nn::{ImageShape, Loss, Network, Optimizer, checkpoint, init_params};
use snn::runtime::nn::{GpuModel, GpuTrainer, ModelOptions};
use snn::runtime::staging::{Upload, Uploader};
use snn::runtime::{Device, DeviceTensor, encode};

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
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Train Spiking-ResNet18 instead of the small CNN.
    #[arg(long)]
    resnet18: bool,
    /// Use at most this many training images per epoch (quick runs).
    #[arg(long)]
    limit: Option<usize>,
    /// Train on the CPU even if there is a GPU.
    #[arg(long)]
    cpu: bool,
    /// Where to write the checkpoint.
    #[arg(long, default_value = "mnist.safetensors")]
    checkpoint: PathBuf,
}

/// Either trainer, behind one step function.
enum Trainer {
    Cpu(Box<CpuTrainer<f32>>),
    Gpu(Box<GpuTrainer>, Uploader),
}

const SEED: u64 = 0;

fn main() -> Result<()> {
    let args = Args::parse();
    if args.steps == 0 || args.batch == 0 {
        bail!("--steps and --batch must be at least 1");
    }
    let dir = Remote::Mnist.dir(&data_dir(args.data_dir.as_deref())?);
    let load = |split| {
        Mnist::load(&dir, split).with_context(|| {
            format!(
                "loading MNIST from {}; run `snn data download mnist` first",
                dir.display()
            )
        })
    };
    let (train, test) = (Arc::new(load(Split::Train)?), Arc::new(load(Split::Test)?));
    let lif = zoo::PaperLif::default();
    let channels = if args.resnet18 { 3 } else { 1 };
    let net = if args.resnet18 {
        spiking_resnet(18, ImageShape::new(3, 28, 28), 10, &lif)?
    } else {
        spiking_cnn(ImageShape::new(1, 28, 28), 16, 10, &lif)?
    };
    let params = init_params::<f32>(&net, SEED)?;
    let optimizer = Optimizer::adam(args.lr);
    let device = if args.cpu {
        None
    } else {
        Device::count()
            .ok()
            .filter(|&n| n > 0)
            .map(|_| Device::open(0))
            .transpose()?
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
    let mut trainer = match &device {
        Some(dev) => {
            println!("training {} on {}", net.name, dev.info.name);
            let model = GpuModel::new(dev, &net, &params, ModelOptions::default())?;
            let uploader = Uploader::new(dev, train_loader.max_batch_bytes() * channels)?;
            Trainer::Gpu(
                Box::new(GpuTrainer::new(model, optimizer, Loss::CrossEntropyRate)?),
                uploader,
            )
        }
        None => {
            println!("training {} on the CPU", net.name);
            let model = CpuModel::new(&net, params)?;
            Trainer::Cpu(Box::new(CpuTrainer::new(
                model,
                optimizer,
                Loss::CrossEntropyRate,
            )?))
        }
    };
    for epoch in 0..args.epochs {
        let batches = train_loader
            .num_batches()
            .min(args.limit.map_or(usize::MAX, |l| l.div_ceil(args.batch)));
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(ProgressStyle::with_template(
            "epoch {msg} [{elapsed_precise}] {bar:30} {pos}/{len} batches",
        )?);
        bar.set_message(format!("{}", epoch + 1));
        let (mut loss, mut correct, mut seen) = (0.0, 0, 0);
        for batch in train_loader.epoch(epoch).take(batches) {
            let batch = batch?;
            let stats = step(&mut trainer, &batch, channels, args.steps, args.lr)?;
            loss += stats.0 * batch.len() as f64;
            correct += stats.1;
            seen += batch.len();
            bar.inc(1);
        }
        bar.finish_and_clear();
        println!(
            "epoch {}: loss {:.4}, train accuracy {:.2}%",
            epoch + 1,
            loss / seen as f64,
            100.0 * correct as f64 / seen as f64
        );
    }
    let (mut correct, mut seen) = (0, 0);
    for batch in test_loader.epoch(0) {
        let batch = batch?;
        correct += evaluate(&mut trainer, &net, &batch, channels, args.steps)?;
        seen += batch.len();
    }
    println!(
        "test accuracy: {:.2}% ({correct}/{seen})",
        100.0 * correct as f64 / seen as f64
    );
    let ckpt = match &trainer {
        Trainer::Cpu(t) => t.checkpoint(args.epochs, Default::default()),
        Trainer::Gpu(t, _) => t.checkpoint(args.epochs, Default::default())?,
    };
    checkpoint::save(&args.checkpoint, &ckpt)?;
    println!("checkpoint: {}", args.checkpoint.display());
    Ok(())
}

/// The batch with each grey image repeated into 3 channels (for the ResNet stem), on the
/// host in `u8`: cheap, and both paths then encode the same pixels.
fn with_channels(batch: &Batch, channels: usize) -> Batch {
    if channels == 1 {
        return batch.clone();
    }
    let plane = 28 * 28;
    let data = batch
        .data
        .chunks_exact(plane)
        .flat_map(|img| std::iter::repeat_n(img, channels).flatten().copied())
        .collect();
    Batch {
        data,
        shape: vec![batch.len(), channels, 28, 28],
        ..batch.clone()
    }
}

/// Rate-coded input `[T, B, C, 28, 28]` on the host (the CPU path).
fn encode_host(batch: &Batch, channels: usize, steps: usize) -> Result<Vec<f32>> {
    let batch = with_channels(batch, channels);
    let unit = batch.unit();
    Ok(rate_encode_batch(
        &unit,
        channels * 28 * 28,
        &batch.indices,
        steps,
        SEED,
    )?)
}

/// Rate-coded input on the device: `u8` pixels uploaded, converted and encoded there.
fn encode_device(
    uploader: &mut Uploader,
    dev: &Arc<Device>,
    batch: &Batch,
    channels: usize,
    steps: usize,
) -> Result<DeviceTensor> {
    let up = with_channels(batch, channels).upload_images(uploader)?;
    Ok(encode::rate_encode(
        dev,
        &up.data,
        &up.samples,
        steps,
        SEED,
    )?)
}

fn labels(batch: &Batch) -> Vec<usize> {
    batch.labels.iter().map(|&l| usize::from(l)).collect()
}

fn step(
    trainer: &mut Trainer,
    batch: &Batch,
    channels: usize,
    steps: usize,
    lr: f64,
) -> Result<(f64, usize)> {
    let stats = match trainer {
        Trainer::Cpu(t) => {
            let x = encode_host(batch, channels, steps)?;
            t.step(&x, &labels(batch), steps, lr)?
        }
        Trainer::Gpu(t, uploader) => {
            let dev = t.device().clone();
            let x = encode_device(uploader, &dev, batch, channels, steps)?;
            t.step(&x, &labels(batch), steps, lr)?
        }
    };
    Ok((stats.loss, stats.correct))
}

/// Correct predictions on a batch, in inference mode.
fn evaluate(
    trainer: &mut Trainer,
    net: &Network,
    batch: &Batch,
    channels: usize,
    steps: usize,
) -> Result<usize> {
    let b = batch.len();
    let classes = net.output_shape().len();
    let output = match trainer {
        Trainer::Cpu(t) => {
            let x = encode_host(batch, channels, steps)?;
            t.model
                .forward(&x, steps, b, Mode::Inference)?
                .output()
                .to_vec()
        }
        Trainer::Gpu(t, uploader) => {
            let dev = t.device().clone();
            let x = encode_device(uploader, &dev, batch, channels, steps)?;
            let trace = t.model.forward(&x, steps, b, Mode::Inference)?;
            trace.output().context("no output")?.to_f32()?
        }
    };
    let predicted = |i: usize| {
        let mean = |k: usize| {
            (0..steps)
                .map(|t| output[(t * b + i) * classes + k])
                .sum::<f32>()
        };
        (0..classes).fold(0, |best, k| if mean(k) > mean(best) { k } else { best })
    };
    Ok((0..b)
        .filter(|&i| predicted(i) == usize::from(batch.labels[i]))
        .count())
}
