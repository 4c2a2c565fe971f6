//! A batch loader over any [`Dataset`]: seeded shuffling, batching and background prefetch
//! threads. On a GPU, `snn_runtime::staging` takes the batches on (pinned asynchronous
//! uploads):
//!
//! ```text
//! let loader = Loader::new(Arc::new(Mnist::load(dir, Split::Train)?), config)?;
//! let mut uploader = Uploader::new(&device, loader.max_batch_bytes())?;
//! for batch in loader.epoch(e) {
//!     let batch = batch?;                             // u8 pixels [B, 1, 28, 28]
//!     let gpu = batch.upload_images(&mut uploader)?;  // f32 [B, 784] in [0, 1], on the GPU
//!     let spikes = rate_encode(&device, &gpu.data, &gpu.samples, steps, seed)?;
//! }
//! ```
//!
//! Image datasets ([`ImageDataset`]) give `u8` pixels `[B, C, H, W]`; event datasets
//! ([`EventFrames`](super::event_dataset::EventFrames)) give time-major frames
//! `[T, B, 2, H, W]` of `f32` or `u8` event counts. Batches stay `u8` on the host where
//! they can, so that uploads move 4x fewer bytes; the GPU converts them.
//!
//! # Determinism
//!
//! The order of an epoch is a Fisher-Yates shuffle driven by a SplitMix64 generator seeded
//! from `(seed, epoch)`, computed once on the calling thread. Workers only assemble the
//! batches of that order, and the consumer hands them out by batch number, so the batches
//! are identical for any number of workers and any prefetch depth.
//!
//! # Threads
//!
//! [`Loader::epoch`] starts `workers` threads. They claim batch numbers in order, at most
//! `prefetch + workers` batches ahead of the consumer (so memory stays bounded however
//! slow one worker is), and send finished batches through a
//! [`sync_channel`] of capacity `prefetch`. Dropping the
//! iterator, finished or not, stops the workers and joins them before `drop` returns. A
//! sample that cannot be read (a corrupt event file) makes its batch an error; the
//! following batches still come. A panic in a worker (a bug in a [`Dataset`]) stops the
//! epoch and continues on the consumer's thread, from [`Iterator::next`].

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use rand_xoshiro::SplitMix64;
use rand_xoshiro::rand_core::{Rng as _, SeedableRng};

use super::{DataError, ImageDataset};

/// Samples a [`Loader`] can batch: every sample has the same shape and a label.
///
/// Implementations must be cheap to share between the loader's threads; reading a sample
/// may do I/O (event files, the frame cache).
pub trait Dataset: Send + Sync + 'static {
    /// The type of a sample's values: `u8` pixels, `f32` or `u8` event counts.
    type Elem: Copy + Default + Send + 'static;

    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there is no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of every sample, e.g. `[C, H, W]` or `[T, 2, H, W]`.
    fn sample_shape(&self) -> Vec<usize>;

    /// How a batch of samples is laid out (default: sample after sample).
    fn layout(&self) -> BatchLayout {
        BatchLayout::SampleMajor
    }

    /// Writes sample `index` into `out` (the `sample_shape` values, row-major) and returns
    /// its label. Errors name the file at fault; an `index` past the end or an `out` of
    /// the wrong length is a [`DataError::Request`].
    fn sample(&self, index: usize, out: &mut [Self::Elem]) -> Result<u8, DataError>;
}

/// Where the batch dimension goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchLayout {
    /// Samples `[S...]` batch as `[B, S...]` (images: `[B, C, H, W]`).
    SampleMajor,
    /// Samples `[T, S...]` batch as `[T, B, S...]`, the time-major layout the fused
    /// neuron kernels take (event frames: `[T, B, 2, H, W]`).
    TimeMajor,
}

impl Dataset for ImageDataset {
    type Elem = u8;

    fn len(&self) -> usize {
        ImageDataset::len(self)
    }

    fn sample_shape(&self) -> Vec<usize> {
        self.shape().to_vec()
    }

