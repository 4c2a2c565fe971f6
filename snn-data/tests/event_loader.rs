//! The event-dataset loaders: N-MNIST and DVS128 Gesture files written in their real
//! formats, integrated into frames through the frame cache and batched time-major
//! `[T, B, 2, H, W]`; checked against hand-computed frames and against frames integrated
//! sample by sample, for determinism, the cache, `u8` counts, precomputation and errors.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use snn_data::dvs_gesture::read_aedat;
use snn_data::frames::{FrameCache, FrameSpec, SplitBy, integrate};
use snn_data::nmnist::read_events;
use snn_data::{
    Batch, BatchLayout, DataError, Dataset, DvsGesture, EventFrames, EventSource, GestureSplit,
    Loader, LoaderConfig, NMnist, Split,
};
use tempfile::TempDir;

mod support;

use support::{Rng, aedat, nmnist_bytes, nmnist_file, random_events};

// ---------------------------------------------------------------------------------------
// Files in the real formats
// ---------------------------------------------------------------------------------------

/// `Train` with `per_digit` files per digit and `Test` with one; sample (digit 0, file 0)
/// of Train holds the hand-made events of [`hand_events`].
fn nmnist_dir(per_digit: usize) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (split, count) in [("Train", per_digit), ("Test", 1)] {
        for digit in 0..10u8 {
            let d = dir.path().join(split).join(digit.to_string());
            fs::create_dir_all(&d).unwrap();
            for k in 0..count {
                let bytes = if split == "Train" && digit == 0 && k == 0 {
                    nmnist_bytes(&hand_events())
                } else {
                    let mut rng = Rng::new(u64::from(digit) * 1000 + k as u64 + 7);
                    nmnist_file(&random_events(&mut rng, 40 + 7 * k, (34, 34), 0, 300_000))
                };
                fs::write(d.join(format!("{k:05}.bin")), bytes).unwrap();
            }
        }
    }
    dir
}

/// Five events for hand-computed frames: with T = 2 split by number (2 per frame, the
/// last frame takes the remainder) frame 0 holds the first two and frame 1 the other
/// three.
fn hand_events() -> Vec<(u8, u8, bool, u32)> {
    vec![
        (3, 4, true, 10),
        (3, 4, true, 20),
        (33, 0, false, 30),
        (0, 33, true, 40),
        (0, 33, true, 50),
    ]
}

fn config(batch_size: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle: true,
        seed: 7,
        drop_last: false,
        prefetch: 2,
        workers,
        ..LoaderConfig::default()
    }
}

fn collect<D: Dataset>(loader: &Loader<D>, epoch: u64) -> Vec<Batch<D::Elem>> {
    loader.epoch(epoch).collect::<Result<_, _>>().unwrap()
}

/// Value `[t, b, c, y, x]` of a time-major frame batch.
fn at<E: Copy>(batch: &Batch<E>, t: usize, b: usize, c: usize, y: usize, x: usize) -> E {
    let [_, n, channels, h, w] = batch.shape[..] else {
        panic!("not a frame batch: {:?}", batch.shape)
    };
    batch.data[(((t * n + b) * channels + c) * h + y) * w + x]
}

/// Sample `b` of a time-major batch as `[T, 2, H, W]`.
fn sample_of<E: Copy>(batch: &Batch<E>, b: usize) -> Vec<E> {
    let steps = batch.shape[0];
    let n = batch.shape[1];
    let step: usize = batch.shape[2..].iter().product();
    (0..steps)
        .flat_map(|t| batch.data[(t * n + b) * step..(t * n + b + 1) * step].to_vec())
        .collect()
}

// ---------------------------------------------------------------------------------------
// N-MNIST
// ---------------------------------------------------------------------------------------

