//! The loaders of a run: each dataset read from its files (or, for the digits, from the
//! binary), event recordings integrated into `T` frames split by event number as the
//! paper (SpikingJelly) does, through the frame cache in the data directory.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use snn::data::download::Dataset as Remote;
use snn::data::frames::{FrameCache, FrameSpec, SplitBy};
use snn::data::{
    Cifar10, DataError, Dataset, Digits, DvsGesture, EventFrames, GestureSplit, ImageDataset,
    Loader, LoaderConfig, Mnist, NMnist, Shard, Split,
};
use snn::nn::ImageShape;

use super::config::{DatasetArg, RunConfig};

/// A run's training and test loaders, and the shape of one input frame.
#[derive(Debug)]
pub struct Loaders<D: Dataset> {
    pub train: Loader<D>,
    pub test: Loader<D>,
    pub input: ImageShape,
}

/// The loaders of each kind of dataset.
#[derive(Debug)]
pub enum Data {
    Images(Loaders<ImageDataset>),
    NMnist(Loaders<EventFrames<NMnist>>),
    Gesture(Loaders<EventFrames<GestureSplit>>),
}

/// Opens the config's dataset under `data_dir` (read only for downloaded datasets); the
/// training loader serves `shard` of every epoch.
pub fn open(
    config: &RunConfig,
    share: Share,
    data_dir: impl FnOnce() -> Result<std::path::PathBuf>,
) -> Result<Data> {
    let images = |load: &dyn Fn(Split) -> Result<ImageDataset>| -> Result<Data> {
        let (train, test) = (load(Split::Train)?, load(Split::Test)?);
        Ok(Data::Images(loaders(config, share, train, test)?))
    };
    match config.dataset {
        DatasetArg::Digits => images(&|split| Ok(Digits::load(split)?)),
        DatasetArg::Mnist => {
            let dir = Remote::Mnist.dir(&data_dir()?);
            images(&|split| read(Mnist::load(&dir, split), &dir, "mnist"))
        }
        DatasetArg::Cifar10 => {
            let dir = Remote::Cifar10.dir(&data_dir()?);
            images(&|split| read(Cifar10::load(&dir, split), &dir, "cifar10"))
        }
        DatasetArg::Nmnist => {
            let data_dir = data_dir()?;
            let dir = Remote::NMnist.dir(&data_dir);
            let (spec, cache) = frames(config, &data_dir)?;
            let split = |split| -> Result<_> {
                let source = read(NMnist::open(&dir, split), &dir, "nmnist")?;
                Ok(EventFrames::new(source, spec, Some(cache.clone()))?)
            };
            Ok(Data::NMnist(loaders(
                config,
                share,
                split(Split::Train)?,
                split(Split::Test)?,
            )?))
        }
        DatasetArg::DvsGesture => {
            let data_dir = data_dir()?;
            let dir = Remote::DvsGesture.dir(&data_dir);
            let (spec, cache) = frames(config, &data_dir)?;
            let gesture = read(DvsGesture::open(&dir), &dir, "dvs-gesture")?;
            let split = |split| -> Result<_> {
                Ok(EventFrames::new(
                    gesture.split(split)?,
                    spec,
                    Some(cache.clone()),
                )?)
            };
            Ok(Data::Gesture(loaders(
                config,
                share,
                split(Split::Train)?,
                split(Split::Test)?,
            )?))
        }
    }
}

/// `T` frames split by event number, cached under the data directory.
fn frames(config: &RunConfig, data_dir: &Path) -> Result<(FrameSpec, Arc<FrameCache>)> {
    let cache_dir = data_dir.join("frames");
    let cache = FrameCache::new(&cache_dir)
        .with_context(|| format!("opening the frame cache in {}", cache_dir.display()))?;
    Ok((
        FrameSpec::new(config.steps, SplitBy::Number),
        Arc::new(cache),
    ))
}

/// A dataset read from `dir`: when its files are missing, the error adds the command that
/// fetches them; a damaged file's error already says what to do.
fn read<T>(result: Result<T, DataError>, dir: &Path, name: &str) -> Result<T> {
    result.map_err(|e| {
        let hint = match &e {
            DataError::Missing { .. } => format!(
                "reading {name} from {}: run `snn data download {name}` first (or point \
                 --data-dir at the folder that holds it)",
                dir.display()
            ),
            _ => format!("reading {name} from {}", dir.display()),
        };
        anyhow::Error::new(e).context(hint)
    })
}

/// What of the data one process of a run sees.
#[derive(Clone, Copy, Debug)]
pub struct Share {
    /// Its part of every training epoch.
    pub shard: Shard,
    /// Samples per test batch.
    pub test_batch: usize,
}

impl Share {
    /// All of the data, with test batches of `test_batch` samples.
    pub fn whole(test_batch: usize) -> Self {
        Self {
            shard: Shard::WHOLE,
            test_batch,
        }
    }
}

/// Seeded, shuffled training batches (of the share's shard of every epoch) and in-order
/// test batches.
fn loaders<D: Dataset>(config: &RunConfig, share: Share, train: D, test: D) -> Result<Loaders<D>> {
    let shape = train.sample_shape();
    let [c, h, w] = shape[shape.len().saturating_sub(3)..] else {
        anyhow::bail!("samples of shape {shape:?} are not images or frames");
    };
    let loader = |data: D, shuffle| {
        let settings = LoaderConfig {
            batch_size: if shuffle {
                config.batch
            } else {
                share.test_batch
            },
            shuffle,
            seed: config.seed,
            shard: if shuffle { share.shard } else { Shard::WHOLE },
            ..LoaderConfig::default()
        };
        Loader::new(Arc::new(data), settings).context("setting up the loader")
    };
    Ok(Loaders {
        train: loader(train, true)?,
        test: loader(test, false)?,
        input: ImageShape::new(c, h, w),
    })
}
