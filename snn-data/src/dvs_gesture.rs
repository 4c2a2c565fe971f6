//! DVS128 Gesture: IBM's recordings of 29 subjects performing 11 hand and arm gestures
//! under several lightings, as extracted from `DvsGesture.tar.gz`.
//!
//! Each recording `userXX_<lighting>.aedat` (AEDAT 3.1, 128x128 DVS) holds several
//! gestures; its `userXX_<lighting>_labels.csv` gives each gesture's class (1 to 11) and
//! its start and end in microseconds on the recording's clock. A sample is the events of
//! one labelled span, `start <= t < end`, as SpikingJelly and Tonic cut them. The standard
//! split lists the recordings in `trials_to_train.txt` (users 1 to 23) and
//! `trials_to_test.txt` (users 24 to 29).
//!
//! AEDAT 3.1 is a text header of `#` lines ending with `#!END-HEADER` (the older
//! `#End Of ASCII Header` is accepted too), then packets: a 28-byte little-endian header
//! (`eventType u16, eventSource u16, eventSize u32, eventTSOffset u32,
//! eventTSOverflow u32, eventCapacity u32, eventNumber u32, eventValid u32`) followed by
//! `eventCapacity * eventSize` bytes, of which the first `eventNumber` events are used.
//! Polarity packets (type 1) hold 8-byte events: a `u32` with bit 0 valid, bit 1
//! polarity, bits 2..16 y and bits 17..31 x, then a `u32` timestamp extended by
//! `eventTSOverflow << 31`. Other packet types are skipped, and so are events whose valid
//! bit is clear.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{DataError, Split, le_u32, read_file};
use crate::events::{Event, EventError, EventStream};

const FORMAT: &str = "DVS128 Gesture AEDAT 3.1";
const IBM_PAGE: &str = "https://research.ibm.com/interactive/dvsgesture/";
const IBM_BOX: &str =
    "https://ibm.ent.box.com/s/3hiq58ww1pbbjrinh367ykfdf60xsfm8/folder/50167556794";
const CSV_HEADER: &str = "class,startTime_usec,endTime_usec";
const PACKET_HEADER: usize = 28;

/// The extracted DVS128 Gesture dataset. It cannot be downloaded automatically, so
/// [`DvsGesture::open`] checks its layout up front and says how to get it when absent.
#[derive(Debug, Clone)]
pub struct DvsGesture {
    root: PathBuf,
}

/// One recording of the split: a subject under one lighting, several gestures long.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Recording {
    /// The file stem, e.g. `user01_fluorescent`.
    pub name: String,
    /// The AEDAT 3.1 events.
    pub aedat: PathBuf,
    /// The label CSV cutting it into gestures.
    pub labels: PathBuf,
}

/// One labelled span of a recording, as listed in its CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GestureSpan {
    /// Zero-based class, `0..11`: the CSV's class minus one, as SpikingJelly and Tonic
    /// number them (0 hand clap, ..., 10 other gestures).
    pub label: u8,
    /// First microsecond of the gesture (inclusive).
    pub start: u64,
    /// End of the gesture (exclusive).
    pub end: u64,
}

/// One gesture: its span and the events inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GestureSample {
    /// Zero-based class, `0..11`, and the span's bounds.
    pub span: GestureSpan,
    /// The events with `span.start <= t < span.end`, timestamps as recorded (not shifted
    /// to zero).
    pub events: EventStream,
}

impl DvsGesture {
    /// Sensor width in pixels.
    pub const WIDTH: u16 = 128;
    /// Sensor height in pixels.
    pub const HEIGHT: u16 = 128;
    /// Number of gesture classes.
    pub const CLASSES: usize = 11;
    /// The archive's name as IBM distributes it.
    pub const ARCHIVE: &'static str = "DvsGesture.tar.gz";
    /// The folder the archive extracts to.
    pub const FOLDER: &'static str = "DvsGesture";

