//! `snn._native`: the Rust side of the `snn` Python package (`python/snn/`). It holds
//! neurons (the zoo's, with their parameters, or traced from a Python step function:
//! [`trace`]), prints what the compiler derives for them (equations, memory plan, backward
//! through time), runs them on the CPU reference interpreter over buffers of `[T, N]` f32
//! values, runs their generated kernels on PyTorch's CUDA tensors ([`gpu`]), and reads
//! checkpoints. It needs no numpy: arrays come in through the buffer protocol and go back
//! as `bytes`, which the Python layer wraps.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use snn_codegen::interp::{Forward, Params, Reference, Seq};
use snn_codegen::{Dtype, Layout, Mode, NeuronIr, ParamShape, Storage, compile, zoo};

mod gpu;
mod trace;

/// `[T, N]` sequences handed back to Python, as `bytes` of little-endian f32 each.
type Arrays<'py> = Vec<Bound<'py, PyBytes>>;

/// Each learnable param's name and gradient.
type ParamGrads = Vec<(String, Vec<f32>)>;

/// A forward pass on the CPU reference, with what the backward pass needs of it.
struct Run {
    inputs: Vec<Seq<f32>>,
    params: Params<f32>,
    /// The initial states given (else the declared ones).
    init: Option<Vec<Vec<f32>>>,
    fwd: Forward<f32>,
}

/// `values` as Python `bytes` of little-endian f32.
fn f32_bytes<'py>(py: Python<'py>, values: &[f32]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &Dtype::F32.encode(values))
}

/// The param shapes by the names Python uses for them (`Tracer.param`, `param_shapes`).
pub(crate) const PARAM_SHAPES: [(&str, ParamShape); 3] = [
    ("scalar", ParamShape::Scalar),
    ("per_channel", ParamShape::PerChannel),
    ("per_neuron", ParamShape::PerNeuron),
];

/// A compiler or interpreter error as the Python exception that fits it.
pub(crate) fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The zoo's neuron names.
#[pyfunction]
fn zoo_names() -> Vec<&'static str> {
    zoo::NAMES.to_vec()
}

/// A neuron: its IR, and the CPU references that run it (each holding the neuron compiled
/// for its storage) in f32 and in narrow storage.
#[pyclass(module = "snn._native", frozen)]
pub(crate) struct Neuron {
    ir: NeuronIr,
    reference: Reference,
    narrow: Reference,
}

/// The storage named `name`: "f32" or "narrow" (bf16 inputs, outputs and saves, u8 spikes).
fn storage(name: &str) -> PyResult<Storage> {
    match name {
        "f32" => Ok(Storage::F32),
        "narrow" => Ok(Storage::NARROW),
        other => Err(value_error(format!(
            "storage `{other}`: use \"f32\" or \"narrow\""
        ))),
    }
}

impl Neuron {
    pub(crate) fn new(ir: NeuronIr) -> PyResult<Self> {
        let compiled = |storage| {
            compile(&ir, storage)
                .map(Reference::new)
                .map_err(value_error)
        };
        Ok(Self {
            reference: compiled(Storage::F32)?,
            narrow: compiled(Storage::NARROW)?,
            ir,
        })
    }

    /// The reference that runs the neuron in `storage` (rounding what it stores as the GPU
    /// kernels of that storage do).
    fn reference(&self, storage: &str) -> PyResult<&Reference> {
        Ok(if self::storage(storage)? == Storage::F32 {
            &self.reference
        } else {
            &self.narrow
        })
    }

