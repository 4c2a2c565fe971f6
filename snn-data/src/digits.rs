//! The 1,797 8x8 handwritten digits (UCI "Optical Recognition of Handwritten Digits"),
//! embedded in this crate so that training works on a machine without any download
//! (`data/README.md` gives the provenance and licence).

use std::path::Path;

use flate2::read::GzDecoder;
use std::io::Read;

use crate::{DataError, ImageDataset, Split};

/// The file, as scikit-learn ships it: gzip'd CSV, 64 pixel counts (0..16) and the digit.
const DATA: &[u8] = include_bytes!("../data/digits.csv.gz");

/// Where errors say the data came from.
const SOURCE: &str = "the embedded digits (snn-data/data/digits.csv.gz)";

/// The embedded digits: 1x8x8 `u8` images, pixels scaled from 0..16 to 0..255, so that a
/// rate code fires with probability `count / 16`.
#[derive(Debug, Clone, Copy)]
pub struct Digits;

impl Digits {
    pub const CLASSES: usize = 10;
    /// Images in the whole set.
    pub const LEN: usize = 1797;
    /// The fixed split: the first 1,437 images (80%) train, the remaining 360 test.
    pub const TRAIN_LEN: usize = 1437;

    /// One split of the embedded set.
    pub fn load(split: Split) -> Result<ImageDataset, DataError> {
        let (images, labels) = parse(DATA)?;
        let range = match split {
            Split::Train => 0..Self::TRAIN_LEN,
            Split::Test => Self::TRAIN_LEN..Self::LEN,
        };
        let pixels = images[range.start * 64..range.end * 64].to_vec();
        ImageDataset::new(pixels, [1, 8, 8], labels[range].to_vec(), Self::CLASSES)
            .ok_or_else(|| DataError::Request(format!("{SOURCE}: the split does not fit")))
    }
}

/// The images (scaled to 0..255) and labels of the gzip'd CSV.
fn parse(gz: &[u8]) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    let path = Path::new(SOURCE);
    let bad = |line: usize, reason: String| DataError::BadRow {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut text = String::new();
    GzDecoder::new(gz)
        .read_to_string(&mut text)
        .map_err(|e| bad(0, format!("cannot decompress: {e}")))?;
    let (mut images, mut labels) = (Vec::with_capacity(Digits::LEN * 64), Vec::new());
    for (i, row) in text.lines().enumerate() {
        let values = row
            .split(',')
            .map(|v| v.trim().parse::<u8>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(i + 1, format!("not a list of small integers: {e}")))?;
        let (label, pixels) = match values.split_last() {
            Some((&label, pixels)) if pixels.len() == 64 => (label, pixels),
            _ => return Err(bad(i + 1, format!("{} values, not 65", values.len()))),
        };
        if usize::from(label) >= Digits::CLASSES || pixels.iter().any(|&p| p > 16) {
            return Err(bad(
                i + 1,
                "a digit 0-9 after 64 counts in 0..16 expected".into(),
            ));
        }
        // Round to nearest: 16 -> 255, 8 -> 128.
        images.extend(
            pixels
                .iter()
                .map(|&p| ((u16::from(p) * 255 + 8) / 16) as u8),
        );
        labels.push(label);
    }
    if labels.len() != Digits::LEN {
        return Err(bad(
            0,
            format!("{} images, not {}", labels.len(), Digits::LEN),
        ));
    }
    Ok((images, labels))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_embedded_set_has_its_published_shape_and_class_balance() {
        let (train, test) = (
            Digits::load(Split::Train).unwrap(),
            Digits::load(Split::Test).unwrap(),
        );
        assert_eq!((train.len(), test.len()), (1437, 360));
        assert_eq!(train.shape(), [1, 8, 8]);
        // The UCI set holds 174 to 183 images of each digit.
        let mut counts = [0usize; 10];
        for &l in train.labels().iter().chain(test.labels()) {
            counts[usize::from(l)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (174..=183).contains(&c)),
            "{counts:?}"
        );
        // The first image is a 0 whose top row is 0,0,5,13,9,1,0,0.
        assert_eq!(train.labels()[0], 0);
        assert_eq!(
            &train.image(0).unwrap()[..8],
            &[0, 0, 80, 207, 143, 16, 0, 0]
        );
    }

    #[test]
    fn damaged_data_is_an_error_naming_the_line() {
        let gz = |text: &str| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, text.as_bytes()).unwrap();
            e.finish().unwrap()
        };
        let row = format!("{}1", "0,".repeat(64));
        let err = parse(&gz(&format!("{row}\n{}", "1,2,3")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("3 values"), "{err}");
        let err = parse(&gz(&format!("{}17,1", "0,".repeat(63))))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("0..16"), "{err}");
        assert!(
            parse(b"not gzip")
                .unwrap_err()
                .to_string()
                .contains("decompress")
        );
        assert!(
            parse(&gz(&row))
                .unwrap_err()
                .to_string()
                .contains("1 images, not 1797")
        );
    }
}
