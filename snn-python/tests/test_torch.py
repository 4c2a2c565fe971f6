"""snn.torch.NeuronLayer inside PyTorch, against PyTorch itself: an eager autograd loop of
the same neuron, SpikingJelly's LIFNode, and torch.compile, on CPU tensors (the CPU
reference) and on CUDA tensors (the generated kernels). Needs torch (and SpikingJelly for
its tests); the Rust runner runs this file only where torch imports, the tests marked
`cuda` only where it has a GPU. They skip without one, unless SNN_REQUIRE_GPU=1 says a GPU
must be there."""

import copy
import itertools
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import snn  # noqa: E402
import snn.torch  # noqa: E402

_GPU = torch.cuda.is_available() or os.environ.get("SNN_REQUIRE_GPU") == "1"
cuda = pytest.mark.cuda
needs_gpu = pytest.mark.skipif(not _GPU, reason="needs a CUDA GPU")

# Each test that takes `device` runs on the CPU reference and on the GPU kernels.
DEVICES = ["cpu", pytest.param("cuda", marks=[cuda, needs_gpu])]
on_each_device = pytest.mark.parametrize("device", DEVICES)


@snn.neuron(surrogate="sigmoid", alpha=4.0)
def learnable_lif(n):
    x = n.input("x")
    v = n.state("v")
    tau = n.param("tau", 2.0, learnable=True)
    th = n.param("v_th", 1.0, learnable=True)
    h = v + (x - v) / tau
    s = snn.spike(h - th)
    v.set(h * (1 - s))
    return {"s": s}


class _SigmoidSpike(torch.autograd.Function):
    """Heaviside forward, sigmoid surrogate (alpha 4) backward: the eager reference."""

    @staticmethod
    def forward(ctx, h):
        ctx.save_for_backward(h)
        return (h >= 0).to(h.dtype)

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        sg = torch.sigmoid(4.0 * h)
        return grad * 4.0 * sg * (1 - sg)


def _eager_lif(x, tau, th):
    """`learnable_lif` (and its variants) as an eager PyTorch loop over `x`'s first axis."""
    v = torch.zeros_like(x[0])
    outs = []
    for t in range(x.shape[0]):
        h = v + (x[t] - v) / tau
        st = _SigmoidSpike.apply(h - th)
        v = h * (1 - st)
        outs.append(st)
    return torch.stack(outs)


@on_each_device
def test_the_layer_equals_an_eager_autograd_loop_of_the_same_neuron(device):
    torch.manual_seed(1)
    layer = snn.torch.NeuronLayer(learnable_lif, learnable=["tau", "v_th"], params={"tau": 2.5})
    layer.to(device)
    x = (torch.rand(12, 4, 6, device=device) * 2).requires_grad_()
    g = torch.randn(12, 4, 6, device=device)
    s = layer(x)
    (s * g).sum().backward()

    tau = torch.tensor(2.5, requires_grad=True, device=device)
    th = torch.tensor(1.0, requires_grad=True, device=device)
    x2 = x.detach().clone().requires_grad_()
    s2 = _eager_lif(x2, tau, th)
    (s2 * g).sum().backward()

    assert torch.equal(s, s2)
    assert torch.allclose(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    assert layer.tau.grad.item() == pytest.approx(tau.grad.item(), rel=1e-5)
    assert layer.v_th.grad.item() == pytest.approx(th.grad.item(), rel=1e-5)


@snn.neuron(surrogate="sigmoid", alpha=4.0)
def channel_lif(n):
    x = n.input("x")
    v = n.state("v")
    th = n.param("v_th", 1.0, learnable=True, shape="per_channel")
    h = v + (x - v) / 2.0
    s = snn.spike(h - th)
    v.set(h * (1 - s))
    return {"s": s}


@on_each_device
def test_per_channel_learnable_params_get_one_gradient_per_channel(device):
    layer = snn.torch.NeuronLayer(channel_lif, learnable=["v_th"], channels=3).to(device)
    assert layer.v_th.shape == (3,)
    x = torch.rand(5, 2, 3) * 2
    layer(x.to(device)).sum().backward()
    assert layer.v_th.grad.shape == (3,)
    # The numpy path of the same neuron agrees.
    _, _, grads = snn.backward(channel_lif, [x.numpy()], [np.ones((5, 2, 3), np.float32)],
                               channels=3)
    # A scalar param stays one value whatever the channels.
    assert snn.torch.NeuronLayer(learnable_lif, learnable=["v_th"], channels=3).v_th.shape == ()
    np.testing.assert_allclose(layer.v_th.grad.cpu().numpy(), grads["v_th"], rtol=1e-5)


@on_each_device
def test_the_layer_is_spikingjellys_lif_node(device):
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    torch.manual_seed(0)
    settings = itertools.product([2.0, 3.5], [True, False], [0.0, None, -0.2], [False, True])
    for tau, decay_input, v_reset, detach_reset in settings:
        kw = dict(tau=tau, decay_input=decay_input, v_reset=v_reset, detach_reset=detach_reset)
        ours = snn.torch.NeuronLayer(snn.lif_node(**kw))
        theirs = neuron.LIFNode(step_mode="m", **kw)
        x = (torch.rand(16, 3, 7, device=device) * 2.5 - 0.3).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        g = torch.randn(16, 3, 7, device=device)
        s, s2 = ours(x), theirs(x2)
        (s * g).sum().backward()
        (s2 * g).sum().backward()
        assert torch.equal(s, s2), kw
        assert torch.allclose(x.grad, x2.grad, rtol=1e-5, atol=1e-6), kw


@on_each_device
def test_a_compiled_model_with_the_layer_trains(device):
    torch.manual_seed(2)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 6), snn.torch.NeuronLayer(learnable_lif, learnable=["v_th"])
    ).to(device)
    x = torch.rand(12, 4, 6, device=device)
    eager = model(x)
    compiled = torch.compile(model)
    y = compiled(x)
    assert torch.equal(y, eager)
    y.sum().backward()
    assert model[1].v_th.grad is not None and torch.isfinite(model[1].v_th.grad)


