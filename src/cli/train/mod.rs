//! `snn train` and `snn eval`: the paper's experiments (a Spiking-ResNet on MNIST,
//! CIFAR-10, N-MNIST or DVS128 Gesture, any zoo neuron) from one command, on the shared
//! trainer and its one epoch loop; on the GPU when there is one, else on the CPU reference.

mod config;
mod data;
mod observer;
mod ranks;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use snn::data::download::data_dir;
use snn::data::{Batch, Dataset, Shard};
use snn::nn::checkpoint::{self, Checkpoint};
use snn::nn::optim::CosineSchedule;
use snn::nn::train::{AsInput, FitConfig, LrSchedule, RateCode, evaluate, fit};
use snn::nn::{ActivationPlan, Loss, Network, init_params};
use snn::runtime::Device;
use snn::runtime::dist::{Communicator, Parallel, Split, World};
use snn::runtime::nn::memory::{self, gib};
use snn::runtime::nn::{Backend, ConvMath, ModelOptions};

use super::Switch;

pub use self::config::StorageArg;
use self::config::{
    ArchArg, CONFIG_KEY, DatasetArg, OptimizerArg, RunConfig, ScheduleArg, SplitArg, parse_param,
};
use self::data::{Data, Loaders, Share};
use self::observer::RunObserver;

/// What `snn train --help` prints after the options.
const TRAIN_AFTER_HELP: &str = "\
Defaults are the paper's (Spiking-ResNet18, T = 32, 5 epochs, Adam at lr 1e-3, batch
100, 10 for DVS128 Gesture, cross-entropy of the time-averaged logits). Without
--dataset it trains the small spiking CNN on the embedded 8x8 digits, which needs no
download (T = 16, batch 25, lr 5e-3: about 90% test accuracy in half a minute on two CPU
cores). Images are rate-coded (the same spikes on the
CPU and the GPU); event recordings become T frames split by event number.

While it trains: a progress bar per epoch on stderr. After each epoch: one line (training
time, test time, train loss and accuracy, test loss and accuracy) on stdout, the same appended as
JSON to OUT/metrics.jsonl (whose first line of a run is its configuration), and
OUT/last.safetensors and (on a better test accuracy) OUT/best.safetensors, written
atomically. Ctrl-C finishes the current step, writes last.safetensors and exits non-zero;
--resume OUT/last.safetensors with the same options continues exactly where it stopped.
A loss (training or test) that is not finite stops the run with an error; the checkpoints
keep the last sound epoch.

Examples:
  snn train
  snn train --dataset mnist --arch spiking-resnet18 --neuron lif --neuron-param tau=3
  snn train --dataset dvs-gesture --epochs 5 --out runs/gesture
  snn train --dataset cifar10 --storage narrow
  snn train --dataset mnist --resume runs/mnist/last.safetensors --epochs 10
  snn train --dataset cifar10 --gpus 4
  snn train --dataset cifar10 --gpus 4 --split time --steps 1024";

