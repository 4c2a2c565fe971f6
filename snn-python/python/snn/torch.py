"""snn neurons as PyTorch modules: `NeuronLayer` runs a neuron (the zoo's, or one declared
with `snn.neuron`) over `[T, ...]` tensors inside a PyTorch model, with autograd through
time by the neuron's derived backward and its learnable params as `nn.Parameter`s.

    import torch, snn, snn.torch
    lif = snn.torch.NeuronLayer(snn.lif_node(tau=2.0), learnable=["tau"])
    x = torch.rand(32, 8, 100, requires_grad=True)      # [T, batch, features]
    s = lif(x)                                         # spikes, [T, batch, features]
    s.sum().backward()                                 # x.grad and lif.tau.grad

The layer is a `torch.library.custom_op` with its autograd registered, so it also runs
under `torch.compile`. So far it runs CPU tensors, on the CPU reference interpreter (the
one every generated CUDA kernel is checked against); CUDA tensors are refused with an
error that says so.
"""

import itertools

import numpy as np
import torch

from . import _sequences

# Layers by key: a custom op's arguments are tensors and numbers, so the op finds the
# neuron and its fixed settings here.
_LAYERS = {}
_KEYS = itertools.count()


def _numpy(t, what):
    if t.device.type != "cpu":
        raise ValueError(
            f"{what} is on {t.device}: snn.torch runs CPU tensors so far (the CUDA path is "
            "not built yet); move it with .cpu()"
        )
    if t.dtype != torch.float32:
        raise ValueError(f"{what} is {t.dtype}: snn.torch takes float32 tensors")
    return t.detach().contiguous().numpy()


def _params(layer, values):
    params = dict(layer["fixed"])
    for name, v in zip(layer["learnable"], values):
        params[name] = [float(p) for p in _numpy(v, f"param `{name}`").reshape(-1)]
    return params


@torch.library.custom_op("snn::neuron_forward", mutates_args=())
def _forward(key: int, inputs: list[torch.Tensor], params: list[torch.Tensor]) -> list[torch.Tensor]:
    layer = _LAYERS[key]
    xs, shape = _sequences("input", [_numpy(x, f"input {k}") for k, x in enumerate(inputs)])
    outs, _ = layer["neuron"].run_forward(
        xs, shape[0], layer["channels"], _params(layer, params), layer["storage"]
    )
    return [torch.from_numpy(np.frombuffer(b, dtype="<f4").reshape(shape).copy()) for b in outs]


@_forward.register_fake
def _(key, inputs, params):
    return [torch.empty_like(inputs[0]) for _ in _LAYERS[key]["neuron"].outputs]


@torch.library.custom_op("snn::neuron_backward", mutates_args=())
def _backward(
    key: int, inputs: list[torch.Tensor], params: list[torch.Tensor], grads: list[torch.Tensor]
) -> list[torch.Tensor]:
    layer = _LAYERS[key]
    xs, shape = _sequences("input", [_numpy(x, f"input {k}") for k, x in enumerate(inputs)])
    gys, _ = _sequences("output gradient", [_numpy(g, f"gradient {k}") for k, g in enumerate(grads)])
    _, dxs, dparams = layer["neuron"].run_backward(
        xs, gys, shape[0], layer["channels"], _params(layer, params), layer["storage"]
    )
    dxs = [torch.from_numpy(np.frombuffer(b, dtype="<f4").reshape(shape).copy()) for b in dxs]
    dparams = dict(dparams)
    dps = [torch.tensor(dparams[name], dtype=torch.float32).reshape(p.shape)
           for name, p in zip(layer["learnable"], params)]
    return dxs + dps


@_backward.register_fake
def _(key, inputs, params, grads):
    return [torch.empty_like(x) for x in inputs] + [torch.empty_like(p) for p in params]


def _setup_context(ctx, inputs, output):
    key, xs, params = inputs
    ctx.key = key
    ctx.n_inputs = len(xs)
    ctx.save_for_backward(*xs, *params)


def _autograd_backward(ctx, grads):
    saved = ctx.saved_tensors
    xs, params = list(saved[: ctx.n_inputs]), list(saved[ctx.n_inputs:])
    # Outputs nobody used have no gradient: zero, as their gradient is.
    grads = [torch.zeros_like(xs[0]) if g is None else g for g in grads]
    out = _backward(ctx.key, xs, params, grads)
    return None, out[: ctx.n_inputs], out[ctx.n_inputs:]


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


class NeuronLayer(torch.nn.Module):
    """`neuron` (an `snn.Neuron`) over `[T, ...]` float32 tensors: one tensor per input of
    the neuron, every one of the same shape; returns the neuron's output (or a tuple, for
    a neuron with several). Params take their declared defaults unless given in `params`
    (a number, or one value per channel); those named in `learnable` become
    `nn.Parameter`s with gradients, of shape `()` or, for a per-channel param, `(channels,)`
    (the last axis of the inputs is the channel). `storage="narrow"` rounds what is stored as the narrow
    GPU kernels do."""

    def __init__(self, neuron, storage="f32", learnable=(), channels=1, params=None):
        super().__init__()
        if storage not in ("f32", "narrow"):
            raise ValueError(f'storage `{storage}`: use "f32" or "narrow"')
        declared = dict(neuron.params)
        can_learn = set(neuron.learnable)
        params = dict(params or {})
        for name in list(params) + list(learnable):
            if name not in declared:
                raise ValueError(
                    f"neuron `{neuron.name}` has no param `{name}`; its params: "
                    f"{', '.join(declared) or 'none'}"
                )
        for name in learnable:
            if name not in can_learn:
                raise ValueError(
                    f"param `{name}` of neuron `{neuron.name}` is not learnable; the "
                    f"learnable ones: {', '.join(sorted(can_learn)) or 'none'}"
                )
        shapes = dict(neuron.param_shapes)
        self.neuron = neuron
        self.learnable = list(learnable)
        for name in self.learnable:
            if shapes[name] == "per_neuron":
                raise ValueError(
                    f"param `{name}` is per neuron: NeuronLayer learns scalar and per-channel "
                    "params so far"
                )
            shape = (channels,) if shapes[name] == "per_channel" else ()
            value = np.asarray(params.pop(name, declared[name]), dtype=np.float32)
            values = np.broadcast_to(value, shape).copy()
            self.register_parameter(name, torch.nn.Parameter(torch.from_numpy(values)))
        # Kept for the life of the process: copies of the layer (deepcopy, pickling within
        # it) share the key. An entry is a few references.
        self.key = next(_KEYS)
        _LAYERS[self.key] = {
            "neuron": neuron,
            "storage": storage,
            "channels": channels,
            "learnable": self.learnable,
            "fixed": params,
        }

    def forward(self, *inputs):
        names = self.neuron.inputs
        if len(inputs) != len(names):
            raise ValueError(
                f"neuron `{self.neuron.name}` takes {len(names)} input(s) "
                f"({', '.join(names)}), got {len(inputs)}"
            )
        outs = _forward(self.key, list(inputs), [getattr(self, n) for n in self.learnable])
        return outs[0] if len(outs) == 1 else tuple(outs)

    def extra_repr(self):
        return f"neuron={self.neuron.name}, learnable={self.learnable}"
