//! Training on one GPU: forward, loss, backward, optional gradient clipping, and a fused
//! optimizer step over the flat parameter buffer; batches uploaded through pinned buffers
//! and rate-coded on the device. [`Backend`] chooses the device of a run once.

use std::collections::BTreeMap;
use std::sync::Arc;

use snn_codegen::Dtype;
use snn_codegen::Mode;
use snn_nn::checkpoint::Checkpoint;
use snn_nn::cpu::CpuTrainer;
use snn_nn::optim::{Optimizer, OptimizerState};
use snn_nn::train::{Input, expand_channels};
use snn_nn::{ActivationPlan, Loss, Network, StepStats, TrainError, Trainer};

use crate::device::Device;
use crate::dist::{Communicator, Parallel};
use crate::encode::rate_encode;
use crate::error::RuntimeError;
use crate::graph::Graph;
use crate::nn::loss::LossGpu;
use crate::nn::model::{GpuModel, GpuTrace, ModelOptions};
use crate::nn::optim::{clip_grad_norm, optimizer_state, optimizer_step};
use crate::staging::{Upload, UploadFrames, Uploader};
use crate::tensor::DeviceTensor;

/// A model with its optimizer state on the device.
#[derive(Debug)]
pub struct GpuTrainer {
    pub model: GpuModel,
    optimizer: Optimizer,
    /// One flat tensor per optimizer state (Adam's moments, SGD's momentum), laid out
    /// like the parameters.
    state: Vec<DeviceTensor>,
    step: u64,
    loss: LossGpu,
    /// Clip the gradients' total L2 norm to this value before each step.
    pub clip: Option<f64>,
    /// Takes the host batches of [`Trainer`] calls; made on the first, sized for it, and
    /// remade should a larger batch come.
    uploader: Option<Uploader>,
    /// Replay each step's forward, loss and backward from a CUDA graph (see [`StepGraph`]).
    pub graphs: bool,
    graph: Option<StepGraph>,
    /// Captures that failed (after [`MAX_CAPTURE_FAILURES`], every step runs eagerly).
    capture_failures: u32,
    capture_error: Option<String>,
    /// The shapes and buffers of the last step that ran launch by launch.
    last_eager: Option<GraphKey>,
    replays: u64,
}

/// Failed captures after which a trainer stops trying.
const MAX_CAPTURE_FAILURES: u32 = 3;

/// A step's forward, loss and backward captured as a CUDA graph, with the input buffer it
/// reads; replayed for batches of the same shapes while the buffers it captured stay put.
/// The optimizer step stays outside, since its scalars (learning rate, bias corrections)
/// change every step.
#[derive(Debug)]
struct StepGraph {
    graph: Graph,
    input: DeviceTensor,
    key: GraphKey,
}

/// What a replay must match: the shapes, and the addresses of the buffers that move
/// (the convolution workspace grows, the loss's buffers grow with the batch).
#[derive(Clone, Debug, PartialEq, Eq)]
struct GraphKey {
    input: Vec<usize>,
    steps: usize,
    batch: usize,
    workspace: u64,
    loss: (u64, u64),
}

impl GpuTrainer {
    pub fn new(model: GpuModel, optimizer: Optimizer, loss: Loss) -> Result<Self, RuntimeError> {
        optimizer.validate()?;
        let state = optimizer_state(model.device(), &optimizer, model.params().len())?;
        let classes = model.network().output_shape().len();
        Ok(Self {
            loss: LossGpu::new(model.device(), loss, classes)?,
            model,
            optimizer,
            state,
            step: 0,
            clip: None,
            uploader: None,
            graphs: false,
            graph: None,
            capture_failures: 0,
            capture_error: None,
            last_eager: None,
            replays: 0,
        })
    }

