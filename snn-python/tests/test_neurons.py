"""The Python package on the CPU path: zoo neurons by name, what printing shows, forward and
backward through time against independent numpy implementations, and errors as Python
exceptions."""

import numpy as np
import pytest

import snn


def paper_lif_numpy(x, decay=0.2, threshold=0.3, rest=0.0):
    """The temporal-fusion paper's LIF, written out in numpy."""
    v = np.zeros(x.shape[1:], np.float32)
    y = np.zeros(x.shape[1:], np.float32)
    spikes = np.zeros_like(x)
    for t in range(x.shape[0]):
        h = np.float32(decay) * v * (1 - y) + np.float32(rest) * y + x[t]
        y = (h - np.float32(threshold) >= 0).astype(np.float32)
        v = h
        spikes[t] = y
    return spikes, v, y


def test_the_zoo_is_listed_and_unknown_names_are_refused_with_the_list():
    names = snn.zoo_names()
    assert "paper_lif" in names and "plif" in names
    with pytest.raises(KeyError, match="paper_lif"):
        snn.zoo("hodgkin_huxley")


def test_a_neuron_prints_its_equations_memory_plan_and_backward():
    lif = snn.zoo("paper_lif")
    text = str(lif)
    for needle in ["neuron paper_lif", "memory plan", "bytes per element-step", "backward, for t = T-1 down to 0"]:
        assert needle in text, text
    assert "bf16" in lif.describe("narrow")
    assert lif.inputs == ["x"] and lif.outputs == ["s"] and lif.states == ["v", "y"]
    assert dict(lif.params) == {"decay": 0.2, "threshold": 0.3, "rest": 0.0}
    assert repr(lif) == "<snn neuron paper_lif>"
    with pytest.raises(ValueError, match="f32"):
        lif.describe("f8")


def test_paper_lif_forward_equals_numpy():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.5, (16, 3, 50)).astype(np.float32)
    for decay in [0.2, 0.7]:
        lif = snn.zoo("paper_lif", decay=decay)
        (spikes,), (v, y) = snn.forward(lif, x)
        want, want_v, want_y = paper_lif_numpy(x, decay=decay)
        assert spikes.shape == x.shape
        np.testing.assert_array_equal(spikes, want)
        np.testing.assert_allclose(v, want_v, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(y, want_y)
        assert 0 < spikes.mean() < 1


def test_params_are_overridden_per_call_or_by_default():
    x = np.full((4, 8), 0.2, np.float32)
    (a,), _ = snn.forward(snn.zoo("paper_lif"), x, params={"threshold": 0.1})
    (b,), _ = snn.forward(snn.zoo("paper_lif", threshold=0.1), x)
    np.testing.assert_array_equal(a, b)
    assert a.sum() == x.size
    with pytest.raises(ValueError, match="decay"):
        snn.zoo("paper_lif", tau=2.0)
    with pytest.raises(ValueError, match="no param named `tau`"):
        snn.forward(snn.zoo("paper_lif"), x, params={"tau": 2.0})


def test_the_leaky_integrators_backward_is_its_closed_form():
    # v_t = decay * v_{t-1} + x_t is the output; for L = sum_t g_t * v_t,
    # dL/dx_t = sum_{t' >= t} g_t' * decay^(t' - t).
    rng = np.random.default_rng(1)
    steps, decay = 12, 0.8
    x = rng.normal(size=(steps, 5)).astype(np.float32)
    g = rng.normal(size=(steps, 5)).astype(np.float32)
    li = snn.zoo("leaky_integrator", decay=decay)
    (v,), (dx,), param_grads = snn.backward(li, [x], [g])
    want_dx = np.zeros_like(g, dtype=np.float64)
    acc = np.zeros(5)
    for t in reversed(range(steps)):
        acc = g[t] + decay * acc
        want_dx[t] = acc
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-5)
    (fwd_v,), _ = snn.forward(li, x)
    np.testing.assert_array_equal(v, fwd_v)
    assert param_grads == {}


def test_learnable_params_get_gradients():
    rng = np.random.default_rng(2)
    plif = snn.zoo("plif")
    assert plif.learnable == ["w"]
    x = rng.uniform(0, 2, (8, 2, 4)).astype(np.float32)
    _, (dx,), grads = snn.backward(plif, [x], [np.ones_like(x)])
    assert set(grads) == {"w"} and grads["w"].shape == (1,)
    assert np.isfinite(dx).all() and np.isfinite(grads["w"]).all()


def test_bad_arrays_are_python_exceptions():
    lif = snn.zoo("paper_lif")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        snn.forward(lif, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="shape"):
        snn.backward(lif, [np.zeros((4, 3))], [np.zeros((4, 2))])
    with pytest.raises(ValueError, match="no input"):
        snn.forward(lif)
    # The native layer checks what it is given, too.
    with pytest.raises(ValueError, match="multiple of T"):
        lif.run_forward([np.zeros(7, np.float32)], 2)
    with pytest.raises(ValueError, match="takes 1"):
        lif.run_forward([np.zeros(8, np.float32), np.zeros(8, np.float32)], 2)
    with pytest.raises(BufferError):
        lif.run_forward([np.zeros(8, np.float64)], 2)


