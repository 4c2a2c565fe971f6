//! What a training forward pass keeps for its backward pass: every activation, or only the
//! spikes (one byte each) and the neurons' states every few steps, the rest recomputed.
//! The CPU reference and the GPU model follow the same plans, with the same results.

use crate::error::NnError;
use crate::graph::{Network, NodeId, Op};

/// What a training forward pass keeps for the backward pass. Both plans give the same
/// gradients: bit for bit, but for learnable neuron parameters, whose sums over time the
/// chunks split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ActivationPlan {
    /// Every activation the backward reads, every neuron's saves, every max-pool's argmax:
    /// the backward recomputes nothing.
    #[default]
    All,
    /// The input, the output and the neurons' outputs only (spikes, exactly -1, 0 or 1, in
    /// one byte each), the batch statistics, and each neuron's states every `time_chunk`
    /// steps. The backward recomputes every other activation from these, layer by layer,
    /// and each neuron's saves one time chunk at a time, latest first, handing the state
    /// adjoints back from chunk to chunk. Batch-norm keeps the statistics of the whole
    /// T x B: each layer's forward runs over all of T before the next layer's, and the
    /// recomputation normalises with the statistics the forward took.
    Spikes { time_chunk: usize },
}

impl ActivationPlan {
    /// The time chunk of [`ActivationPlan::Spikes`] (at least 1), or `None` for
    /// [`ActivationPlan::All`].
    pub fn time_chunk(self) -> Result<Option<usize>, NnError> {
        match self {
            ActivationPlan::All => Ok(None),
            ActivationPlan::Spikes { time_chunk: 0 } => Err(NnError::Config(
                "a time chunk of 0 steps: use at least 1 (the whole run is one chunk when it is T or more)"
                    .into(),
            )),
            ActivationPlan::Spikes { time_chunk } => Ok(Some(time_chunk)),
        }
    }

    /// Whether [`ActivationPlan::Spikes`] keeps node `id`'s output: the input, the output
    /// and the neurons' outputs, from which every other activation is recomputed.
    pub fn spikes_keep(net: &Network, id: NodeId) -> bool {
        id == 0 || id + 1 == net.nodes().len() || matches!(net.node(id).op, Op::Neuron(_))
    }
}
