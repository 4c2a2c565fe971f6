//! Whole datasets of synthetic data written in the real formats and folder layouts, for the
//! loader benchmark and for end-to-end training runs where the real sets cannot be
//! downloaded: MNIST IDX files, CIFAR-10 binary batches, N-MNIST event files, DVS128
//! Gesture AEDAT 3.1 recordings with their label CSVs and split lists.

use std::path::Path;

use snn_data::{Cifar10, DvsGesture, Mnist, Split};

use super::{Rng, aedat, idx, nmnist_file, random_events};

/// Writes `bytes` to `path`, making its folder (panics on failure: test data).
pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create a folder for synthetic data");
    }
    std::fs::write(path, bytes).expect("write synthetic data");
}

/// One MNIST split as IDX files: `n` random 28x28 images and labels.
pub fn write_mnist(dir: &Path, split: Split, n: usize, rng: &mut Rng) {
    let pixels: Vec<u8> = (0..n * 784).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|_| rng.below(10) as u8).collect();
    let (i, l) = Mnist::file_names(split);
    write(&dir.join(i), &idx(&[n, 28, 28], &pixels));
    write(&dir.join(l), &idx(&[n], &labels));
}

/// One CIFAR-10 split: `n` records of a label and 3x32x32 pixels, spread over the split's
/// batch files as the real set spreads them.
pub fn write_cifar(dir: &Path, split: Split, n: usize, rng: &mut Rng) {
    let names = Cifar10::batch_names(split);
    let per_file = n.div_ceil(names.len());
    for (k, name) in names.iter().enumerate() {
        let records = per_file.min(n.saturating_sub(k * per_file));
        let mut bytes = Vec::with_capacity(records * Cifar10::RECORD_BYTES);
        for _ in 0..records {
            bytes.push(rng.below(10) as u8);
            bytes.extend((0..3072).map(|_| rng.below(256) as u8));
        }
        write(&dir.join(name), &bytes);
    }
}

/// One N-MNIST split: `n` files of ~4000 events over ~300 ms on 34x34.
pub fn write_nmnist(dir: &Path, split: Split, n: usize, rng: &mut Rng) {
    let folder = snn_data::NMnist::split_folder(split);
    for i in 0..n {
        let count = 3_500 + rng.below(1_000) as usize;
        let events = random_events(rng, count, (34, 34), 0, 300_000);
        write(
            &dir.join(format!("{folder}/{}/{i:05}.bin", i % 10)),
            &nmnist_file(&events),
        );
    }
}

/// DVS128 Gesture: `train` and `test` AEDAT 3.1 recordings of 11 gestures of 6 s and
/// `per_gesture` events each, with their label CSVs and the split lists.
pub fn write_gestures(
    dir: &Path,
    (train, test): (usize, usize),
    per_gesture: usize,
    rng: &mut Rng,
) {
    let root = dir.join(DvsGesture::FOLDER);
    let mut lists = [String::new(), String::new()];
    for r in 0..train + test {
        let name = format!("user{:02}_fluorescent", 1 + r);
        let mut csv = String::from("class,startTime_usec,endTime_usec\n");
        let mut all = Vec::new();
        for g in 0..11u64 {
            let (start, span) = (1_000_000 + g * 6_100_000, 6_000_000);
            csv.push_str(&format!("{},{start},{}\n", g + 1, start + span));
            all.extend(random_events(rng, per_gesture, (128, 128), start, span));
        }
        write(&root.join(format!("{name}.aedat")), &aedat(&all, 4096));
        write(&root.join(format!("{name}_labels.csv")), csv.as_bytes());
        lists[usize::from(r >= train)].push_str(&format!("{name}.aedat\n"));
    }
    write(&root.join("trials_to_train.txt"), lists[0].as_bytes());
    write(&root.join("trials_to_test.txt"), lists[1].as_bytes());
}
