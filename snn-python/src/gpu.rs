//! The CUDA path of `snn.torch`: a neuron's generated kernels on PyTorch's CUDA tensors,
//! queued on PyTorch's current stream. PyTorch allocates every tensor (outputs, the memory
//! plan's saves, gradients) and passes their addresses; the kernels read and write them in
//! place, with no copy and no synchronisation. `snn.torch` checks each tensor's device,
//! dtype, shape and contiguity before its address is passed here.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use snn_codegen::{Dtype, Layout, NeuronIr, Storage, compile};
use snn_runtime::{Device, DeviceTensor, LayerConfig, LayerForward, NeuronLayer};

use crate::{Neuron, value_error};

/// Devices by (ordinal, stream): each issues its work on one of PyTorch's streams.
type Devices = HashMap<(usize, u64), Arc<Device>>;
static DEVICES: LazyLock<Mutex<Devices>> = LazyLock::new(Mutex::default);

/// The device `ordinal`, issuing work on `stream`.
fn device(ordinal: usize, stream: u64) -> PyResult<Arc<Device>> {
    let mut devices = DEVICES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(d) = devices.get(&(ordinal, stream)) {
        return Ok(d.clone());
    }
    // SAFETY: `stream` is a stream PyTorch made on this device (`torch.cuda.Stream`, whose
    // `cuda_stream` snn.torch passes; 0 for the default stream). PyTorch never destroys
    // the streams it makes (its pool of streams lives as long as the process), so it
    // outlives the device kept here.
    let d = unsafe { Device::on_stream(ordinal, stream) }.map_err(value_error)?;
    devices.insert((ordinal, stream), d.clone());
    Ok(d)
}

/// The storage `name` in PyTorch: "f32", or "narrow" in bf16 throughout. PyTorch's autograd
/// needs floating-point outputs (and its convolutions take no bytes), so narrow spikes are
/// kept in bf16 rather than the `u8` of `Storage::NARROW`; they are exactly 0 or 1 in both.
fn storage(name: &str) -> PyResult<Storage> {
    match crate::storage(name)? {
        Storage::F32 => Ok(Storage::F32),
        _ => Ok(Storage {
            io: Dtype::BF16,
            spikes: Dtype::BF16,
            saves: Dtype::BF16,
        }),
    }
}

/// `neuron` with only the params in `learnable` learnable: the others are fixed, so the
/// kernels neither read them through a pointer nor derive their gradients.
fn layer_ir(neuron: &Neuron, learnable: &[String]) -> NeuronIr {
    let mut ir = neuron.ir.clone();
    for p in &mut ir.params {
        p.learnable &= learnable.contains(&p.name);
    }
    ir
}

/// What a layer of `neuron` in `storage`, learning `learnable`, exchanges with PyTorch:
/// the dtype of its inputs, outputs and gradients, and the number and dtype of the
/// `[T, ...]` tensors a training forward pass saves for the backward pass.
#[pyfunction]
pub(crate) fn cuda_plan(
    neuron: &Neuron,
    storage: &str,
    learnable: Vec<String>,
) -> PyResult<(&'static str, usize, &'static str)> {
    let st = self::storage(storage)?;
    let compiled = compile(&layer_ir(neuron, &learnable), st).map_err(value_error)?;
    // Every output is stored in the I/O dtype: spikes too (see `storage`).
    Ok((
        torch_dtype(st.io),
        compiled.plan.saves.len(),
        torch_dtype(st.saves),
    ))
}

/// PyTorch's name of a dtype.
fn torch_dtype(d: Dtype) -> &'static str {
    match d {
        Dtype::BF16 => "bfloat16",
        Dtype::F16 => "float16",
        Dtype::F64 => "float64",
        Dtype::U8 => "uint8",
        Dtype::I8 => "int8",
        _ => "float32",
    }
}

/// A neuron's kernels on one device and stream, for one layout, with the fixed params of
/// one `snn.torch.NeuronLayer`.
#[pyclass(module = "snn._native", frozen)]
pub(crate) struct GpuLayer {
    layer: Mutex<NeuronLayer>,
    learnable: Vec<String>,
}

/// Tensors over PyTorch's memory, one per address, each of `dtype` and `shape`.
///
/// # Safety
/// Each address is that of a contiguous tensor of `dtype` and `shape` on the layer's
/// device, alive until the call that uses it returns (and then ordered by the stream).
unsafe fn borrowed(
    device: &Arc<Device>,
    ptrs: &[u64],
    dtype: Dtype,
    shape: &[usize],
) -> Vec<DeviceTensor> {
    ptrs.iter()
        // SAFETY: as this function's contract.
        .map(|&p| unsafe { DeviceTensor::borrowed(device, p, dtype, shape) })
        .collect()
}

