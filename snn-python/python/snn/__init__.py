"""snn from Python: the zoo's spiking neurons, what the compiler derives for them, and the
CPU reference interpreter that every generated CUDA kernel is checked against.

    import numpy as np, snn
    lif = snn.zoo("paper_lif", decay=0.25)
    print(lif)                            # equations, memory plan, backward through time
    x = np.random.rand(32, 1000).astype(np.float32)   # [T, N]
    (spikes,), (v, y) = snn.forward(lif, x)

Arrays are time-major, `[T, ...]`; every input has the same shape. Params shaped per
channel see `channels` channels in the elements after T (N = batch x channels x inner,
inner = N / (batch x channels) is 1 here: the last axis is the channel).
"""

import numpy as np

from ._native import Neuron, zoo_names

__all__ = ["Neuron", "zoo", "zoo_names", "forward", "backward"]


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


def forward(neuron, *inputs, channels=1, params=None):
    """Runs `neuron` over `inputs` (one `[T, ...]` array per input) on the CPU reference.

    Returns the outputs (`[T, ...]` each) and the final states (`[...]` each). `params`
    maps param names to values (a number, or one per channel)."""
    xs, shape = _sequences("input", inputs)
    outs, finals = neuron.run_forward(xs, shape[0], channels, params or {})
    return _arrays(outs, shape), _arrays(finals, shape[1:])


def backward(neuron, inputs, grad_outputs, channels=1, params=None):
    """Forward (training) and backward through time on the CPU reference, with the
    surrogate gradients the neuron declares.

    `inputs` and `grad_outputs` (dL/d(output), one per output) are lists of `[T, ...]`
    arrays. Returns the outputs, dL/d(input) for each input, and a dict of the learnable
    params' gradients."""
    xs, shape = _sequences("input", inputs)
    gys, gshape = _sequences("output gradient", grad_outputs)
    if gshape != shape:
        raise ValueError(f"output gradients have shape {gshape}, the inputs {shape}")
    outs, grads, param_grads = neuron.run_backward(xs, gys, shape[0], channels, params or {})
    return _arrays(outs, shape), _arrays(grads, shape), {k: np.array(v, dtype=np.float32) for k, v in param_grads}