/// `snn train`: options.
#[derive(Debug, Args)]
#[command(after_help = TRAIN_AFTER_HELP)]
pub struct TrainArgs {
    /// The dataset (digits is embedded; the others: `snn data download <name>` first).
    #[arg(long, value_enum, default_value_t = DatasetArg::Digits)]
    dataset: DatasetArg,
    /// The network [default: spiking-cnn on digits, else spiking-resnet18].
    #[arg(long, value_enum)]
    arch: Option<ArchArg>,
    /// The neuron after every batch-norm, a zoo name (`snn neurons` lists them).
    #[arg(long, value_name = "NAME", default_value = "paper_lif", value_parser = crate::cli::bench::parse_neuron)]
    neuron: String,
    /// A neuron parameter's value, `name=value` (repeatable), e.g. `tau=2.0`.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_param)]
    neuron_param: Vec<(String, f64)>,
    /// Time steps T (images: rate-code frames; events: frames per recording) [default: 32,
    /// 16 for digits].
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u64).range(1..))]
    steps: Option<u64>,
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    epochs: u64,
    /// Samples per batch [default: 100, 10 for dvs-gesture, 25 for digits].
    #[arg(long, value_name = "B", value_parser = clap::value_parser!(u64).range(1..))]
    batch: Option<u64>,
    /// Learning rate (its peak, with a cosine schedule) [default: 1e-3, 5e-3 for digits].
    #[arg(long, value_parser = parse_lr, allow_negative_numbers = true)]
    lr: Option<f64>,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adam)]
    optimizer: OptimizerArg,
    #[arg(long, value_enum, default_value_t = ScheduleArg::Constant)]
    schedule: ScheduleArg,
    /// Warm-up steps of the cosine schedule.
    #[arg(long, value_name = "STEPS", default_value_t = 0)]
    warmup: u64,
    /// Seeds the weights, the shuffling and the rate code.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// At most this many batches per epoch (quick runs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_batches: Option<u64>,
    /// Bit-reproducible GPU training (deterministic algorithms and reductions).
    #[arg(long)]
    deterministic: bool,
    /// Activations in f32, or narrow: bf16 up to the classifier (bf16 convolutions with f32
    /// accumulation, neurons in narrow storage; f32 weights, optimizer state and loss), as
    /// PyTorch's bf16 autocast. GPU only.
    #[arg(long, value_enum, default_value_t = StorageArg::F32)]
    storage: StorageArg,
    #[command(flatten)]
    place: Place,
    /// Where metrics and checkpoints go [default: runs/<dataset>-<arch>-<neuron>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue from a checkpoint of this command (e.g. OUT/last.safetensors), with the
    /// same options; --epochs may grow.
    #[arg(long, value_name = "CKPT")]
    resume: Option<PathBuf>,
    /// Long runs in less memory: keep only the spikes (one byte each), batch statistics and
    /// the neurons' states every K steps for the backward pass, which recomputes the rest
    /// (about one more forward pass; the same training, to rounding). May change on resume.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    time_chunk: Option<u64>,
    /// Train within this much GPU memory (GiB, peak of tensors): the fastest plan whose
    /// peak, predicted from two probe steps at T/4 and T/2, fits: every activation kept,
    /// then spikes kept in one byte, then --time-chunk about sqrt(T). Printed at the start.
    #[arg(long, value_name = "GIB", value_parser = budget_gib, conflicts_with_all = ["time_chunk", "cpu"])]
    memory_budget: Option<usize>,
    /// Train on N GPUs of this machine (data parallel: one process per GPU, each on its
    /// shard of every epoch with --batch samples per step, gradients averaged over NCCL;
    /// rank 0 prints, evaluates and writes). Under torchrun or Slurm leave it out: each
    /// process they start is one rank.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "cpu")]
    gpus: Option<u64>,
    /// As --gpus, on these GPUs of this machine (ordinals, comma-separated: `--devices
    /// 2,3`): rank k on the k-th.
    #[arg(long, value_name = "K,..", value_delimiter = ',', conflicts_with_all = ["gpus", "cpu"])]
    devices: Vec<usize>,
    /// With several GPUs: batch-norm takes the statistics of the whole global batch, as
    /// PyTorch's SyncBatchNorm, rather than each GPU's part (DDP's default). Each
    /// batch-norm then talks to the other GPUs, and steps are not replayed from CUDA graphs.
    #[arg(long)]
    sync_bn: bool,
    /// With several GPUs: how they share each step.
    #[arg(long, value_enum, default_value_t = SplitArg::Batch)]
    split: SplitArg,
    /// Data parallel without --sync-bn: gradients travel in buckets of about this many MiB,
    /// each as soon as the backward pass has written it, while the GPU computes the rest
    /// (PyTorch DDP's bucket_cap_mb); 0: in one reduction after the backward pass, so that
    /// steps replay from CUDA graphs [default: 25]. (With --sync-bn or --split time the
    /// backward talks to the other GPUs anyway, and gradients travel once, after it.)
    #[arg(long, value_name = "MIB")]
    bucket_mib: Option<usize>,
}

