"""snn neurons as PyTorch modules: `NeuronLayer` runs a neuron (the zoo's, or one declared
with `snn.neuron`) over `[T, ...]` tensors inside a PyTorch model, with autograd through
time by the neuron's derived backward and its learnable params as `nn.Parameter`s.

    import torch, snn, snn.torch
    plif = snn.torch.NeuronLayer(snn.zoo("plif"), learnable=["w"]).cuda()
    x = torch.rand(32, 8, 100, device="cuda", requires_grad=True)  # [T, batch, features]
    s = plif(x)                                        # spikes, [T, batch, features]
    s.sum().backward()                                 # x.grad and plif.w.grad

On CUDA tensors the layer runs the neuron's generated fused kernels (all T steps in one
launch forward, one backward), compiled with NVRTC on first use and cached on disk like
every snn kernel. They read and write PyTorch's own tensors in place, on PyTorch's current
stream, with no copy and no synchronisation; what the forward pass saves for the backward
pass (the neuron's memory plan) is held by autograd like any saved tensor. On CPU tensors
the layer runs the CPU reference interpreter that every generated kernel is checked
against (it recomputes the forward pass in the backward).

The layer is a `torch.library.custom_op` with its autograd registered, so it also runs
under `torch.compile`.
"""

import itertools

import numpy as np
import torch

from . import _arrays, _inner, _native, _prepare

# Layers by key: a custom op's arguments are tensors and numbers, so the op finds the
# neuron and its fixed settings here.
_LAYERS = {}
_KEYS = itertools.count()

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _numpy(t, what):
    if t.device.type != "cpu":
        raise ValueError(
            f"{what} is on {t.device}, the inputs on the CPU: put every tensor of the layer "
            "on one device"
        )
    if t.dtype != torch.float32:
        raise ValueError(f"{what} is {t.dtype}: snn.torch takes float32 tensors on the CPU")
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


# The CUDA path. `_native.GpuLayer` takes tensors by address, so everything it is given is
# checked here first: device, dtype, shape and contiguity.


def _check(t, what, device, dtype, shape):
    if t.device != device:
        raise ValueError(
            f"{what} is on {t.device}, the inputs on {device}: put every tensor of the layer "
            "on one device"
        )
    if t.dtype != dtype:
        raise ValueError(
            f"{what} is {t.dtype}; this layer's CUDA kernels take {dtype} (storage "
            '"f32": float32, "narrow": bfloat16)'
        )
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{what} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{what} is not contiguous: pass `.contiguous()` of it")
    return t.data_ptr()


def _cuda(layer, inputs, params, states):
    """The layer's `GpuLayer` for the inputs' device and PyTorch's current stream there,
    `(T, N)`, and the checked addresses of the inputs, params and states."""
    x0 = inputs[0]
    if x0.dim() < 2:
        raise ValueError(f"inputs must be [T, ...] with at least 2 dimensions, got {tuple(x0.shape)}")
    device, shape = x0.device, tuple(x0.shape)
    io, _, _ = layer["plan"]
    xs = [_check(x, f"input {k}", device, _DTYPES[io], shape) for k, x in enumerate(inputs)]
    inner = _inner(shape, layer["channels"], layer["axis"])
    # The kernels read as many values as the param's shape has under the layout.
    kinds = dict(layer["neuron"].param_shapes)
    lengths = {"scalar": 1, "per_channel": layer["channels"],
               "per_neuron": layer["channels"] * inner}
    ps = []
    for name, p in zip(layer["learnable"], params):
        want = lengths[kinds[name]]
        if p.numel() != want:
            raise ValueError(
                f"param `{name}` has {p.numel()} values; as a {kinds[name].replace('_', '-')} "
                f"param of these inputs it has {want}"
            )
        ps.append(_check(p, f"param `{name}`", device, torch.float32, p.shape))
    init = [
        _check(s, f"initial state {k}", device, torch.float32, shape[1:])
        for k, s in enumerate(states)
    ] or None
    stream = torch.cuda.current_stream(device).cuda_stream
    key = (device.index, stream, inner)
    gpu = layer["cuda"].get(key)
    if gpu is None:
        gpu = layer["cuda"][key] = _native.GpuLayer(
            layer["neuron"], layer["storage"], device.index, stream, layer["channels"],
            inner, layer["fixed"], layer["learnable"],
        )
    return gpu, (shape[0], x0[0].numel()), xs, ps, init


