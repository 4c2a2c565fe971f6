//! Samples per second of every data loader (MNIST, CIFAR-10, N-MNIST, DVS128 Gesture), of
//! event-to-frame integration and, with a GPU, of pinned asynchronous uploads and of the
//! whole pipeline loader -> upload -> rate encoding.
//!
//! There is no internet on the machines this was written on, so the datasets are
//! synthetic: files written in the real formats (IDX, CIFAR-10 binary batches, N-MNIST
//! `.bin` event files, AEDAT 3.1 recordings with label CSVs) with the real shapes and
//! event counts of the order of the real ones, then read by the real readers. Reading and
//! integrating cost the same per byte and per event as with the real files.
//!
//! `cargo run --release --example loader_bench` (`-- --help` for the sizes).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use snn::data::frames::{FrameCache, FrameSpec, SplitBy, integrate};
use snn::data::{
    Cifar10, DataError, Dataset, DvsGesture, EventFrames, ImageDataset, Loader, LoaderConfig,
    Mnist, NMnist, Split,
};
use snn::runtime::Device;
use snn::runtime::codegen::Dtype;
use snn::runtime::encode::rate_encode;
use snn::runtime::staging::{Upload, Uploader};

// Synthetic files in the real formats, shared with snn-data's tests.
#[path = "../snn-data/tests/support/mod.rs"]
mod support;

use support::files::{write_cifar, write_gestures, write_mnist, write_nmnist};
use support::{Rng, best_of};

#[derive(Parser, Debug)]
#[command(about = "Throughput of the data loaders, frame integration and GPU uploads")]
struct Args {
    /// Images in the synthetic MNIST and CIFAR-10 splits (CIFAR-10's training set size).
    #[arg(long, default_value_t = 50_000)]
    images: usize,
    /// N-MNIST samples (about 4000 events each, like the real ones).
    #[arg(long, default_value_t = 2_000)]
    nmnist: usize,
    /// DVS128 Gesture recordings (11 gestures each, as in the real dataset).
    #[arg(long, default_value_t = 4)]
    recordings: usize,
    /// Events per gesture (the real ones have 100k to 1M).
    #[arg(long, default_value_t = 150_000)]
    gesture_events: usize,
    /// Samples per batch.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Frames per event sample.
    #[arg(long, default_value_t = 16)]
    steps: usize,
    /// Most loader worker threads (default: the number of CPU cores).
    #[arg(long)]
    workers: Option<usize>,
}

/// The image dataset `load` reads, after printing its images per second.
fn parsed(name: &str, load: impl FnOnce() -> Result<ImageDataset, DataError>) -> Arc<ImageDataset> {
    let t = Instant::now();
    let ds = load().unwrap_or_else(|e| panic!("{name} does not read: {e}"));
    println!(
        "  {name} parse: {:.0} images/s",
        ds.len() as f64 / t.elapsed().as_secs_f64()
    );
    Arc::new(ds)
}

fn config(batch: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: batch,
        shuffle: true,
        seed: 0,
        drop_last: false,
        prefetch: 4,
        workers,
        ..LoaderConfig::default()
    }
}

/// Runs one epoch; samples per second.
fn epoch_rate<D: Dataset>(loader: &Loader<D>, epoch: u64) -> f64 {
    let start = Instant::now();
    let mut samples = 0;
    for batch in loader.epoch(epoch) {
        let batch = batch.expect("the synthetic files read");
        samples += black_box(batch).len();
    }
    samples as f64 / start.elapsed().as_secs_f64()
}

/// The best of `epochs` epochs (the first one warms caches and the page cache).
fn best_rate<D: Dataset>(loader: &Loader<D>, epochs: u64) -> f64 {
    (0..epochs)
        .map(|e| epoch_rate(loader, e))
        .fold(0.0, f64::max)
}

