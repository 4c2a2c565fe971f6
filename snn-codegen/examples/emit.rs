//! Prints the generated CUDA source of a zoo neuron's kernels.
//!
//! `cargo run -p snn-codegen --example emit -- paper_lif [forward_train|forward_inference|backward] [narrow]`
//!
//! `narrow` stores inputs and gradients in bf16, spikes in u8 and saves in bf16.

use snn_codegen::cuda::{KernelOptions, generate};
use snn_codegen::{Storage, compile, zoo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "paper_lif".into());
    let kind = args.next().unwrap_or_else(|| "backward".into());
    let neuron = zoo::by_name(&name).ok_or_else(|| format!("no zoo neuron named `{name}`"))?;
    let storage = match args.next().as_deref() {
        Some("narrow") => Storage::NARROW,
        _ => Storage::F32,
    };
    // A fourth argument fuses batch-norm (`bn`) or batch-norm and a residual add
    // (`bn_add`) into the neuron, as the GPU model runs ResNets.
    let ir = match args.next().as_deref() {
        Some("bn") => snn_codegen::fuse::batch_norm_input(&neuron.ir()?, false)?,
        Some("bn_add") => snn_codegen::fuse::batch_norm_input(&neuron.ir()?, true)?,
        _ => neuron.ir()?,
    };
    let kernels = generate(&compile(&ir, storage)?, &KernelOptions::default());
    let k = kernels
        .all()
        .into_iter()
        .find(|k| k.kind.suffix() == kind)
        .ok_or_else(|| {
            format!("no kernel `{kind}`; use forward_train, forward_inference or backward")
        })?;
    print!("{}", k.source);
    Ok(())
}
