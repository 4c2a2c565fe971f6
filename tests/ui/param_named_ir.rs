use snn::prelude::*;

// Compiles on its own: the setter `Lif::ir(self, f64)` shadows `Neuron::ir`, so the
// natural call below fails.
#[neuron(surrogate = sigmoid(alpha = 4.0))]
fn lif(x: Input, v: State, #[param(default = 0.9)] ir: Param) -> Spike {
    let h = ir * v + x;
    let s = spike(h - 1.0);
    v.set(h - s);
    s
}

fn main() {
    let _ = Lif::default().ir();
}