    /// Finds the dataset in `dir`, which is either the extracted `DvsGesture` folder or
    /// the folder the archive was extracted into. When it is not there, the error says
    /// where to download the archive and how to lay it out in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, DataError> {
        let dir = dir.as_ref();
        for root in [dir.to_path_buf(), dir.join(Self::FOLDER)] {
            if root.join(list_name(Split::Train)).is_file() {
                return Ok(Self { root });
            }
        }
        Err(DataError::missing(
            dir,
            "the DVS128 Gesture dataset",
            not_found_help(dir),
        ))
    }

    /// The folder holding the recordings and the split lists.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The recordings of a split, in the order its list gives them; each listed recording
    /// and its label CSV must exist.
    pub fn recordings(&self, split: Split) -> Result<Vec<Recording>, DataError> {
        let list = self.root.join(list_name(split));
        let text = read_file(
            &list,
            &format!("the DVS128 Gesture {split} list"),
            &format!("restore it from {}", Self::ARCHIVE),
        )?;
        let text = String::from_utf8_lossy(&text);
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let name = line.trim();
            if name.is_empty() {
                continue;
            }
            let stem = name
                .strip_suffix(".aedat")
                .filter(|s| !s.is_empty() && !s.contains(['/', '\\']))
                .ok_or_else(|| {
                    DataError::bad_row(
                        &list,
                        i + 1,
                        format!(
                            "`{name}` is not a recording's file name (expected one name per \
                             line, like `user01_fluorescent.aedat`)"
                        ),
                    )
                })?;
            let aedat = self.root.join(name);
            let labels = self.root.join(format!("{stem}_labels.csv"));
            for (path, what) in [(&aedat, "recording"), (&labels, "label file")] {
                if !path.is_file() {
                    return Err(DataError::missing(
                        path,
                        format!("the DVS128 Gesture {what} listed in {}", list.display()),
                        format!(
                            "extract {} again into {}",
                            Self::ARCHIVE,
                            self.root.parent().unwrap_or(&self.root).display()
                        ),
                    ));
                }
            }
            out.push(Recording {
                name: stem.to_string(),
                aedat,
                labels,
            });
        }
        if out.is_empty() {
            return Err(DataError::bad_row(&list, 1, "the list names no recording"));
        }
        Ok(out)
    }

    /// Reads a recording and cuts it into its labelled gestures, in CSV order.
    pub fn samples(&self, recording: &Recording) -> Result<Vec<GestureSample>, DataError> {
        let spans = read_labels(&recording.labels)?;
        let events = read_aedat(&recording.aedat)?;
        Ok(spans
            .into_iter()
            .map(|span| GestureSample {
                span,
                events: events.between(span.start, span.end),
            })
            .collect())
    }
}

/// Where one sample of a [`GestureSplit`] lies: its recording, its row in the label CSV
/// and its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GestureIndex {
    /// Position of the recording in [`GestureSplit::recordings`].
    pub recording: usize,
    /// Position of the span among the recording's CSV rows, from 0.
    pub row: usize,
    /// The class and the span.
    pub span: GestureSpan,
}

/// One split of DVS128 Gesture as a flat list of samples (every labelled span of every
/// listed recording, recording after recording, in CSV order), so that a loader can
/// shuffle them. Only the label CSVs are read up front; reading a sample reads its
/// recording.
#[derive(Debug, Clone)]
pub struct GestureSplit {
    split: Split,
    recordings: Vec<Recording>,
    samples: Vec<GestureIndex>,
    /// `starts[r]..starts[r + 1]` are recording `r`'s samples.
    starts: Vec<usize>,
}

impl DvsGesture {
    /// The samples of `split`: the recordings of its list and the rows of their label
    /// CSVs (each CSV must parse; see [`read_labels`]).
    pub fn split(&self, split: Split) -> Result<GestureSplit, DataError> {
        let recordings = self.recordings(split)?;
        let mut samples = Vec::new();
        let mut starts = vec![0];
        for (r, recording) in recordings.iter().enumerate() {
            let spans = read_labels(&recording.labels)?;
            samples.extend(
                spans
                    .into_iter()
                    .enumerate()
                    .map(|(row, span)| GestureIndex {
                        recording: r,
                        row,
                        span,
                    }),
            );
            starts.push(samples.len());
        }
        Ok(GestureSplit {
            split,
            recordings,
            samples,
            starts,
        })
    }
}

impl GestureSplit {
    /// Which split this is.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The recordings, in the order of the split's list.
    pub fn recordings(&self) -> &[Recording] {
        &self.recordings
    }