    /// Makes this trainer one rank of a run of several, each rank feeding its share of
    /// every step ([`Split`](crate::dist::Split)): by batch, as PyTorch's `DistributedDataParallel`, its own
    /// part of the global batch (the same number of samples on every rank:
    /// [`snn_data::loader::Shard`]), the gradients averaged over the ranks; by time, its
    /// chunk `[T / G, B, ...]` of the whole batch's steps (rank k the k-th; the loss sees
    /// all ranks' outputs, the gradients are summed). Rank 0's parameters and optimizer
    /// state go to every rank now, so every rank takes the same optimizer steps. Each rank
    /// keeps its own batch-norm running statistics (rank 0's go into checkpoints; the same
    /// on every rank when they are synchronised). Steps that call NCCL inside (synchronised
    /// batch-norm, a split by time) are not replayed from CUDA graphs. Every rank must
    /// call this, in the same order.
    pub fn parallel(&mut self, parallel: Parallel) -> Result<(), RuntimeError> {
        self.model.join(parallel)?;
        if let Some(comm) = self.model.communicator() {
            comm.broadcast_from_rank0(self.model.params())?;
            for s in &self.state {
                comm.broadcast_from_rank0(s)?;
            }
        }
        Ok(())
    }

    /// The run of several ranks this trainer is one of, if any.
    pub fn communicator(&self) -> Option<&Communicator> {
        self.model.communicator()
    }

    /// Steps whose forward, loss and backward were replayed from a CUDA graph.
    pub fn graph_replays(&self) -> u64 {
        self.replays
    }

    /// Why the last capture failed, if one did (such steps run launch by launch, with the
    /// same results; after [`MAX_CAPTURE_FAILURES`] failures every step does).
    pub fn capture_error(&self) -> Option<&str> {
        self.capture_error.as_deref()
    }

    /// The bytes of pool buffers the step's graph holds as its scratch (0 without one).
    pub fn graph_bytes(&self) -> usize {
        self.graph.as_ref().map_or(0, |g| g.graph.scratch_bytes())
    }