def test_narrow_storage_rounds_as_the_numpy_path_does():
    layer = snn.torch.NeuronLayer(snn.zoo("paper_lif"), storage="narrow")
    x = np.random.default_rng(3).random((8, 50), dtype=np.float32) * 2
    (want,), _ = snn.forward(snn.zoo("paper_lif"), x, storage="narrow")
    np.testing.assert_array_equal(layer(torch.from_numpy(x)).numpy(), want)


def test_misuse_is_a_clear_error():
    lif = snn.zoo("paper_lif")
    with pytest.raises(ValueError, match="float32"):
        snn.torch.NeuronLayer(lif)(torch.rand(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="takes 1 input"):
        snn.torch.NeuronLayer(lif)(torch.rand(4, 3), torch.rand(4, 3))
    with pytest.raises(ValueError, match="no param `nope`"):
        snn.torch.NeuronLayer(lif, learnable=["nope"])
    with pytest.raises(ValueError, match="not learnable"):
        snn.torch.NeuronLayer(snn.lif_node(), learnable=["tau"])
    with pytest.raises(ValueError, match="storage"):
        snn.torch.NeuronLayer(lif, storage="f16")


@on_each_device
def test_a_run_split_in_time_carries_its_state_and_its_gradient(device):
    torch.manual_seed(4)
    layer = snn.torch.NeuronLayer(snn.zoo("alif"))
    x = (torch.rand(20, 3, 5, device=device) * 2).requires_grad_()
    g = torch.randn(20, 3, 5, device=device)
    whole = layer(x)
    (whole * g).sum().backward()
    want = x.grad.clone()
    x.grad = None
    first, state = layer(x[:7], return_state=True)
    assert len(state) == len(snn.zoo("alif").states) and state[0].shape == (3, 5)
    second = layer(x[7:], state=state)
    split = torch.cat([first, second])
    assert torch.equal(split, whole)
    (split * g).sum().backward()
    # The gradient reaches the first part through the carried state.
    assert torch.allclose(x.grad, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="state"):
        layer(x[7:], state=state[:1])


@on_each_device
def test_spikingjellys_resnet18_trains_with_the_layer_as_with_its_own_lif_node(device, monkeypatch):
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import spiking_resnet

    torch.manual_seed(0)
    # cuDNN in full f32 and deterministic, so that the two networks differ only by their
    # neurons.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    ours = spiking_resnet.spiking_resnet18(
        spiking_neuron=lambda **kw: snn.torch.NeuronLayer(snn.lif_node(detach_reset=True)),
        num_classes=10,
    )
    theirs = spiking_resnet.spiking_resnet18(
        spiking_neuron=neuron.LIFNode, detach_reset=True, num_classes=10
    )
    theirs.load_state_dict(ours.state_dict())
    for net in (ours, theirs):
        functional.set_step_mode(net, "m")
        net.to(device)
    assert sum(isinstance(m, snn.torch.NeuronLayer) for m in ours.modules()) == 17
    x, y = torch.rand(2, 4, 3, 32, 32, device=device), torch.randint(0, 10, (4,), device=device)
    losses = []
    for net in (ours, theirs):
        loss = torch.nn.functional.cross_entropy(net(x).mean(0), y)
        loss.backward()
        losses.append(loss)
    assert torch.allclose(losses[0], losses[1], rtol=1e-5)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-5), name
    # An optimizer step on it runs like on any module.
    torch.optim.SGD(ours.parameters(), lr=0.1).step()


