//! `snn bench train`: one training iteration of a Spiking-ResNet on a GPU.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use snn::codegen::zoo;
use snn::nn::ImageShape;
use snn::nn::models::spiking_resnet;
use snn::runtime::Device;
use snn::runtime::bench::{self, TrainBench};
use snn::runtime::nn::{ConvMath, ModelOptions};

use super::train::StorageArg;

/// What `snn bench train --help` prints after the options.
pub const TRAIN_AFTER_HELP: &str = "\
Times one training iteration (forward, cross-entropy of the time-averaged logits, backward
through time and layers, Adam) of Spiking-ResNets on synthetic rate-coded 3x32x32 input
(spikes drawn once on the GPU from random intensities; random labels). Times are
CUDA-event medians over --repeats iterations after a warm-up that also lets cuDNN choose
its algorithms.

Columns:
  network      Spiking-ResNet depth and neuron
  T, B         time steps and batch size
  iter ms      one training iteration
  fwd ms       the forward pass alone (training mode)
  peak GiB     the most device memory held at once by tensors during the timed
               iterations (parameters, gradients, Adam state, activations, workspaces),
               counted as PyTorch's max_memory_allocated counts
  reserved     the most memory the pool held from the driver (with its cache)

Anchor (measured by the snn project on one H100, 2026-11): PyTorch 2.11 + the paper's fused LIF kernel, ResNet18,
T = 32, B = 100: 21.1 ms per iteration, 2.13 GiB peak.

Example:
  snn bench train --depth 18,34,50 --steps 32 --batch 100";

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Spiking-ResNet depths to time (18, 34, 50; comma-separated).
    #[arg(long, value_name = "D,..", value_delimiter = ',', default_value = "18")]
    depth: Vec<usize>,
    /// Time steps T.
    #[arg(long, value_name = "T", default_value_t = 32)]
    steps: usize,
    /// Batch size B.
    #[arg(long, value_name = "B", default_value_t = 100)]
    batch: usize,
    /// The neuron after every batch-norm (a zoo name).
    #[arg(long, value_name = "NAME", default_value = "paper_lif")]
    neuron: String,
    /// Activations in f32, or narrow: bf16 up to the classifier (bf16 convolutions with
    /// f32 accumulation, neurons in narrow storage; f32 weights, Adam state and loss).
    #[arg(long, value_enum, default_value_t = StorageArg::F32)]
    storage: StorageArg,
    /// Convolution arithmetic with f32 storage: `tf32` (PyTorch's default for cuDNN) or
    /// `f32` [default: tf32].
    #[arg(long, value_enum)]
    conv_math: Option<MathArg>,
    /// Timed iterations (the median is reported).
    #[arg(long, value_name = "K", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    repeats: u64,
    /// Only deterministic convolution algorithms (bit-reproducible gradients); by default
    /// the fastest, as PyTorch's default.
    #[arg(long)]
    deterministic: bool,
    /// Run batch-norm and residual adds as layers of their own instead of inside the
    /// neuron kernels (to measure what fusion saves).
    #[arg(long)]
    no_fuse: bool,
    /// The most workspace a convolution algorithm may use, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    conv_workspace: usize,
    /// Also time every layer (CUDA events around each node, in separate iterations) and
    /// print the forward and backward ms per layer kind.
    #[arg(long)]
    profile: bool,
    /// CUDA device ordinal.
    #[arg(long, value_name = "ORDINAL", default_value_t = 0)]
    device: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum MathArg {
    Tf32,
    F32,
}

const ANCHOR_MS: f64 = 21.1;
const ANCHOR_GIB: f64 = 2.13;

