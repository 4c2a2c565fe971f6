//! MNIST in its original IDX files, gzipped as distributed or already decompressed.
//!
//! The IDX format is a big-endian header (a magic number whose last byte is the number of
//! dimensions, then one `u32` per dimension) followed by the raw `u8` values. Both the
//! header and the payload length are checked, so a truncated download or a label file
//! given for an image file is reported instead of yielding garbage.

use std::path::{Path, PathBuf};

use super::download::MNIST_URL;
use super::{DataError, ImageDataset, Split, be_u32, gunzip_if_gzipped, read_file};

/// Magic number of an IDX file of unsigned bytes in 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes in 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The MNIST handwritten digits: 60,000 training and 10,000 test images of 28x28 grey
/// pixels, labels 0 to 9.
#[derive(Debug, Clone, Copy)]
pub struct Mnist;

impl Mnist {
    /// Number of classes (the digits).
    pub const CLASSES: usize = 10;

    /// The base names of a split's image and label files, as published (each may also
    /// carry a `.gz` suffix on disk).
    pub fn file_names(split: Split) -> (&'static str, &'static str) {
        match split {
            Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
    }

    /// Reads one split from `dir`, which holds the IDX files under their published names,
    /// each either gzipped (`.gz`) or not; the images come out as `[1, rows, cols]`.
    pub fn load(dir: impl AsRef<Path>, split: Split) -> Result<ImageDataset, DataError> {
        let dir = dir.as_ref();
        let (images_name, labels_name) = Self::file_names(split);
        let images_path = find(dir, images_name, split, "images")?;
        let labels_path = find(dir, labels_name, split, "labels")?;
        let (pixels, [n, rows, cols]) = read_idx_images(&images_path)?;
        let labels = read_idx_labels(&labels_path)?;
        if labels.len() != n {
            return Err(DataError::CountMismatch {
                images_path,
                images: n,
                labels_path,
                labels: labels.len(),
            });
        }
        if let Some(i) = labels.iter().position(|&l| usize::from(l) >= Self::CLASSES) {
            return Err(DataError::corrupt(
                &labels_path,
                format!("label {} of image {i} is not a digit 0-9", labels[i]),
            ));
        }
        ImageDataset::new(pixels, [1, rows, cols], labels, Self::CLASSES)
            .ok_or_else(|| DataError::corrupt(&images_path, "the images do not match their header"))
    }
}

/// The file for `name` in `dir`: uncompressed first, then `.gz`, then the dotted variant
/// (`train-images.idx3-ubyte`) some mirrors use.
fn find(dir: &Path, name: &str, split: Split, what: &str) -> Result<PathBuf, DataError> {
    let dotted = name.replacen("-idx", ".idx", 1);
    let candidates = [
        dir.join(name),
        dir.join(format!("{name}.gz")),
        dir.join(&dotted),
    ];
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    Err(DataError::missing(
        &candidates[0],
        format!("the MNIST {split} {what} file"),
        format!(
            "run `snn data download mnist`, which fetches it from {MNIST_URL}, or put \
             `{name}.gz` from there (gzipped or decompressed to `{name}`) in {}",
            dir.display()
        ),
    ))
}

/// Reads an IDX file of `u8` images: the pixels, image after image, and
/// `[count, rows, cols]`.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<(Vec<u8>, [usize; 3]), DataError> {
    let path = path.as_ref();
    let (mut bytes, dims) = read_idx(path, IMAGES_MAGIC, "IDX images: u8, 3 dimensions")?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(DataError::corrupt(
            path,
            format!(
                "its header declares images of {}x{} pixels",
                dims[1], dims[2]
            ),
        ));
    }
    let header = 16;
    bytes.drain(..header);
    Ok((bytes, [dims[0], dims[1], dims[2]]))
}

/// Reads an IDX file of `u8` labels.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>, DataError> {
    let path = path.as_ref();
    let (mut bytes, _) = read_idx(path, LABELS_MAGIC, "IDX labels: u8, 1 dimension")?;
    bytes.drain(..8);
    Ok(bytes)
}

/// Reads, decompresses and checks an IDX file: its magic, a non-zero count and a payload
/// of exactly the declared size. Returns the whole decompressed file and its dimensions.
fn read_idx(path: &Path, magic: u32, meaning: &str) -> Result<(Vec<u8>, Vec<usize>), DataError> {
    let bytes = read_file(path, "the IDX file", "check the path")?;
    let bytes = gunzip_if_gzipped(path, bytes)?;
    if bytes.len() < 4 {
        return Err(DataError::truncated(
            path,
            format!(
                "it has {} bytes, not even a 4-byte magic number",
                bytes.len()
            ),
        ));
    }
    let found = be_u32(&bytes, 0);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: format!("{magic:#010x} ({meaning})"),
            found: describe_magic(found),
        });
    }
    let ndims = (magic & 0xff) as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(DataError::truncated(
            path,
            format!(
                "its {header}-byte header is cut off after {} bytes",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|d| be_u32(&bytes, 4 + 4 * d) as usize)
        .collect();
    if dims[0] == 0 {
        return Err(DataError::corrupt(path, "its header declares 0 items"));
    }
    let payload = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::corrupt(path, format!("its header declares {dims:?} values")))?;
    let found_payload = bytes.len() - header;
    let shape = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x");
    if found_payload < payload {
        return Err(DataError::truncated(
            path,
            format!(
                "its header declares {shape} = {payload} bytes of data but only \
                 {found_payload} follow (item {} is incomplete)",
                found_payload / (payload / dims[0])
            ),
        ));
    }
    if found_payload > payload {
        return Err(DataError::corrupt(
            path,
            format!(
                "its header declares {shape} = {payload} bytes of data but {} more bytes \
                 follow",
                found_payload - payload
            ),
        ));
    }
    Ok((bytes, dims))
}

fn describe_magic(found: u32) -> String {
    match found {
        IMAGES_MAGIC => format!("{found:#010x} (IDX images)"),
        LABELS_MAGIC => format!("{found:#010x} (IDX labels)"),
        _ => format!("{found:#010x}"),
    }
}
