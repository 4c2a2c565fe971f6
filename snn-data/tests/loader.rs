//! The CPU batch loader over image datasets: coverage, batch sizes, determinism,
//! shuffling, pixel values, errors from samples, worker panics, prompt shutdown and
//! (printed, never asserted) throughput. Event datasets: tests/event_loader.rs.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use snn_data::loader::{Batch, BatchLayout, Dataset, Loader, LoaderConfig, LoaderError, Shard};
use snn_data::{DataError, ImageDataset};

/// `n` images of `shape` whose pixels are a function of (image, position), labels `i % 10`.
fn dataset(n: usize, shape: [usize; 3]) -> Arc<ImageDataset> {
    let per: usize = shape.iter().product();
    let images = (0..n * per)
        .map(|k| ((k / per) * 7 + (k % per) * 13) as u8)
        .collect();
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    Arc::new(ImageDataset::new(images, shape, labels, 10).expect("valid dataset"))
}

fn config(batch_size: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle: true,
        seed: 42,
        drop_last: false,
        prefetch: 2,
        workers,
        ..LoaderConfig::default()
    }
}

fn collect<D: Dataset>(loader: &Loader<D>, epoch: u64) -> Vec<Batch<D::Elem>> {
    loader
        .epoch(epoch)
        .collect::<Result<_, _>>()
        .expect("every batch reads")
}

fn indices(batches: &[Batch]) -> Vec<u64> {
    batches.iter().flat_map(|b| b.indices.clone()).collect()
}

#[test]
fn zero_batch_size_or_workers_is_an_error() {
    let ds = dataset(4, [1, 2, 2]);
    let err = Loader::new(ds.clone(), config(0, 1)).expect_err("batch_size 0");
    assert_eq!(err, LoaderError::ZeroBatchSize);
    assert!(err.to_string().contains("batch_size"));
    let err = Loader::new(ds, config(2, 0)).expect_err("workers 0");
    assert_eq!(err, LoaderError::ZeroWorkers);
    assert!(err.to_string().contains("workers"));
}

#[test]
fn every_index_once_per_epoch() {
    let ds = dataset(103, [1, 3, 3]);
    for workers in [1, 3] {
        let loader = Loader::new(ds.clone(), config(10, workers)).expect("loader");
        for epoch in 0..3 {
            let mut seen = indices(&collect(&loader, epoch));
            seen.sort_unstable();
            assert_eq!(seen, (0..103).collect::<Vec<u64>>());
        }
    }
}

#[test]
fn batch_sizes_with_and_without_drop_last() {
    let ds = dataset(23, [2, 2, 3]);
    let mut cfg = config(5, 2);
    let loader = Loader::new(ds.clone(), cfg).expect("loader");
    let batches = collect(&loader, 0);
    assert_eq!(loader.num_batches(), 5);
    assert_eq!(
        batches.iter().map(Batch::len).collect::<Vec<_>>(),
        [5, 5, 5, 5, 3]
    );
    for b in &batches {
        assert_eq!(b.shape, [b.len(), 2, 2, 3]);
        assert_eq!(b.layout, BatchLayout::SampleMajor);
        assert_eq!(b.data.len(), b.len() * 12);
        assert_eq!(b.indices.len(), b.len());
    }

    cfg.drop_last = true;
    let loader = Loader::new(ds.clone(), cfg).expect("loader");
    let batches = collect(&loader, 0);
    assert_eq!(loader.num_batches(), 4);
    assert!(batches.iter().all(|b| b.len() == 5 && b.shape[0] == 5));
    assert_eq!(batches.len(), 4);

    // An exact multiple has no partial batch either way; a batch larger than the dataset
    // gives one partial batch, or none with drop_last.
    let loader = Loader::new(dataset(20, [1, 1, 1]), config(5, 2)).expect("loader");
    assert_eq!(collect(&loader, 0).len(), 4);
    let loader = Loader::new(ds.clone(), config(100, 2)).expect("loader");
    assert_eq!(collect(&loader, 0).len(), 1);
    cfg.batch_size = 100;
    let loader = Loader::new(ds, cfg).expect("loader");
    assert_eq!(loader.epoch(0).len(), 0);
    assert!(collect(&loader, 0).is_empty());

    // An empty dataset gives an empty epoch.
    let empty = Arc::new(ImageDataset::new(vec![], [1, 2, 2], vec![], 10).expect("empty"));
    let loader = Loader::new(empty, config(4, 2)).expect("loader");
    assert!(collect(&loader, 0).is_empty());
}

