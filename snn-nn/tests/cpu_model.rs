//! The whole-network CPU reference: structure of the model builders (PyTorch names and
//! shapes), and the network backward against finite differences in f64, through every
//! layer kind, with a smooth neuron (spikes have no finite differences).
#![allow(clippy::unwrap_used)]

mod common;

use common::tiny_net;
use snn_codegen::Mode;
use snn_codegen::{Neuron, NeuronBuilder, NeuronIr, ParamDecl, zoo};
use snn_nn::cpu::CpuModel;
use snn_nn::models::{spiking_cnn, spiking_mlp, spiking_resnet};
use snn_nn::{ImageShape, Network, NnError, Rng, Role, init_params};

/// A smooth leaky neuron with a learnable per-channel decay: `h = decay * v + x`,
/// output `tanh(h)`.
fn smooth() -> NeuronIr {
    let b = NeuronBuilder::new("smooth_leaky");
    let x = b.input("x");
    let v = b.state("v", 0.0);
    let decay = b.param("decay", ParamDecl::learnable(0.6).per_channel());
    let h = decay * v + x;
    v.set(h);
    b.output("y", h.tanh());
    b.finish().unwrap()
}

fn random(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.range(-scale, scale)).collect()
}

#[test]
fn network_backward_matches_finite_differences() {
    let neuron = smooth();
    let net = tiny_net(&neuron);
    let (steps, batch) = (3, 2);
    let mut rng = Rng::new(7);
    let mut params = init_params::<f64>(&net, 1).unwrap();
    // Move every weight away from its initial symmetric values so all paths matter.
    for t in params.iter_mut().filter(|t| t.role == Role::Weight) {
        for v in &mut t.data {
            *v += rng.range(-0.2, 0.2);
        }
    }
    let x = random(&mut rng, steps * batch * net.input_shape().len(), 1.0);
    let out_len = steps * batch * net.output_shape().len();
    let r = random(&mut rng, out_len, 1.0);
    let loss = |params: &snn_nn::ParamSet<f64>| {
        let mut m = CpuModel::new(&net, params.clone()).unwrap();
        let t = m.forward(&x, steps, batch, Mode::Train).unwrap();
        t.output().iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
    };
    let mut model = CpuModel::new(&net, params.clone()).unwrap();
    let trace = model.forward(&x, steps, batch, Mode::Train).unwrap();
    let grads = model.backward(&trace, &r).unwrap();
    let mut checked = 0;
    for t in params.iter().filter(|t| t.role == Role::Weight) {
        let g = grads.get(&t.name).unwrap();
        // A few coordinates of every tensor, first, last and one in between.
        let idx: Vec<usize> = [0, t.data.len() / 2, t.data.len() - 1].into();
        for &i in &idx {
            let h = 1e-5;
            let at = |delta: f64| {
                let mut p = params.clone();
                p.get_mut(&t.name).unwrap().data[i] += delta;
                loss(&p)
            };
            // Richardson-extrapolated central difference: O(h^4).
            let d1 = (at(h) - at(-h)) / (2.0 * h);
            let d2 = (at(2.0 * h) - at(-2.0 * h)) / (4.0 * h);
            let fd = (4.0 * d1 - d2) / 3.0;
            let tol = 1e-7 * (1.0 + fd.abs());
            assert!(
                (g.data[i] - fd).abs() < tol,
                "{}[{i}]: backward {} vs finite differences {fd}",
                t.name,
                g.data[i]
            );
            checked += 1;
        }
    }
    let weights = params.iter().filter(|t| t.role == Role::Weight).count();
    assert_eq!(weights, 15);
    assert_eq!(checked, 3 * weights, "every weight tensor checked");
    // Buffers get no gradient.
    assert!(
        grads
            .get("bn1.running_mean")
            .unwrap()
            .data
            .iter()
            .all(|&v| v == 0.0)
    );
}

#[test]
fn training_forward_updates_batch_norm_buffers_and_eval_uses_them() {
    let neuron = smooth();
    let net = tiny_net(&neuron);
    let mut rng = Rng::new(3);
    let x = random(&mut rng, 2 * 2 * net.input_shape().len(), 1.0);
    let mut m = CpuModel::new(&net, init_params::<f64>(&net, 0).unwrap()).unwrap();
    let eval0 = m.forward(&x, 2, 2, Mode::Inference).unwrap();
    assert_eq!(m.params.data("bn1.num_batches_tracked").unwrap(), [0.0]);
    m.forward(&x, 2, 2, Mode::Train).unwrap();
    assert_eq!(m.params.data("bn1.num_batches_tracked").unwrap(), [1.0]);
    assert!(
        m.params
            .data("bn1.running_mean")
            .unwrap()
            .iter()
            .any(|&v| v != 0.0)
    );
    let eval1 = m.forward(&x, 2, 2, Mode::Inference).unwrap();
    assert_ne!(eval0.output(), eval1.output());
    // Backward after an inference pass is refused.
    let err = m
        .backward(&eval1, &vec![0.0; eval1.output().len()])
        .unwrap_err();
    assert!(err.to_string().contains("training forward"), "{err}");
}

