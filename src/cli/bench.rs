//! `snn bench`: timings on a GPU, read against the card's own copy bandwidth.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use snn::codegen::Layout;
use snn::codegen::cuda::{KernelOptions, Reduction};
use snn::codegen::{Dtype, Storage, zoo};
use snn::runtime::bench::{self, NeuronBench};
use snn::runtime::{Device, LayerConfig};

use super::anchors;

/// What `snn bench neuron --help` prints after the options.
const NEURON_AFTER_HELP: &str = "\
Prints the device, the bandwidth of a device-to-device copy measured first (the practical
ceiling), then one row per neuron and T. Times are CUDA-event medians over --repeats runs
after a warm-up; every parameter is a single scalar (as in the paper's kernel).

Columns:
  neuron       zoo neuron, with its default parameters
  T            time steps, all run inside one kernel launch
  N            elements (neurons) per time step
  fwd ms       forward (training) kernel: writes outputs and the memory plan's saves
  fwd+bwd ms   forward (training) then backward through time: one training step's share
  B/el fwd     bytes per element-step the forward (training) must move (memory plan)
  B/el train   bytes per element-step of forward + backward (memory plan)
  fwd GB/s     B/el fwd * T * N / fwd ms
  train GB/s   B/el train * T * N / fwd+bwd ms
  % copy       train GB/s as a percent of the measured copy bandwidth

Then the paper LIF beside other implementations measured on the same kind of card (the
anchors of an H100 and an H200; none on other cards).

Example:
  snn bench neuron --neuron paper_lif,lif --steps 32 --elements 2097152 --storage f32";

/// GPU benchmarks.
#[derive(Debug, Subcommand)]
pub enum Bench {
    /// Time the fused kernels of zoo neurons (forward, forward + backward) and compare their
    /// bandwidth with a device copy.
    #[command(after_help = NEURON_AFTER_HELP)]
    Neuron(NeuronArgs),
    /// Time one training iteration of Spiking-ResNet18/34/50 (forward, loss, backward,
    /// Adam) and its peak memory.
    #[command(after_help = super::bench_train::TRAIN_AFTER_HELP)]
    Train(super::bench_train::TrainArgs),
    /// Time one neuron layer with its time steps split over several GPUs (the paper's
    /// MultiGPUTest, forward and backward): speedup, hand-off time and the best GPU count;
    /// then Spiking-ResNet18 training split by batch and by time.
    #[command(name = "multi-gpu", after_help = super::bench_multi::MULTI_AFTER_HELP)]
    MultiGpu(super::bench_multi::MultiArgs),
}

#[derive(Debug, Args)]
pub struct NeuronArgs {
    #[arg(
        long = "neuron",
        value_name = "NAME",
        value_delimiter = ',',
        value_parser = parse_neuron,
        help = neuron_help()
    )]
    neurons: Vec<String>,
    /// Time steps T to run (comma-separated).
    #[arg(
        long,
        value_name = "T,..",
        value_delimiter = ',',
        default_value = "8,32,128"
    )]
    steps: Vec<usize>,
    /// Elements N per time step (2^21 = 2097152 is the paper's size).
    #[arg(long, value_name = "N", default_value_t = 1 << 21, value_parser = at_least_one, allow_negative_numbers = true)]
    elements: usize,
    /// How tensors are stored: `f32` everywhere, or `narrow` (bf16 inputs, outputs,
    /// gradients and saves; u8 spikes).
    #[arg(long, value_enum, default_value_t = StorageArg::F32)]
    storage: StorageArg,
    /// How parameter gradients are summed: `atomic` (one pass) or `deterministic`
    /// (per-element partials, then a fixed-order reduction; bit-reproducible).
    #[arg(long, value_enum, default_value_t = ReductionArg::Atomic)]
    reduction: ReductionArg,
    /// Timed runs per measurement (the median is reported).
    #[arg(long, value_name = "K", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    repeats: u64,
    /// CUDA device ordinal.
    #[arg(long, value_name = "ORDINAL", default_value_t = 0)]
    device: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StorageArg {
    /// f32 inputs, outputs, spikes, gradients and saves.
    F32,
    /// bf16 inputs, outputs, gradients and saves; spikes in a byte (u8, i8 for ternary).
    Narrow,
}

