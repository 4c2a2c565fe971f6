//! What other implementations measured, per card, for the benches to compare with: a run
//! is compared only with anchors measured on its own card (speeds differ too much between
//! cards for anything else to mean something).

/// Anchors measured on one kind of card.
pub struct Card {
    /// What the device's name contains ("H200").
    pub key: &'static str,
    /// Where and when they were measured, for the printout.
    pub measured: &'static str,
    /// Paper-LIF forward + backward, f32, N = 2^21.
    pub neuron: &'static [NeuronAnchor],
    /// One Spiking-ResNet training iteration (T = 32, B = 100, 3x32x32, paper LIF, Adam).
    pub train: &'static [TrainAnchor],
}

pub struct NeuronAnchor {
    pub what: &'static str,
    pub steps: usize,
    pub ms: f64,
}

pub struct TrainAnchor {
    pub what: &'static str,
    pub depth: usize,
    /// Activations in bf16 (autocast) rather than f32 with TF32 convolutions.
    pub bf16: bool,
    pub ms: f64,
    pub gib: f64,
}

const PAPER: &str = "the paper's fused CUDA kernel (PyTorch extension)";
const TRITON: &str = "SpikingJelly 2.0 LIFNode, Triton backend";
const PAPER_TRAIN: &str = "PyTorch 2.11 + the paper's LIF kernel";
const PAPER_TRAIN_BEST: &str =
    "PyTorch 2.11 + the paper's LIF kernel, bf16 autocast, channels-last, cudnn.benchmark";
const TRITON_TRAIN: &str = "SpikingJelly 2.0, Triton LIF";

/// Every card with anchors, measured by the snn project.
pub const CARDS: [Card; 2] = [
    Card {
        key: "H100",
        measured: "one H100, 2026-11",
        neuron: &[
            NeuronAnchor {
                what: PAPER,
                steps: 32,
                ms: 1.23,
            },
            NeuronAnchor {
                what: TRITON,
                steps: 32,
                ms: 1.58,
            },
        ],
        train: &[TrainAnchor {
            what: PAPER_TRAIN,
            depth: 18,
            bf16: false,
            ms: 21.1,
            gib: 2.13,
        }],
    },
    Card {
        key: "H200",
        measured: "one H200, 2026-12-04",
        neuron: &[
            NeuronAnchor {
                what: PAPER,
                steps: 8,
                ms: 0.296,
            },
            NeuronAnchor {
                what: PAPER,
                steps: 32,
                ms: 0.906,
            },
            NeuronAnchor {
                what: PAPER,
                steps: 128,
                ms: 3.526,
            },
            NeuronAnchor {
                what: TRITON,
                steps: 8,
                ms: 0.958,
            },
            NeuronAnchor {
                what: TRITON,
                steps: 32,
                ms: 1.137,
            },
            NeuronAnchor {
                what: TRITON,
                steps: 128,
                ms: 2.826,
            },
            NeuronAnchor {
                what: "SpikingJelly 2.0 FlexSN (Triton generated from Python)",
                steps: 32,
                ms: 1.919,
            },
        ],
        train: &[
            TrainAnchor {
                what: PAPER_TRAIN,
                depth: 18,
                bf16: false,
                ms: 19.4,
                gib: 2.13,
            },
            TrainAnchor {
                what: PAPER_TRAIN_BEST,
                depth: 18,
                bf16: true,
                ms: 17.8,
                gib: 2.13,
            },
            TrainAnchor {
                what: TRITON_TRAIN,
                depth: 18,
                bf16: false,
                ms: 25.0,
                gib: 2.73,
            },
            TrainAnchor {
                what: PAPER_TRAIN,
                depth: 50,
                bf16: false,
                ms: 106.5,
                gib: 20.4,
            },
            TrainAnchor {
                what: TRITON_TRAIN,
                depth: 50,
                bf16: false,
                ms: 105.7,
                gib: 22.9,
            },
        ],
    },
];

/// The anchors of the card named `device` (its CUDA name), if any.
pub fn for_device(device: &str) -> Option<&'static Card> {
    CARDS.iter().find(|c| device.contains(c.key))
}

/// What to print for a card without anchors.
pub fn none_for(device: &str) -> String {
    let cards: Vec<&str> = CARDS.iter().map(|c| c.key).collect();
    format!(
        "No anchor for this card ({device}): anchors exist for {}; compare runs on one card only.",
        cards.join(" and ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_are_found_by_name_and_others_are_told_apart() {
        let h200 = for_device("NVIDIA H200").unwrap();
        assert_eq!(h200.key, "H200");
        assert_eq!(for_device("NVIDIA H100 80GB HBM3").unwrap().key, "H100");
        assert!(for_device("NVIDIA A100-SXM4-80GB").is_none());
        assert!(none_for("NVIDIA A100").contains("No anchor for this card (NVIDIA A100)"));
        assert!(h200.neuron.iter().any(|a| a.steps == 128));
    }
}
