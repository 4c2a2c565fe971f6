//! A whole network on the CPU: forward through every node, backward through time and
//! layers, gradients for every trained tensor. It is the oracle the GPU runtime is tested
//! against, and trains small models without a GPU.

use snn_codegen::Mode;
use snn_codegen::compile;
use snn_codegen::interp::{Forward, Params, Reference, Seq};

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

/// What a forward pass keeps for the backward pass.
#[derive(Clone, Debug)]
pub struct Trace<T> {
    pub steps: usize,
    pub batch: usize,
    pub mode: Mode,
    /// Every node's output, `[T * B, C, H, W]` (time-major).
    pub values: Vec<Vec<T>>,
    bn: Vec<Option<BatchStats<T>>>,
    argmax: Vec<Option<Vec<u32>>>,
    neurons: Vec<Option<Forward<T>>>,
}

impl<T> Trace<T> {
    /// The network's output, `[T, B, K]` for a classifier.
    pub fn output(&self) -> &[T] {
        self.values.last().map_or(&[], |v| &v[..])
    }
}

/// A network with its parameters, on the CPU.
#[derive(Clone, Debug)]
pub struct CpuModel<T> {
    net: Network,
    pub params: ParamSet<T>,
    /// The compiled neuron of each neuron node.
    neurons: Vec<Option<Reference>>,
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
        Ok(Self {
            net: net.clone(),
            params,
            neurons,
        })
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

    /// Runs the network on `x`, `[T, B, C, H, W]` time-major. In [`Mode::Train`],
    /// batch-norm uses batch statistics and updates its running ones.
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
        let n = self.net.nodes().len();
        let mut trace = Trace {
            steps,
            batch,
            mode,
            values: Vec::with_capacity(n),
            bn: vec![None; n],
            argmax: vec![None; n],
            neurons: vec![None; n],
        };
        let train = mode == Mode::Train;
        for id in 0..n {
            let node = self.net.node(id).clone();
            let input = node.input_shape(&self.net);
            let mut y = vec![T::default(); images * node.shape.len()];
            let xs = |k: usize| &trace.values[node.inputs[k]][..];
            match &node.op {
                Op::Input => y.copy_from_slice(x),
                Op::Conv2d(c) => {
                    let w = self.param(&node, "weight")?;
                    let b = self.optional(&node, "bias", c.bias)?;
                    conv2d_forward(c, input, images, xs(0), w, b, &mut y)?
                }
                Op::BatchNorm2d(bn) if train => {
                    let name = |f: &str| format!("{}.{f}", node.name);
                    let gamma = self.param(&node, "weight")?.to_vec();
                    let beta = self.param(&node, "bias")?.to_vec();
                    let mut mean = self.param(&node, "running_mean")?.to_vec();
                    let mut var = self.param(&node, "running_var")?.to_vec();
                    let affine = (&gamma[..], &beta[..]);
                    let running = Running::Update {
                        mean: &mut mean,
                        var: &mut var,
                    };
                    let stats =
                        batchnorm_forward(bn, input, images, xs(0), affine, running, &mut y)?;
                    for (field, v) in [("running_mean", mean), ("running_var", var)] {
                        if let Some(t) = self.params.get_mut(&name(field)) {
                            t.data = v;
                        }
                    }
                    if let Some(t) = self.params.get_mut(&name("num_batches_tracked")) {
                        t.data[0] += T::from_f64(1.0);
                    }
                    trace.bn[id] = stats;
                }
                Op::BatchNorm2d(bn) => {
                    let affine = (self.param(&node, "weight")?, self.param(&node, "bias")?);
                    let running = Running::Use {
                        mean: self.param(&node, "running_mean")?,
                        var: self.param(&node, "running_var")?,
                    };
                    batchnorm_forward(bn, input, images, xs(0), affine, running, &mut y)?;
                }
                Op::Neuron(_) => {
                    let r = self.neurons[id].as_ref().ok_or_else(|| {
                        NnError::Graph(format!("`{}` has no compiled neuron", node.name))
                    })?;
                    let p = self.neuron_params(&node)?;
                    let seq = Seq::new(steps, batch * node.shape.len(), xs(0).to_vec())
                        .map_err(run_err(&node))?;
                    let fwd = r.forward(&p, &[seq], None, mode).map_err(run_err(&node))?;
                    y.copy_from_slice(&fwd.outputs[0].data);
                    trace.neurons[id] = train.then_some(fwd);
                }
                Op::MaxPool2d(pool) => {
                    let mut argmax = vec![0u32; y.len()];
                    maxpool2d_forward(pool, input, images, xs(0), &mut y, &mut argmax)?;
                    trace.argmax[id] = Some(argmax);
                }
                Op::GlobalAvgPool => global_avgpool_forward(input, images, xs(0), &mut y)?,
                Op::Flatten => y.copy_from_slice(xs(0)),
                Op::Linear(l) => {
                    let w = self.param(&node, "weight")?;
                    let b = self.optional(&node, "bias", l.bias)?;
                    linear_forward(l, images, xs(0), w, b, &mut y)?
                }
                Op::Add => {
                    for ((o, a), b) in y.iter_mut().zip(xs(0)).zip(xs(1)) {
                        *o = *a + *b;
                    }
                }
            }
            trace.values.push(y);
        }
        Ok(trace)
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
        if grad_output.len() != trace.values[self.net.output()].len() {
            return Err(NnError::shape(format!(
                "the output gradient has {} values; the output has {}",
                grad_output.len(),
                trace.values[self.net.output()].len()
            )));
        }
        let mut grads = self.params.zeros_like();
        let mut dvals: Vec<Option<Vec<T>>> = vec![None; nodes.len()];
        dvals[self.net.output()] = Some(grad_output.to_vec());
        for id in (1..nodes.len()).rev() {
            let node = &nodes[id];
            let Some(dy) = dvals[id].take() else {
                continue;
            };
            let input = node.input_shape(&self.net);
            // Input gradients are not needed for the network's input.
            let wants_dx = node.inputs.iter().map(|&i| i != 0).collect::<Vec<_>>();
            let xs = |k: usize| &trace.values[node.inputs[k]][..];
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
                        conv2d_backward(c, input, images, xs(0), w, &dy, g)
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
                        xs(0),
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
                    let (r, fwd) = match (&self.neurons[id], &trace.neurons[id]) {
                        (Some(r), Some(f)) => (r, f),
                        _ => {
                            return Err(NnError::Run(format!(
                                "`{}` kept no forward state",
                                node.name
                            )));
                        }
                    };
                    let p = self.neuron_params(node)?;
                    let n = trace.batch * node.shape.len();
                    let seq = |v: &[T]| Seq::new(trace.steps, n, v.to_vec()).map_err(run_err(node));
                    let g = r
                        .backward(&p, &[seq(xs(0))?], None, fwd, &[seq(&dy)?], None)
                        .map_err(run_err(node))?;
                    for (spec, pg) in ir.params.iter().zip(g.params) {
                        if let Some(pg) = pg {
                            set.push((spec.name.clone(), pg));
                        }
                    }
                    g.inputs.into_iter().map(|s| s.data).collect()
                }
                Op::MaxPool2d(pool) => {
                    let argmax = trace.argmax[id]
                        .as_ref()
                        .ok_or_else(|| NnError::Run(format!("`{}` kept no argmax", node.name)))?;
                    maxpool2d_backward(pool, input, images, argmax, &dy, &mut dx)?;
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
                        linear_backward(l, images, xs(0), w, &dy, g)
                    })?;
                    vec![dx]
                }
                Op::Add => vec![dy.clone(), dy],
            };
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
