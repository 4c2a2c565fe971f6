//! Event datasets as loader [`Dataset`]s: each sample's events integrated into `T` frames
//! (through the on-disk [`FrameCache`], so that only the first epoch of the first run
//! integrates) and batched time-major, `[T, B, 2, H, W]`, as the fused neuron kernels take
//! their input.
//!
//! ```text
//! let cache = Arc::new(FrameCache::new(data_dir.join("frames"))?);
//! let spec = FrameSpec::new(16, SplitBy::Number);
//! let nmnist = EventFrames::new(NMnist::open(&dir, Split::Train)?, spec, Some(cache))?;
//! let loader = Loader::new(Arc::new(nmnist), config)?;   // batches [16, B, 2, 34, 34] f32
//! ```
//!
//! Values are event counts per cell (see [`frames`](super::frames)): `f32` by default,
//! exact up to 2^24 events per cell; or `u8` ([`EventFrames::into_u8_counts`]), which
//! quarters the host memory and the upload and saturates at 255 events per cell per
//! frame. With `T = 16`, DVS128 Gesture frames average well under one event per cell and
//! N-MNIST's a few, so saturation is rare at full resolution; downsampling by `f` sums
//! `f x f` cells and makes it likelier: check [`FrameValue`]'s note before choosing `u8`
//! for downsampled frames.
//!
//! A sample with no events gives all-zero frames (where [`integrate`] refuses an empty
//! stream), so that one empty gesture span does not stop an epoch.

use std::marker::PhantomData;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::dvs_gesture::GestureSplit;
use super::events::EventStream;
use super::frames::{CacheKey, FrameCache, FrameError, FrameSpec, Frames, integrate};
use super::loader::{BatchLayout, Dataset};
use super::{DataError, DvsGesture, NMnist};

/// A dataset of event recordings, one labelled sample each, readable by index.
pub trait EventSource: Send + Sync + 'static {
    /// The dataset's name in frame-cache keys (`"nmnist"`, `"dvs-gesture"`).
    fn name(&self) -> &str;

    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there is no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sensor's `(width, height)`.
    fn sensor(&self) -> (usize, usize);

    /// Sample `i`'s label without reading its events (a frame-cache hit reads no
    /// recording); `None` past the end.
    fn label(&self, i: usize) -> Option<u8>;

    /// A name for sample `i`, unique within the dataset and stable across runs: with
    /// [`EventSource::name`] it keys the frame cache. The cache trusts names, not
    /// contents: after replacing a dataset's files with different ones, clear the cache.
    fn sample_id(&self, i: usize) -> String;

    /// The file sample `i` is read from, for error messages (empty past the end).
    fn sample_path(&self, i: usize) -> PathBuf;

    /// Sample `i`'s events and label.
    fn read(&self, i: usize) -> Result<(EventStream, u8), DataError>;

    /// Runs of samples stored in one file, which [`EventSource::read_group`] reads at once
    /// (DVS128 Gesture: a recording's gestures). Default: each sample alone.
    fn groups(&self) -> Vec<Range<usize>> {
        (0..self.len()).map(|i| i..i + 1).collect()
    }

    /// The samples of one of [`EventSource::groups`], in order.
    fn read_group(&self, group: Range<usize>) -> Result<Vec<(EventStream, u8)>, DataError> {
        group.map(|i| self.read(i)).collect()
    }
}

impl EventSource for NMnist {
    fn name(&self) -> &str {
        "nmnist"
    }

    fn len(&self) -> usize {
        NMnist::len(self)
    }

    fn sensor(&self) -> (usize, usize) {
        (usize::from(Self::WIDTH), usize::from(Self::HEIGHT))
    }

    fn label(&self, i: usize) -> Option<u8> {
        self.samples().get(i).map(|s| s.label)
    }

    /// `Train/3/00012.bin`: the path inside the dataset folder.
    fn sample_id(&self, i: usize) -> String {
        let Some(s) = self.samples().get(i) else {
            return format!("{}/missing-{i}", NMnist::split_folder(self.split()));
        };
        let file = s
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{}/{}/{file}", NMnist::split_folder(self.split()), s.label)
    }

    fn sample_path(&self, i: usize) -> PathBuf {
        self.samples()
            .get(i)
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    fn read(&self, i: usize) -> Result<(EventStream, u8), DataError> {
        NMnist::read(self, i)
    }
}

impl EventSource for GestureSplit {
    fn name(&self) -> &str {
        "dvs-gesture"
    }

    fn len(&self) -> usize {
        GestureSplit::len(self)
    }

    fn sensor(&self) -> (usize, usize) {
        (
            usize::from(DvsGesture::WIDTH),
            usize::from(DvsGesture::HEIGHT),
        )
    }

    fn label(&self, i: usize) -> Option<u8> {
        self.samples().get(i).map(|s| s.span.label)
    }

