"""snn.torch.NeuronLayer inside PyTorch, against PyTorch itself: an eager autograd loop of
the same neuron, SpikingJelly's LIFNode, and torch.compile. Needs torch (and SpikingJelly
for its test); the Rust runner runs this file only where torch imports."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import snn  # noqa: E402
import snn.torch  # noqa: E402


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


def test_the_layer_equals_an_eager_autograd_loop_of_the_same_neuron():
    torch.manual_seed(1)
    layer = snn.torch.NeuronLayer(learnable_lif, learnable=["tau", "v_th"], params={"tau": 2.5})
    x = (torch.rand(12, 4, 6) * 2).requires_grad_()
    g = torch.randn(12, 4, 6)
    s = layer(x)
    (s * g).sum().backward()

    tau = torch.tensor(2.5, requires_grad=True)
    th = torch.tensor(1.0, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    v = torch.zeros(4, 6)
    outs = []
    for t in range(12):
        h = v + (x2[t] - v) / tau
        st = _SigmoidSpike.apply(h - th)
        v = h * (1 - st)
        outs.append(st)
    s2 = torch.stack(outs)
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


def test_per_channel_learnable_params_get_one_gradient_per_channel():
    layer = snn.torch.NeuronLayer(channel_lif, learnable=["v_th"], channels=3)
    assert layer.v_th.shape == (3,)
    x = torch.rand(5, 2, 3) * 2
    layer(x).sum().backward()
    assert layer.v_th.grad.shape == (3,)
    # The numpy path of the same neuron agrees.
    _, _, grads = snn.backward(channel_lif, [x.numpy()], [np.ones((5, 2, 3), np.float32)],
                               channels=3)
    # A scalar param stays one value whatever the channels.
    assert snn.torch.NeuronLayer(learnable_lif, learnable=["v_th"], channels=3).v_th.shape == ()
    np.testing.assert_allclose(layer.v_th.grad.numpy(), grads["v_th"], rtol=1e-6)


def test_the_layer_is_spikingjellys_lif_node():
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    torch.manual_seed(0)
    settings = itertools.product([2.0, 3.5], [True, False], [0.0, None, -0.2], [False, True])
    for tau, decay_input, v_reset, detach_reset in settings:
        kw = dict(tau=tau, decay_input=decay_input, v_reset=v_reset, detach_reset=detach_reset)
        ours = snn.torch.NeuronLayer(snn.lif_node(**kw))
        theirs = neuron.LIFNode(step_mode="m", **kw)
        x = (torch.rand(16, 3, 7) * 2.5 - 0.3).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        g = torch.randn(16, 3, 7)
        s, s2 = ours(x), theirs(x2)
        (s * g).sum().backward()
        (s2 * g).sum().backward()
        assert torch.equal(s, s2), kw
        assert torch.allclose(x.grad, x2.grad, rtol=1e-5, atol=1e-6), kw


def test_a_compiled_model_with_the_layer_trains():
    torch.manual_seed(2)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 6), snn.torch.NeuronLayer(learnable_lif, learnable=["v_th"])
    )
    x = torch.rand(12, 4, 6)
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


def test_a_run_split_in_time_carries_its_state_and_its_gradient():
    torch.manual_seed(4)
    layer = snn.torch.NeuronLayer(snn.zoo("alif"))
    x = (torch.rand(20, 3, 5) * 2).requires_grad_()
    g = torch.randn(20, 3, 5)
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


def test_spikingjellys_resnet18_trains_with_the_layer_as_with_its_own_lif_node():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import spiking_resnet

    torch.manual_seed(0)
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
    assert sum(isinstance(m, snn.torch.NeuronLayer) for m in ours.modules()) == 17
    x, y = torch.rand(2, 4, 3, 32, 32), torch.randint(0, 10, (4,))
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


def test_per_channel_params_follow_the_channel_axis_of_feature_maps():
    torch.manual_seed(6)
    x = torch.rand(4, 2, 3, 5, 5) * 2  # [T, B, C, H, W]
    maps = snn.torch.NeuronLayer(channel_lif, learnable=["v_th"], channels=3, channel_axis=2)
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
        snn.torch.NeuronLayer(channel_lif, learnable=["v_th"], channels=3)(x)


def test_the_zoo_plif_is_spikingjellys_parametric_lif_node_learnable_w_included():
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    torch.manual_seed(3)
    for init_tau in (2.0, 3.0):
        # SpikingJelly's w: 1 / sigmoid(w) = init_tau.
        w = -np.log(init_tau - 1.0)
        ours = snn.torch.NeuronLayer(snn.zoo("plif"), learnable=["w"], params={"w": w})
        theirs = neuron.ParametricLIFNode(init_tau=init_tau, step_mode="m")
        x = (torch.rand(10, 3, 4) * 2).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        g = torch.randn(10, 3, 4)
        s, s2 = ours(x), theirs(x2)
        (s * g).sum().backward()
        (s2 * g).sum().backward()
        assert torch.equal(s, s2)
        assert torch.allclose(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
        assert ours.w.grad.item() == pytest.approx(theirs.w.grad.item(), rel=1e-5)
