//! The model as one rank of a run of several ([`Parallel`]): how its ranks share each
//! step, and its gradients' reduction over them, in buckets while the backward pass runs
//! where nothing else in it calls NCCL ([`crate::dist::buckets`]).

use super::*;

impl GpuModel {
    /// Makes the model one rank of a run of several (whose communicator the trainer
    /// reduces gradients over: [`crate::nn::GpuTrainer::parallel`]). Split by batch,
    /// training batch-norm takes the statistics of all ranks' batches with
    /// `sync_batch_norm` (see [`crate::nn::kernels::batchnorm_forward`]), else its own
    /// rank's; split by time, those of all ranks' chunks, and every neuron layer hands its
    /// states on to the next rank ([`Split::Time`]).
    pub fn join(&mut self, parallel: Parallel) -> Result<(), RuntimeError> {
        if !Arc::ptr_eq(parallel.comm.device(), &self.device) {
            return Err(RuntimeError::invalid(
                "parallel training",
                "the communicator belongs to another device than the model",
            ));
        }
        // Other NCCL calls in the backward pass (synchronised batch-norm, the hand-offs of a
        // split by time) would each wait for the buckets queued before them, on the one
        // stream that keeps the ranks' calls in order: the gradients then travel once, after
        // it.
        let alone = parallel.split
            == Split::Batch {
                sync_batch_norm: false,
            };
        let bucket_bytes = if alone { parallel.bucket_bytes } else { 0 };
        self.buckets = gradient_buckets(&self.slots, &self.fusion, self.grads.len(), bucket_bytes);
        self.parallel = Some(parallel);
        Ok(())
    }

    /// Whether a training step calls NCCL before its backward pass ends (synchronised
    /// batch-norm, a split by time, gradient buckets): such steps run launch by launch,
    /// not replayed from a CUDA graph.
    pub fn talks_during_step(&self) -> bool {
        self.syncs_batch_norm() || !self.buckets.is_empty()
    }

    /// The gradient buckets the backward pass reduces while it runs.
    pub fn gradient_buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// After the backward pass of one rank of several: makes the gradients those of the
    /// whole run (the device's later work waits for the buckets reduced during the
    /// backward pass, or the whole buffer is reduced now). Nothing for a model of its own.
    pub fn reduce_gradients(&self) -> Result<(), RuntimeError> {
        match &self.parallel {
            None => Ok(()),
            Some(p) if self.buckets.is_empty() => {
                p.comm.all_reduce(&self.grads, p.split.gradients())
            }
            Some(p) => p.comm.catch_up(),
        }
    }

    /// Starts reducing, in the background and in order, the gradient buckets not started
    /// yet that the backward pass has written all of once it has run every node from
    /// `ran_down_to` up.
    pub(super) fn reduce_written(
        &self,
        next: &mut usize,
        ran_down_to: usize,
    ) -> Result<(), RuntimeError> {
        let Some(p) = &self.parallel else {
            return Ok(());
        };
        while let Some(b) = self.buckets.get(*next) {
            if b.written_by < ran_down_to {
                break;
            }
            let t = self.grads.view(b.range.start, &[b.range.len()])?;
            p.comm.all_reduce_in_background(&t, p.split.gradients())?;
            *next += 1;
        }
        Ok(())
    }

    /// The run of several ranks the model is one of, if any.
    pub fn communicator(&self) -> Option<&Communicator> {
        self.parallel.as_ref().map(|p| &p.comm)
    }

    /// How the ranks of its run share each step, if the model is one of several.
    pub fn split(&self) -> Option<Split> {
        self.parallel.as_ref().map(|p| p.split)
    }

    /// Whether training batch-norm takes the statistics of all ranks' values.
    pub fn syncs_batch_norm(&self) -> bool {
        self.bn_sync().is_some()
    }

    /// The communicator batch-norm synchronises over, if it does.
    pub(super) fn bn_sync(&self) -> Option<&Communicator> {
        let p = self.parallel.as_ref()?;
        match p.split {
            Split::Batch {
                sync_batch_norm: true,
            }
            | Split::Time => Some(&p.comm),
            Split::Batch { .. } => None,
        }
    }

    /// Split by time: the communicator, this rank and the rank count.
    pub(crate) fn time_stage(&self) -> Option<(&Communicator, usize, usize)> {
        let p = self.parallel.as_ref().filter(|p| p.split == Split::Time)?;
        Some((&p.comm, p.comm.world().rank, p.comm.world().size))
    }
}

/// The gradient buckets of a flat buffer of `len` values holding `slots`, for nodes run as
/// `fusion` says, of about `bytes` each (none for 0: one reduction of the whole buffer).
pub(super) fn gradient_buckets(
    slots: &[Slot],
    fusion: &[Fusion],
    len: usize,
    bytes: usize,
) -> Vec<Bucket> {
    if bytes == 0 {
        return Vec::new();
    }
    // A fused batch-norm's gradients are written by the neuron it runs in.
    let writer = |node| match fusion[node] {
        Fusion::Absorbed { into } => into,
        _ => node,
    };
    let tensors: Vec<_> = slots
        .iter()
        .map(|s| (s.offset..s.offset + s.len(), writer(s.node)))
        .collect();
    buckets::plan(&tensors, len, bytes / Dtype::F32.size())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use snn_codegen::zoo;
    use snn_nn::models::spiking_resnet;

    /// Spiking-ResNet18's gradients, as the fused GPU model writes them: its tensors lie in
    /// the network's order, which the backward pass runs backwards (but for a residual
    /// block's batch-norm fused into the neuron after the add), so that a bucket is
    /// complete early; with DDP's 25 MiB, the first of its two buckets (most of layer4)
    /// travels while layers 3 to 1 and the stem run.
    #[test]
    fn resnet18_gradients_travel_from_the_last_layers_on() {
        let net = spiking_resnet(
            18,
            ImageShape::new(3, 32, 32),
            10,
            &zoo::PaperLif::default(),
        )
        .unwrap();
        let (slots, len) = layout(&net);
        let fusion = fusion::plan(&net, true);
        assert_eq!(gradient_buckets(&slots, &fusion, len, 0), vec![]);
        for bytes in [1, 1 << 20, Parallel::DEFAULT_BUCKET_BYTES] {
            let buckets = gradient_buckets(&slots, &fusion, len, bytes);
            for pair in buckets.windows(2) {
                assert_eq!(pair[0].range.start, pair[1].range.end);
            }
            assert_eq!(buckets[0].range.end, len);
            // Every fused batch-norm's tensors are written by its neuron, after its slot.
            for s in &slots {
                let b = buckets
                    .iter()
                    .find(|b| b.range.contains(&s.offset))
                    .unwrap();
                let writer = match fusion[s.node] {
                    Fusion::Absorbed { into } => {
                        assert!(matches!(net.node(into).op, Op::Neuron(_)));
                        into
                    }
                    _ => s.node,
                };
                assert!(writer >= b.written_by, "{}", s.name);
            }
        }
        let buckets = gradient_buckets(&slots, &fusion, len, Parallel::DEFAULT_BUCKET_BYTES);
        assert_eq!(buckets.len(), 2, "{buckets:?}");
        let first = &net.node(buckets[0].written_by).name;
        assert!(first.starts_with("layer4."), "{first}");
        // One bucket per tensor when asked for the least.
        let one_each = gradient_buckets(&slots, &fusion, len, 1);
        assert_eq!(one_each.len(), slots.len());
    }
}
