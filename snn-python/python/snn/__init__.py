"""snn from Python: the zoo's spiking neurons, what the compiler derives for them, and the
CPU reference interpreter that every generated CUDA kernel is checked against.

    import numpy as np, snn
    lif = snn.zoo("paper_lif", decay=0.25)
    print(lif)                            # equations, memory plan, backward through time
    x = np.random.rand(32, 1000).astype(np.float32)   # [T, N]
    (spikes,), (v, y) = snn.forward(lif, x)

A neuron of your own is a step function, traced once into the compiler's IR (the
equations, memory plan and backward through time then come as for the zoo's):

    @snn.neuron(surrogate="atan", alpha=2.0)
    def my_lif(n):
        x = n.input("x")
        v = n.state("v")                              # starts at 0
        tau = n.param("tau", 2.0)
        v_th = n.param("v_th", 1.0, learnable=True)
        h = v + (x - v) / tau
        s = snn.spike(h - v_th)
        v.set(h * (1 - s))
        return {"s": s}                               # the outputs, by name

In PyTorch, `snn.torch.NeuronLayer(neuron, learnable=[...])` is a module with autograd
(import `snn.torch`; it needs torch).

Arrays are time-major, `[T, ...]`; every input has the same shape. Params shaped per
channel see `channels` channels on axis `channel_axis` (the last by default; 2 for
`[T, B, C, H, W]`).
"""

import math

import numpy as np

from ._native import Neuron, Sym, Tracer, zoo_names
from ._native import load_checkpoint as _load_checkpoint

__all__ = [
    "Neuron", "zoo", "zoo_names", "forward", "backward", "neuron", "spike", "where",
    "exp", "log", "sqrt", "tanh", "atan", "sigmoid", "minimum", "maximum", "clamp", "detach",
    "SURROGATES", "load_checkpoint", "lif_node",
]

#: The built-in surrogates and their shape parameter's default (SpikingJelly's and
#: snnTorch's defaults; `rect` is the temporal-fusion paper's).
SURROGATES = {
    "sigmoid": ("alpha", 4.0),
    "atan": ("alpha", 2.0),
    "rect": ("width", 0.5),
    "triangle": ("width", 1.0),
    "fast_sigmoid": ("alpha", 25.0),
    "piecewise_quadratic": ("alpha", 1.0),
}


def neuron(step=None, *, name=None, surrogate="sigmoid", alpha=None, width=None, doc=None):
    """Declares a neuron from `step(n)`, run once on symbolic values: `n.input(name)`,
    `n.state(name, init=0.0)`, `n.param(name, default, learnable=False, shape="scalar")`
    declare them; arithmetic, comparisons and the functions of this module record the step;
    `state.set(value)` updates a state, `value.named("h")` names a value in the printed
    equations; the step returns its outputs as `{name: value}` (or one value, named "out"). `spike(h)` uses `surrogate` with its `alpha` or `width`
    (default: `SURROGATES`). Usable as `@snn.neuron` or `@snn.neuron(...)`."""

    def build(fn):
        if surrogate not in SURROGATES:
            raise ValueError(
                f"unknown surrogate `{surrogate}`; the built-in ones: {', '.join(SURROGATES)}"
            )
        key, default = SURROGATES[surrogate]
        given = {"alpha": alpha, "width": width}
        other = "width" if key == "alpha" else "alpha"
        if given[other] is not None:
            raise ValueError(f"surrogate `{surrogate}` takes `{key}`, not `{other}`")
        parameter = given[key] if given[key] is not None else default
        n = Tracer(name or fn.__name__, surrogate, parameter, doc or (fn.__doc__ or ""))
        outputs = fn(n)
        if not isinstance(outputs, dict):
            outputs = {"out": outputs}
        for out_name, value in outputs.items():
            n.output(out_name, value)
        return n.finish()

    return build if step is None else build(step)


def spike(h):
    """1 where `h >= 0`, else 0; backward, the neuron's surrogate derivative."""
    return h.spike()


def where(condition, a, b):
    """`a` where `condition` (a comparison of traced values) holds, else `b`."""
    return condition.select(a, b)


def _unary(method, number):
    def f(x):
        return getattr(x, method)() if isinstance(x, Sym) else number(x)

    f.__name__ = method
    f.__doc__ = f"`{method}` of a traced value (or of a number)."
    return f


exp = _unary("exp", math.exp)
log = _unary("log", math.log)
sqrt = _unary("sqrt", math.sqrt)
tanh = _unary("tanh", math.tanh)
atan = _unary("atan", math.atan)
sigmoid = _unary("sigmoid", lambda x: 1.0 / (1.0 + math.exp(-x)))


def detach(x):
    """The same value, with no gradient flowing back through it."""
    return x.detach()


def minimum(a, b):
    return a.minimum(b) if isinstance(a, Sym) else b.minimum(a)


def maximum(a, b):
    return a.maximum(b) if isinstance(a, Sym) else b.maximum(a)


def clamp(x, lo, hi):
    return x.clamp(lo, hi)


def zoo(name, **params):
    """The zoo neuron `name` (see `zoo_names()`), with parameter defaults overridden."""
    return Neuron.zoo(name, **params)


def _sequences(what, arrays):
    xs = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]
    if not xs:
        raise ValueError(f"no {what} given")
    shape = xs[0].shape
    if len(shape) < 2:
        raise ValueError(f"{what} must be [T, ...] with at least 2 dimensions, got shape {shape}")
    for k, x in enumerate(xs):
        if x.shape != shape:
            raise ValueError(f"{what} {k} has shape {x.shape}, {what} 0 has {shape}: give them one shape")
    return xs, shape


