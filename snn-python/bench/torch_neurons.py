"""snn's layer inside PyTorch against SpikingJelly's, on one CUDA GPU: a LIF neuron's
forward + backward over [T, N] (T = 8, 32, 128; N = 2^21) and a Spiking-ResNet18 training
iteration (T = 32, batch 100, 3x32x32, Adam), medians of CUDA-event timings after warm-up,
with a device copy of the same bytes measured in the same run.

    python snn-python/bench/torch_neurons.py [--quick] [--only neurons|resnet]

Needs torch with CUDA, the snn package (a wheel built with maturin) and SpikingJelly 2.0
(its Triton LIF, and FlexSN, whose Triton kernels it generates from a Python step
function). Prints markdown tables for BENCHMARKS.md."""

import argparse
import statistics

import torch

import snn
import snn.torch
from spikingjelly.activation_based import functional, neuron, surrogate
from spikingjelly.activation_based.model import spiking_resnet
from spikingjelly.activation_based.neuron.flexsn import FlexSN


def median_ms(fn, warmup, reps):
    """The median of `reps` CUDA-event timings of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def sg_lif_core(x, v):
    """SpikingJelly's LIFNode (tau 2, threshold 1, hard reset to 0, Sigmoid(4)) as FlexSN's
    pure step function (a closure over a module would be refused)."""
    h = v + (x - v) / 2.0
    s = surrogate.sigmoid.apply(h - 1.0, 4.0)
    return s, h * (1.0 - s)


def neurons(args):
    n = 1 << 21
    ours = snn.torch.NeuronLayer(snn.lif_node()).cuda()
    ours_narrow = snn.torch.NeuronLayer(snn.lif_node(), storage="narrow").cuda()
    sj = neuron.LIFNode(step_mode="m").cuda()
    flex = FlexSN(core=sg_lif_core, num_states=1, step_mode="m").cuda()
    print("| T | device copy GB/s | floor ms (24 B/element-step) | snn f32 | snn narrow (bf16) "
          "| SpikingJelly LIFNode | SpikingJelly FlexSN |")
    print("|---|---|---|---|---|---|---|")
    for steps in (8, 32, 128):
        x = torch.rand(steps, n, device="cuda") * 2
        g = torch.randn(steps, n, device="cuda")
        copy = torch.empty_like(x)
        copy_ms = median_ms(lambda: copy.copy_(x), args.warmup, args.reps)
        gbs = 2 * x.numel() * 4 / copy_ms / 1e6
        floor = 24 * x.numel() / gbs / 1e6

        def run(layer, x, g, reset=False):
            xr = x.detach().requires_grad_()

            def step():
                xr.grad = None
                layer(xr).backward(g)
                if reset:
                    functional.reset_net(layer)

            return median_ms(step, args.warmup, args.reps)

        row = [
            run(ours, x, g),
            run(ours_narrow, x.bfloat16(), g.bfloat16()),
            run(sj, x, g, reset=True),
            run(flex, x, g, reset=True),
        ]
        cells = " | ".join(f"{t:.3f}" for t in row)
        print(f"| {steps} | {gbs:.0f} | {floor:.3f} | {cells} |", flush=True)
        del x, g, copy
        torch.cuda.empty_cache()


def resnet_ms(make_neuron, autocast, args, steps=32, batch=100):
    """One Spiking-ResNet18 training iteration (forward, backward, Adam) on rate-coded
    3x32x32 input, ms, and the peak memory in GiB."""
    torch.manual_seed(0)
    net = spiking_resnet.spiking_resnet18(spiking_neuron=make_neuron, num_classes=10)
    functional.set_step_mode(net, "m")
    net = net.cuda()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = (torch.rand(steps, batch, 3, 32, 32, device="cuda") < 0.5).float()
    y = torch.randint(0, 10, (batch,), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(net(x).mean(0), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        functional.reset_net(net)

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    ms = median_ms(step, args.warmup, args.reps)
    return ms, torch.cuda.max_memory_allocated() / 2**30


def resnets(args):
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cases = [
        ("snn layer, f32 (TF32 convolutions)", False,
         lambda **kw: snn.torch.NeuronLayer(snn.lif_node(detach_reset=True))),
        ("SpikingJelly LIFNode (TF32 convolutions)", False,
         lambda **kw: neuron.LIFNode(detach_reset=True, **kw)),
        ("snn layer, narrow, bf16 autocast", True,
         lambda **kw: snn.torch.NeuronLayer(snn.lif_node(detach_reset=True), storage="narrow")),
        ("SpikingJelly LIFNode, bf16 autocast", True,
         lambda **kw: neuron.LIFNode(detach_reset=True, **kw)),
    ]
    print("| neurons | iteration ms | peak GiB |")
    print("|---|---|---|")
    for name, autocast, make in cases:
        ms, gib = resnet_ms(make, autocast, args)
        print(f"| {name} | {ms:.2f} | {gib:.2f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--only", choices=["neurons", "resnet"], help="one of the two tables")
    args = parser.parse_args()
    args.warmup, args.reps = (2, 5) if args.quick else (5, 25)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    if args.only != "resnet":
        neurons(args)
        print()
    if args.only != "neurons":
        resnets(args)


if __name__ == "__main__":
    main()
