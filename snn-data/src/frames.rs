//! Event streams integrated into frames, with SpikingJelly's semantics, and a disk cache of
//! the integrated frames.
//!
//! # Frames
//!
//! [`integrate`] turns one sample's events into `T` frames of shape `[2, H, W]`: channel 0
//! counts the events of polarity 0 (OFF, `p == false`), channel 1 those of polarity 1 (ON),
//! and each cell holds the number of events at that `(polarity, y, x)` as an `f32`, exactly
//! as SpikingJelly's `integrate_events_by_fixed_frames_number` does. The output is
//! `[T, 2, H, W]`, row-major (x fastest). Which events go to which frame is decided by
//! [`segment_bounds`]; every event lands in exactly one frame, so the frames sum to the
//! number of events.
//!
//! With `N` events and `T` frames:
//!
//! - [`SplitBy::Number`]: `di = N / T` (integer division); frame `i` takes the events
//!   `[i * di, (i + 1) * di)`, and the last frame takes everything from `(T - 1) * di` to
//!   `N`, remainder included. With fewer events than frames (`di == 0`) the first `T - 1`
//!   frames are empty and the last holds every event, as in SpikingJelly.
//! - [`SplitBy::Time`]: `dt = (t[N-1] - t[0]) / T` (integer division, microseconds); frame
//!   `i` takes the events with `t0 + i*dt <= t < t0 + (i+1)*dt`, and the last frame also
//!   takes everything after its window (the remainder of the division). Events must be in
//!   non-decreasing time order, as sensors record them; an unsorted stream is an error
//!   (SpikingJelly's index ranges are meaningless for one).
//!
//! **Empty frames.** SpikingJelly's time split raises an `IndexError` when a window holds
//! no event (a gap in the recording, or `dt == 0` because the stream spans fewer
//! microseconds than there are frames, e.g. all timestamps equal). Here such a frame is
//! all zeros and the bounds stay contiguous: with `dt == 0` the first `T - 1` frames are
//! empty and the last holds every event, like the number split with `N < T`. Wherever
//! SpikingJelly returns frames, these are identical to its.
//!
//! **Downsampling** by an integer factor `f` divides the coordinates: an event at `(x, y)`
//! counts in cell `(x / f, y / f)` of a `ceil(W / f) x ceil(H / f)` frame. When `f`
//! divides the sensor size (DVS128 Gesture's 128 by 2 or 4, N-MNIST's 34 by 2) this is
//! exactly sum pooling of the full-resolution counts over `f x f` blocks; otherwise the
//! partial border blocks are kept rather than dropped, so no event is lost. Counts are
//! summed, not averaged, so a downsampled frame has the same scale (events per cell) as
//! SpikingJelly's frames integrated at a lower resolution. It costs one pass over the
//! events and no full-resolution buffer.
//!
//! Counts are exact in `f32` up to 2^24 events per cell.
//!
//! # Cache
//!
//! [`FrameCache`] keeps integrated frames on disk, keyed by [`CacheKey`] (dataset, sample,
//! `T`, split, downsampling factor), so that the second epoch and the second run read them
//! instead of integrating again. See [`FrameCache`] for the file format and guarantees.

use std::fmt;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

use crate::Event;

/// How a stream is cut into frames (see the module docs for the exact boundaries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SplitBy {
    /// Equal numbers of events per frame; the last frame takes the remainder.
    Number,
    /// Equal time spans per frame; the last frame takes the remainder.
    Time,
}

impl SplitBy {
    /// `"number"` or `"time"`, SpikingJelly's `split_by` names.
    pub fn name(self) -> &'static str {
        match self {
            SplitBy::Number => "number",
            SplitBy::Time => "time",
        }
    }
}

impl fmt::Display for SplitBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SplitBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "number" => Ok(SplitBy::Number),
            "time" => Ok(SplitBy::Time),
            _ => Err(format!(
                "unknown frame split {s:?}: expected \"number\" or \"time\""
            )),
        }
    }
}

/// What frames to make of a stream: how many, how split, how downsampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameSpec {
    /// `T`, the number of frames per sample.
    pub frames: usize,
    pub split: SplitBy,
    /// Integer spatial downsampling factor; 1 keeps the sensor's resolution.
    pub downsample: usize,
}