/// Signed spikes (the ternary LIF's -1, 0, 1) pass through batch-norm, pooling, the
/// residual add and the linear head as they are, and carry gradients back.
#[test]
fn signed_spikes_flow_through_the_network_both_ways() {
    let neuron = zoo::TernaryLif::default();
    let net = tiny_net(&neuron.ir().unwrap());
    let (steps, batch) = (4, 3);
    let mut rng = Rng::new(5);
    let x = random(&mut rng, steps * batch * net.input_shape().len(), 2.0);
    let mut m = CpuModel::new(&net, init_params::<f64>(&net, 2).unwrap()).unwrap();
    let trace = m.forward(&x, steps, batch, Mode::Train).unwrap();
    let id = |name: &str| net.nodes().iter().position(|n| n.name == name).unwrap();
    for name in ["sn1", "block.sn1"] {
        let s = trace.value(id(name)).unwrap();
        assert!(s.iter().all(|&v| [-1.0, 0.0, 1.0].contains(&v)), "{name}");
        for want in [-1.0, 1.0] {
            assert!(s.contains(&want), "{name} never spikes {want}");
        }
    }
    let r = random(&mut rng, trace.output().len(), 1.0);
    let grads = m.backward(&trace, &r).unwrap();
    for name in [
        "conv1.weight",
        "bn1.weight",
        "block.conv1.weight",
        "fc.weight",
    ] {
        let g = &grads.get(name).unwrap().data;
        assert!(
            g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0),
            "{name}"
        );
    }
}

#[test]
fn resnets_have_torchvision_structure_and_names() {
    let lif = zoo::PaperLif::default();
    let input = ImageShape::new(3, 32, 32);
    // Trained values of torchvision's resnet18/34/50 with a 10-class head.
    for (depth, weights) in [(18, 11_181_642), (34, 21_289_802), (50, 23_528_522)] {
        let net = spiking_resnet(depth, input, 10, &lif).unwrap();
        assert_eq!(net.num_weights(), weights, "resnet{depth}");
        assert_eq!(net.output_shape(), ImageShape::features(10));
    }
    let net = spiking_resnet(18, input, 10, &lif).unwrap();
    let names: Vec<_> = net.params().into_iter().map(|p| p.name).collect();
    // The start of torchvision resnet18's state_dict.
    assert_eq!(
        names[..8],
        [
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.num_batches_tracked",
            "layer1.0.conv1.weight",
            "layer1.0.bn1.weight"
        ]
    );
    for n in [
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "layer4.1.bn2.bias",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.iter().any(|m| m == n), "missing {n}");
    }
    // 122 tensors in torchvision's resnet18 state_dict (fc has 2).
    assert_eq!(names.len(), 122);
    let shapes: Vec<_> = net
        .nodes()
        .iter()
        .map(|n| (n.name.clone(), n.shape))
        .collect();
    let shape = |name: &str| shapes.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(shape("maxpool"), ImageShape::new(64, 8, 8));
    assert_eq!(shape("layer4.1.sn2"), ImageShape::new(512, 1, 1));
    assert!(
        spiking_resnet(101, input, 10, &lif)
            .unwrap_err()
            .to_string()
            .contains("18, 34 or 50")
    );
}

#[test]
fn small_models_and_builder_errors() {
    let lif = zoo::PaperLif::default();
    let cnn = spiking_cnn(ImageShape::new(1, 28, 28), 8, 10, &lif).unwrap();
    assert_eq!(cnn.output_shape(), ImageShape::features(10));
    let mlp = spiking_mlp(ImageShape::new(1, 28, 28), 64, 10, &lif).unwrap();
    assert_eq!(mlp.num_weights(), 784 * 64 + 64 + 64 * 10 + 10);
    let printed = cnn.to_string();
    assert!(printed.contains("Conv2d(1, 8, k=3, s=1, p=1)"), "{printed}");

    let mut b = Network::builder("bad", ImageShape::new(3, 8, 8));
    let x = b.input();
    let c = b.conv("conv", x, 4, 3, 1, 1).unwrap();
    let e = b.conv("conv", x, 4, 3, 1, 1).unwrap_err();
    assert!(e.to_string().contains("two nodes are named `conv`"), "{e}");
    let e = b.add("sum", x, c).unwrap_err();
    assert!(e.to_string().contains("must be equal"), "{e}");
    let e = b.linear("fc", c, 10).unwrap_err();
    assert!(matches!(e, NnError::Graph(_)), "{e}");
    let e = b.max_pool("pool", c, 9, 1, 0).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    let d = b.flatten("flat", x).unwrap();
    let e = b.finish(d).unwrap_err();
    assert!(e.to_string().contains("`conv` does not contribute"), "{e}");
}

#[test]
fn parameters_must_match_the_network() {
    let lif = zoo::PaperLif::default();
    let net = spiking_cnn(ImageShape::new(1, 8, 8), 4, 3, &lif).unwrap();
    let other = spiking_cnn(ImageShape::new(1, 8, 8), 6, 3, &lif).unwrap();
    let e = CpuModel::new(&net, init_params::<f32>(&other, 0).unwrap()).unwrap_err();
    assert!(e.to_string().contains("conv1.weight"), "{e}");
    let mut m = CpuModel::new(&net, init_params::<f32>(&net, 0).unwrap()).unwrap();
    let e = m.forward(&[0.0; 10], 2, 2, Mode::Train).unwrap_err();
    assert!(e.to_string().contains("need 256"), "{e}");
}