/// Where data comes from and where the run computes.
#[derive(Debug, Args)]
struct Place {
    /// The data directory (default: $SNN_DATA_DIR, else the user's data directory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The CUDA device ordinal.
    #[arg(long, value_name = "K", default_value_t = 0)]
    device: usize,
    /// Run on the CPU reference even if there is a GPU.
    #[arg(long)]
    cpu: bool,
    /// On a GPU, replay each step's forward, loss and backward from a CUDA graph captured
    /// once (the same results, launched at once), or launch kernel by kernel.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    graph: Switch,
}

/// `snn eval`: options.
#[derive(Debug, Args)]
#[command(
    after_help = "Rebuilds the network from the checkpoint's recorded options and \
    prints its test accuracy on the dataset it was trained on (or --dataset).\n\n\
    Example:\n  snn eval --checkpoint runs/digits-spiking-cnn-paper_lif/best.safetensors"
)]
pub struct EvalArgs {
    /// A checkpoint written by `snn train`.
    #[arg(long, value_name = "CKPT")]
    checkpoint: PathBuf,
    /// The dataset [default: the one it was trained on].
    #[arg(long, value_enum)]
    dataset: Option<DatasetArg>,
    /// Samples per batch [default: the training run's].
    #[arg(long, value_name = "B", value_parser = clap::value_parser!(u64).range(1..))]
    batch: Option<u64>,
    #[command(flatten)]
    place: Place,
}

fn parse_lr(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(lr) if lr.is_finite() && lr > 0.0 => Ok(lr),
        _ => Err(format!(
            "`{text}` is not a positive learning rate (e.g. 1e-3)"
        )),
    }
}

impl TrainArgs {
    fn config(&self) -> RunConfig {
        RunConfig {
            dataset: self.dataset,
            arch: self.arch.unwrap_or(self.dataset.default_arch()),
            neuron: self.neuron.clone(),
            neuron_params: self.neuron_param.iter().cloned().collect(),
            steps: self
                .steps
                .map_or(self.dataset.default_steps(), |t| t as usize),
            batch: self
                .batch
                .map_or(self.dataset.default_batch(), |b| b as usize),
            epochs: self.epochs,
            lr: self.lr.unwrap_or(self.dataset.default_lr()),
            optimizer: self.optimizer,
            schedule: self.schedule,
            warmup: self.warmup,
            seed: self.seed,
            deterministic: self.deterministic,
            storage: self.storage,
            max_batches: self.max_batches.map(|m| m as usize),
            sync_bn: self.sync_bn,
            split: self.split,
        }
    }
}

/// Everything a run needs besides its loaders.
struct Run {
    config: RunConfig,
    net: Network,
    backend: Backend,
    out: PathBuf,
    start: Checkpoint,
    /// The best test accuracy of the run before a resume.
    best: Option<f64>,
    /// This process's rank, when the run has several.
    world: Option<World>,
    /// With several ranks: the size of the gradient buckets ([`Parallel::bucket_bytes`]).
    bucket_bytes: usize,
}

