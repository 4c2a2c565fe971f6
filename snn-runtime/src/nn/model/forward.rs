//! The forward pass: every node in order, fused batch-norms' statistics at their place,
//! values freed as soon as their last reader ran (unless the backward pass needs them).

use super::*;

impl GpuModel {
    /// The convolution problem of node `id` for `images` images (built once per size).
    pub(super) fn conv_problem(
        &mut self,
        id: usize,
        images: usize,
    ) -> Result<&ConvGpu, RuntimeError> {
        let node = self.net.node(id).clone();
        let input = node.input_shape(&self.net);
        let (cudnn, math) = (self.cudnn.clone(), self.options.conv_math);
        let Layer::Conv { problem, .. } = &mut self.layers[id] else {
            return Err(RuntimeError::Internal(format!(
                "`{}` is not a convolution",
                node.name
            )));
        };
        let Op::Conv2d(conv) = &node.op else {
            return Err(RuntimeError::Internal(format!(
                "`{}` is not a convolution",
                node.name
            )));
        };
        if problem.as_ref().is_none_or(|(n, _)| *n != images) {
            let cudnn = cudnn.ok_or_else(|| RuntimeError::Internal("no cuDNN handle".into()))?;
            *problem = Some((images, ConvGpu::new(&cudnn, conv, input, images, math)?));
        }
        match problem {
            Some((_, p)) => Ok(p),
            None => Err(RuntimeError::Internal("no convolution problem".into())),
        }
    }

    /// The part of a fused batch-norm that runs at its place in the graph: batch
    /// statistics (training; running ones updated) and the per-channel scale the neuron
    /// applies (`gamma * inv_std`, from the running variance in eval).
    #[allow(clippy::too_many_arguments)]
    fn fused_statistics(
        &mut self,
        id: usize,
        bn: &snn_nn::BatchNorm2d,
        in_shape: ImageShape,
        images: usize,
        x: &DeviceTensor,
        train: bool,
        trace: &mut GpuTrace,
    ) -> Result<(), RuntimeError> {
        let dev = self.device.clone();
        let (gamma, _, running_mean, running_var) = self.batchnorm_layer(id)?;
        let g = self.weight(gamma)?;
        let scale = DeviceTensor::empty(&dev, Dtype::F32, &[bn.channels])?;
        let fused = if train {
            let saved = BatchNormSaved::new(&dev, bn.channels)?;
            batchnorm_statistics(
                &dev,
                bn,
                in_shape,
                images,
                x,
                running_mean,
                running_var,
                &saved,
                self.bn_sync(),
            )?;
            batchnorm_scale(&dev, bn, &g, &saved.inv_std, false, &scale)?;
            Saved::FusedBn {
                mean: saved.mean.clone(),
                saved: Some(saved),
                scale,
            }
        } else {
            batchnorm_scale(&dev, bn, &g, running_var, true, &scale)?;
            Saved::FusedBn {
                saved: None,
                mean: running_mean.clone(),
                scale,
            }
        };
        trace.saved[id] = fused;
        if train && let Layer::BatchNorm { batches, .. } = &mut self.layers[id] {
            *batches += 1;
        }
        Ok(())
    }

    /// Points the fused neuron `id` at batch-norm `bn`'s mean, scale and shift.
    fn bind_fused(&mut self, id: usize, bn: usize, trace: &GpuTrace) -> Result<(), RuntimeError> {
        let (Saved::FusedBn { mean, scale, .. }, Layer::BatchNorm { beta, .. }) =
            (&trace.saved[bn], &self.layers[bn])
        else {
            return Err(RuntimeError::Internal(format!(
                "`{}` ran before its batch-norm's statistics",
                self.net.node(id).name
            )));
        };
        let shift = self.weight(*beta)?;
        let (mean, scale) = (mean.clone(), scale.clone());
        let Layer::Neuron { layer, .. } = &mut self.layers[id] else {
            return Err(RuntimeError::Internal(
                "a neuron layer without its state".into(),
            ));
        };
        layer.bind_param(BN_MEAN, &mean)?;
        layer.bind_param(BN_SCALE, &scale)?;
        layer.bind_param(BN_SHIFT, &shift)
    }

    /// Counts a training forward pass that a CUDA graph replayed: its launches ran, but not
    /// the host code that counts each batch-norm's batches (`num_batches_tracked`).
    pub(crate) fn count_replayed_forward(&mut self) {
        self.batch_counts().iter_mut().for_each(|b| **b += 1);
    }

