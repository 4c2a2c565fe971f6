//! What each layer is: its settings and the shapes it maps between. The CPU reference
//! (`cpu`) and the GPU runtime compute with the same descriptions.
//!
//! Activations are images `[C, H, W]` (features are `[F, 1, 1]`); a layer that does not
//! depend on time sees the `T * B` images of all steps at once, as one batch.

use std::fmt;

use crate::error::NnError;

/// The shape of one image (or feature vector, `[F, 1, 1]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// `[F, 1, 1]`.
    pub fn features(f: usize) -> Self {
        Self::new(f, 1, 1)
    }

    /// Values per image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per channel (`H * W`).
    pub fn plane(&self) -> usize {
        self.height * self.width
    }
}

impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}, {}]", self.channels, self.height, self.width)
    }
}

/// The output extent of a sliding window, or an error naming the layer.
fn window_out(
    what: &str,
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<usize, NnError> {
    if kernel == 0 || stride == 0 {
        return Err(NnError::shape(format!(
            "{what}: kernel and stride must be at least 1"
        )));
    }
    let padded = input + 2 * padding;
    if padded < kernel {
        return Err(NnError::shape(format!(
            "{what}: a {kernel}x{kernel} window does not fit an input of extent {input} with padding {padding}"
        )));
    }
    Ok((padded - kernel) / stride + 1)
}

/// A square 2-D convolution, as `torch.nn.Conv2d` (no dilation, no groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
}

impl Conv2d {
    /// A convolution without bias (the ResNets put batch-norm after every one).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            bias: false,
        }
    }

    pub fn with_bias(self) -> Self {
        Self { bias: true, ..self }
    }

    /// `[out, in, k, k]`, as PyTorch stores it.
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels,
            self.kernel,
            self.kernel,
        ]
    }

    pub fn output(&self, input: ImageShape) -> Result<ImageShape, NnError> {
        if input.channels != self.in_channels {
            return Err(NnError::shape(format!(
                "conv2d expects {} input channels, got an input of shape {input}",
                self.in_channels
            )));
        }
        let out = |x| window_out("conv2d", x, self.kernel, self.stride, self.padding);
        Ok(ImageShape::new(
            self.out_channels,
            out(input.height)?,
            out(input.width)?,
        ))
    }
}

/// Batch normalisation over `(N, H, W)` per channel, as `torch.nn.BatchNorm2d` (affine,
/// tracking running statistics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm2d {
    pub channels: usize,
    pub eps: f64,
    /// `running = (1 - momentum) * running + momentum * batch` (PyTorch's convention).
    pub momentum: f64,
}

impl BatchNorm2d {
    /// PyTorch's defaults: `eps = 1e-5`, `momentum = 0.1`.
    pub fn new(channels: usize) -> Self {
        Self {
            channels,
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    pub fn output(&self, input: ImageShape) -> Result<ImageShape, NnError> {
        if input.channels != self.channels {
            return Err(NnError::shape(format!(
                "batch-norm over {} channels got an input of shape {input}",
                self.channels
            )));
        }
        Ok(input)
    }
}

/// A square max-pooling window, as `torch.nn.MaxPool2d` (padding counts as `-inf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaxPool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool2d {
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel,
            stride,
            padding,
        }
    }

    pub fn output(&self, input: ImageShape) -> Result<ImageShape, NnError> {
        if 2 * self.padding > self.kernel {
            return Err(NnError::shape(format!(
                "max-pool: padding {} must be at most half the kernel {}",
                self.padding, self.kernel
            )));
        }
        let out = |x| window_out("max-pool", x, self.kernel, self.stride, self.padding);
        Ok(ImageShape::new(
            input.channels,
            out(input.height)?,
            out(input.width)?,
        ))
    }
}

/// A fully connected layer `y = x W^T + b`, as `torch.nn.Linear` (`W` is `[out, in]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
}

impl Linear {
    /// With bias, as PyTorch's default.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        Self {
            in_features,
            out_features,
            bias: true,
        }
    }

    pub fn output(&self, input: ImageShape) -> Result<ImageShape, NnError> {
        if input != ImageShape::features(self.in_features) {
            return Err(NnError::shape(format!(
                "linear expects {} features ([{}, 1, 1]), got an input of shape {input}; flatten it first",
                self.in_features, self.in_features
            )));
        }
        Ok(ImageShape::features(self.out_features))
    }
}