def _arrays(buffers, shape):
    return [np.frombuffer(b, dtype="<f4").reshape(shape).copy() for b in buffers]


def _inner(shape, channels, channel_axis):
    """The values per channel after the channel axis of `[T, ...]` arrays of `shape`: the
    layout per-channel params see (the last axis by default)."""
    if channels == 1:
        return 1
    axis = channel_axis % len(shape)
    if axis == 0 or shape[axis] != channels:
        raise ValueError(
            f"channel axis {channel_axis} of shape {tuple(shape)} does not hold the {channels} "
            "channels (axis 0 is time)"
        )
    return math.prod(shape[axis + 1:])


def _states(what, states, shape):
    """One C-contiguous float32 array of `shape` per state, or None."""
    if states is None:
        return None
    xs = [np.ascontiguousarray(s, dtype=np.float32) for s in states]
    for k, x in enumerate(xs):
        if x.shape != tuple(shape):
            raise ValueError(f"{what} {k} has shape {x.shape}; the states are {tuple(shape)}")
    return xs


def _prepare(inputs, states, channels, channel_axis):
    """What the native runs take of `[T, ...]` inputs: the arrays, their shape, the initial
    states (or None) and the values per channel after the channel axis."""
    xs, shape = _sequences("input", inputs)
    init = _states("initial state", states, shape[1:])
    return xs, shape, init, _inner(shape, channels, channel_axis)


def forward(neuron, *inputs, channels=1, params=None, storage="f32", states=None,
            channel_axis=-1):
    """Runs `neuron` over `inputs` (one `[T, ...]` array per input) on the CPU reference.

    Returns the outputs (`[T, ...]` each) and the final states (`[...]` each). `params`
    maps param names to values (a number, or one per channel; the channels are axis
    `channel_axis`, e.g. 2 of `[T, B, C, H, W]`). `storage="narrow"` rounds what is stored
    (bf16 outputs and saves, u8 spikes) as the narrow GPU kernels do. `states` (one `[...]` array per state, as the final states come) start the run instead
    of the declared initial values: a run split in time continues where it stopped."""
    xs, shape, init, inner = _prepare(inputs, states, channels, channel_axis)
    outs, finals = neuron.run_forward(
        xs, shape[0], channels, params or {}, storage, init, inner=inner
    )
    return _arrays(outs, shape), _arrays(finals, shape[1:])


def backward(neuron, inputs, grad_outputs, channels=1, params=None, storage="f32", states=None,
             channel_axis=-1):
    """Forward (training) and backward through time on the CPU reference, with the
    surrogate gradients the neuron declares.

    `inputs` and `grad_outputs` (dL/d(output), one per output) are lists of `[T, ...]`
    arrays; `states` and `channel_axis` as for `forward`. Returns the outputs, dL/d(input)
    for each input, and a dict of the learnable params' gradients."""
    xs, shape, init, inner = _prepare(inputs, states, channels, channel_axis)
    gys, gshape = _sequences("output gradient", grad_outputs)
    if gshape != shape:
        raise ValueError(f"output gradients have shape {gshape}, the inputs {shape}")
    outs, grads, param_grads, _ = neuron.run_backward(
        xs, gys, shape[0], channels, params or {}, storage, init, inner=inner
    )
    return _arrays(outs, shape), _arrays(grads, shape), {k: np.array(v, dtype=np.float32) for k, v in param_grads}


def load_checkpoint(path, metadata=False):
    """The `state_dict` of a checkpoint written by `snn train`: PyTorch names to numpy
    arrays (float32; `num_batches_tracked` int64, as PyTorch keeps it), so that
    `model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})` loads it into
    the same network in PyTorch. With `metadata=True`, also the checkpoint's metadata (the
    run's configuration as JSON under "train.config")."""
    tensors, meta = _load_checkpoint(str(path))
    state = {}
    for name, shape, counter, data in tensors:
        values = np.frombuffer(data, dtype="<f4").reshape(shape)
        state[name] = values.astype(np.int64) if counter else values.copy()
    return (state, dict(meta)) if metadata else state


def lif_node(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, detach_reset=False,
             surrogate="sigmoid", alpha=None, width=None):
    """SpikingJelly's multi-step `LIFNode`, with its parameter names and equations: charge
    `v + (x - (v - v_reset)) / tau` (`decay_input`; else `v - (v - v_reset) / tau + x`, and
    the `v_reset = 0` / `None` forms SpikingJelly uses), fire `spike(v - v_threshold)`,
    reset hard to `v_reset` or, with `v_reset=None`, soft by `v_threshold`; `detach_reset`
    keeps the reset out of the backward. The default surrogate is SpikingJelly's
    `Sigmoid(alpha=4)`."""

    def step(n):
        x = n.input("x")
        tau_ = n.param("tau", tau)
        threshold = n.param("v_threshold", v_threshold)
        hard = v_reset is not None
        reset = n.param("v_reset", v_reset) if hard else None
        v = n.state("v", reset if hard else 0.0)
        if decay_input:
            h = v + (x - v) / tau_ if not v_reset else v + (x - (v - reset)) / tau_
        else:
            h = v * (1.0 - 1.0 / tau_) + x if not v_reset else v - (v - reset) / tau_ + x
        h = h.named("h")
        s = spike(h - threshold)
        s_reset = detach(s) if detach_reset else s
        v.set((1.0 - s_reset) * h + s_reset * reset if hard else h - s_reset * threshold)
        return {"s": s}

    return neuron(step, name="lif_node", surrogate=surrogate, alpha=alpha, width=width,
                  doc="SpikingJelly's LIFNode (multi-step)")
