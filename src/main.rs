//! `snn`: the command line of the snn compiler.
//!
//! `snn train` trains a spiking network on a dataset (by default the small CNN on the
//! embedded digits) and `snn eval` tests a checkpoint. `snn bench neuron` times the
//! generated fused neuron kernels on a GPU and reports the achieved bandwidth against a
//! device copy measured in the same run. `snn data download` fetches and verifies
//! datasets; `snn data path` prints where they live.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// snn: spiking neural networks with fused CUDA kernels, generated from one step function
/// per neuron.
#[derive(Debug, Parser)]
#[command(
    name = "snn",
    version,
    after_help = "`snn train` trains the small spiking CNN on the embedded digits (no \
                  download); `snn train --dataset mnist --arch spiking-resnet18` runs the \
                  paper's experiment (see `snn train --help`).\n\n\
                  `snn bench neuron` prints, per neuron and time-step count T: forward ms, \
                  forward+backward ms, bytes per element-step, GB/s, and % of the card's \
                  copy bandwidth (see `snn bench neuron --help`).\n\n\
                  Example (time every zoo neuron on GPU 0):\n  snn bench neuron\n\n\
                  `snn data download <dataset>` fetches, verifies and unpacks a dataset \
                  (mnist, cifar10, nmnist, dvs-gesture) into the data directory that \
                  `snn data path` prints."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks on a GPU: fused neuron kernels against the card's copy bandwidth
    /// (`bench neuron`), one Spiking-ResNet training iteration and its memory (`bench train`),
    /// a neuron layer's time split over several GPUs (`bench multi-gpu`).
    #[command(subcommand)]
    Bench(cli::bench::Bench),
    /// Datasets: `snn data download <dataset>` fetches, verifies and unpacks one;
    /// `snn data path` prints the data directory.
    Data(cli::data::Data),
    /// Train a spiking network on a dataset (the paper's experiments; by default the small
    /// CNN on the embedded digits): progress, metrics.jsonl, checkpoints, --resume.
    Train(cli::train::TrainArgs),
    /// Test accuracy of a checkpoint written by `snn train`.
    Eval(cli::train::EvalArgs),
    /// The zoo: each neuron's parameters and equations.
    Neurons(cli::tools::NeuronsArgs),
    /// The generated CUDA of one kernel of a zoo neuron.
    Codegen(cli::tools::CodegenArgs),
    /// Checks the GPU, driver, NVRTC, cuDNN, cuBLAS and the kernel cache, and says what to
    /// install for anything missing.
    Doctor,
    /// The kernel cache: `snn cache info`, `snn cache clear`.
    #[command(subcommand)]
    Cache(cli::tools::Cache),
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let result = match Cli::parse().command {
        Command::Bench(b) => cli::bench::run(b),
        Command::Data(d) => cli::data::run(d),
        Command::Train(t) => cli::train::train(t),
        Command::Eval(e) => cli::train::eval(e),
        Command::Neurons(n) => cli::tools::neurons(n),
        Command::Codegen(c) => cli::tools::codegen(c),
        Command::Doctor => cli::tools::doctor(),
        Command::Cache(c) => cli::tools::cache(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// `snn neurons | head` ends quietly when `head` closes the pipe, as Unix tools do, instead
/// of panicking in `println!`: Rust ignores SIGPIPE by default; this restores the default.
#[allow(unsafe_code)]
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any other thread exists, with a valid
    // signal number and the default disposition; no handler of ours is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Prints an error and its causes, one per line, without the backtrace that anyhow's
/// `Debug` adds whenever `RUST_BACKTRACE` is set (the GPU runner sets it).
fn report(e: &anyhow::Error) {
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {}", cause.to_string().replace('\n', "\n    "));
    }
}