def _cuda_forward(layer, inputs, params, states, train):
    gpu, (steps, n), xs, ps, init = _cuda(layer, inputs, params, states)
    io, saves, save_dtype = layer["plan"]
    x0 = inputs[0]
    outs = [torch.empty_like(x0) for _ in layer["neuron"].outputs]
    finals = [torch.empty(x0.shape[1:], dtype=torch.float32, device=x0.device)
              for _ in layer["neuron"].states]
    kept = [torch.empty(x0.shape, dtype=_DTYPES[save_dtype], device=x0.device)
            for _ in range(saves if train else 0)]
    with torch.cuda.device(x0.device):
        gpu.forward(steps, n, xs, init, ps, [t.data_ptr() for t in outs],
                    [t.data_ptr() for t in kept], [t.data_ptr() for t in finals])
    return outs + finals + kept


def _cuda_backward(layer, inputs, params, states, outputs, saves, grads, grad_finals):
    gpu, (steps, n), xs, ps, init = _cuda(layer, inputs, params, states)
    x0 = inputs[0]
    # Gradients PyTorch hands back may be views or expanded; the kernels read them dense
    # (copies kept alive here until the kernels are queued).
    grads = [g.contiguous() for g in grads]
    grad_finals = [g.contiguous() for g in grad_finals]
    gys = [_check(g, f"gradient {k}", x0.device, x0.dtype, x0.shape)
           for k, g in enumerate(grads)]
    gfinal = [
        _check(g, f"final state gradient {k}", x0.device, torch.float32, x0.shape[1:])
        for k, g in enumerate(grad_finals)
    ] or None
    dxs = [torch.empty_like(x) for x in inputs]
    dps = [torch.zeros_like(p) for p in params]
    dinit = [torch.empty(x0.shape[1:], dtype=torch.float32, device=x0.device)
             for _ in layer["neuron"].states]
    with torch.cuda.device(x0.device):
        gpu.backward(
            steps, n, xs, init, ps, [t.data_ptr() for t in outputs],
            [t.data_ptr() for t in saves], gys, gfinal, [t.data_ptr() for t in dxs],
            [t.data_ptr() for t in dinit], [t.data_ptr() for t in dps],
        )
    return dxs + dps + (dinit if states else [])


@torch.library.custom_op("snn::neuron_forward", mutates_args=())
def _forward(
    key: int,
    inputs: list[torch.Tensor],
    params: list[torch.Tensor],
    states: list[torch.Tensor],
    train: bool,
) -> list[torch.Tensor]:
    """The outputs, then the final states, then (on CUDA, when `train`) the memory plan's
    saves for the backward pass."""
    layer = _LAYERS[key]
    if inputs and inputs[0].is_cuda:
        return _cuda_forward(layer, inputs, params, states, train)
    xs, shape, init, inner = _prepared(layer, inputs, states)
    outs, finals = layer["neuron"].run_forward(
        xs, shape[0], layer["channels"], _params(layer, params), layer["storage"], init,
        inner=inner,
    )
    return _tensors(outs, shape) + _tensors(finals, shape[1:])


def _saved(layer, x, train):
    """How many saves the forward pass returns for input `x`."""
    return layer["plan"][1] if train and x.is_cuda else 0


@_forward.register_fake
def _(key, inputs, params, states, train):
    layer = _LAYERS[key]
    x = inputs[0]
    save_dtype = _DTYPES[layer["plan"][2]] if x.is_cuda else x.dtype
    return (
        [torch.empty_like(x) for _ in layer["neuron"].outputs]
        + [torch.empty(x.shape[1:], dtype=torch.float32, device=x.device)
           for _ in layer["neuron"].states]
        + [torch.empty_like(x, dtype=save_dtype) for _ in range(_saved(layer, x, train))]
    )


@torch.library.custom_op("snn::neuron_backward", mutates_args=())
def _backward(
    key: int,
    inputs: list[torch.Tensor],
    params: list[torch.Tensor],
    states: list[torch.Tensor],
    outputs: list[torch.Tensor],
    saves: list[torch.Tensor],
    grads: list[torch.Tensor],
    grad_finals: list[torch.Tensor],
) -> list[torch.Tensor]:
    """dL/d(inputs), then dL/d(learnable params), then dL/d(initial states)."""
    layer = _LAYERS[key]
    if inputs[0].is_cuda:
        return _cuda_backward(layer, inputs, params, states, outputs, saves, grads, grad_finals)
    # The CPU reference runs the forward pass again rather than keep its saves.
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
def _(key, inputs, params, states, outputs, saves, grads, grad_finals):
    return [torch.empty_like(t) for t in itertools.chain(inputs, params, states)]