    /// `[T, N]` f32 sequences from Python buffers of `steps * n` values each.
    fn seqs(
        what: &str,
        buffers: &[PyBuffer<f32>],
        steps: usize,
        py: Python<'_>,
    ) -> PyResult<Vec<Seq<f32>>> {
        buffers
            .iter()
            .enumerate()
            .map(|(k, b)| {
                if !b.is_c_contiguous() {
                    return Err(value_error(format!(
                        "{what} {k} is not contiguous: pass a C-contiguous float32 array (numpy.ascontiguousarray)"
                    )));
                }
                let data = b.to_vec(py)?;
                if steps == 0 || data.len() % steps != 0 {
                    return Err(value_error(format!(
                        "{what} {k} has {} values, not a multiple of T = {steps}",
                        data.len()
                    )));
                }
                let n = data.len() / steps;
                Seq::new(steps, n, data).map_err(value_error)
            })
            .collect()
    }

    /// The params `reference` runs with: the declared defaults, with `overrides` (name ->
    /// values).
    fn run_params(
        reference: &Reference,
        layout: Layout,
        overrides: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Params<f32>> {
        let mut params = Params::defaults(&reference.compiled().neuron, layout);
        for (name, values) in overrides.into_iter().flat_map(|d| d.iter()) {
            let name: String = name.extract()?;
            let values: Vec<f32> = values
                .extract::<f32>()
                .map(|v| vec![v])
                .or_else(|_| values.extract::<Vec<f32>>())?;
            params.set(&name, values).map_err(value_error)?;
        }
        Ok(params)
    }

    /// `[T, N]` sequences as `bytes` of little-endian f32.
    fn to_bytes<'py>(py: Python<'py>, seqs: &[Seq<f32>]) -> Arrays<'py> {
        seqs.iter().map(|s| f32_bytes(py, &s.data)).collect()
    }

    /// A forward pass of `reference` over `inputs`, `(steps, channels)`.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        py: Python<'_>,
        reference: &Reference,
        inputs: &[PyBuffer<f32>],
        init: Option<Vec<PyBuffer<f32>>>,
        (steps, layout): (usize, Layout),
        params: Option<&Bound<'_, PyDict>>,
        mode: Mode,
    ) -> PyResult<Run> {
        let xs = Self::seqs("input", inputs, steps, py)?;
        let params = Self::run_params(reference, layout, params)?;
        let init = init
            .map(|states| Self::state_values("initial state", &states, self.ir.states.len(), py))
            .transpose()?;
        let fwd = reference
            .forward(&params, &xs, init.as_deref(), mode)
            .map_err(value_error)?;
        Ok(Run {
            inputs: xs,
            params,
            init,
            fwd,
        })
    }

    /// One `[N]` f32 state per declared state, from Python buffers (the interpreter checks
    /// their lengths against the inputs).
    fn state_values(
        what: &str,
        buffers: &[PyBuffer<f32>],
        count: usize,
        py: Python<'_>,
    ) -> PyResult<Vec<Vec<f32>>> {
        if buffers.len() != count {
            return Err(value_error(format!(
                "{} {what}s given; the neuron has {count} state(s)",
                buffers.len()
            )));
        }
        Ok(Self::seqs(what, buffers, 1, py)?
            .into_iter()
            .map(|s| s.data)
            .collect())
    }
}

#[pymethods]
impl Neuron {
    /// The zoo neuron `name` with the parameter defaults in `params` overridden.
    #[staticmethod]
    #[pyo3(signature = (name, **params))]
    fn zoo(name: &str, params: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let Some(neuron) = zoo::by_name(name) else {
            return Err(PyKeyError::new_err(format!(
                "unknown neuron `{name}`; the zoo has: {}",
                zoo::NAMES.join(", ")
            )));
        };
        let mut ir = neuron.ir().map_err(value_error)?;
        for (key, value) in params.into_iter().flat_map(|d| d.iter()) {
            let key: String = key.extract()?;
            ir.set_default(&key, value.extract()?)
                .map_err(value_error)?;
        }
        Self::new(ir)
    }

    #[getter]
    fn name(&self) -> &str {
        &self.ir.name
    }

    #[getter]
    fn inputs(&self) -> Vec<String> {
        self.ir.inputs.clone()
    }

