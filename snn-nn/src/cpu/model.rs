//! A whole network on the CPU: forward through every node, backward through time and
//! layers, gradients for every trained tensor. It is the oracle the GPU runtime is tested
//! against, and trains small models without a GPU.
//!
//! What the forward keeps for the backward is a choice ([`ActivationPlan`]): everything, or
//! only the spikes (one byte each) and, every few steps, the neurons' states, from which
//! the backward recomputes the rest. Both give the same gradients.

use std::borrow::Cow;
use std::collections::HashMap;

use snn_codegen::Mode;
use snn_codegen::compile;
use snn_codegen::interp::{Forward, Params, Reference, Seq};

use crate::activation_plan::ActivationPlan;
use crate::cpu::{
    BatchNormGrads, BatchStats, Running, WeightGrads, batchnorm_backward, batchnorm_forward,
    conv2d_backward, conv2d_forward, global_avgpool_backward, global_avgpool_forward,
    linear_backward, linear_forward, maxpool2d_backward, maxpool2d_forward,
};
use crate::error::NnError;
use crate::float::Float;
use crate::graph::{Network, Node, Op};
use crate::params::ParamSet;

fn run_err(node: &Node) -> impl Fn(snn_codegen::interp::RunError) -> NnError + '_ {
    move |e| NnError::Run(format!("neuron layer `{}`: {e}", node.name))
}

/// A node's value as the trace keeps it.
#[derive(Clone, Debug)]
enum Kept<T> {
    /// Recomputed when the backward needs it.
    Nothing,
    Values(Vec<T>),
    /// Spikes, exactly -1, 0 or 1.
    Spikes(Vec<i8>),
}

/// What the trace keeps of a neuron node for its backward.
#[derive(Clone, Debug)]
enum NeuronKept<T> {
    /// The whole forward: outputs, saves, final states.
    Whole(Forward<T>),
    /// The states at the start of every time chunk but the first (which starts from the
    /// declared initial states).
    Starts(Vec<Vec<Vec<T>>>),
}

/// What a forward pass keeps for the backward pass.
#[derive(Clone, Debug)]
pub struct Trace<T> {
    pub steps: usize,
    pub batch: usize,
    pub mode: Mode,
    pub plan: ActivationPlan,
    values: Vec<Kept<T>>,
    bn: Vec<Option<BatchStats<T>>>,
    argmax: Vec<Option<Vec<u32>>>,
    neurons: Vec<Option<NeuronKept<T>>>,
}

impl<T: Float> Trace<T> {
    /// The network's output, `[T, B, K]` for a classifier.
    pub fn output(&self) -> &[T] {
        match self.values.last() {
            Some(Kept::Values(v)) => v,
            _ => &[],
        }
    }

    /// Node `id`'s output `[T * B, C, H, W]`, if the trace kept it.
    pub fn value(&self, id: usize) -> Option<Cow<'_, [T]>> {
        match self.values.get(id)? {
            Kept::Nothing => None,
            Kept::Values(v) => Some(Cow::Borrowed(v)),
            Kept::Spikes(s) => Some(Cow::Owned(
                s.iter().map(|&b| T::from_f64(f64::from(b))).collect(),
            )),
        }
    }

    /// The bytes the trace holds for the backward pass: values, spikes, batch statistics,
    /// argmax indices and the neurons' saves or chunk states.
    pub fn saved_bytes(&self) -> usize {
        let t = std::mem::size_of::<T>();
        let values: usize = self
            .values
            .iter()
            .map(|k| match k {
                Kept::Nothing => 0,
                Kept::Values(v) => v.len() * t,
                Kept::Spikes(s) => s.len(),
            })
            .sum();
        let bn: usize = self.bn.iter().flatten().map(|s| 2 * s.mean.len() * t).sum();
        let argmax: usize = self.argmax.iter().flatten().map(|a| 4 * a.len()).sum();
        let neurons: usize = self
            .neurons
            .iter()
            .flatten()
            .map(|k| match k {
                NeuronKept::Whole(f) => {
                    let seqs = f.outputs.iter().chain(&f.saved);
                    let states = f.final_states.iter().map(Vec::len).sum::<usize>();
                    (seqs.map(|s| s.data.len()).sum::<usize>() + states) * t
                }
                NeuronKept::Starts(chunks) => {
                    chunks.iter().flatten().map(Vec::len).sum::<usize>() * t
                }
            })
            .sum();
        values + bn + argmax + neurons
    }
}