pub fn train(args: TrainArgs) -> Result<()> {
    let devices = match (args.gpus, &args.devices[..]) {
        (Some(n), _) => {
            let n = usize::try_from(n).context("--gpus is too large")?;
            Some(ranks::Devices::First(n))
        }
        (None, []) => None,
        (None, list) => Some(ranks::Devices::these(list)?),
    };
    let gpus = devices.as_ref().map(ranks::Devices::count);
    let world = ranks::world(devices.as_ref())?;
    let config = args.config();
    let ranks = world.as_ref().map_or(gpus.unwrap_or(1), |w| w.size);
    ranks::check(&config, ranks, args.bucket_mib)?;
    if let (None, Some(devices)) = (&world, devices)
        && devices.count() >= 2
    {
        return ranks::launch(&devices);
    }
    let bucket_bytes = args
        .bucket_mib
        .map_or(Some(Parallel::DEFAULT_BUCKET_BYTES), |m| {
            m.checked_mul(1 << 20)
        })
        .context("--bucket-mib is too large")?;
    let main = world.as_ref().is_none_or(World::is_main);
    let start = match &args.resume {
        Some(path) => Some(resume_point(path, &config)?),
        None => None,
    };
    let out = args.out.clone().unwrap_or_else(|| {
        let (dataset, arch) = (config.dataset.name(), config.arch.name());
        PathBuf::from("runs").join(format!("{dataset}-{arch}-{}", config.neuron))
    });
    // Split by time, every rank steps through the same batches, and rank 0 evaluates over
    // the whole T in batches of B / G samples, which need the memory of a training chunk.
    let share = match (&world, config.split) {
        (Some(w), SplitArg::Batch) => Share {
            shard: Shard {
                index: w.rank,
                count: w.size,
            },
            test_batch: config.batch,
        },
        (Some(w), SplitArg::Time) => Share::whole(config.batch.div_ceil(w.size)),
        (None, _) => Share::whole(config.batch),
    };
    let data_dir = || Ok(data_dir(args.place.data_dir.as_deref())?);
    let data = data::open(&config, share, data_dir)?;
    let plan = activation_plan(args.time_chunk)?;
    let backend = match &world {
        Some(w) => rank_backend(&args.place, &config, plan, w)?,
        None => backend(&args.place, &config, plan)?,
    };
    if args.memory_budget.is_some() && !matches!(backend, Backend::Gpu { .. }) {
        bail!("--memory-budget is for training on a GPU; the CPU reference has no memory budget");
    }
    let budget = args.memory_budget;
    let run = |input| -> Result<Run> {
        let net = config.network(input)?;
        let start = match start {
            Some(ckpt) => ckpt,
            None => Checkpoint::fresh(init_params(&net, config.seed)?),
        };
        if main {
            fs::create_dir_all(&out)
                .with_context(|| format!("creating the output folder {}", out.display()))?;
        }
        let best = best_so_far(&out, args.resume.is_some());
        // Split by time, each rank holds its chunk of the steps.
        let steps = match (&world, config.split) {
            (Some(w), SplitArg::Time) => config.steps / w.size,
            _ => config.steps,
        };
        let backend = match budget {
            Some(bytes) => within_budget(backend, &net, (steps, config.batch), bytes, main)?,
            None => backend,
        };
        Ok(Run {
            config: config.clone(),
            net,
            backend,
            out: out.clone(),
            start,
            best,
            world,
            bucket_bytes,
        })
    };
    match data {
        Data::Images(l) => train_on(run(l.input)?, l),
        Data::NMnist(l) => train_on(run(l.input)?, l),
        Data::Gesture(l) => train_on(run(l.input)?, l),
    }
}

/// What training passes keep with `--time-chunk` (or without it).
pub(crate) fn activation_plan(time_chunk: Option<u64>) -> Result<ActivationPlan> {
    Ok(match time_chunk {
        Some(k) => ActivationPlan::Spikes {
            time_chunk: usize::try_from(k).context("--time-chunk is too large")?,
        },
        None => ActivationPlan::All,
    })
}

/// A memory budget in GiB, as bytes.
pub(crate) fn budget_gib(text: &str) -> Result<usize, String> {
    match text.parse::<f64>() {
        Ok(gib) if gib > 0.0 && gib.is_finite() => Ok((gib * (1u64 << 30) as f64) as usize),
        _ => Err(format!(
            "`{text}` is no memory budget: give GiB, a positive number (e.g. 24)"
        )),
    }
}

/// `backend` (a GPU) with the fastest plan whose predicted peak for `(steps, batch)` fits
/// `budget` bytes, which it prints (when `prints`) with the plans that did not fit.
fn within_budget(
    backend: Backend,
    net: &Network,
    (steps, batch): (usize, usize),
    budget: usize,
    prints: bool,
) -> Result<Backend> {
    let Backend::Gpu {
        device,
        options,
        graphs,
    } = backend
    else {
        return Ok(backend);
    };
    let say = |line: String| {
        if prints {
            eprintln!("{line}");
        }
    };
    say(format!(
        "fitting T = {steps}, B = {batch} in {:.2} GiB: probing the peak of each plan at T/4 and T/2",
        gib(budget)
    ));
    let fit = memory::fit_on_device(&device, net, (steps, batch), options, budget)
        .context("choosing what the training passes keep (--memory-budget)")?;
    for (o, p) in &fit.rejected {
        say(format!("  {}: {}", o.kept(), predicted(p.as_ref())));
    }
    say(format!(
        "  {}: {} (chosen)",
        fit.options.kept(),
        predicted(Some(&fit.predicted))
    ));
    Ok(Backend::Gpu {
        device,
        options: fit.options,
        graphs,
    })
}

