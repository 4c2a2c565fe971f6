//! What a neuron layer is, on any device: how its elements map to parameter values, and
//! whether a forward pass is for training. The CPU interpreter and the GPU runtime share
//! these.

use crate::ir::ParamShape;

/// How the `n` elements of a layer map to channels: `n = batch * channels * inner`,
/// element `i` is in channel `(i / inner) % channels` and is neuron `i % (channels * inner)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub channels: usize,
    pub inner: usize,
}

impl Layout {
    /// `neurons` independent neurons (a dense layer's features, no batch).
    pub fn flat(neurons: usize) -> Self {
        Self {
            channels: neurons,
            inner: 1,
        }
    }

    pub fn neurons(&self) -> usize {
        self.channels * self.inner
    }

    /// How many values a parameter of this shape holds.
    pub fn len(&self, shape: ParamShape) -> usize {
        match shape {
            ParamShape::Scalar => 1,
            ParamShape::PerChannel => self.channels,
            ParamShape::PerNeuron => self.neurons(),
        }
    }

    /// Which value of a parameter element `i` uses.
    pub fn index(&self, shape: ParamShape, i: usize) -> usize {
        match shape {
            ParamShape::Scalar => 0,
            ParamShape::PerChannel => (i / self.inner) % self.channels,
            ParamShape::PerNeuron => i % self.neurons(),
        }
    }
}

/// Whether the forward pass saves tensors for a backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Inference,
}
