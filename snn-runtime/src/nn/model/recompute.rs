//! The backward pass under [`ActivationPlan::Spikes`]: outputs the forward pass did not
//! keep are recomputed from the kept spikes and the saved batch statistics, and each
//! neuron's saves one time chunk at a time, latest first, with the state adjoints handed
//! back from chunk to chunk.

use super::*;
use crate::layer::LayerGradients;

impl GpuModel {
    /// Makes sure node `id`'s output is in the trace, recomputing it (and what it reads)
    /// where the training pass did not keep it. The backward pass frees it after its
    /// first reader, as any other value.
    pub(super) fn restore(&mut self, trace: &mut GpuTrace, id: usize) -> Result<(), RuntimeError> {
        if trace.values[id].is_some() {
            return Ok(());
        }
        let node = self.net.node(id).clone();
        if self.fusion[id] != Fusion::Plain || matches!(node.op, Op::Input | Op::Neuron(_)) {
            return Err(RuntimeError::Internal(format!(
                "`{}` was neither kept nor can be recomputed on its own",
                node.name
            )));
        }
        for &i in &node.inputs {
            self.restore(trace, i)?;
        }
        let inputs = node
            .inputs
            .iter()
            .map(|&i| {
                trace.read(i)?.ok_or_else(|| {
                    RuntimeError::Internal(format!("the input of `{}` was not restored", node.name))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (steps, images) = (trace.steps, trace.steps * trace.batch);
        let s = node.shape;
        let shape4 = [images, s.channels, s.height, s.width];
        let y = if matches!(node.op, Op::Flatten) {
            inputs[0].reshape(&shape4)?
        } else {
            let y = DeviceTensor::empty(&self.device, self.dtypes[id], &shape4)?;
            let in_shape = node.input_shape(&self.net);
            self.forward_node(
                id,
                &node,
                &node.op,
                in_shape,
                images,
                steps,
                &inputs,
                &y,
                Pass::Replay,
                trace,
            )?;
            y
        };
        trace.values[id] = Some(y);
        Ok(())
    }
}

/// The states at a chunked run's boundaries: those it started from (`init`, else the
/// declared ones), those at the start of each time chunk but the first (`starts`), and the
/// adjoints of its final states (`later`, else zero).
pub(super) struct Boundaries<'a> {
    pub init: Option<&'a [&'a DeviceTensor]>,
    pub starts: &'a [Vec<DeviceTensor>],
    pub later: Option<&'a [&'a DeviceTensor]>,
}

/// The backward of `layer` over inputs `xs` (`[T, N]` each) and output gradient `dys`,
/// from the states at its `bounds`: chunk by chunk, latest first, each chunk's training forward
/// recomputed for its saves, its state adjoints handed to the chunk before, the param
/// gradients summed over the chunks. The layer's params (a fused batch-norm's too) must be
/// bound as in the forward pass.
pub(super) fn backward_in_chunks(
    layer: &NeuronLayer,
    xs: &[&DeviceTensor],
    dys: &DeviceTensor,
    bounds: Boundaries,
    chunk: usize,
) -> Result<LayerGradients, RuntimeError> {
    let (steps, n) = (dys.shape[0], dys.shape[1]);
    let dev = layer.device();
    let Boundaries {
        init,
        starts,
        later,
    } = bounds;
    let mut whole = layer.alloc_backward(steps, n)?;
    let mut carried: Option<Vec<DeviceTensor>> =
        later.map(|s| s.iter().map(|&t| t.clone()).collect());
    let chunks: Vec<usize> = (0..steps).step_by(chunk).collect();
    for (c, &t0) in chunks.iter().enumerate().rev() {
        let len = chunk.min(steps - t0);
        let view = |t: &DeviceTensor| t.view(t0 * n, &[len, n]);
        let views = xs.iter().map(|x| view(x)).collect::<Result<Vec<_>, _>>()?;
        let views: Vec<&DeviceTensor> = views.iter().collect();
        let init: Option<Vec<&DeviceTensor>> = match c.checked_sub(1) {
            Some(k) => Some(
                starts
                    .get(k)
                    .ok_or_else(|| {
                        RuntimeError::Internal(format!(
                            "{} chunk states kept for {} chunks",
                            starts.len(),
                            chunks.len()
                        ))
                    })?
                    .iter()
                    .collect(),
            ),
            None => init.map(<[_]>::to_vec),
        };
        let mut fwd = layer.alloc_forward(len, n, true)?;
        layer.forward_into(&views, init.as_deref(), true, &mut fwd)?;
        let mut g: LayerGradients = layer.gradients_in(
            n,
            whole.inputs.iter().map(view).collect::<Result<_, _>>()?,
            (0..layer.neuron().states.len())
                .map(|_| DeviceTensor::empty(dev, Dtype::F32, &[n]))
                .collect::<Result<_, _>>()?,
            // The same tensors for every chunk: the backward adds to them.
            whole.params.clone(),
        )?;
        let later: Option<Vec<&DeviceTensor>> = carried.as_ref().map(|s| s.iter().collect());
        let dy = view(dys)?;
        layer.backward_into(
            &views,
            init.as_deref(),
            &fwd,
            &[&dy],
            later.as_deref(),
            &mut g,
        )?;
        carried = Some(g.init_states);
    }
    whole.init_states = carried.unwrap_or_default();
    Ok(whole)
}
