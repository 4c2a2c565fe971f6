//! Ready-made networks: the Spiking-ResNet family (torchvision's ResNet with a spiking
//! neuron in place of every ReLU, as in SpikingJelly's `spiking_resnet`), and a small
//! spiking CNN and MLP for quick runs. Any [`Neuron`] plugs in.
//!
//! Node names follow the PyTorch modules (`conv1`, `layer1.0.bn2`,
//! `layer2.0.downsample.0`, `fc`; neurons `sn1`, `layer1.0.sn2`), so checkpoints load into
//! the equivalent PyTorch model.

use snn_codegen::Neuron;

use crate::error::NnError;
use crate::graph::{Network, NetworkBuilder, NodeId};
use crate::layers::ImageShape;

/// The residual block of a ResNet stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// Two 3x3 convolutions (ResNet-18, -34).
    Basic,
    /// 1x1, 3x3, 1x1 convolutions, four times as many output channels (ResNet-50).
    Bottleneck,
}

impl Block {
    fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// The block type and blocks per stage of a ResNet depth (18, 34 or 50).
pub fn resnet_config(depth: usize) -> Result<(Block, [usize; 4]), NnError> {
    match depth {
        18 => Ok((Block::Basic, [2, 2, 2, 2])),
        34 => Ok((Block::Basic, [3, 4, 6, 3])),
        50 => Ok((Block::Bottleneck, [3, 4, 6, 3])),
        _ => Err(NnError::Config(format!(
            "Spiking-ResNet{depth} is not defined: use depth 18, 34 or 50"
        ))),
    }
}

/// Spiking-ResNet of `depth` 18, 34 or 50 for `input` images (3 channels for the stem, as
/// torchvision's) and `classes` outputs: 7x7 stride-2 stem convolution, 3x3 stride-2
/// max-pool, four stages of 64/128/256/512 channels, batch-norm after every convolution,
/// the residual added before the block's last neuron, global average pool, linear
/// classifier. The classifier's output at every step is the network's output.
pub fn spiking_resnet(
    depth: usize,
    input: ImageShape,
    classes: usize,
    neuron: &dyn Neuron,
) -> Result<Network, NnError> {
    let (block, counts) = resnet_config(depth)?;
    let mut b = Network::builder(format!("spiking_resnet{depth}"), input);
    let x = b.input();
    let x = b.conv("conv1", x, 64, 7, 2, 3)?;
    let x = b.batch_norm("bn1", x)?;
    let x = b.neuron("sn1", x, neuron)?;
    let mut x = b.max_pool("maxpool", x, 3, 2, 1)?;
    let mut inplanes = 64;
    for (stage, (&planes, &count)) in [64, 128, 256, 512].iter().zip(&counts).enumerate() {
        for i in 0..count {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let name = format!("layer{}.{i}", stage + 1);
            x = residual_block(&mut b, &name, x, block, inplanes, planes, stride, neuron)?;
            inplanes = planes * block.expansion();
        }
    }
    let x = b.global_avg_pool("avgpool", x)?;
    let x = b.linear("fc", x, classes)?;
    b.finish(x)
}

#[allow(clippy::too_many_arguments)]
fn residual_block(
    b: &mut NetworkBuilder,
    name: &str,
    x: NodeId,
    block: Block,
    inplanes: usize,
    planes: usize,
    stride: usize,
    neuron: &dyn Neuron,
) -> Result<NodeId, NnError> {
    let out_planes = planes * block.expansion();
    let y = match block {
        Block::Basic => {
            let y = b.conv(format!("{name}.conv1"), x, planes, 3, stride, 1)?;
            let y = b.batch_norm(format!("{name}.bn1"), y)?;
            let y = b.neuron(format!("{name}.sn1"), y, neuron)?;
            let y = b.conv(format!("{name}.conv2"), y, planes, 3, 1, 1)?;
            b.batch_norm(format!("{name}.bn2"), y)?
        }
        Block::Bottleneck => {
            let y = b.conv(format!("{name}.conv1"), x, planes, 1, 1, 0)?;
            let y = b.batch_norm(format!("{name}.bn1"), y)?;
            let y = b.neuron(format!("{name}.sn1"), y, neuron)?;
            let y = b.conv(format!("{name}.conv2"), y, planes, 3, stride, 1)?;
            let y = b.batch_norm(format!("{name}.bn2"), y)?;
            let y = b.neuron(format!("{name}.sn2"), y, neuron)?;
            let y = b.conv(format!("{name}.conv3"), y, out_planes, 1, 1, 0)?;
            b.batch_norm(format!("{name}.bn3"), y)?
        }
    };
    let shortcut = if stride != 1 || inplanes != out_planes {
        let s = b.conv(format!("{name}.downsample.0"), x, out_planes, 1, stride, 0)?;
        b.batch_norm(format!("{name}.downsample.1"), s)?
    } else {
        x
    };
    let sum = b.add(format!("{name}.add"), y, shortcut)?;
    let last = match block {
        Block::Basic => "sn2",
        Block::Bottleneck => "sn3",
    };
    b.neuron(format!("{name}.{last}"), sum, neuron)
}

/// A small spiking CNN for quick runs: two stages of 3x3 convolution (`width` and
/// `2 * width` channels), batch-norm, neuron and 2x2 max-pool, then a linear classifier.
pub fn spiking_cnn(
    input: ImageShape,
    width: usize,
    classes: usize,
    neuron: &dyn Neuron,
) -> Result<Network, NnError> {
    let mut b = Network::builder("spiking_cnn", input);
    let mut x = b.input();
    for (i, channels) in [width, 2 * width].into_iter().enumerate() {
        let i = i + 1;
        x = b.conv(format!("conv{i}"), x, channels, 3, 1, 1)?;
        x = b.batch_norm(format!("bn{i}"), x)?;
        x = b.neuron(format!("sn{i}"), x, neuron)?;
        x = b.max_pool(format!("pool{i}"), x, 2, 2, 0)?;
    }
    let x = b.flatten("flatten", x)?;
    let x = b.linear("fc", x, classes)?;
    b.finish(x)
}

/// A spiking MLP: flatten, a hidden linear layer of `hidden` neurons, a linear classifier.
pub fn spiking_mlp(
    input: ImageShape,
    hidden: usize,
    classes: usize,
    neuron: &dyn Neuron,
) -> Result<Network, NnError> {
    let mut b = Network::builder("spiking_mlp", input);
    let x = b.flatten("flatten", b.input())?;
    let x = b.linear("fc1", x, hidden)?;
    let x = b.neuron("sn1", x, neuron)?;
    let x = b.linear("fc2", x, classes)?;
    b.finish(x)
}
