//! The temporal-fusion paper's `MultiGPUTest`, forward and backward: one neuron layer of
//! N neurons over T steps, time split over G GPUs of this machine
//! ([`crate::dist::pipeline`]), one thread and NCCL rank per GPU.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use snn_codegen::{Dtype, Layout, NeuronIr};

use super::median_ms;
use crate::device::Device;
use crate::dist::pipeline::TimePipeline;
use crate::dist::rendezvous::free_port;
use crate::dist::{Communicator, Parallel, Split, World};
use crate::error::RuntimeError;
use crate::layer::{LayerConfig, NeuronLayer};
use crate::tensor::DeviceTensor;

/// How [`time_pipeline`] runs.
#[derive(Clone, Copy, Debug)]
pub struct PipelineRun {
    /// T, split evenly over the GPUs.
    pub steps: usize,
    /// N, split evenly into the micro-batches.
    pub neurons: usize,
    pub micro_batches: usize,
    /// Timed iterations (the median is reported).
    pub repeats: usize,
}

/// One configuration's timings.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineBench {
    pub gpus: usize,
    pub steps: usize,
    /// One training iteration, forward and backward through the whole pipeline (CUDA
    /// events on rank 0's stream, which starts the forward and ends the backward).
    pub iteration_ms: f64,
    /// One hand-off, `Tc`: one micro-batch's states sent from rank 0 to rank 1 (none with
    /// one GPU).
    pub handoff_ms: Option<f64>,
}

/// How long a rank waits for the others to join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Times `neuron` under [`TimePipeline`] on GPUs `0..gpus`: each rank's chunk of every
/// micro-batch is rate-coded spikes of random intensities drawn on its GPU, which also
/// serve as the output gradients (the time does not depend on the values).
pub fn time_pipeline(
    neuron: &NeuronIr,
    gpus: usize,
    run: PipelineRun,
) -> Result<PipelineBench, RuntimeError> {
    let PipelineRun {
        steps,
        neurons,
        micro_batches,
        ..
    } = run;
    if gpus == 0
        || micro_batches == 0
        || !steps.is_multiple_of(gpus)
        || !neurons.is_multiple_of(micro_batches)
    {
        return Err(RuntimeError::invalid(
            "time pipeline benchmark",
            format!(
                "T = {steps} must split evenly over {gpus} GPU(s) and N = {neurons} over \
                 {micro_batches} micro-batch(es)"
            ),
        ));
    }
    let port = free_port()?;
    let ranks: Vec<_> = (0..gpus)
        .map(|rank| {
            let neuron = neuron.clone();
            thread::spawn(move || rank_run(&neuron, rank, gpus, port, run))
        })
        .collect();
    let mut results = Vec::with_capacity(gpus);
    for (rank, h) in ranks.into_iter().enumerate() {
        let r = h.join().map_err(|_| {
            RuntimeError::Internal(format!("the thread of pipeline rank {rank} panicked"))
        })?;
        results.push(r?);
    }
    Ok(PipelineBench {
        gpus,
        steps,
        iteration_ms: results[0].0,
        handoff_ms: results.get(1).and_then(|r| r.1),
    })
}

/// Rank `rank`'s part of [`time_pipeline`]: its iteration time and, on rank 1, the time of
/// one hand-off from rank 0.
fn rank_run(
    neuron: &NeuronIr,
    rank: usize,
    size: usize,
    port: u16,
    run: PipelineRun,
) -> Result<(f64, Option<f64>), RuntimeError> {
    let dev = Device::open(rank)?;
    let comm = Communicator::join(&dev, &World::local(rank, size, port), JOIN_TIMEOUT)?;
    let (steps, n) = (run.steps / size, run.neurons / run.micro_batches);
    let layer = NeuronLayer::new(
        &dev,
        neuron,
        LayerConfig::new(Layout {
            channels: 1,
            inner: 1,
        }),
    )?;
    let inputs = (0..run.micro_batches)
        .map(|m| spikes(&dev, steps, n, (rank * run.micro_batches + m) as u64))
        .collect::<Result<Vec<_>, _>>()?;
    let xs: Vec<Vec<&DeviceTensor>> = inputs
        .iter()
        .map(|x| vec![x; layer.neuron().inputs.len()])
        .collect();
    let dys: Vec<Vec<&DeviceTensor>> = inputs
        .iter()
        .map(|x| vec![x; layer.neuron().outputs.len()])
        .collect();
    let handoff = match rank {
        0 | 1 if size > 1 => Some(handoff_ms(&dev, &comm, &layer, n, run.repeats)?),
        _ => None,
    };
    let pipe = TimePipeline::new(&layer, &comm)?;
    let iteration = median_ms(&dev, run.repeats, || {
        let fwds = pipe.forward(&xs, true)?;
        pipe.backward(&xs, &fwds, &dys).map(drop)
    })?;
    Ok((iteration, handoff.filter(|_| rank == 1)))
}

