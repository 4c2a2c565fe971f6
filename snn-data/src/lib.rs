//! Datasets: MNIST, CIFAR-10, N-MNIST and DVS128 Gesture, read from their original files;
//! event streams integrated into frames; spike encodings; downloads.
//!
//! The readers take the files exactly as their publishers distribute them (after
//! extraction), so that a dataset already on disk for SpikingJelly, Tonic or torchvision
//! can be used as is. Every failure is a [`DataError`] naming the file at fault.
//!
//! | dataset | entry point | sample |
//! |---|---|---|
//! | digits (embedded) | [`Digits::load`] | [`ImageDataset`], 1x8x8 |
//! | MNIST | [`Mnist::load`] | [`ImageDataset`], 1x28x28 |
//! | CIFAR-10 | [`Cifar10::load`] | [`ImageDataset`], 3x32x32 |
//! | N-MNIST | [`NMnist::open`], [`NMnist::read`] | [`EventStream`], 34x34 |
//! | DVS128 Gesture | [`DvsGesture::open`], [`DvsGesture::samples`] | [`GestureSample`], 128x128 |
//!
//! For training, [`Loader`] batches any [`Dataset`] with seeded shuffling and prefetch
//! threads: an [`ImageDataset`] as `u8` pixels `[B, C, H, W]`, an event dataset wrapped
//! in [`EventFrames`] (N-MNIST's [`NMnist`], DVS128 Gesture's [`GestureSplit`]) as
//! time-major frames `[T, B, 2, H, W]` through the on-disk frame cache.
//!
//! This crate knows no GPU: `snn-runtime` uploads a [`Batch`] through pinned, asynchronous
//! copies (`snn_runtime::staging`) and rate-encodes it on the device with the same draws as
//! [`encode`].

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub mod cifar;
pub mod digits;
pub mod download;
pub mod dvs_gesture;
pub mod encode;
pub mod error;
pub mod event_dataset;
pub mod events;
pub mod frames;
pub mod loader;
pub mod mnist;
pub mod nmnist;

pub use cifar::Cifar10;
pub use digits::Digits;
pub use dvs_gesture::{
    DvsGesture, GestureIndex, GestureSample, GestureSpan, GestureSplit, Recording,
};
pub use error::DataError;
pub use event_dataset::{EventFrames, EventSource, FrameValue};
pub use events::{Event, EventError, EventStream};
pub use loader::{Batch, BatchLayout, Dataset, Loader, LoaderConfig, LoaderError, Shard};
pub use mnist::Mnist;
pub use nmnist::{NMnist, NMnistSample};

/// Which half of a dataset to read: every dataset here ships a fixed train/test split,
/// and results are only comparable with published ones when that split is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training set.
    Train,
    /// The held-out test set.
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Static images with their labels, stored contiguously so that batches can be copied to
/// the GPU without gathering.
///
/// Images are `u8` pixels in `[channel, row, column]` order, image after image; the
/// constructor guarantees that the buffers agree with the shape and every label is below
/// the number of classes, so consumers may index without checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDataset {
    images: Vec<u8>,
    shape: [usize; 3],
    labels: Vec<u8>,
    classes: usize,
}

impl ImageDataset {
    /// Assembles a dataset from its parts; `None` when `images` is not `labels.len()`
    /// images of `shape` (`[channels, height, width]`), a dimension is zero, or a label is
    /// not below `classes`.
    pub fn new(
        images: Vec<u8>,
        shape: [usize; 3],
        labels: Vec<u8>,
        classes: usize,
    ) -> Option<Self> {
        let per_image = shape[0].checked_mul(shape[1])?.checked_mul(shape[2])?;
        let ok = per_image > 0
            && per_image.checked_mul(labels.len()) == Some(images.len())
            && labels.iter().all(|&l| usize::from(l) < classes);
        ok.then_some(Self {
            images,
            shape,
            labels,
            classes,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[channels, height, width]` of every image (MNIST `[1, 28, 28]`, CIFAR-10
    /// `[3, 32, 32]`).
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Bytes per image: `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of classes; every label is below it.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// All pixels, `[n, channels, height, width]` row-major.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels, one per image.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The pixels of image `i`, `[channels, height, width]`; `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let n = self.image_len();
        self.images
            .get(i.checked_mul(n)?..i.checked_add(1)?.checked_mul(n)?)
    }

    /// The label of image `i`; `None` past the end.
    pub fn label(&self, i: usize) -> Option<u8> {
        self.labels.get(i).copied()
    }

    /// The pixel and label buffers, without copying.
    pub fn into_parts(self) -> (Vec<u8>, Vec<u8>) {
        (self.images, self.labels)
    }
}

/// Reads a whole file; a missing file becomes [`DataError::Missing`] with `what` and
/// `help`, anything else [`DataError::Io`].
pub(crate) fn read_file(path: &Path, what: &str, help: &str) -> Result<Vec<u8>, DataError> {
    fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => DataError::missing(path, what, help),
        _ => DataError::io(path, e),
    })
}

/// Undoes gzip compression when the bytes start with gzip's signature, whatever the file
/// is called, so that `.gz` files renamed (or not) by a browser still load.
pub(crate) fn gunzip_if_gzipped(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
    match flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(DataError::truncated(
            path,
            format!(
                "the gzip stream ends after {} compressed bytes, before its end marker",
                bytes.len()
            ),
        )),
        Err(e) => Err(DataError::corrupt(
            path,
            format!("gzip decoding failed ({e})"),
        )),
    }
}

/// A file's bytes as `size`-byte records (`what`: "record", "event"); an empty file or a
/// cut-off last record is a truncation error naming the file.
pub(crate) fn records<'a>(
    path: &Path,
    bytes: &'a [u8],
    size: usize,
    what: &str,
) -> Result<std::slice::ChunksExact<'a, u8>, DataError> {
    if bytes.is_empty() {
        return Err(DataError::truncated(path, "the file is empty"));
    }
    if !bytes.len().is_multiple_of(size) {
        return Err(DataError::truncated(
            path,
            format!(
                "its {} bytes are not a whole number of {size}-byte {what}s: {what} {} is cut \
                 off after {} bytes",
                bytes.len(),
                bytes.len() / size,
                bytes.len() % size
            ),
        ));
    }
    Ok(bytes.chunks_exact(size))
}

/// The entries of a folder, sorted by name so that every listing is deterministic.
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        out.push(entry.map_err(|e| DataError::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// A little-endian `u32` at `at`; the caller has checked the bounds.
pub(crate) fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A big-endian `u32` at `at`; the caller has checked the bounds.
pub(crate) fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}
