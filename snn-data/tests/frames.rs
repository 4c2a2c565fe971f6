//! Event-to-frame integration (against hand-computed frames), the frame cache, and the CPU
//! spike encodings.

#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::path::{Path, PathBuf};

use snn_data::Event;
use snn_data::encode::{
    EncodeError, direct_encode, grey_to_rgb, philox4x32_10, random_u32, rate_encode,
    rate_encode_batch, rate_spike, u8_to_unit, uniform,
};
use snn_data::frames::{
    CacheKey, FrameCache, FrameCacheStats, FrameError, FrameSpec, Frames, SplitBy, integrate,
    segment_bounds,
};

mod support;

use support::{Rng, random_events};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn ev(t: u64, x: u16, y: u16, p: bool) -> Event {
    Event { t, x, y, p }
}

/// Events at time `t[i]`, all at pixel (0, 0), ON.
fn at_times(ts: &[u64]) -> Vec<Event> {
    ts.iter().map(|&t| ev(t, 0, 0, true)).collect()
}

/// Asserts that `f` has `shape` and that its cells are zero but the listed
/// `(t, c, y, x, count)`.
fn assert_frames(f: &Frames, shape: [usize; 4], cells: &[(usize, usize, usize, usize, f32)]) {
    assert_eq!(f.shape(), shape);
    assert_eq!(f.data(), &expected(shape, cells)[..]);
}

/// A `[T, 2, H, W]` buffer with the listed `(t, c, y, x, count)` cells set.
fn expected(shape: [usize; 4], cells: &[(usize, usize, usize, usize, f32)]) -> Vec<f32> {
    let [t_n, c_n, h, w] = shape;
    let mut v = vec![0.0; t_n * c_n * h * w];
    for &(t, c, y, x, n) in cells {
        v[((t * c_n + c) * h + y) * w + x] = n;
    }
    v
}