/// The references the layer's calls take.
fn refs(tensors: &[DeviceTensor]) -> Vec<&DeviceTensor> {
    tensors.iter().collect()
}

impl GpuLayer {
    fn layer(&self) -> std::sync::MutexGuard<'_, NeuronLayer> {
        self.layer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds the learnable params to PyTorch's parameter tensors (`ptrs`, in the order of
    /// `learnable`), runs `f`, and unbinds them again, so the layer never keeps an address
    /// past the call.
    fn with_params<T>(
        &self,
        ptrs: &[u64],
        f: impl FnOnce(&NeuronLayer, &Arc<Device>) -> PyResult<T>,
    ) -> PyResult<T> {
        if ptrs.len() != self.learnable.len() {
            return Err(value_error(format!(
                "{} param tensors for {} learnable params",
                ptrs.len(),
                self.learnable.len()
            )));
        }
        let mut layer = self.layer();
        let device = layer.device().clone();
        let layout = layer.config().layout;
        // The params bound so far, each unbound again below even when a later one fails.
        let mut bound = 0;
        let mut bind = || -> PyResult<()> {
            for (name, &p) in self.learnable.iter().zip(ptrs) {
                let ir = layer.neuron();
                let shape = ir.param_index(name).map(|i| ir.params[i].shape);
                let shape = shape.ok_or_else(|| value_error(format!("no param `{name}`")))?;
                // SAFETY: snn.torch passes each learnable param's `nn.Parameter`: a
                // contiguous f32 CUDA tensor of the param's length under the layout, on
                // this device.
                let t =
                    unsafe { DeviceTensor::borrowed(&device, p, Dtype::F32, &[layout.len(shape)]) };
                layer.bind_param(name, &t).map_err(value_error)?;
                bound += 1;
            }
            Ok(())
        };
        let result = bind().and_then(|()| f(&layer, &device));
        for name in &self.learnable[..bound] {
            layer.unbind_param(name).map_err(value_error)?;
        }
        result
    }
}

#[pymethods]
impl GpuLayer {
    /// `neuron`'s kernels in `storage` on CUDA device `device`, queued on `stream` (a
    /// `torch.cuda.Stream`'s `cuda_stream`), per-channel params over `channels` channels
    /// of `inner` consecutive values; `params` sets fixed params (name -> value, or one
    /// value per channel), `learnable` names the params bound to tensors at each call.
    #[new]
    #[pyo3(signature = (neuron, storage, device, stream, channels, inner, params, learnable))]
    #[allow(clippy::too_many_arguments)] // Python's arguments, one by one
    fn new(
        neuron: &Neuron,
        storage: &str,
        device: usize,
        stream: u64,
        channels: usize,
        inner: usize,
        params: &Bound<'_, PyDict>,
        learnable: Vec<String>,
    ) -> PyResult<Self> {
        let ir = layer_ir(neuron, &learnable);
        let device = self::device(device, stream)?;
        let config = LayerConfig {
            storage: self::storage(storage)?,
            ..LayerConfig::new(Layout { channels, inner })
        };
        let mut layer = NeuronLayer::new(&device, &ir, config).map_err(value_error)?;
        for (name, values) in params.iter() {
            let name: String = name.extract()?;
            let values: Vec<f32> = values
                .extract::<f32>()
                .map(|v| vec![v])
                .or_else(|_| values.extract::<Vec<f32>>())?;
            // Uploaded once, here: the calls themselves never synchronise.
            layer.set_param(&name, &values).map_err(value_error)?;
        }
        Ok(Self {
            layer: Mutex::new(layer),
            learnable,
        })
    }