    fn sample(&self, index: usize, out: &mut [u8]) -> Result<u8, DataError> {
        let (Some(image), Some(label)) = (self.image(index), self.label(index)) else {
            return Err(DataError::Request(format!(
                "image {index} does not exist: the dataset holds {} images",
                ImageDataset::len(self)
            )));
        };
        if out.len() != image.len() {
            return Err(DataError::Request(format!(
                "image {index} has {} pixels but the output buffer holds {}",
                image.len(),
                out.len()
            )));
        }
        out.copy_from_slice(image);
        Ok(label)
    }
}

/// Why a [`Loader`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoaderError {
    /// `batch_size` was 0.
    ZeroBatchSize,
    /// `workers` was 0.
    ZeroWorkers,
    /// The dataset's sample shape cannot be batched (a time-major dataset with no time
    /// axis or `T = 0`, or a batch too large to address).
    SampleShape(String),
    /// A shard that is not one of its parts (`index >= count`, or `count` 0).
    Shard(Shard),
}

impl fmt::Display for LoaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoaderError::ZeroBatchSize => {
                f.write_str("loader batch_size must be at least 1, got 0")
            }
            LoaderError::ZeroWorkers => f.write_str("loader workers must be at least 1, got 0"),
            LoaderError::SampleShape(msg) => f.write_str(msg),
            LoaderError::Shard(Shard { index, count }) => write!(
                f,
                "loader shard {index} of {count} does not exist: use an index in 0..count, count at least 1"
            ),
        }
    }
}

impl std::error::Error for LoaderError {}

/// How a [`Loader`] batches and prefetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch; at least 1.
    pub batch_size: usize,
    /// Whether each epoch visits the samples in a seeded random order (otherwise `0..n`).
    pub shuffle: bool,
    /// Seed of the shuffle; with the epoch number it fixes the order.
    pub seed: u64,
    /// Whether to skip the last batch when it has fewer than `batch_size` samples.
    pub drop_last: bool,
    /// Finished batches that may wait in the channel for the consumer (0: hand-over only).
    pub prefetch: usize,
    /// Background threads assembling batches; at least 1.
    pub workers: usize,
    /// The part of every epoch this loader serves (the whole, unless the run trains on
    /// several GPUs).
    pub shard: Shard,
}

/// One of `count` equal parts of every epoch, as PyTorch's `DistributedSampler` cuts them:
/// the epoch's order (the same in every process: it depends only on the seed and the
/// epoch) is padded by repeating its start to a multiple of `count`, and part `index`
/// takes every `count`-th sample from position `index`. Every part then has the same number
/// of samples, so every process takes the same number of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole epoch.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            shuffle: true,
            seed: 0,
            drop_last: false,
            prefetch: 4,
            workers: 2,
            shard: Shard::WHOLE,
        }
    }
}

/// One batch, as the host holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<E = u8> {
    /// Dataset index of each sample, as the rate encoder's sample ids.
    pub indices: Vec<u64>,
    /// The values, `shape` row-major: `[B, S...]` or, time-major, `[T, B, S...]`.
    pub data: Vec<E>,
    /// One label per sample.
    pub labels: Vec<u8>,
    /// `[B, C, H, W]` for images, `[T, B, 2, H, W]` for event frames.
    pub shape: Vec<usize>,
    /// Where the batch dimension is in `shape`.
    pub layout: BatchLayout,
}

impl<E> Batch<E> {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch has no sample (never the case for batches from a [`Loader`]).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

impl Batch<u8> {
    /// The pixels as intensities `v / 255` in `[0, 1]` (exactly what the GPU computes when
    /// it uploads an image batch), for the CPU encoders.
    pub fn unit(&self) -> Vec<f32> {
        super::encode::u8_to_unit(&self.data)
    }
}

/// Batches of a [`Dataset`], epoch after epoch.
pub struct Loader<D: Dataset = ImageDataset> {
    dataset: Arc<D>,
    config: LoaderConfig,
    sample_shape: Vec<usize>,
    layout: BatchLayout,
}

impl<D: Dataset> Clone for Loader<D> {
    fn clone(&self) -> Self {
        Self {
            dataset: Arc::clone(&self.dataset),
            config: self.config,
            sample_shape: self.sample_shape.clone(),
            layout: self.layout,
        }
    }
}

impl<D: Dataset> fmt::Debug for Loader<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loader")
            .field("samples", &self.dataset.len())
            .field("sample_shape", &self.sample_shape)
            .field("layout", &self.layout)
            .field("config", &self.config)
            .finish()
    }
}

