//! Several processes, one GPU each: who is who ([`World`], from torchrun's or Slurm's
//! environment), how they find each other ([`rendezvous`]: rank 0's TCP port hands every
//! rank the same bytes, NCCL's unique id; neither needs a GPU), how they talk
//! ([`Communicator`], NCCL's collectives on each device's stream), and the paper's
//! pipeline over time chunks ([`pipeline`]).

pub mod nccl;
pub mod pipeline;
pub mod rendezvous;
pub mod world;

pub use nccl::Communicator;
pub use world::{Launcher, World};

use thiserror::Error;

/// How a model takes part in a data-parallel run: gradients averaged over `comm`'s ranks
/// after every backward pass, as PyTorch's `DistributedDataParallel`.
#[derive(Debug)]
pub struct DataParallel {
    /// This process's member of the run's communicator.
    pub comm: Communicator,
    /// Training batch-norm over the whole global batch, as PyTorch's `SyncBatchNorm`, not
    /// over each rank's part (DDP's default).
    pub sync_batch_norm: bool,
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
