//! `snn bench train`: one training iteration of a Spiking-ResNet on a GPU.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use snn::codegen::zoo;
use snn::nn::models::spiking_resnet;
use snn::nn::{ImageShape, Network};
use snn::runtime::Device;
use snn::runtime::bench::{self, TrainBench, TrainRun};
use snn::runtime::nn::memory::{self, Prediction, gib};
use snn::runtime::nn::{ConvMath, ModelOptions};

use super::train::{StorageArg, predicted};
use super::{Switch, anchors};

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
  predicted    the peak predicted before the run from two probe steps at T/4 and T/2
               (the peak grows linearly with T); `oom` if a probe ran out of memory
  reserved     the most memory the pool held from the driver (with its cache)

Before the rows: the device copy bandwidth and cuBLAS's GEMM rate in the convolutions'
arithmetic, measured in the same run (the ceilings); with --profile, the rate the
convolutions reach against the GEMM's. After them: other implementations measured on the
same kind of card (PyTorch with the paper's LIF kernel, SpikingJelly; anchors exist for an
H100 and an H200), beside this run's T = 32, B = 100 rows.

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
    /// Convolutions of maps so small that they are one matrix product (3x3 of a 1x1 map:
    /// the last stage at 32x32): a cuBLAS GEMM over the taps that touch the input, or cuDNN
    /// like the others.
    #[arg(long, value_enum, default_value_t = TinyMaps::Gemm)]
    tiny_maps: TinyMaps,
    /// Keep the spikes the backward pass reads (convolutions' inputs) in one byte rather
    /// than f32 or bf16, widened when read: less memory for two conversion passes.
    #[arg(long)]
    spikes_in_bytes: bool,
    /// Keep only the spikes (one byte each), batch statistics and the neurons' states every
    /// K steps for the backward pass, which recomputes the rest (ActivationPlan::Spikes):
    /// long T in less memory, for about one more forward pass.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    time_chunk: Option<u64>,
    /// Time the fastest plan whose predicted peak fits this many GiB: every activation
    /// kept, then spikes in one byte, then --time-chunk about sqrt(T) (as `snn train
    /// --memory-budget` chooses).
    #[arg(long, value_name = "GIB", value_parser = super::train::budget_gib, conflicts_with_all = ["time_chunk", "spikes_in_bytes"])]
    memory_budget: Option<usize>,
    /// The most workspace a convolution algorithm may use, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    conv_workspace: usize,
    /// Also time every layer (CUDA events around each node, in separate iterations) and
    /// print the forward and backward ms per layer kind.
    #[arg(long)]
    profile: bool,
    /// Replay each iteration's forward, loss and backward from a CUDA graph captured once
    /// (same results, launched at once), or launch kernel by kernel.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    graph: Switch,
    /// CUDA device ordinal.
    #[arg(long, value_name = "ORDINAL", default_value_t = 0)]
    device: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TinyMaps {
    Gemm,
    Cudnn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum MathArg {
    Tf32,
    F32,
}

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
        tiny_map_gemm: args.tiny_maps == TinyMaps::Gemm,
        spikes_in_bytes: args.spikes_in_bytes,
        plan: super::train::activation_plan(args.time_chunk)?,
    };
    let dev = Device::open(args.device)
        .with_context(|| format!("opening CUDA device {}", args.device))?;
    let kept = match args.memory_budget {
        Some(b) => format!("; kept: the fastest plan within {:.2} GiB", gib(b)),
        None => format!("; kept: {}", options.kept()),
    };
    println!(
        "device {}: {}; convolutions: {:?}{}; neuron: {}{kept}; repeats: {repeats} (median)\n",
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
    let progress = ProgressBar::new((nets.len() * repeats) as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .context("progress bar template")?,
    );
    progress.set_message("the device copy and GEMM ceilings");
    let ceilings =
        Ceilings::measure(&dev, options.conv_math).inspect_err(|_| progress.finish_and_clear())?;
    progress.suspend(|| {
        println!(
            "device copy: {:.0} GB/s (read + write, 1 GiB); cuBLAS GEMM ({:?}, {GEMM_N}^3): {:.0} TFLOP/s\n",
            ceilings.copy_gbps, options.conv_math, ceilings.gemm_tflops
        );
        println!("{}", header());
    });
    let mut results = Vec::new();
    for net in &nets {
        progress.set_message(format!("{} (predicting the peak)", net.name));
        let shape = (args.steps, args.batch);
        let (options, predicted) = match args.memory_budget {
            Some(budget) => {
                let fit = memory::fit_on_device(&dev, net, shape, options, budget)
                    .inspect_err(|_| progress.finish_and_clear())
                    .with_context(|| format!("fitting {} in --memory-budget", net.name))?;
                progress.suspend(|| {
                    for (o, p) in &fit.rejected {
                        println!(
                            "  {} keeping {}: {}",
                            net.name,
                            o.kept(),
                            predicted(p.as_ref())
                        );
                    }
                    println!("  {} keeping {}: chosen", net.name, fit.options.kept());
                });
                (fit.options, Some(fit.predicted))
            }
            None => {
                let p = memory::predict_on_device(&dev, net, shape, options)
                    .inspect_err(|_| progress.finish_and_clear())
                    .with_context(|| format!("predicting the peak of {}", net.name))?;
                (options, p)
            }
        };
        progress.set_message(format!("{} (warming up)", net.name));
        let run = TrainRun {
            steps: args.steps,
            batch: args.batch,
            repeats,
            seed: 0,
            profile: args.profile,
            graphs: args.graph == Switch::On,
        };
        let r = bench::train(&dev, net, run, options, &|_| progress.inc(1))
            .inspect_err(|_| progress.finish_and_clear())
            .with_context(|| format!("benchmarking {}", net.name))?;
        dev.release_cached_memory();
        progress.suspend(|| {
            println!("{}", row(&r, &args.neuron, predicted.as_ref()));
            if let Some(note) = graph_note(&r, repeats, args.graph) {
                println!("  {note}");
            }
            println!("  {}", conv_note(&r, net, &ceilings));
            if !r.breakdown.is_empty() {
                print!("{}", breakdown(&r));
            }
        });
        results.push(r);
    }
    progress.finish_and_clear();
    println!(
        "\n{}",
        anchors_footer(&results, options.conv_math, &dev.info.name)
    );
    Ok(())
}