def _setup_context(ctx, inputs, output):
    key, xs, params, states, train = inputs
    layer = _LAYERS[key]
    n_out, n_states = len(layer["neuron"].outputs), len(layer["neuron"].states)
    outs, saves = output[:n_out], output[n_out + n_states:]
    ctx.key = key
    ctx.counts = (len(xs), len(params), len(states), n_out)
    ctx.mark_non_differentiable(*saves)
    ctx.save_for_backward(*xs, *params, *states, *outs, *saves)


def _autograd_backward(ctx, grads):
    n_x, n_p, n_s, n_out = ctx.counts
    saved = list(ctx.saved_tensors)
    ends = list(itertools.accumulate((n_x, n_p, n_s, n_out)))
    xs, params, states, outs, saves = (
        saved[a:b] for a, b in zip([0] + ends, ends + [len(saved)])
    )
    n_states = len(_LAYERS[ctx.key]["neuron"].states)
    grads = grads[: n_out + n_states]  # the saves have none
    # Outputs and final states nobody used have no gradient: zero, as their gradient is.
    like = [xs[0]] * n_out + [xs[0][0].float()] * n_states
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like)]
    out = _backward(ctx.key, xs, params, states, outs, saves, grads[:n_out], grads[n_out:])
    return None, out[:n_x], out[n_x : n_x + n_p], out[n_x + n_p :], None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def _memory_order(inputs):
    """`None` for contiguous inputs; else the order of their dims in memory, time first
    (channels-last feature maps, say): the permutation whose view of them is contiguous.
    CUDA inputs dense in no such order, or in different orders, are a clear error (the
    kernels read them in place); CPU ones are copied as the CPU reference reads them."""
    x0 = inputs[0]
    if x0.is_contiguous() or x0.dim() < 2:
        return None
    perm = [0] + sorted(range(1, x0.dim()), key=lambda d: -x0.stride(d))
    dense = x0.permute(perm).is_contiguous()
    unlike = next((k for k, x in enumerate(inputs)
                   if x.shape != x0.shape or x.stride() != x0.stride()), None)
    if dense and unlike is None:
        return perm
    if not x0.is_cuda:
        return None
    if not dense:
        raise ValueError(
            f"input 0 (shape {tuple(x0.shape)}, strides {x0.stride()}) is not contiguous in "
            "any order with time outermost: pass `.contiguous()` of it"
        )
    raise ValueError(
        f"input {unlike} is laid out unlike input 0 (strides {inputs[unlike].stride()} against "
        f"{x0.stride()}): pass inputs in one memory format"
    )


def _inverse(perm):
    return sorted(range(len(perm)), key=perm.__getitem__)


