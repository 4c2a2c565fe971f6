//! A fused neuron layer: all time steps of `N` neurons in one kernel launch, forward and
//! backward, on device tensors.

use std::sync::Arc;

use cudarc::driver::LaunchConfig;
use snn_codegen::cuda::{
    ArgRole, COMPILE_OPTIONS, ELEMENTS_PER_THREAD, KernelOptions, KernelSet, REDUCE_BLOCK_SIZE,
    Reduction, generate,
};
use snn_codegen::ir::{NeuronIr, ParamShape};
use snn_codegen::{Compiled, Dtype, Layout, Neuron, Storage, compile};

use crate::device::Device;
use crate::error::RuntimeError;
use crate::launch::{self, Arg, Kernel};
use crate::tensor::DeviceTensor;

/// How a layer stores its tensors, maps elements to params, and what kernels it uses: what
/// [`NeuronLayer::new`] builds a layer from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerConfig {
    pub storage: Storage,
    pub layout: Layout,
    pub options: KernelOptions,
}

impl LayerConfig {
    /// f32 storage, atomic param-gradient reduction, run-time `T`.
    pub fn new(layout: Layout) -> Self {
        Self {
            storage: Storage::F32,
            layout,
            options: KernelOptions::default(),
        }
    }
}

/// What a forward pass produced, on the device.
#[derive(Debug)]
pub struct LayerForward {
    pub outputs: Vec<DeviceTensor>,
    /// The memory plan's saves (empty after an inference pass).
    pub saves: Vec<DeviceTensor>,
    /// `[N]` f32 each.
    pub final_states: Vec<DeviceTensor>,
}

/// What a backward pass produced, on the device.
#[derive(Debug)]
pub struct LayerGradients {
    pub inputs: Vec<DeviceTensor>,
    /// `dL/ds` before the first step, `[N]` f32: the earlier chunk's final-state gradient.
    pub init_states: Vec<DeviceTensor>,
    /// Learnable params' gradients (`None` for fixed params), one value per param value.
    pub params: Vec<Option<DeviceTensor>>,
    /// Deterministic reduction: per-element partials `[N]` of each learnable param, and
    /// the sums of its chunks (see [`reduce_chunks`]).
    partials: Vec<Option<(DeviceTensor, DeviceTensor)>>,
}

/// How many chunks the deterministic reduction splits each gradient value's elements into:
/// blocks of at least 16k elements, enough to fill the device, few enough partial sums
/// for one more fixed-order pass.
fn reduce_chunks(n: usize, values: usize) -> usize {
    (n / values.max(1) / 16384).clamp(1, 4096)
}

/// `[T, N]` of the first sequence (`(0, 0)` if there is none; the `_into` methods then
/// report what is wrong).
fn seq_shape(seqs: &[&DeviceTensor]) -> (usize, usize) {
    match seqs.first().map(|x| &x.shape[..]) {
        Some(&[t, n]) => (t, n),
        _ => (0, 0),
    }
}

/// A neuron layer on one device.
#[derive(Debug)]
pub struct NeuronLayer {
    device: Arc<Device>,
    /// The neuron compiled for the layer's storage (the one record of it).
    compiled: Compiled,
    kernels: KernelSet,
    layout: Layout,
    options: KernelOptions,
    /// Forward (training), forward (inference), backward.
    loaded: [Kernel; 3],
    /// The deterministic reduction's second kernel, when the backward has one.
    reduce: Option<Kernel>,
    /// Host values of every param, and device copies of those kernels read through a
    /// pointer (all but fixed scalars: `ParamSpec::by_value`).
    params: Vec<(Vec<f32>, Option<DeviceTensor>)>,
}

