//! A CPU-side batch loader for [`ImageDataset`]: seeded shuffling, batching, `u8 -> [0, 1]`
//! conversion and background prefetch threads.
//!
//! ```text
//! let loader = Loader::new(dataset, LoaderConfig { batch_size: 128, ..Default::default() })?;
//! for batch in loader.epoch(e) { /* batch.images is [B, C, H, W] f32 in [0, 1] */ }
//! ```
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
//! [`sync_channel`](std::sync::mpsc::sync_channel) of capacity `prefetch`. Dropping the
//! iterator, finished or not, stops the workers and joins them before `drop` returns.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use super::ImageDataset;

/// Why a [`Loader`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoaderError {
    /// `batch_size` was 0.
    ZeroBatchSize,
    /// `workers` was 0.
    ZeroWorkers,
}

impl fmt::Display for LoaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoaderError::ZeroBatchSize => "loader batch_size must be at least 1, got 0",
            LoaderError::ZeroWorkers => "loader workers must be at least 1, got 0",
        })
    }
}

impl std::error::Error for LoaderError {}

/// How a [`Loader`] batches and prefetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Images per batch; at least 1.
    pub batch_size: usize,
    /// Whether each epoch visits the images in a seeded random order (otherwise `0..n`).
    pub shuffle: bool,
    /// Seed of the shuffle; with the epoch number it fixes the order.
    pub seed: u64,
    /// Whether to skip the last batch when it has fewer than `batch_size` images.
    pub drop_last: bool,
    /// Finished batches that may wait in the channel for the consumer (0: hand-over only).
    pub prefetch: usize,
    /// Background threads assembling batches; at least 1.
    pub workers: usize,
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
        }
    }
}

/// One batch of images, ready for encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Dataset index of each image, as the rate encoder's sample ids.
    pub indices: Vec<u64>,
    /// Pixels `[B, C, H, W]` row-major, each `u8 / 255` in `[0, 1]`.
    pub images: Vec<f32>,
    /// One label per image.
    pub labels: Vec<u8>,
    /// `[B, C, H, W]`.
    pub shape: [usize; 4],
}

impl Batch {
    /// Number of images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch has no image (never the case for batches from a [`Loader`]).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Batches of an [`ImageDataset`], epoch after epoch.
#[derive(Clone)]
pub struct Loader {
    dataset: Arc<ImageDataset>,
    config: LoaderConfig,
}

impl fmt::Debug for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loader")
            .field("images", &self.dataset.len())
            .field("shape", &self.dataset.shape())
            .field("config", &self.config)
            .finish()
    }
}

impl Loader {
    /// A loader over `dataset`; fails when `batch_size` or `workers` is 0.
    pub fn new(dataset: Arc<ImageDataset>, config: LoaderConfig) -> Result<Self, LoaderError> {
        if config.batch_size == 0 {
            return Err(LoaderError::ZeroBatchSize);
        }
        if config.workers == 0 {
            return Err(LoaderError::ZeroWorkers);
        }
        Ok(Self { dataset, config })
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<ImageDataset> {
        &self.dataset
    }

    /// Batches per epoch: `n / B` rounded up, or down with `drop_last`.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order in which epoch `epoch` visits the dataset: `0..n` without `shuffle`,
    /// otherwise a Fisher-Yates permutation that depends only on `(seed, epoch)`.
    pub fn order(&self, epoch: u64) -> Vec<u64> {
        let mut order: Vec<u64> = (0..self.dataset.len() as u64).collect();
        if self.config.shuffle {
            let mut rng = SplitMix64::for_epoch(self.config.seed, epoch);
            for i in (1..order.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                order.swap(i, j);
            }
        }
        order
    }

    /// The batches of epoch `epoch`, in order, assembled ahead by the worker threads.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let job = Arc::new(Job {
            dataset: Arc::clone(&self.dataset),
            order: self.order(epoch),
            batch_size: self.config.batch_size,
            batches: self.num_batches(),
            window: self.config.prefetch.saturating_add(self.config.workers),
            stop: AtomicBool::new(false),
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

/// The iterator of one epoch's batches (see [`Loader::epoch`]); dropping it stops and
/// joins its worker threads.
pub struct Epoch {
    job: Arc<Job>,
    rx: Option<Receiver<(usize, Batch)>>,
    handles: Vec<JoinHandle<()>>,
    pending: BTreeMap<usize, Batch>,
    next: usize,
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Epoch")
            .field("next", &self.next)
            .field("batches", &self.job.batches)
            .field("workers", &self.handles.len())
            .finish()
    }
}

impl Iterator for Epoch {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
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
                    // Every worker is gone without sending batch k: one panicked.
                    Err(_) => {
                        self.shutdown();
                        panic!("a data loader worker thread panicked");
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

impl ExactSizeIterator for Epoch {}

impl Epoch {
    fn shutdown(&mut self) {
        {
            let _claims = self.job.lock();
            self.job.stop.store(true, Ordering::SeqCst);
        }
        self.job.wake.notify_all();
        // Unblocks workers waiting to send.
        self.rx = None;
        self.pending.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the workers of one epoch share.
struct Job {
    dataset: Arc<ImageDataset>,
    order: Vec<u64>,
    batch_size: usize,
    batches: usize,
    /// Batches that may be claimed past the last one consumed.
    window: usize,
    stop: AtomicBool,
    claims: Mutex<Claims>,
    wake: Condvar,
}

struct Claims {
    /// The next batch number to hand to a worker.
    next: usize,
    /// Batches the consumer has taken.
    consumed: usize,
}

impl Job {
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
    fn assemble(&self, k: usize) -> Batch {
        let start = k * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let indices = self.order[start..end].to_vec();
        let [c, h, w] = self.dataset.shape();
        let per = self.dataset.image_len();
        let (pixels, labels_all) = (self.dataset.images(), self.dataset.labels());
        let mut images = Vec::with_capacity(indices.len() * per);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in &indices {
            let i = i as usize;
            images.extend(
                pixels[i * per..(i + 1) * per]
                    .iter()
                    .map(|&v| f32::from(v) / 255.0),
            );
            labels.push(labels_all[i]);
        }
        Batch {
            shape: [indices.len(), c, h, w],
            indices,
            images,
            labels,
        }
    }
}

fn work(job: &Job, tx: &SyncSender<(usize, Batch)>) {
    while let Some(k) = job.claim() {
        let batch = job.assemble(k);
        if job.stop.load(Ordering::SeqCst) || tx.send((k, batch)).is_err() {
            return;
        }
    }
}

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
/// OOPSLA 2014), as in `java.util.SplittableRandom`.
struct SplitMix64(u64);

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

impl SplitMix64 {
    /// A generator whose state mixes `seed` and `epoch`, so epochs get unrelated streams.
    fn for_epoch(seed: u64, epoch: u64) -> Self {
        let mut s = SplitMix64(seed);
        let a = s.next_u64();
        SplitMix64(a ^ mix(epoch.wrapping_add(GOLDEN_GAMMA)))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix(self.0)
    }

    /// A uniform number in `0..n` (`n > 0`), by rejection so there is no modulo bias.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_reference() {
        // Reference outputs of SplitMix64 seeded with 1234567.
        let mut s = SplitMix64(1_234_567);
        assert_eq!(s.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(s.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(s.next_u64(), 9_817_491_932_198_370_423);
    }
}
