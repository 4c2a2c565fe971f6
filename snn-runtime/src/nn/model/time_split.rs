//! A model split by time ([`Split::Time`]): the hand-offs of neuron states between the
//! ranks that hold neighbouring chunks of the time steps, over NCCL on the device's stream.
//! States and their adjoints cross in f32, as the kernels keep them.

use super::*;

impl GpuModel {
    /// The states this rank's chunk of a neuron layer starts from (`count` of `n` f32
    /// each): the previous rank's final ones. `None` on the first rank, or unsplit.
    pub(super) fn states_from_before(
        &self,
        count: usize,
        n: usize,
    ) -> Result<Option<Vec<DeviceTensor>>, RuntimeError> {
        match self.time_stage() {
            Some((comm, rank, _)) if rank > 0 => comm.recv_new(count, n, rank - 1).map(Some),
            _ => Ok(None),
        }
    }

    /// Hands a neuron layer's final states to the next rank (nothing on the last one).
    pub(super) fn states_to_next(&self, finals: &[DeviceTensor]) -> Result<(), RuntimeError> {
        match self.time_stage() {
            Some((comm, rank, size)) if rank + 1 < size => {
                finals.iter().try_for_each(|s| comm.send(s, rank + 1))
            }
            _ => Ok(()),
        }
    }

    /// The adjoints of a neuron layer's final states on this rank: the next rank's
    /// initial-state adjoints. `None` (zero) on the last rank, or unsplit.
    pub(super) fn adjoints_from_next(
        &self,
        count: usize,
        n: usize,
    ) -> Result<Option<Vec<DeviceTensor>>, RuntimeError> {
        match self.time_stage() {
            Some((comm, rank, size)) if rank + 1 < size => {
                comm.recv_new(count, n, rank + 1).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Hands a neuron layer's initial-state adjoints to the previous rank (nothing on the
    /// first one).
    pub(super) fn adjoints_to_before(&self, grads: &[DeviceTensor]) -> Result<(), RuntimeError> {
        match self.time_stage() {
            Some((comm, rank, _)) if rank > 0 => {
                grads.iter().try_for_each(|g| comm.send(g, rank - 1))
            }
            _ => Ok(()),
        }
    }
}
