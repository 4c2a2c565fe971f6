//! A neuron that is not in the zoo, declared with `#[neuron]`: resonate-and-fire
//! (Izhikevich, 2001). Prints its equations, its derived gradient equations and its memory
//! plan, then runs it forward and backward on the CPU reference interpreter.
//!
//! `cargo run --release --example resonate_and_fire`

use snn::prelude::*;

/// Resonate-and-fire: a damped oscillator (`re + i im`) driven by the input, firing when
/// its imaginary part crosses the threshold. It responds most to inputs that arrive at its
/// resonant frequency `omega`, which is learned per channel.
#[neuron(surrogate = atan(alpha = 2.0))]
pub fn resonate_and_fire(
    i: Input,
    re: State,
    im: State,
    #[param(default = -0.1)] damping: Param,
    #[param(default = 0.6, learnable, per_channel)] omega: Param,
    #[param(default = 1.0)] threshold: Param,
    #[param(default = 0.5)] dt: Param,
) -> Spike {
    let re_next = re + dt * (damping * re - omega * im + i);
    let im_next = im + dt * (omega * re + damping * im);
    let s = spike(im_next - threshold);
    // Reset both parts after a spike.
    re.set(re_next * (1.0 - s));
    im.set(im_next * (1.0 - s));
    s
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let neuron = ResonateAndFire::new().damping(-0.05);
    let compiled = compile(&neuron, Storage::F32)?;
    println!("{compiled}");

    // 2 samples x 4 channels, 40 steps of an input pulsing at a different rate per channel.
    let (steps, layout) = (40, Layout::flat(4));
    let n = 2 * layout.neurons();
    let drive: Vec<f32> = (0..steps * n)
        .map(|k| {
            let (t, channel) = (k / n, (k % n) % 4);
            let period = 6 + 2 * channel;
            if t % period == 0 { 1.5 } else { 0.0 }
        })
        .collect();
    let inputs = vec![Seq::new(steps, n, drive)?];
    let reference = Reference::new(compiled);
    let params = Params::defaults(&reference.compiled().neuron, layout);
    let fwd = reference.forward(&params, &inputs, None, Mode::Train)?;
    for channel in 0..4 {
        let spikes: f32 = (0..steps)
            .map(|t| fwd.outputs[0].data[t * n + channel])
            .sum();
        println!(
            "channel {channel} (input period {}): {spikes} spikes",
            6 + 2 * channel
        );
    }

    // Loss: the total number of spikes. Its gradient says how each channel's resonant
    // frequency should move to fire more.
    let ones = vec![Seq::new(steps, n, vec![1.0; steps * n])?];
    let grads = reference.backward(&params, &inputs, None, &fwd, &ones, None)?;
    if let Some(d_omega) = &grads.params[1] {
        println!("dL/d(omega) per channel: {d_omega:?}");
    }
    println!("dL/d(input) at t = 0: {:?}", &grads.inputs[0].data[..4]);
    Ok(())
}