impl NeuronLayer {
    /// Compiles (or fetches from the cache) the neuron's kernels for this device.
    pub fn new(
        device: &Arc<Device>,
        neuron: &dyn Neuron,
        config: LayerConfig,
    ) -> Result<Self, RuntimeError> {
        let compiled = compile(neuron, config.storage)?;
        let kernels = generate(&compiled, &config.options);
        let arch = device.info.arch();
        let mut loaded = Vec::new();
        let mut reduce = None;
        for k in kernels.all() {
            let module = device.cache.module(
                &device.ctx,
                &k.source,
                &k.signatures[0].name,
                &arch,
                &COMPILE_OPTIONS,
            )?;
            for (i, sig) in k.signatures.iter().enumerate() {
                let f = module.load_function(&sig.name).map_err(|e| {
                    RuntimeError::driver(format!("loading kernel `{}`", sig.name), e)
                })?;
                let kernel = Kernel::new(f, sig.clone());
                // The backward's second kernel is the deterministic reduction.
                if i == 0 {
                    loaded.push(kernel);
                } else {
                    reduce = Some(kernel);
                }
            }
        }
        let loaded: [Kernel; 3] = loaded
            .try_into()
            .map_err(|_| RuntimeError::Internal("a neuron has three kernels".into()))?;
        let mut layer = Self {
            device: device.clone(),
            compiled,
            kernels,
            layout: config.layout,
            options: config.options,
            loaded,
            reduce,
            params: Vec::new(),
        };
        let ir = &layer.compiled.neuron;
        let defaults: Vec<(String, Vec<f32>)> = ir
            .params
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    vec![p.default as f32; layer.layout.len(p.shape)],
                )
            })
            .collect();
        for (_, values) in &defaults {
            layer.params.push((values.clone(), None));
        }
        for (name, values) in defaults {
            layer.set_param(&name, &values)?;
        }
        Ok(layer)
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    pub fn neuron(&self) -> &NeuronIr {
        &self.compiled.neuron
    }

    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    pub fn kernels(&self) -> &KernelSet {
        &self.kernels
    }

    /// What the layer was built from.
    pub fn config(&self) -> LayerConfig {
        LayerConfig {
            storage: self.storage(),
            layout: self.layout,
            options: self.options,
        }
    }

    /// How the layer stores its tensors (what its neuron was compiled for).
    pub fn storage(&self) -> Storage {
        self.compiled.plan.storage
    }

    /// Param `name`'s index, shape, number of values under the layout, and whether kernels
    /// take it by value.
    fn param_slot(&self, name: &str) -> Result<(usize, ParamShape, usize, bool), RuntimeError> {
        let ir = &self.compiled.neuron;
        let Some(p) = ir.param_index(name) else {
            let known: Vec<&str> = ir.params.iter().map(|p| p.name.as_str()).collect();
            return Err(self.invalid(format!(
                "no param named `{name}`; the neuron's params are: {}",
                known.join(", ")
            )));
        };
        let shape = ir.params[p].shape;
        Ok((p, shape, self.layout.len(shape), ir.params[p].by_value()))
    }

    /// Sets a param's values (one per value of its shape under the layout).
    pub fn set_param(&mut self, name: &str, values: &[f32]) -> Result<(), RuntimeError> {
        let (p, shape, expected, by_value) = self.param_slot(name)?;
        if values.len() != expected {
            return Err(self.invalid(format!(
                "param `{name}` is {shape} and needs {expected} value(s) for this layout, got {}",
                values.len()
            )));
        }
        let device = if by_value {
            None
        } else {
            Some(DeviceTensor::from_f32(
                &self.device,
                Dtype::F32,
                &[values.len()],
                values,
            )?)
        };
        self.params[p] = (values.to_vec(), device);
        Ok(())
    }

    /// Makes a learnable, per-channel or per-neuron param read its values from `values` (an
    /// f32 device tensor of the param's length, e.g. a view into a flat parameter buffer or
    /// a tensor another kernel computes), so values that live on the device need no copy
    /// through the host. Kernels read it when they run.
    pub fn bind_param(&mut self, name: &str, values: &DeviceTensor) -> Result<(), RuntimeError> {
        let (p, shape, expected, by_value) = self.param_slot(name)?;
        if by_value || values.dtype != Dtype::F32 || values.len() != expected {
            return Err(self.invalid(format!(
                "param `{name}` is {shape}: binding it needs an f32 tensor of {expected} value(s) (fixed scalars are passed by value), got {} {:?}",
                values.dtype, values.shape
            )));
        }
        self.params[p] = (Vec::new(), Some(values.clone()));
        Ok(())
    }

    /// Forgets the tensor bound to param `name` (a batch's statistics, say), so that the
    /// layer holds no memory past its use; launching before binding it again is an error.
    pub fn unbind_param(&mut self, name: &str) -> Result<(), RuntimeError> {
        let (p, ..) = self.param_slot(name)?;
        if self.params[p].1.is_none() {
            return Err(self.invalid(format!("param `{name}` is not bound to a tensor")));
        }
        self.params[p] = (Vec::new(), None);
        Ok(())
    }

    /// A param's host values (empty for a param bound to a device tensor).
    pub fn param(&self, name: &str) -> Option<&[f32]> {
        let p = self.compiled.neuron.param_index(name)?;
        Some(&self.params[p].0)
    }

    /// The dtype output `m` is stored in (the memory plan's: a byte for binary or ternary
    /// spikes in narrow storage).
    pub fn out_dtype(&self, m: usize) -> Dtype {
        self.compiled.output_dtype(m)
    }

    /// `[T, N]` of the call, checking every sequence and state tensor.
    fn check(
        &self,
        what: &str,
        seqs: &[&DeviceTensor],
        dtypes: &[Dtype],
        states: Option<&[&DeviceTensor]>,
    ) -> Result<(usize, usize), RuntimeError> {
        let ir = &self.compiled.neuron;
        let Some(first) = seqs.first() else {
            return Err(self.invalid(format!("neuron `{}` has no {what}", ir.name)));
        };
        let [steps, n] = first.shape[..] else {
            return Err(self.invalid(format!("{what} must be [T, N], got {:?}", first.shape)));
        };
        for (k, (s, &d)) in seqs.iter().zip(dtypes).enumerate() {
            if s.shape != [steps, n] || s.dtype != d {
                return Err(self.invalid(format!(
                    "{what} #{k} is {} {:?}, expected {d} [{steps}, {n}]",
                    s.dtype, s.shape
                )));
            }
        }
        if let Some(p) = self
            .params
            .iter()
            .position(|(v, t)| v.is_empty() && t.is_none())
        {
            return Err(self.invalid(format!(
                "param `{}` was unbound: bind it to a tensor before launching",
                ir.params[p].name
            )));
        }
        let neurons = self.layout.neurons();
        if neurons == 0 || n % neurons != 0 {
            return Err(self.invalid(format!(
                "N = {n} is not a multiple of the layout's {neurons} neurons"
            )));
        }
        if let Some(states) = states
            && (states.len() != ir.states.len()
                || states
                    .iter()
                    .any(|s| s.shape != [n] || s.dtype != Dtype::F32))
        {
            return Err(self.invalid(format!(
                "states must be {} f32 tensors of shape [{n}]",
                ir.states.len()
            )));
        }
        Ok((steps, n))
    }

    /// An argument of this layer that cannot be used.
    fn invalid(&self, problem: String) -> RuntimeError {
        RuntimeError::invalid(
            format!("neuron layer `{}`", self.compiled.neuron.name),
            problem,
        )
    }

    fn param_arg(&self, p: usize) -> Arg<'_> {
        match &self.params[p] {
            (_, Some(t)) => Arg::Tensor(t),
            // Never empty at a launch: `check` refuses unbound params.
            (v, None) => v.first().map_or(Arg::Null, |&x| Arg::F32(x)),
        }
    }

    /// The arguments every neuron kernel takes alike (params and sizes).
    fn common(&self, role: ArgRole, steps: usize, n: usize) -> Option<Arg<'_>> {
        Some(match role {
            ArgRole::Param(p) => self.param_arg(p),
            ArgRole::Steps => Arg::I64(steps as i64),
            ArgRole::Elements => Arg::I64(n as i64),
            ArgRole::Channels => Arg::I64(self.layout.channels as i64),
            ArgRole::Inner => Arg::I64(self.layout.inner as i64),
            _ => return None,
        })
    }

    /// Launches an element-group kernel over `n` elements, each argument bound by its role.
    fn launch<'a>(
        &'a self,
        kernel: &Kernel,
        n: usize,
        arg: &dyn Fn(ArgRole) -> Arg<'a>,
    ) -> Result<(), RuntimeError> {
        if n == 0 {
            return Ok(());
        }
        let groups = n.div_ceil(ELEMENTS_PER_THREAD);
        let block = self.options.block_size;
        let config = launch::grid_stride(&self.device, groups, block, 32);
        self.launch_with(kernel, config, arg)
    }

    fn launch_with<'a>(
        &'a self,
        kernel: &Kernel,
        config: LaunchConfig,
        arg: &dyn Fn(ArgRole) -> Arg<'a>,
    ) -> Result<(), RuntimeError> {
        let args: Vec<Arg> = kernel
            .signature()
            .args
            .iter()
            .map(|a| arg(a.role))
            .collect();
        launch::launch(&self.device, kernel, config, &args)
    }

    /// Allocates what a forward pass over `[steps, n]` writes.
    pub fn alloc_forward(
        &self,
        steps: usize,
        n: usize,
        train: bool,
    ) -> Result<LayerForward, RuntimeError> {
        let ir = &self.compiled.neuron;
        let (dev, st) = (&self.device, self.storage());
        let nsaves = if train {
            self.compiled.plan.saves.len()
        } else {
            0
        };
        Ok(LayerForward {
            outputs: (0..ir.outputs.len())
                .map(|m| DeviceTensor::empty(dev, self.out_dtype(m), &[steps, n]))
                .collect::<Result<_, _>>()?,
            saves: (0..nsaves)
                .map(|_| DeviceTensor::empty(dev, st.saves, &[steps, n]))
                .collect::<Result<_, _>>()?,
            final_states: (0..ir.states.len())
                .map(|_| DeviceTensor::empty(dev, Dtype::F32, &[n]))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Runs all `T` steps forward. `init`: the states before the first step (default: the
    /// declared initial values).
    pub fn forward(
        &self,
        inputs: &[&DeviceTensor],
        init: Option<&[&DeviceTensor]>,
        train: bool,
    ) -> Result<LayerForward, RuntimeError> {
        let (steps, n) = seq_shape(inputs);
        let mut out = self.alloc_forward(steps, n, train)?;
        self.forward_into(inputs, init, train, &mut out)?;
        Ok(out)
    }

    /// [`NeuronLayer::forward`] into tensors allocated by [`NeuronLayer::alloc_forward`].
    pub fn forward_into(
        &self,
        inputs: &[&DeviceTensor],
        init: Option<&[&DeviceTensor]>,
        train: bool,
        out: &mut LayerForward,
    ) -> Result<(), RuntimeError> {
        let ir = &self.compiled.neuron;
        let st = self.storage();
        if inputs.len() != ir.inputs.len() {
            return Err(self.invalid(format!(
                "neuron `{}` takes {} input(s), got {}",
                ir.name,
                ir.inputs.len(),
                inputs.len()
            )));
        }
        let (steps, n) = self.check("inputs", inputs, &vec![st.io; inputs.len()], init)?;
        let nsaves = if train {
            self.compiled.plan.saves.len()
        } else {
            0
        };
        let fits = out
            .outputs
            .iter()
            .chain(&out.saves)
            .all(|t| t.shape == [steps, n])
            && out.final_states.iter().all(|t| t.shape == [n])
            && (out.outputs.len(), out.saves.len(), out.final_states.len())
                == (ir.outputs.len(), nsaves, ir.states.len());
        if !fits {
            return Err(self.invalid(format!(
                "the output tensors do not fit [{steps}, {n}]; allocate them with `alloc_forward`"
            )));
        }
        let LayerForward {
            outputs,
            saves,
            final_states,
        } = &*out;
        let kernel = if train {
            &self.loaded[0]
        } else {
            &self.loaded[1]
        };
        self.launch(kernel, n, &|role| {
            self.common(role, steps, n).unwrap_or_else(|| match role {
                ArgRole::Input(k) => Arg::Tensor(inputs[k]),
                ArgRole::Output(m) => Arg::Tensor(&outputs[m]),
                ArgRole::Save(k) => Arg::Tensor(&saves[k]),
                ArgRole::InitState(j) => init.map_or(Arg::Null, |s| Arg::Tensor(s[j])),
                ArgRole::FinalState(j) => Arg::Tensor(&final_states[j]),
                _ => Arg::Null,
            })
        })
    }

    /// Allocates what a backward pass over `[steps, n]` writes, param gradients zeroed.
    pub fn alloc_backward(&self, steps: usize, n: usize) -> Result<LayerGradients, RuntimeError> {
        let ir = &self.compiled.neuron;
        let (dev, st, layout) = (&self.device, self.storage(), self.layout);
        self.gradients_in(
            n,
            (0..ir.inputs.len())
                .map(|_| DeviceTensor::empty(dev, st.io, &[steps, n]))
                .collect::<Result<_, _>>()?,
            (0..ir.states.len())
                .map(|_| DeviceTensor::empty(dev, Dtype::F32, &[n]))
                .collect::<Result<_, _>>()?,
            ir.params
                .iter()
                .map(|p| {
                    p.learnable
                        .then(|| DeviceTensor::zeros(dev, Dtype::F32, &[layout.len(p.shape)]))
                        .transpose()
                })
                .collect::<Result<_, _>>()?,
        )
    }

    /// What a backward pass over `n` elements writes, in the given tensors (another
    /// library's memory, say: [`DeviceTensor::borrowed`]): input and initial-state
    /// gradients to overwrite, one zeroed gradient per learnable param (`None` for fixed
    /// ones) to add to. Only the deterministic reduction's scratch is allocated here.
    pub fn gradients_in(
        &self,
        n: usize,
        inputs: Vec<DeviceTensor>,
        init_states: Vec<DeviceTensor>,
        params: Vec<Option<DeviceTensor>>,
    ) -> Result<LayerGradients, RuntimeError> {
        let atomic = self.options.reduction == Reduction::Atomic;
        let (dev, layout) = (&self.device, self.layout);
        let partials = self
            .compiled
            .neuron
            .params
            .iter()
            .map(|p| {
                let sums = reduce_chunks(n, layout.len(p.shape)) * layout.len(p.shape);
                (p.learnable && !atomic)
                    .then(|| {
                        Ok((
                            DeviceTensor::zeros(dev, Dtype::F32, &[n])?,
                            DeviceTensor::zeros(dev, Dtype::F32, &[sums])?,
                        ))
                    })
                    .transpose()
            })
            .collect::<Result<_, RuntimeError>>()?;
        Ok(LayerGradients {
            inputs,
            init_states,
            params,
            partials,
        })
    }

    /// Runs one backward pass through time. `inputs`, `init` and `fwd` are the forward
    /// pass's (which must have been a training pass); `grad_outputs` are `dL/dy`;
    /// `grad_final` is `dL/ds[T-1]` from a later chunk (default zero).
    pub fn backward(
        &self,
        inputs: &[&DeviceTensor],
        init: Option<&[&DeviceTensor]>,
        fwd: &LayerForward,
        grad_outputs: &[&DeviceTensor],
        grad_final: Option<&[&DeviceTensor]>,
    ) -> Result<LayerGradients, RuntimeError> {
        let (steps, n) = seq_shape(inputs);
        let mut out = self.alloc_backward(steps, n)?;
        self.backward_into(inputs, init, fwd, grad_outputs, grad_final, &mut out)?;
        Ok(out)
    }

    /// [`NeuronLayer::backward`] into tensors from [`NeuronLayer::alloc_backward`]: input
    /// and initial-state gradients are overwritten, param gradients added to (so chunks of
    /// one sequence accumulate into the same tensors).
    pub fn backward_into(
        &self,
        inputs: &[&DeviceTensor],
        init: Option<&[&DeviceTensor]>,
        fwd: &LayerForward,
        grad_outputs: &[&DeviceTensor],
        grad_final: Option<&[&DeviceTensor]>,
        out: &mut LayerGradients,
    ) -> Result<(), RuntimeError> {
        let ir = &self.compiled.neuron;
        let st = self.storage();
        if fwd.saves.len() != self.compiled.plan.saves.len() {
            return Err(RuntimeError::Order(
                "backward needs the saves of a training forward pass (`forward(.., train: true)`)"
                    .into(),
            ));
        }
        if inputs.len() != ir.inputs.len() || grad_outputs.len() != ir.outputs.len() {
            return Err(self.invalid(format!(
                "neuron `{}` takes {} input(s) and {} output gradient(s)",
                ir.name,
                ir.inputs.len(),
                ir.outputs.len()
            )));
        }
        let (steps, n) = self.check("inputs", inputs, &vec![st.io; inputs.len()], init)?;
        let (gsteps, gn) = self.check(
            "output gradients",
            grad_outputs,
            &vec![st.io; grad_outputs.len()],
            grad_final,
        )?;
        if (gsteps, gn) != (steps, n) {
            return Err(self.invalid(format!(
                "output gradients are [{gsteps}, {gn}], inputs [{steps}, {n}]"
            )));
        }
        let layout = self.layout;
        let fits = out.inputs.iter().all(|t| t.shape == [steps, n])
            && out.init_states.iter().all(|t| t.shape == [n])
            && ir.params.iter().zip(&out.params).all(|(p, g)| {
                g.as_ref().map(|g| g.shape == [layout.len(p.shape)]) == p.learnable.then_some(true)
            });
        if !fits {
            return Err(self.invalid(format!(
                "the gradient tensors do not fit [{steps}, {n}]; allocate them with `alloc_backward`"
            )));
        }
        let atomic = self.options.reduction == Reduction::Atomic;
        if out
            .partials
            .iter()
            .any(|p| p.as_ref().is_some_and(|p| p.0.shape != [n]))
        {
            return Err(self.invalid(format!(
                "the gradient tensors do not fit N = {n}; allocate them with `alloc_backward`"
            )));
        }
        let LayerGradients {
            inputs: dx,
            init_states: dinit,
            params: dparams,
            partials,
        } = &*out;
        self.launch(&self.loaded[2], n, &|role| {
            self.common(role, steps, n).unwrap_or_else(|| match role {
                ArgRole::OutputGrad(m) => Arg::Tensor(grad_outputs[m]),
                ArgRole::Save(k) => Arg::Tensor(&fwd.saves[k]),
                ArgRole::Input(k) => Arg::Tensor(inputs[k]),
                ArgRole::Output(m) => Arg::Tensor(&fwd.outputs[m]),
                ArgRole::InitState(j) => init.map_or(Arg::Null, |s| Arg::Tensor(s[j])),
                ArgRole::FinalStateGrad(j) => grad_final.map_or(Arg::Null, |s| Arg::Tensor(s[j])),
                ArgRole::InputGrad(k) => Arg::Tensor(&dx[k]),
                ArgRole::InitStateGrad(j) => Arg::Tensor(&dinit[j]),
                ArgRole::ParamGrad(p) => partials[p]
                    .as_ref()
                    .map(|p| &p.0)
                    .or(dparams[p].as_ref())
                    .map_or(Arg::Null, Arg::Tensor),
                _ => Arg::Null,
            })
        })?;
        if let (false, Some(reduce)) = (atomic, &self.reduce) {
            for (p, spec) in ir.params.iter().enumerate() {
                let (Some((part, scratch)), Some(out)) = (&partials[p], &dparams[p]) else {
                    continue;
                };
                let shape = match spec.shape {
                    ParamShape::Scalar => 0,
                    ParamShape::PerChannel => 1,
                    ParamShape::PerNeuron => 2,
                };
                let values = layout.len(spec.shape);
                let chunks = reduce_chunks(n, values);
                let run = |grid: (u32, u32),
                           src: &DeviceTensor,
                           dst: &DeviceTensor,
                           n: usize,
                           channels: usize,
                           inner: usize,
                           shape: i32| {
                    let config = launch::config(grid, REDUCE_BLOCK_SIZE);
                    self.launch_with(reduce, config, &|role| match role {
                        ArgRole::Partials => Arg::Tensor(src),
                        ArgRole::Reduced => Arg::Tensor(dst),
                        ArgRole::Elements => Arg::I64(n as i64),
                        ArgRole::Channels => Arg::I64(channels as i64),
                        ArgRole::Inner => Arg::I64(inner as i64),
                        ArgRole::Shape => Arg::I32(shape),
                        _ => Arg::Null,
                    })
                };
                if chunks == 1 {
                    run(
                        (values as u32, 1),
                        part,
                        out,
                        n,
                        layout.channels,
                        layout.inner,
                        shape,
                    )?;
                } else {
                    // Chunk sums laid out [chunks, values]: per-neuron over `values` neurons.
                    scratch.clear()?;
                    run(
                        (values as u32, chunks as u32),
                        part,
                        scratch,
                        n,
                        layout.channels,
                        layout.inner,
                        shape,
                    )?;
                    run(
                        (values as u32, 1),
                        scratch,
                        out,
                        chunks * values,
                        values,
                        1,
                        2,
                    )?;
                }
            }
        }
        Ok(())
    }
}