/// How a node's forward runs: in a training or inference pass, or replayed by the backward
/// from a trace (batch-norm with the pass's batch statistics, nothing updated).
#[derive(Clone, Copy)]
enum Pass<'a, T> {
    Forward(Mode),
    Replay(&'a Trace<T>),
}

/// One node's forward: its value and what the trace may keep of it.
struct Computed<T> {
    y: Vec<T>,
    bn: Option<BatchStats<T>>,
    /// Updated running mean and variance (a training batch-norm).
    running: Option<(Vec<T>, Vec<T>)>,
    argmax: Option<Vec<u32>>,
    neuron: Option<NeuronKept<T>>,
}

/// A network with its parameters, on the CPU.
#[derive(Clone, Debug)]
pub struct CpuModel<T> {
    net: Network,
    pub params: ParamSet<T>,
    /// What training forward passes keep for the backward.
    pub plan: ActivationPlan,
    /// The compiled neuron of each neuron node.
    neurons: Vec<Option<Reference>>,
    /// The lowest and highest ids of the nodes that read each node (`None`: no reader).
    readers: Vec<Option<(usize, usize)>>,
}

impl<T: Float> CpuModel<T> {
    /// `params` must hold exactly the network's tensors ([`Network::params`]), e.g. from
    /// [`crate::init_params`] or a checkpoint.
    pub fn new(net: &Network, params: ParamSet<T>) -> Result<Self, NnError> {
        net.check_params(&params)?;
        let neurons = net
            .nodes()
            .iter()
            .map(|n| match &n.op {
                Op::Neuron(ir) => Ok(Some(Reference::new(compile(ir.as_ref(), T::STORAGE)?))),
                _ => Ok(None),
            })
            .collect::<Result<_, NnError>>()?;
        let mut readers: Vec<Option<(usize, usize)>> = vec![None; net.nodes().len()];
        for (id, node) in net.nodes().iter().enumerate() {
            for &i in &node.inputs {
                let (first, _) = readers[i].unwrap_or((id, id));
                readers[i] = Some((first, id));
            }
        }
        Ok(Self {
            net: net.clone(),
            params,
            plan: ActivationPlan::All,
            neurons,
            readers,
        })
    }