impl<D: Dataset> Loader<D> {
    /// A loader over `dataset`; fails when `batch_size` or `workers` is 0, or when the
    /// dataset's samples cannot be batched (a time-major dataset without `T >= 1`).
    pub fn new(dataset: Arc<D>, config: LoaderConfig) -> Result<Self, LoaderError> {
        if config.batch_size == 0 {
            return Err(LoaderError::ZeroBatchSize);
        }
        if config.workers == 0 {
            return Err(LoaderError::ZeroWorkers);
        }
        if config.shard.index >= config.shard.count {
            return Err(LoaderError::Shard(config.shard));
        }
        let sample_shape = dataset.sample_shape();
        let layout = dataset.layout();
        if layout == BatchLayout::TimeMajor && sample_shape.first().is_none_or(|&t| t == 0) {
            return Err(LoaderError::SampleShape(format!(
                "a time-major dataset needs samples [T, ...] with T >= 1, got {sample_shape:?}"
            )));
        }
        let sample_len = sample_shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d));
        let bytes = sample_len
            .and_then(|n| n.checked_mul(config.batch_size))
            .and_then(|n| n.checked_mul(size_of::<D::Elem>()));
        if bytes.is_none_or(|b| b > isize::MAX as usize) {
            return Err(LoaderError::SampleShape(format!(
                "batches of {} samples of shape {sample_shape:?} are too large",
                config.batch_size
            )));
        }
        Ok(Self {
            dataset,
            config,
            sample_shape,
            layout,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<D> {
        &self.dataset
    }

    /// The shape of one sample.
    pub fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    /// Samples per epoch: the dataset's, or its shard's (`n / count` rounded up).
    pub fn num_samples(&self) -> usize {
        self.dataset.len().div_ceil(self.config.shard.count)
    }

    /// Batches per epoch: samples / B rounded up, or down with `drop_last`.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.num_samples(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The bytes of the largest batch's values and labels: the `max_bytes` an
    /// GPU uploader (`snn_runtime::staging::Uploader`) needs for this loader's batches.
    pub fn max_batch_bytes(&self) -> usize {
        let b = self.config.batch_size;
        let values: usize = self.sample_shape.iter().product();
        // Checked in `new`.
        b * values * size_of::<D::Elem>() + b
    }

    /// The samples epoch `epoch` visits, in order: `0..n` without `shuffle`, otherwise a
    /// Fisher-Yates permutation that depends only on `(seed, epoch)`; then this loader's
    /// [`Shard`] of it.
    pub fn order(&self, epoch: u64) -> Vec<u64> {
        let Shard { index, count } = self.config.shard;
        let whole = self.whole_order(epoch);
        if count == 1 {
            return whole;
        }
        let padded = whole.iter().cycle().take(self.num_samples() * count);
        padded.skip(index).step_by(count).copied().collect()
    }

    fn whole_order(&self, epoch: u64) -> Vec<u64> {
        let mut order: Vec<u64> = (0..self.dataset.len() as u64).collect();
        if self.config.shuffle {
            let mut rng = epoch_rng(self.config.seed, epoch);
            for i in (1..order.len()).rev() {
                let j = below(&mut rng, i as u64 + 1) as usize;
                order.swap(i, j);
            }
        }
        order
    }

    /// The batches of epoch `epoch`, in order, assembled ahead by the worker threads.
    pub fn epoch(&self, epoch: u64) -> Epoch<D> {
        let job = Arc::new(Job {
            dataset: Arc::clone(&self.dataset),
            order: self.order(epoch),
            batch_size: self.config.batch_size,
            batches: self.num_batches(),
            sample_shape: self.sample_shape.clone(),
            layout: self.layout,
            window: self.config.prefetch.saturating_add(self.config.workers),
            stop: AtomicBool::new(false),
            panic: Mutex::new(None),
            claims: Mutex::new(Claims {
                next: 0,
                consumed: 0,
            }),
            wake: Condvar::new(),
        });
        let mut handles = Vec::new();
        let mut rx = None;
        if job.batches > 0 {
            let (tx, receiver) = sync_channel(self.config.prefetch);
            for w in 0..self.config.workers.min(job.batches) {
                let (job, tx) = (Arc::clone(&job), tx.clone());
                let spawned = thread::Builder::new()
                    .name(format!("snn-loader-{w}"))
                    .spawn(move || work(&job, &tx));
                match spawned {
                    Ok(handle) => handles.push(handle),
                    // Fewer workers only costs speed; with none, `next` assembles inline.
                    Err(_) => break,
                }
            }
            if !handles.is_empty() {
                rx = Some(receiver);
            }
        }
        Epoch {
            job,
            rx,
            handles,
            pending: BTreeMap::new(),
            next: 0,
        }
    }
}

/// What a worker sends: a batch number and the batch or why it could not be read.
type Sent<E> = (usize, Result<Batch<E>, DataError>);

/// The iterator of one epoch's batches (see [`Loader::epoch`]); dropping it stops and
/// joins its worker threads.
pub struct Epoch<D: Dataset = ImageDataset> {
    job: Arc<Job<D>>,
    rx: Option<Receiver<Sent<D::Elem>>>,
    handles: Vec<JoinHandle<()>>,
    pending: BTreeMap<usize, Result<Batch<D::Elem>, DataError>>,
    next: usize,
}

impl<D: Dataset> fmt::Debug for Epoch<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Epoch")
            .field("next", &self.next)
            .field("batches", &self.job.batches)
            .field("workers", &self.handles.len())
            .finish()
    }
}

