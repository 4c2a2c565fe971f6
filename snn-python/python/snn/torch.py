"""snn neurons as PyTorch modules: `NeuronLayer` runs a neuron (the zoo's, or one declared
with `snn.neuron`) over `[T, ...]` tensors inside a PyTorch model, with autograd through
time by the neuron's derived backward and its learnable params as `nn.Parameter`s.

    import torch, snn, snn.torch
    plif = snn.torch.NeuronLayer(snn.zoo("plif"), learnable=["w"])
    x = torch.rand(32, 8, 100, requires_grad=True)      # [T, batch, features]
    s = plif(x)                                        # spikes, [T, batch, features]
    s.sum().backward()                                 # x.grad and plif.w.grad

The layer is a `torch.library.custom_op` with its autograd registered, so it also runs
under `torch.compile`. So far it runs CPU tensors, on the CPU reference interpreter (the
one every generated CUDA kernel is checked against); CUDA tensors are refused with an
error that says so.
"""

import itertools

import numpy as np
import torch

from . import _arrays, _prepare

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
        params[name] = _numpy(v, f"param `{name}`").reshape(-1).tolist()
    return params


def _tensors(buffers, shape):
    return [torch.from_numpy(a) for a in _arrays(buffers, shape)]


def _prepared(layer, inputs, states):
    """`snn._prepare` of the op's tensors."""
    xs = [_numpy(x, f"input {k}") for k, x in enumerate(inputs)]
    init = [_numpy(s, f"initial state {k}") for k, s in enumerate(states)] or None
    return _prepare(xs, init, layer["channels"], layer["axis"])


@torch.library.custom_op("snn::neuron_forward", mutates_args=())
def _forward(
    key: int, inputs: list[torch.Tensor], params: list[torch.Tensor], states: list[torch.Tensor]
) -> list[torch.Tensor]:
    """The outputs, then the final states."""
    layer = _LAYERS[key]
    xs, shape, init, inner = _prepared(layer, inputs, states)
    outs, finals = layer["neuron"].run_forward(
        xs, shape[0], layer["channels"], _params(layer, params), layer["storage"], init,
        inner=inner,
    )
    return _tensors(outs, shape) + _tensors(finals, shape[1:])


@_forward.register_fake
def _(key, inputs, params, states):
    neuron = _LAYERS[key]["neuron"]
    return [torch.empty_like(inputs[0]) for _ in neuron.outputs] + [
        torch.empty_like(inputs[0][0]) for _ in neuron.states
    ]


@torch.library.custom_op("snn::neuron_backward", mutates_args=())
def _backward(
    key: int,
    inputs: list[torch.Tensor],
    params: list[torch.Tensor],
    states: list[torch.Tensor],
    grads: list[torch.Tensor],
    grad_finals: list[torch.Tensor],
) -> list[torch.Tensor]:
    """dL/d(inputs), then dL/d(learnable params), then dL/d(initial states)."""
    layer = _LAYERS[key]
    xs, shape, init, inner = _prepared(layer, inputs, states)
    gys = [_numpy(g, f"gradient {k}") for k, g in enumerate(grads)]
    gfinal = [_numpy(g, f"final state gradient {k}") for k, g in enumerate(grad_finals)] or None
    _, dxs, dparams, dinit = layer["neuron"].run_backward(
        xs, gys, shape[0], layer["channels"], _params(layer, params), layer["storage"], init,
        gfinal, inner=inner,
    )
    dparams = dict(dparams)
    dps = [torch.tensor(dparams[name], dtype=torch.float32).reshape(p.shape)
           for name, p in zip(layer["learnable"], params)]
    dstates = _tensors(dinit, shape[1:]) if states else []
    return _tensors(dxs, shape) + dps + dstates


@_backward.register_fake
def _(key, inputs, params, states, grads, grad_finals):
    return [torch.empty_like(t) for t in itertools.chain(inputs, params, states)]


def _setup_context(ctx, inputs, output):
    key, xs, params, states = inputs
    ctx.key = key
    ctx.counts = (len(xs), len(params))
    ctx.n_outputs = len(output) - len(_LAYERS[key]["neuron"].states)
    ctx.save_for_backward(*xs, *params, *states)


def _autograd_backward(ctx, grads):
    n_x, n_p = ctx.counts
    saved = list(ctx.saved_tensors)
    xs, params, states = saved[:n_x], saved[n_x : n_x + n_p], saved[n_x + n_p :]
    # Outputs and final states nobody used have no gradient: zero, as their gradient is.
    like = [xs[0]] * ctx.n_outputs + [xs[0][0]] * (len(grads) - ctx.n_outputs)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like)]
    out = _backward(ctx.key, xs, params, states, grads[: ctx.n_outputs], grads[ctx.n_outputs :])
    return None, out[:n_x], out[n_x : n_x + n_p], out[n_x + n_p :]


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


class NeuronLayer(torch.nn.Module):
    """`neuron` (an `snn.Neuron`) over `[T, ...]` float32 tensors: one tensor per input of
    the neuron, every one of the same shape; returns the neuron's output (or a tuple, for
    a neuron with several). Params take their declared defaults unless given in `params`
    (a number, or one value per channel); those named in `learnable` become
    `nn.Parameter`s with gradients, of shape `()` or, for a per-channel param, `(channels,)`:
    the channels are axis `channel_axis` of the inputs (the last by default; 2 for
    `[T, B, C, H, W]` feature maps). `storage="narrow"` rounds what is stored as the narrow
    GPU kernels do."""

    def __init__(self, neuron, storage="f32", learnable=(), channels=1, params=None,
                 channel_axis=-1):
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
            "axis": channel_axis,
            "learnable": self.learnable,
            "fixed": params,
        }

    def forward(self, *inputs, state=None, return_state=False):
        """The neuron's output(s) over `inputs`. `state` (one tensor per state, shaped
        like an input without its T axis) starts the run instead of the declared initial
        values; with `return_state=True` the final states come back too, as
        `(outputs, states)`, so that a sequence split in time runs on where it stopped
        (gradients flow through both)."""
        names = self.neuron.inputs
        if len(inputs) != len(names):
            raise ValueError(
                f"neuron `{self.neuron.name}` takes {len(names)} input(s) "
                f"({', '.join(names)}), got {len(inputs)}"
            )
        states = list(state) if state is not None else []
        if states and len(states) != len(self.neuron.states):
            raise ValueError(
                f"neuron `{self.neuron.name}` has {len(self.neuron.states)} state(s) "
                f"({', '.join(self.neuron.states)}), got {len(states)}"
            )
        params = [getattr(self, n) for n in self.learnable]
        result = _forward(self.key, list(inputs), params, states)
        n = len(self.neuron.outputs)
        outs = result[0] if n == 1 else tuple(result[:n])
        return (outs, tuple(result[n:])) if return_state else outs

    def extra_repr(self):
        return f"neuron={self.neuron.name}, learnable={self.learnable}"