/// A predicted peak, or that a probe ran out of memory.
pub(crate) fn predicted(p: Option<&memory::Prediction>) -> String {
    match p {
        Some(p) => format!("{:.2} GiB predicted", gib(p.bytes)),
        None => "out of device memory at T/2".into(),
    }
}

/// The checkpoint to resume from, refused when it comes from a run of other options.
fn resume_point(path: &Path, config: &RunConfig) -> Result<Checkpoint> {
    let ckpt = checkpoint::load(path)?;
    let recorded = recorded_config(&ckpt, path)?;
    let differences = config.differences(&recorded);
    if !differences.is_empty() {
        bail!(
            "{} comes from a run with other options; resuming continues that run exactly, \
             so pass its options: {}",
            path.display(),
            differences.join(", ")
        );
    }
    if ckpt.optimizer.is_none() {
        bail!(
            "{} holds no optimizer state, so training cannot continue from it",
            path.display()
        );
    }
    Ok(ckpt)
}

fn recorded_config(ckpt: &Checkpoint, path: &Path) -> Result<RunConfig> {
    let text = ckpt.metadata.get(CONFIG_KEY).with_context(|| {
        format!(
            "{} was not written by `snn train` (it records no options)",
            path.display()
        )
    })?;
    serde_json::from_str(text)
        .with_context(|| format!("{}: its recorded options cannot be read", path.display()))
}

/// The best test accuracy recorded in `out/metrics.jsonl`, when resuming there.
fn best_so_far(out: &Path, resuming: bool) -> Option<f64> {
    if !resuming {
        return None;
    }
    let text = fs::read_to_string(out.join("metrics.jsonl")).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("test_accuracy")?.as_f64())
        .reduce(f64::max)
}

/// The GPU `place.device` when there is one (and not --cpu), else the CPU with a warning
/// (narrow storage needs the GPU).
fn backend(place: &Place, config: &RunConfig, plan: ActivationPlan) -> Result<Backend> {
    let narrow = config.storage == StorageArg::Narrow;
    let options = ModelOptions {
        deterministic: config.deterministic,
        plan,
        conv_math: if narrow {
            ConvMath::Bf16
        } else {
            ModelOptions::default().conv_math
        },
        ..ModelOptions::default()
    };
    // Why the run falls back to the CPU reference (none when asked to run there).
    let fallback = if place.cpu {
        None
    } else {
        match Device::count() {
            Ok(n) if place.device < n => {
                let device = Device::open(place.device)?;
                let graphs = place.graph == Switch::On;
                return Ok(Backend::Gpu {
                    device,
                    options,
                    graphs,
                });
            }
            Ok(n) if n > 0 => bail!(
                "--device {} does not exist: this machine has {n} GPU(s), 0 to {}",
                place.device,
                n - 1
            ),
            Ok(_) => Some("no CUDA GPU found".to_string()),
            Err(e) => Some(format!("no usable CUDA driver ({e})")),
        }
    };
    if narrow {
        let e = anyhow::anyhow!(
            "--storage narrow needs a CUDA GPU (bf16 convolutions); the CPU reference \
             computes in f32: use --storage f32"
        );
        return Err(match fallback {
            Some(why) => e.context(why),
            None => e,
        });
    }
    if let Some(why) = fallback {
        eprintln!("warning: {why}: training on the CPU reference (slow for large networks)");
    }
    Ok(Backend::Cpu { plan })
}