fn main() {
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let most = args.workers.unwrap_or(cores).max(1);
    let worker_counts: Vec<usize> = if most > 1 { vec![1, most] } else { vec![1] };
    let tmp = std::env::temp_dir().join(format!("snn-loader-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut rng = Rng::new(42);
    println!(
        "synthetic data in the real formats, {cores} CPU cores, batch {}",
        args.batch
    );

    // Static images.
    let t = Instant::now();
    write_mnist(&tmp.join("mnist"), Split::Test, args.images, &mut rng);
    write_cifar(&tmp.join("cifar"), Split::Test, args.images, &mut rng);
    println!(
        "  wrote {} MNIST and CIFAR-10 images in {:.1} s",
        args.images,
        t.elapsed().as_secs_f64()
    );
    let image_sets: Vec<(&str, Arc<ImageDataset>)> = vec![
        (
            "MNIST 1x28x28",
            parsed("MNIST", || Mnist::load(tmp.join("mnist"), Split::Test)),
        ),
        (
            "CIFAR-10 3x32x32",
            parsed("CIFAR-10", || Cifar10::load(tmp.join("cifar"), Split::Test)),
        ),
    ];
    println!("image loaders (u8 batches [B, C, H, W], best of 3 epochs):");
    for (name, ds) in &image_sets {
        for &w in &worker_counts {
            let loader = Loader::new(ds.clone(), config(args.batch, w)).expect("loader");
            println!(
                "  {name:18} {w} worker(s): {:>9.0} samples/s",
                best_rate(&loader, 3)
            );
        }
    }

    // Event datasets.
    let t = Instant::now();
    write_nmnist(&tmp.join("nmnist"), Split::Test, args.nmnist, &mut rng);
    write_gestures(
        &tmp.join("dvs"),
        (args.recordings, args.recordings),
        args.gesture_events,
        &mut rng,
    );
    println!(
        "  wrote {} N-MNIST samples and {} DVS128 Gesture recordings ({} gestures of {} events) in {:.1} s",
        args.nmnist,
        args.recordings,
        11 * args.recordings,
        args.gesture_events,
        t.elapsed().as_secs_f64()
    );
    let spec = FrameSpec::new(args.steps, SplitBy::Number);
    println!(
        "event loaders (T = {}, split by number, full resolution, batches [T, B, 2, H, W]):",
        args.steps
    );
    let nmnist = || NMnist::open(tmp.join("nmnist"), Split::Test).expect("N-MNIST opens");
    for &w in &worker_counts {
        let cache =
            Arc::new(FrameCache::new(tmp.join(format!("frames-nmnist-{w}"))).expect("cache"));
        let ds = EventFrames::new(nmnist(), spec, Some(cache)).expect("frames");
        let loader = Loader::new(Arc::new(ds), config(args.batch, w)).expect("loader");
        let cold = epoch_rate(&loader, 0);
        let warm = best_rate(&loader, 3);
        let ds = EventFrames::new(nmnist(), spec, loader.dataset().cache().cloned())
            .expect("frames")
            .into_u8_counts();
        let loader = Loader::new(Arc::new(ds), config(args.batch, w)).expect("loader");
        let warm_u8 = best_rate(&loader, 3);
        println!(
            "  N-MNIST 34x34      {w} worker(s): {cold:>8.0} samples/s first epoch (read + integrate + cache), {warm:>8.0} cached f32, {warm_u8:>8.0} cached u8"
        );
    }
    let gestures = || {
        DvsGesture::open(tmp.join("dvs"))
            .and_then(|d| d.split(Split::Test))
            .expect("DVS128 Gesture opens")
    };
    for &w in &worker_counts {
        let cache = Arc::new(FrameCache::new(tmp.join(format!("frames-dvs-{w}"))).expect("cache"));
        let ds = EventFrames::new(gestures(), spec, Some(cache)).expect("frames");
        let n = ds.source().len();
        let t = Instant::now();
        let computed = ds.precompute(w).expect("precompute");
        let pre = computed as f64 / t.elapsed().as_secs_f64();
        let loader = Loader::new(Arc::new(ds), config(args.batch.min(32), w)).expect("loader");
        let warm = best_rate(&loader, 3);
        let ds = EventFrames::new(gestures(), spec, loader.dataset().cache().cloned())
            .expect("frames")
            .into_u8_counts();
        let loader = Loader::new(Arc::new(ds), config(args.batch.min(32), w)).expect("loader");
        let warm_u8 = best_rate(&loader, 3);
        println!(
            "  DVS Gesture 128x128 {w} worker(s): {pre:>7.1} samples/s precompute ({n} samples), {warm:>7.0} cached f32, {warm_u8:>7.0} cached u8 (batch {})",
            args.batch.min(32)
        );
    }

    println!("frame integration (one thread, best of repeated runs):");
    let nm = NMnist::open(tmp.join("nmnist"), Split::Test).expect("N-MNIST opens");
    let (sample, _) = nm.read(0).expect("sample reads");
    let g = gestures();
    let (gesture, _) = g.read(0).expect("gesture reads");
    for (name, stream, size) in [
        ("N-MNIST", &sample, 34usize),
        ("DVS Gesture", &gesture, 128),
    ] {
        for split in [SplitBy::Number, SplitBy::Time] {
            let spec = FrameSpec::new(args.steps, split);
            let best = best_of(Duration::from_millis(400), || {
                black_box(integrate(stream.events(), size, size, spec).expect("integrates"));
            });
            println!(
                "  {name:12} {split:6} {} events: {:7.1} M events/s, {:8.0} samples/s",
                stream.len(),
                stream.len() as f64 / best.as_secs_f64() / 1e6,
                1.0 / best.as_secs_f64()
            );
        }
    }

    gpu(&args, &image_sets, most);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The upload rate and the pipeline's samples/s, or a notice without a GPU.
fn gpu(args: &Args, image_sets: &[(&str, Arc<ImageDataset>)], workers: usize) {
    let device = match Device::count() {
        Ok(n) if n > 0 => Device::open(0),
        Ok(_) => {
            println!("no GPU: upload rate not measured (no CUDA device)");
            return;
        }
        Err(e) => {
            let why = e.to_string();
            let first = why.lines().next().unwrap_or_default();
            println!(
                "no GPU: upload rate not measured ({})",
                first.trim_end_matches(" Searched:")
            );
            return;
        }
    };
    let device = match device {
        Ok(d) => d,
        Err(e) => {
            println!("no GPU: upload rate not measured (opening device 0 failed: {e})");
            return;
        }
    };
    println!(
        "GPU {} (pinned ring of {} buffers, copy stream):",
        device.info.name,
        Uploader::DEFAULT_SLOTS
    );
    for bytes in [384usize << 10, 4 << 20, 64 << 20] {
        let mut up = Uploader::new(&device, bytes).expect("uploader");
        let host: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        let reps = (1usize << 30) / bytes;
        let mut kept = Vec::with_capacity(Uploader::DEFAULT_SLOTS);
        let run = |up: &mut Uploader, kept: &mut Vec<_>, reps: usize| {
            for _ in 0..reps {
                let t = up.upload_bytes(Dtype::U8, &[bytes], &host).expect("upload");
                // Keep a few alive so the allocator does not serialize on frees.
                if kept.len() == Uploader::DEFAULT_SLOTS {
                    kept.remove(0);
                }
                kept.push(t);
            }
            device.synchronize().expect("synchronize");
        };
        run(&mut up, &mut kept, 2);
        let t = Instant::now();
        run(&mut up, &mut kept, reps);
        let secs = t.elapsed().as_secs_f64();
        // Pageable baseline: the same bytes through `from_f32`'s path would be 4x larger,
        // so compare with a plain pageable byte copy of equal size.
        let t = Instant::now();
        for _ in 0..reps.min(64) {
            black_box(device.stream().clone_htod(&host).expect("pageable copy"));
        }
        device.synchronize().expect("synchronize");
        let pageable = (reps.min(64) * bytes) as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!(
            "  upload {:>6} KiB: {:6.2} GB/s pinned + async ({} uploads; host waited {:.1} ms), pageable copy {pageable:.2} GB/s",
            bytes >> 10,
            (reps * bytes) as f64 / secs / 1e9,
            reps,
            up.stats().host_wait.as_secs_f64() * 1e3
        );
    }
    for (name, ds) in image_sets {
        let loader = Loader::new(ds.clone(), config(args.batch, workers)).expect("loader");
        let mut up = Uploader::new(&device, loader.max_batch_bytes()).expect("uploader");
        let steps = 8;
        let mut rate = 0.0f64;
        for epoch in 0..3 {
            let t = Instant::now();
            let mut samples = 0;
            for batch in loader.epoch(epoch) {
                let batch = batch.expect("batch");
                let gpu = batch.upload_images(&mut up).expect("upload");
                black_box(rate_encode(&device, &gpu.data, &gpu.samples, steps, 1).expect("encode"));
                samples += batch.len();
            }
            device.synchronize().expect("synchronize");
            rate = rate.max(samples as f64 / t.elapsed().as_secs_f64());
        }
        println!(
            "  pipeline {name:18} loader ({workers} workers) -> upload -> rate encode T={steps}: {rate:>9.0} samples/s (host waited {:.1} ms for buffers)",
            up.stats().host_wait.as_secs_f64() * 1e3
        );
    }
}