def spikingjelly_lif(n):
    """SpikingJelly's LIF (decay_input, hard reset to v_reset), as the zoo's `lif`."""
    x = n.input("x")
    tau = n.param("tau", 2.0)
    v_threshold = n.param("v_threshold", 1.0)
    v_reset = n.param("v_reset", 0.0)
    v = n.state("v", v_reset)
    h = (v + (x - (v - v_reset)) / tau).named("h")
    s = snn.spike(h - v_threshold)
    v.set(h * (1 - s) + v_reset * s)
    return {"s": s}


def test_a_neuron_declared_in_python_runs_as_the_zoo_one():
    mine = snn.neuron(spikingjelly_lif, name="lif")
    zoo = snn.zoo("lif")
    assert str(mine) == str(zoo)
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1.5, (10, 2, 30)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    for a, b in zip(snn.backward(mine, [x], [g])[:2], snn.backward(zoo, [x], [g])[:2]):
        np.testing.assert_array_equal(a[0], b[0])


def test_a_python_neuron_has_learnable_params_functions_and_selection():
    @snn.neuron(surrogate="atan")
    def adaptive(n):
        """An adaptive-threshold neuron written for this test."""
        x = n.input("x")
        v, a = n.state("v"), n.state("a")
        decay = n.param("decay", 0.8, learnable=True)
        h = decay * v + snn.tanh(x)
        th = 1.0 + a
        s = snn.spike(h - th)
        v.set(snn.where(h > th, 0.0, h))
        a.set(snn.where(s == 1.0, 0.9 * a + 0.1, 0.9 * a))
        return {"s": s, "v": h}

    assert adaptive.outputs == ["s", "v"] and adaptive.learnable == ["decay"]
    assert "atan(alpha = 2)" in str(adaptive)
    assert "s == 1" in str(adaptive)
    x = np.random.default_rng(4).uniform(0, 2, (12, 16)).astype(np.float32)
    (s, v), _ = snn.forward(adaptive, x)
    assert set(np.unique(s)) <= {0.0, 1.0} and 0 < s.mean() < 1
    _, (dx,), grads = snn.backward(adaptive, [x], [np.ones_like(x), np.zeros_like(x)])
    assert np.isfinite(dx).all() and grads["decay"].shape == (1,)


def test_tracing_mistakes_are_exceptions_at_the_offending_line():
    import traceback

    def branches(n):
        x = n.input("x")
        v = n.state("v")
        if v > 1.0:  # the offending line
            v.set(x)
        return {"s": snn.spike(v)}

    with pytest.raises(TypeError, match="no truth value") as e:
        snn.neuron(branches)
    frames = traceback.extract_tb(e.value.__traceback__)
    assert frames[-1].name == "branches" and "the offending line" in frames[-1].line

    other = {}

    def first(n):
        other["x"] = n.input("x")
        return {"s": snn.spike(other["x"])}

    def second(n):
        x = n.input("x")
        return {"s": snn.spike(x + other["x"])}

    snn.neuron(first)
    with pytest.raises(ValueError, match="another neuron"):
        snn.neuron(second)
    with pytest.raises(ValueError, match="built-in ones: sigmoid"):
        snn.neuron(first, surrogate="erf")
    with pytest.raises(ValueError, match="takes `alpha`, not `width`"):
        snn.neuron(first, width=0.3)

    def forgets_a_state(n):
        x = n.input("x")
        n.state("v")
        return {"s": snn.spike(x)}

    with pytest.raises(ValueError, match="`v`"):
        snn.neuron(forgets_a_state)


def test_a_checkpoint_loads_as_a_pytorch_state_dict():
    import json
    import os

    path = os.environ.get("SNN_TEST_CHECKPOINT")
    if path is None:
        pytest.skip("run by snn-python/tests/python.rs, which writes the checkpoint")
    expected = json.load(open(os.environ["SNN_TEST_CHECKPOINT_EXPECTED"]))
    state, meta = snn.load_checkpoint(path, metadata=True)
    assert sorted(state) == sorted(expected)
    assert list(state)[0] == "conv1.weight"  # the network's order, as a state_dict
    for name, want in expected.items():
        t = state[name]
        assert list(t.shape) == want["shape"], name
        assert t.dtype == (np.int64 if want["counter"] else np.float32), name
        assert abs(float(t.sum()) - want["sum"]) <= 1e-4 * max(1.0, abs(want["sum"])), name
    assert state["bn1.num_batches_tracked"].tolist() == 7
    assert meta["train.config"] == '{"arch":"spiking-cnn"}'
    with pytest.raises(ValueError, match="no-such-file"):
        snn.load_checkpoint("no-such-file.safetensors")


