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
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use snn::data::frames::{FrameCache, FrameSpec, SplitBy, integrate};
use snn::data::{
    Cifar10, Dataset, DvsGesture, EventFrames, ImageDataset, Loader, LoaderConfig, Mnist, NMnist,
    Split,
};
use snn::runtime::Device;
use snn::runtime::codegen::Dtype;
use snn::runtime::encode::rate_encode;
use snn::runtime::staging::{Upload, Uploader};

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

/// A deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// `n` sorted events `(x, y, p, t)` on a `size x size` sensor over `[t0, t0 + span)`.
fn events(rng: &mut Lcg, n: usize, size: u64, t0: u64, span: u64) -> Vec<(u16, u16, bool, u64)> {
    let mut ts: Vec<u64> = (0..n).map(|_| t0 + rng.below(span)).collect();
    ts.sort_unstable();
    ts.into_iter()
        .map(|t| {
            let (x, y, p) = (rng.below(size), rng.below(size), rng.below(2) == 1);
            (x as u16, y as u16, p, t)
        })
        .collect()
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create a folder in the temp dir");
    }
    std::fs::write(path, bytes).expect("write to the temp dir");
}

/// MNIST's test split as IDX files: `n` images of 28x28.
fn write_mnist(dir: &Path, n: usize, rng: &mut Lcg) {
    let mut images = [0x803u32, n as u32, 28, 28]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect::<Vec<u8>>();
    images.extend((0..n * 784).map(|_| rng.below(256) as u8));
    let mut labels = [0x801u32, n as u32]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect::<Vec<u8>>();
    labels.extend((0..n).map(|_| rng.below(10) as u8));
    let (i, l) = Mnist::file_names(Split::Test);
    write(&dir.join(i), &images);
    write(&dir.join(l), &labels);
}

/// CIFAR-10's test batch: `n` records of a label and 3x32x32 pixels.
fn write_cifar(dir: &Path, n: usize, rng: &mut Lcg) {
    let mut bytes = Vec::with_capacity(n * Cifar10::RECORD_BYTES);
    for _ in 0..n {
        bytes.push(rng.below(10) as u8);
        bytes.extend((0..3072).map(|_| rng.below(256) as u8));
    }
    write(&dir.join(Cifar10::batch_names(Split::Test)[0]), &bytes);
}

/// N-MNIST's test split: `n` files of ~4000 events over ~300 ms on 34x34.
fn write_nmnist(dir: &Path, n: usize, rng: &mut Lcg) {
    for i in 0..n {
        let digit = i % 10;
        let count = 3_500 + rng.below(1_000) as usize;
        let mut f = Vec::with_capacity(count * 5);
        for (x, y, p, t) in events(rng, count, 34, 0, 300_000) {
            f.extend_from_slice(&[
                x as u8,
                y as u8,
                (u8::from(p) << 7) | (t >> 16) as u8,
                (t >> 8) as u8,
                t as u8,
            ]);
        }
        write(&dir.join(format!("Test/{digit}/{i:05}.bin")), &f);
    }
}

/// DVS128 Gesture: `recordings` AEDAT 3.1 files of 11 gestures of 6 s and `per_gesture`
/// events each, with their label CSVs; all listed as the test split.
fn write_gestures(dir: &Path, recordings: usize, per_gesture: usize, rng: &mut Lcg) {
    let root = dir.join(DvsGesture::FOLDER);
    let mut list = String::new();
    for r in 0..recordings {
        let name = format!("user{:02}_fluorescent", 24 + r);
        let mut f =
            b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n".to_vec();
        let mut csv = String::from("class,startTime_usec,endTime_usec\n");
        let mut all = Vec::new();
        for g in 0..11u64 {
            let (start, span) = (1_000_000 + g * 6_100_000, 6_000_000);
            csv.push_str(&format!("{},{start},{}\n", g + 1, start + span));
            all.extend(events(rng, per_gesture, 128, start, span));
        }
        for chunk in all.chunks(4096) {
            let n = chunk.len() as u32;
            for v in [1u32 | 1 << 16, 8, 4, 0, n, n, n] {
                // eventType 1 and eventSource 1 share the first word.
                f.extend_from_slice(&v.to_le_bytes());
            }
            for &(x, y, p, t) in chunk {
                let word = (u32::from(x) << 17) | (u32::from(y) << 2) | (u32::from(p) << 1) | 1;
                f.extend_from_slice(&word.to_le_bytes());
                f.extend_from_slice(&(t as u32).to_le_bytes());
            }
        }
        write(&root.join(format!("{name}.aedat")), &f);
        write(&root.join(format!("{name}_labels.csv")), csv.as_bytes());
        list.push_str(&format!("{name}.aedat\n"));
    }
    write(&root.join("trials_to_train.txt"), list.as_bytes());
    write(&root.join("trials_to_test.txt"), list.as_bytes());
}

fn config(batch: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: batch,
        shuffle: true,
        seed: 0,
        drop_last: false,
        prefetch: 4,
        workers,
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
    let mut rng = Lcg(42);
    println!(
        "synthetic data in the real formats (no internet here), {cores} CPU cores, batch {}",
        args.batch
    );

    // Static images.
    let t = Instant::now();
    write_mnist(&tmp.join("mnist"), args.images, &mut rng);
    write_cifar(&tmp.join("cifar"), args.images, &mut rng);
    println!(
        "  wrote {} MNIST and CIFAR-10 images in {:.1} s",
        args.images,
        t.elapsed().as_secs_f64()
    );
    let image_sets: Vec<(&str, Arc<ImageDataset>)> = vec![
        ("MNIST 1x28x28", {
            let t = Instant::now();
            let ds = Mnist::load(tmp.join("mnist"), Split::Test).expect("MNIST reads");
            println!(
                "  MNIST parse: {:.0} images/s",
                ds.len() as f64 / t.elapsed().as_secs_f64()
            );
            Arc::new(ds)
        }),
        ("CIFAR-10 3x32x32", {
            let t = Instant::now();
            let ds = Cifar10::load(tmp.join("cifar"), Split::Test).expect("CIFAR-10 reads");
            println!(
                "  CIFAR-10 parse: {:.0} images/s",
                ds.len() as f64 / t.elapsed().as_secs_f64()
            );
            Arc::new(ds)
        }),
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
    write_nmnist(&tmp.join("nmnist"), args.nmnist, &mut rng);
    write_gestures(
        &tmp.join("dvs"),
        args.recordings,
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

/// Runs `f` repeatedly for about `budget`; the best time of one call.
fn best_of(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut best = Duration::MAX;
    while start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    best
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