/// Other implementations measured on `device`'s card (T = 32, B = 100), each beside this
/// run's network of the same depth when the precision matches.
fn anchors_footer(results: &[TrainBench], math: ConvMath, device: &str) -> String {
    let Some(card) = anchors::for_device(device) else {
        return anchors::none_for(device);
    };
    let bf16 = math == ConvMath::Bf16;
    let mut s = format!(
        "Anchors (measured by the snn project on {}; T = 32, B = 100, paper LIF, Adam):",
        card.measured
    );
    for a in card.train {
        let precision = if a.bf16 { "bf16" } else { "TF32" };
        s += &format!(
            "\n  Spiking-ResNet{} {:<84} {:>6.1} ms {:>5.2} GiB ({precision})",
            a.depth, a.what, a.ms, a.gib
        );
        let ours = results.iter().find(|r| {
            r.network == format!("spiking_resnet{}", a.depth) && r.steps == 32 && r.batch == 100
        });
        if let Some(r) = ours.filter(|_| a.bf16 == bf16 && math != ConvMath::F32) {
            s += &format!(
                ": this run {:.2} ms ({:.2}x its time), {:.2} GiB",
                r.iteration_ms,
                r.iteration_ms / a.ms,
                gib(r.peak_bytes)
            );
        }
    }
    s
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

/// The side of the square matrices whose product measures the GEMM rate.
const GEMM_N: usize = 8192;

/// What the card can do, measured in the same run: the rates the iteration is read against.
struct Ceilings {
    copy_gbps: f64,
    /// cuBLAS in the convolutions' arithmetic.
    gemm_tflops: f64,
}

impl Ceilings {
    fn measure(dev: &std::sync::Arc<Device>, math: ConvMath) -> Result<Self> {
        Ok(Self {
            copy_gbps: bench::copy_bandwidth(dev, 1 << 30, 10).context("timing a device copy")?,
            gemm_tflops: bench::gemm_tflops(dev, math, GEMM_N, 10)
                .context("timing a cuBLAS GEMM")?,
        })
    }
}

/// The convolutions' arithmetic per iteration and, when profiled, the rate they reach.
fn conv_note(r: &TrainBench, net: &Network, ceilings: &Ceilings) -> String {
    let (fwd, bwd) = bench::conv_flops(net, r.steps * r.batch);
    let mut s = format!(
        "convolutions: {:.0} GFLOP forward + {:.0} GFLOP backward per iteration",
        fwd / 1e9,
        bwd / 1e9
    );
    if let Some(c) = r.breakdown.iter().find(|t| t.kind == "Conv2d") {
        let rate = |flop: f64, ms: f64| flop / (ms * 1e-3) / 1e12;
        let (f, b) = (rate(fwd, c.forward_ms), rate(bwd, c.backward_ms));
        s += &format!(
            "; reached {f:.0} and {b:.0} TFLOP/s, {:.0}% and {:.0}% of the GEMM rate",
            100.0 * f / ceilings.gemm_tflops,
            100.0 * b / ceilings.gemm_tflops
        );
    }
    s
}

/// What became of `--graph on`: the replays, and the pool memory the graph keeps.
fn graph_note(r: &TrainBench, repeats: usize, graph: Switch) -> Option<String> {
    if graph == Switch::Off {
        return None;
    }
    Some(format!(
        "CUDA graph: {} of {repeats} timed iterations replayed; it holds {:.2} GiB of the pool{}",
        r.graph_replays,
        gib(r.graph_bytes),
        r.graph_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    ))
}

fn header() -> String {
    format!(
        "{:<30} {:>4} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "network", "T", "B", "iter ms", "fwd ms", "peak GiB", "predicted", "reserved"
    )
}

fn row(r: &TrainBench, neuron: &str, predicted: Option<&Prediction>) -> String {
    let predicted = predicted.map_or("oom".into(), |p| format!("{:.2}", gib(p.bytes)));
    format!(
        "{:<30} {:>4} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>9.2}",
        format!("{} ({neuron})", r.network),
        r.steps,
        r.batch,
        r.iteration_ms,
        r.forward_ms,
        gib(r.peak_bytes),
        predicted,
        gib(r.reserved_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench(network: &str, iteration_ms: f64) -> TrainBench {
        TrainBench {
            network: network.into(),
            steps: 32,
            batch: 100,
            iteration_ms,
            forward_ms: 4.0,
            peak_bytes: 2 << 30,
            reserved_bytes: 3 << 30,
            trace_bytes: 1 << 30,
            workspace_bytes: 1 << 28,
            model_bytes: 1 << 27,
            breakdown: vec![],
            nodes: vec![],
            graph_replays: 10,
            graph_bytes: 0,
            graph_error: None,
        }
    }

    #[test]
    fn anchors_are_those_of_the_card_and_compared_at_the_same_precision() {
        let results = [bench("spiking_resnet18", 9.7)];
        let h200 = anchors_footer(&results, ConvMath::Tf32, "NVIDIA H200");
        assert!(h200.contains("one H200, 2026-12-04"), "{h200}");
        // TF32: beside the TF32 anchors of its depth only (0.50x of 19.4 ms).
        assert!(h200.contains("this run 9.70 ms (0.50x its time)"), "{h200}");
        assert_eq!(h200.matches("this run").count(), 2, "{h200}");
        let bf16 = anchors_footer(&results, ConvMath::Bf16, "NVIDIA H200");
        assert_eq!(bf16.matches("this run").count(), 1, "{bf16}");
        assert!(bf16.contains("(0.54x its time)"), "{bf16}");
        // Full f32 compares with nothing; other cards have no anchors.
        let f32 = anchors_footer(&results, ConvMath::F32, "NVIDIA H200");
        assert!(!f32.contains("this run"), "{f32}");
        let h100 = anchors_footer(&results, ConvMath::Tf32, "NVIDIA H100 80GB HBM3");
        assert!(h100.contains("21.1 ms") && !h100.contains("19.4"), "{h100}");
        let other = anchors_footer(&results, ConvMath::Tf32, "NVIDIA L4");
        assert!(
            other.starts_with("No anchor for this card (NVIDIA L4)"),
            "{other}"
        );
    }

    #[test]
    fn rows_line_up_with_the_header() {
        let r = TrainBench {
            graph_bytes: 1 << 30,
            ..bench("spiking_resnet18", 13.5)
        };
        let predicted = Prediction {
            bytes: 2 << 30,
            probes: vec![(8, 1 << 29), (16, 1 << 30)],
        };
        for p in [Some(&predicted), None] {
            assert_eq!(header().len(), row(&r, "paper_lif", p).len());
        }
        assert!(row(&r, "paper_lif", Some(&predicted)).contains("     2.00 "));
        assert_eq!(
            graph_note(&r, 10, Switch::On).unwrap(),
            "CUDA graph: 10 of 10 timed iterations replayed; it holds 1.00 GiB of the pool"
        );
        assert_eq!(graph_note(&r, 10, Switch::Off), None);
        let failed = TrainBench {
            graph_replays: 0,
            graph_error: Some("capturing a CUDA graph: nothing was captured".into()),
            ..r
        };
        let note = graph_note(&failed, 10, Switch::On).unwrap();
        assert!(note.starts_with("CUDA graph: 0 of 10"), "{note}");
        assert!(
            note.ends_with("(capturing a CUDA graph: nothing was captured)"),
            "{note}"
        );
    }
}