    /// All `steps` steps forward over `[steps, n]` tensors (addresses): `inputs`,
    /// `init_states` (`[n]` f32 each, or None for the declared initial values), `params`
    /// (the learnable params' tensors), written: `outputs`, `saves` (empty for an
    /// inference pass) and `final_states`.
    #[pyo3(signature = (steps, n, inputs, init_states, params, outputs, saves, final_states))]
    #[allow(clippy::too_many_arguments)] // Python's arguments, one by one
    fn forward(
        &self,
        steps: usize,
        n: usize,
        inputs: Vec<u64>,
        init_states: Option<Vec<u64>>,
        params: Vec<u64>,
        outputs: Vec<u64>,
        saves: Vec<u64>,
        final_states: Vec<u64>,
    ) -> PyResult<()> {
        self.with_params(&params, |layer, device| {
            let st = layer.storage();
            let seq = [steps, n];
            // SAFETY: snn.torch passes contiguous CUDA tensors on this device, of the
            // layer's dtypes (`io_dtype`, `output_dtypes`, `saves`) and of these shapes,
            // alive for the call; the kernels are queued on PyTorch's stream, in order with
            // its own use of them.
            let (xs, init, mut out) = unsafe {
                let outs = outputs
                    .iter()
                    .enumerate()
                    .map(|(m, &p)| DeviceTensor::borrowed(device, p, layer.out_dtype(m), &seq))
                    .collect();
                (
                    borrowed(device, &inputs, st.io, &seq),
                    init_states.map(|s| borrowed(device, &s, Dtype::F32, &[n])),
                    LayerForward {
                        outputs: outs,
                        saves: borrowed(device, &saves, st.saves, &seq),
                        final_states: borrowed(device, &final_states, Dtype::F32, &[n]),
                    },
                )
            };
            let xs = refs(&xs);
            let init = init.as_deref().map(refs);
            layer
                .forward_into(&xs, init.as_deref(), !saves.is_empty(), &mut out)
                .map_err(value_error)
        })
    }

    /// One backward pass through time over the tensors of a training forward pass
    /// (`inputs`, `init_states`, `params`, `outputs`, `saves`), with `grad_outputs`
    /// (`[steps, n]`) and `grad_final_states` (`[n]` f32, or None for zero); written:
    /// `grad_inputs`, `grad_init_states`, and `grad_params` (zeroed f32 tensors of each
    /// learnable param's length, added to).
    #[pyo3(signature = (steps, n, inputs, init_states, params, outputs, saves, grad_outputs, grad_final_states, grad_inputs, grad_init_states, grad_params))]
    #[allow(clippy::too_many_arguments)] // Python's arguments, one by one
    fn backward(
        &self,
        steps: usize,
        n: usize,
        inputs: Vec<u64>,
        init_states: Option<Vec<u64>>,
        params: Vec<u64>,
        outputs: Vec<u64>,
        saves: Vec<u64>,
        grad_outputs: Vec<u64>,
        grad_final_states: Option<Vec<u64>>,
        grad_inputs: Vec<u64>,
        grad_init_states: Vec<u64>,
        grad_params: Vec<u64>,
    ) -> PyResult<()> {
        self.with_params(&params, |layer, device| {
            let st = layer.storage();
            let seq = [steps, n];
            let ir = layer.neuron();
            let layout = layer.config().layout;
            if grad_params.len() != self.learnable.len() {
                return Err(value_error(format!(
                    "{} param gradients for {} learnable params",
                    grad_params.len(),
                    self.learnable.len()
                )));
            }
            // SAFETY: as in `forward`: contiguous CUDA tensors on this device of the
            // layer's dtypes and these shapes (param gradients: f32, of each learnable
            // param's length), alive for the call, used in order on PyTorch's stream.
            let (xs, init, fwd, gys, gfinal, grads) = unsafe {
                let outs = outputs
                    .iter()
                    .enumerate()
                    .map(|(m, &p)| DeviceTensor::borrowed(device, p, layer.out_dtype(m), &seq))
                    .collect();
                let mut dparams = grad_params.iter();
                let dparams = ir
                    .params
                    .iter()
                    .map(|p| {
                        let len = layout.len(p.shape);
                        // The layer's learnable params are those of `learnable`, in order.
                        p.learnable
                            .then(|| dparams.next())
                            .flatten()
                            .map(|&ptr| DeviceTensor::borrowed(device, ptr, Dtype::F32, &[len]))
                    })
                    .collect();
                (
                    borrowed(device, &inputs, st.io, &seq),
                    init_states.map(|s| borrowed(device, &s, Dtype::F32, &[n])),
                    LayerForward {
                        outputs: outs,
                        saves: borrowed(device, &saves, st.saves, &seq),
                        final_states: Vec::new(),
                    },
                    borrowed(device, &grad_outputs, st.io, &seq),
                    grad_final_states.map(|s| borrowed(device, &s, Dtype::F32, &[n])),
                    layer
                        .gradients_in(
                            n,
                            borrowed(device, &grad_inputs, st.io, &seq),
                            borrowed(device, &grad_init_states, Dtype::F32, &[n]),
                            dparams,
                        )
                        .map_err(value_error)?,
                )
            };
            let mut grads = grads;
            let (xs, gys) = (refs(&xs), refs(&gys));
            let init = init.as_deref().map(refs);
            let gfinal = gfinal.as_deref().map(refs);
            layer
                .backward_into(
                    &xs,
                    init.as_deref(),
                    &fwd,
                    &gys,
                    gfinal.as_deref(),
                    &mut grads,
                )
                .map_err(value_error)
        })
    }
}
