//! Timing every node of a model with CUDA events, and where memory peaks.

use cudarc::driver::sys;

use super::*;

impl GpuModel {
    /// Starts (or stops) timing every node with CUDA events. Timing adds a little
    /// overhead per node; [`GpuModel::take_profile`] reads the times.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(Vec::new);
    }

    pub fn is_profiling(&self) -> bool {
        self.profile.is_some()
    }

    /// The time each node took since profiling started (or since the last call), in
    /// node order; waits for the device.
    pub fn take_profile(&mut self) -> Result<Vec<NodeTime>, RuntimeError> {
        let Some(events) = self.profile.as_mut() else {
            return Err(RuntimeError::Order(
                "profiling is off: call `set_profiling(true)` first".into(),
            ));
        };
        let events = std::mem::take(events);
        self.device.synchronize()?;
        let mut times: Vec<NodeTime> = self
            .net
            .nodes()
            .iter()
            .zip(&self.fusion)
            .map(|(n, f)| NodeTime {
                name: n.name.clone(),
                kind: match f {
                    Fusion::Neuron { add: None, .. } => "Neuron+BN",
                    Fusion::Neuron { .. } => "Neuron+BN+Add",
                    Fusion::Absorbed { .. } if matches!(n.op, Op::BatchNorm2d(_)) => "BN stats",
                    _ => n.op.kind(),
                },
                forward_ms: 0.0,
                backward_ms: 0.0,
                forward_bytes: 0,
                backward_bytes: 0,
            })
            .collect();
        for (id, backward, start, end, bytes) in events {
            let ms = f64::from(
                start
                    .elapsed_ms(&end)
                    .map_err(|e| RuntimeError::driver("reading a timing event", e))?,
            );
            let t = &mut times[id];
            if backward {
                t.backward_ms += ms;
                t.backward_bytes = t.backward_bytes.max(bytes);
            } else {
                t.forward_ms += ms;
                t.forward_bytes = t.forward_bytes.max(bytes);
            }
        }
        Ok(times)
    }

    /// Records a timing event, while profiling.
    pub(super) fn mark(&self) -> Result<Option<CudaEvent>, RuntimeError> {
        if self.profile.is_none() {
            return Ok(None);
        }
        let e = self
            .device
            .context()
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| RuntimeError::driver("creating a timing event", e))?;
        e.record(self.device.stream())
            .map_err(|e| RuntimeError::driver("recording a timing event", e))?;
        Ok(Some(e))
    }

    pub(super) fn record(
        &mut self,
        id: usize,
        backward: bool,
        start: Option<CudaEvent>,
    ) -> Result<(), RuntimeError> {
        if let Some(start) = start {
            let end = self.mark()?;
            let bytes = self.device.memory().in_use;
            if let (Some(p), Some(end)) = (self.profile.as_mut(), end) {
                p.push((id, backward, start, end, bytes));
            }
        }
        Ok(())
    }
}
