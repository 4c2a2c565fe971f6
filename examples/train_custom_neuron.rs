//! A neuron that is in no library, declared with `#[neuron]` and trained in a spiking CNN
//! on the embedded digits: the whole custom-neuron workflow in a few lines. Runs on GPU 0
//! when there is one (the neuron's fused CUDA kernels are generated and compiled at run
//! time), else on the CPU reference.
//!
//! `cargo run --release --example train_custom_neuron` (add `-- --cuda` to print the
//! generated backward kernel first).

use std::sync::Arc;

use snn::data::{Digits, Loader, LoaderConfig, Split};
use snn::nn::checkpoint::Checkpoint;
use snn::nn::models::spiking_cnn;
use snn::nn::train::{FitConfig, LrSchedule, RateCode, evaluate, fit};
use snn::nn::{ImageShape, Loss, Optimizer, init_params};
use snn::prelude::*;
use snn::runtime::nn::{Backend, ModelOptions};

/// Quadratic integrate-and-fire (Latham et al., 2000), Euler-stepped: the membrane's
/// drift grows with the square of its distance from rest, so firing is sharply
/// threshold-like; reset to `v_reset` after a spike.
#[neuron(surrogate = fast_sigmoid(alpha = 5.0))]
pub fn quadratic_if(
    x: Input,
    #[param(default = 0.25)] dt: Param,
    #[param(default = 1.0)] v_threshold: Param,
    #[param(default = 0.0)] v_reset: Param,
    #[state(init = v_reset)] v: State,
) -> Spike {
    let h = v + dt * (v * v + x);
    let s = spike(h - v_threshold);
    v.set(h * (1.0 - s) + v_reset * s);
    s
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let neuron = QuadraticIf::new();
    if std::env::args().any(|a| a == "--cuda") {
        print!(
            "{}",
            compile(&neuron, Storage::F32)?.kernels().backward.source
        );
    }
    let net = spiking_cnn(ImageShape::new(1, 8, 8), 16, Digits::CLASSES, &neuron)?;
    let loader = |split, shuffle| -> Result<Loader, Box<dyn std::error::Error>> {
        let config = LoaderConfig {
            batch_size: 25,
            shuffle,
            ..LoaderConfig::default()
        };
        Ok(Loader::new(Arc::new(Digits::load(split)?), config)?)
    };
    let (train, test) = (loader(Split::Train, true)?, loader(Split::Test, false)?);

    let start = Checkpoint::fresh(init_params(&net, 0)?);
    let backend = Backend::auto(ModelOptions::default())?;
    let mut trainer = backend.trainer(
        &net,
        &start,
        Optimizer::adam(5e-3),
        Loss::CrossEntropyRate,
        None,
    )?;
    let rate = RateCode { steps: 16, seed: 0 };
    let config = FitConfig::new(3, LrSchedule::Constant(5e-3), rate);
    fit(&mut *trainer, &train, None, &config, &mut ())?;
    let result = evaluate(&mut *trainer, &test, rate)?;
    println!(
        "quadratic integrate-and-fire on {}: test accuracy {:.1}% after 3 epochs",
        trainer.device_name(),
        100.0 * result.accuracy()
    );
    Ok(())
}