/// The median time for rank 0 to hand one micro-batch's states (`n` f32 per state) to
/// rank 1: a send on rank 0, a receive on rank 1, timed on rank 1's stream.
fn handoff_ms(
    dev: &Arc<Device>,
    comm: &Communicator,
    layer: &NeuronLayer,
    n: usize,
    repeats: usize,
) -> Result<f64, RuntimeError> {
    let states = (0..layer.neuron().states.len())
        .map(|_| DeviceTensor::zeros(dev, Dtype::F32, &[n]))
        .collect::<Result<Vec<_>, _>>()?;
    let rank = comm.world().rank;
    median_ms(dev, repeats, || {
        for s in &states {
            match rank {
                0 => comm.send(s, 1)?,
                _ => comm.recv(s, 0)?,
            }
        }
        Ok(())
    })
}

/// `[steps, n]` rate-coded spikes of random intensities, drawn on the device.
fn spikes(
    dev: &Arc<Device>,
    steps: usize,
    n: usize,
    seed: u64,
) -> Result<DeviceTensor, RuntimeError> {
    let mut rng = snn_nn::Rng::new(seed);
    let intensity: Vec<f32> = (0..n)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
        .collect();
    let intensity = DeviceTensor::from_f32(dev, Dtype::F32, &[1, n], &intensity)?;
    crate::encode::rate_encode(dev, &intensity, &[seed], steps, seed)?.reshape(&[steps, n])
}

/// The median time of one training iteration of `net` on GPUs `0..gpus` (one thread and
/// NCCL rank each; Adam; gradients in buckets of `bucket_bytes`, see
/// [`Parallel::bucket_bytes`]), CUDA events on rank 0's stream: split by batch, `batch`
/// samples per GPU over `steps` steps (with the same work per GPU, perfect scaling keeps
/// the 1-GPU time); split by time, `steps / gpus` steps of the `batch` samples per GPU
/// (perfect scaling divides the 1-GPU time by `gpus`).
pub fn time_parallel(
    net: &snn_nn::Network,
    gpus: usize,
    (steps, batch): (usize, usize),
    (split, bucket_bytes): (Split, usize),
    options: crate::nn::ModelOptions,
    repeats: usize,
) -> Result<f64, RuntimeError> {
    let local = match split {
        Split::Batch { .. } => steps,
        Split::Time if steps.is_multiple_of(gpus) => steps / gpus,
        Split::Time => {
            return Err(RuntimeError::invalid(
                "split by time",
                format!("T = {steps} does not split evenly over {gpus} GPUs"),
            ));
        }
    };
    let port = free_port()?;
    let ranks: Vec<_> = (0..gpus)
        .map(|rank| {
            let net = net.clone();
            thread::spawn(move || -> Result<f64, RuntimeError> {
                let dev = Device::open(rank)?;
                let comm = Communicator::join(&dev, &World::local(rank, gpus, port), JOIN_TIMEOUT)?;
                let mut trainer = super::adam_trainer(&dev, &net, 0, options)?;
                trainer.graphs = true;
                trainer.parallel(Parallel {
                    comm,
                    split,
                    bucket_bytes,
                })?;
                // Split by time, every rank holds steps of the same samples and labels.
                let seed = match split {
                    Split::Time => 0,
                    Split::Batch { .. } => rank as u64,
                };
                let (x, labels) = super::synthetic_batch(&dev, &net, local, batch, seed)?;
                median_ms(&dev, repeats, || {
                    trainer.step(&x, &labels, local, 1e-3).map(drop)
                })
            })
        })
        .collect();
    let mut times = Vec::with_capacity(gpus);
    for (rank, h) in ranks.into_iter().enumerate() {
        times.push(h.join().map_err(|_| {
            RuntimeError::Internal(format!("the thread of training rank {rank} panicked"))
        })??);
    }
    Ok(times[0])
}