/// Per-frame event totals.
fn frame_sums(f: &Frames) -> Vec<f32> {
    (0..f.frames()).map(|t| f.frame(t).iter().sum()).collect()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn assert_no_temp_files(dir: &Path) {
    for f in files_under(dir) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".frames") && !name.starts_with('.'),
            "unexpected file left in the cache: {}",
            f.display()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Split by number
// ---------------------------------------------------------------------------------------

#[test]
fn number_split_divisible() {
    // 3x2 sensor, 6 events, T = 3: di = 2, frames [0,2) [2,4) [4,6).
    let events = [
        ev(0, 0, 0, true),
        ev(1, 2, 1, false),
        ev(2, 1, 0, true),
        ev(3, 1, 0, true),
        ev(4, 0, 1, false),
        ev(5, 2, 0, true),
    ];
    let bounds = segment_bounds(&events, SplitBy::Number, 3).unwrap();
    assert_eq!(bounds, vec![0..2, 2..4, 4..6]);
    let f = integrate(&events, 3, 2, FrameSpec::new(3, SplitBy::Number)).unwrap();
    assert_frames(
        &f,
        [3, 2, 2, 3],
        &[
            (0, 1, 0, 0, 1.0),
            (0, 0, 1, 2, 1.0),
            (1, 1, 0, 1, 2.0), // two ON events at the same pixel count 2
            (2, 0, 1, 0, 1.0),
            (2, 1, 0, 2, 1.0),
        ],
    );
    assert_eq!(f.get(1, 1, 0, 1), 2.0);
}

#[test]
fn number_split_remainder_goes_to_last_frame() {
    // N = 7, T = 3: di = 7 // 3 = 2, j_l = [0, 2, 4], j_r = [2, 4, 7].
    let events: Vec<_> = (0..7).map(|i| ev(i, i as u16, 0, i % 2 == 0)).collect();
    assert_eq!(
        segment_bounds(&events, SplitBy::Number, 3).unwrap(),
        vec![0..2, 2..4, 4..7]
    );
    let f = integrate(&events, 7, 1, FrameSpec::new(3, SplitBy::Number)).unwrap();
    assert_frames(
        &f,
        [3, 2, 1, 7],
        &[
            (0, 1, 0, 0, 1.0),
            (0, 0, 0, 1, 1.0),
            (1, 1, 0, 2, 1.0),
            (1, 0, 0, 3, 1.0),
            (2, 1, 0, 4, 1.0),
            (2, 0, 0, 5, 1.0),
            (2, 1, 0, 6, 1.0),
        ],
    );
    assert_eq!(frame_sums(&f), vec![2.0, 2.0, 3.0]);

    // N = 11, T = 4: di = 2, last frame [6, 11) holds 5.
    let events = at_times(&[0; 11]);
    assert_eq!(
        segment_bounds(&events, SplitBy::Number, 4).unwrap(),
        vec![0..2, 2..4, 4..6, 6..11]
    );
}

#[test]
fn number_split_fewer_events_than_frames() {
    // N = 2 < T = 4: di = 0, so frames 0..3 are empty and the last holds both events.
    let events = [ev(10, 0, 0, false), ev(20, 1, 0, true)];
    assert_eq!(
        segment_bounds(&events, SplitBy::Number, 4).unwrap(),
        vec![0..0, 0..0, 0..0, 0..2]
    );
    let f = integrate(&events, 2, 1, FrameSpec::new(4, SplitBy::Number)).unwrap();
    assert_eq!(frame_sums(&f), vec![0.0, 0.0, 0.0, 2.0]);
    assert_eq!(f.get(3, 0, 0, 0), 1.0);
    assert_eq!(f.get(3, 1, 0, 1), 1.0);
}

#[test]
fn number_split_ignores_time_order() {
    // Splitting by number never looks at timestamps (SpikingJelly neither).
    let events = at_times(&[9, 3, 7, 1]);
    assert_eq!(
        segment_bounds(&events, SplitBy::Number, 2).unwrap(),
        vec![0..2, 2..4]
    );
}

// ---------------------------------------------------------------------------------------
// Split by time
// ---------------------------------------------------------------------------------------

#[test]
fn time_split_with_remainder() {
    // t = [0, 1, 2, 5, 6, 9, 10], T = 3: dt = (10 - 0) // 3 = 3, windows [0,3) [3,6) [6,9);
    // the events at 9 and 10 (past the last window) join the last frame (j_r[-1] = N).
    let ts = [0, 1, 2, 5, 6, 9, 10];
    let events: Vec<_> = ts
        .iter()
        .enumerate()
        .map(|(i, &t)| ev(t, i as u16, 0, i % 3 != 0))
        .collect();
    assert_eq!(
        segment_bounds(&events, SplitBy::Time, 3).unwrap(),
        vec![0..3, 3..4, 4..7]
    );
    let f = integrate(&events, 7, 1, FrameSpec::new(3, SplitBy::Time)).unwrap();
    assert_frames(
        &f,
        [3, 2, 1, 7],
        &[
            (0, 0, 0, 0, 1.0),
            (0, 1, 0, 1, 1.0),
            (0, 1, 0, 2, 1.0),
            (1, 0, 0, 3, 1.0),
            (2, 1, 0, 4, 1.0),
            (2, 1, 0, 5, 1.0),
            (2, 0, 0, 6, 1.0),
        ],
    );
}

#[test]
fn time_split_offset_start_and_exact_boundaries() {
    // t0 = 100, last = 120, T = 4: dt = 5, windows [100,105) [105,110) [110,115) [115,120)
    // plus 120 in the last frame. An event exactly at a window's start belongs to it.
    let events = at_times(&[100, 104, 105, 109, 110, 115, 119, 120]);
    assert_eq!(
        segment_bounds(&events, SplitBy::Time, 4).unwrap(),
        vec![0..2, 2..4, 4..5, 5..8]
    );
    // Non-divisible span: t0 = 0, last = 10, T = 4: dt = 2, windows [0,2) [2,4) [4,6)
    // [6,8), and 8, 9, 10 go to the last frame.
    let events = at_times(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(
        segment_bounds(&events, SplitBy::Time, 4).unwrap(),
        vec![0..2, 2..4, 4..6, 6..11]
    );
}

#[test]
fn time_split_equal_timestamps() {
    // Equal timestamps inside windows: t = [5, 5, 5, 6, 7, 7], T = 2, dt = 1: window
    // [5,6) holds the three 5s; [6,7) holds 6, and 7, 7 join the last frame.
    let events = at_times(&[5, 5, 5, 6, 7, 7]);
    assert_eq!(
        segment_bounds(&events, SplitBy::Time, 2).unwrap(),
        vec![0..3, 3..6]
    );
    let f = integrate(&events, 1, 1, FrameSpec::new(2, SplitBy::Time)).unwrap();
    assert_eq!(f.data(), &[0.0, 3.0, 0.0, 3.0]);

    // All timestamps equal: dt = 0, every window is empty (SpikingJelly raises here);
    // documented behaviour: the first T - 1 frames are empty, the last holds every event.
    let events = at_times(&[42; 5]);
    assert_eq!(
        segment_bounds(&events, SplitBy::Time, 3).unwrap(),
        vec![0..0, 0..0, 0..5]
    );
    let f = integrate(&events, 1, 1, FrameSpec::new(3, SplitBy::Time)).unwrap();
    assert_eq!(frame_sums(&f), vec![0.0, 0.0, 5.0]);

    // A span shorter than T microseconds: dt = 2 // 3 = 0, the same.
    let events = at_times(&[0, 1, 2]);
    assert_eq!(
        segment_bounds(&events, SplitBy::Time, 3).unwrap(),
        vec![0..0, 0..0, 0..3]
    );
}

#[test]
fn time_split_gap_gives_empty_frames() {
    // t = [0, 1, 9, 10], T = 5, dt = 2: windows [0,2) [2,4) [4,6) [6,8) [8,10)+rest.
    // Windows 1..3 hold nothing: empty frames (SpikingJelly raises an IndexError).
    let events = at_times(&[0, 1, 9, 10]);
    assert_eq!(
        segment_bounds(&events, SplitBy::Time, 5).unwrap(),
        vec![0..2, 2..2, 2..2, 2..2, 2..4]
    );
    let f = integrate(&events, 1, 1, FrameSpec::new(5, SplitBy::Time)).unwrap();
    assert_eq!(frame_sums(&f), vec![2.0, 0.0, 0.0, 0.0, 2.0]);
}

#[test]
fn time_split_single_event_and_single_frame() {
    let events = [ev(7, 0, 0, false)];
    assert_eq!(
        segment_bounds(&events, SplitBy::Time, 3).unwrap(),
        vec![0..0, 0..0, 0..1]
    );
    let events = at_times(&[1, 2, 3]);
    assert_eq!(
        segment_bounds(&events, SplitBy::Time, 1).unwrap(),
        vec![0..3]
    );
    assert_eq!(
        segment_bounds(&events, SplitBy::Number, 1).unwrap(),
        vec![0..3]
    );
}

/// SpikingJelly's `cal_fixed_frames_number_segment_index` written out literally (masks over
/// all events per window); `None` where SpikingJelly raises (an empty time window).
fn spikingjelly_bounds(ts: &[u64], split: SplitBy, frames: usize) -> Option<Vec<(usize, usize)>> {
    let n = ts.len();
    let mut j_l = vec![0; frames];
    let mut j_r = vec![0; frames];
    match split {
        SplitBy::Number => {
            let di = n / frames;
            for i in 0..frames {
                j_l[i] = i * di;
                j_r[i] = j_l[i] + di;
            }
        }
        SplitBy::Time => {
            let dt = (ts[n - 1] - ts[0]) / frames as u64;
            for i in 0..frames {
                let t_l = dt * i as u64 + ts[0];
                let t_r = t_l + dt;
                let idx: Vec<usize> = (0..n).filter(|&k| ts[k] >= t_l && ts[k] < t_r).collect();
                j_l[i] = *idx.first()?;
                j_r[i] = *idx.last()? + 1;
            }
        }
    }
    j_r[frames - 1] = n;
    Some(j_l.into_iter().zip(j_r).collect())
}

#[test]
fn matches_spikingjelly_on_random_streams() {
    // Random sorted streams (with runs of equal timestamps), every T from 1 to 12: the
    // bounds and frames equal the literal algorithm's wherever it does not raise, and the
    // time split's empty-window cases are exactly the ones it raises on.
    let mut rng = Rng::new(99);
    let mut next = move |m: u64| rng.below(m);
    let (mut compared, mut raised) = (0, 0);
    for _ in 0..200 {
        let n = 1 + next(60) as usize;
        let mut t = next(1000);
        let events: Vec<Event> = (0..n)
            .map(|_| {
                t += if next(3) == 0 { 0 } else { next(40) };
                ev(t, next(5) as u16, next(4) as u16, next(2) == 1)
            })
            .collect();
        let ts: Vec<u64> = events.iter().map(|e| e.t).collect();
        for frames in 1..=12 {
            for split in [SplitBy::Number, SplitBy::Time] {
                let ours = segment_bounds(&events, split, frames).unwrap();
                let f = integrate(&events, 5, 4, FrameSpec::new(frames, split)).unwrap();
                // Ours always partitions 0..n contiguously.
                assert_eq!(ours[0].start, 0);
                assert_eq!(ours[frames - 1].end, n);
                assert!(ours.windows(2).all(|w| w[0].end == w[1].start));
                assert_eq!(f.data().iter().sum::<f32>(), n as f32);
                let reference = spikingjelly_bounds(&ts, split, frames);
                if split == SplitBy::Time && ours[..frames - 1].iter().any(|r| r.is_empty()) {
                    assert!(
                        reference.is_none(),
                        "an empty time window makes SpikingJelly raise"
                    );
                }
                let Some(reference) = reference else {
                    assert_eq!(split, SplitBy::Time, "the number split never raises");
                    raised += 1;
                    continue;
                };
                compared += 1;
                let ours_pairs: Vec<_> = ours.iter().map(|r| (r.start, r.end)).collect();
                assert_eq!(ours_pairs, reference, "{split} T={frames} t={ts:?}");
                // SpikingJelly's integrate_events_segment_to_frame: counts per (p, y, x).
                let mut want = vec![0.0f32; frames * 2 * 4 * 5];
                for (i, &(l, r)) in reference.iter().enumerate() {
                    for e in &events[l..r] {
                        want[((i * 2 + usize::from(e.p)) * 4 + usize::from(e.y)) * 5
                            + usize::from(e.x)] += 1.0;
                    }
                }
                assert_eq!(f.data(), &want[..], "{split} T={frames}");
            }
        }
    }
    assert!(
        compared > 1000 && raised > 100,
        "compared {compared}, raised {raised}"
    );
}

// ---------------------------------------------------------------------------------------
// Polarity, downsampling, errors
// ---------------------------------------------------------------------------------------

#[test]
fn polarity_channels() {
    // Channel 0 = polarity 0 (OFF), channel 1 = polarity 1 (ON).
    let events = [
        ev(0, 1, 1, false),
        ev(1, 1, 1, false),
        ev(2, 1, 1, true),
        ev(3, 0, 0, true),
    ];
    let f = integrate(&events, 2, 2, FrameSpec::new(1, SplitBy::Number)).unwrap();
    assert_eq!(
        f.data(),
        &[
            0.0, 0.0, //
            0.0, 2.0, // channel 0 (OFF)
            1.0, 0.0, //
            0.0, 1.0, // channel 1 (ON)
        ]
    );
}

#[test]
fn downsampling_divides_coordinates() {
    // 5x3 sensor, factor 2: ceil(5/2) x ceil(3/2) = 3x2; border events (x = 4, y = 2)
    // land in the partial cells rather than being dropped.
    let events = [
        ev(0, 0, 0, true),
        ev(1, 1, 1, true),
        ev(2, 3, 0, true),
        ev(3, 4, 2, false),
        ev(4, 4, 0, true),
        ev(5, 2, 2, true),
    ];
    let spec = FrameSpec::new(1, SplitBy::Number).downsample(2);
    assert_eq!(spec.output_size(5, 3), (3, 2));
    let f = integrate(&events, 5, 3, spec).unwrap();
    assert_frames(
        &f,
        [1, 2, 2, 3],
        &[
            (0, 1, 0, 0, 2.0), // (0,0) and (1,1)
            (0, 1, 0, 1, 1.0), // (3,0)
            (0, 0, 1, 2, 1.0), // (4,2) OFF
            (0, 1, 0, 2, 1.0), // (4,0)
            (0, 1, 1, 1, 1.0), // (2,2)
        ],
    );
}

#[test]
fn downsampling_equals_sum_pooling_when_divisible() {
    // A pseudo-random stream on an 8x6 sensor, factor 2: each output cell is the sum of
    // its 2x2 block of the full-resolution frames.
    let events = random_events(&mut Rng::new(12345), 500, (8, 6), 0, 1000);
    for split in [SplitBy::Number, SplitBy::Time] {
        let full = integrate(&events, 8, 6, FrameSpec::new(3, split)).unwrap();
        let down = integrate(&events, 8, 6, FrameSpec::new(3, split).downsample(2)).unwrap();
        assert_eq!(down.shape(), [3, 2, 3, 4]);
        for t in 0..3 {
            for c in 0..2 {
                for y in 0..3 {
                    for x in 0..4 {
                        let pooled = full.get(t, c, 2 * y, 2 * x)
                            + full.get(t, c, 2 * y, 2 * x + 1)
                            + full.get(t, c, 2 * y + 1, 2 * x)
                            + full.get(t, c, 2 * y + 1, 2 * x + 1);
                        assert_eq!(down.get(t, c, y, x), pooled, "{split} [{t},{c},{y},{x}]");
                    }
                }
            }
        }
        assert_eq!(full.data().iter().sum::<f32>(), 500.0);
        assert_eq!(down.data().iter().sum::<f32>(), 500.0);
    }
}

#[test]
fn integration_errors() {
    let events = [ev(0, 0, 0, true), ev(1, 1, 1, false)];
    let spec = FrameSpec::new(2, SplitBy::Number);
    assert!(matches!(
        integrate(&events, 2, 2, FrameSpec::new(0, SplitBy::Number)),
        Err(FrameError::ZeroFrames)
    ));
    assert!(matches!(
        integrate(&events, 2, 2, FrameSpec::new(0, SplitBy::Time)),
        Err(FrameError::ZeroFrames)
    ));
    assert!(matches!(
        integrate(&[], 2, 2, spec),
        Err(FrameError::EmptyStream)
    ));
    assert!(matches!(
        integrate(&events, 2, 2, spec.downsample(0)),
        Err(FrameError::ZeroDownsample)
    ));
    assert!(matches!(
        integrate(&events, 0, 2, spec),
        Err(FrameError::ZeroSize { .. })
    ));
    // x == width is out of range; the error names the event.
    let err = integrate(&events, 1, 2, spec).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::OutOfRange {
                index: 1,
                x: 1,
                y: 1,
                width: 1,
                height: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "event 1 at (x 1, y 1) is outside the 1x2 sensor"
    );
    let err = integrate(&events, 2, 1, spec).unwrap_err();
    assert!(
        matches!(err, FrameError::OutOfRange { index: 1, y: 1, .. }),
        "{err:?}"
    );
    // The time split needs sorted events.
    let unsorted = at_times(&[0, 5, 3]);
    let err = integrate(&unsorted, 1, 1, FrameSpec::new(2, SplitBy::Time)).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::Unsorted {
                index: 2,
                previous: 5,
                t: 3
            }
        ),
        "{err:?}"
    );
}