#[test]
fn deterministic_across_worker_counts_and_runs() {
    let ds = dataset(257, [3, 4, 4]);
    let reference = collect(&Loader::new(ds.clone(), config(16, 1)).expect("loader"), 5);
    for workers in [1, 2, 4] {
        for prefetch in [0, 1, 8] {
            for _run in 0..2 {
                let mut cfg = config(16, workers);
                cfg.prefetch = prefetch;
                let loader = Loader::new(ds.clone(), cfg).expect("loader");
                assert_eq!(
                    collect(&loader, 5),
                    reference,
                    "workers {workers} prefetch {prefetch}"
                );
            }
        }
    }
}

#[test]
fn epochs_and_seeds_differ() {
    let ds = dataset(200, [1, 2, 2]);
    let loader = Loader::new(ds.clone(), config(32, 2)).expect("loader");
    let e0 = indices(&collect(&loader, 0));
    let e1 = indices(&collect(&loader, 1));
    let e2 = indices(&collect(&loader, 2));
    assert_ne!(e0, e1);
    assert_ne!(e1, e2);
    assert_ne!(e0, e2);
    assert_ne!(e0, (0..200).collect::<Vec<u64>>());
    assert_eq!(loader.order(1), e1);

    let mut cfg = config(32, 2);
    cfg.seed = 43;
    let other = Loader::new(ds, cfg).expect("loader");
    assert_ne!(indices(&collect(&other, 0)), e0);
}

#[test]
fn shuffles_are_pinned() {
    // The order the loader has always given for seed 7, epoch 3: a change of generator or
    // of shuffle would silently change every seeded run.
    let mut cfg = config(4, 1);
    cfg.seed = 7;
    let loader = Loader::new(dataset(20, [1, 1, 1]), cfg).expect("loader");
    assert_eq!(
        loader.order(3),
        [
            1, 12, 3, 19, 0, 15, 16, 11, 17, 5, 9, 8, 4, 10, 14, 6, 18, 13, 2, 7
        ]
    );
}

#[test]
fn no_shuffle_is_identity_order() {
    let mut cfg = config(7, 3);
    cfg.shuffle = false;
    let loader = Loader::new(dataset(50, [1, 2, 2]), cfg).expect("loader");
    for epoch in [0, 9] {
        assert_eq!(
            indices(&collect(&loader, epoch)),
            (0..50).collect::<Vec<u64>>()
        );
    }
}

#[test]
fn pixels_and_labels_match_the_indices() {
    let ds = dataset(61, [3, 2, 5]);
    let loader = Loader::new(ds.clone(), config(8, 3)).expect("loader");
    for batch in collect(&loader, 3) {
        let unit = batch.unit();
        for (b, &i) in batch.indices.iter().enumerate() {
            let i = i as usize;
            assert_eq!(batch.labels[b], ds.label(i).expect("label"));
            let image = ds.image(i).expect("image");
            assert_eq!(&batch.data[b * 30..(b + 1) * 30], image);
            let want: Vec<f32> = image.iter().map(|&v| f32::from(v) / 255.0).collect();
            assert_eq!(&unit[b * 30..(b + 1) * 30], &want[..]);
        }
        assert!(unit.iter().all(|v| (0.0..=1.0).contains(v)));
    }
    // The extremes map exactly.
    let ds = Arc::new(ImageDataset::new(vec![0, 255], [1, 1, 2], vec![0], 1).expect("ds"));
    let loader = Loader::new(ds, config(1, 1)).expect("loader");
    assert_eq!(collect(&loader, 0)[0].unit(), [0.0, 1.0]);
}

/// Runs `f` on a thread and fails if it does not finish within `limit`.
fn within(limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(limit)
        .expect("the loader did not shut down in time");
}

#[test]
fn dropping_the_iterator_early_returns_quickly() {
    let ds = dataset(5_000, [3, 32, 32]);
    for (workers, prefetch) in [(1, 0), (4, 2), (8, 16)] {
        let mut cfg = config(64, workers);
        cfg.prefetch = prefetch;
        let loader = Loader::new(ds.clone(), cfg).expect("loader");
        // Dropped after one batch, and before any.
        let l = loader.clone();
        within(Duration::from_secs(20), move || {
            let mut it = l.epoch(0);
            assert!(it.next().is_some());
            std::thread::sleep(Duration::from_millis(20));
            drop(it);
        });
        let l = loader.clone();
        within(Duration::from_secs(20), move || drop(l.epoch(1)));
        // Abandoned midway by a `take`.
        within(Duration::from_secs(20), move || {
            assert_eq!(loader.epoch(2).take(3).count(), 3);
        });
    }
}

