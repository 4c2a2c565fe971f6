//! How loader batches become network input `[T, B, ...]`: images are rate-coded, with
//! draws that depend only on `(seed, sample, step, pixel)` so that every device gives the
//! same spikes (`snn_data::encode`); event frames are used as they are.

use std::borrow::Cow;

use snn_data::encode::rate_encode_batch;
use snn_data::{Batch, BatchLayout};

use crate::error::NnError;
use crate::graph::Network;
use crate::train::TrainError;

/// How images become spike trains: `steps` frames of Bernoulli spikes drawn with `seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateCode {
    pub steps: usize,
    pub seed: u64,
}

/// One host batch, as trainers take it.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// `u8` images `[B, C, H, W]`, rate-coded by the trainer (grey ones first repeated
    /// into the network's channels: [`expand_channels`]).
    Images(&'a Batch<u8>, RateCode),
    /// Time-major `u8` event counts `[T, B, ...]`.
    Counts(&'a Batch<u8>),
    /// Time-major `f32` event frames `[T, B, ...]`.
    Frames(&'a Batch<f32>),
}

/// Loader batches that trainers take: `u8` images or event counts (by their layout), `f32`
/// event frames.
pub trait AsInput {
    /// The batch as input; `rate` says how images are encoded (event frames ignore it).
    fn as_input(&self, rate: RateCode) -> Input<'_>;
}

impl AsInput for Batch<u8> {
    fn as_input(&self, rate: RateCode) -> Input<'_> {
        match self.layout {
            BatchLayout::SampleMajor => Input::Images(self, rate),
            BatchLayout::TimeMajor => Input::Counts(self),
        }
    }
}

impl AsInput for Batch<f32> {
    fn as_input(&self, _rate: RateCode) -> Input<'_> {
        Input::Frames(self)
    }
}

impl<'a> Input<'a> {
    /// Samples in the batch.
    pub fn batch_size(&self) -> usize {
        match self {
            Input::Images(b, _) | Input::Counts(b) => b.len(),
            Input::Frames(b) => b.len(),
        }
    }

    /// The labels, as the losses take them.
    pub fn labels(&self) -> Vec<usize> {
        let labels = match self {
            Input::Images(b, _) | Input::Counts(b) => &b.labels,
            Input::Frames(b) => &b.labels,
        };
        labels.iter().map(|&l| usize::from(l)).collect()
    }

    /// Time steps `T` of the network input.
    pub fn steps(&self) -> usize {
        match self {
            Input::Images(_, rate) => rate.steps,
            Input::Counts(b) => b.shape.first().copied().unwrap_or(0),
            Input::Frames(b) => b.shape.first().copied().unwrap_or(0),
        }
    }

    /// The network input `[T, B, ...]` for `net`, on the host (what the CPU trainer runs;
    /// the GPU trainer builds the same values on the device).
    pub fn to_host(&self, net: &Network) -> Result<Cow<'a, [f32]>, TrainError> {
        match *self {
            Input::Images(batch, rate) => {
                require(batch, BatchLayout::SampleMajor)?;
                let batch = expand_channels(batch, net)?;
                let pixels = batch.shape.iter().skip(1).product();
                let x = rate_encode_batch(
                    &batch.unit(),
                    pixels,
                    &batch.indices,
                    rate.steps,
                    rate.seed,
                )?;
                Ok(Cow::Owned(x))
            }
            Input::Counts(batch) => {
                require(batch, BatchLayout::TimeMajor)?;
                Ok(Cow::Owned(
                    batch.data.iter().map(|&v| f32::from(v)).collect(),
                ))
            }
            Input::Frames(batch) => {
                require(batch, BatchLayout::TimeMajor)?;
                Ok(Cow::Borrowed(&batch.data))
            }
        }
    }
}

/// Grey images `[B, 1, H, W]` repeated into the channels of a network that takes more
/// (as the paper feeds MNIST to Spiking-ResNets); other batches as they are. Done on the
/// `u8` pixels, so that every trainer then encodes the same values.
pub fn expand_channels<'b>(
    batch: &'b Batch<u8>,
    net: &Network,
) -> Result<Cow<'b, Batch<u8>>, NnError> {
    let channels = net.input_shape().channels;
    let &[b, 1, h, w] = &batch.shape[..] else {
        return Ok(Cow::Borrowed(batch));
    };
    let plane = h * w;
    if channels == 1 || plane == 0 {
        return Ok(Cow::Borrowed(batch));
    }
    if b.checked_mul(plane) != Some(batch.data.len()) {
        return Err(NnError::shape(format!(
            "a batch of shape {:?} holds {} values",
            batch.shape,
            batch.data.len()
        )));
    }
    let data = batch
        .data
        .chunks_exact(plane)
        .flat_map(|image| std::iter::repeat_n(image, channels).flatten().copied())
        .collect();
    Ok(Cow::Owned(Batch {
        indices: batch.indices.clone(),
        data,
        labels: batch.labels.clone(),
        shape: vec![b, channels, h, w],
        layout: batch.layout,
    }))
}