#[test]
fn split_names() {
    assert_eq!("number".parse::<SplitBy>().unwrap(), SplitBy::Number);
    assert_eq!("time".parse::<SplitBy>().unwrap(), SplitBy::Time);
    assert!("frames".parse::<SplitBy>().is_err());
    assert_eq!(SplitBy::Time.to_string(), "time");
}

// ---------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------

fn sample_events() -> Vec<Event> {
    (0..100u16)
        .map(|i| ev(u64::from(i) * 10, i % 4, (i / 4) % 3, i % 3 == 0))
        .collect()
}

#[test]
fn cache_miss_then_hit() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = FrameCache::new(tmp.path().join("cache")).unwrap();
    let events = sample_events();
    let spec = FrameSpec::new(4, SplitBy::Time);
    let key = CacheKey::new("toy", "train/0/sample 1.bin", spec);
    let computed = Cell::new(0);
    let compute = || {
        computed.set(computed.get() + 1);
        integrate(&events, 4, 3, spec)
    };

    let first = cache.get_or_compute(&key, compute).unwrap();
    assert_eq!(computed.get(), 1);
    assert_eq!(
        cache.stats(),
        FrameCacheStats {
            hits: 0,
            misses: 1,
            discarded: 0
        }
    );
    assert!(cache.path(&key).is_file());

    let second = cache.get_or_compute(&key, compute).unwrap();
    assert_eq!(computed.get(), 1, "a hit does not compute");
    assert_eq!(second, first);
    assert_eq!(
        cache.stats(),
        FrameCacheStats {
            hits: 1,
            misses: 1,
            discarded: 0
        }
    );

    // A new cache on the same directory (a second run) hits too.
    let again = FrameCache::new(tmp.path().join("cache")).unwrap();
    assert_eq!(again.get_or_compute(&key, compute).unwrap(), first);
    assert_eq!(computed.get(), 1);
    assert_eq!(again.stats().hits, 1);

    // Every key component matters.
    let others = [
        CacheKey::new("toy2", "train/0/sample 1.bin", spec),
        CacheKey::new("toy", "train/0/sample 2.bin", spec),
        CacheKey::new(
            "toy",
            "train/0/sample 1.bin",
            FrameSpec::new(5, SplitBy::Time),
        ),
        CacheKey::new(
            "toy",
            "train/0/sample 1.bin",
            FrameSpec::new(4, SplitBy::Number),
        ),
        CacheKey::new("toy", "train/0/sample 1.bin", spec.downsample(2)),
    ];
    for other in &others {
        assert_ne!(cache.path(other), cache.path(&key));
        let s = other.spec;
        cache
            .get_or_compute(other, || integrate(&events, 4, 3, s))
            .unwrap();
    }
    assert_eq!(
        cache.stats(),
        FrameCacheStats {
            hits: 1,
            misses: 6,
            discarded: 0
        }
    );
    assert_eq!(files_under(tmp.path()).len(), 6);
    assert_no_temp_files(tmp.path());
}

