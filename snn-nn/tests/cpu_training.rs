//! A small spiking CNN (the paper's LIF) learns a synthetic, separable task on the CPU: the
//! whole training stack (forward, loss, backward through time and layers, Adam) working
//! together. Which quadrant of an 8x8 image is bright is the class.
#![allow(clippy::unwrap_used)]

use snn_codegen::zoo;
use snn_nn::cpu::{CpuModel, CpuTrainer};
use snn_nn::models::spiking_cnn;
use snn_nn::{ImageShape, Loss, Optimizer, Rng, init_params};

const STEPS: usize = 4;
const SIDE: usize = 8;

/// `batch` noisy images, direct-encoded (the analog image at every step), `[T, B, 1, 8, 8]`,
/// and their labels.
fn batch(rng: &mut Rng, batch: usize) -> (Vec<f32>, Vec<usize>) {
    let labels: Vec<usize> = (0..batch).map(|_| (rng.next_u64() % 4) as usize).collect();
    let mut img = vec![0f32; batch * SIDE * SIDE];
    for (b, &label) in labels.iter().enumerate() {
        for y in 0..SIDE {
            for x in 0..SIDE {
                let quadrant = (y / (SIDE / 2)) * 2 + x / (SIDE / 2);
                let base = if quadrant == label { 0.6 } else { 0.2 };
                img[b * SIDE * SIDE + y * SIDE + x] = (base + rng.range(-0.3, 0.3)) as f32;
            }
        }
    }
    (img.repeat(STEPS), labels)
}

#[test]
fn small_spiking_cnn_learns_a_separable_task() {
    let lif = zoo::PaperLif::default();
    let net = spiking_cnn(ImageShape::new(1, SIDE, SIDE), 4, 4, &lif).unwrap();
    let model = CpuModel::new(&net, init_params::<f32>(&net, 0).unwrap()).unwrap();
    let mut trainer =
        CpuTrainer::new(model, Optimizer::adam(1e-2), Loss::CrossEntropyRate).unwrap();
    let mut rng = Rng::new(42);
    let mut losses = Vec::new();
    for _ in 0..300 {
        let (x, labels) = batch(&mut rng, 16);
        losses.push(trainer.step(&x, &labels, STEPS, 1e-2).unwrap().loss);
    }
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&losses[..10]), mean(&losses[losses.len() - 10..]));
    assert!(
        last < 0.3 * first,
        "loss fell only from {first:.3} to {last:.3}"
    );
    // Held-out data, inference mode (running batch-norm statistics).
    let (x, labels) = batch(&mut Rng::new(7), 200);
    let predicted = trainer.predict(&x, STEPS, 200).unwrap();
    let correct = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    assert!(
        correct >= 180,
        "{correct}/200 held-out images right (chance: 50)"
    );
}

#[test]
fn training_resumes_from_a_checkpoint_exactly() {
    let lif = zoo::PaperLif::default();
    let net = spiking_cnn(ImageShape::new(1, SIDE, SIDE), 4, 4, &lif).unwrap();
    let new = || {
        let model = CpuModel::new(&net, init_params::<f32>(&net, 1).unwrap()).unwrap();
        CpuTrainer::new(model, Optimizer::adam(1e-2), Loss::CrossEntropyRate).unwrap()
    };
    let batches: Vec<_> = {
        let mut rng = Rng::new(9);
        (0..6).map(|_| batch(&mut rng, 8)).collect()
    };
    // Six steps straight through, and three + checkpoint + resume + three.
    let mut straight = new();
    for (x, l) in &batches {
        straight.step(x, l, STEPS, 1e-2).unwrap();
    }
    let mut first = new();
    for (x, l) in &batches[..3] {
        first.step(x, l, STEPS, 1e-2).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    snn_nn::checkpoint::save(&path, &first.checkpoint(3, Default::default())).unwrap();
    let ckpt = snn_nn::checkpoint::load(&path).unwrap();
    assert_eq!(ckpt.epoch, 3);
    let mut resumed =
        CpuTrainer::from_checkpoint(&net, &ckpt, Optimizer::adam(1e-2), Loss::CrossEntropyRate)
            .unwrap();
    for (x, l) in &batches[3..] {
        resumed.step(x, l, STEPS, 1e-2).unwrap();
    }
    assert_eq!(resumed.model.params, straight.model.params);
    assert_eq!(resumed.state, straight.state);
    // A checkpoint of another network is refused, naming what differs.
    let other = spiking_cnn(ImageShape::new(1, SIDE, SIDE), 6, 4, &lif).unwrap();
    let e =
        CpuTrainer::from_checkpoint(&other, &ckpt, Optimizer::adam(1e-2), Loss::CrossEntropyRate)
            .unwrap_err();
    assert!(e.to_string().contains("conv1.weight"), "{e}");
}