impl StorageArg {
    fn storage(self) -> Storage {
        match self {
            StorageArg::F32 => Storage::F32,
            StorageArg::Narrow => Storage {
                io: Dtype::BF16,
                spikes: Dtype::U8,
                saves: Dtype::BF16,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ReductionArg {
    /// Warp and block sums, then atomics.
    Atomic,
    /// Per-element partials and a fixed-order reduction kernel.
    Deterministic,
}

fn neuron_help() -> String {
    format!(
        "Neurons to time (repeat or comma-separate; default: all): {}",
        zoo::NAMES.join(", ")
    )
}

/// A count of at least 1 (a negative or zero one is named as such, not taken for a flag).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<i128>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|_| format!("{text} is too large")),
        Ok(_) => Err(format!("{text} is not at least 1")),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// Checks a name at parse time, so a typo fails before any GPU work starts.
pub fn parse_neuron(name: &str) -> Result<String, String> {
    if zoo::by_name(name).is_some() {
        Ok(name.to_string())
    } else {
        Err(format!(
            "unknown neuron `{name}`; known neurons: {}",
            zoo::NAMES.join(", ")
        ))
    }
}

pub fn run(bench: Bench) -> Result<()> {
    match bench {
        Bench::Neuron(args) => neuron(args),
        Bench::Train(args) => super::bench_train::train(args),
        Bench::MultiGpu(args) => super::bench_multi::multi_gpu(args),
    }
}

/// The problem the neuron anchors time ([`anchors`]): N = 2^21, and the f32 floor of 24
/// bytes per element-step.
const ANCHOR_N: usize = 1 << 21;
const FLOOR_BYTES: usize = 24;

fn neuron(args: NeuronArgs) -> Result<()> {
    let names = if args.neurons.is_empty() {
        zoo::NAMES.map(String::from).to_vec()
    } else {
        args.neurons.clone()
    };
    if args.steps.contains(&0) || args.elements == 0 {
        bail!("--steps and --elements must be at least 1");
    }
    let repeats = usize::try_from(args.repeats).context("--repeats is too large")?;
    let storage = args.storage.storage();
    let config = LayerConfig {
        storage,
        // One channel: every param is a single scalar, as in the kernels the anchors time.
        layout: Layout {
            channels: 1,
            inner: 1,
        },
        options: KernelOptions {
            reduction: match args.reduction {
                ReductionArg::Atomic => Reduction::Atomic,
                ReductionArg::Deterministic => Reduction::Deterministic,
            },
            ..KernelOptions::default()
        },
    };

    let dev = Device::open(args.device)
        .with_context(|| format!("opening CUDA device {}", args.device))?;
    let info = &dev.info;
    println!(
        "device {}: {} (compute capability {}.{}, {} SMs, {:.1} GiB)",
        info.ordinal,
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        info.multiprocessors,
        info.total_memory as f64 / (1u64 << 30) as f64
    );
    println!(
        "storage: {storage}; param-gradient reduction: {:?}; repeats: {repeats} (median)",
        config.options.reduction
    );

    let max_steps = args.steps.iter().copied().max().unwrap_or(1);
    let largest = max_steps
        .checked_mul(args.elements)
        .and_then(|c| c.checked_mul(4))
        .context("T * N is too large")?;
    let copy_bytes = largest.max(1 << 30);

    let progress = ProgressBar::new((1 + names.len() * args.steps.len()) as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .context("progress bar template")?,
    );
    progress.set_message(format!("device copy of {}", human_bytes(copy_bytes)));
    let copy = bench::copy_bandwidth(&dev, copy_bytes, repeats)
        .inspect_err(|_| progress.finish_and_clear())
        .with_context(|| format!("timing a device copy of {copy_bytes} bytes"))?;
    progress.inc(1);
    progress.suspend(|| {
        println!(
            "device copy: {copy:.0} GB/s (read + write, {} buffer)\n",
            human_bytes(copy_bytes)
        );
        println!("{}", header());
    });

    let results = run_neurons(&dev, &names, &args, config, repeats, copy, &progress);
    // A failure leaves no half-drawn bar above the error message.
    progress.finish_and_clear();
    let results = results?;
    println!();
    print!("{}", footer(&results, storage, copy, &dev.info.name));
    Ok(())
}

/// Times every neuron at every T, printing each row as it completes (a later failure, say
/// out of memory at the largest T, keeps the rows already measured).
fn run_neurons(
    dev: &std::sync::Arc<Device>,
    names: &[String],
    args: &NeuronArgs,
    config: LayerConfig,
    repeats: usize,
    copy: f64,
    progress: &ProgressBar,
) -> Result<Vec<NeuronBench>> {
    let mut results = Vec::new();
    for name in names {
        let Some(model) = zoo::by_name(name) else {
            bail!(
                "unknown neuron `{name}`; known neurons: {}",
                zoo::NAMES.join(", ")
            );
        };
        for &steps in &args.steps {
            progress.set_message(format!("{name}, T = {steps}"));
            let r = bench::neuron(dev, model.as_ref(), config, steps, args.elements, repeats)
                .with_context(|| {
                    format!(
                        "benchmarking `{name}` at T = {steps}, N = {}",
                        args.elements
                    )
                })?;
            progress.inc(1);
            progress.suspend(|| println!("{}", row(&r, copy)));
            results.push(r);
        }
    }
    Ok(results)
}

fn header() -> String {
    format!(
        "{:<18} {:>4} {:>9} {:>9} {:>11} {:>8} {:>10} {:>9} {:>10} {:>7}",
        "neuron",
        "T",
        "N",
        "fwd ms",
        "fwd+bwd ms",
        "B/el fwd",
        "B/el train",
        "fwd GB/s",
        "train GB/s",
        "% copy"
    )
}

fn row(r: &NeuronBench, copy_gbps: f64) -> String {
    let (fwd_b, train_b) = r.bytes_per_element_step();
    format!(
        "{:<18} {:>4} {:>9} {:>9.3} {:>11.3} {:>8} {:>10} {:>9.0} {:>10.0} {:>6.1}%",
        r.name,
        r.steps,
        r.n,
        r.forward_ms,
        r.train_ms,
        fwd_b,
        train_b,
        r.forward_gbps,
        r.train_gbps,
        100.0 * r.train_gbps / copy_gbps
    )
}

/// The anchors of `device`'s card at this run's T (paper LIF, f32, N = 2^21), the f32
/// floor at this run's copy bandwidth, and this run's paper LIF beside them.
fn footer(results: &[NeuronBench], storage: Storage, copy_gbps: f64, device: &str) -> String {
    let Some(card) = anchors::for_device(device) else {
        return anchors::none_for(device) + "\n";
    };
    let mut s = format!(
        "Anchors (measured by the snn project on {}; paper LIF forward + backward, f32, N = 2^21):\n",
        card.measured
    );
    let mut steps: Vec<usize> = results.iter().map(|r| r.steps).collect();
    steps.sort_unstable();
    steps.dedup();
    for t in steps {
        let at_t: Vec<_> = card.neuron.iter().filter(|a| a.steps == t).collect();
        if at_t.is_empty() {
            s += &format!("  T = {t}: no anchor at this T\n");
            continue;
        }
        for a in &at_t {
            s += &format!("  T = {t:<4} {:<56} {:>7.3} ms\n", a.what, a.ms);
        }
        let floor = (FLOOR_BYTES * t * ANCHOR_N) as f64 / (copy_gbps * 1e9) * 1e3;
        s += &format!(
            "  T = {t:<4} {:<56} {floor:>7.3} ms\n",
            "bandwidth floor (24 B/el-step at this run's copy rate)"
        );
        let ours = results
            .iter()
            .find(|r| r.name == zoo::PaperLif::NAME && r.steps == t && r.n == ANCHOR_N);
        match ours {
            Some(r) if storage == Storage::F32 => {
                s += &format!(
                    "  T = {t:<4} {:<56} {:>7.3} ms ({:.2}x the paper's kernel's time)\n",
                    "this run: paper_lif",
                    r.train_ms,
                    r.train_ms / at_t[0].ms
                );
            }
            Some(r) => {
                s += &format!(
                    "  T = {t:<4} {:<56} {:>7.3} ms (narrow storage: not comparable with the f32 anchors)\n",
                    "this run: paper_lif", r.train_ms
                );
            }
            None => s += &format!("  T = {t:<4} (run paper_lif with N = 2097152 to compare)\n"),
        }
    }
    s
}

fn human_bytes(bytes: usize) -> String {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.2} GiB")
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lif(name: &str, steps: usize, train_ms: f64) -> NeuronBench {
        let n = ANCHOR_N;
        NeuronBench {
            name: name.into(),
            steps,
            n,
            forward_ms: train_ms / 2.0,
            train_ms,
            forward_bytes: 12 * steps * n,
            train_bytes: 24 * steps * n,
            forward_gbps: 12.0 * (steps * n) as f64 / (train_ms / 2.0) / 1e6,
            train_gbps: 24.0 * (steps * n) as f64 / train_ms / 1e6,
        }
    }

    #[test]
    fn rows_line_up_with_the_header() {
        let r = lif("integrate_and_fire", 128, 2.5);
        println!("{}\n{}", header(), row(&r, 2960.0));
        assert_eq!(header().len(), row(&r, 2960.0).len());
    }

    #[test]
    fn footer_compares_paper_lif_with_its_cards_anchors_only_in_f32() {
        let results = [lif("paper_lif", 32, 0.453), lif("paper_lif", 64, 0.9)];
        let f = footer(&results, Storage::F32, 4260.0, "NVIDIA H200");
        println!("{f}");
        assert!(f.contains("one H200, 2026-12-04"), "{f}");
        assert!(f.contains("0.906 ms") && f.contains("1.137 ms") && f.contains("0.378 ms"));
        assert!(f.contains("0.50x the paper's kernel"), "{f}");
        assert!(f.contains("T = 64: no anchor at this T"), "{f}");
        let h100 = footer(&results, Storage::F32, 2960.0, "NVIDIA H100 80GB HBM3");
        assert!(
            h100.contains("1.230 ms") && h100.contains("0.37x"),
            "{h100}"
        );
        let narrow = StorageArg::Narrow.storage();
        assert!(footer(&results, narrow, 4260.0, "NVIDIA H200").contains("not comparable"));
        let other = footer(&results, Storage::F32, 1500.0, "NVIDIA A100");
        assert!(
            other.starts_with("No anchor for this card (NVIDIA A100)"),
            "{other}"
        );
        let f = footer(&[lif("lif", 32, 0.4)], Storage::F32, 4260.0, "NVIDIA H200");
        assert!(f.contains("run paper_lif with N = 2097152"), "{f}");
    }
}