    /// `user01_fluorescent/3-1456000-2123000`: recording, CSV row, span.
    fn sample_id(&self, i: usize) -> String {
        match self.samples().get(i) {
            Some(s) => format!(
                "{}/{}-{}-{}",
                self.recordings()[s.recording].name,
                s.row,
                s.span.start,
                s.span.end
            ),
            None => format!("missing-{i}"),
        }
    }

    fn sample_path(&self, i: usize) -> PathBuf {
        self.samples()
            .get(i)
            .map(|s| self.recordings()[s.recording].aedat.clone())
            .unwrap_or_default()
    }

    fn read(&self, i: usize) -> Result<(EventStream, u8), DataError> {
        GestureSplit::read(self, i)
    }

    /// One group per recording.
    fn groups(&self) -> Vec<Range<usize>> {
        (0..self.recordings().len())
            .map(|r| self.recording_samples(r))
            .filter(|g| !g.is_empty())
            .collect()
    }

    fn read_group(&self, group: Range<usize>) -> Result<Vec<(EventStream, u8)>, DataError> {
        let Some(first) = self.samples().get(group.start) else {
            return group.map(|i| self.read(i)).collect();
        };
        let r = first.recording;
        if self.recording_samples(r) == group {
            self.read_recording(r)
        } else {
            group.map(|i| self.read(i)).collect()
        }
    }
}

/// The value type of event frames on the host.
pub trait FrameValue: Copy + Default + Send + Sync + 'static {
    /// A cell's event count (a whole number, exact in `f32`) as this type.
    fn from_count(count: f32) -> Self;
}

impl FrameValue for f32 {
    #[inline]
    fn from_count(count: f32) -> Self {
        count
    }
}

/// `u8` counts saturate at 255 events per cell and frame: a cell that saw more reads 255.
impl FrameValue for u8 {
    #[inline]
    fn from_count(count: f32) -> Self {
        // `as` saturates; the `min` states the intent.
        count.min(255.0) as u8
    }
}

/// An [`EventSource`] whose samples are integrated into frames (module docs): a
/// [`Dataset`] of `[T, 2, H, W]` samples, batched `[T, B, 2, H, W]`.
#[derive(Debug)]
pub struct EventFrames<S, E = f32> {
    source: S,
    spec: FrameSpec,
    cache: Option<Arc<FrameCache>>,
    /// The frame size after downsampling, `(width, height)`.
    size: (usize, usize),
    values: PhantomData<fn() -> E>,
}

/// Reading or integrating one sample failed.
enum Failure {
    Data(DataError),
    Frames(FrameError),
}

impl From<FrameError> for Failure {
    fn from(e: FrameError) -> Self {
        Failure::Frames(e)
    }
}

impl From<DataError> for Failure {
    fn from(e: DataError) -> Self {
        Failure::Data(e)
    }
}

impl<S: EventSource> EventFrames<S, f32> {
    /// `source`'s samples as frames made by `spec`, cached in `cache` (or integrated on
    /// every read when `None`). Fails when `spec` asks for 0 frames or a 0 downsampling
    /// factor, or the source's sensor is empty.
    pub fn new(
        source: S,
        spec: FrameSpec,
        cache: Option<Arc<FrameCache>>,
    ) -> Result<Self, FrameError> {
        if spec.frames == 0 {
            return Err(FrameError::ZeroFrames);
        }
        if spec.downsample == 0 {
            return Err(FrameError::ZeroDownsample);
        }
        let (width, height) = source.sensor();
        if width == 0 || height == 0 {
            return Err(FrameError::ZeroSize { width, height });
        }
        Ok(Self {
            size: spec.output_size(width, height),
            source,
            spec,
            cache,
            values: PhantomData,
        })
    }

    /// The same frames as `u8` counts, saturating at 255 (module docs).
    pub fn into_u8_counts(self) -> EventFrames<S, u8> {
        EventFrames {
            source: self.source,
            spec: self.spec,
            cache: self.cache,
            size: self.size,
            values: PhantomData,
        }
    }
}

impl<S: EventSource, E: FrameValue> EventFrames<S, E> {
    /// The event source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// How samples become frames.
    pub fn spec(&self) -> FrameSpec {
        self.spec
    }

    /// The frame cache, if any.
    pub fn cache(&self) -> Option<&Arc<FrameCache>> {
        self.cache.as_ref()
    }

    /// `(width, height)` of a frame, after downsampling.
    pub fn frame_size(&self) -> (usize, usize) {
        self.size
    }

    /// Sample `i`'s `f32` frames and label, from the cache or integrated (and cached).
    pub fn frames(&self, i: usize) -> Result<(Frames, u8), DataError> {
        let label = self.source.label(i).ok_or_else(|| {
            DataError::Request(format!(
                "{} sample {i} does not exist: the dataset holds {} samples",
                self.source.name(),
                self.source.len()
            ))
        })?;
        let compute = || -> Result<Frames, Failure> {
            let (events, _) = self.source.read(i)?;
            Ok(self.integrate(&events)?)
        };
        let frames = match &self.cache {
            Some(cache) => cache.get_or_compute(&self.key(i), compute),
            None => compute(),
        };
        frames.map(|f| (f, label)).map_err(|e| self.error(i, e))
    }