impl FrameSpec {
    /// `frames` frames split by `split`, at full resolution.
    pub fn new(frames: usize, split: SplitBy) -> Self {
        Self {
            frames,
            split,
            downsample: 1,
        }
    }

    /// The same, downsampled by `factor`.
    pub fn downsample(self, factor: usize) -> Self {
        Self {
            downsample: factor,
            ..self
        }
    }

    /// The frame size `(width, height)` for a `width x height` sensor:
    /// `ceil(width / factor) x ceil(height / factor)`.
    pub fn output_size(&self, width: usize, height: usize) -> (usize, usize) {
        let f = self.downsample.max(1);
        (width.div_ceil(f), height.div_ceil(f))
    }
}

/// Integrated frames, `[T, 2, H, W]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Frames {
    frames: usize,
    height: usize,
    width: usize,
    data: Vec<f32>,
}

impl Frames {
    /// Wraps `data` of shape `[frames, 2, height, width]`.
    pub fn from_vec(
        frames: usize,
        height: usize,
        width: usize,
        data: Vec<f32>,
    ) -> Result<Self, FrameError> {
        let len = frame_len(frames, height, width)?;
        if data.len() != len {
            return Err(FrameError::Shape(format!(
                "[{frames}, 2, {height}, {width}] frames need {len} values, got {}",
                data.len()
            )));
        }
        Ok(Self {
            frames,
            height,
            width,
            data,
        })
    }

    /// `[T, 2, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.frames, 2, self.height, self.width]
    }

    /// `T`.
    pub fn frames(&self) -> usize {
        self.frames
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// All values, `[T, 2, H, W]` row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Frame `t`, `[2, H, W]`.
    pub fn frame(&self, t: usize) -> &[f32] {
        let n = 2 * self.height * self.width;
        &self.data[t * n..(t + 1) * n]
    }

    /// The count at frame `t`, channel `c`, row `y`, column `x`. Panics when out of range.
    pub fn get(&self, t: usize, c: usize, y: usize, x: usize) -> f32 {
        assert!(
            t < self.frames && c < 2 && y < self.height && x < self.width,
            "index [{t}, {c}, {y}, {x}] out of frames of shape {:?}",
            self.shape()
        );
        self.data[((t * 2 + c) * self.height + y) * self.width + x]
    }
}