    /// Each batch-norm's count of training batches, to restore after a capture that
    /// failed (its forward counted a batch that never ran).
    pub(crate) fn batch_counts(&mut self) -> Vec<&mut u64> {
        self.layers
            .iter_mut()
            .filter_map(|layer| match layer {
                Layer::BatchNorm { batches, .. } => Some(batches),
                _ => None,
            })
            .collect()
    }

    /// Lets the fused neuron `id` forget its batch-norm's tensors once its backward pass
    /// has run, so that no buffer of a step outlives it (a CUDA graph holds the step's
    /// buffers for its replays; see [`crate::graph`]).
    pub(super) fn unbind_fused(&mut self, id: usize) -> Result<(), RuntimeError> {
        let Layer::Neuron { layer, .. } = &mut self.layers[id] else {
            return Err(RuntimeError::Internal(
                "a neuron layer without its state".into(),
            ));
        };
        for name in [BN_MEAN, BN_SCALE, BN_SHIFT] {
            layer.unbind_param(name)?;
        }
        Ok(())
    }

    /// Runs the network on `x`, `[T, B, C, H, W]` (or any shape of that many f32
    /// values), time-major. In [`Mode::Train`] batch-norm uses batch statistics and
    /// updates its running ones, and the trace keeps what [`GpuModel::backward`] needs.
    pub fn forward(
        &mut self,
        x: &DeviceTensor,
        steps: usize,
        batch: usize,
        mode: Mode,
    ) -> Result<GpuTrace, RuntimeError> {
        self.device.bind()?;
        let images = steps * batch;
        let input = self.net.input_shape();
        if x.dtype != Dtype::F32 || x.len() != images * input.len() || images == 0 {
            return Err(RuntimeError::invalid(
                "model forward",
                format!(
                    "the input is {} {:?}; {steps} steps x {batch} images of {input} need f32 [{steps}, {batch}, {}, {}, {}] (and neither may be 0)",
                    x.dtype, x.shape, input.channels, input.height, input.width
                ),
            ));
        }
        let train = mode == Mode::Train;
        self.options.plan.time_chunk()?;
        let n = self.net.nodes().len();
        let reads: Vec<Vec<usize>> = (0..n).map(|i| self.fusion[i].reads(&self.net, i)).collect();
        let mut uses = vec![0usize; n];
        reads.iter().flatten().for_each(|&i| uses[i] += 1);
        let mut trace = GpuTrace {
            steps,
            batch,
            mode,
            values: vec![None; n],
            widths: vec![None; n],
            saved: (0..n).map(|_| Saved::None).collect(),
            inits: vec![None; n],
        };
        let dev = self.device.clone();
        if let Some(narrow) = &self.params_bf16 {
            convert(&dev, &self.params, narrow)?;
        }
        for (id, reads_id) in reads.iter().enumerate() {
            let node = self.net.node(id).clone();
            let in_shape = node.input_shape(&self.net);
            let shape4 = |s: ImageShape| [images, s.channels, s.height, s.width];
            let xin = |k: usize| -> Result<DeviceTensor, RuntimeError> {
                trace.values[node.inputs[k]].clone().ok_or_else(|| {
                    RuntimeError::Internal(format!("the input of `{}` was freed", node.name))
                })
            };
            let y = match (&node.op, self.fusion[id]) {
                (Op::Input, _) => Some(as_dtype(
                    &dev,
                    &x.reshape(&shape4(input))?,
                    self.dtypes[id],
                )?),
                (Op::Flatten, _) => Some(xin(0)?.reshape(&shape4(node.shape))?),
                (Op::BatchNorm2d(bn), Fusion::Absorbed { .. }) => {
                    let start = self.mark()?;
                    self.fused_statistics(id, bn, in_shape, images, &xin(0)?, train, &mut trace)?;
                    self.record(id, false, start)?;
                    None
                }
                (_, Fusion::Absorbed { .. }) => None,
                (op, fusion) => {
                    let y = DeviceTensor::empty(&dev, self.dtypes[id], &shape4(node.shape))?;
                    let start = self.mark()?;
                    let inputs = reads_id
                        .iter()
                        .map(|&i| {
                            trace.values[i].clone().ok_or_else(|| {
                                RuntimeError::Internal(format!(
                                    "the input of `{}` was freed",
                                    node.name
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if let Fusion::Neuron { bn, .. } = fusion {
                        self.bind_fused(id, bn, &trace)?;
                    }
                    let pass = if train { Pass::Train } else { Pass::Inference };
                    self.forward_node(
                        id, &node, op, in_shape, images, steps, &inputs, &y, pass, &mut trace,
                    )?;
                    self.record(id, false, start)?;
                    Some(y)
                }
            };
            trace.values[id] = y;
            // Free inputs nobody reads any more (unless the backward pass needs them: then
            // spikes may go to one byte).
            for &i in reads_id {
                uses[i] -= 1;
                if uses[i] > 0 || self.options.keep_activations {
                    continue;
                }
                if !(train && self.kept(i)) {
                    trace.values[i] = None;
                } else if self.kept_in_bytes(i) {
                    trace.narrow(i)?;
                }
            }
        }
        Ok(trace)
    }

    /// Node `id`'s forward on `inputs` into `y`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_node(
        &mut self,
        id: usize,
        node: &Node,
        op: &Op,
        in_shape: ImageShape,
        images: usize,
        steps: usize,
        inputs: &[DeviceTensor],
        y: &DeviceTensor,
        pass: Pass,
        trace: &mut GpuTrace,
    ) -> Result<(), RuntimeError> {
        let train = pass == Pass::Train;
        let dev = self.device.clone();
        let x = inputs
            .first()
            .ok_or_else(|| RuntimeError::Internal(format!("`{}` has no input", node.name)))?;
        match op {
            Op::Input | Op::Flatten => {}
            Op::Conv2d(_) => {
                let (w, b) = match &self.layers[id] {
                    Layer::Conv { weight, bias, .. } => (*weight, *bias),
                    _ => {
                        return Err(RuntimeError::Internal(
                            "a conv layer without its state".into(),
                        ));
                    }
                };
                let (w, b) = (self.conv_weight(w)?, b.map(|b| self.weight(b)).transpose()?);
                self.conv_problem(id, images)?
                    .forward(x, &w, b.as_ref(), y)?;
            }
            Op::BatchNorm2d(bn) => {
                let (gamma, beta, running_mean, running_var) = self.batchnorm_layer(id)?;
                let (g, b) = (self.weight(gamma)?, self.weight(beta)?);
                if pass == Pass::Replay {
                    let Saved::BatchNorm(saved) = &trace.saved[id] else {
                        return Err(RuntimeError::Internal(format!(
                            "`{}` kept no batch statistics to recompute its output with",
                            node.name
                        )));
                    };
                    return batchnorm_replay(&dev, bn, in_shape, images, x, (&g, &b), saved, y);
                }
                let params = BatchNormParams {
                    gamma: &g,
                    beta: &b,
                    running_mean,
                    running_var,
                };
                let saved = train
                    .then(|| BatchNormSaved::new(&dev, bn.channels))
                    .transpose()?;
                let sync = self.bn_sync();
                batchnorm_forward(
                    &dev,
                    bn,
                    in_shape,
                    images,
                    x,
                    &params,
                    y,
                    saved.as_ref(),
                    sync,
                )?;
                if let Some(saved) = saved {
                    trace.saved[id] = Saved::BatchNorm(saved);
                    if let Layer::BatchNorm { batches, .. } = &mut self.layers[id] {
                        *batches += 1;
                    }
                }
            }
            Op::Neuron(_) => {
                let Layer::Neuron { layer, .. } = &self.layers[id] else {
                    return Err(RuntimeError::Internal(
                        "a neuron layer without its state".into(),
                    ));
                };
                if pass == Pass::Replay {
                    return Err(RuntimeError::Internal(format!(
                        "`{}`: a neuron's output is kept, never recomputed",
                        node.name
                    )));
                }
                let n = images / steps * node.shape.len();
                let xs = inputs
                    .iter()
                    .map(|t| t.reshape(&[steps, n]))
                    .collect::<Result<Vec<_>, _>>()?;
                let xs: Vec<&DeviceTensor> = xs.iter().collect();
                // Split by time: this chunk starts where the previous rank's stopped (an
                // inference pass runs the steps it is given on this rank alone).
                let init = match train {
                    true => self.states_from_before(layer.neuron().states.len(), n)?,
                    false => None,
                };
                let init_refs: Option<Vec<&DeviceTensor>> =
                    init.as_ref().map(|s| s.iter().collect());
                if let (true, Some(chunk)) = (train, self.options.plan.time_chunk()?) {
                    let y = y.reshape(&[steps, n])?;
                    let (starts, finals) =
                        forward_in_chunks(layer, &xs, init_refs.as_deref(), &y, chunk)?;
                    self.states_to_next(&finals)?;
                    trace.saved[id] = Saved::Starts(starts);
                    trace.inits[id] = init;
                    return Ok(());
                }
                let mut fwd = forward_room(layer, y.reshape(&[steps, n])?, train)?;
                layer.forward_into(&xs, init_refs.as_deref(), train, &mut fwd)?;
                if train {
                    self.states_to_next(&fwd.final_states)?;
                    trace.inits[id] = init;
                    // Keep only what the backward reads. The output is the node's value,
                    // which the trace keeps when the backward re-reads it (perhaps in one
                    // byte) and frees when its readers are done.
                    fwd.final_states.clear();
                    fwd.outputs.clear();
                    trace.saved[id] = Saved::Neuron(fwd);
                }
            }
            Op::MaxPool2d(pool) => {
                let argmax = DeviceTensor::empty(&dev, Dtype::U8, &y.shape)?;
                maxpool2d_forward(&dev, pool, in_shape, images, x, y, &argmax)?;
                if train {
                    trace.saved[id] = Saved::MaxPool(argmax);
                }
            }
            Op::GlobalAvgPool => global_avgpool_forward(&dev, in_shape, images, x, y)?,
            Op::Linear(l) => {
                let (w, b) = match &self.layers[id] {
                    Layer::Linear { weight, bias } => (*weight, *bias),
                    _ => {
                        return Err(RuntimeError::Internal(
                            "a linear layer without its state".into(),
                        ));
                    }
                };
                let (w, b) = (self.weight(w)?, b.map(|b| self.weight(b)).transpose()?);
                let blas = self
                    .cublas
                    .as_ref()
                    .ok_or_else(|| RuntimeError::Internal("no cuBLAS handle".into()))?;
                let x = as_dtype(&dev, x, Dtype::F32)?;
                linear_forward(blas, l, images, &x, &w, b.as_ref(), y)?;
            }
            Op::Add => {
                let b = inputs
                    .get(1)
                    .ok_or_else(|| RuntimeError::Internal("add needs two inputs".into()))?;
                add(&dev, x, b, y)?;
            }
        }
        Ok(())
    }
}

/// A training forward of `layer` over `xs` (`[T, N]` each) into `y`, one time chunk at a
/// time, the first from `init` (else the declared initial states), each other from the
/// last one's final states; the saves are dropped, since the backward recomputes them.
/// Returns the states at the start of every chunk but the first, and the final states.
fn forward_in_chunks(
    layer: &NeuronLayer,
    xs: &[&DeviceTensor],
    init: Option<&[&DeviceTensor]>,
    y: &DeviceTensor,
    chunk: usize,
) -> Result<(Vec<Vec<DeviceTensor>>, Vec<DeviceTensor>), RuntimeError> {
    let (steps, n) = (y.shape[0], y.shape[1]);
    let mut starts: Vec<Vec<DeviceTensor>> = Vec::new();
    let mut finals = Vec::new();
    for t0 in (0..steps).step_by(chunk) {
        let len = chunk.min(steps - t0);
        let views = xs
            .iter()
            .map(|x| x.view(t0 * n, &[len, n]))
            .collect::<Result<Vec<_>, _>>()?;
        let views: Vec<&DeviceTensor> = views.iter().collect();
        let mut fwd = forward_room(layer, y.view(t0 * n, &[len, n])?, true)?;
        let last: Option<Vec<&DeviceTensor>> = starts.last().map(|s| s.iter().collect());
        let from = if t0 == 0 { init } else { last.as_deref() };
        layer.forward_into(&views, from, true, &mut fwd)?;
        if t0 + len < steps {
            starts.push(fwd.final_states);
        } else {
            finals = fwd.final_states;
        }
    }
    Ok((starts, finals))
}

/// Room for a forward of `layer` that writes its output into `y` (`[len, n]`, a view of the
/// node's value): the saves of a training pass, and the final states.
fn forward_room(
    layer: &NeuronLayer,
    y: DeviceTensor,
    train: bool,
) -> Result<LayerForward, RuntimeError> {
    let dev = layer.device();
    let seq = y.shape.clone();
    let saves = if train {
        layer.compiled().plan.saves.len()
    } else {
        0
    };
    Ok(LayerForward {
        outputs: vec![y],
        saves: (0..saves)
            .map(|_| DeviceTensor::empty(dev, layer.config().storage.saves, &seq))
            .collect::<Result<_, _>>()?,
        final_states: (0..layer.neuron().states.len())
            .map(|_| DeviceTensor::empty(dev, Dtype::F32, &seq[1..]))
            .collect::<Result<_, _>>()?,
    })
}