/// Checks that `batch` has the layout its kind of input needs.
fn require<E>(batch: &Batch<E>, layout: BatchLayout) -> Result<(), NnError> {
    if batch.layout == layout {
        return Ok(());
    }
    Err(NnError::shape(format!(
        "this input takes a {layout:?} batch, but the batch of shape {:?} is {:?}",
        batch.shape, batch.layout
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use snn_codegen::zoo;
    use snn_data::encode::{rate_encode_batch, u8_to_unit};

    use super::*;
    use crate::layers::ImageShape;
    use crate::models::spiking_mlp;

    /// A network taking `channels` x 2 x 2 images (event frames: 2 polarities).
    fn net(channels: usize) -> Network {
        spiking_mlp(
            ImageShape::new(channels, 2, 2),
            4,
            3,
            &zoo::PaperLif::default(),
        )
        .unwrap()
    }

    fn images(channels: usize) -> Batch<u8> {
        Batch {
            indices: vec![7, 3],
            data: (0..2 * channels as u8 * 4).map(|v| v * 10).collect(),
            labels: vec![2, 0],
            shape: vec![2, channels, 2, 2],
            layout: BatchLayout::SampleMajor,
        }
    }

    #[test]
    fn grey_images_are_repeated_into_the_networks_channels() {
        let grey = images(1);
        let rgb = expand_channels(&grey, &net(3)).unwrap();
        assert_eq!(rgb.shape, [2, 3, 2, 2]);
        assert_eq!(
            rgb.data[..12],
            [0, 10, 20, 30, 0, 10, 20, 30, 0, 10, 20, 30]
        );
        assert_eq!(rgb.data[12..16], [40, 50, 60, 70]);
        assert_eq!((&rgb.indices, &rgb.labels), (&grey.indices, &grey.labels));
        assert!(matches!(
            expand_channels(&grey, &net(1)),
            Ok(Cow::Borrowed(_))
        ));
        let colour = images(3);
        assert!(matches!(
            expand_channels(&colour, &net(3)),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn images_are_rate_coded_on_their_dataset_indices() {
        let grey = images(1);
        let rate = RateCode { steps: 3, seed: 11 };
        let input = grey.as_input(rate);
        assert!(matches!(input, Input::Images(..)));
        assert_eq!((input.steps(), input.batch_size()), (3, 2));
        assert_eq!(input.labels(), [2, 0]);
        let rgb = expand_channels(&grey, &net(3)).unwrap();
        let expected = rate_encode_batch(&u8_to_unit(&rgb.data), 12, &[7, 3], 3, 11).unwrap();
        assert_eq!(input.to_host(&net(3)).unwrap()[..], expected[..]);
    }

    #[test]
    fn event_frames_are_used_as_they_are() {
        let counts = Batch {
            indices: vec![0, 1],
            data: vec![0u8, 1, 2, 3, 4, 5, 6, 7],
            labels: vec![1, 1],
            shape: vec![2, 2, 2, 1, 1],
            layout: BatchLayout::TimeMajor,
        };
        let input = counts.as_input(RateCode { steps: 9, seed: 0 });
        assert!(matches!(input, Input::Counts(_)));
        assert_eq!(input.steps(), 2);
        let x = input.to_host(&net(2)).unwrap();
        assert_eq!(x[..], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);

        let frames = Batch {
            indices: vec![0],
            data: vec![0.5f32, 2.0, 1.0, 0.0],
            labels: vec![0],
            shape: vec![2, 1, 2, 1, 1],
            layout: BatchLayout::TimeMajor,
        };
        let input = frames.as_input(RateCode { steps: 9, seed: 0 });
        assert_eq!(input.steps(), 2);
        assert!(matches!(input.to_host(&net(2)), Ok(Cow::Borrowed(x)) if x == frames.data));
    }

    #[test]
    fn a_batch_of_the_wrong_layout_is_refused() {
        let mut grey = images(1);
        grey.layout = BatchLayout::TimeMajor;
        let e = Input::Images(&grey, RateCode { steps: 2, seed: 0 })
            .to_host(&net(1))
            .unwrap_err();
        assert!(e.to_string().contains("SampleMajor"), "{e}");
    }
}