#[test]
fn cache_recomputes_corrupt_and_truncated_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = FrameCache::new(tmp.path()).unwrap();
    let events = sample_events();
    let spec = FrameSpec::new(3, SplitBy::Number);
    let key = CacheKey::new("toy", "7", spec);
    let good = cache
        .get_or_compute(&key, || integrate(&events, 4, 3, spec))
        .unwrap();
    let path = cache.path(&key);
    let original = std::fs::read(&path).unwrap();

    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("payload bit flip", {
            let mut b = original.clone();
            let last = b.len() - 3;
            b[last] ^= 0x10;
            b
        }),
        ("header bit flip", {
            let mut b = original.clone();
            b[20] ^= 1;
            b
        }),
        ("truncated", original[..original.len() - 4].to_vec()),
        ("header only", original[..30].to_vec()),
        ("empty", Vec::new()),
        ("wrong magic", {
            let mut b = original.clone();
            b[0] = b'X';
            b
        }),
        ("previous format version", {
            let mut b = original.clone();
            b[8..12].copy_from_slice(&1u32.to_le_bytes());
            b
        }),
    ];
    for (i, (what, bytes)) in damages.into_iter().enumerate() {
        std::fs::write(&path, &bytes).unwrap();
        let computed = Cell::new(false);
        let frames = cache
            .get_or_compute(&key, || {
                computed.set(true);
                integrate(&events, 4, 3, spec)
            })
            .unwrap();
        assert!(computed.get(), "{what}: recomputed");
        assert_eq!(frames, good, "{what}");
        assert_eq!(cache.stats().discarded, i as u64 + 1, "{what}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            original,
            "{what}: rewritten whole"
        );
    }
    // And the rewritten file is a hit again.
    let hits = cache.stats().hits;
    cache
        .get_or_compute::<_, FrameError>(&key, || panic!("a whole file must not be recomputed"))
        .unwrap();
    assert_eq!(cache.stats().hits, hits + 1);
    assert_no_temp_files(tmp.path());
}

