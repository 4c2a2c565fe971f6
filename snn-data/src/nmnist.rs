//! N-MNIST in its original binary event files (`Train.zip` and `Test.zip` extracted).
//!
//! Each sample is one file `<split>/<digit>/<id>.bin` of 5-byte events recorded by an ATIS
//! sensor (34x34 pixels) moving in front of an MNIST digit:
//!
//! | byte | bits | meaning |
//! |---|---|---|
//! | 0 | 7..0 | x |
//! | 1 | 7..0 | y |
//! | 2 | 7 | polarity (1 = ON) |
//! | 2 | 6..0 | timestamp bits 22..16 |
//! | 3 | 7..0 | timestamp bits 15..8 |
//! | 4 | 7..0 | timestamp bits 7..0 |
//!
//! Timestamps are in microseconds. The ATIS format marks a wrap of the 23-bit timestamp
//! with a special event of `y = 240`; it adds `2^23` us to the events after it and is not
//! itself an event. (N-MNIST samples last about 300 ms, so real files have none.)

use std::path::{Path, PathBuf};

use super::{DataError, Split, read_file, sorted_entries};
use crate::events::{Event, EventError, EventStream};

const FORMAT: &str = "N-MNIST";

/// One sample file and its digit, which the folder name gives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NMnistSample {
    /// The digit, `0..10`.
    pub label: u8,
    /// The `.bin` file.
    pub path: PathBuf,
}

/// The samples of one N-MNIST split, listed once so that epochs can shuffle indices and
/// read files lazily (the decoded events are ~10x the size of a frame tensor).
#[derive(Debug, Clone)]
pub struct NMnist {
    root: PathBuf,
    split: Split,
    samples: Vec<NMnistSample>,
}

impl NMnist {
    /// Sensor width in pixels.
    pub const WIDTH: u16 = 34;
    /// Sensor height in pixels.
    pub const HEIGHT: u16 = 34;
    /// Number of classes (the digits).
    pub const CLASSES: usize = 10;
    /// Bytes per event.
    pub const EVENT_BYTES: usize = 5;

    /// The folder name of a split, as the published archives extract.
    pub fn split_folder(split: Split) -> &'static str {
        match split {
            Split::Train => "Train",
            Split::Test => "Test",
        }
    }

    /// Lists the samples of `dir/Train` or `dir/Test`: every `*.bin` file in the digit
    /// folders `0` to `9`, sorted by digit then file name, so that sample `i` is the same
    /// file on every machine. Every digit folder must exist and hold at least one sample.
    pub fn open(dir: impl AsRef<Path>, split: Split) -> Result<Self, DataError> {
        let dir = dir.as_ref();
        let folder = Self::split_folder(split);
        let root = dir.join(folder);
        let help = format!(
            "download `{folder}.zip` from the N-MNIST page \
             (https://www.garrickorchard.com/datasets/n-mnist) and extract it in {}, so that it holds {folder}/0/*.bin .. {folder}/9/*.bin",
            dir.display()
        );
        if !root.is_dir() {
            return Err(DataError::missing(
                &root,
                format!("the N-MNIST {split} folder `{folder}`"),
                help,
            ));
        }
        let mut samples = Vec::new();
        for digit in 0..Self::CLASSES as u8 {
            let digit_dir = root.join(digit.to_string());
            if !digit_dir.is_dir() {
                return Err(DataError::missing(
                    &digit_dir,
                    format!("the N-MNIST {split} folder of digit {digit}"),
                    help,
                ));
            }
            let before = samples.len();
            for path in sorted_entries(&digit_dir)? {
                if path.extension().is_some_and(|e| e == "bin") && path.is_file() {
                    samples.push(NMnistSample { label: digit, path });
                }
            }
            if samples.len() == before {
                return Err(DataError::missing(
                    &digit_dir,
                    format!("any .bin sample of digit {digit}"),
                    help,
                ));
            }
        }
        Ok(Self {
            root,
            split,
            samples,
        })
    }

    /// The split folder the samples were listed from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Which split this is.
    pub fn split(&self) -> Split {
        self.split
    }

    /// Every sample, sorted by digit then file name.
    pub fn samples(&self) -> &[NMnistSample] {
        &self.samples
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the split holds no sample (never true for a split [`NMnist::open`] accepted).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Reads sample `i`: its events and its label. Sample `i` past the end is reported as
    /// a missing file of the split folder.
    pub fn read(&self, i: usize) -> Result<(EventStream, u8), DataError> {
        let sample = self.samples.get(i).ok_or_else(|| {
            DataError::missing(
                &self.root,
                format!("sample {i}"),
                format!("the split holds {} samples", self.samples.len()),
            )
        })?;
        Ok((read_events(&sample.path)?, sample.label))
    }
}

/// Reads one N-MNIST `.bin` file into a 34x34 event stream.
///
/// Events must lie on the sensor and be in time order; the error names the file and the
/// event's index (counting 5-byte records from zero, overflow markers included).
pub fn read_events(path: impl AsRef<Path>) -> Result<EventStream, DataError> {
    let path = path.as_ref();
    let bytes = read_file(path, "the N-MNIST sample", "check the path")?;
    decode(path, &bytes)
}

fn decode(path: &Path, bytes: &[u8]) -> Result<EventStream, DataError> {
    let records = crate::records(path, bytes, NMnist::EVENT_BYTES, "event")?;
    let mut events = Vec::with_capacity(records.len());
    let mut overflow = 0u64;
    let mut previous = 0u64;
    for (index, r) in records.enumerate() {
        let (x, y) = (u16::from(r[0]), u16::from(r[1]));
        if y == 240 {
            overflow += 1 << 23;
            continue;
        }
        if x >= NMnist::WIDTH || y >= NMnist::HEIGHT {
            let source = EventError::OutOfRange {
                index,
                x,
                y,
                width: NMnist::WIDTH,
                height: NMnist::HEIGHT,
            };
            return Err(DataError::events(path, FORMAT, source));
        }
        let t = overflow + (u64::from(r[2] & 0x7f) << 16 | u64::from(r[3]) << 8 | u64::from(r[4]));
        if t < previous {
            let source = EventError::OutOfOrder { index, t, previous };
            return Err(DataError::events(path, FORMAT, source));
        }
        previous = t;
        events.push(Event {
            t,
            x,
            y,
            p: r[2] & 0x80 != 0,
        });
    }
    // Checked above with file indices; this cannot fail.
    EventStream::new(NMnist::WIDTH, NMnist::HEIGHT, events)
        .map_err(|source| DataError::events(path, FORMAT, source))
}