#[test]
fn nmnist_batches_are_time_major_frames_of_each_sample() {
    let dir = nmnist_dir(3);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(FrameCache::new(cache_dir.path()).unwrap());
    let spec = FrameSpec::new(4, SplitBy::Number);
    let source = NMnist::open(dir.path(), Split::Train).unwrap();
    let frames = Arc::new(EventFrames::new(source, spec, Some(cache.clone())).unwrap());
    assert_eq!(frames.sample_shape(), [4, 2, 34, 34]);
    assert_eq!(frames.layout(), BatchLayout::TimeMajor);
    let loader = Loader::new(frames.clone(), config(7, 2)).unwrap();
    let batches = collect(&loader, 0);
    // 30 samples in batches of 7: the last one partial.
    assert_eq!(
        batches.iter().map(Batch::len).collect::<Vec<_>>(),
        [7, 7, 7, 7, 2]
    );
    let mut seen = Vec::new();
    for batch in &batches {
        assert_eq!(batch.shape, [4, batch.len(), 2, 34, 34]);
        for (b, &i) in batch.indices.iter().enumerate() {
            let sample = &frames.source().samples()[i as usize];
            assert_eq!(batch.labels[b], sample.label);
            let want = integrate(read_events(&sample.path).unwrap().events(), 34, 34, spec)
                .unwrap()
                .into_vec();
            assert_eq!(sample_of(batch, b), want, "sample {i}");
            seen.push(i);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..30).collect::<Vec<u64>>());
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (0, 30));

    // Sample 0 (digit 0, the first file) holds the hand-made events.
    let (b, batch) = batches
        .iter()
        .find_map(|batch| {
            let b = batch.indices.iter().position(|&i| i == 0)?;
            Some((b, batch))
        })
        .unwrap();
    let total: f32 = sample_of(batch, b).iter().sum();
    assert_eq!(total, 5.0);
    // T = 4 with 5 events: di = 1, frames 0..2 one event each, frame 3 the last two.
    assert_eq!(at(batch, 0, b, 1, 4, 3), 1.0);
    assert_eq!(at(batch, 1, b, 1, 4, 3), 1.0);
    assert_eq!(at(batch, 2, b, 0, 0, 33), 1.0);
    assert_eq!(at(batch, 3, b, 1, 33, 0), 2.0);
}

#[test]
fn nmnist_loading_is_deterministic_and_cached() {
    let dir = nmnist_dir(2);
    let cache_dir = tempfile::tempdir().unwrap();
    let spec = FrameSpec::new(3, SplitBy::Time).downsample(2);
    let open = |cache: Option<Arc<FrameCache>>| {
        let source = NMnist::open(dir.path(), Split::Train).unwrap();
        Arc::new(EventFrames::new(source, spec, cache).unwrap())
    };
    // The reference: no cache, one worker.
    let reference = collect(&Loader::new(open(None), config(6, 1)).unwrap(), 3);
    assert_eq!(reference[0].shape, [3, 6, 2, 17, 17]);

    let cache = Arc::new(FrameCache::new(cache_dir.path()).unwrap());
    let cached = open(Some(cache.clone()));
    for workers in [1, 3] {
        let loader = Loader::new(cached.clone(), config(6, workers)).unwrap();
        assert_eq!(collect(&loader, 3), reference, "{workers} workers");
    }
    // The first pass integrated each sample once; the second only read the cache.
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (20, 20));

    // A second run (a new cache object on the same folder) integrates nothing.
    let cache = Arc::new(FrameCache::new(cache_dir.path()).unwrap());
    let loader = Loader::new(open(Some(cache.clone())), config(6, 2)).unwrap();
    assert_eq!(collect(&loader, 3), reference);
    assert_eq!(cache.stats().misses, 0);

    // Another epoch is another order of the same samples.
    let other = collect(&loader, 4);
    assert_ne!(
        other
            .iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>(),
        reference
            .iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn u8_counts_equal_f32_counts_and_saturate() {
    let dir = nmnist_dir(1);
    // One extra sample with 300 events on one cell (digit 9, sorted last).
    let many: Vec<(u8, u8, bool, u32)> = (0..300).map(|t| (5, 6, false, t)).collect();
    fs::write(dir.path().join("Train/9/99999.bin"), nmnist_bytes(&many)).unwrap();
    let spec = FrameSpec::new(1, SplitBy::Number);
    let f32s =
        EventFrames::new(NMnist::open(dir.path(), Split::Train).unwrap(), spec, None).unwrap();
    let u8s = EventFrames::new(NMnist::open(dir.path(), Split::Train).unwrap(), spec, None)
        .unwrap()
        .into_u8_counts();
    let mut cfg = config(4, 2);
    cfg.shuffle = false;
    let a = collect(&Loader::new(Arc::new(f32s), cfg).unwrap(), 0);
    let b = collect(&Loader::new(Arc::new(u8s), cfg).unwrap(), 0);
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(
            (&a.indices, &a.labels, &a.shape),
            (&b.indices, &b.labels, &b.shape)
        );
        for (&x, &y) in a.data.iter().zip(&b.data) {
            assert_eq!(x.min(255.0), f32::from(y));
        }
    }
    // The last sample (index 10) has a count of 300 at (c 0, y 6, x 5): 255 as u8.
    let (last_a, last_b) = (a.last().unwrap(), b.last().unwrap());
    let k = last_a.indices.iter().position(|&i| i == 10).unwrap();
    assert_eq!(at(last_a, 0, k, 0, 6, 5), 300.0);
    assert_eq!(at(last_b, 0, k, 0, 6, 5), 255);
}

