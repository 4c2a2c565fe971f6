//! Which nodes the GPU model runs as one generated kernel.
//!
//! A batch-norm whose only reader is a neuron, or whose only reader is an add whose only
//! reader is a neuron (a residual block's end), is fused into that neuron
//! (`snn_codegen::fuse`): the neuron kernel computes batch-norm's affine map (and the add)
//! from the convolution's raw output itself, so neither the normalized activations nor
//! the sum are ever written, forward or backward. Batch-norm's statistics are still
//! computed at its place in the graph, and its backward is finished after the neuron's.

use snn_nn::graph::{Network, NodeId, Op};

/// A node's part in the fused schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fusion {
    /// Runs as its own layer.
    Plain,
    /// A batch-norm whose normalization, or an add whose sum, a later neuron computes.
    Absorbed { into: NodeId },
    /// A neuron that computes `bn`'s affine map of `x` (and adds `residual`) itself.
    Neuron {
        bn: NodeId,
        add: Option<NodeId>,
        /// Batch-norm's input: what the fused kernel reads.
        x: NodeId,
        residual: Option<NodeId>,
    },
}

impl Fusion {
    /// The nodes whose values the node reads when it runs.
    pub fn reads(self, net: &Network, id: NodeId) -> Vec<NodeId> {
        match self {
            Fusion::Plain => net.node(id).inputs.clone(),
            Fusion::Absorbed { .. } => vec![],
            Fusion::Neuron { x, residual, .. } => std::iter::once(x).chain(residual).collect(),
        }
    }
}

/// The fused schedule of `net` (every node [`Fusion::Plain`] when `fuse` is off).
pub fn plan(net: &Network, fuse: bool) -> Vec<Fusion> {
    let nodes = net.nodes();
    let mut plan = vec![Fusion::Plain; nodes.len()];
    if !fuse {
        return plan;
    }
    let uses = net.uses();
    let single_bn = |i: NodeId| matches!(nodes[i].op, Op::BatchNorm2d(_)) && uses[i] == 1;
    for (n, node) in nodes.iter().enumerate() {
        let Op::Neuron(ir) = &node.op else { continue };
        if ir.inputs.len() != 1 {
            continue;
        }
        let i = node.inputs[0];
        if single_bn(i) {
            plan[i] = Fusion::Absorbed { into: n };
            plan[n] = Fusion::Neuron {
                bn: i,
                add: None,
                x: nodes[i].inputs[0],
                residual: None,
            };
        } else if matches!(nodes[i].op, Op::Add) && uses[i] == 1 {
            let [a, b] = [nodes[i].inputs[0], nodes[i].inputs[1]];
            let (bn, other) = if single_bn(a) {
                (a, b)
            } else if single_bn(b) {
                (b, a)
            } else {
                continue;
            };
            plan[bn] = Fusion::Absorbed { into: n };
            plan[i] = Fusion::Absorbed { into: n };
            plan[n] = Fusion::Neuron {
                bn,
                add: Some(i),
                x: nodes[bn].inputs[0],
                residual: Some(other),
            };
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use snn_codegen::zoo;
    use snn_nn::ImageShape;
    use snn_nn::models::spiking_resnet;

    #[test]
    fn every_resnet_neuron_takes_its_batch_norm_and_residual() {
        let lif = zoo::PaperLif::default();
        let net = spiking_resnet(18, ImageShape::new(3, 32, 32), 10, &lif).expect("resnet18");
        let plan = plan(&net, true);
        let find = |name: &str| {
            net.nodes()
                .iter()
                .position(|n| n.name == name)
                .expect("node")
        };
        // Every neuron is fused; 17 batch-norms and 8 adds are absorbed; the downsampling
        // batch-norms (read by an add whose other input is fused) stay.
        let neurons = plan
            .iter()
            .filter(|f| matches!(f, Fusion::Neuron { .. }))
            .count();
        assert_eq!(neurons, 17);
        assert_eq!(plan[find("layer2.0.downsample.1")], Fusion::Plain);
        assert_eq!(
            plan[find("layer2.0.sn2")],
            Fusion::Neuron {
                bn: find("layer2.0.bn2"),
                add: Some(find("layer2.0.add")),
                x: find("layer2.0.conv2"),
                residual: Some(find("layer2.0.downsample.1")),
            }
        );
        assert_eq!(
            plan[find("layer1.0.sn2")],
            Fusion::Neuron {
                bn: find("layer1.0.bn2"),
                add: Some(find("layer1.0.add")),
                x: find("layer1.0.conv2"),
                residual: Some(find("maxpool")),
            }
        );
        assert!(super::plan(&net, false).iter().all(|f| *f == Fusion::Plain));
    }
}