@snn.neuron(surrogate="sigmoid", alpha=4.0)
def neuron_lif(n):
    x = n.input("x")
    v = n.state("v")
    th = n.param("v_th", 1.0, learnable=True, shape="per_neuron")
    h = v + (x - v) / 2.0
    s = snn.spike(h - th)
    v.set(h * (1 - s))
    return {"s": s}


@on_each_device
def test_per_neuron_learnable_params_have_the_neurons_shape_and_their_gradients(device):
    torch.manual_seed(8)
    x = (torch.rand(6, 3, 2, 4, 5, device=device) * 2).requires_grad_()  # [T, B, C, H, W]
    g = torch.randn(6, 3, 2, 4, 5, device=device)
    layer = snn.torch.NeuronLayer(neuron_lif, learnable=["v_th"], neuron_shape=(2, 4, 5),
                                  channel_axis=2).to(device)
    assert layer.v_th.shape == (2, 4, 5)
    with torch.no_grad():
        layer.v_th.copy_(torch.rand(2, 4, 5) + 0.5)
    s = layer(x)
    (s * g).sum().backward()

    # An eager autograd loop of the same neuron, the threshold broadcast over the batch.
    th = layer.v_th.detach().clone().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    s2 = _eager_lif(x2, 2.0, th)
    (s2 * g).sum().backward()
    assert torch.equal(s, s2)
    assert torch.allclose(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(layer.v_th.grad, th.grad, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="neuron_shape"):
        snn.torch.NeuronLayer(neuron_lif, learnable=["v_th"])
    with pytest.raises(ValueError, match="do not end"):
        layer(torch.rand(6, 3, 2, 4, 4, device=device))


@snn.neuron(surrogate="sigmoid", alpha=4.0)
def two_inputs(n):
    x, y = n.input("x"), n.input("y")
    v = n.state("v")
    h = 0.5 * v + x + y
    s = snn.spike(h - 1.0)
    v.set(h * (1 - s))
    return {"s": s}


@on_each_device
def test_channels_last_feature_maps_run_in_place_and_keep_their_layout(device):
    torch.manual_seed(9)
    # [T, B, C, H, W] viewed from a channels-last [T * B, C, H, W] tensor: channels innermost.
    flat = (torch.rand(4 * 2, 3, 5, 6, device=device) * 2).to(memory_format=torch.channels_last)
    x = flat.reshape(4, 2, 3, 5, 6).requires_grad_()
    assert not x.is_contiguous()
    layer = snn.torch.NeuronLayer(channel_lif, learnable=["v_th"], channels=3, channel_axis=2)
    layer.to(device)
    with torch.no_grad():
        layer.v_th.copy_(torch.tensor([0.5, 1.0, 1.5]))
    twin = copy.deepcopy(layer)
    g = torch.randn(4, 2, 3, 5, 6, device=device)
    s, (v,) = layer(x, return_state=True)
    assert s.stride() == x.stride() and v.stride() == x[0].stride()
    (s * g).sum().backward()
    # The same as the contiguous copy, values and gradients.
    xc = x.detach().contiguous().requires_grad_()
    sc, (vc,) = twin(xc, return_state=True)
    (sc * g).sum().backward()
    assert torch.equal(s, sc) and torch.equal(v, vc)
    assert torch.allclose(x.grad, xc.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(layer.v_th.grad, twin.v_th.grad, rtol=1e-5, atol=1e-5)
    # Starting from a given state, laid out either way.
    s2 = layer(x.detach(), state=[v.detach()])
    assert torch.equal(s2, twin(xc.detach(), state=[vc.detach()]))
    sliced = x.detach()[:, :, :, ::2]
    mixed = (x.detach(), x.detach().contiguous())
    if device == "cpu":
        # The CPU reference reads a copy of anything.
        assert torch.equal(layer(sliced), twin(sliced.contiguous()))
        both = snn.torch.NeuronLayer(two_inputs)
        assert torch.equal(both(*mixed), both(*(t.contiguous() for t in mixed)))
    else:
        # The kernels read CUDA tensors in place: layouts they cannot are named.
        with pytest.raises(ValueError, match="not contiguous in any order"):
            layer(sliced)
        with pytest.raises(ValueError, match="laid out unlike input 0"):
            snn.torch.NeuronLayer(two_inputs)(*mixed)


@on_each_device
def test_per_channel_params_follow_the_channel_axis_of_feature_maps(device):
    torch.manual_seed(6)
    x = torch.rand(4, 2, 3, 5, 5, device=device) * 2  # [T, B, C, H, W]
    maps = snn.torch.NeuronLayer(channel_lif, learnable=["v_th"], channels=3, channel_axis=2)
    maps.to(device)
    with torch.no_grad():
        maps.v_th.copy_(torch.tensor([0.5, 1.0, 1.5]))
    s = maps(x)
    # The same as each channel alone with its threshold.
    for c, th in enumerate([0.5, 1.0, 1.5]):
        alone = snn.torch.NeuronLayer(channel_lif, params={"v_th": th})
        assert torch.equal(s[:, :, c], alone(x[:, :, c].contiguous()))
    s.sum().backward()
    assert maps.v_th.grad.shape == (3,)
    with pytest.raises(ValueError, match="channel axis"):
        snn.torch.NeuronLayer(channel_lif, learnable=["v_th"], channels=3).to(device)(x)


@on_each_device
def test_the_zoo_plif_is_spikingjellys_parametric_lif_node_learnable_w_included(device):
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    torch.manual_seed(3)
    for init_tau in (2.0, 3.0):
        # SpikingJelly's w: 1 / sigmoid(w) = init_tau.
        w = -np.log(init_tau - 1.0)
        ours = snn.torch.NeuronLayer(snn.zoo("plif"), learnable=["w"], params={"w": w})
        theirs = neuron.ParametricLIFNode(init_tau=init_tau, step_mode="m")
        ours.to(device), theirs.to(device)
        x = (torch.rand(10, 3, 4, device=device) * 2).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        g = torch.randn(10, 3, 4, device=device)
        s, s2 = ours(x), theirs(x2)
        (s * g).sum().backward()
        (s2 * g).sum().backward()
        assert torch.equal(s, s2)
        assert torch.allclose(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
        assert ours.w.grad.item() == pytest.approx(theirs.w.grad.item(), rel=1e-5)


def _zoo_layer(name, device, storage="f32"):
    """A layer of zoo neuron `name` learning every param it can (but per-neuron ones)."""
    neuron = snn.zoo(name)
    shapes = dict(neuron.param_shapes)
    learnable = [p for p in neuron.learnable if shapes[p] != "per_neuron"]
    return snn.torch.NeuronLayer(neuron, storage=storage, learnable=learnable).to(device)


@cuda
@needs_gpu
def test_every_zoo_neuron_on_the_gpu_equals_the_cpu_reference():
    for name in snn.zoo_names():
        torch.manual_seed(7)
        cpu, gpu = _zoo_layer(name, "cpu"), _zoo_layer(name, "cuda")
        gpu.load_state_dict(cpu.state_dict())
        xs = [(torch.rand(16, 4, 33) * 2).requires_grad_() for _ in cpu.neuron.inputs]
        xg = [x.detach().cuda().requires_grad_() for x in xs]
        outs = cpu(*xs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        gs = [torch.randn_like(y) for y in outs]
        sum((y * g).sum() for y, g in zip(outs, gs)).backward()
        outg = gpu(*xg)
        outg = outg if isinstance(outg, tuple) else (outg,)
        sum((y * g.cuda()).sum() for y, g in zip(outg, gs)).backward()
        for y, yg in zip(outs, outg):
            torch.testing.assert_close(yg.cpu(), y, rtol=1e-5, atol=1e-6, msg=name)
        for x, x2 in zip(xs, xg):
            torch.testing.assert_close(x2.grad.cpu(), x.grad, rtol=1e-4, atol=1e-5, msg=name)
        for (p, a), b in zip(cpu.named_parameters(), gpu.parameters()):
            torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-4, atol=1e-5,
                                       msg=f"{name}.{p}")


@cuda
@needs_gpu
def test_narrow_storage_on_the_gpu_is_bfloat16_rounded_as_the_cpu_path_rounds():
    torch.manual_seed(8)
    cpu = snn.torch.NeuronLayer(snn.zoo("paper_lif"), storage="narrow")
    gpu = snn.torch.NeuronLayer(snn.zoo("paper_lif"), storage="narrow").cuda()
    x = (torch.rand(8, 4, 50) * 2).bfloat16()
    g = torch.randn(8, 4, 50).bfloat16()
    xc, xg = x.float().requires_grad_(), x.cuda().requires_grad_()
    s, sg = cpu(xc), gpu(xg)
    assert sg.dtype == torch.bfloat16
    assert torch.equal(sg.float().cpu(), s)
    (s * g.float()).sum().backward()
    (sg * g.cuda()).sum().backward()
    assert xg.grad.dtype == torch.bfloat16
    torch.testing.assert_close(xg.grad.float().cpu(), xc.grad, rtol=2**-7, atol=1e-6)
    with torch.no_grad():  # an inference pass saves nothing and gives the same spikes
        assert torch.equal(gpu(xg), sg)


@cuda
@needs_gpu
def test_calls_queue_on_the_current_stream_without_synchronising():
    layer = snn.torch.NeuronLayer(snn.zoo("paper_lif")).cuda()
    x = torch.rand(32, 1 << 16, device="cuda", requires_grad=True)
    want = layer(x)
    want.sum().backward()
    first = x.grad.clone()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        layer(x.detach())  # the layer's kernels on this stream, loaded before timing
        side.synchronize()
        torch.cuda._sleep(200_000_000)  # keeps the stream busy for about 0.1 s
        s = layer(x)
        s.sum().backward()
        busy = not side.query()
    assert busy, "a call waited for the stream's earlier work"
    side.synchronize()
    assert torch.equal(s, want)
    assert torch.equal(x.grad, 2 * first)


@cuda
@needs_gpu
def test_misuse_on_the_gpu_is_a_clear_error():
    lif = snn.torch.NeuronLayer(snn.zoo("paper_lif")).cuda()
    x = torch.rand(4, 3, 5, device="cuda")
    with pytest.raises(ValueError, match="bfloat16; this layer's CUDA kernels take torch.float32"):
        lif(x.bfloat16())
    with pytest.raises(ValueError, match="not contiguous in any order"):
        lif(x[:, :, ::2])
    with pytest.raises(ValueError, match="on cpu, the inputs on cuda"):
        lif(x, state=[torch.zeros(3, 5)] * 2)
    with pytest.raises(ValueError, match="shape"):
        lif(x, state=[torch.zeros(3, 4, device="cuda")] * 2)
    plif = snn.torch.NeuronLayer(snn.zoo("plif"), learnable=["w"])  # params left on the CPU
    with pytest.raises(ValueError, match="param `w` is on cpu"):
        plif(x)
    narrow = snn.torch.NeuronLayer(snn.zoo("paper_lif"), storage="narrow").cuda()
    with pytest.raises(ValueError, match="float32; this layer's CUDA kernels take torch.bfloat16"):
        narrow(x)
    # A learnable param swapped for one of another size is refused before any kernel reads it.
    plif = plif.cuda()
    plif.w = torch.nn.Parameter(torch.zeros(7, device="cuda"))
    with pytest.raises(ValueError, match="param `w` has 7 values"):
        plif(x)


@on_each_device
def test_a_whole_model_saved_with_torch_save_loads_and_runs_in_another_process(device, tmp_path):
    import subprocess
    import sys

    torch.manual_seed(12)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 5),
        snn.torch.NeuronLayer(learnable_lif, learnable=["tau", "v_th"]),
        snn.torch.NeuronLayer(snn.lif_node(tau=3.0), storage="narrow" if device == "cpu" else "f32"),
    ).to(device)
    with torch.no_grad():
        model[1].v_th.fill_(0.7)
    x = torch.rand(7, 3, 6, device=device) * 3
    torch.save({"model": model, "x": x, "s": model(x)}, tmp_path / "model.pt")
    # A fresh process has none of this one's layers registered: the layers carry what they
    # need, and their neurons (one traced in a closure) pickle as their IR.
    check = (
        "import sys, torch, snn.torch\n"
        "saved = torch.load(sys.argv[1], weights_only=False)\n"
        "model, x = saved['model'], saved['x']\n"
        "assert torch.equal(model[1].v_th, torch.tensor(0.7, device=x.device))\n"
        "assert torch.equal(model(x), saved['s'])\n"
        "model(x.requires_grad_()).sum().backward()\n"
        "assert model[1].tau.grad is not None and x.grad.abs().sum() > 0\n"
    )
    subprocess.run([sys.executable, "-c", check, str(tmp_path / "model.pt")], check=True)