def spikingjelly_lif_numpy(x, tau, decay_input, v_threshold, v_reset):
    """SpikingJelly's LIFNode forward, its charge, fire and reset functions written out."""
    v = np.full(x.shape[1:], 0.0 if v_reset is None else v_reset, np.float32)
    tau, th = np.float32(tau), np.float32(v_threshold)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        if decay_input:
            v = v + (x[t] - v) / tau if not v_reset else v + (x[t] - (v - np.float32(v_reset))) / tau
        else:
            v = v * (np.float32(1) - np.float32(1) / tau) + x[t] if not v_reset else v - (v - np.float32(v_reset)) / tau + x[t]
        s = (v - th >= 0).astype(np.float32)
        v = (1 - s) * v + s * np.float32(v_reset) if v_reset is not None else v - s * th
        out[t] = s
    return out, v


@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", [0.0, -0.2, None])
def test_the_spikingjelly_lif_node_follows_its_equations(decay_input, v_reset):
    x = np.random.default_rng(5).uniform(-0.5, 2.5, (20, 3, 40)).astype(np.float32)
    node = snn.lif_node(tau=1.7, decay_input=decay_input, v_threshold=0.9, v_reset=v_reset)
    assert dict(node.params)["tau"] == 1.7
    (s,), (v,) = snn.forward(node, x)
    want_s, want_v = spikingjelly_lif_numpy(x, 1.7, decay_input, 0.9, v_reset)
    np.testing.assert_array_equal(s, want_s)
    np.testing.assert_allclose(v, want_v, rtol=1e-5, atol=1e-5)
    assert 0 < s.mean() < 1


def test_detach_reset_changes_only_the_backward():
    x = np.random.default_rng(6).uniform(0, 2, (16, 50)).astype(np.float32)
    g = np.ones_like(x)
    (s1,), (dx1,), _ = snn.backward(snn.lif_node(), [x], [g])
    (s2,), (dx2,), _ = snn.backward(snn.lif_node(detach_reset=True), [x], [g])
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(dx1, dx2)
    assert "detach" in str(snn.lif_node(detach_reset=True))


def test_narrow_storage_rounds_what_the_gpu_stores():
    x = np.random.default_rng(7).uniform(0, 2, (16, 64)).astype(np.float32)
    lif = snn.zoo("paper_lif")
    (s32,), _ = snn.forward(lif, x)
    (s16,), _ = snn.forward(lif, x, storage="narrow")
    assert set(np.unique(s16)) <= {0.0, 1.0}
    assert (s16 != s32).mean() < 0.05  # bf16 rounding flips few spikes
    with pytest.raises(ValueError, match="narrow"):
        snn.forward(lif, x, storage="f8")


def test_a_forward_split_in_time_continues_from_its_final_states():
    lif = snn.zoo("alif")
    x = np.random.default_rng(5).random((12, 40), dtype=np.float32) * 2
    (whole,), finals = snn.forward(lif, x)
    (first,), mid = snn.forward(lif, x[:5])
    (second,), end = snn.forward(lif, x[5:], states=mid)
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)
    for a, b in zip(end, finals):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="state"):
        snn.forward(lif, x, states=[np.zeros(3, np.float32)] * len(mid))


def test_signed_spikes_keep_their_sign_in_narrow_storage_and_the_plan_names_their_kind():
    ternary = snn.zoo("ternary_lif")
    assert "s (ternary spikes, i8)" in ternary.describe("narrow")
    x = np.random.default_rng(5).uniform(-0.6, 0.6, (16, 200)).astype(np.float32)
    (wide,), _ = snn.forward(ternary, x)
    (narrow,), _ = snn.forward(ternary, x, storage="narrow")
    assert set(np.unique(wide)) == {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(narrow, wide)

    @snn.neuron(surrogate="sigmoid", alpha=4.0)
    def band(n):
        x = n.input("x")
        v = n.state("v")
        h = v * 0.5 + x
        s1, s2 = snn.spike(h - 0.6), snn.spike(h - 1.4)
        v.set(h * (1 - s1))
        return {"s": s1 * (1 - s2), "h": h}

    plan = band.describe("narrow")
    assert "s (binary spikes, u8)" in plan and "h (real, bf16)" in plan, plan


def test_neurons_pickle_as_their_ir_zoo_and_traced_alike():
    import pickle

    rng = np.random.default_rng(11)
    x = rng.uniform(0, 1.5, (9, 2, 20)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    # A zoo neuron with a default overridden, and a traced one built in a closure (no
    # step function a pickle could name).
    for neuron in (snn.zoo("paper_lif", decay=0.4), snn.lif_node(tau=3.0, detach_reset=True)):
        twin = pickle.loads(pickle.dumps(neuron))
        assert twin is not neuron and str(twin) == str(neuron)
        assert twin.params == neuron.params and twin.describe("narrow") == neuron.describe("narrow")
        for a, b in zip(snn.backward(twin, [x], [g])[:2], snn.backward(neuron, [x], [g])[:2]):
            np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="not a pickled snn neuron"):
        snn.Neuron._from_ir('{"name": "lif"}')