    #[getter]
    fn states(&self) -> Vec<String> {
        self.ir.states.iter().map(|s| s.name.clone()).collect()
    }

    #[getter]
    fn outputs(&self) -> Vec<String> {
        self.ir.outputs.clone()
    }

    /// Each param's default.
    #[getter]
    fn params(&self) -> Vec<(String, f64)> {
        self.ir
            .params
            .iter()
            .map(|p| (p.name.clone(), p.default))
            .collect()
    }

    /// Each param's shape: "scalar", "per_channel" or "per_neuron" (as `Tracer.param`
    /// takes them).
    #[getter]
    fn param_shapes(&self) -> Vec<(String, &'static str)> {
        self.ir
            .params
            .iter()
            .filter_map(|p| {
                let (name, _) = PARAM_SHAPES.iter().find(|(_, s)| *s == p.shape)?;
                Some((p.name.clone(), *name))
            })
            .collect()
    }

    /// The learnable params' names.
    #[getter]
    fn learnable(&self) -> Vec<String> {
        self.ir
            .params
            .iter()
            .filter(|p| p.learnable)
            .map(|p| p.name.clone())
            .collect()
    }

    /// What the compiler derives for `storage` ("f32" or "narrow"): the equations, the
    /// memory plan (bytes per element-step) and the backward through time.
    #[pyo3(signature = (storage = "f32"))]
    fn describe(&self, storage: &str) -> PyResult<String> {
        Ok(self.reference(storage)?.compiled().to_string())
    }

    fn __str__(&self) -> String {
        self.reference.compiled().to_string()
    }

    fn __repr__(&self) -> String {
        format!("<snn neuron {}>", self.ir.name)
    }

    /// A neuron never changes, so a copy of it (`copy.deepcopy` of a model that holds
    /// one, say) is the neuron itself.
    fn __copy__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __deepcopy__(slf: Py<Self>, _memo: &Bound<'_, PyAny>) -> Py<Self> {
        slf
    }