/// A rank's GPU: the one its launcher gave it (its local rank, or the only one it sees);
/// several processes never fall back to the CPU reference.
fn rank_backend(
    place: &Place,
    config: &RunConfig,
    plan: ActivationPlan,
    world: &World,
) -> Result<Backend> {
    if place.cpu {
        bail!("--cpu: the CPU reference trains alone; a run of several processes needs a GPU each");
    }
    let count = Device::count().context("a rank of a run of several processes needs a CUDA GPU")?;
    // A process that sees one GPU (Slurm's --gpus-per-task=1 binds each task to its own)
    // runs on it; one that sees several takes the one its local rank names.
    let device = match count {
        1 => 0,
        _ if world.local_rank < count => world.local_rank,
        _ => bail!(
            "rank {} runs on GPU {} (its local rank), but this process sees {count} GPU(s)",
            world.rank,
            world.local_rank
        ),
    };
    let place = Place {
        device,
        data_dir: place.data_dir.clone(),
        cpu: false,
        graph: place.graph,
    };
    backend(&place, config, plan)
}

fn train_on<D>(run: Run, loaders: Loaders<D>) -> Result<()>
where
    D: Dataset,
    Batch<D::Elem>: AsInput,
{
    let Run {
        config,
        net,
        backend,
        out,
        start,
        best,
        world,
        bucket_bytes,
    } = run;
    let optimizer = config.optimizer();
    let spread = world
        .as_ref()
        .map_or(String::new(), |w| match config.split {
            SplitArg::Batch if config.sync_bn => format!(
                " per GPU, data parallel over {} GPUs, batch-norm synchronised",
                w.size
            ),
            SplitArg::Batch => format!(" per GPU, data parallel over {} GPUs", w.size),
            SplitArg::Time => format!(
                ", split by time over {} GPUs ({} steps each)",
                w.size,
                config.steps / w.size
            ),
        });
    let kept = match backend.plan() {
        ActivationPlan::Spikes { time_chunk } => format!(
            "; the backward recomputes from spikes and neuron states kept every {time_chunk} steps"
        ),
        ActivationPlan::All => String::new(),
    };
    let loss = Loss::CrossEntropyRate;
    let setting_up = "setting up the trainer (a checkpoint of another network is refused here)";
    let mut trainer = match (&world, &backend) {
        (Some(w), Backend::Gpu { device, .. }) => {
            let comm = Communicator::join(device, w, ranks::JOIN_TIMEOUT)
                .with_context(|| format!("rank {} of {} joining the run", w.rank, w.size))?;
            let split = match config.split {
                SplitArg::Batch => Split::Batch {
                    sync_batch_norm: config.sync_bn,
                },
                SplitArg::Time => Split::Time,
            };
            let rank = Parallel {
                comm,
                split,
                bucket_bytes,
            };
            backend.rank_trainer(&net, &start, optimizer, loss, None, rank)
        }
        _ => backend.trainer(&net, &start, optimizer, loss, None),
    }
    .context(setting_up)?;
    let fit_config = fit_config(&config, loaders.train.num_batches());
    if let Some(w) = world.as_ref().filter(|w| !w.is_main()) {
        // Rank 0 alone evaluates, writes and decides when an interrupted run stops: the
        // others keep stepping with it (Ctrl-C reaches them too) until it has saved.
        ctrlc::set_handler(|| {}).context("installing the Ctrl-C handler")?;
        fit(&mut *trainer, &loaders.train, None, &fit_config, &mut ())
            .with_context(|| format!("rank {} of {}", w.rank, w.size))?;
        return Ok(());
    }
    let config_json = serde_json::to_string(&config)?;
    let metadata = BTreeMap::from([(CONFIG_KEY.to_string(), config_json)]);
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || {
        eprintln!("\ninterrupted: finishing the current step, then writing last.safetensors");
        flag.store(true, Ordering::SeqCst);
    })
    .context("installing the Ctrl-C handler")?;
    let mut observer = RunObserver::new(&out, config.epochs, metadata, interrupted)
        .with_context(|| format!("opening {}/metrics.jsonl", out.display()))?;
    observer.best = best;
    observer.record(&json!({
        "config": config,
        "network": net.name,
        "device": trainer.device_name(),
        "resumed_at_step": trainer.steps_taken(),
    }))?;
    eprintln!(
        "training {} ({}) on {} with {}: {} epochs, T = {}, batch {}{spread}{kept}; output in {}",
        net.name,
        config.neuron,
        config.dataset.name(),
        trainer.device_name(),
        config.epochs,
        config.steps,
        config.batch,
        out.display()
    );
    let batches = fit_config.batches(loaders.train.num_batches());
    let result = fit(
        &mut *trainer,
        &loaders.train,
        Some(&loaders.test),
        &fit_config,
        &mut observer,
    );
    if let Some(step) = observer.stopped_at {
        let epoch = step / batches.max(1) as u64;
        observer.save(&*trainer, "last", epoch)?;
        bail!(
            "interrupted after step {step}: {} written; continue with `--resume {}` and the same options",
            out.join("last.safetensors").display(),
            out.join("last.safetensors").display()
        );
    }
    result.with_context(|| {
        if out.join("last.safetensors").is_file() {
            "training stopped; last.safetensors holds the last completed epoch"
        } else {
            "training stopped before an epoch ended soundly, so no checkpoint was written"
        }
    })?;
    if let Some(best) = observer.best {
        println!(
            "best test accuracy {:.2}%: {}",
            100.0 * best,
            out.join("best.safetensors").display()
        );
    }
    Ok(())
}