    pub fn device(&self) -> &Arc<Device> {
        self.model.device()
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// Optimizer steps taken.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The optimizer state tensors (flat, in the parameters' layout).
    pub fn state(&self) -> &[DeviceTensor] {
        &self.state
    }

    /// One training step on `x` (`[T, B, C, H, W]` f32 on the device) with `labels` at
    /// learning rate `lr`. The loss is read back (a few bytes, through pinned memory) after
    /// the whole step is queued, so the host never drains the device mid-step.
    pub fn step(
        &mut self,
        x: &DeviceTensor,
        labels: &[usize],
        steps: usize,
        lr: f64,
    ) -> Result<StepStats, RuntimeError> {
        let batch = labels.len();
        // Split by time, the loss is over every rank's steps.
        let ranks = self.model.time_stage().map_or(1, |(_, _, size)| size);
        self.loss.upload(steps * ranks, labels)?;
        self.forward_backward(x, steps, batch)?;
        self.model.reduce_gradients()?;
        let dev = self.device().clone();
        let grad_norm = self
            .clip
            .map(|max| clip_grad_norm(&dev, self.model.grads(), max).map(f64::from))
            .transpose()?;
        self.step += 1;
        let state: Vec<&DeviceTensor> = self.state.iter().collect();
        optimizer_step(
            &dev,
            &self.optimizer,
            lr,
            self.step,
            self.model.params(),
            self.model.grads(),
            &state,
        )?;
        let value = self.loss.read()?;
        Ok(StepStats {
            loss: f64::from(value.loss),
            correct: value.correct,
            batch,
            grad_norm,
        })
    }

    /// The forward pass, the loss of the uploaded labels and the backward pass, replayed
    /// from the step graph when one fits, captured into one when graphs are on and the
    /// trainer is warm, else queued launch by launch. All three give the same bits.
    fn forward_backward(
        &mut self,
        x: &DeviceTensor,
        steps: usize,
        batch: usize,
    ) -> Result<(), RuntimeError> {
        // Profiling times each layer with events of its own: launch by launch.
        // A step that calls NCCL before its backward pass ends runs launch by launch.
        if !self.graphs || self.model.is_profiling() || self.model.talks_during_step() {
            self.graph = None;
            return self.eager(x, steps, batch);
        }
        let key = GraphKey {
            input: x.shape.clone(),
            steps,
            batch,
            workspace: self.model.conv_workspace().0,
            loss: self.loss.buffers(),
        };
        if let Some(g) = self.graph.as_ref().filter(|g| g.key == key) {
            g.input.copy_from(x)?;
            g.graph.launch()?;
            return self.after_replay();
        }
        // Another shape (an epoch's last batch, say): the old graph's scratch goes back to
        // the pool. A step is captured only right after one like it ran launch by launch,
        // which compiled its kernels, chose its convolution algorithms, grew the buffers
        // that grow, and left the pool with every buffer the capture will ask for.
        self.graph = None;
        let warm = self.last_eager.as_ref() == Some(&key);
        if !warm || self.capture_failures >= MAX_CAPTURE_FAILURES {
            self.last_eager = Some(key);
            return self.eager(x, steps, batch);
        }
        let input = DeviceTensor::empty(self.device(), x.dtype, &x.shape)?;
        input.copy_from(x)?;
        let dev = self.device().clone();
        let counts: Vec<u64> = self.model.batch_counts().iter().map(|b| **b).collect();
        match Graph::capture(&dev, || self.eager(&input, steps, batch)) {
            Ok(graph) => {
                graph.launch()?;
                self.graph = Some(StepGraph { graph, input, key });
                // The host's share of the step ran during the capture, but for the loss.
                self.replays += 1;
                self.loss.replayed()
            }
            Err(e) => {
                // Nothing captured ran: undo what the host counted, then run the step.
                for (b, was) in self.model.batch_counts().into_iter().zip(counts) {
                    *b = was;
                }
                self.capture_failures += 1;
                self.capture_error = Some(e.to_string());
                self.eager(x, steps, batch)
            }
        }
    }

    /// After a replay: what the host does in an eager step (the batch-norms count the
    /// batch, the loss's results go back to the host), and the replay counts.
    fn after_replay(&mut self) -> Result<(), RuntimeError> {
        self.replays += 1;
        self.model.count_replayed_forward();
        self.loss.replayed()
    }

    /// [`GpuTrainer::forward_backward`] launch by launch.
    fn eager(&mut self, x: &DeviceTensor, steps: usize, batch: usize) -> Result<(), RuntimeError> {
        let classes = self.model.network().output_shape().len();
        let trace = self.model.forward(x, steps, batch, Mode::Train)?;
        let out = output(&trace)?.reshape(&[steps, batch, classes])?;
        if let Some((comm, rank, size)) = self.model.time_stage() {
            // Every rank's outputs, in time order: the loss of the whole T, bit for bit
            // that of one GPU; this rank's steps of its gradient go back.
            let all =
                DeviceTensor::empty(self.device(), Dtype::F32, &[steps * size, batch, classes])?;
            comm.all_gather(&out, &all)?;
            let grad = DeviceTensor::empty(self.device(), Dtype::F32, &all.shape)?;
            self.loss.launch(&all, &grad)?;
            drop((out, all));
            let per_rank = steps * batch * classes;
            let mine = grad.view(rank * per_rank, &[steps * batch, classes])?;
            return self.model.backward(trace, &mine);
        }
        let grad = DeviceTensor::empty(self.device(), Dtype::F32, &out.shape)?;
        self.loss.launch(&out, &grad)?;
        drop(out);
        self.model.backward(trace, &grad)
    }

    /// Resumes from a checkpoint of `net` (its optimizer state too, if it has one; else
    /// `optimizer` starts fresh). A checkpoint of another network is an error listing the
    /// tensors that differ.
    pub fn from_checkpoint(
        device: &Arc<Device>,
        net: &Network,
        ckpt: &Checkpoint,
        options: ModelOptions,
        optimizer: Optimizer,
        loss: Loss,
    ) -> Result<Self, RuntimeError> {
        let model = GpuModel::new(device, net, &ckpt.params, options)?;
        let mut trainer = Self::new(model, optimizer, loss)?;
        if let Some((saved, state)) = &ckpt.optimizer {
            if saved.kind() != optimizer.kind() || state.buffers.len() != trainer.state.len() {
                return Err(RuntimeError::invalid(
                    "resuming training",
                    format!(
                        "the checkpoint holds {} state; training asks for {}: resume with the same optimizer",
                        saved.kind(),
                        optimizer.kind()
                    ),
                ));
            }
            for (set, flat) in state.buffers.iter().zip(&trainer.state) {
                trainer.model.weights_from_host(set, flat)?;
            }
            trainer.step = state.step;
        }
        Ok(trainer)
    }

    /// `input` as the network's input `[T, B, ...]` on the device: images uploaded as `u8`
    /// and rate-coded there (the spikes [`Input::to_host`] draws), event frames uploaded.
    fn upload(&mut self, input: Input<'_>) -> Result<DeviceTensor, TrainError> {
        let x = match input {
            Input::Images(batch, rate) => {
                let batch = expand_channels(batch, self.model.network())?;
                let up = batch.upload_images(self.uploader(&batch.data, &batch.labels)?)?;
                rate_encode(self.device(), &up.data, &up.samples, rate.steps, rate.seed)?
            }
            Input::Counts(batch) => {
                let uploader = self.uploader(&batch.data, &batch.labels)?;
                batch.upload_counts(uploader)?.data
            }
            Input::Frames(batch) => {
                let uploader = self.uploader(&batch.data, &batch.labels)?;
                batch.upload_frames(uploader)?.data
            }
        };
        Ok(x)
    }

    /// This rank's chunk of `x`'s `steps` time steps (`[T, B, ...]`, time-major) and how
    /// many they are, when the run is split by time; else `x` whole.
    fn time_chunk(
        &self,
        x: DeviceTensor,
        steps: usize,
    ) -> Result<(DeviceTensor, usize), RuntimeError> {
        let Some((_, rank, size)) = self.model.time_stage() else {
            return Ok((x, steps));
        };
        if steps == 0 || !steps.is_multiple_of(size) || !x.len().is_multiple_of(steps) {
            return Err(RuntimeError::invalid(
                "split by time",
                format!(
                    "T = {steps} does not split evenly over {size} ranks: give T a multiple of {size}"
                ),
            ));
        }
        let (chunk, per_step) = (steps / size, x.len() / steps);
        let shape: Vec<usize> = std::iter::once(chunk)
            .chain(x.shape.iter().skip(1).copied())
            .collect();
        let shape = match shape.iter().product::<usize>() == chunk * per_step {
            true => shape,
            false => vec![chunk * per_step],
        };
        Ok((x.view(rank * chunk * per_step, &shape)?, chunk))
    }

    /// The uploader, with room for a batch of `data` and `labels`.
    fn uploader<E>(&mut self, data: &[E], labels: &[u8]) -> Result<&mut Uploader, RuntimeError> {
        let bytes = size_of_val(data) + labels.len();
        let uploader = match self.uploader.take() {
            Some(u) if u.max_bytes() >= bytes => u,
            _ => Uploader::new(self.model.device(), bytes)?,
        };
        Ok(self.uploader.insert(uploader))
    }
}

/// What a user hears of failed graph captures: how many, the last reason, and whether
/// the trainer stopped trying.
fn capture_warning(failures: u32, error: &str) -> String {
    let later = if failures >= MAX_CAPTURE_FAILURES {
        ", and so does every later step"
    } else {
        ""
    };
    format!(
        "{error} ({failures} failed capture(s)); such a step runs launch by launch, with the \
         same results{later}"
    )
}

/// The network's output in `trace`.
fn output(trace: &GpuTrace) -> Result<&DeviceTensor, RuntimeError> {
    trace
        .output()
        .ok_or_else(|| RuntimeError::Internal("the forward pass kept no output".into()))
}

/// Batches uploaded through pinned buffers and encoded on the device; the step reads only
/// its loss back, as [`GpuTrainer::step`] does.
impl Trainer for GpuTrainer {
    fn network(&self) -> &Network {
        self.model.network()
    }

