//! The backward pass: nodes in reverse, each value's gradient collected from its readers,
//! saved tensors freed after their last use.

use super::recompute::{Boundaries, backward_in_chunks};
use super::*;

impl GpuModel {
    /// Writes the gradient of every trained tensor into [`GpuModel::grads`] (overwriting
    /// it), from `grad_output` = dL/d(output), `[T * B, K]`. Consumes the trace: its
    /// tensors return to the pool as soon as the backward pass is done with them. On one
    /// rank of several, the gradients are this rank's until [`GpuModel::reduce_gradients`]
    /// (whose reductions, in buckets, start here).
    pub fn backward(
        &mut self,
        mut trace: GpuTrace,
        grad_output: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        self.device.bind()?;
        let nodes = self.net.nodes().to_vec();
        if trace.mode != Mode::Train || trace.values.len() != nodes.len() {
            return Err(RuntimeError::Order(
                "backward needs the trace of a training forward pass (`Mode::Train`) of this model"
                    .into(),
            ));
        }
        let images = trace.steps * trace.batch;
        let out = self.net.output();
        let out_len = images * nodes[out].shape.len();
        if grad_output.len() != out_len || grad_output.dtype != Dtype::F32 {
            return Err(RuntimeError::invalid(
                "model backward",
                format!(
                    "the output gradient is {} {:?}; the output has {out_len} f32 values",
                    grad_output.dtype, grad_output.shape
                ),
            ));
        }
        let dev = self.device.clone();
        // Tensors not written below (neuron params of fixed-free layers, padding) stay 0.
        self.grads.clear()?;
        // The last node (in reverse order, the first) to read each value frees it.
        let reads: Vec<Vec<usize>> = (0..nodes.len())
            .map(|i| self.fusion[i].reads(&self.net, i))
            .collect();
        let mut first_reader = vec![usize::MAX; nodes.len()];
        for (id, r) in reads.iter().enumerate().rev() {
            for &i in r {
                first_reader[i] = id;
            }
        }
        // A neuron whose backward re-reads its own output reads it last, itself.
        for (id, first) in first_reader.iter_mut().enumerate() {
            if matches!(trace.saved[id], Saved::Neuron(_)) && self.rereads_own_output(id) {
                *first = id;
            }
        }
        // Each value's gradient, and whether its memory is shared with another value's
        // (an add passes one gradient to both inputs): shared ones are never added to in
        // place.
        let mut dvals: Vec<Option<(DeviceTensor, bool)>> = vec![None; nodes.len()];
        dvals[out] = Some((
            grad_output.reshape(
                &trace.values[out]
                    .as_ref()
                    .map_or(vec![out_len], |v| v.shape.clone()),
            )?,
            true,
        ));
        // One rank of several: each gradient bucket travels once it is written.
        let mut bucket = 0;
        for id in (1..nodes.len()).rev() {
            self.reduce_written(&mut bucket, id + 1)?;
            let node = &nodes[id];
            let Some((dy, dy_shared)) = dvals[id].take() else {
                continue;
            };
            // Gradients passed on as they are (flatten, add) keep sharing their memory.
            let passes_dy = matches!(node.op, Op::Flatten | Op::Add);
            let in_shape = node.input_shape(&self.net);
            let shape4 = [images, in_shape.channels, in_shape.height, in_shape.width];
            let wants_dx = node.inputs.first().is_some_and(|&i| i != 0);
            // The input's gradient has the input's dtype.
            let dx_dtype = node.inputs.first().map_or(Dtype::F32, |&i| self.dtypes[i]);
            let start = self.mark()?;
            if self.options.plan != ActivationPlan::All {
                // What the node's backward reads, recomputed where the trace did not keep it.
                let needs = match &node.op {
                    Op::Conv2d(_) | Op::BatchNorm2d(_) | Op::Linear(_) => node.inputs.clone(),
                    Op::Neuron(_) => reads[id].clone(),
                    _ => vec![],
                };
                for i in needs {
                    self.restore(&mut trace, i)?;
                }
            }
            let xin = |k: usize| -> Result<DeviceTensor, RuntimeError> {
                read(&trace.values, &trace.widths, node.inputs[k])?.ok_or_else(|| {
                    RuntimeError::Internal(format!("the input of `{}` was not kept", node.name))
                })
            };
            let saved = std::mem::replace(&mut trace.saved[id], Saved::None);
            let dxs: Vec<DeviceTensor> = match (&node.op, saved) {
                (Op::Input, _) => vec![],
                (Op::Conv2d(_), _) => {
                    let (w, b) = match &self.layers[id] {
                        Layer::Conv { weight, bias, .. } => (*weight, *bias),
                        _ => {
                            return Err(RuntimeError::Internal(
                                "a conv layer without its state".into(),
                            ));
                        }
                    };
                    let (wt, dw) = (self.conv_weight(w)?, self.grad(w)?);
                    let db = b.map(|b| self.grad(b)).transpose()?;
                    let x = xin(0)?;
                    let src = node.inputs[0];
                    // A gradient already collected for the input (from its other
                    // readers) takes this one in the same pass, unless it shares memory.
                    let into = match &dvals[src] {
                        Some((acc, false)) if wants_dx => Some(acc.clone()),
                        _ => None,
                    };
                    let p = self.conv_problem(id, images)?;
                    if wt.dtype == dw.dtype {
                        p.backward_filter(&x, &dy, &dw, db.as_ref())?;
                    } else {
                        // bf16 convolutions: the weight gradient in bf16, widened into the
                        // f32 gradients.
                        let narrow = DeviceTensor::empty(&dev, wt.dtype, &wt.shape)?;
                        p.backward_filter(&x, &dy, &narrow, db.as_ref())?;
                        convert(&dev, &narrow, &dw)?;
                    }
                    match into {
                        Some(acc) => {
                            p.backward_data_into(&dy, &wt, &acc, true)?;
                            vec![]
                        }
                        None if wants_dx => {
                            let dx = DeviceTensor::empty(&dev, dx_dtype, &shape4)?;
                            p.backward_data(&dy, &wt, &dx)?;
                            vec![dx]
                        }
                        None => vec![],
                    }
                }
                (Op::BatchNorm2d(bn), Saved::BatchNorm(saved)) => {
                    let (g, b, ..) = self.batchnorm_layer(id)?;
                    let dx = DeviceTensor::empty(&dev, dx_dtype, &shape4)?;
                    batchnorm_backward(
                        &dev,
                        bn,
                        in_shape,
                        images,
                        &xin(0)?,
                        &self.weight(g)?,
                        &saved,
                        &dy,
                        &dx,
                        &self.grad(g)?,
                        &self.grad(b)?,
                        self.bn_sync(),
                    )?;
                    vec![dx]
                }
                (Op::Neuron(_), saved @ (Saved::Neuron(_) | Saved::Starts(_))) => {
                    let Layer::Neuron { layer, learnable } = &self.layers[id] else {
                        return Err(RuntimeError::Internal(
                            "a neuron layer without its state".into(),
                        ));
                    };
                    let (steps, n) = (trace.steps, trace.batch * node.shape.len());
                    let dys = dy.reshape(&[steps, n])?;
                    // The inputs the backward kernel re-reads (all of them when it recomputes
                    // in chunks); for the others, any tensor of the right shape.
                    let plan = &layer.compiled().plan;
                    let chunked = matches!(saved, Saved::Starts(_));
                    let xs = reads[id]
                        .iter()
                        .enumerate()
                        .map(|(k, &i)| {
                            let reread = chunked || plan.reread_inputs.contains(&(k as u32));
                            match reread.then(|| trace.read(i)).transpose()?.flatten() {
                                Some(x) => x.reshape(&[steps, n]),
                                None => Ok(dys.clone()),
                            }
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let xs: Vec<&DeviceTensor> = xs.iter().collect();
                    // Split by time: the states this chunk started from, and the adjoints
                    // of its final states from the next rank.
                    let init = trace.inits[id].take();
                    let later = self.adjoints_from_next(layer.neuron().states.len(), n)?;
                    let (init, later) = (refs(&init), refs(&later));
                    let (init, later) = (init.as_deref(), later.as_deref());
                    let g = match saved {
                        Saved::Starts(starts) => {
                            let chunk = self.options.plan.time_chunk()?.unwrap_or(steps);
                            let bounds = Boundaries {
                                init,
                                starts: &starts,
                                later,
                            };
                            backward_in_chunks(layer, &xs, &dys, bounds, chunk)?
                        }
                        Saved::Neuron(mut fwd) => {
                            // Its own output, as the trace kept it.
                            if !plan.reread_outputs.is_empty() {
                                let own = trace.read(id)?.ok_or_else(|| {
                                    RuntimeError::Internal(format!(
                                        "`{}` kept no output to re-read",
                                        node.name
                                    ))
                                })?;
                                fwd.outputs.push(own.reshape(&[steps, n])?);
                            }
                            let mut g = layer.alloc_backward(steps, n)?;
                            layer.backward_into(&xs, init, &fwd, &[&dys], later, &mut g)?;
                            g
                        }
                        _ => return Err(RuntimeError::Internal("no neuron trace".into())),
                    };
                    self.adjoints_to_before(&g.init_states)?;
                    let ir = layer.neuron();
                    let param_grad = |name: &str| {
                        ir.param_index(name)
                            .and_then(|k| g.params[k].clone())
                            .ok_or_else(|| {
                                RuntimeError::Internal(format!("no gradient for param `{name}`"))
                            })
                    };
                    for (name, slot) in learnable {
                        let pg = param_grad(name)?;
                        self.grad(*slot)?.reshape(&pg.shape)?.copy_from(&pg)?;
                    }
                    let dxs = g
                        .inputs
                        .iter()
                        .map(|t| t.reshape(&shape4))
                        .collect::<Result<Vec<_>, _>>()?;
                    if let Fusion::Neuron { bn, x, .. } = self.fusion[id] {
                        let (grad_scale, grad_shift) =
                            (param_grad(BN_SCALE)?, param_grad(BN_SHIFT)?);
                        let saved = std::mem::replace(&mut trace.saved[bn], Saved::None);
                        let (
                            Saved::FusedBn {
                                saved: Some(saved),
                                scale,
                                ..
                            },
                            Layer::BatchNorm { gamma, beta, .. },
                            Op::BatchNorm2d(desc),
                        ) = (saved, &self.layers[bn], &nodes[bn].op)
                        else {
                            return Err(RuntimeError::Internal(format!(
                                "`{}` kept no batch statistics",
                                nodes[bn].name
                            )));
                        };
                        let xv = trace.read(x)?.ok_or_else(|| {
                            RuntimeError::Internal(format!(
                                "the input of `{}` was not kept",
                                nodes[bn].name
                            ))
                        })?;
                        batchnorm_backward_fused(
                            &dev,
                            desc,
                            nodes[bn].shape,
                            images,
                            &xv,
                            &saved,
                            &scale,
                            &grad_scale,
                            &grad_shift,
                            &dxs[0],
                            &self.grad(*gamma)?,
                            &self.grad(*beta)?,
                            self.bn_sync(),
                        )?;
                        self.unbind_fused(id)?;
                    }
                    dxs
                }
                (Op::MaxPool2d(pool), Saved::MaxPool(argmax)) => {
                    let dx = DeviceTensor::empty(&dev, dx_dtype, &shape4)?;
                    maxpool2d_backward(&dev, pool, in_shape, images, &argmax, &dy, &dx)?;
                    vec![dx]
                }
                (Op::GlobalAvgPool, _) => {
                    let dx = DeviceTensor::empty(&dev, dx_dtype, &shape4)?;
                    global_avgpool_backward(&dev, in_shape, images, &dy, &dx)?;
                    vec![dx]
                }
                (Op::Flatten, _) => vec![dy.reshape(&shape4)?],
                (Op::Linear(l), _) => {
                    let (w, b) = match &self.layers[id] {
                        Layer::Linear { weight, bias } => (*weight, *bias),
                        _ => {
                            return Err(RuntimeError::Internal(
                                "a linear layer without its state".into(),
                            ));
                        }
                    };
                    let dx = wants_dx
                        .then(|| DeviceTensor::empty(&dev, Dtype::F32, &shape4))
                        .transpose()?;
                    let blas = self
                        .cublas
                        .as_ref()
                        .ok_or_else(|| RuntimeError::Internal("no cuBLAS handle".into()))?;
                    linear_backward(
                        blas,
                        l,
                        images,
                        &as_dtype(&dev, &xin(0)?, Dtype::F32)?,
                        &self.weight(w)?,
                        &dy,
                        dx.as_ref(),
                        &self.grad(w)?,
                        b.map(|b| self.grad(b)).transpose()?.as_ref(),
                    )?;
                    // A bf16 input (the flattened features of bf16 layers) takes its
                    // gradient in bf16.
                    dx.map(|dx| as_dtype(&dev, &dx, dx_dtype))
                        .transpose()?
                        .into_iter()
                        .collect()
                }
                (Op::Add, _) => vec![dy.clone(), dy],
                (op, _) => {
                    return Err(RuntimeError::Internal(format!(
                        "`{}` ({}) kept nothing for the backward pass",
                        node.name,
                        op.kind()
                    )));
                }
            };
            let shared = passes_dy && (dy_shared || node.inputs.len() > 1);
            for (&src, d) in reads[id].iter().zip(dxs) {
                if src == 0 {
                    continue;
                }
                dvals[src] = Some(match dvals[src].take() {
                    None => (d, shared),
                    Some((acc, false)) => {
                        add_assign(&dev, &acc, &d)?;
                        (acc, false)
                    }
                    Some((acc, true)) => {
                        let sum = DeviceTensor::empty(&dev, acc.dtype, &acc.shape)?;
                        add(&dev, &acc, &d, &sum)?;
                        (sum, false)
                    }
                });
            }
            self.record(id, true, start)?;
            for &i in &reads[id] {
                if first_reader[i] == id {
                    trace.values[i] = None;
                }
            }
            trace.values[id] = None;
        }
        self.reduce_written(&mut bucket, 0)
    }
}

/// Borrows of some tensors, as the kernels' launches take them.
fn refs(tensors: &Option<Vec<DeviceTensor>>) -> Option<Vec<&DeviceTensor>> {
    tensors.as_ref().map(|t| t.iter().collect())
}