class NeuronLayer(torch.nn.Module):
    """`neuron` (an `snn.Neuron`) over `[T, ...]` tensors: one tensor per input of the
    neuron, every one of the same shape, dtype and device; returns the neuron's output (or
    a tuple, for a neuron with several). Params take their declared defaults unless given
    in `params` (a number, or one value per channel); those named in `learnable` become
    `nn.Parameter`s with gradients, of shape `()` or, for a per-channel param, `(channels,)`:
    the channels are axis `channel_axis` of the inputs (the last by default; 2 for
    `[T, B, C, H, W]` feature maps). A per-neuron param is one value per neuron of a sample,
    shared over the batch: give `neuron_shape`, the inputs' dims from the channel axis on
    (`(C, H, W)` for feature maps with `channel_axis=2`, `(F,)` for `[T, B, F]`), which is
    then the param's shape (and `channels` its first dim).

    `storage="f32"` takes and returns float32 tensors. `storage="narrow"` keeps what the
    kernels store narrow: on CUDA it takes and returns bfloat16 tensors (spikes in
    bfloat16 too, exactly 0 or 1, ready for bf16 convolutions) and saves bfloat16 for the
    backward pass; on the CPU it takes float32 and rounds what is stored as those kernels
    do. States (`state=`, `return_state=True`) and params are float32 everywhere."""

    def __init__(self, neuron, storage="f32", learnable=(), channels=1, params=None,
                 channel_axis=-1, neuron_shape=None):
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
        per_neuron = [n for n in self.learnable if shapes[n] == "per_neuron"]
        if neuron_shape is not None:
            neuron_shape = tuple(int(d) for d in neuron_shape)
            if not neuron_shape or min(neuron_shape) < 1:
                raise ValueError(f"neuron_shape {neuron_shape}: give positive dims, e.g. (C, H, W)")
            if channels not in (1, neuron_shape[0]):
                raise ValueError(
                    f"channels={channels}, but neuron_shape {neuron_shape} starts with "
                    f"{neuron_shape[0]} channels"
                )
            channels = neuron_shape[0]
        elif per_neuron:
            raise ValueError(
                f"param `{per_neuron[0]}` is per neuron: give the layer `neuron_shape`, the "
                "inputs' dims from the channel axis on (e.g. (C, H, W) with channel_axis=2)"
            )
        self.neuron_shape = neuron_shape
        self.channel_axis = channel_axis
        param_shape = {"scalar": (), "per_channel": (channels,), "per_neuron": neuron_shape}
        for name in self.learnable:
            shape = param_shape[shapes[name]]
            value = np.asarray(params.pop(name, declared[name]), dtype=np.float32)
            values = np.broadcast_to(value, shape).copy()
            self.register_parameter(name, torch.nn.Parameter(torch.from_numpy(values)))
        self._register(storage, channels, params)

    def _register(self, storage, channels, fixed):
        """Enters the layer in the registry the custom op reads, under a key of its own.
        Kept for the life of the process (an entry is a few references)."""
        self.key = next(_KEYS)
        _LAYERS[self.key] = {
            "neuron": self.neuron,
            "storage": storage,
            "channels": channels,
            "axis": self.channel_axis,
            "learnable": self.learnable,
            "fixed": fixed,
            # The CUDA kernels' I/O dtype and saves, and their `GpuLayer` per (device,
            # stream, values per channel).
            "plan": _native.cuda_plan(self.neuron, storage, self.learnable),
            "cuda": {},
        }

    def __getstate__(self):
        # What the registry holds for the layer travels with it (a copy, or `torch.save`
        # of the whole model, loads in another process); compiled kernels do not.
        state = dict(self.__dict__)
        state.pop("_axis_keys", None)
        entry = _LAYERS[state.pop("key")]
        state["_registered"] = (entry["storage"], entry["channels"], entry["fixed"])
        return state

    def __setstate__(self, state):
        state = dict(state)
        registered = state.pop("_registered")
        super().__setstate__(state)
        self._register(*registered)

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
        if self.neuron_shape is not None:
            x0 = inputs[0]
            axis = self.channel_axis % max(x0.dim(), 1)
            if axis == 0 or tuple(x0.shape[axis:]) != self.neuron_shape:
                raise ValueError(
                    f"inputs of shape {tuple(x0.shape)} do not end, from channel axis "
                    f"{self.channel_axis}, in the layer's neurons {self.neuron_shape}"
                )
        params = [getattr(self, n) for n in self.learnable]
        # A pass that needs no backward saves nothing.
        train = torch.is_grad_enabled() and any(
            t.requires_grad for t in itertools.chain(inputs, params, states)
        )
        key, perm = self.key, _memory_order(inputs)
        if perm is not None:
            # Run on the views in memory order (contiguous: no copy), the channel axis
            # moved with them, and hand back views in the inputs' own order.
            if self.neuron_shape is not None:
                raise ValueError(
                    "per-neuron params need inputs in PyTorch's default memory format: "
                    "pass `.contiguous()` of them"
                )
            key = self._key_for_axis(perm.index(self.channel_axis % inputs[0].dim()))
            inputs = [x.permute(perm) for x in inputs]
            state_perm = [d - 1 for d in perm[1:]]
            states = [s.permute(state_perm).contiguous() for s in states]
        result = _forward(key, list(inputs), params, states, train)
        n, n_states = len(self.neuron.outputs), len(self.neuron.states)
        outs, finals = result[:n], result[n : n + n_states]
        if perm is not None:
            outs = [o.permute(_inverse(perm)) for o in outs]
            finals = [f.permute(_inverse(state_perm)) for f in finals]
        outs = outs[0] if n == 1 else tuple(outs)
        return (outs, tuple(finals)) if return_state else outs

    def _key_for_axis(self, axis):
        """The registry key of this layer with its channel axis at `axis` (the key of a
        run in another memory order)."""
        keys = self.__dict__.setdefault("_axis_keys", {})
        if axis not in keys:
            keys[axis] = next(_KEYS)
            _LAYERS[keys[axis]] = dict(_LAYERS[self.key], axis=axis)
        return keys[axis]

    def extra_repr(self):
        shape = f", neuron_shape={self.neuron_shape}" if self.neuron_shape else ""
        return f"neuron={self.neuron.name}, learnable={self.learnable}{shape}"