impl<D: Dataset> Iterator for Epoch<D> {
    type Item = Result<Batch<D::Elem>, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let k = self.next;
        if k >= self.job.batches {
            return None;
        }
        let batch = match &self.rx {
            None => self.job.assemble(k),
            Some(rx) => loop {
                if let Some(b) = self.pending.remove(&k) {
                    break b;
                }
                match rx.recv() {
                    Ok((i, b)) => {
                        self.pending.insert(i, b);
                    }
                    // Every worker is gone without sending batch k: one panicked (and
                    // stopped the others). Its panic continues here, on the consumer's
                    // thread.
                    Err(_) => {
                        if let Some(payload) = self.shutdown() {
                            panic::resume_unwind(payload);
                        }
                        return None;
                    }
                }
            },
        };
        self.next = k + 1;
        {
            let mut claims = self.job.lock();
            claims.consumed = self.next;
        }
        self.job.wake.notify_all();
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.job.batches - self.next.min(self.job.batches);
        (left, Some(left))
    }
}

impl<D: Dataset> ExactSizeIterator for Epoch<D> {}

impl<D: Dataset> Epoch<D> {
    /// Stops and joins the workers; the first panic payload of a worker, if any.
    fn shutdown(&mut self) -> Option<Box<dyn Any + Send>> {
        {
            let _claims = self.job.lock();
            self.job.stop.store(true, Ordering::SeqCst);
        }
        self.job.wake.notify_all();
        // Unblocks workers waiting to send.
        self.rx = None;
        self.pending.clear();
        let mut panic = self
            .job
            .panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for handle in self.handles.drain(..) {
            if let Err(payload) = handle.join() {
                panic.get_or_insert(payload);
            }
        }
        panic
    }
}

impl<D: Dataset> Drop for Epoch<D> {
    fn drop(&mut self) {
        // A worker's panic after the consumer stopped asking has nowhere to go.
        let _ = self.shutdown();
    }
}

/// What the workers of one epoch share.
struct Job<D: Dataset> {
    dataset: Arc<D>,
    order: Vec<u64>,
    batch_size: usize,
    batches: usize,
    sample_shape: Vec<usize>,
    layout: BatchLayout,
    /// Batches that may be claimed past the last one consumed.
    window: usize,
    stop: AtomicBool,
    /// The payload of the first worker panic (a bug in a [`Dataset`]), for the consumer.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    claims: Mutex<Claims>,
    wake: Condvar,
}

