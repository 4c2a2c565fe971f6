//! Several processes, one GPU each: who is who ([`World`], from torchrun's or Slurm's
//! environment), how they find each other ([`rendezvous`]: rank 0's TCP port hands every
//! rank the same bytes, NCCL's unique id; neither needs a GPU), how they talk
//! ([`Communicator`], NCCL's collectives in order with each device's work), which gradients
//! travel while the backward pass runs ([`buckets`]), and the paper's pipeline over time
//! chunks ([`pipeline`]).

pub mod buckets;
pub mod nccl;
pub mod pipeline;
pub mod rendezvous;
pub mod world;

pub use nccl::{Communicator, Reduce};
pub use world::{Launcher, World};

use thiserror::Error;

/// How a model takes part in a run of several ranks: `comm` joins them, `split` says how
/// they share each training step, `bucket_bytes` how its gradients travel.
#[derive(Debug)]
pub struct Parallel {
    /// This process's member of the run's communicator.
    pub comm: Communicator,
    pub split: Split,
    /// Split by batch without synchronised batch-norm, gradients are reduced in buckets of
    /// about this many bytes, each as soon as the backward pass has written it, while the
    /// device computes the rest ([`buckets`]; as PyTorch's DDP, whose `bucket_cap_mb` is 25
    /// by default). 0: in one reduction after the backward pass, which leaves the step free
    /// of NCCL calls, so that it can be replayed from a CUDA graph. Splits whose backward
    /// pass calls NCCL anyway (synchronised batch-norm, a split by time) reduce once after
    /// it: each of those calls would wait for the buckets queued before it.
    pub bucket_bytes: usize,
}

impl Parallel {
    /// PyTorch DDP's default bucket size, 25 MiB.
    pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

    /// `comm`'s rank of a run split as `split`, with gradients in buckets of the default
    /// size.
    pub fn new(comm: Communicator, split: Split) -> Self {
        Self {
            comm,
            split,
            bucket_bytes: Self::DEFAULT_BUCKET_BYTES,
        }
    }
}

/// How the ranks of a run share each training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Data parallelism, as PyTorch's `DistributedDataParallel`: each rank its part of the
    /// batch, the gradients averaged after every backward pass. Training batch-norm takes
    /// the statistics of each rank's part, or with `sync_batch_norm` those of the whole
    /// global batch, as PyTorch's `SyncBatchNorm`.
    Batch { sync_batch_norm: bool },
    /// The temporal-fusion paper's scheme for a whole network: rank k of G its k-th chunk of
    /// the time steps of the whole batch. Every neuron layer takes its states at the start
    /// of the chunk from rank k - 1 and hands its final states to rank k + 1 (the state
    /// adjoints go back the other way); batch-norm takes the statistics of all the chunks
    /// (all of T x B, as one GPU does); the loss sees every rank's outputs; the gradients
    /// are summed over the ranks. Training is that of one GPU over the whole T, to
    /// rounding.
    Time,
}

impl Split {
    /// How the ranks' gradients combine: averaged over parts of the batch (each rank's
    /// loss is a mean over its part), summed over chunks of time (each rank's gradient is
    /// its part of the one loss's).
    pub fn gradients(self) -> Reduce {
        match self {
            Split::Batch { .. } => Reduce::Mean,
            Split::Time => Reduce::Sum,
        }
    }
}

/// Why the processes of a run could not be set up together.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DistError {
    /// A launcher's variable that is missing or cannot be used.
    #[error("{var}{} {problem}", if value.is_empty() { String::new() } else { format!("={value}") })]
    Env {
        var: String,
        value: String,
        problem: String,
    },
    /// The rendezvous failed: a rank missing, refused or unreachable.
    #[error("rendezvous: {0}")]
    Rendezvous(String),
    /// An NCCL call failed.
    #[error("NCCL, {0}")]
    Nccl(String),
}

impl DistError {
    fn env(var: &str, value: &str, problem: &str) -> Self {
        DistError::Env {
            var: var.into(),
            value: value.into(),
            problem: problem.into(),
        }
    }
}
