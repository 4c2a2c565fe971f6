//! `snn bench multi-gpu`: the temporal-fusion paper's `MultiGPUTest`, forward and backward.

use anyhow::{Context, Result, bail};
use clap::Args;
use snn::codegen::zoo;
use snn::nn::ImageShape;
use snn::nn::models::spiking_resnet;
use snn::runtime::Device;
use snn::runtime::bench::{self, PipelineBench, PipelineRun};
use snn::runtime::dist::{Parallel, Split};
use snn::runtime::nn::ModelOptions;

use super::bench::parse_neuron;

/// What `snn bench multi-gpu --help` prints after the options.
pub const MULTI_AFTER_HELP: &str = "\
Reproduces the temporal-fusion paper's MultiGPUTest, forward and backward: one neuron
layer of N neurons over T steps, time split evenly over G GPUs of this machine (one
thread and NCCL rank each). Rank k holds steps [kT/G, (k+1)T/G); micro-batches of the
neurons flow through the ranks: each rank receives the neuron states at the start of its
chunk from the rank before, runs the fused forward kernel, and sends its final states on;
the backward hands the state adjoints back the other way. Times are CUDA-event medians
over --repeats iterations (forward + backward) after a warm-up.

Columns:
  T, GPUs      time steps and GPUs
  iter ms      one iteration through the whole pipeline
  speedup      the 1-GPU time of the same T over this one (when 1 is among --gpus)
  Tc ms        one hand-off: one micro-batch's states from GPU 0 to GPU 1
  best G       the paper's model of the best GPU count, sqrt(Ts / Tc), with Ts the 1-GPU
               time (for T with a 1-GPU row and a hand-off measured)

Then, unless --no-resnet, whole networks beside it: one training iteration of
Spiking-ResNet18 (paper LIF, TF32, Adam, 3x32x32 inputs) on each GPU count, split by batch
(data parallel: T = 32 and B = 100 per GPU, gradients averaged; efficiency is the 1-GPU
time over this one, the work per GPU being the same) and split by time (T = 128 over the
GPUs, B = 100: neuron states handed from GPU to GPU, batch-norm over all of T x B;
efficiency is the 1-GPU time over G times this one). Split by batch, gradients travel in
25 MiB buckets while the backward pass runs (PyTorch DDP's default); one-reduce ms is the
same iteration with one reduction of all gradients after the backward pass instead (whose
steps replay from a CUDA graph). Split by time, they always travel once, after it.

The paper (A100s, one LIF layer, 1M neurons, forward only): T = 1024: 6.32 s on 1 GPU,
3.45 on 2, 2.28 on 4, 1.51 on 8; T = 4096: 25.81 s on 1, 3.92 on 8.

Example:
  snn bench multi-gpu --gpus 1,2,4 --steps 1024,2048,4096";

#[derive(Debug, Args)]
pub struct MultiArgs {
    /// GPU counts to time (comma-separated; each at most this machine's).
    #[arg(
        long,
        value_name = "G,..",
        value_delimiter = ',',
        default_value = "1,2,4"
    )]
    gpus: Vec<usize>,
    /// Time steps T (comma-separated; each a multiple of every GPU count).
    #[arg(
        long,
        value_name = "T,..",
        value_delimiter = ',',
        default_value = "1024,2048,4096"
    )]
    steps: Vec<usize>,
    /// Neurons N (the paper's 1M; a multiple of --micro-batches).
    #[arg(long, value_name = "N", default_value_t = 1 << 20)]
    neurons: usize,
    /// Micro-batches the neurons are split into, which flow through the GPUs.
    #[arg(long, value_name = "M", default_value_t = 8)]
    micro_batches: usize,
    /// The neuron (a zoo name).
    #[arg(long, value_name = "NAME", default_value = "paper_lif", value_parser = parse_neuron)]
    neuron: String,
    /// Timed iterations (the median is reported).
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    repeats: u64,
    /// Leave out the Spiking-ResNet18 rows (split by batch and by time).
    #[arg(long)]
    no_resnet: bool,
}

pub fn multi_gpu(args: MultiArgs) -> Result<()> {
    let ir = zoo::by_name(&args.neuron)
        .with_context(|| format!("unknown neuron `{}`", args.neuron))?
        .ir()?;
    let repeats = usize::try_from(args.repeats).context("--repeats is too large")?;
    for &(name, values) in &[("--gpus", &args.gpus), ("--steps", &args.steps)] {
        if values.contains(&0) {
            bail!("{name} takes counts of at least 1");
        }
    }
    if args.micro_batches == 0 || !args.neurons.is_multiple_of(args.micro_batches) {
        bail!(
            "--neurons {} does not split into {} micro-batches: give a multiple",
            args.neurons,
            args.micro_batches
        );
    }
    if let Some((t, g)) = args
        .steps
        .iter()
        .flat_map(|&t| args.gpus.iter().map(move |&g| (t, g)))
        .find(|(t, g)| !t.is_multiple_of(*g))
    {
        bail!("T = {t} does not split evenly over {g} GPUs: give T a multiple of every count");
    }
    let count = Device::count().context("counting the CUDA GPUs")?;
    let too_many: Vec<_> = args.gpus.iter().filter(|&&g| g > count).collect();
    if !too_many.is_empty() {
        eprintln!("skipping {too_many:?} GPUs: this machine has {count}");
    }
    println!(
        "{} ({} neurons in {} micro-batches), forward + backward; repeats: {repeats} (median)\n",
        args.neuron, args.neurons, args.micro_batches
    );
    println!("{}", header());
    for &steps in &args.steps {
        let mut rows = Vec::new();
        for &gpus in args.gpus.iter().filter(|&&g| g <= count) {
            let run = PipelineRun {
                steps,
                neurons: args.neurons,
                micro_batches: args.micro_batches,
                repeats,
            };
            let r = bench::time_pipeline(&ir, gpus, run)
                .with_context(|| format!("timing T = {steps} on {gpus} GPU(s)"))?;
            rows.push(r);
        }
        let single = rows.iter().find(|r| r.gpus == 1).map(|r| r.iteration_ms);
        let handoff = rows.iter().find_map(|r| r.handoff_ms);
        for r in &rows {
            println!("{}", row(r, single, handoff));
        }
    }
    if !args.no_resnet {
        whole_networks(&args.gpus, count, repeats)?;
    }
    Ok(())
}