    /// Every sample, recording after recording.
    pub fn samples(&self) -> &[GestureIndex] {
        &self.samples
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no sample (label CSVs with no rows).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The positions of recording `r`'s samples (empty past the end).
    pub fn recording_samples(&self, r: usize) -> Range<usize> {
        match (self.starts.get(r), self.starts.get(r + 1)) {
            (Some(&a), Some(&b)) => a..b,
            _ => 0..0,
        }
    }

    /// Sample `i`: the events of its span and its class. Reads the whole recording; use
    /// [`GestureSplit::read_recording`] to cut every sample of a recording in one read.
    pub fn read(&self, i: usize) -> Result<(EventStream, u8), DataError> {
        let index = self.samples.get(i).ok_or_else(|| {
            DataError::Request(format!(
                "DVS128 Gesture {} sample {i} does not exist: the split holds {} samples",
                self.split,
                self.samples.len()
            ))
        })?;
        let events = read_aedat(&self.recordings[index.recording].aedat)?;
        Ok((
            events.between(index.span.start, index.span.end),
            index.span.label,
        ))
    }

    /// Every sample of recording `r`, in order (those of
    /// [`GestureSplit::recording_samples`]), from one read of its file.
    pub fn read_recording(&self, r: usize) -> Result<Vec<(EventStream, u8)>, DataError> {
        let recording = self.recordings.get(r).ok_or_else(|| {
            DataError::Request(format!(
                "DVS128 Gesture {} recording {r} does not exist: the split lists {}",
                self.split,
                self.recordings.len()
            ))
        })?;
        let events = read_aedat(&recording.aedat)?;
        Ok(self.samples[self.recording_samples(r)]
            .iter()
            .map(|s| (events.between(s.span.start, s.span.end), s.span.label))
            .collect())
    }
}

fn list_name(split: Split) -> &'static str {
    match split {
        Split::Train => "trials_to_train.txt",
        Split::Test => "trials_to_test.txt",
    }
}

fn not_found_help(dir: &Path) -> String {
    let archive = dir.join(DvsGesture::ARCHIVE);
    let extract = if archive.is_file() {
        format!(
            "{} is there but not extracted: run `tar xzf {} -C {}`",
            archive.display(),
            archive.display(),
            dir.display()
        )
    } else {
        format!(
            "it cannot be downloaded automatically. Download `{}` from IBM's DVS128 Gesture \
             dataset page, {IBM_PAGE} (files hosted at {IBM_BOX}), and extract it there with \
             `tar xzf {} -C {}`",
            DvsGesture::ARCHIVE,
            DvsGesture::ARCHIVE,
            dir.display()
        )
    };
    let d = dir.join(DvsGesture::FOLDER);
    format!(
        "{extract}. Expected layout:\n  {0}/trials_to_train.txt\n  {0}/trials_to_test.txt\n  \
         {0}/user01_fluorescent.aedat\n  {0}/user01_fluorescent_labels.csv\n  ... \
         (the 122 recordings of users 01 to 29, each with its _labels.csv)",
        d.display()
    )
}

/// Reads a label CSV: header `class,startTime_usec,endTime_usec`, then one row per
/// gesture with a class 1 to 11 and `start < end`.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<GestureSpan>, DataError> {
    let path = path.as_ref();
    let bytes = read_file(path, "the DVS128 Gesture label file", "check the path")?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    match lines.next() {
        Some((_, header)) if header.trim_start_matches('\u{feff}') == CSV_HEADER => {}
        Some((line, header)) => {
            return Err(DataError::bad_row(
                path,
                line,
                format!("the header is `{header}`, expected `{CSV_HEADER}`"),
            ));
        }
        None => return Err(DataError::truncated(path, "the label file is empty")),
    }
    let mut spans = Vec::new();
    for (line, row) in lines {
        spans.push(parse_row(row).map_err(|reason| {
            DataError::bad_row(
                path,
                line,
                format!("`{row}`: {reason} (expected `class,start,end`, class 1-11, start < end)"),
            )
        })?);
    }
    Ok(spans)
}

fn parse_row(row: &str) -> Result<GestureSpan, String> {
    let fields: Vec<&str> = row.split(',').map(str::trim).collect();
    let [class, start, end] = fields[..] else {
        return Err(format!("{} fields instead of 3", fields.len()));
    };
    let class: u8 = class
        .parse()
        .map_err(|_| format!("class `{class}` is not a number"))?;
    if !(1..=DvsGesture::CLASSES as u8).contains(&class) {
        return Err(format!("class {class} is not in 1-11"));
    }
    let start: u64 = start
        .parse()
        .map_err(|_| format!("start `{start}` is not a whole number of microseconds"))?;
    let end: u64 = end
        .parse()
        .map_err(|_| format!("end `{end}` is not a whole number of microseconds"))?;
    if start >= end {
        return Err(format!("the span {start}..{end} is empty"));
    }
    Ok(GestureSpan {
        label: class - 1,
        start,
        end,
    })
}