/// What went wrong integrating or caching frames.
#[derive(Debug)]
pub enum FrameError {
    /// `T == 0`.
    ZeroFrames,
    /// A downsampling factor of 0.
    ZeroDownsample,
    /// A sensor of zero width or height.
    ZeroSize { width: usize, height: usize },
    /// A stream with no events.
    EmptyStream,
    /// An event outside the sensor.
    OutOfRange {
        index: usize,
        x: u16,
        y: u16,
        width: usize,
        height: usize,
    },
    /// A timestamp earlier than its predecessor's (the time split needs sorted events).
    Unsorted { index: usize, previous: u64, t: u64 },
    /// Shapes that do not fit: data length, sizes too large, or computed frames that do
    /// not match their cache key.
    Shape(String),
    /// Reading or writing the cache failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ZeroFrames => write!(f, "the number of frames T must be at least 1"),
            FrameError::ZeroDownsample => write!(f, "the downsampling factor must be at least 1"),
            FrameError::ZeroSize { width, height } => {
                write!(f, "the sensor size {width}x{height} is empty")
            }
            FrameError::EmptyStream => write!(f, "the event stream has no events"),
            FrameError::OutOfRange {
                index,
                x,
                y,
                width,
                height,
            } => write!(
                f,
                "event {index} at (x {x}, y {y}) is outside the {width}x{height} sensor"
            ),
            FrameError::Unsorted { index, previous, t } => write!(
                f,
                "event {index} at t = {t} us comes after one at t = {previous} us: \
                 splitting by time needs events in time order"
            ),
            FrameError::Shape(msg) => f.write_str(msg),
            FrameError::Io { path, source } => {
                write!(f, "frame cache file {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `frames * 2 * height * width`, or an error when it overflows.
fn frame_len(frames: usize, height: usize, width: usize) -> Result<usize, FrameError> {
    frames
        .checked_mul(2)
        .and_then(|n| n.checked_mul(height))
        .and_then(|n| n.checked_mul(width))
        .ok_or_else(|| {
            FrameError::Shape(format!(
                "[{frames}, 2, {height}, {width}] frames are too large"
            ))
        })
}

/// The index range of the events in each of the `frames` frames, SpikingJelly's
/// `cal_fixed_frames_number_segment_index` (`j_l[i]..j_r[i]`), with empty windows giving
/// empty ranges instead of an error (see the module docs). The ranges are contiguous and
/// cover `0..N`.
pub fn segment_bounds(
    events: &[Event],
    split: SplitBy,
    frames: usize,
) -> Result<Vec<Range<usize>>, FrameError> {
    if frames == 0 {
        return Err(FrameError::ZeroFrames);
    }
    let n = events.len();
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Err(FrameError::EmptyStream);
    };
    let mut starts = Vec::with_capacity(frames);
    match split {
        SplitBy::Number => {
            let di = n / frames;
            starts.extend((0..frames).map(|i| i * di));
        }
        SplitBy::Time => {
            let mut previous = first.t;
            for (index, e) in events.iter().enumerate().skip(1) {
                let t = e.t;
                if t < previous {
                    return Err(FrameError::Unsorted { index, previous, t });
                }
                previous = t;
            }
            let t0 = first.t;
            // `frames` fits in u64 on every supported target.
            let dt = (last.t - t0) / frames as u64;
            // For sorted events, SpikingJelly's j_l[i] (the first index in window i) is
            // the first index with t >= t0 + i*dt, and j_r[i] is j_l[i + 1].
            starts.extend((0..frames).map(|i| {
                let t_l = t0 + dt * i as u64;
                events.partition_point(|e| e.t < t_l)
            }));
        }
    }
    let mut bounds = Vec::with_capacity(frames);
    for i in 0..frames {
        let end = if i + 1 == frames { n } else { starts[i + 1] };
        bounds.push(starts[i]..end);
    }
    Ok(bounds)
}

/// Integrates a `width x height` sensor's events into frames as `spec` says (see the
/// module docs): `[T, 2, ceil(height / f), ceil(width / f)]`.
///
/// Errors: `T == 0`, a downsampling factor of 0, an empty sensor, an empty stream, an
/// event outside the sensor, and (for [`SplitBy::Time`]) events out of time order.
pub fn integrate(
    events: &[Event],
    width: usize,
    height: usize,
    spec: FrameSpec,
) -> Result<Frames, FrameError> {
    if spec.frames == 0 {
        return Err(FrameError::ZeroFrames);
    }
    if spec.downsample == 0 {
        return Err(FrameError::ZeroDownsample);
    }
    if width == 0 || height == 0 {
        return Err(FrameError::ZeroSize { width, height });
    }
    let bounds = segment_bounds(events, spec.split, spec.frames)?;
    let (out_w, out_h) = spec.output_size(width, height);
    let mut data = vec![0.0f32; frame_len(spec.frames, out_h, out_w)?];
    let f = spec.downsample;
    let (sensor, out) = ((width, height), (out_w, out_h));
    if f == 1 {
        accumulate(events, &bounds, sensor, out, &mut data, |c| c)?;
    } else {
        accumulate(events, &bounds, sensor, out, &mut data, |c| c / f)?;
    }
    Ok(Frames {
        frames: spec.frames,
        height: out_h,
        width: out_w,
        data,
    })
}

/// Counts each frame's events into `data`, mapping sensor coordinates by `cell` (the
/// division by the downsampling factor is left out at factor 1, its own instantiation).
#[inline(always)]
fn accumulate(
    events: &[Event],
    bounds: &[Range<usize>],
    (width, height): (usize, usize),
    (out_w, out_h): (usize, usize),
    data: &mut [f32],
    cell: impl Fn(usize) -> usize,
) -> Result<(), FrameError> {
    let plane = out_w * out_h;
    for (i, range) in bounds.iter().enumerate() {
        let frame = &mut data[i * 2 * plane..(i + 1) * 2 * plane];
        for (k, e) in events[range.clone()].iter().enumerate() {
            let (x, y) = (usize::from(e.x), usize::from(e.y));
            if x >= width || y >= height {
                return Err(FrameError::OutOfRange {
                    index: range.start + k,
                    x: e.x,
                    y: e.y,
                    width,
                    height,
                });
            }
            frame[usize::from(e.p) * plane + cell(y) * out_w + cell(x)] += 1.0;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------

/// Identifies one sample's frames in a [`FrameCache`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The dataset, e.g. `"nmnist"` (also the cache's first directory level).
    pub dataset: String,
    /// The sample within the dataset, e.g. its file's relative path or its index.
    pub sample: String,
    /// `T`, split and downsampling factor.
    pub spec: FrameSpec,
}

impl CacheKey {
    pub fn new(dataset: impl Into<String>, sample: impl Into<String>, spec: FrameSpec) -> Self {
        Self {
            dataset: dataset.into(),
            sample: sample.into(),
            spec,
        }
    }

    /// An unambiguous text form of the key, stored in the file and checked on reading.
    fn canonical(&self) -> String {
        format!(
            "{}:{}|{}:{}|T={}|split={}|ds={}",
            self.dataset.len(),
            self.dataset,
            self.sample.len(),
            self.sample,
            self.spec.frames,
            self.spec.split,
            self.spec.downsample
        )
    }
}

/// What a [`FrameCache`] has done since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCacheStats {
    /// Frames read from a valid file.
    pub hits: u64,
    /// Frames computed (no file, or a discarded one).
    pub misses: u64,
    /// Files found corrupt, truncated or not matching their key, deleted and recomputed
    /// (each also counts as a miss).
    pub discarded: u64,
}

/// Integrated frames on disk, one file per [`CacheKey`].
///
/// Layout: `dir/<dataset>/<split>-t<T>-d<factor>/<sample>-<hash>.frames`, where names are
/// reduced to `[A-Za-z0-9._-]` and `<hash>` (of the whole key) keeps distinct samples
/// apart. The file (little-endian) is a 40-byte header, the key, then the values:
///
/// | bytes | field                                                         |
/// |-------|---------------------------------------------------------------|
/// | 8     | magic `SNNFRAME`                                              |
/// | 4     | format version (2)                                            |
/// | 4     | key length in bytes                                           |
/// | 16    | shape `T, 2, H, W` as four `u32`                               |
/// | 8     | XXH3-64 of the 32 bytes above, the key and the values         |
/// | ...   | the key's canonical text, then `T*2*H*W` `f32`                 |
///
/// A file whose length, magic, version, key or checksum is wrong is deleted and its
/// frames recomputed. The checksum catches corruption and, with the length check,
/// truncation; it is not cryptographic. (Version 1 hashed names and contents by hand: its
/// files have other names and are never read.) Files are written to a unique temporary
/// name in the same directory and renamed into place, so readers (other threads or
/// processes) see either no file or a whole one; on a failed write the temporary file is
/// removed.
/// Files are not `fsync`ed: a file torn by a power cut fails its checksum and is
/// recomputed. A process killed mid-write can leave a `.*.tmp` file, which is never read.
///
/// `FrameCache` is `Sync`: prefetch threads may share one. Two threads missing the same
/// key both compute it and the last rename wins; both files are whole.
#[derive(Debug)]
pub struct FrameCache {
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
    discarded: AtomicU64,
}

const MAGIC: &[u8; 8] = b"SNNFRAME";
const VERSION: u32 = 2;
const HEADER: usize = 40;

/// The checksum of a file: XXH3-64 of its header before the checksum, its key and its
/// values.
fn file_checksum(prefix: &[u8], key: &[u8], payload: &[u8]) -> u64 {
    let mut h = Xxh3Default::new();
    for part in [prefix, key, payload] {
        h.update(part);
    }
    h.digest()
}

/// `name` reduced to `[A-Za-z0-9._-]`, at most 64 characters, never empty or dots only.
fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.chars().all(|c| c == '.') {
        s = format!("_{s}");
    }
    s
}

/// Distinguishes the temporary files of one process's concurrent writes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FrameCache {
    /// A cache in `dir`, created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, FrameError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| FrameError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `key`'s frames.
    pub fn path(&self, key: &CacheKey) -> PathBuf {
        let hash = xxh3_64(key.canonical().as_bytes());
        self.dir
            .join(sanitize(&key.dataset))
            .join(format!(
                "{}-t{}-d{}",
                key.spec.split, key.spec.frames, key.spec.downsample
            ))
            .join(format!("{}-{hash:016x}.frames", sanitize(&key.sample)))
    }

    /// The hits, misses and discarded files so far.
    pub fn stats(&self) -> FrameCacheStats {
        FrameCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
        }
    }