/// The Spiking-ResNet18 rows, split by batch and by time.
fn whole_networks(gpus: &[usize], count: usize, repeats: usize) -> Result<()> {
    let net = spiking_resnet(
        18,
        ImageShape::new(3, 32, 32),
        10,
        &zoo::PaperLif::default(),
    )?;
    let splits = [
        (
            "by batch (data parallel), T = 32, B = 100 per GPU",
            Split::Batch {
                sync_batch_norm: false,
            },
            32,
        ),
        ("by time, T = 128 over the GPUs, B = 100", Split::Time, 128),
    ];
    for (what, split, steps) in splits {
        println!("\nSpiking-ResNet18 split {what} (paper LIF, TF32, Adam):");
        println!(
            "{:>5} {:>10} {:>11} {:>13}",
            "GPUs", "iter ms", "efficiency", "one-reduce ms"
        );
        let mut single = None;
        for &g in gpus.iter().filter(|&&g| g <= count && steps % g == 0) {
            let time = |bucket_bytes| {
                let options = ModelOptions::default();
                bench::time_parallel(
                    &net,
                    g,
                    (steps, 100),
                    (split, bucket_bytes),
                    options,
                    repeats,
                )
                .with_context(|| format!("timing Spiking-ResNet18 split {what} on {g} GPU(s)"))
            };
            let ms = time(Parallel::DEFAULT_BUCKET_BYTES)?;
            // Split by time, gradients always travel once, after the backward pass.
            let once = match split {
                Split::Batch { .. } => format!("{:.2}", time(0)?),
                Split::Time => "-".into(),
            };
            if g == 1 {
                single = Some(ms);
            }
            let ideal = match split {
                Split::Batch { .. } => 1.0,
                Split::Time => g as f64,
            };
            let efficiency =
                single.map_or("-".into(), |s| format!("{:.0}%", 100.0 * s / (ideal * ms)));
            println!("{g:>5} {ms:>10.2} {efficiency:>11} {once:>13}");
        }
    }
    Ok(())
}

fn header() -> String {
    format!(
        "{:>6} {:>5} {:>10} {:>8} {:>8} {:>7}",
        "T", "GPUs", "iter ms", "speedup", "Tc ms", "best G"
    )
}

/// A row: `single` is the 1-GPU time of the same T (Ts), `handoff` a measured Tc.
fn row(r: &PipelineBench, single: Option<f64>, handoff: Option<f64>) -> String {
    let dash = || "-".to_string();
    let speedup = single.map_or_else(dash, |s| format!("{:.2}x", s / r.iteration_ms));
    let tc = r.handoff_ms.map_or_else(dash, |t| format!("{t:.3}"));
    let best = match (single, handoff) {
        (Some(ts), Some(tc)) if r.gpus == 1 && tc > 0.0 => format!("{:.1}", best_gpus(ts, tc)),
        _ => dash(),
    };
    format!(
        "{:>6} {:>5} {:>10.2} {:>8} {:>8} {:>7}",
        r.steps, r.gpus, r.iteration_ms, speedup, tc, best
    )
}

/// The paper's model of the best GPU count: an iteration costs about `Ts / G + G * Tc`
/// (the work shared, one hand-off per GPU to fill the pipeline), least at `sqrt(Ts / Tc)`.
fn best_gpus(ts: f64, tc: f64) -> f64 {
    (ts / tc).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_gpu_count_minimises_the_papers_cost() {
        let (ts, tc) = (6320.0, 100.0);
        let g = best_gpus(ts, tc);
        let cost = |g: f64| ts / g + g * tc;
        assert!((g - 7.95).abs() < 0.01, "{g}");
        assert!(cost(g) <= cost(g - 0.5) && cost(g) <= cost(g + 0.5));
    }

    #[test]
    fn rows_line_up_and_show_speedup_and_model() {
        let one = PipelineBench {
            gpus: 1,
            steps: 1024,
            iteration_ms: 100.0,
            handoff_ms: None,
        };
        let two = PipelineBench {
            gpus: 2,
            iteration_ms: 50.0,
            handoff_ms: Some(0.25),
            ..one.clone()
        };
        let (a, b) = (
            row(&one, Some(100.0), Some(0.25)),
            row(&two, Some(100.0), Some(0.25)),
        );
        assert_eq!(a.len(), header().len());
        assert_eq!(b.len(), header().len());
        assert!(a.ends_with("20.0"), "{a}");
        assert!(b.contains("2.00x") && b.contains("0.250"), "{b}");
    }
}
