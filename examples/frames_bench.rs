//! Throughput of event-to-frame integration (events per second), of the frame cache's
//! reads, and of CPU rate encoding, on synthetic streams shaped like the real datasets.
//!
//! `cargo run --release --example frames_bench`

use std::hint::black_box;
use std::time::Duration;

use snn::data::encode::rate_encode;
use snn::data::frames::{CacheKey, FrameCache, FrameError, FrameSpec, SplitBy, integrate};

// Synthetic event streams and the timer, shared with snn-data's tests and loader_bench.
#[path = "../snn-data/tests/support/mod.rs"]
mod support;

use support::{Rng, best_of, random_events};

fn main() {
    let budget = Duration::from_millis(400);
    let datasets = [
        // DVS128 Gesture: ~300k events in a ~6 s clip, 128x128.
        (
            "dvs-gesture-like",
            random_events(&mut Rng::new(1), 300_000, (128, 128), 0, 6_000_000),
            128usize,
            128usize,
        ),
        // N-MNIST: ~4k events in ~300 ms, 34x34.
        (
            "nmnist-like",
            random_events(&mut Rng::new(2), 4_000, (34, 34), 0, 300_000),
            34,
            34,
        ),
    ];
    println!("frame integration (best of repeated runs, one thread):");
    for (name, events, w, h) in &datasets {
        for split in [SplitBy::Number, SplitBy::Time] {
            for (frames, factor) in [(16, 1), (16, 4), (8, 1)] {
                let spec = FrameSpec::new(frames, split).downsample(factor);
                let t = best_of(budget, || {
                    black_box(integrate(black_box(events), *w, *h, spec).expect("valid stream"));
                });
                println!(
                    "  {name:18} {split:6} T={frames:2} ds={factor}: {:7.1} M events/s  ({:8.1} us/sample, {:.0} samples/s)",
                    events.len() as f64 / t.as_secs_f64() / 1e6,
                    t.as_secs_f64() * 1e6,
                    1.0 / t.as_secs_f64()
                );
            }
        }
    }

    let dir = std::env::temp_dir().join(format!("snn-frames-bench-{}", std::process::id()));
    let cache = FrameCache::new(&dir).expect("cache directory");
    println!("frame cache reads (hits):");
    for (name, events, w, h) in &datasets {
        let spec = FrameSpec::new(16, SplitBy::Number);
        let key = CacheKey::new(*name, "0", spec);
        let frames = cache
            .get_or_compute(&key, || integrate(events, *w, *h, spec))
            .expect("cache write");
        let bytes = frames.data().len() * 4;
        let t = best_of(budget, || {
            black_box(
                cache
                    .get_or_compute::<_, FrameError>(&key, || unreachable!("a hit"))
                    .expect("cache read"),
            );
        });
        println!(
            "  {name:18} T=16: {:8.1} us/sample, {:.2} GB/s of frames",
            t.as_secs_f64() * 1e6,
            bytes as f64 / t.as_secs_f64() / 1e9
        );
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!("CPU rate encoding (Philox-4x32-10):");
    for (name, pixels) in [("mnist 1x28x28", 784usize), ("cifar 3x32x32", 3072)] {
        let image: Vec<f32> = (0..pixels).map(|j| (j % 256) as f32 / 255.0).collect();
        let steps = 8;
        let t = best_of(budget, || {
            black_box(rate_encode(black_box(&image), steps, 42, 7).expect("valid image"));
        });
        println!(
            "  {name:18} T={steps}: {:7.1} M spikes/s  ({:.0} samples/s)",
            (pixels * steps) as f64 / t.as_secs_f64() / 1e6,
            1.0 / t.as_secs_f64()
        );
    }
}