    fn device_name(&self) -> String {
        self.device().info.name.clone()
    }

    fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Split by time, the batch is the whole run's: this rank steps through its chunk of
    /// its time steps.
    fn train_batch(&mut self, input: Input<'_>, lr: f64) -> Result<StepStats, TrainError> {
        let x = self.upload(input)?;
        let (x, steps) = self.time_chunk(x, input.steps())?;
        Ok(self.step(&x, &input.labels(), steps, lr)?)
    }

    fn test_batch(&mut self, input: Input<'_>) -> Result<StepStats, TrainError> {
        let x = self.upload(input)?;
        let (steps, batch) = (input.steps(), input.batch_size());
        let classes = self.model.network().output_shape().len();
        let trace = self.model.forward(&x, steps, batch, Mode::Inference)?;
        // `[T, B, K]`: a few kilobytes, so the loss is computed where it is read.
        let out = output(&trace)?.to_f32()?;
        let value = self
            .loss
            .loss()
            .compute(steps, batch, classes, &out, &input.labels())?;
        Ok(StepStats {
            loss: f64::from(value.loss),
            correct: value.correct,
            batch,
            grad_norm: None,
        })
    }

    fn warnings(&self) -> Vec<String> {
        self.capture_error
            .iter()
            .map(|e| capture_warning(self.capture_failures, e))
            .collect()
    }