#[test]
fn cache_file_of_another_key_is_not_used() {
    // A file copied over another key's path (a stand-in for a hash collision) is rejected
    // because the file stores its whole key.
    let tmp = tempfile::tempdir().unwrap();
    let cache = FrameCache::new(tmp.path()).unwrap();
    let events = sample_events();
    let spec = FrameSpec::new(2, SplitBy::Number);
    let a = CacheKey::new("toy", "a", spec);
    let b = CacheKey::new("toy", "b", spec);
    cache
        .get_or_compute(&a, || integrate(&events, 4, 3, spec))
        .unwrap();
    std::fs::copy(cache.path(&a), cache.path(&b)).unwrap();
    let computed = Cell::new(false);
    cache
        .get_or_compute(&b, || {
            computed.set(true);
            integrate(&events[..10], 4, 3, spec)
        })
        .unwrap();
    assert!(computed.get());
    assert_eq!(cache.stats().discarded, 1);
}

#[test]
fn cache_errors_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = FrameCache::new(tmp.path()).unwrap();
    let spec = FrameSpec::new(2, SplitBy::Number);
    let key = CacheKey::new("toy", "bad", spec);
    // The computation's error is returned; nothing is written.
    let err = cache
        .get_or_compute(&key, || integrate(&[], 4, 3, spec))
        .unwrap_err();
    assert!(matches!(err, FrameError::EmptyStream));
    // Frames whose T is not the key's are refused.
    let events = sample_events();
    let err = cache
        .get_or_compute(&key, || {
            integrate(&events, 4, 3, FrameSpec::new(3, SplitBy::Number))
        })
        .unwrap_err();
    assert!(matches!(err, FrameError::Shape(_)), "{err:?}");
    assert!(
        files_under(tmp.path()).is_empty(),
        "{:?}",
        files_under(tmp.path())
    );
    assert_eq!(
        cache.stats(),
        FrameCacheStats {
            hits: 0,
            misses: 2,
            discarded: 0
        }
    );
}

