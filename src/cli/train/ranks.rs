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
/// it trains alone. `--gpus N` under a launcher must say what the launcher does.
pub fn world(gpus: Option<usize>) -> Result<Option<World>> {
    let world = World::from_env().context("reading the launcher's variables")?;
    if world.size == 1 {
        return Ok(None);
    }
    if let Some(n) = gpus
        && n != world.size
    {
        bail!(
            "--gpus {n}, but {} started {} processes (WORLD_SIZE): leave --gpus out under a launcher",
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

/// Runs this command again as `n` ranks on GPUs `0..n` of this machine, meeting on a free
/// local port, and waits for them: the first rank to fail stops the others (they would wait
/// for it forever), and its failure is this command's. Ctrl-C reaches every rank (one
/// terminal, one process group); rank 0 then writes `last.safetensors` and stops, and the
/// others are stopped after it.
pub fn launch(n: usize) -> Result<()> {
    let count = Device::count().context("--gpus needs CUDA GPUs")?;
    if n > count {
        bail!("--gpus {n}: this machine has {count} CUDA GPU(s)");
    }
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
        let child = Command::new(&exe)
            .args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("NCCL_NVLS_ENABLE", &nvls)
            .spawn();
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