#[test]
fn throughput_is_printed() {
    let ds = dataset(10_000, [3, 32, 32]);
    for workers in [1, 4] {
        let cfg = LoaderConfig {
            batch_size: 128,
            shuffle: true,
            seed: 0,
            drop_last: false,
            prefetch: 4,
            workers,
            ..LoaderConfig::default()
        };
        let loader = Loader::new(ds.clone(), cfg).expect("loader");
        let start = Instant::now();
        let samples: usize = loader.epoch(0).map(|b| b.expect("batch").len()).sum();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(samples, 10_000);
        println!(
            "loader throughput, 10k x 3x32x32, batch 128, {workers} worker(s): {:.0} samples/s",
            samples as f64 / secs
        );
    }
}

/// A synthetic dataset: sample `i` is `[steps, width]` with value `i * 100 + t * 10 + j`;
/// reading the samples in `fail` is an error and reading `panic_at` panics.
struct Synthetic {
    n: usize,
    steps: usize,
    width: usize,
    layout: BatchLayout,
    fail: Vec<usize>,
    panic_at: Option<usize>,
}

impl Synthetic {
    fn new(n: usize, steps: usize, width: usize, layout: BatchLayout) -> Self {
        Self {
            n,
            steps,
            width,
            layout,
            fail: vec![],
            panic_at: None,
        }
    }
}

impl Dataset for Synthetic {
    type Elem = f32;

    fn len(&self) -> usize {
        self.n
    }

    fn sample_shape(&self) -> Vec<usize> {
        vec![self.steps, self.width]
    }

    fn layout(&self) -> BatchLayout {
        self.layout
    }

    fn sample(&self, index: usize, out: &mut [f32]) -> Result<u8, DataError> {
        assert_eq!(out.len(), self.steps * self.width);
        if self.panic_at == Some(index) {
            panic!("synthetic panic at sample {index}");
        }
        if self.fail.contains(&index) {
            return Err(DataError::Request(format!("sample {index} is unreadable")));
        }
        for t in 0..self.steps {
            for j in 0..self.width {
                out[t * self.width + j] = (index * 100 + t * 10 + j) as f32;
            }
        }
        Ok((index % 7) as u8)
    }
}

#[test]
fn time_major_batches_put_time_first() {
    let ds = Arc::new(Synthetic::new(11, 3, 2, BatchLayout::TimeMajor));
    for workers in [1, 3] {
        let loader = Loader::new(ds.clone(), config(4, workers)).expect("loader");
        let batches = collect(&loader, 1);
        assert_eq!(
            batches.iter().map(Batch::len).collect::<Vec<_>>(),
            [4, 4, 3]
        );
        for batch in &batches {
            let n = batch.len();
            assert_eq!(batch.shape, [3, n, 2]);
            assert_eq!(batch.layout, BatchLayout::TimeMajor);
            for (b, &i) in batch.indices.iter().enumerate() {
                assert_eq!(batch.labels[b], (i % 7) as u8);
                for t in 0..3 {
                    for j in 0..2 {
                        let want = (i as usize * 100 + t * 10 + j) as f32;
                        assert_eq!(batch.data[(t * n + b) * 2 + j], want, "[{t}, {b}, {j}]");
                    }
                }
            }
        }
    }
    // Sample-major, the same samples are contiguous.
    let ds = Arc::new(Synthetic::new(5, 3, 2, BatchLayout::SampleMajor));
    let batch = &collect(&Loader::new(ds, config(5, 1)).expect("loader"), 0)[0];
    assert_eq!(batch.shape, [5, 3, 2]);
    for (b, &i) in batch.indices.iter().enumerate() {
        assert_eq!(batch.data[b * 6 + 5], (i as usize * 100 + 21) as f32);
    }
}

#[test]
fn a_failing_sample_fails_only_its_batch() {
    let mut ds = Synthetic::new(20, 1, 1, BatchLayout::SampleMajor);
    ds.fail = vec![13];
    let mut cfg = config(5, 2);
    cfg.shuffle = false;
    let loader = Loader::new(Arc::new(ds), cfg).expect("loader");
    for _ in 0..2 {
        let results: Vec<_> = loader.epoch(0).collect();
        assert_eq!(results.len(), 4);
        for (k, r) in results.iter().enumerate() {
            match (k, r) {
                (2, Err(e)) => assert!(e.to_string().contains("sample 13"), "{e}"),
                (2, Ok(_)) => panic!("batch 2 holds sample 13 and must fail"),
                (_, r) => assert!(r.is_ok(), "batch {k}: {r:?}"),
            }
        }
    }
}

#[test]
fn a_worker_panic_reaches_the_consumer() {
    let mut ds = Synthetic::new(40, 1, 1, BatchLayout::SampleMajor);
    ds.panic_at = Some(17);
    let mut cfg = config(4, 2);
    cfg.shuffle = false;
    let loader = Loader::new(Arc::new(ds), cfg).expect("loader");
    let caught = std::panic::catch_unwind(|| loader.epoch(0).count());
    let payload = caught.expect_err("the panic of the worker must reach the consumer");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert_eq!(message, "synthetic panic at sample 17");
}