#[test]
fn cache_shared_by_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = FrameCache::new(tmp.path()).unwrap();
    let events = sample_events();
    let spec = FrameSpec::new(4, SplitBy::Time);
    let want = integrate(&events, 4, 3, spec).unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for i in 0..20 {
                    let key = CacheKey::new("toy", format!("{}", i % 5), spec);
                    let got = cache.get_or_compute(&key, || integrate(&events, 4, 3, spec));
                    assert_eq!(got.unwrap(), want);
                }
            });
        }
    });
    let stats = cache.stats();
    assert_eq!(stats.hits + stats.misses, 160);
    assert_eq!(stats.discarded, 0);
    assert_eq!(files_under(tmp.path()).len(), 5);
    assert_no_temp_files(tmp.path());
}

// ---------------------------------------------------------------------------------------
// Rate encoding
// ---------------------------------------------------------------------------------------

#[test]
fn philox_known_answers() {
    // Random123's kat_vectors, "philox4x32 10": counter, key -> output.
    assert_eq!(
        philox4x32_10([0; 4], [0; 2]),
        [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
    );
    assert_eq!(
        philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
        [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
    );
    assert_eq!(
        philox4x32_10(
            [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
            [0xa409_3822, 0x299f_31d0]
        ),
        [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
    );
}

#[test]
fn counter_layout_is_as_documented() {
    // counter = [pixel / 4, t, sample lo, sample hi], key = [seed lo, seed hi].
    let seed = 0x0123_4567_89ab_cdef_u64;
    let sample = 0x0000_0007_0000_0009_u64;
    let block = philox4x32_10([2, 5, 9, 7], [0x89ab_cdef, 0x0123_4567]);
    for (w, &word) in block.iter().enumerate() {
        let pixel = 8 + w as u64;
        assert_eq!(random_u32(seed, sample, 5, pixel), word);
        let u = uniform(seed, sample, 5, pixel);
        assert_eq!(u, (word >> 8) as f32 / 16_777_216.0);
        assert!((0.0..1.0).contains(&u));
    }
}

fn test_image(pixels: usize) -> Vec<f32> {
    (0..pixels).map(|j| (j % 17) as f32 / 16.0).collect()
}

#[test]
fn rate_encoding_is_deterministic_and_seeded() {
    let image = test_image(3 * 8 * 8);
    let a = rate_encode(&image, 10, 42, 3).unwrap();
    assert_eq!(a.len(), 10 * image.len());
    assert_eq!(
        rate_encode(&image, 10, 42, 3).unwrap(),
        a,
        "same seed, same spikes"
    );
    assert_ne!(rate_encode(&image, 10, 43, 3).unwrap(), a, "another seed");
    assert_ne!(rate_encode(&image, 10, 42, 4).unwrap(), a, "another sample");
    assert!(
        a.iter().all(|&v| v == 0.0 || v == 1.0),
        "values exactly 0 or 1"
    );
    // The steps do not depend on T: the first 5 steps of T = 10 are T = 5's.
    assert_eq!(rate_encode(&image, 5, 42, 3).unwrap(), a[..5 * image.len()]);
}

#[test]
fn rate_encoding_is_a_pure_function_of_the_counter() {
    let pixels = 2 * 5 * 7; // not a multiple of 4: exercises the partial last block
    let image = test_image(pixels);
    let (seed, sample, steps) = (7u64, 123_456_789_012u64, 6);
    let whole = rate_encode(&image, steps, seed, sample).unwrap();
    for t in 0..steps {
        for j in 0..pixels {
            let alone = rate_spike(seed, sample, t as u32, j as u64, image[j]);
            assert_eq!(
                whole[t * pixels + j],
                f32::from(u8::from(alone)),
                "[{t}, {j}]"
            );
        }
    }

    // A batch [T, B, P] row-for-row equals each image encoded alone with its dataset
    // index, whatever the batch order.
    let images: Vec<Vec<f32>> = (0..3)
        .map(|b| {
            (0..pixels)
                .map(|j| ((j * 7 + b * 3) % 11) as f32 / 10.0)
                .collect()
        })
        .collect();
    let ids = [40u64, 2, 17];
    for order in [[0, 1, 2], [2, 0, 1]] {
        let flat: Vec<f32> = order.iter().flat_map(|&b| images[b].clone()).collect();
        let sample_ids: Vec<u64> = order.iter().map(|&b| ids[b]).collect();
        let batch = rate_encode_batch(&flat, pixels, &sample_ids, steps, seed).unwrap();
        assert_eq!(batch.len(), steps * 3 * pixels);
        for (pos, &b) in order.iter().enumerate() {
            let alone = rate_encode(&images[b], steps, seed, ids[b]).unwrap();
            for t in 0..steps {
                let row = &batch[(t * 3 + pos) * pixels..(t * 3 + pos + 1) * pixels];
                assert_eq!(
                    row,
                    &alone[t * pixels..(t + 1) * pixels],
                    "image {b}, t {t}"
                );
            }
        }
    }
}

#[test]
fn rate_encoding_fires_at_the_intensity() {
    // n = T * P = 200 * 5000 = 10^6 Bernoulli(p) draws per intensity. The mean's standard
    // deviation is sqrt(p (1 - p) / n) <= 5e-4; a 6-sigma tolerance fails a correct
    // generator with probability ~2e-9 (and the test is deterministic: fixed seed). The
    // generator's own bias, |ceil(p * 2^24) / 2^24 - p| < 6e-8, is negligible.
    let (steps, pixels) = (200usize, 5000usize);
    let n = (steps * pixels) as f64;
    for p in [0.01f32, 0.1, 0.25, 0.5, 0.73, 0.9, 0.99] {
        let image = vec![p; pixels];
        let spikes = rate_encode(&image, steps, 2024, 11).unwrap();
        let mean = spikes.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let p64 = f64::from(p);
        let sigma = (p64 * (1.0 - p64) / n).sqrt();
        assert!(
            (mean - p64).abs() < 6.0 * sigma,
            "intensity {p}: rate {mean}, |diff| {} > 6 sigma = {}",
            (mean - p64).abs(),
            6.0 * sigma
        );
        // Independence of consecutive steps: P(spike at t and t+1) = p^2, same tolerance.
        let m = ((steps - 1) * pixels) as f64;
        let pairs = (0..steps - 1)
            .flat_map(|t| (0..pixels).map(move |j| (t, j)))
            .filter(|&(t, j)| spikes[t * pixels + j] == 1.0 && spikes[(t + 1) * pixels + j] == 1.0)
            .count() as f64
            / m;
        let q = p64 * p64;
        let sigma2 = (q * (1.0 - q) / m).sqrt();
        assert!(
            (pairs - q).abs() < 6.0 * sigma2,
            "intensity {p}: pair rate {pairs}, expected {q}"
        );
    }
    // 0 never fires, 1 always does.
    let edge = rate_encode(&[0.0, 1.0, 0.0, 1.0, 1.0], 1000, 5, 0).unwrap();
    for (i, &v) in edge.iter().enumerate() {
        assert_eq!(
            v,
            if [0.0, 1.0, 0.0, 1.0, 1.0][i % 5] == 1.0 {
                1.0
            } else {
                0.0
            }
        );
    }
}

#[test]
fn rate_encoding_errors() {
    assert_eq!(rate_encode(&[0.5], 0, 0, 0), Err(EncodeError::ZeroSteps));
    assert_eq!(
        rate_encode(&[0.5, 1.5], 2, 0, 0),
        Err(EncodeError::OutOfRange {
            index: 1,
            value: 1.5
        })
    );
    assert!(matches!(
        rate_encode(&[-0.0, -0.1], 2, 0, 0),
        Err(EncodeError::OutOfRange { index: 1, .. })
    ));
    assert!(matches!(
        rate_encode(&[f32::NAN], 2, 0, 0),
        Err(EncodeError::OutOfRange { index: 0, .. })
    ));
    assert!(matches!(
        rate_encode_batch(&[0.5; 5], 2, &[0, 1], 2, 0),
        Err(EncodeError::Shape(_))
    ));
    assert_eq!(
        rate_encode_batch(&[0.5; 4], 2, &[0, 1], 0, 0),
        Err(EncodeError::ZeroSteps)
    );
}

// ---------------------------------------------------------------------------------------
// Direct encoding, grey to RGB, u8
// ---------------------------------------------------------------------------------------

#[test]
fn direct_encoding_repeats_exactly() {
    let batch = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6]; // [B = 2, P = 3]
    let out = direct_encode(&batch, 3).unwrap();
    assert_eq!(out.len(), 18);
    for t in 0..3 {
        assert_eq!(&out[t * 6..(t + 1) * 6], &batch[..]);
    }
    assert_eq!(direct_encode(&batch, 0), Err(EncodeError::ZeroSteps));
}

#[test]
fn grey_to_rgb_exact() {
    // Two 1x2x2 grey images -> two 3x2x2 images.
    let grey = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let rgb = grey_to_rgb(&grey, 4).unwrap();
    assert_eq!(
        rgb,
        vec![
            1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, //
            5.0, 6.0, 7.0, 8.0, 5.0, 6.0, 7.0, 8.0, 5.0, 6.0, 7.0, 8.0,
        ]
    );
    assert!(matches!(grey_to_rgb(&grey, 3), Err(EncodeError::Shape(_))));
    assert!(matches!(grey_to_rgb(&grey, 0), Err(EncodeError::Shape(_))));
}

#[test]
fn u8_normalised_to_unit() {
    let v = u8_to_unit(&[0, 255, 51, 128]);
    assert_eq!(v[0], 0.0);
    assert_eq!(v[1], 1.0);
    assert_eq!(v[2], 51.0 / 255.0);
    assert_eq!(v[3], 128.0 / 255.0);
    // Normalised MNIST-like bytes rate-encode without error.
    let bytes: Vec<u8> = (0..=255).collect();
    assert!(rate_encode(&u8_to_unit(&bytes), 4, 1, 0).is_ok());
}