    fn checkpoint(
        &self,
        epoch: u64,
        metadata: BTreeMap<String, String>,
    ) -> Result<Checkpoint, TrainError> {
        let buffers = self
            .state
            .iter()
            .map(|t| self.model.weights_to_host(t))
            .collect::<Result<_, _>>()?;
        Ok(Checkpoint {
            params: self.model.to_host()?,
            optimizer: Some((
                self.optimizer,
                OptimizerState {
                    step: self.step,
                    buffers,
                },
            )),
            epoch,
            metadata,
        })
    }
}

impl From<RuntimeError> for TrainError {
    fn from(e: RuntimeError) -> Self {
        TrainError::Device(Box::new(e))
    }
}

/// Where a run trains, chosen once; everything after goes through [`Trainer`].
#[derive(Clone, Debug)]
pub enum Backend {
    /// The CPU reference (`snn_nn::cpu`), keeping what `plan` says for the backward.
    Cpu { plan: ActivationPlan },
    /// One GPU.
    Gpu {
        device: Arc<Device>,
        options: ModelOptions,
        /// Replay steps from a CUDA graph ([`GpuTrainer::graphs`]).
        graphs: bool,
    },
}

impl Backend {
    /// GPU 0 with CUDA graphs when the machine has one (a driver that counts at least one
    /// device), else the CPU.
    pub fn auto(options: ModelOptions) -> Result<Self, RuntimeError> {
        match Device::count() {
            Ok(n) if n > 0 => Ok(Backend::Gpu {
                device: Device::open(0)?,
                options,
                graphs: true,
            }),
            _ => Ok(Backend::Cpu { plan: options.plan }),
        }
    }

    /// What its training passes keep for the backward.
    pub fn plan(&self) -> ActivationPlan {
        match self {
            Backend::Cpu { plan } => *plan,
            Backend::Gpu { options, .. } => options.plan,
        }
    }

    /// A trainer of `net` here, starting from `start`'s parameters and, when it has
    /// some, its optimizer state (fresh parameters: a checkpoint with `optimizer: None`);
    /// gradients clipped to a total L2 norm of `clip`.
    pub fn trainer(
        &self,
        net: &Network,
        start: &Checkpoint,
        optimizer: Optimizer,
        loss: Loss,
        clip: Option<f64>,
    ) -> Result<Box<dyn Trainer>, TrainError> {
        Ok(match self {
            Backend::Cpu { plan } => {
                let mut t = CpuTrainer::from_checkpoint(net, start, optimizer, loss)?;
                t.model.plan = *plan;
                t.clip = clip;
                Box::new(t)
            }
            Backend::Gpu { .. } => Box::new(self.gpu_trainer(net, start, optimizer, loss, clip)?),
        })
    }