    /// Whether a file for `key` exists (it is validated only when read).
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.path(key).is_file()
    }

    /// `key`'s frames from disk, or else `compute`d and written (atomically) to disk.
    ///
    /// A corrupt file is deleted and recomputed. Errors: `compute`'s error (of any type
    /// that a [`FrameError`] converts into, so that computing may read files), frames whose
    /// `T` is not the key's, and I/O errors other than a missing file (reading) or any I/O
    /// error writing (nothing is left behind then).
    pub fn get_or_compute<F, E>(&self, key: &CacheKey, compute: F) -> Result<Frames, E>
    where
        F: FnOnce() -> Result<Frames, E>,
        E: From<FrameError>,
    {
        let path = self.path(key);
        let canonical = key.canonical();
        match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes, canonical.as_bytes()) {
                Some(frames) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(frames);
                }
                None => {
                    self.discarded.fetch_add(1, Ordering::Relaxed);
                    // A concurrent writer may have replaced it already; the rename below
                    // overwrites whatever is there.
                    let _ = std::fs::remove_file(&path);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(FrameError::Io { path, source }.into()),
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let frames = compute()?;
        if frames.frames != key.spec.frames {
            return Err(FrameError::Shape(format!(
                "frames computed for {} sample {:?} have T = {}, but the cache key says T = {}",
                key.dataset, key.sample, frames.frames, key.spec.frames
            ))
            .into());
        }
        let bytes = encode(&frames, canonical.as_bytes())?;
        write_atomic(&path, &bytes)?;
        Ok(frames)
    }
}

