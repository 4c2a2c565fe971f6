//! `snn train` on several GPUs. `--gpus N` starts N processes of this very command, one per
//! GPU, with torchrun's variables set; a process that finds such variables (from that, from
//! torchrun or from Slurm) is one rank of the run: split by batch, it trains on its shard
//! of every epoch and averages gradients with the others over NCCL; split by time, on its
//! chunk of the time steps of every batch, handing neuron states on. Rank 0 alone prints,
//! evaluates (over the whole T) and writes metrics and checkpoints.

use std::process::{Child, Command, ExitStatus};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use snn::runtime::Device;
use snn::runtime::dist::{World, rendezvous};

use super::config::{RunConfig, SplitArg};

/// How long ranks wait for each other to start, and rank 0's TCP rendezvous.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// This process's rank when it is one of several (its launcher's variables), or `None` when
/// it trains alone. `--gpus N` (`--devices`) under a launcher must say what the launcher
/// does.
pub fn world(devices: Option<&Devices>) -> Result<Option<World>> {
    let world = World::from_env().context("reading the launcher's variables")?;
    if world.size == 1 {
        return Ok(None);
    }
    if let Some(d) = devices
        && d.count() != world.size
    {
        bail!(
            "{}, but {} started {} processes (WORLD_SIZE): leave it out under a launcher",
            d.option(),
            world.launcher,
            world.size
        );
    }
    Ok(Some(world))
}

/// Refuses what a run of `ranks` processes cannot do with `config` (and `--bucket-mib`),
/// before any of them starts.
pub fn check(config: &RunConfig, ranks: usize, bucket_mib: Option<usize>) -> Result<()> {
    let several = "with --gpus N (2 or more), or in processes started by torchrun or Slurm";
    if ranks < 2 {
        if config.sync_bn {
            bail!(
                "--sync-bn synchronises batch-norm over the GPUs of a data-parallel run: use \
                 it {several}"
            );
        }
        if config.split != SplitArg::Batch {
            bail!("--split time shares each step's time steps among GPUs: use it {several}");
        }
        if bucket_mib.is_some() {
            bail!("--bucket-mib sets how gradients travel between GPUs: use it {several}");
        }
    }
    if bucket_mib.is_some() && (config.sync_bn || config.split == SplitArg::Time) {
        bail!(
            "--bucket-mib is for data parallelism without --sync-bn: with --sync-bn or --split \
             time the backward pass talks to the other GPUs anyway, and gradients travel once, \
             after it"
        );
    }
    if config.split == SplitArg::Time {
        if config.sync_bn {
            bail!(
                "--sync-bn is for --split batch: split by time, batch-norm always takes the \
                 statistics of the whole T x B"
            );
        }
        if !config.steps.is_multiple_of(ranks) {
            bail!(
                "--split time: T = {} does not split evenly over {ranks} GPUs; give --steps a \
                 multiple of {ranks}",
                config.steps
            );
        }
    }
    Ok(())
}

/// The GPUs of this machine that a run of several ranks takes, rank k the k-th.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Devices {
    /// `--gpus N`: GPUs 0 to N - 1.
    First(usize),
    /// `--devices K,..`: these ordinals, each once.
    These(Vec<usize>),
}

impl Devices {
    /// `--devices`: at least two, each once.
    pub fn these(list: &[usize]) -> Result<Self> {
        if let [one] = list {
            bail!("--devices {one}: one GPU trains alone; use --device {one}");
        }
        if let Some(k) = list
            .iter()
            .enumerate()
            .find_map(|(i, k)| list[..i].contains(k).then_some(k))
        {
            bail!("--devices names GPU {k} twice: give each GPU once");
        }
        Ok(Devices::These(list.to_vec()))
    }

    pub fn count(&self) -> usize {
        match self {
            Devices::First(n) => *n,
            Devices::These(list) => list.len(),
        }
    }

    /// The option as the user gave it, for messages.
    fn option(&self) -> String {
        match self {
            Devices::First(n) => format!("--gpus {n}"),
            Devices::These(list) => {
                let list: Vec<String> = list.iter().map(usize::to_string).collect();
                format!("--devices {}", list.join(","))
            }
        }
    }
}

/// Runs this command again as one rank per GPU of `devices`, meeting on a free local port,
/// and waits for them: the first rank to fail stops the others (they would wait for it
/// forever), and its failure is this command's. Ctrl-C reaches every rank (one terminal,
/// one process group); rank 0 then writes `last.safetensors` and stops, and the others are
/// stopped after it. With `--devices`, each rank sees only its GPU (`CUDA_VISIBLE_DEVICES`,
/// counted within this process's own, if set).
pub fn launch(devices: &Devices) -> Result<()> {
    let option = devices.option();
    let count = Device::count().with_context(|| format!("{option} needs CUDA GPUs"))?;
    let n = devices.count();
    let visible: Vec<String> = match devices {
        Devices::First(_) if n > count => {
            bail!("{option}: this machine has {count} CUDA GPU(s)")
        }
        Devices::First(_) => Vec::new(),
        Devices::These(list) => {
            if let Some(k) = list.iter().find(|&&k| k >= count) {
                bail!(
                    "{option}: there is no GPU {k}; this machine has {count}, 0 to {}",
                    count.saturating_sub(1)
                );
            }
            // Ordinals count the GPUs this process sees.
            let seen: Option<Vec<String>> = std::env::var("CUDA_VISIBLE_DEVICES")
                .ok()
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
            list.iter()
                .map(|&k| {
                    seen.as_ref()
                        .and_then(|s| s.get(k).cloned())
                        .unwrap_or(k.to_string())
                })
                .collect()
        }
    };
    let port = rendezvous::free_port()?;
    let exe = std::env::current_exe().context("finding this program to start its ranks")?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    // The launcher outlives Ctrl-C, to stop the other ranks once rank 0 has saved.
    ctrlc::set_handler(|| {}).context("installing the Ctrl-C handler")?;
    // NVLink multicast can take every GPU of a shared host out of service: off unless
    // asked for.
    let nvls = std::env::var("NCCL_NVLS_ENABLE").unwrap_or_else(|_| "0".into());
    let mut ranks: Vec<Child> = Vec::with_capacity(n);
    for rank in 0..n {
        let mut command = Command::new(&exe);
        command
            .args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("NCCL_NVLS_ENABLE", &nvls);
        if let Some(gpu) = visible.get(rank) {
            command.env("CUDA_VISIBLE_DEVICES", gpu);
        }
        let child = command.spawn();
        match child {
            Ok(c) => ranks.push(c),
            Err(e) => {
                stop(&mut ranks);
                return Err(e).context(format!("starting rank {rank}"));
            }
        }
    }
    let mut done: Vec<Option<ExitStatus>> = vec![None; n];
    loop {
        for (rank, child) in ranks.iter_mut().enumerate() {
            if done[rank].is_none() {
                done[rank] = child.try_wait().context("waiting for the ranks")?;
            }
        }
        // Rank 0 decides: a failure (or an interrupted run) anywhere ends the run.
        let failed = done
            .iter()
            .enumerate()
            .find_map(|(rank, s)| s.filter(|s| !s.success()).map(|s| (rank, s)));
        if let Some((rank, status)) = failed {
            stop(&mut ranks);
            bail!("rank {rank} of {n} stopped ({status}); the other ranks were stopped too");
        }
        if done.iter().all(Option::is_some) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Stops every rank still running.
fn stop(ranks: &mut [Child]) {
    for child in ranks.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}
