//! CIFAR-10, binary version: `cifar-10-batches-bin/` as extracted from
//! `cifar-10-binary.tar.gz`.
//!
//! Each batch file is a sequence of 3,073-byte records: one label byte, then the 32x32
//! image as 1,024 red, 1,024 green and 1,024 blue bytes (channel-major, rows top to
//! bottom), which is already the `[channel, row, column]` layout the networks take.
//!
//! The records carry no header to check, so truncation is detected from the length: a
//! batch must hold a whole, non-zero number of records, and the training batches must all
//! hold as many records as the first (10,000 each as published).

use std::path::{Path, PathBuf};

use super::{DataError, ImageDataset, Split, read_file};

/// CIFAR-10: 50,000 training and 10,000 test colour images of 32x32 pixels in 10 classes.
#[derive(Debug, Clone, Copy)]
pub struct Cifar10;

impl Cifar10 {
    /// Number of classes.
    pub const CLASSES: usize = 10;
    /// The class of each label, in label order (from `batches.meta.txt`).
    pub const CLASS_NAMES: [&'static str; 10] = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];
    /// `[channels, height, width]` of every image.
    pub const SHAPE: [usize; 3] = [3, 32, 32];
    /// Bytes per record: the label and the pixels.
    pub const RECORD_BYTES: usize = 1 + 3 * 32 * 32;
    /// The folder the published archive extracts to.
    pub const FOLDER: &'static str = "cifar-10-batches-bin";

    /// The batch files of a split, in the order their records are concatenated.
    pub fn batch_names(split: Split) -> &'static [&'static str] {
        match split {
            Split::Train => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            Split::Test => &["test_batch.bin"],
        }
    }

    /// Reads one split. `dir` is either the `cifar-10-batches-bin` folder itself or the
    /// folder the archive was extracted into; every batch of the split must be present.
    pub fn load(dir: impl AsRef<Path>, split: Split) -> Result<ImageDataset, DataError> {
        let dir = dir.as_ref();
        let nested = dir.join(Self::FOLDER);
        let root = if nested.is_dir() {
            nested
        } else {
            dir.to_path_buf()
        };
        let paths: Vec<PathBuf> = Self::batch_names(split)
            .iter()
            .map(|name| root.join(name))
            .collect();
        // Report a missing batch before spending time reading the others.
        if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
            return Err(missing_batch(missing, dir));
        }
        let mut images = Vec::new();
        let mut labels = Vec::new();
        let mut first: Option<(&Path, usize)> = None;
        for path in &paths {
            let bytes = read_file(path, "the CIFAR-10 batch", &help(dir))?;
            let (batch_images, batch_labels) = parse_batch(path, &bytes)?;
            match first {
                None => first = Some((path, batch_labels.len())),
                Some((first_path, n)) if n != batch_labels.len() => {
                    return Err(DataError::truncated(
                        path,
                        format!(
                            "it holds {} records while {} holds {n}",
                            batch_labels.len(),
                            first_path.display()
                        ),
                    ));
                }
                Some(_) => {}
            }
            if images.is_empty() {
                images.reserve(batch_images.len() * paths.len());
                labels.reserve(batch_labels.len() * paths.len());
            }
            images.extend_from_slice(&batch_images);
            labels.extend_from_slice(&batch_labels);
        }
        ImageDataset::new(images, Self::SHAPE, labels, Self::CLASSES)
            .ok_or_else(|| DataError::corrupt(&root, "the batches do not form a dataset"))
    }

    /// Reads a single batch file holding any whole number of records (useful for subsets
    /// written in the same format).
    pub fn read_batch(path: impl AsRef<Path>) -> Result<ImageDataset, DataError> {
        let path = path.as_ref();
        let bytes = read_file(path, "the CIFAR-10 batch", "check the path")?;
        let (images, labels) = parse_batch(path, &bytes)?;
        ImageDataset::new(images, Self::SHAPE, labels, Self::CLASSES)
            .ok_or_else(|| DataError::corrupt(path, "the records do not form a dataset"))
    }
}

fn help(dir: &Path) -> String {
    format!(
        "extract `cifar-10-binary.tar.gz` (the binary version, from \
         https://www.cs.toronto.edu/~kriz/cifar.html) in {}, which gives {} holding \
         data_batch_1.bin .. data_batch_5.bin and test_batch.bin (passing that folder itself \
         works too)",
        dir.display(),
        dir.join(Cifar10::FOLDER).display()
    )
}

fn missing_batch(path: &Path, dir: &Path) -> DataError {
    DataError::missing(path, "the CIFAR-10 batch file", help(dir))
}

/// Splits a batch into pixels and labels, checking its length and every label.
fn parse_batch(path: &Path, bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    const R: usize = Cifar10::RECORD_BYTES;
    let records = crate::records(path, bytes, R, "record")?;
    let n = records.len();
    let mut images = Vec::with_capacity(n * (R - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, record) in records.enumerate() {
        let label = record[0];
        if usize::from(label) >= Cifar10::CLASSES {
            return Err(DataError::corrupt(
                path,
                format!("record {i} has label {label}, not a class 0-9"),
            ));
        }
        labels.push(label);
        images.extend_from_slice(&record[1..]);
    }
    Ok((images, labels))
}