fn encode(frames: &Frames, key: &[u8]) -> Result<Vec<u8>, FrameError> {
    let too_large = || {
        FrameError::Shape(format!(
            "frames of shape {:?} are too large for the cache format",
            frames.shape()
        ))
    };
    let dims = [frames.frames, 2, frames.height, frames.width]
        .map(|d| u32::try_from(d).map_err(|_| too_large()));
    let key_len = u32::try_from(key.len()).map_err(|_| too_large())?;
    let mut bytes = Vec::with_capacity(HEADER + key.len() + 4 * frames.data.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&key_len.to_le_bytes());
    for d in dims {
        bytes.extend_from_slice(&d?.to_le_bytes());
    }
    bytes.extend_from_slice(&[0; 8]); // checksum, filled below
    bytes.extend_from_slice(key);
    for v in &frames.data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let payload_at = HEADER + key.len();
    let sum = file_checksum(&bytes[..32], key, &bytes[payload_at..]);
    bytes[32..HEADER].copy_from_slice(&sum.to_le_bytes());
    Ok(bytes)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The frames in a cache file, if it is whole and holds `key`.
fn decode(bytes: &[u8], key: &[u8]) -> Option<Frames> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC || read_u32(bytes, 8)? != VERSION {
        return None;
    }
    let key_len = read_u32(bytes, 12)? as usize;
    let dim = |at| read_u32(bytes, at).map(|d| d as usize);
    let (t, c, h, w) = (dim(16)?, dim(20)?, dim(24)?, dim(28)?);
    let len = frame_len(t, h, w).ok()?;
    let payload_at = HEADER.checked_add(key_len)?;
    if c != 2 || bytes.len() != payload_at.checked_add(len.checked_mul(4)?)? {
        return None;
    }
    if &bytes[HEADER..payload_at] != key {
        return None;
    }
    let stored = u64::from_le_bytes(bytes[32..HEADER].try_into().ok()?);
    if stored != file_checksum(&bytes[..32], key, &bytes[payload_at..]) {
        return None;
    }
    let data = bytes[payload_at..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Some(Frames {
        frames: t,
        height: h,
        width: w,
        data,
    })
}

/// Writes `bytes` to a unique temporary file next to `path`, then renames it to `path`;
/// on failure removes the temporary file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FrameError> {
    let io = |source| FrameError::Io {
        path: path.to_path_buf(),
        source,
    };
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = std::fs::File::create_new(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}