struct Claims {
    /// The next batch number to hand to a worker.
    next: usize,
    /// Batches the consumer has taken.
    consumed: usize,
}

impl<D: Dataset> Job<D> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch number for a worker, waiting while it is too far ahead; `None` when
    /// the epoch is done or stopped.
    fn claim(&self) -> Option<usize> {
        let mut claims = self.lock();
        loop {
            if self.stop.load(Ordering::SeqCst) || claims.next >= self.batches {
                return None;
            }
            if claims.next < claims.consumed.saturating_add(self.window) {
                claims.next += 1;
                return Some(claims.next - 1);
            }
            claims = self
                .wake
                .wait(claims)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Batch `k` of the epoch's order.
    fn assemble(&self, k: usize) -> Result<Batch<D::Elem>, DataError> {
        let start = k * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let indices = self.order[start..end].to_vec();
        let n = indices.len();
        let per: usize = self.sample_shape.iter().product();
        let mut data = vec![D::Elem::default(); n * per];
        let mut labels = Vec::with_capacity(n);
        let shape = match self.layout {
            BatchLayout::SampleMajor => {
                for (b, &i) in indices.iter().enumerate() {
                    let out = &mut data[b * per..(b + 1) * per];
                    labels.push(self.dataset.sample(i as usize, out)?);
                }
                let mut shape = vec![n];
                shape.extend_from_slice(&self.sample_shape);
                shape
            }
            BatchLayout::TimeMajor => {
                // Checked in `Loader::new`: T >= 1.
                let steps = self.sample_shape[0];
                let step = per / steps;
                let mut sample = vec![D::Elem::default(); per];
                for (b, &i) in indices.iter().enumerate() {
                    labels.push(self.dataset.sample(i as usize, &mut sample)?);
                    for t in 0..steps {
                        let at = (t * n + b) * step;
                        data[at..at + step].copy_from_slice(&sample[t * step..(t + 1) * step]);
                    }
                }
                let mut shape = vec![steps, n];
                shape.extend_from_slice(&self.sample_shape[1..]);
                shape
            }
        };
        Ok(Batch {
            indices,
            data,
            labels,
            shape,
            layout: self.layout,
        })
    }
}

fn work<D: Dataset>(job: &Job<D>, tx: &SyncSender<Sent<D::Elem>>) {
    while let Some(k) = job.claim() {
        // A panic stops every worker, so that the channel disconnects and the consumer,
        // instead of waiting forever for the lost batch, takes the panic over.
        let batch = match panic::catch_unwind(AssertUnwindSafe(|| job.assemble(k))) {
            Ok(batch) => batch,
            Err(payload) => {
                job.panic
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(payload);
                {
                    let _claims = job.lock();
                    job.stop.store(true, Ordering::SeqCst);
                }
                job.wake.notify_all();
                return;
            }
        };
        if job.stop.load(Ordering::SeqCst) || tx.send((k, batch)).is_err() {
            return;
        }
    }
}

/// The generator of epoch `epoch`'s shuffle: SplitMix64 (Steele, Lea and Flood, OOPSLA
/// 2014) seeded with the first outputs of generators seeded by `seed` and by `epoch`, so
/// epochs get unrelated streams.
fn epoch_rng(seed: u64, epoch: u64) -> SplitMix64 {
    let first = |s| SplitMix64::seed_from_u64(s).next_u64();
    SplitMix64::seed_from_u64(first(seed) ^ first(epoch))
}

/// A uniform number in `0..n` (`n > 0`), by rejection so there is no modulo bias.
fn below(rng: &mut SplitMix64, n: u64) -> u64 {
    let zone = u64::MAX - u64::MAX % n;
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_reference() {
        // Reference outputs of SplitMix64 seeded with 1234567.
        let mut s = SplitMix64::seed_from_u64(1_234_567);
        assert_eq!(s.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(s.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(s.next_u64(), 9_817_491_932_198_370_423);
    }
}
