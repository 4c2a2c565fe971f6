//! `snn neurons`, `snn codegen`, `snn doctor` and `snn cache`: what the zoo holds, the CUDA
//! it becomes, whether this machine can run it, and the kernel cache.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use snn::codegen::cuda::{KernelOptions, generate};
use snn::codegen::{Storage, compile, fuse, zoo};
use snn::runtime::{Device, KernelCache, libs, nvrtc};

/// `snn neurons`: options.
#[derive(Debug, Args)]
pub struct NeuronsArgs {
    /// Also print this neuron's memory plan and derived backward equations.
    #[arg(long, value_name = "NAME", value_parser = crate::cli::bench::parse_neuron)]
    neuron: Option<String>,
}

/// Lists the zoo: each neuron's parameters (with defaults) and step equations; with
/// `--neuron`, that neuron's memory plan and backward too.
pub fn neurons(args: NeuronsArgs) -> Result<()> {
    let Some(name) = args.neuron else {
        for neuron in zoo::all() {
            println!("{}", neuron.ir()?);
        }
        println!("`snn neurons --neuron NAME` adds the memory plan and the backward equations.");
        return Ok(());
    };
    let neuron = zoo::by_name(&name).context("a zoo neuron")?;
    print!("{}", compile(&neuron.ir()?, Storage::F32)?);
    Ok(())
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KernelArg {
    ForwardTrain,
    ForwardInference,
    Backward,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StorageArg {
    /// f32 everywhere.
    F32,
    /// bf16 inputs, outputs, gradients and saves; u8 spikes.
    Narrow,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FuseArg {
    /// Batch-norm applied inside the neuron, as the GPU model runs ResNets.
    Bn,
    /// Batch-norm and a residual add.
    BnAdd,
}

/// `snn codegen`: options.
#[derive(Debug, Args)]
#[command(
    after_help = "Prints the CUDA source that snn generates, and compiles with \
    NVRTC at run time, for one kernel of a zoo neuron. For a neuron of your own, \
    `snn::codegen::cuda::generate(&compile(&MyNeuron::new().ir()?, Storage::F32)?, \
    &Default::default())` gives the same (see the README's \"Generated CUDA\").\n\n\
    Example:\n  snn codegen --neuron lif --kernel backward --storage narrow"
)]
pub struct CodegenArgs {
    #[arg(long, value_name = "NAME", default_value = "paper_lif", value_parser = crate::cli::bench::parse_neuron)]
    neuron: String,
    #[arg(long, value_enum, default_value_t = KernelArg::ForwardTrain)]
    kernel: KernelArg,
    #[arg(long, value_enum, default_value_t = StorageArg::F32)]
    storage: StorageArg,
    /// Fuse what precedes the neuron in a ResNet into its kernel.
    #[arg(long, value_enum)]
    fuse: Option<FuseArg>,
}

pub fn codegen(args: CodegenArgs) -> Result<()> {
    let neuron = zoo::by_name(&args.neuron).context("a zoo neuron")?;
    let ir = match args.fuse {
        None => neuron.ir()?,
        Some(FuseArg::Bn) => fuse::batch_norm_input(&neuron.ir()?, false)?,
        Some(FuseArg::BnAdd) => fuse::batch_norm_input(&neuron.ir()?, true)?,
    };
    let storage = match args.storage {
        StorageArg::F32 => Storage::F32,
        StorageArg::Narrow => Storage::NARROW,
    };
    let kernels = generate(&compile(&ir, storage)?, &KernelOptions::default());
    let kernel = match args.kernel {
        KernelArg::ForwardTrain => &kernels.forward_train,
        KernelArg::ForwardInference => &kernels.forward_inference,
        KernelArg::Backward => &kernels.backward,
    };
    print!("{}", kernel.source);
    Ok(())
}

/// `snn doctor`: reports what a GPU run needs, and for anything missing what to install.
pub fn doctor() -> Result<()> {
    let mut missing = 0;
    let mut check = |what: &str, found: Result<String, String>| match found {
        Ok(detail) => println!("ok       {what}: {detail}"),
        Err(problem) => {
            missing += 1;
            println!("missing  {what}: {}", problem.replace('\n', "\n         "));
        }
    };
    let driver = libs::driver().map_err(|e| e.to_string());
    check("CUDA driver", driver.clone());
    if driver.is_ok() {
        match Device::count() {
            Ok(0) => check("GPU", Err("the driver sees no CUDA device".into())),
            Ok(n) => {
                for k in 0..n {
                    let info = Device::open(k).map(|d| {
                        let i = &d.info;
                        format!(
                            "{} (compute capability {}.{}, {} SMs, {:.1} GiB)",
                            i.name,
                            i.compute_capability.0,
                            i.compute_capability.1,
                            i.multiprocessors,
                            i.total_memory as f64 / f64::from(1u32 << 30)
                        )
                    });
                    check(&format!("GPU {k}"), info.map_err(|e| e.to_string()));
                }
            }
            Err(e) => check("GPU", Err(e.to_string())),
        }
    }
    let nvrtc_found = libs::nvrtc().and_then(|path| {
        let (major, minor) = nvrtc::version()?;
        Ok(format!("{major}.{minor} ({path})"))
    });
    check("NVRTC", nvrtc_found.map_err(|e| e.to_string()));
    check("cuDNN", libs::cudnn().map_err(|e| e.to_string()));
    check("cuBLAS", libs::cublas().map_err(|e| e.to_string()));
    let cache = KernelCache::from_env();
    check("kernel cache", Ok(cache_summary(cache.dir())));
    if missing > 0 {
        bail!(
            "{missing} thing(s) missing: snn can still train on the CPU reference (`snn train --cpu`)"
        );
    }
    Ok(())
}

/// `snn cache`: the kernel cache.
#[derive(Debug, Subcommand)]
pub enum Cache {
    /// Where the compiled kernels are kept, how many and how large.
    Info,
    /// Deletes every compiled kernel and remembered cuDNN choice (they are compiled and
    /// searched again when next needed).
    Clear,
}

pub fn cache(cmd: Cache) -> Result<()> {
    let cache = KernelCache::from_env();
    match cmd {
        Cache::Info => println!("{}", cache_summary(cache.dir())),
        Cache::Clear => {
            let Some(dir) = cache.dir() else {
                println!("the kernel cache is in memory only (SNN_CACHE=off): nothing to clear");
                return Ok(());
            };
            let (mut files, mut bytes) = (0u64, 0u64);
            for (path, size) in entries(dir)? {
                fs::remove_file(&path).with_context(|| format!("deleting {}", path.display()))?;
                files += 1;
                bytes += size;
            }
            println!(
                "deleted {files} entries ({:.1} MiB) from {}",
                mib(bytes),
                dir.display()
            );
        }
    }
    Ok(())
}

fn cache_summary(dir: Option<&Path>) -> String {
    let Some(dir) = dir else {
        return "in memory only (SNN_CACHE=off)".into();
    };
    match entries(dir) {
        Ok(e) => format!(
            "{} ({} entries: compiled kernels and cuDNN algorithm choices, {:.1} MiB; \
             SNN_CACHE_DIR moves it, SNN_CACHE=off disables it)",
            dir.display(),
            e.len(),
            mib(e.iter().map(|(_, s)| s).sum())
        ),
        Err(e) => format!("{}: {e:#}", dir.display()),
    }
}

/// The cache's entries (compiled kernels `*.cubin`, cuDNN's algorithm choices
/// `conv-*.txt`) and their sizes; none when the folder does not exist.
fn entries(dir: &Path) -> Result<Vec<(std::path::PathBuf, u64)>> {
    let read = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = vec![];
    for entry in read {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let choices = name.starts_with("conv-") && name.ends_with(".txt");
        if choices || path.extension().is_some_and(|x| x == "cubin") {
            out.push((path, entry.metadata().map(|m| m.len()).unwrap_or(0)));
        }
    }
    Ok(out)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}