    /// The model with `plan` for its training passes.
    pub fn with_plan(mut self, plan: ActivationPlan) -> Self {
        self.plan = plan;
        self
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    fn param(&self, node: &Node, field: &str) -> Result<&[T], NnError> {
        self.params.data(&format!("{}.{field}", node.name))
    }

    fn optional(&self, node: &Node, field: &str, present: bool) -> Result<Option<&[T]>, NnError> {
        present.then(|| self.param(node, field)).transpose()
    }

    /// The neuron's parameter values for `node` (learnable ones from the parameter set).
    fn neuron_params(&self, node: &Node) -> Result<Params<T>, NnError> {
        let Op::Neuron(ir) = &node.op else {
            return Err(NnError::Graph(format!("`{}` is not a neuron", node.name)));
        };
        let mut p = Params::defaults(ir, Network::layout(node.shape));
        for spec in ir.params.iter().filter(|s| s.learnable) {
            let v = self.param(node, &spec.name)?.to_vec();
            p.set(&spec.name, v).map_err(run_err(node))?;
        }
        Ok(p)
    }

    fn reference(&self, id: usize) -> Result<&Reference, NnError> {
        self.neurons[id].as_ref().ok_or_else(|| {
            NnError::Graph(format!(
                "`{}` has no compiled neuron",
                self.net.node(id).name
            ))
        })
    }

    /// Node `id`'s forward on its inputs `xs`.
    fn compute(
        &self,
        id: usize,
        xs: &[&[T]],
        steps: usize,
        batch: usize,
        pass: Pass<'_, T>,
    ) -> Result<Computed<T>, NnError> {
        let node = self.net.node(id);
        let input = node.input_shape(&self.net);
        let images = steps * batch;
        let mut out = Computed {
            y: vec![T::default(); images * node.shape.len()],
            bn: None,
            running: None,
            argmax: None,
            neuron: None,
        };
        let y = &mut out.y;
        let x = |k: usize| -> Result<&[T], NnError> {
            xs.get(k)
                .copied()
                .ok_or_else(|| NnError::Graph(format!("`{}` is missing its input {k}", node.name)))
        };
        match &node.op {
            Op::Input => y.copy_from_slice(x(0)?),
            Op::Conv2d(c) => {
                let w = self.param(node, "weight")?;
                let b = self.optional(node, "bias", c.bias)?;
                conv2d_forward(c, input, images, x(0)?, w, b, y)?
            }
            Op::BatchNorm2d(bn) => {
                let affine = (self.param(node, "weight")?, self.param(node, "bias")?);
                match pass {
                    Pass::Forward(Mode::Train) => {
                        let mut mean = self.param(node, "running_mean")?.to_vec();
                        let mut var = self.param(node, "running_var")?.to_vec();
                        let running = Running::Update {
                            mean: &mut mean,
                            var: &mut var,
                        };
                        out.bn = batchnorm_forward(bn, input, images, x(0)?, affine, running, y)?;
                        out.running = Some((mean, var));
                    }
                    Pass::Forward(Mode::Inference) => {
                        let running = Running::Use {
                            mean: self.param(node, "running_mean")?,
                            var: self.param(node, "running_var")?,
                        };
                        batchnorm_forward(bn, input, images, x(0)?, affine, running, y)?;
                    }
                    Pass::Replay(trace) => {
                        let stats = trace.bn[id].as_ref().ok_or_else(|| {
                            NnError::Run(format!("`{}` kept no batch statistics", node.name))
                        })?;
                        let running = Running::Replay(stats);
                        batchnorm_forward(bn, input, images, x(0)?, affine, running, y)?;
                    }
                }
            }
            Op::Neuron(_) => {
                let (r, p) = (self.reference(id)?, self.neuron_params(node)?);
                let n = batch * node.shape.len();
                let seq = Seq::new(steps, n, x(0)?.to_vec()).map_err(run_err(node))?;
                let Pass::Forward(mode) = pass else {
                    return Err(NnError::Run(format!(
                        "`{}`: a neuron's output is kept, never replayed",
                        node.name
                    )));
                };
                match self.plan.time_chunk()? {
                    None => {
                        let fwd = r.forward(&p, &[seq], None, mode).map_err(run_err(node))?;
                        y.copy_from_slice(&fwd.outputs[0].data);
                        out.neuron = (mode == Mode::Train).then_some(NeuronKept::Whole(fwd));
                    }
                    Some(chunk) => {
                        // Chunk by chunk, each from the last one's final states, which the
                        // backward starts its recomputations from.
                        let mut starts: Vec<Vec<Vec<T>>> = Vec::new();
                        for t0 in (0..steps).step_by(chunk) {
                            let t1 = (t0 + chunk).min(steps);
                            let init = starts.last().map(|s| &s[..]);
                            let fwd = r
                                .forward(&p, &[seq.steps(t0, t1)], init, Mode::Inference)
                                .map_err(run_err(node))?;
                            y[t0 * n..t1 * n].copy_from_slice(&fwd.outputs[0].data);
                            if t1 < steps {
                                starts.push(fwd.final_states);
                            }
                        }
                        out.neuron = (mode == Mode::Train).then_some(NeuronKept::Starts(starts));
                    }
                }
            }
            Op::MaxPool2d(pool) => {
                let mut argmax = vec![0u32; y.len()];
                maxpool2d_forward(pool, input, images, x(0)?, y, &mut argmax)?;
                out.argmax = Some(argmax);
            }
            Op::GlobalAvgPool => global_avgpool_forward(input, images, x(0)?, y)?,
            Op::Flatten => y.copy_from_slice(x(0)?),
            Op::Linear(l) => {
                let w = self.param(node, "weight")?;
                let b = self.optional(node, "bias", l.bias)?;
                linear_forward(l, images, x(0)?, w, b, y)?
            }
            Op::Add => {
                for ((o, a), b) in y.iter_mut().zip(x(0)?).zip(x(1)?) {
                    *o = *a + *b;
                }
            }
        }
        Ok(out)
    }

    /// Runs the network on `x`, `[T, B, C, H, W]` time-major. In [`Mode::Train`],
    /// batch-norm uses batch statistics and updates its running ones, and the trace keeps
    /// what [`Self::plan`] says.
    pub fn forward(
        &mut self,
        x: &[T],
        steps: usize,
        batch: usize,
        mode: Mode,
    ) -> Result<Trace<T>, NnError> {
        let images = steps * batch;
        let want = images * self.net.input_shape().len();
        if x.len() != want || images == 0 {
            return Err(NnError::shape(format!(
                "the input has {} values; {steps} steps x {batch} images of {} need {want} (and neither may be 0)",
                x.len(),
                self.net.input_shape()
            )));
        }
        let recompute = self.plan.time_chunk()?.is_some();
        let n = self.net.nodes().len();
        let mut trace = Trace {
            steps,
            batch,
            mode,
            plan: self.plan,
            values: vec![Kept::Nothing; n],
            bn: vec![None; n],
            argmax: vec![None; n],
            neurons: vec![None; n],
        };
        // Values while they have readers to come; with recomputation only the kept ones
        // outlive them.
        let mut live: Vec<Option<Vec<T>>> = vec![None; n];
        for id in 0..n {
            let node = self.net.node(id);
            let xs = if matches!(node.op, Op::Input) {
                vec![x]
            } else {
                node.inputs
                    .iter()
                    .map(|&i| live[i].as_deref().ok_or_else(|| freed(node)))
                    .collect::<Result<Vec<&[T]>, _>>()?
            };
            let c = self.compute(id, &xs, steps, batch, Pass::Forward(mode))?;
            if let Some((mean, var)) = c.running {
                let name = |f: &str| format!("{}.{f}", node.name);
                for (field, v) in [("running_mean", mean), ("running_var", var)] {
                    if let Some(t) = self.params.get_mut(&name(field)) {
                        t.data = v;
                    }
                }
                if let Some(t) = self.params.get_mut(&name("num_batches_tracked")) {
                    t.data[0] += T::from_f64(1.0);
                }
            }
            trace.bn[id] = c.bn;
            trace.argmax[id] = c.argmax.filter(|_| !recompute);
            trace.neurons[id] = c.neuron;
            live[id] = Some(c.y);
            if recompute {
                for &i in &node.inputs {
                    if self.readers[i].is_some_and(|(_, last)| last == id)
                        && let Some(v) = live[i].take()
                    {
                        trace.values[i] = self.checkpoint(i, v);
                    }
                }
            }
        }
        for (id, v) in live.into_iter().enumerate() {
            if let Some(v) = v {
                trace.values[id] = if recompute {
                    self.checkpoint(id, v)
                } else {
                    Kept::Values(v)
                };
            }
        }
        Ok(trace)
    }

    /// What a recomputing trace keeps of node `id`'s value `v`: the input, the output and
    /// the neurons' outputs (spikes in one byte), nothing else.
    fn checkpoint(&self, id: usize, v: Vec<T>) -> Kept<T> {
        let output = id + 1 == self.net.nodes().len();
        if !ActivationPlan::spikes_keep(&self.net, id) {
            Kept::Nothing
        } else if self.net.node(id).emits_spikes() && !output {
            Kept::Spikes(v.iter().map(|s| s.value() as i8).collect())
        } else {
            Kept::Values(v)
        }
    }

    /// Makes sure node `id`'s value is in the trace or in `memo`, recomputing it (and what
    /// it reads) where the trace did not keep it.
    fn recompute(
        &self,
        trace: &Trace<T>,
        id: usize,
        memo: &mut HashMap<usize, Vec<T>>,
    ) -> Result<(), NnError> {
        if !matches!(trace.values[id], Kept::Nothing) || memo.contains_key(&id) {
            return Ok(());
        }
        let node = self.net.node(id);
        for &i in &node.inputs {
            self.recompute(trace, i, memo)?;
        }
        let xs = node
            .inputs
            .iter()
            .map(|&i| value(trace, memo, i).ok_or_else(|| freed(node)))
            .collect::<Result<Vec<_>, _>>()?;
        let xs: Vec<&[T]> = xs.iter().map(|v| &v[..]).collect();
        let c = self.compute(id, &xs, trace.steps, trace.batch, Pass::Replay(trace))?;
        memo.insert(id, c.y);
        Ok(())
    }

    /// Gradients of every trained tensor (the set has all the model's names; buffers and
    /// counters stay zero), from `grad_output` = dL/d(output) `[T, B, K]`. The trace must
    /// come from a training forward pass of this model.
    pub fn backward(&self, trace: &Trace<T>, grad_output: &[T]) -> Result<ParamSet<T>, NnError> {
        let nodes = self.net.nodes();
        if trace.mode != Mode::Train || trace.values.len() != nodes.len() {
            return Err(NnError::Run(
                "backward needs the trace of a training forward pass (`Mode::Train`) of this model"
                    .into(),
            ));
        }
        let images = trace.steps * trace.batch;
        if grad_output.len() != trace.output().len() {
            return Err(NnError::shape(format!(
                "the output gradient has {} values; the output has {}",
                grad_output.len(),
                trace.output().len()
            )));
        }
        let mut grads = self.params.zeros_like();
        let mut dvals: Vec<Option<Vec<T>>> = vec![None; nodes.len()];
        dvals[self.net.output()] = Some(grad_output.to_vec());
        // Values the trace did not keep, recomputed for the nodes that read them.
        let mut memo: HashMap<usize, Vec<T>> = HashMap::new();
        for id in (1..nodes.len()).rev() {
            // Drop what no node still to come reads.
            memo.retain(|&j, _| self.readers[j].is_some_and(|(first, _)| first <= id));
            let node = &nodes[id];
            let Some(dy) = dvals[id].take() else {
                continue;
            };
            let input = node.input_shape(&self.net);
            // Input gradients are not needed for the network's input.
            let wants_dx = node.inputs.iter().map(|&i| i != 0).collect::<Vec<_>>();
            let reads = matches!(
                node.op,
                Op::Conv2d(_) | Op::BatchNorm2d(_) | Op::Neuron(_) | Op::Linear(_)
            ) || matches!(node.op, Op::MaxPool2d(_) if trace.argmax[id].is_none());
            if reads {
                self.recompute(trace, node.inputs[0], &mut memo)?;
            }
            let x0 = if reads {
                value(trace, &memo, node.inputs[0]).ok_or_else(|| freed(node))?
            } else {
                Cow::Borrowed(&[][..])
            };
            let mut dx = vec![T::default(); images * input.len()];
            let pgrad = |field: &str| -> Result<Vec<T>, NnError> {
                let name = format!("{}.{field}", node.name);
                grads
                    .get(&name)
                    .map(|t| t.data.clone())
                    .ok_or_else(|| NnError::Graph(format!("no tensor named `{name}`")))
            };
            let bias_grad = |bias: bool| bias.then(|| pgrad("bias")).transpose();
            let mut set: Vec<(String, Vec<T>)> = Vec::new();
            let dxs: Vec<Vec<T>> = match &node.op {
                Op::Input => vec![],
                Op::Conv2d(c) => {
                    let (w, db) = (self.param(node, "weight")?, bias_grad(c.bias)?);
                    let dxs = wants_dx[0].then_some(&mut dx[..]);
                    weight_backward(pgrad("weight")?, db, dxs, &mut set, |g| {
                        conv2d_backward(c, input, images, &x0, w, &dy, g)
                    })?;
                    vec![dx]
                }
                Op::BatchNorm2d(bn) => {
                    let stats = trace.bn[id].as_ref().ok_or_else(|| {
                        NnError::Run(format!("`{}` kept no batch statistics", node.name))
                    })?;
                    let (mut dg, mut db) = (pgrad("weight")?, pgrad("bias")?);
                    batchnorm_backward(
                        bn,
                        input,
                        images,
                        &x0,
                        self.param(node, "weight")?,
                        stats,
                        &dy,
                        BatchNormGrads {
                            input: &mut dx,
                            gamma: &mut dg,
                            beta: &mut db,
                        },
                    )?;
                    set.push(("weight".into(), dg));
                    set.push(("bias".into(), db));
                    vec![dx]
                }
                Op::Neuron(ir) => {
                    let g = self.neuron_backward(trace, id, &x0, &dy)?;
                    for (spec, pg) in ir.params.iter().zip(g.params) {
                        if let Some(pg) = pg {
                            set.push((spec.name.clone(), pg));
                        }
                    }
                    vec![g.input]
                }
                Op::MaxPool2d(pool) => {
                    let argmax = match &trace.argmax[id] {
                        Some(a) => Cow::Borrowed(a),
                        None => {
                            let mut y = vec![T::default(); dy.len()];
                            let mut a = vec![0u32; dy.len()];
                            maxpool2d_forward(pool, input, images, &x0, &mut y, &mut a)?;
                            Cow::Owned(a)
                        }
                    };
                    maxpool2d_backward(pool, input, images, &argmax, &dy, &mut dx)?;
                    vec![dx]
                }
                Op::GlobalAvgPool => {
                    global_avgpool_backward(input, images, &dy, &mut dx)?;
                    vec![dx]
                }
                Op::Flatten => vec![dy],
                Op::Linear(l) => {
                    let (w, db) = (self.param(node, "weight")?, bias_grad(l.bias)?);
                    let dxs = wants_dx[0].then_some(&mut dx[..]);
                    weight_backward(pgrad("weight")?, db, dxs, &mut set, |g| {
                        linear_backward(l, images, &x0, w, &dy, g)
                    })?;
                    vec![dx]
                }
                Op::Add => vec![dy.clone(), dy],
            };
            drop(x0);
            for (field, v) in set {
                if let Some(t) = grads.get_mut(&format!("{}.{field}", node.name)) {
                    t.data = v;
                }
            }
            for (&src, d) in node.inputs.iter().zip(dxs) {
                if src == 0 {
                    continue;
                }
                match &mut dvals[src] {
                    Some(acc) => acc.iter_mut().zip(d).for_each(|(a, b)| *a += b),
                    slot => *slot = Some(d),
                }
            }
        }
        Ok(grads)
    }

    /// The backward of neuron node `id` on its input `x` with output gradient `dy`: through
    /// the whole run from the kept forward, or chunk by chunk, latest first, each chunk's
    /// forward recomputed from its starting states and its state adjoints handed to the
    /// chunk before.
    fn neuron_backward(
        &self,
        trace: &Trace<T>,
        id: usize,
        x: &[T],
        dy: &[T],
    ) -> Result<NeuronGrads<T>, NnError> {
        let node = self.net.node(id);
        let (r, p) = (self.reference(id)?, self.neuron_params(node)?);
        let (steps, n) = (trace.steps, trace.batch * node.shape.len());
        let seq = |v: &[T], t0: usize, t1: usize| {
            Seq::new(t1 - t0, n, v[t0 * n..t1 * n].to_vec()).map_err(run_err(node))
        };
        match &trace.neurons[id] {
            Some(NeuronKept::Whole(fwd)) => {
                let g = r
                    .backward(
                        &p,
                        &[seq(x, 0, steps)?],
                        None,
                        fwd,
                        &[seq(dy, 0, steps)?],
                        None,
                    )
                    .map_err(run_err(node))?;
                Ok(NeuronGrads {
                    input: g
                        .inputs
                        .into_iter()
                        .next()
                        .map(|s| s.data)
                        .unwrap_or_default(),
                    params: g.params,
                })
            }
            Some(NeuronKept::Starts(starts)) => {
                let chunk = trace
                    .plan
                    .time_chunk()?
                    .ok_or_else(|| NnError::Run("a chunked trace without its chunk".into()))?;
                let mut out = NeuronGrads {
                    input: vec![T::default(); x.len()],
                    params: Vec::new(),
                };
                let mut carried: Option<Vec<Vec<T>>> = None;
                let chunks: Vec<usize> = (0..steps).step_by(chunk).collect();
                for (c, &t0) in chunks.iter().enumerate().rev() {
                    let t1 = (t0 + chunk).min(steps);
                    let init = c.checked_sub(1).map(|k| &starts[k][..]);
                    let xs = [seq(x, t0, t1)?];
                    let fwd = r
                        .forward(&p, &xs, init, Mode::Train)
                        .map_err(run_err(node))?;
                    let g = r
                        .backward(&p, &xs, init, &fwd, &[seq(dy, t0, t1)?], carried.as_deref())
                        .map_err(run_err(node))?;
                    if let Some(gx) = g.inputs.first() {
                        out.input[t0 * n..t1 * n].copy_from_slice(&gx.data);
                    }
                    if out.params.is_empty() {
                        out.params = g.params;
                    } else {
                        for (acc, pg) in out.params.iter_mut().zip(g.params) {
                            if let (Some(acc), Some(pg)) = (acc, pg) {
                                acc.iter_mut().zip(pg).for_each(|(a, b)| *a += b);
                            }
                        }
                    }
                    carried = Some(g.init_states);
                }
                Ok(out)
            }
            None => Err(NnError::Run(format!(
                "`{}` kept no forward state",
                node.name
            ))),
        }
    }
}

/// A neuron node's gradients: its input's, and its learnable parameters' (by position).
struct NeuronGrads<T> {
    input: Vec<T>,
    params: Vec<Option<Vec<T>>>,
}

/// Node `id`'s value: kept by the trace or recomputed into `memo`.
fn value<'a, T: Float>(
    trace: &'a Trace<T>,
    memo: &'a HashMap<usize, Vec<T>>,
    id: usize,
) -> Option<Cow<'a, [T]>> {
    trace
        .value(id)
        .or_else(|| memo.get(&id).map(|v| Cow::Borrowed(&v[..])))
}

fn freed(node: &Node) -> NnError {
    NnError::Run(format!(
        "an input of `{}` was neither kept nor recomputed",
        node.name
    ))
}

/// The backward of a layer with a weight, and a bias where `db` is given: runs `backward`
/// into the gradient buffers and collects them, by field, into `set`.
fn weight_backward<T: Float>(
    mut dw: Vec<T>,
    mut db: Option<Vec<T>>,
    dx: Option<&mut [T]>,
    set: &mut Vec<(String, Vec<T>)>,
    backward: impl FnOnce(WeightGrads<'_, T>) -> Result<(), NnError>,
) -> Result<(), NnError> {
    backward(WeightGrads {
        input: dx,
        weight: &mut dw,
        bias: db.as_deref_mut(),
    })?;
    set.push(("weight".into(), dw));
    set.extend(db.map(|db| ("bias".into(), db)));
    Ok(())
}