#[test]
fn a_corrupt_event_file_fails_its_batch_and_names_the_file() {
    let dir = nmnist_dir(2);
    let bad = dir.path().join("Train/4/00001.bin");
    // Truncated: 2 bytes short of a whole event.
    let bytes = fs::read(&bad).unwrap();
    fs::write(&bad, &bytes[..bytes.len() - 2]).unwrap();
    let source = NMnist::open(dir.path(), Split::Train).unwrap();
    let bad_index = source.samples().iter().position(|s| s.path == bad).unwrap() as u64;
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(FrameCache::new(cache_dir.path()).unwrap());
    let frames = Arc::new(
        EventFrames::new(source, FrameSpec::new(2, SplitBy::Number), Some(cache)).unwrap(),
    );
    let mut cfg = config(5, 2);
    cfg.shuffle = false;
    let loader = Loader::new(frames.clone(), cfg).unwrap();
    let results: Vec<_> = loader.epoch(0).collect();
    assert_eq!(results.len(), 4);
    for (k, r) in results.iter().enumerate() {
        if k == bad_index as usize / 5 {
            let e = r.as_ref().unwrap_err();
            assert!(matches!(e, DataError::Truncated { .. }), "{e:?}");
            assert_eq!(e.path(), bad);
            assert!(e.to_string().contains("00001.bin"), "{e}");
        } else {
            assert!(r.is_ok(), "batch {k}: {r:?}");
        }
    }
    // Nothing was cached for the bad sample; asking for a sample past the end is a
    // request error.
    assert!(frames.frames(bad_index as usize).is_err());
    let err = frames.frames(20).unwrap_err();
    assert!(matches!(err, DataError::Request(_)), "{err:?}");
    assert!(err.to_string().contains("holds 20 samples"), "{err}");
    let mut short = vec![0.0f32; 3];
    assert!(matches!(
        frames.sample(0, &mut short),
        Err(DataError::Request(_))
    ));
}

#[test]
fn zero_frames_or_downsampling_are_errors() {
    let dir = nmnist_dir(1);
    let source = || NMnist::open(dir.path(), Split::Test).unwrap();
    assert!(EventFrames::new(source(), FrameSpec::new(0, SplitBy::Number), None).is_err());
    let spec = FrameSpec::new(2, SplitBy::Number).downsample(0);
    assert!(EventFrames::new(source(), spec, None).is_err());
}

// ---------------------------------------------------------------------------------------
// DVS128 Gesture
// ---------------------------------------------------------------------------------------

/// Users 01 and 02 train and 24 test, each recording 400 events over 0..60000 us cut into
/// three gestures: 0..20000 (class 1), 20000..45000 (class 11), 45000..60000 (class 5);
/// user 02's third span (60000..70000) is empty.
fn gesture_dir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("DvsGesture");
    fs::create_dir(&root).unwrap();
    for (r, name) in ["user01_fluorescent", "user02_lab", "user24_led"]
        .iter()
        .enumerate()
    {
        let events = random_events(&mut Rng::new(r as u64 + 1), 400, (128, 128), 0, 60_000);
        fs::write(root.join(format!("{name}.aedat")), aedat(&events, 50)).unwrap();
        let last = if r == 1 { "60000,70000" } else { "45000,60000" };
        fs::write(
            root.join(format!("{name}_labels.csv")),
            format!("class,startTime_usec,endTime_usec\n1,0,20000\n11,20000,45000\n5,{last}\n"),
        )
        .unwrap();
    }
    fs::write(
        root.join("trials_to_train.txt"),
        "user01_fluorescent.aedat\nuser02_lab.aedat\n",
    )
    .unwrap();
    fs::write(root.join("trials_to_test.txt"), "user24_led.aedat\n").unwrap();
    dir
}

fn gesture_split(dir: &Path, split: Split) -> GestureSplit {
    DvsGesture::open(dir).unwrap().split(split).unwrap()
}