    /// Integrates every sample missing from the cache, on `workers` threads, reading
    /// each group of samples (a DVS128 Gesture recording) once: the preprocessing pass
    /// SpikingJelly runs before training, here optional since the loader fills the cache
    /// on first use too (at the cost of one recording read per gesture). Returns how many
    /// samples were integrated; 0 without a cache. Files already in the cache are not
    /// validated here (a corrupt one is recomputed when the loader reads it). On errors,
    /// the one of the earliest failing group is returned.
    pub fn precompute(&self, workers: usize) -> Result<usize, DataError> {
        let Some(cache) = &self.cache else {
            return Ok(0);
        };
        let groups = self.source.groups();
        let next = AtomicUsize::new(0);
        let computed = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let errors: Mutex<Vec<(usize, DataError)>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..workers.clamp(1, groups.len().max(1)) {
                s.spawn(|| {
                    // Groups are claimed in order, so every group before a failing one has
                    // been claimed and finishes: the earliest failure is always found.
                    while !stop.load(Ordering::SeqCst) {
                        let g = next.fetch_add(1, Ordering::SeqCst);
                        let Some(group) = groups.get(g) else { break };
                        match self.fill_group(cache, group.clone()) {
                            Ok(n) => {
                                computed.fetch_add(n, Ordering::SeqCst);
                            }
                            Err(e) => {
                                errors
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .push((g, e));
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                });
            }
        });
        let errors = errors.into_inner().unwrap_or_else(PoisonError::into_inner);
        match errors.into_iter().min_by_key(|(g, _)| *g) {
            Some((_, e)) => Err(e),
            None => Ok(computed.into_inner()),
        }
    }

    /// Integrates and caches the samples of `group` that have no cache file, reading the
    /// group only if one is missing.
    fn fill_group(&self, cache: &FrameCache, group: Range<usize>) -> Result<usize, DataError> {
        let mut events: Option<Vec<(EventStream, u8)>> = None;
        let mut computed = 0;
        for i in group.clone() {
            let key = self.key(i);
            if cache.contains(&key) {
                continue;
            }
            if events.is_none() {
                let read = self.source.read_group(group.clone())?;
                if read.len() != group.len() {
                    return Err(DataError::Request(format!(
                        "{}: reading samples {group:?} gave {} samples",
                        self.source.name(),
                        read.len()
                    )));
                }
                events = Some(read);
            }
            let stream = events
                .as_ref()
                .and_then(|e| e.get(i - group.start))
                .map(|(s, _)| s);
            let Some(stream) = stream else { continue };
            cache
                .get_or_compute(&key, || self.integrate(stream))
                .map_err(|e| self.error(i, Failure::Frames(e)))?;
            computed += 1;
        }
        Ok(computed)
    }

    /// The frames of one sample's events: zeros for an empty stream.
    fn integrate(&self, events: &EventStream) -> Result<Frames, FrameError> {
        let (w, h) = self.size;
        if events.is_empty() {
            return Frames::from_vec(self.spec.frames, h, w, vec![0.0; self.sample_len()]);
        }
        let (sw, sh) = self.source.sensor();
        integrate(events.events(), sw, sh, self.spec)
    }

    fn key(&self, i: usize) -> CacheKey {
        CacheKey::new(self.source.name(), self.source.sample_id(i), self.spec)
    }

    fn sample_len(&self) -> usize {
        let (w, h) = self.size;
        self.spec.frames * 2 * h * w
    }

    fn error(&self, i: usize, failure: Failure) -> DataError {
        match failure {
            Failure::Data(e) => e,
            Failure::Frames(source) => DataError::Frames {
                path: self.source.sample_path(i),
                source,
            },
        }
    }
}

impl<S: EventSource, E: FrameValue> Dataset for EventFrames<S, E> {
    type Elem = E;

    fn len(&self) -> usize {
        self.source.len()
    }

    fn sample_shape(&self) -> Vec<usize> {
        let (w, h) = self.size;
        vec![self.spec.frames, 2, h, w]
    }

    fn layout(&self) -> BatchLayout {
        BatchLayout::TimeMajor
    }

    fn sample(&self, index: usize, out: &mut [E]) -> Result<u8, DataError> {
        let (frames, label) = self.frames(index)?;
        if out.len() != frames.data().len() {
            return Err(DataError::Request(format!(
                "{} sample {index} has {} frame values but the output buffer holds {}",
                self.source.name(),
                frames.data().len(),
                out.len()
            )));
        }
        for (o, &v) in out.iter_mut().zip(frames.data()) {
            *o = E::from_count(v);
        }
        Ok(label)
    }
}
