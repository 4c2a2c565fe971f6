//! What a training run is: its options as they are recorded (in `metrics.jsonl` and in
//! every checkpoint, so that `snn eval` and `--resume` rebuild the same network), and the
//! network they describe.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use snn::codegen::{NeuronIr, zoo};
use snn::nn::models::{spiking_cnn, spiking_mlp, spiking_resnet};
use snn::nn::{ImageShape, Network, Optimizer};

/// The checkpoint metadata key that holds the run's [`RunConfig`] as JSON.
pub const CONFIG_KEY: &str = "train.config";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetArg {
    /// The 1,797 8x8 handwritten digits embedded in snn (no download).
    Digits,
    Mnist,
    Cifar10,
    /// N-MNIST, frames split by event number.
    Nmnist,
    /// DVS128 Gesture, frames split by event number.
    DvsGesture,
}

impl DatasetArg {
    /// The classes of the dataset.
    pub fn classes(self) -> usize {
        match self {
            DatasetArg::DvsGesture => 11,
            _ => 10,
        }
    }

    /// The paper's batch size (10 for DVS128 Gesture, else 100); 25 for the embedded
    /// digits, whose 1,437 training images make few steps at 100.
    pub fn default_batch(self) -> usize {
        match self {
            DatasetArg::Digits => 25,
            DatasetArg::DvsGesture => 10,
            _ => 100,
        }
    }

    /// The paper's T = 32; 16 for the 8x8 digits (training in seconds on a laptop).
    pub fn default_steps(self) -> usize {
        match self {
            DatasetArg::Digits => 16,
            _ => 32,
        }
    }

    /// The paper's learning rate 1e-3; 5e-3 for the digits (few steps per epoch).
    pub fn default_lr(self) -> f64 {
        match self {
            DatasetArg::Digits => 5e-3,
            _ => 1e-3,
        }
    }

    /// The network the run trains when `--arch` is not given: the small CNN on the
    /// embedded digits (seconds on a laptop), else the paper's Spiking-ResNet18.
    pub fn default_arch(self) -> ArchArg {
        match self {
            DatasetArg::Digits => ArchArg::SpikingCnn,
            _ => ArchArg::SpikingResnet18,
        }
    }

    /// The name on the command line (and of its `snn data` folder).
    pub fn name(self) -> &'static str {
        match self {
            DatasetArg::Digits => "digits",
            DatasetArg::Mnist => "mnist",
            DatasetArg::Cifar10 => "cifar10",
            DatasetArg::Nmnist => "nmnist",
            DatasetArg::DvsGesture => "dvs-gesture",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchArg {
    SpikingResnet18,
    SpikingResnet34,
    SpikingResnet50,
    /// Two 3x3 convolution stages (16 and 32 channels), batch-norm, neuron, max-pool.
    SpikingCnn,
    /// One hidden layer of 128 neurons.
    SpikingMlp,
}

impl ArchArg {
    /// The name on the command line.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerArg {
    Adam,
    Adamw,
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleArg {
    /// The same learning rate at every step (the paper's).
    Constant,
    /// Linear warm-up over --warmup steps, then cosine decay to 0 at the last step.
    Cosine,
}

/// How the GPUs of a run share each training step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitArg {
    /// Data parallel: each GPU its shard of every epoch, --batch samples per step each,
    /// gradients averaged (PyTorch's DistributedDataParallel).
    #[default]
    Batch,
    /// The temporal-fusion paper's scheme: every GPU the same --batch samples, GPU k their
    /// k-th chunk of T/N time steps, neuron states handed from GPU to GPU, batch-norm over
    /// all of T x B; one GPU's training over the whole T, to rounding, in 1/N of the
    /// memory per GPU (for long T).
    Time,
}

/// How activations are stored on a GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageArg {
    /// f32 activations, TF32 convolutions (PyTorch's defaults).
    #[default]
    F32,
    /// bf16 activations up to the classifier: bf16 convolutions with f32 accumulation,
    /// neurons in narrow storage, f32 weights, optimizer state and loss (GPU only).
    Narrow,
}

/// Everything that decides what a run computes. Two runs with equal configs take the same
/// steps on the same batches (on the CPU, bit for bit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub dataset: DatasetArg,
    pub arch: ArchArg,
    pub neuron: String,
    /// Overridden neuron parameter defaults.
    pub neuron_params: BTreeMap<String, f64>,
    pub steps: usize,
    pub batch: usize,
    pub epochs: u64,
    pub lr: f64,
    pub optimizer: OptimizerArg,
    pub schedule: ScheduleArg,
    pub warmup: u64,
    pub seed: u64,
    pub deterministic: bool,
    /// Activation storage (absent in checkpoints from before it existed: f32).
    #[serde(default)]
    pub storage: StorageArg,
    /// At most this many batches per epoch (quick runs).
    pub max_batches: Option<usize>,
    /// Batch-norm over the global batch of a run on several GPUs (absent in checkpoints
    /// from before it existed: off).
    #[serde(default)]
    pub sync_bn: bool,
    /// How several GPUs share each step (absent in checkpoints from before it existed:
    /// by batch).
    #[serde(default)]
    pub split: SplitArg,
}