/// The epoch loop's settings: the config's epochs, rate code and learning-rate schedule
/// over `batches` batches per epoch.
fn fit_config(config: &RunConfig, batches: usize) -> FitConfig {
    let rate = RateCode {
        steps: config.steps,
        seed: config.seed,
    };
    let mut fit_config = FitConfig {
        max_batches: config.max_batches,
        ..FitConfig::new(config.epochs, LrSchedule::Constant(config.lr), rate)
    };
    if config.schedule == ScheduleArg::Cosine {
        let per_epoch = fit_config.batches(batches) as u64;
        fit_config.lr = LrSchedule::Cosine(CosineSchedule {
            base_lr: config.lr,
            min_lr: 0.0,
            total_steps: config.epochs * per_epoch,
            warmup_steps: config.warmup,
        });
    }
    fit_config
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let ckpt = checkpoint::load(&args.checkpoint)?;
    let mut config = recorded_config(&ckpt, &args.checkpoint)?;
    if let Some(dataset) = args.dataset {
        config.dataset = dataset;
    }
    if let Some(batch) = args.batch {
        config.batch = batch as usize;
    }
    let data_dir = || Ok(data_dir(args.place.data_dir.as_deref())?);
    let data = data::open(&config, Share::whole(config.batch), data_dir)?;
    let backend = backend(&args.place, &config, ActivationPlan::All)?;
    match data {
        Data::Images(l) => eval_on(&config, backend, &ckpt, &args.checkpoint, l),
        Data::NMnist(l) => eval_on(&config, backend, &ckpt, &args.checkpoint, l),
        Data::Gesture(l) => eval_on(&config, backend, &ckpt, &args.checkpoint, l),
    }
}

fn eval_on<D>(
    config: &RunConfig,
    backend: Backend,
    ckpt: &Checkpoint,
    path: &Path,
    loaders: Loaders<D>,
) -> Result<()>
where
    D: Dataset,
    Batch<D::Elem>: AsInput,
{
    let net = config.network(loaders.input)?;
    let mut trainer = backend
        .trainer(&net, ckpt, config.optimizer(), Loss::CrossEntropyRate, None)
        .with_context(|| {
            format!(
                "{} does not fit {} for {} inputs of {}",
                path.display(),
                net.name,
                config.dataset.name(),
                loaders.input
            )
        })?;
    let rate = RateCode {
        steps: config.steps,
        seed: config.seed,
    };
    let result = evaluate(&mut *trainer, &loaders.test, rate)?;
    println!(
        "test accuracy {:.2}% ({}/{}) and loss {:.4} on {}, {:.2} s",
        100.0 * result.accuracy(),
        result.correct,
        result.samples,
        result.loss,
        config.dataset.name(),
        result.time.as_secs_f64()
    );
    Ok(())
}