/// Reads the polarity events of an AEDAT 3.1 recording of a DVS128 (128x128) in time
/// order. An event off the sensor is an error naming the file and the event's index among
/// the file's polarity events.
pub fn read_aedat(path: impl AsRef<Path>) -> Result<EventStream, DataError> {
    let path = path.as_ref();
    let bytes = read_file(path, "the DVS128 Gesture recording", "check the path")?;
    let mut pos = skip_header(path, &bytes)?;
    let mut events = Vec::new();
    let mut index = 0usize;
    while pos < bytes.len() {
        if bytes.len() - pos < PACKET_HEADER {
            return Err(DataError::truncated(
                path,
                format!(
                    "the packet header at byte {pos} needs {PACKET_HEADER} bytes but the file \
                     ends after {}",
                    bytes.len() - pos
                ),
            ));
        }
        let h = &bytes[pos..pos + PACKET_HEADER];
        let kind = u16::from_le_bytes([h[0], h[1]]);
        let size = le_u32(h, 4) as usize;
        let ts_offset = le_u32(h, 8);
        let ts_overflow = u64::from(le_u32(h, 12));
        let capacity = le_u32(h, 16) as usize;
        let number = le_u32(h, 20) as usize;
        let corrupt =
            |reason: String| DataError::corrupt(path, format!("the packet at byte {pos} {reason}"));
        if size == 0 {
            return Err(corrupt("declares events of 0 bytes".into()));
        }
        if number > capacity {
            return Err(corrupt(format!(
                "holds {number} events but has room for {capacity}"
            )));
        }
        let data_start = pos + PACKET_HEADER;
        let data_len = capacity
            .checked_mul(size)
            .ok_or_else(|| corrupt(format!("declares {capacity} events of {size} bytes")))?;
        let available = bytes.len() - data_start;
        if available < data_len {
            return Err(DataError::truncated(
                path,
                format!(
                    "the packet at byte {pos} declares {capacity} events of {size} bytes \
                     ({data_len} bytes) but only {available} follow"
                ),
            ));
        }
        if kind == 1 {
            if size < 8 || ts_offset != 4 {
                return Err(corrupt(format!(
                    "is a polarity packet with {size}-byte events and the timestamp at \
                     offset {ts_offset} (expected 8 and 4)"
                )));
            }
            let data = &bytes[data_start..data_start + number * size];
            for e in data.chunks_exact(size) {
                let word = le_u32(e, 0);
                let t = (ts_overflow << 31) | u64::from(le_u32(e, 4));
                let i = index;
                index += 1;
                if word & 1 == 0 {
                    continue;
                }
                let x = ((word >> 17) & 0x7fff) as u16;
                let y = ((word >> 2) & 0x7fff) as u16;
                if x >= DvsGesture::WIDTH || y >= DvsGesture::HEIGHT {
                    let source = EventError::OutOfRange {
                        index: i,
                        x,
                        y,
                        width: DvsGesture::WIDTH,
                        height: DvsGesture::HEIGHT,
                    };
                    return Err(DataError::events(path, FORMAT, source));
                }
                events.push(Event {
                    t,
                    x,
                    y,
                    p: word & 2 != 0,
                });
            }
        }
        pos = data_start + data_len;
    }
    // Packets are written in time order; sorting (a no-op then) guards against a recorder
    // that interleaved packets, which would otherwise make samples miss events.
    EventStream::new_sorted(DvsGesture::WIDTH, DvsGesture::HEIGHT, events)
        .map_err(|source| DataError::events(path, FORMAT, source))
}

/// Returns the offset of the first packet after the `#` header lines, checking that the
/// file declares AEDAT 3.x.
fn skip_header(path: &Path, bytes: &[u8]) -> Result<usize, DataError> {
    let mut pos = 0;
    let mut first = true;
    while bytes.get(pos) == Some(&b'#') {
        let Some(len) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            return Err(DataError::truncated(
                path,
                "the text header never ends (no `#!END-HEADER` line)",
            ));
        };
        let line = String::from_utf8_lossy(&bytes[pos..pos + len]);
        let line = line.trim_end();
        pos += len + 1;
        if first
            && let Some(version) = line.strip_prefix("#!AER-DAT")
            && !version.starts_with("3.")
        {
            return Err(DataError::BadMagic {
                path: path.to_path_buf(),
                expected: "`#!AER-DAT3.1` (AEDAT 3.1)".into(),
                found: format!("`{line}`"),
            });
        }
        first = false;
        if line == "#!END-HEADER" || line == "#End Of ASCII Header" {
            break;
        }
    }
    if first {
        let found: String = bytes
            .iter()
            .take(12)
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
            .collect();
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: "a `#` text header such as `#!AER-DAT3.1` (AEDAT 3.1)".into(),
            found: if bytes.is_empty() {
                "nothing (the file is empty)".into()
            } else {
                format!("`{found}`")
            },
        });
    }
    Ok(pos)
}
