//! Writes full-size synthetic datasets in the real formats and folder layouts into a data
//! directory, so that `snn train --dataset <name> --data-dir DIR` runs end to end where the
//! real sets cannot be downloaded (random pixels, events and labels: the speed of a run
//! means something, its accuracy does not).
//!
//! `cargo run --release --example make_datasets -- DIR` writes MNIST (60,000 + 10,000),
//! CIFAR-10 (50,000 + 10,000), N-MNIST (60,000 + 10,000 recordings of ~4,000 events) and
//! DVS128 Gesture (98 + 24 recordings of 11 gestures; 200,000 events each by default);
//! `--only mnist,cifar10` limits it, `--scale 0.1` shrinks every count.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use snn::data::Split;
use snn::data::download::Dataset as Remote;

#[path = "../snn-data/tests/support/mod.rs"]
mod support;

use support::Rng;
use support::files::{write_cifar, write_gestures, write_mnist, write_nmnist};

#[derive(Parser, Debug)]
#[command(
    about = "Write full-size synthetic datasets in the real formats (see the example's docs)"
)]
struct Args {
    /// The data directory (each dataset goes to its own folder in it, as `snn data` lays
    /// them out).
    dir: PathBuf,
    /// Which datasets (comma-separated): mnist, cifar10, nmnist, dvs-gesture.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mnist,cifar10,nmnist,dvs-gesture"
    )]
    only: Vec<String>,
    /// Multiplies every sample count (quick runs).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Events per gesture (the real ones have 100k to 1M).
    #[arg(long, default_value_t = 200_000)]
    gesture_events: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let n = |count: usize| ((count as f64 * args.scale).round() as usize).max(1);
    let mut rng = Rng::new(7);
    // A dataset's two splits, with the real sets' sample counts.
    type Writer = fn(&std::path::Path, Split, usize, &mut Rng);
    let both = |dataset: Remote, write: Writer, (train, test): (usize, usize), rng: &mut Rng| {
        let dir = dataset.dir(&args.dir);
        write(&dir, Split::Train, n(train), rng);
        write(&dir, Split::Test, n(test), rng);
    };
    for name in &args.only {
        let start = Instant::now();
        match name.as_str() {
            "mnist" => both(Remote::Mnist, write_mnist, (60_000, 10_000), &mut rng),
            "cifar10" => both(Remote::Cifar10, write_cifar, (50_000, 10_000), &mut rng),
            "nmnist" => both(Remote::NMnist, write_nmnist, (60_000, 10_000), &mut rng),
            "dvs-gesture" => {
                let dir = Remote::DvsGesture.dir(&args.dir);
                write_gestures(&dir, (n(98), n(24)), args.gesture_events, &mut rng);
            }
            other => {
                return Err(format!(
                    "unknown dataset `{other}`: mnist, cifar10, nmnist or dvs-gesture"
                )
                .into());
            }
        }
        println!("{name}: written in {:.1} s", start.elapsed().as_secs_f64());
    }
    Ok(())
}