pub fn train(args: TrainArgs) -> Result<()> {
    if args.steps == 0 || args.batch == 0 {
        bail!("--steps and --batch must be at least 1");
    }
    let Some(neuron) = zoo::by_name(&args.neuron) else {
        bail!(
            "unknown neuron `{}`; known neurons: {}",
            args.neuron,
            zoo::NAMES.join(", ")
        );
    };
    let nets = args
        .depth
        .iter()
        .map(|&d| spiking_resnet(d, ImageShape::new(3, 32, 32), 10, neuron.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let repeats = usize::try_from(args.repeats).context("--repeats is too large")?;
    let conv_math = match (args.storage, args.conv_math) {
        (StorageArg::F32, None | Some(MathArg::Tf32)) => ConvMath::Tf32,
        (StorageArg::F32, Some(MathArg::F32)) => ConvMath::F32,
        (StorageArg::Narrow, None) => ConvMath::Bf16,
        (StorageArg::Narrow, Some(_)) => {
            bail!("--conv-math is for f32 storage; narrow storage convolves in bf16")
        }
    };
    let options = ModelOptions {
        conv_math,
        deterministic: args.deterministic,
        conv_workspace: args
            .conv_workspace
            .checked_mul(1 << 20)
            .context("--conv-workspace is too large")?,
        keep_activations: false,
        fuse: !args.no_fuse,
    };
    let dev = Device::open(args.device)
        .with_context(|| format!("opening CUDA device {}", args.device))?;
    println!(
        "device {}: {}; convolutions: {:?}{}; neuron: {}; repeats: {repeats} (median)\n",
        dev.info.ordinal,
        dev.info.name,
        options.conv_math,
        if options.deterministic {
            ", deterministic"
        } else {
            ""
        },
        args.neuron
    );
    println!("{}", header());
    let progress = ProgressBar::new((nets.len() * repeats) as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .context("progress bar template")?,
    );
    let mut results = Vec::new();
    for net in &nets {
        progress.set_message(format!("{} (warming up)", net.name));
        let r = bench::train(
            &dev,
            net,
            args.steps,
            args.batch,
            repeats,
            options,
            0,
            args.profile,
            &|_| progress.inc(1),
        )
        .inspect_err(|_| progress.finish_and_clear())
        .with_context(|| format!("benchmarking {}", net.name))?;
        dev.release_cached_memory();
        progress.suspend(|| {
            println!("{}", row(&r, &args.neuron));
            if !r.breakdown.is_empty() {
                print!("{}", breakdown(&r));
            }
        });
        results.push(r);
    }
    progress.finish_and_clear();
    println!(
        "\nAnchor (measured by the snn project on one H100, 2026-11): PyTorch 2.11 + the paper's LIF kernel, ResNet18, T = 32, B = 100: {ANCHOR_MS} ms, {ANCHOR_GIB} GiB peak"
    );
    if let Some(r) = results
        .iter()
        .find(|r| r.network == "spiking_resnet18" && r.steps == 32 && r.batch == 100)
    {
        println!(
            "this run: {:.2} ms ({:.2}x the anchor's time), {:.2} GiB peak",
            r.iteration_ms,
            r.iteration_ms / ANCHOR_MS,
            gib(r.peak_bytes)
        );
    }
    Ok(())
}

/// Per layer kind: forward and backward ms of one iteration, and what is left of the
/// iteration (loss, optimizer, launch gaps).
fn breakdown(r: &TrainBench) -> String {
    let mut s = format!("  {:<20} {:>8} {:>8}\n", "layer kind", "fwd ms", "bwd ms");
    let (mut f, mut b) = (0.0, 0.0);
    for t in &r.breakdown {
        s += &format!(
            "  {:<20} {:>8.3} {:>8.3}\n",
            t.kind, t.forward_ms, t.backward_ms
        );
        f += t.forward_ms;
        b += t.backward_ms;
    }
    s += &format!("  {:<20} {:>8.3} {:>8.3}\n", "all layers", f, b);
    s += &format!(
        "  {:<20} {:>8.3}   (loss, optimizer, gaps: iteration - layers)\n",
        "rest",
        r.iteration_ms - f - b
    );
    if let Some((name, bytes)) = r
        .nodes
        .iter()
        .flat_map(|t| {
            [
                (format!("{} (forward)", t.name), t.forward_bytes),
                (format!("{} (backward)", t.name), t.backward_bytes),
            ]
        })
        .max_by_key(|(_, b)| *b)
    {
        s += &format!(
            "  most memory in use: {:.3} GiB, after {name}; of it: model {:.3}, saved for the backward {:.3}, convolution workspace {:.3}\n",
            gib(bytes),
            gib(r.model_bytes),
            gib(r.trace_bytes),
            gib(r.workspace_bytes)
        );
    }
    s += "  per layer:\n";
    for t in r
        .nodes
        .iter()
        .filter(|t| t.forward_ms + t.backward_ms > 0.0)
    {
        s += &format!(
            "  {:<28} {:<14} {:>8.3} {:>8.3}\n",
            t.name, t.kind, t.forward_ms, t.backward_ms
        );
    }
    s
}

fn gib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn header() -> String {
    format!(
        "{:<30} {:>4} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "network", "T", "B", "iter ms", "fwd ms", "peak GiB", "reserved"
    )
}

fn row(r: &TrainBench, neuron: &str) -> String {
    format!(
        "{:<30} {:>4} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        format!("{} ({neuron})", r.network),
        r.steps,
        r.batch,
        r.iteration_ms,
        r.forward_ms,
        gib(r.peak_bytes),
        gib(r.reserved_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_line_up_with_the_header() {
        let r = TrainBench {
            network: "spiking_resnet18".into(),
            steps: 32,
            batch: 100,
            iteration_ms: 13.5,
            forward_ms: 4.2,
            peak_bytes: 2 << 30,
            reserved_bytes: 3 << 30,
            trace_bytes: 1 << 30,
            workspace_bytes: 1 << 28,
            model_bytes: 1 << 27,
            breakdown: vec![],
            nodes: vec![],
        };
        assert_eq!(header().len(), row(&r, "paper_lif").len());
    }
}