    /// Pickles as its IR (JSON), so that `torch.save` of a whole model holding the neuron,
    /// traced ones included, loads in another process.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (String,))> {
        let ir = serde_json::to_string(&slf.get().ir).map_err(value_error)?;
        Ok((slf.get_type().getattr("_from_ir")?, (ir,)))
    }

    /// The neuron whose IR `__reduce__` wrote; its graph is checked as a traced one is.
    #[classmethod]
    fn _from_ir(_cls: &Bound<'_, pyo3::types::PyType>, ir: &str) -> PyResult<Self> {
        let ir: NeuronIr = serde_json::from_str(ir)
            .map_err(|e| value_error(format!("not a pickled snn neuron: {e}")))?;
        ir.validate().map_err(value_error)?;
        Self::new(ir)
    }

    /// Runs all `steps` steps forward on the CPU reference: `inputs` are buffers of
    /// `steps * N` f32 values each (time-major); per-channel params see `channels` channels
    /// of `inner` consecutive values each (`N` a multiple of their product); `storage` "narrow" rounds what is stored as the narrow GPU
    /// kernels do; `init_states` (one `[N]` buffer per state) replace the declared initial
    /// values. Returns the outputs and the final states, as `bytes`.
    #[pyo3(signature = (inputs, steps, channels = 1, params = None, storage = "f32", init_states = None, inner = 1))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments, one by one
    fn run_forward<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<PyBuffer<f32>>,
        steps: usize,
        channels: usize,
        params: Option<&Bound<'py, PyDict>>,
        storage: &str,
        init_states: Option<Vec<PyBuffer<f32>>>,
        inner: usize,
    ) -> PyResult<(Arrays<'py>, Arrays<'py>)> {
        let reference = self.reference(storage)?;
        let fwd = self
            .forward(
                py,
                reference,
                &inputs,
                init_states,
                (steps, Layout { channels, inner }),
                params,
                Mode::Inference,
            )?
            .fwd;
        Ok((
            Self::to_bytes(py, &fwd.outputs),
            fwd.final_states.iter().map(|s| f32_bytes(py, s)).collect(),
        ))
    }

    /// Forward (training) then backward through time on the CPU reference, with
    /// `grad_outputs` = dL/d(output) for each output (and `grad_final_states` =
    /// dL/d(final state), default zero). Returns the outputs, the input gradients (as
    /// `bytes`), each learnable param's gradient, and dL/d(initial state) for each state.
    #[pyo3(signature = (inputs, grad_outputs, steps, channels = 1, params = None, storage = "f32", init_states = None, grad_final_states = None, inner = 1))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments, one by one
    fn run_backward<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<PyBuffer<f32>>,
        grad_outputs: Vec<PyBuffer<f32>>,
        steps: usize,
        channels: usize,
        params: Option<&Bound<'py, PyDict>>,
        storage: &str,
        init_states: Option<Vec<PyBuffer<f32>>>,
        grad_final_states: Option<Vec<PyBuffer<f32>>>,
        inner: usize,
    ) -> PyResult<(Arrays<'py>, Arrays<'py>, ParamGrads, Arrays<'py>)> {
        let reference = self.reference(storage)?;
        let Run {
            inputs: xs,
            params,
            init,
            fwd,
        } = self.forward(
            py,
            reference,
            &inputs,
            init_states,
            (steps, Layout { channels, inner }),
            params,
            Mode::Train,
        )?;
        let gys = Self::seqs("output gradient", &grad_outputs, steps, py)?;
        let grad_final = grad_final_states
            .map(|g| Self::state_values("final state gradient", &g, self.ir.states.len(), py))
            .transpose()?;
        let grads = reference
            .backward(
                &params,
                &xs,
                init.as_deref(),
                &fwd,
                &gys,
                grad_final.as_deref(),
            )
            .map_err(value_error)?;
        let param_grads = self
            .ir
            .params
            .iter()
            .zip(&grads.params)
            .filter_map(|(p, g)| g.clone().map(|g| (p.name.clone(), g)))
            .collect();
        Ok((
            Self::to_bytes(py, &fwd.outputs),
            Self::to_bytes(py, &grads.inputs),
            param_grads,
            grads.init_states.iter().map(|s| f32_bytes(py, s)).collect(),
        ))
    }
}

/// One tensor of a checkpoint: name, shape, whether it is an integer count (batch-norm's
/// `num_batches_tracked`, `int64` in PyTorch), and its values as little-endian f32 `bytes`.
type CheckpointTensor<'py> = (String, Vec<usize>, bool, Bound<'py, PyBytes>);

/// A checkpoint's metadata, key and value.
type Metadata = Vec<(String, String)>;

/// The model tensors of a checkpoint written by `snn train` (or `snn_nn::checkpoint::save`),
/// under their PyTorch `state_dict` names, and its metadata (the run's configuration).
#[pyfunction]
fn load_checkpoint<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
) -> PyResult<(Vec<CheckpointTensor<'py>>, Metadata)> {
    let ckpt = snn_nn::checkpoint::load(&path).map_err(value_error)?;
    let tensors = ckpt
        .params
        .iter()
        .map(|t| {
            let counter = t.role == snn_nn::Role::Counter;
            (
                t.name.clone(),
                t.shape.clone(),
                counter,
                f32_bytes(py, &t.data),
            )
        })
        .collect();
    Ok((tensors, ckpt.metadata.into_iter().collect()))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(zoo_names, m)?)?;
    m.add_function(wrap_pyfunction!(load_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(gpu::cuda_plan, m)?)?;
    m.add_class::<Neuron>()?;
    m.add_class::<gpu::GpuLayer>()?;
    m.add_class::<trace::Tracer>()?;
    m.add_class::<trace::Sym>()?;
    Ok(())
}