    /// [`Backend::trainer`] as one rank of a run of several ([`GpuTrainer::parallel`]); a
    /// GPU backend on the communicator's device.
    pub fn rank_trainer(
        &self,
        net: &Network,
        start: &Checkpoint,
        optimizer: Optimizer,
        loss: Loss,
        clip: Option<f64>,
        parallel: Parallel,
    ) -> Result<Box<dyn Trainer>, TrainError> {
        let mut trainer = self.gpu_trainer(net, start, optimizer, loss, clip)?;
        trainer.parallel(parallel)?;
        Ok(Box::new(trainer))
    }

    fn gpu_trainer(
        &self,
        net: &Network,
        start: &Checkpoint,
        optimizer: Optimizer,
        loss: Loss,
        clip: Option<f64>,
    ) -> Result<GpuTrainer, TrainError> {
        let Backend::Gpu {
            device,
            options,
            graphs,
        } = self
        else {
            return Err(RuntimeError::invalid(
                "parallel training",
                "training as one of several processes needs a CUDA GPU per process (NCCL); the CPU reference trains alone",
            )
            .into());
        };
        let mut t = GpuTrainer::from_checkpoint(device, net, start, *options, optimizer, loss)?;
        t.clip = clip;
        t.graphs = *graphs;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use snn_codegen::zoo;
    use snn_data::{Batch, BatchLayout};
    use snn_nn::ImageShape;
    use snn_nn::models::spiking_mlp;
    use snn_nn::train::RateCode;

    use super::*;

    #[test]
    fn a_trainer_moves_to_another_thread() {
        // One worker thread per GPU needs it (a CUDA graph inside included).
        fn send<T: Send>() {}
        send::<GpuTrainer>();
    }

    #[test]
    fn failed_captures_are_told_with_their_reason_and_whether_graphs_stopped() {
        let once = capture_warning(1, "capturing a CUDA graph: nothing was captured");
        assert!(once.starts_with("capturing a CUDA graph: nothing was captured (1 failed"));
        assert!(!once.contains("every later step"), "{once}");
        let last = capture_warning(MAX_CAPTURE_FAILURES, "x");
        assert!(last.ends_with("and so does every later step"), "{last}");
    }

    #[test]
    fn the_cpu_backend_resumes_a_checkpoint_with_its_optimizer_state() {
        let net = spiking_mlp(ImageShape::new(1, 2, 2), 4, 3, &zoo::PaperLif::default()).unwrap();
        let fresh = Checkpoint::fresh(snn_nn::init_params(&net, 1).unwrap());
        let adam = Optimizer::adam(1e-2);
        let ce = Loss::CrossEntropyRate;
        let mut trainer = Backend::Cpu {
            plan: ActivationPlan::All,
        }
        .trainer(&net, &fresh, adam, ce, Some(1.0))
        .unwrap();
        assert_eq!(
            (trainer.device_name().as_str(), trainer.steps_taken()),
            ("the CPU", 0)
        );
        assert!(trainer.warnings().is_empty());
        let batch = Batch {
            indices: vec![0, 1],
            data: vec![0, 60, 120, 255, 255, 120, 60, 0],
            labels: vec![2, 1],
            shape: vec![2, 1, 2, 2],
            layout: BatchLayout::SampleMajor,
        };
        let input = Input::Images(&batch, RateCode { steps: 3, seed: 0 });
        let stats = trainer.train_batch(input, 1e-2).unwrap();
        assert!(stats.grad_norm.is_some(), "clipping is on");
        let ckpt = trainer.checkpoint(0, BTreeMap::new()).unwrap();
        let resumed = Backend::Cpu {
            plan: ActivationPlan::All,
        }
        .trainer(&net, &ckpt, adam, ce, None)
        .unwrap();
        assert_eq!(resumed.steps_taken(), 1);
        let sgd = Optimizer::sgd(1e-2, 0.9);
        let e = Backend::Cpu {
            plan: ActivationPlan::All,
        }
        .trainer(&net, &ckpt, sgd, ce, None)
        .unwrap_err();
        assert!(e.to_string().contains("same optimizer"), "{e}");
    }
}
