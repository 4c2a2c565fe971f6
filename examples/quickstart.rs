//! Build a neuron with the builder API, print its equations, the derived backward pass and
//! the memory plan, then run it forward and backward on the CPU reference interpreter.
//!
//! `cargo run --release --example quickstart`

use snn::prelude::*;

/// The temporal-fusion paper's LIF, with a learnable per-channel decay.
fn lif_with_learnable_decay() -> Result<NeuronIr, IrError> {
    let b = NeuronBuilder::new("paper_lif_learnable_decay")
        .doc("The paper's LIF; the decay is learned per channel.")
        .surrogate(Surrogate::rect(0.5));
    let x = b.input("x");
    let v = b.state("v", 0.0);
    let y = b.state("y", 0.0);
    let decay = b.param("decay", ParamDecl::learnable(0.2).per_channel());
    let threshold = b.param("threshold", 0.3);
    let h = (decay * v * (1.0 - y) + x).named("h");
    let s = b.spike(h - threshold).named("s");
    v.set(h);
    y.set(s);
    b.output("s", s);
    b.finish()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let neuron = lif_with_learnable_decay()?;
    let compiled = compile(&neuron, Storage::F32)?;
    println!("{compiled}");

    // A layer of 2 samples x 3 channels x 4 neurons, 8 time steps.
    let (steps, layout) = (
        8,
        Layout {
            channels: 3,
            inner: 4,
        },
    );
    let n = 2 * layout.neurons();
    let x: Vec<f32> = (0..steps * n)
        .map(|i| ((i * 37) % 17) as f32 / 40.0)
        .collect();
    let x = vec![Seq::new(steps, n, x)?];
    let reference = Reference::new(compiled);
    let params = Params::defaults(&reference.compiled().neuron, layout);
    let fwd = reference.forward(&params, &x, None, Mode::Train)?;
    let spikes: f32 = fwd.outputs[0].data.iter().sum();
    println!("forward: {spikes} spikes over {steps} steps x {n} neurons");

    // L = sum of all spikes: dL/ds = 1 everywhere.
    let dy = vec![Seq::new(steps, n, vec![1.0; steps * n])?];
    let grads = reference.backward(&params, &x, None, &fwd, &dy, None)?;
    let dx = &grads.inputs[0].data;
    println!("dL/dx at t = 0: {:?}", &dx[..n.min(8)]);
    if let Some(d) = &grads.params[0] {
        println!("dL/d(decay) per channel: {d:?}");
    }
    Ok(())
}
