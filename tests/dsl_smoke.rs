use snn::prelude::*;

/// The paper's LIF.
#[neuron(surrogate = rect(width = 0.5))]
pub fn paper_lif(
    x: Input,
    v: State,
    y: State,
    #[param(default = 0.2)] decay: Param,
    #[param(default = 0.3)] threshold: Param,
    #[param(default = 0.0)] rest: Param,
) -> Spike {
    let h = decay * v * (1.0 - y) + rest * y + x;
    let s = spike(h - threshold);
    v.set(h);
    y.set(s);
    s
}

#[test]
fn smoke() {
    let a = PaperLif::default().ir().unwrap();
    let b = zoo::PaperLif::default().ir().unwrap();
    assert_eq!(a.to_string(), b.to_string());
}