#[test]
fn unbatchable_samples_and_bad_requests_are_errors() {
    let err = Loader::new(
        Arc::new(Synthetic::new(3, 0, 2, BatchLayout::TimeMajor)),
        config(2, 1),
    )
    .expect_err("T = 0");
    assert!(matches!(err, LoaderError::SampleShape(_)), "{err:?}");
    assert!(err.to_string().contains("T >= 1"), "{err}");
    let err = Loader::new(
        Arc::new(Synthetic::new(
            3,
            1 << 40,
            1 << 30,
            BatchLayout::SampleMajor,
        )),
        config(2, 1),
    )
    .expect_err("too large");
    assert!(err.to_string().contains("too large"), "{err}");

    let ds = dataset(3, [1, 2, 2]);
    let mut out = [0u8; 4];
    let err = ds.sample(3, &mut out).expect_err("past the end");
    assert!(matches!(err, DataError::Request(_)), "{err:?}");
    assert!(err.to_string().contains("holds 3 images"), "{err}");
    let err = ds.sample(0, &mut out[..3]).expect_err("short buffer");
    assert!(err.to_string().contains("holds 3"), "{err}");
    assert_eq!(ds.sample(2, &mut out).expect("sample"), 2);
    assert_eq!(&out[..], ds.image(2).expect("image"));

    // An uploader for this loader needs its largest batch's values plus its labels.
    let loader = Loader::new(ds, config(2, 1)).expect("loader");
    assert_eq!(loader.max_batch_bytes(), 2 * 4 + 2);
    let loader = Loader::new(
        Arc::new(Synthetic::new(3, 3, 5, BatchLayout::TimeMajor)),
        config(2, 1),
    )
    .expect("loader");
    assert_eq!(loader.max_batch_bytes(), 2 * 15 * 4 + 2);
}

/// The shards of an epoch, as PyTorch's `DistributedSampler(shuffle=False)` cuts
/// `range(10)` for 4 replicas: padded with the start to 12, then every 4th from the rank.
#[test]
fn shards_cut_an_epoch_as_distributed_sampler_does() {
    let ds = dataset(10, [1, 2, 2]);
    let want: [&[u64]; 4] = [&[0, 4, 8], &[1, 5, 9], &[2, 6, 0], &[3, 7, 1]];
    for (index, want) in want.iter().enumerate() {
        let cfg = LoaderConfig {
            shuffle: false,
            shard: Shard { index, count: 4 },
            ..config(2, 2)
        };
        let loader = Loader::new(ds.clone(), cfg).expect("loader");
        assert_eq!(loader.num_samples(), 3);
        assert_eq!(loader.num_batches(), 2);
        assert_eq!(indices(&collect(&loader, 0)), *want, "shard {index}");
    }
}

/// Shuffled, the shards of one epoch are cut from one order (the same seed in every
/// process): together they cover every sample, disjoint but for the padding, and a new
/// epoch reshuffles them.
#[test]
fn shuffled_shards_cover_the_epoch_once() {
    let ds = dataset(103, [1, 2, 2]);
    let shards = |epoch: u64| -> Vec<Vec<u64>> {
        (0..4)
            .map(|index| {
                let cfg = LoaderConfig {
                    shard: Shard { index, count: 4 },
                    ..config(8, 2)
                };
                indices(&collect(
                    &Loader::new(ds.clone(), cfg).expect("loader"),
                    epoch,
                ))
            })
            .collect()
    };
    let whole = Loader::new(ds.clone(), config(8, 1))
        .expect("loader")
        .order(1);
    let parts = shards(1);
    assert!(parts.iter().all(|p| p.len() == 26));
    // Interleaved back, the shards are the whole epoch's order, then its first sample
    // again (the padding to 104).
    let interleaved: Vec<u64> = (0..26)
        .flat_map(|i| parts.iter().map(move |p| p[i]))
        .collect();
    assert_eq!(interleaved[..103], whole[..]);
    assert_eq!(interleaved[103], whole[0]);
    assert_ne!(shards(2), parts, "each epoch reshuffles");
}

#[test]
fn a_shard_outside_its_count_is_an_error() {
    let ds = dataset(4, [1, 2, 2]);
    for shard in [Shard { index: 2, count: 2 }, Shard { index: 0, count: 0 }] {
        let cfg = LoaderConfig {
            shard,
            ..config(2, 1)
        };
        let err = Loader::new(ds.clone(), cfg).expect_err("bad shard");
        assert_eq!(err, LoaderError::Shard(shard));
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
