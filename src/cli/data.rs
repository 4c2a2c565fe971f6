//! `snn data`: the data directory and dataset downloads.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use snn::data::download::{self, Dataset, DownloadOptions, Outcome};

/// What `snn data --help` prints after the options.
const DATA_AFTER_HELP: &str = "\
The data directory is --data-dir, else $SNN_DATA_DIR, else $XDG_DATA_HOME/snn, else
~/.local/share/snn. Each dataset gets its own folder in it (mnist, cifar10, nmnist,
dvs-gesture), which is what its reader takes.

Examples:
  snn data download mnist cifar10
  snn data path
  SNN_DATA_DIR=/scratch/data snn data download nmnist";

/// What `snn data download --help` prints after the options.
const DOWNLOAD_AFTER_HELP: &str = "\
Files are fetched from the datasets' canonical sources (or from $SNN_DATA_MIRROR/<file
name> when set, or --mirror), checked against their published SHA-256 or MD5 digests, and
archives are unpacked. An interrupted download is resumed by running the command again.
Files already present and verified are not fetched again.

DVS128 Gesture cannot be downloaded automatically: put IBM's DvsGesture.tar.gz in the
dataset's folder (the error says where) and run the command again to verify and unpack it.

Prints the dataset's folder on stdout.";

/// Datasets: where they live, and downloading them.
#[derive(Debug, Args)]
#[command(after_help = DATA_AFTER_HELP)]
pub struct Data {
    /// The data directory (default: $SNN_DATA_DIR, else $XDG_DATA_HOME/snn, else
    /// ~/.local/share/snn).
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Download datasets into the data directory, verify them and unpack their archives.
    #[command(after_help = DOWNLOAD_AFTER_HELP)]
    Download(DownloadArgs),
    /// Print the data directory, or a dataset's folder in it.
    Path {
        /// Print this dataset's folder instead.
        #[arg(value_enum)]
        dataset: Option<DatasetArg>,
    },
}

#[derive(Debug, Args)]
struct DownloadArgs {
    /// The datasets to download.
    #[arg(value_enum, required = true, num_args = 1..)]
    datasets: Vec<DatasetArg>,
    /// Fetch every file from <URL>/<file name> instead of its canonical URL; a local
    /// folder (a path or file:///path) is copied from, for machines without internet
    /// (default: $SNN_DATA_MIRROR).
    #[arg(long, value_name = "URL|DIR")]
    mirror: Option<String>,
    /// Download again a file already present that fails verification (damaged, or another
    /// file under its name), instead of keeping it and reporting it.
    #[arg(long)]
    replace_damaged: bool,
    /// Draw no progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DatasetArg {
    /// MNIST: four gzipped IDX files (about 11 MB).
    Mnist,
    /// CIFAR-10, binary version (about 170 MB).
    #[value(alias = "cifar-10")]
    Cifar10,
    /// N-MNIST: Train.zip and Test.zip, unpacked.
    #[value(alias = "n-mnist")]
    Nmnist,
    /// DVS128 Gesture: only verifies and unpacks DvsGesture.tar.gz put in place by hand.
    #[value(alias = "dvs128-gesture", alias = "dvsgesture")]
    DvsGesture,
}

impl From<DatasetArg> for Dataset {
    fn from(d: DatasetArg) -> Self {
        match d {
            DatasetArg::Mnist => Dataset::Mnist,
            DatasetArg::Cifar10 => Dataset::Cifar10,
            DatasetArg::Nmnist => Dataset::NMnist,
            DatasetArg::DvsGesture => Dataset::DvsGesture,
        }
    }
}

/// Runs `snn data ...`.
pub fn run(data: Data) -> Result<()> {
    let root = download::data_dir(data.data_dir.as_deref())?;
    match data.command {
        DataCommand::Path { dataset } => {
            let path = match dataset {
                Some(d) => Dataset::from(d).dir(&root),
                None => root,
            };
            println!("{}", path.display());
            Ok(())
        }
        DataCommand::Download(args) => {
            let mut opts = DownloadOptions::from_env();
            if args.mirror.is_some() {
                opts.mirror = args.mirror;
            }
            opts.progress = !args.quiet;
            opts.replace_damaged = args.replace_damaged;
            for d in args.datasets {
                let dataset = Dataset::from(d);
                let report = download::download_dataset(dataset, &root, &opts)?;
                for (name, outcome) in &report.files {
                    let what = match outcome {
                        Outcome::AlreadyPresent => "present, verified".to_string(),
                        Outcome::AlreadyUnpacked => "already unpacked".to_string(),
                        Outcome::Downloaded {
                            resumed_from: 0,
                            bytes,
                        } => format!("downloaded, {bytes} bytes, verified"),
                        Outcome::Downloaded {
                            resumed_from,
                            bytes,
                        } => format!(
                            "downloaded, {bytes} bytes (resumed from {resumed_from}), verified"
                        ),
                    };
                    eprintln!("{dataset}: {name}: {what}");
                }
                println!("{}", report.dir.display());
            }
            Ok(())
        }
    }
}