impl RunConfig {
    /// The neuron, with its overridden parameters.
    pub fn neuron(&self) -> Result<NeuronIr> {
        let Some(neuron) = zoo::by_name(&self.neuron) else {
            bail!(
                "unknown neuron `{}`; known neurons: {}",
                self.neuron,
                zoo::NAMES.join(", ")
            );
        };
        let mut ir = neuron
            .ir()
            .with_context(|| format!("building neuron `{}`", self.neuron))?;
        for (name, &value) in &self.neuron_params {
            ir.set_default(name, value).map_err(anyhow::Error::msg)?;
        }
        Ok(ir)
    }

    /// The network the config trains, for inputs of `input` (channels, height, width).
    pub fn network(&self, input: ImageShape) -> Result<Network> {
        let neuron = self.neuron()?;
        let classes = self.dataset.classes();
        // The paper feeds grey images to Spiking-ResNets as 3 channels.
        let resnet_input = match input.channels {
            1 => ImageShape::new(3, input.height, input.width),
            _ => input,
        };
        let resnet = |depth| spiking_resnet(depth, resnet_input, classes, &neuron);
        let net = match self.arch {
            ArchArg::SpikingResnet18 => resnet(18),
            ArchArg::SpikingResnet34 => resnet(34),
            ArchArg::SpikingResnet50 => resnet(50),
            ArchArg::SpikingCnn => spiking_cnn(input, 16, classes, &neuron),
            ArchArg::SpikingMlp => spiking_mlp(input, 128, classes, &neuron),
        };
        net.with_context(|| {
            format!(
                "building {} for {} inputs of {input}",
                self.arch.name(),
                self.dataset.name()
            )
        })
    }

    /// The optimizer at the config's learning rate, with PyTorch's defaults otherwise
    /// (AdamW's weight decay 1e-2; SGD with momentum 0.9).
    pub fn optimizer(&self) -> Optimizer {
        match self.optimizer {
            OptimizerArg::Adam => Optimizer::adam(self.lr),
            OptimizerArg::Adamw => Optimizer::adamw(self.lr, 1e-2),
            OptimizerArg::Sgd => Optimizer::sgd(self.lr, 0.9),
        }
    }

    /// The options whose values differ from `other`'s, as `--name value (...)`, for a
    /// resumed run (which must compute what the interrupted one would have); `--epochs`
    /// may grow unless the schedule is cosine.
    pub fn differences(&self, other: &RunConfig) -> Vec<String> {
        let (a, b) = (json_fields(self), json_fields(other));
        a.iter()
            // More epochs continue a constant schedule; a cosine one spans them all.
            .filter(|(k, v)| {
                b.get(*k) != Some(v)
                    && (k.as_str() != "epochs" || self.schedule == ScheduleArg::Cosine)
            })
            .map(|(k, v)| {
                let theirs = b.get(k).map_or("nothing".into(), plain);
                format!(
                    "--{} {} (the checkpoint's run had {theirs})",
                    k.replace('_', "-"),
                    plain(v)
                )
            })
            .collect()
    }
}

/// A JSON value as a command line writes it (strings without quotes).
fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn json_fields(config: &RunConfig) -> BTreeMap<String, serde_json::Value> {
    match serde_json::to_value(config) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// `name=value` for --neuron-param.
pub fn parse_param(text: &str) -> Result<(String, f64), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not name=value (e.g. tau=2.0)"))?;
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` in `{text}` is not a number"))?;
    if !value.is_finite() {
        return Err(format!("`{text}`: the value must be finite"));
    }
    Ok((name.trim().to_string(), value))
}