#[test]
fn gesture_split_lists_every_span() {
    let dir = gesture_dir();
    let train = gesture_split(dir.path(), Split::Train);
    assert_eq!(train.len(), 6);
    assert_eq!(train.recordings().len(), 2);
    assert_eq!(
        train
            .samples()
            .iter()
            .map(|s| s.span.label)
            .collect::<Vec<_>>(),
        [0, 10, 4, 0, 10, 4]
    );
    assert_eq!(train.recording_samples(1), 3..6);
    assert_eq!(train.recording_samples(2), 0..0);
    assert_eq!(train.groups(), [0..3, 3..6]);
    assert_eq!(train.sample_id(4), "user02_lab/1-20000-45000");
    assert_eq!(
        train.sample_path(4),
        dir.path().join("DvsGesture/user02_lab.aedat")
    );
    // Reading one sample equals cutting the recording.
    let all = read_aedat(&train.recordings()[0].aedat).unwrap();
    let (events, label) = train.read(1).unwrap();
    assert_eq!(label, 10);
    assert_eq!(events, all.between(20_000, 45_000));
    assert_eq!(train.read_recording(0).unwrap()[1], (events, 10));
    assert!(matches!(train.read(6), Err(DataError::Request(_))));
    assert!(matches!(
        train.read_recording(2),
        Err(DataError::Request(_))
    ));
    assert_eq!(gesture_split(dir.path(), Split::Test).len(), 3);
}

#[test]
fn gesture_batches_match_integrated_spans_and_precompute_fills_the_cache() {
    let dir = gesture_dir();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(FrameCache::new(cache_dir.path()).unwrap());
    let spec = FrameSpec::new(3, SplitBy::Number).downsample(4);
    let frames = Arc::new(
        EventFrames::new(
            gesture_split(dir.path(), Split::Train),
            spec,
            Some(cache.clone()),
        )
        .unwrap()
        .into_u8_counts(),
    );
    assert_eq!(frames.frame_size(), (32, 32));
    // Two groups (recordings), six samples integrated; a second pass finds them all.
    assert_eq!(frames.precompute(2).unwrap(), 6);
    assert_eq!(frames.precompute(2).unwrap(), 0);
    let misses = cache.stats().misses;

    let loader = Loader::new(frames.clone(), config(4, 2)).unwrap();
    let batches = collect(&loader, 0);
    assert_eq!(batches.iter().map(Batch::len).collect::<Vec<_>>(), [4, 2]);
    assert_eq!(
        cache.stats().misses,
        misses,
        "the loader only reads the cache"
    );
    let source = frames.source();
    for batch in &batches {
        assert_eq!(batch.shape, [3, batch.len(), 2, 32, 32]);
        for (b, &i) in batch.indices.iter().enumerate() {
            let s = source.samples()[i as usize];
            assert_eq!(batch.labels[b], s.span.label);
            let events = read_aedat(&source.recordings()[s.recording].aedat)
                .unwrap()
                .between(s.span.start, s.span.end);
            let got: Vec<f32> = sample_of(batch, b).into_iter().map(f32::from).collect();
            if events.is_empty() {
                // User 02's third span holds no event: all-zero frames.
                assert_eq!(i, 5);
                assert!(got.iter().all(|&v| v == 0.0));
            } else {
                let want = integrate(events.events(), 128, 128, spec)
                    .unwrap()
                    .into_vec();
                assert_eq!(got, want, "sample {i}");
                assert_eq!(got.iter().sum::<f32>(), events.len() as f32);
            }
        }
    }
}

#[test]
fn gesture_precompute_reports_the_first_failing_recording() {
    let dir = gesture_dir();
    let root = dir.path().join("DvsGesture");
    // Recording 2 of the train split (user02) is cut mid-packet.
    let bad = root.join("user02_lab.aedat");
    let bytes = fs::read(&bad).unwrap();
    fs::write(&bad, &bytes[..bytes.len() - 5]).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(FrameCache::new(cache_dir.path()).unwrap());
    let frames = EventFrames::new(
        gesture_split(dir.path(), Split::Train),
        FrameSpec::new(2, SplitBy::Time),
        Some(cache),
    )
    .unwrap();
    for workers in [1, 4] {
        let err = frames.precompute(workers).unwrap_err();
        assert_eq!(err.path(), bad);
        assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
    }
    // The good recording's samples were cached and the loader still reads them.
    assert!(frames.frames(0).is_ok());
    assert!(frames.frames(3).is_err());
}
