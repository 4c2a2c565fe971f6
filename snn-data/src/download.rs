//! Downloads: the datasets' canonical files, fetched into the data directory, verified
//! against their published digests and unpacked into the layout the readers expect.
//!
//! # Where the data lives
//!
//! [`data_dir`] picks the data directory: a path given explicitly (the CLI's
//! `--data-dir`), else the [`DATA_DIR_ENV`] (`SNN_DATA_DIR`) environment variable, else
//! `$XDG_DATA_HOME/snn`, else `~/.local/share/snn`. Each dataset has its own folder in it,
//! [`Dataset::dir`]:
//!
//! | dataset | folder | after [`download_dataset`] | read with |
//! |---|---|---|---|
//! | MNIST | `mnist/` | the four IDX `.gz` files | [`Mnist::load`](super::Mnist::load) |
//! | CIFAR-10 | `cifar10/` | `cifar-10-batches-bin/` (and the archive) | [`Cifar10::load`](super::Cifar10::load) |
//! | N-MNIST | `nmnist/` | `Train/`, `Test/` (and `Train.zip`, `Test.zip`) | [`NMnist::open`](super::NMnist::open) |
//! | DVS128 Gesture | `dvs-gesture/` | `DvsGesture/`, from `DvsGesture.tar.gz` put there by hand | [`DvsGesture::open`](super::DvsGesture::open) |
//!
//! # How a file is fetched
//!
//! [`download_file`] streams the file into `<name>.part` next to its final name, showing a
//! progress bar on stderr (hidden when stderr is not a terminal). An interrupted transfer
//! keeps the `.part` file; the next attempt asks the server for the rest with an HTTP
//! `Range` request, and starts over cleanly when the server does not honour it. The
//! complete file is checked against every digest and size the registry knows, then
//! flushed to disk and renamed into place atomically, so a file under its final name is
//! always complete and verified. A mismatch deletes the `.part` file and is a
//! [`DownloadError::DigestMismatch`] naming the file, the expected and the actual digest
//! (a resumed download that fails the check is first retried once from scratch, in case
//! the partial file came from a different version of the file). A file already present
//! under its final name is verified and not fetched again. Two processes must not
//! download the same file into the same folder at the same time (they would share the
//! `.part` file; the digest check would then reject the result).
//!
//! The canonical URLs can be replaced by a mirror ([`MIRROR_ENV`], `SNN_DATA_MIRROR`, or
//! [`DownloadOptions::mirror`]): every file is then fetched from `<mirror>/<file name>`.
//!
//! # Digests
//!
//! | file | size (bytes) | SHA-256 | MD5 |
//! |---|---|---|---|
//! | `train-images-idx3-ubyte.gz` | 9,912,422 | `440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609` | `f68b3c2dcbeaaa9fbdd348bbdeb94873` |
//! | `train-labels-idx1-ubyte.gz` | 28,881 | `3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c` | `d53e105ee54ea40749a09fcbcd1e9432` |
//! | `t10k-images-idx3-ubyte.gz` | 1,648,877 | `8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6` | `9fb629c4189551a2d022fa330f9573f3` |
//! | `t10k-labels-idx1-ubyte.gz` | 4,542 | `f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6` | `ec29112dd5afa0611ce80d1b7f02629c` |
//! | `cifar-10-binary.tar.gz` | 170,052,171 | `c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd` | `c32a1d4ab5d03f1284b67883e8d87530` |
//! | N-MNIST `Train.zip` | not published | not published | `20959b8e626244a1b502305a9e6e2031` |
//! | N-MNIST `Test.zip` | not published | not published | `69ca8762b2fe404d9b9bad1103e97832` |
//! | `DvsGesture.tar.gz` (put in place by hand) | not published | not published | `8a5c71fb11e24e5ca5b11866ca6c00a1` |
//!
//! The MD5 sums are the ones the datasets' distributors and the standard loaders publish
//! (torchvision for MNIST, the CIFAR page for CIFAR-10, Tonic and SpikingJelly for
//! N-MNIST, SpikingJelly for DVS128 Gesture). The SHA-256 sums of MNIST and CIFAR-10 are
//! the values used independently by several public loaders, and they agree with those
//! files' MD5 sums and sizes. No SHA-256 sum of the N-MNIST or DVS128 Gesture archives
//! is published anywhere we could confirm, so those are checked by MD5 only: that still
//! catches a truncated or damaged transfer, though MD5 is no defence against a
//! deliberately forged file.

use std::env;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use md5::Md5;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The environment variable that sets the data directory when no path is given.
pub const DATA_DIR_ENV: &str = "SNN_DATA_DIR";

/// The environment variable that replaces the canonical URLs by a mirror:
/// `<mirror>/<file name>` for every file.
pub const MIRROR_ENV: &str = "SNN_DATA_MIRROR";

/// Where N-MNIST can be fetched by hand.
const NMNIST_PAGE: &str = "https://www.garrickorchard.com/datasets/n-mnist";
/// N-MNIST's files on Mendeley Data, where its authors host them.
const NMNIST_MENDELEY: &str = "https://data.mendeley.com/datasets/468j46mzdv/1";
/// IBM's page for DVS128 Gesture.
const DVS_PAGE: &str = "https://research.ibm.com/interactive/dvsgesture/";
/// The Box folder the page links to, holding `DvsGesture.tar.gz`.
const DVS_BOX: &str =
    "https://ibm.ent.box.com/s/3hiq58ww1pbbjrinh367ykfdf60xsfm8/folder/50167556794";

/// The read buffer of transfers and digests.
const BUF: usize = 1 << 18;

/// Picks the data directory: `flag` when given, else `$SNN_DATA_DIR`, else
/// `$XDG_DATA_HOME/snn` (when it is an absolute path, as the XDG specification requires),
/// else `$HOME/.local/share/snn`. A relative path is made absolute against the current
/// directory. Nothing is created.
pub fn data_dir(flag: Option<&Path>) -> Result<PathBuf, DownloadError> {
    let chosen = if let Some(dir) = flag {
        dir.to_path_buf()
    } else if let Some(dir) = env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        PathBuf::from(dir)
    } else if let Some(xdg) = env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        xdg.join("snn")
    } else if let Some(home) = env::var_os("HOME").filter(|v| !v.is_empty()) {
        PathBuf::from(home).join(".local").join("share").join("snn")
    } else {
        return Err(DownloadError::NoDataDir);
    };
    std::path::absolute(&chosen).map_err(|e| DownloadError::io("resolve", &chosen, e))
}

/// The datasets this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// MNIST: the four gzipped IDX files.
    Mnist,
    /// CIFAR-10, binary version: `cifar-10-binary.tar.gz`.
    Cifar10,
    /// N-MNIST: `Train.zip` and `Test.zip`.
    NMnist,
    /// DVS128 Gesture: `DvsGesture.tar.gz`, which must be fetched by hand.
    DvsGesture,
}

impl Dataset {
    /// Every dataset, in the order of [`Dataset::name`]'s documentation.
    pub const ALL: [Dataset; 4] = [
        Dataset::Mnist,
        Dataset::Cifar10,
        Dataset::NMnist,
        Dataset::DvsGesture,
    ];

    /// The short name the CLI takes, which is also the dataset's folder in the data
    /// directory: `mnist`, `cifar10`, `nmnist`, `dvs-gesture`.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::Cifar10 => "cifar10",
            Dataset::NMnist => "nmnist",
            Dataset::DvsGesture => "dvs-gesture",
        }
    }

    /// The name people know it by.
    pub fn title(self) -> &'static str {
        match self {
            Dataset::Mnist => "MNIST",
            Dataset::Cifar10 => "CIFAR-10",
            Dataset::NMnist => "N-MNIST",
            Dataset::DvsGesture => "DVS128 Gesture",
        }
    }

    /// The dataset's folder in `data_dir`, which its reader takes.
    pub fn dir(self, data_dir: &Path) -> PathBuf {
        data_dir.join(self.name())
    }

    /// Whether [`download_dataset`] can fetch it (every dataset but DVS128 Gesture).
    pub fn is_downloadable(self) -> bool {
        self != Dataset::DvsGesture
    }

    /// The files that make up the dataset, with their canonical URLs and digests. For
    /// DVS128 Gesture, the archive to be put in place by hand (its `url` is IBM's page,
    /// not a file).
    pub fn files(self) -> Vec<RemoteFile> {
        const MNIST: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";
        match self {
            Dataset::Mnist => [
                (
                    "train-images-idx3-ubyte.gz",
                    9_912_422,
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    28_881,
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    1_648_877,
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "9fb629c4189551a2d022fa330f9573f3",
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    4_542,
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
            ]
            .into_iter()
            .map(|(name, size, sha256, md5)| RemoteFile {
                name: name.into(),
                url: format!("{MNIST}{name}"),
                size: Some(size),
                sha256: Some(sha256.into()),
                md5: Some(md5.into()),
                unpack: Unpack::Keep,
            })
            .collect(),
            Dataset::Cifar10 => vec![RemoteFile {
                name: "cifar-10-binary.tar.gz".into(),
                url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz".into(),
                size: Some(170_052_171),
                sha256: Some(
                    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd".into(),
                ),
                md5: Some("c32a1d4ab5d03f1284b67883e8d87530".into()),
                unpack: Unpack::TarGz {
                    creates: "cifar-10-batches-bin".into(),
                },
            }],
            Dataset::NMnist => {
                const BASE: &str =
                    "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/";
                [
                    (
                        "Train.zip",
                        "39c25547-014b-4137-a934-9d29fa53c7a0",
                        "20959b8e626244a1b502305a9e6e2031",
                        "Train",
                    ),
                    (
                        "Test.zip",
                        "05a4d654-7e03-4c15-bdfa-9bb2bcbea494",
                        "69ca8762b2fe404d9b9bad1103e97832",
                        "Test",
                    ),
                ]
                .into_iter()
                .map(|(name, id, md5, creates)| RemoteFile {
                    name: name.into(),
                    url: format!("{BASE}{id}/file_downloaded"),
                    size: None,
                    sha256: None,
                    md5: Some(md5.into()),
                    unpack: Unpack::Zip {
                        creates: creates.into(),
                    },
                })
                .collect()
            }
            Dataset::DvsGesture => vec![RemoteFile {
                name: "DvsGesture.tar.gz".into(),
                url: DVS_PAGE.into(),
                size: None,
                sha256: None,
                md5: Some("8a5c71fb11e24e5ca5b11866ca6c00a1".into()),
                unpack: Unpack::TarGz {
                    creates: "DvsGesture".into(),
                },
            }],
        }
    }

    /// For a dataset that cannot be downloaded automatically, what to fetch, from where,
    /// and where to put it in `data_dir`; `None` for the others.
    pub fn manual_download_help(self, data_dir: &Path) -> Option<String> {
        if self != Dataset::DvsGesture {
            return None;
        }
        let dir = self.dir(data_dir);
        let archive = dir.join("DvsGesture.tar.gz");
        let root = dir.join("DvsGesture");
        Some(format!(
            "IBM distributes it only through a Box folder that needs a web browser. Download \
             `DvsGesture.tar.gz` from IBM's DVS128 Gesture dataset page, {DVS_PAGE} (the \
             files are in the Box folder it links to, {DVS_BOX}), and put it at {archive}; \
             then run `snn data download dvs-gesture` again (with the same data \
             directory), which checks its MD5 and unpacks it (or unpack it yourself with `tar xzf {archive} -C {dir}`). Expected \
             layout:\n  {root}/trials_to_train.txt\n  {root}/trials_to_test.txt\n  \
             {root}/user01_fluorescent.aedat\n  {root}/user01_fluorescent_labels.csv\n  ... \
             (the 122 recordings of users 01 to 29, each with its _labels.csv)",
            archive = archive.display(),
            dir = dir.display(),
            root = root.display(),
        ))
    }

    /// What to do when an automatic download of this dataset keeps failing.
    fn fetch_hint(self, dir: &Path) -> Option<String> {
        match self {
            Dataset::NMnist => Some(format!(
                "if automatic download keeps failing, download Train.zip and Test.zip by hand \
                 from the N-MNIST page, {NMNIST_PAGE} (files on Mendeley Data, \
                 {NMNIST_MENDELEY}), and put them in {} (or extract them there, so that it \
                 holds Train/0..9 and Test/0..9)",
                dir.display()
            )),
            _ => None,
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataset {
    type Err = String;

    /// Takes [`Dataset::name`], case-insensitively, and the usual spellings
    /// (`cifar-10`, `n-mnist`, `dvs128-gesture`, `dvsgesture`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match key.as_str() {
            "mnist" => Ok(Dataset::Mnist),
            "cifar10" => Ok(Dataset::Cifar10),
            "nmnist" => Ok(Dataset::NMnist),
            "dvsgesture" | "dvs128gesture" => Ok(Dataset::DvsGesture),
            _ => Err(format!(
                "unknown dataset `{s}`; expected one of: {}",
                Dataset::ALL.map(Dataset::name).join(", ")
            )),
        }
    }
}

/// What happens to a file once it is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unpack {
    /// Nothing: the readers take it as it is.
    Keep,
    /// A gzipped tar archive holding the folder `creates`.
    TarGz {
        /// The folder the archive holds, created next to it.
        creates: String,
    },
    /// A zip archive holding the folder `creates`.
    Zip {
        /// The folder the archive holds, created next to it.
        creates: String,
    },
}

impl Unpack {
    /// The folder unpacking creates, if any.
    pub fn creates(&self) -> Option<&str> {
        match self {
            Unpack::Keep => None,
            Unpack::TarGz { creates } | Unpack::Zip { creates } => Some(creates),
        }
    }
}

/// One file of a dataset: where it comes from and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// The file name, on disk and on a mirror.
    pub name: String,
    /// The canonical URL.
    pub url: String,
    /// The size in bytes, when published.
    pub size: Option<u64>,
    /// The SHA-256 digest in hex, when known.
    pub sha256: Option<String>,
    /// The MD5 digest in hex, when known.
    pub md5: Option<String>,
    /// What to do with it once verified.
    pub unpack: Unpack,
}

impl RemoteFile {
    /// A file kept as it is, checked by its SHA-256 digest (in hex).
    pub fn new(name: impl Into<String>, url: impl Into<String>, sha256: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            size: None,
            sha256: Some(sha256.into()),
            md5: None,
            unpack: Unpack::Keep,
        }
    }

    /// The URL to fetch it from: `<mirror>/<name>` with a mirror, else [`RemoteFile::url`].
    pub fn url_from(&self, mirror: Option<&str>) -> String {
        match mirror {
            Some(m) => format!("{}/{}", m.trim_end_matches('/'), self.name),
            None => self.url.clone(),
        }
    }
}

/// How to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadOptions {
    /// A base URL replacing the canonical ones: every file is fetched from
    /// `<mirror>/<file name>`.
    pub mirror: Option<String>,
    /// Whether to draw a progress bar on stderr (never drawn when stderr is not a
    /// terminal).
    pub progress: bool,
    /// The longest wait for a connection, and for each read from it.
    pub timeout: Duration,
}

impl Default for DownloadOptions {
    /// The canonical URLs, a progress bar, 60 s timeouts.
    fn default() -> Self {
        Self {
            mirror: None,
            progress: true,
            timeout: Duration::from_secs(60),
        }
    }
}

impl DownloadOptions {
    /// The defaults, with the mirror taken from [`MIRROR_ENV`] when it is set and not
    /// empty.
    pub fn from_env() -> Self {
        Self {
            mirror: env::var(MIRROR_ENV).ok().filter(|m| !m.trim().is_empty()),
            ..Self::default()
        }
    }

    fn agent(&self, url: &str) -> ureq::Agent {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(self.timeout))
            .timeout_per_read(Some(self.timeout))
            .user_agent(concat!("snn/", env!("CARGO_PKG_VERSION")));
        if is_loopback(url) {
            // A proxy from the environment cannot reach this machine's own servers.
            config = config.proxy(None);
        }
        config.build().into()
    }
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]")
}

/// What [`download_file`] or [`install_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The file was already under its final name and passed verification: nothing was
    /// fetched.
    AlreadyPresent,
    /// The archive's folder already existed: nothing was fetched or checked.
    AlreadyUnpacked,
    /// The file was fetched and verified; `resumed_from` bytes came from an earlier
    /// partial download (0 for a fresh one).
    Downloaded {
        /// Bytes reused from the `.part` file.
        resumed_from: u64,
        /// The file's size.
        bytes: u64,
    },
}

/// What [`download_dataset`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetReport {
    /// The dataset.
    pub dataset: Dataset,
    /// Its folder, ready for its reader.
    pub dir: PathBuf,
    /// Each file's name and what happened to it.
    pub files: Vec<(String, Outcome)>,
}

/// A download that failed; every message names the file or URL at fault and what to do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// No data directory could be chosen.
    #[error("no data directory: pass --data-dir, or set {DATA_DIR_ENV}, XDG_DATA_HOME or HOME")]
    NoDataDir,

    /// A local file operation failed.
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// What was being done ("create", "write", "rename").
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },

    /// The server answered with an error status.
    #[error("{url} answered HTTP {status} for {name}; {hint}")]
    Http {
        /// The URL requested.
        url: String,
        /// The file wanted.
        name: String,
        /// The HTTP status.
        status: u16,
        /// What to do about it.
        hint: String,
    },

    /// The server could not be reached, or the request failed before an answer.
    #[error("cannot download {name} from {url}: {error}; {hint}")]
    Transport {
        /// The URL requested.
        url: String,
        /// The file wanted.
        name: String,
        /// What went wrong (boxed: the client's error type is large).
        error: Box<ureq::Error>,
        /// What to do about it.
        hint: String,
    },

    /// The transfer stopped before the end; the partial file is kept for resumption.
    #[error(
        "the download of {url} was interrupted after {received} of {} bytes ({error}); the \
         partial file {} is kept: run the download again to resume it",
        total.map_or_else(|| "?".to_string(), |t| t.to_string()),
        partial.display()
    )]
    Interrupted {
        /// The URL being read.
        url: String,
        /// The `.part` file holding what arrived.
        partial: PathBuf,
        /// Bytes in the partial file.
        received: u64,
        /// The file's size, when the server said it.
        total: Option<u64>,
        /// What the connection said.
        error: io::Error,
    },

    /// The file's content is not the published file's: its digest differs.
    #[error(
        "{}: checksum mismatch: expected {algorithm} {expected}, got {actual}; {note}",
        path.display()
    )]
    DigestMismatch {
        /// The file (its final name).
        path: PathBuf,
        /// `SHA-256` or `MD5`.
        algorithm: &'static str,
        /// The published digest.
        expected: String,
        /// The digest of what was received.
        actual: String,
        /// What happened to the file and what to do.
        note: String,
    },

    /// The file's size is not the published size.
    #[error("{}: {actual} bytes, expected {expected}; {note}", path.display())]
    SizeMismatch {
        /// The file (its final name).
        path: PathBuf,
        /// The published size.
        expected: u64,
        /// The size received or offered.
        actual: u64,
        /// What happened to the file and what to do.
        note: String,
    },

    /// A file that has no digest to check it by cannot be downloaded.
    #[error("{name} has no known SHA-256 or MD5 digest, so it cannot be verified")]
    NoDigest {
        /// The file.
        name: String,
    },

    /// The dataset cannot be downloaded automatically.
    #[error("{dataset} cannot be downloaded automatically: {help}")]
    ManualDownload {
        /// The dataset's title.
        dataset: &'static str,
        /// Where to get it and where to put it.
        help: String,
    },

    /// A verified archive could not be unpacked.
    #[error("cannot unpack {}: {reason}; delete it and run the download again", archive.display())]
    Unpack {
        /// The archive.
        archive: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl DownloadError {
    fn io(action: &'static str, path: &Path, error: io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            error,
        }
    }

    fn with_hint(self, extra: Option<String>) -> Self {
        let Some(extra) = extra else { return self };
        match self {
            Self::Http {
                url,
                name,
                status,
                hint,
            } => Self::Http {
                url,
                name,
                status,
                hint: format!("{hint}; {extra}"),
            },
            Self::Transport {
                url,
                name,
                error,
                hint,
            } => Self::Transport {
                url,
                name,
                error,
                hint: format!("{hint}; {extra}"),
            },
            other => other,
        }
    }
}

/// Fetches a dataset into `Dataset::dir(data_dir)` and unpacks its archives, skipping what
/// is already there; the returned report's `dir` is what the dataset's reader takes.
/// DVS128 Gesture is only verified and unpacked when its archive was put in place by hand;
/// otherwise the error says where to get it and where to put it.
pub fn download_dataset(
    dataset: Dataset,
    data_dir: &Path,
    opts: &DownloadOptions,
) -> Result<DatasetReport, DownloadError> {
    let dir = dataset.dir(data_dir);
    let mut files = Vec::new();
    for file in dataset.files() {
        let outcome = if dataset.is_downloadable() {
            install_file(&file, &dir, opts).map_err(|e| e.with_hint(dataset.fetch_hint(&dir)))?
        } else {
            install_local(dataset, &file, &dir, data_dir)?
        };
        files.push((file.name, outcome));
    }
    Ok(DatasetReport {
        dataset,
        dir,
        files,
    })
}

/// A file that cannot be fetched: unpacks it when it is there, else says how to get it.
fn install_local(
    dataset: Dataset,
    file: &RemoteFile,
    dir: &Path,
    data_dir: &Path,
) -> Result<Outcome, DownloadError> {
    if let Some(creates) = file.unpack.creates()
        && dir.join(creates).is_dir()
    {
        return Ok(Outcome::AlreadyUnpacked);
    }
    let path = dir.join(&file.name);
    if !path.is_file() {
        // Make the folder the help names, so the archive can be dropped straight in.
        let _ = fs::create_dir_all(dir);
        return Err(DownloadError::ManualDownload {
            dataset: dataset.title(),
            help: dataset.manual_download_help(data_dir).unwrap_or_default(),
        });
    }
    verify_file(&path, file).map_err(|e| {
        annotate(
            e,
            format!(
                "it is not the archive IBM publishes, or it is damaged: delete it and \
                 download it again from {DVS_PAGE}"
            ),
        )
    })?;
    unpack(&path, dir, &file.unpack)?;
    Ok(Outcome::AlreadyPresent)
}

/// [`download_file`], then unpacks the file as [`RemoteFile::unpack`] says. Does nothing
/// when the folder the archive creates already exists in `dir`.
pub fn install_file(
    file: &RemoteFile,
    dir: &Path,
    opts: &DownloadOptions,
) -> Result<Outcome, DownloadError> {
    if let Some(creates) = file.unpack.creates()
        && dir.join(creates).is_dir()
    {
        return Ok(Outcome::AlreadyUnpacked);
    }
    let outcome = download_file(file, dir, opts)?;
    unpack(&dir.join(&file.name), dir, &file.unpack)?;
    Ok(outcome)
}

/// Fetches `file` into `dir/<name>` (creating `dir`), through `dir/<name>.part`, resuming
/// an earlier partial download when the server allows it, verifying every known digest
/// and size before the atomic rename into place. A file already under its final name is
/// verified and kept; if it fails verification it is left alone and the error says to
/// delete it.
pub fn download_file(
    file: &RemoteFile,
    dir: &Path,
    opts: &DownloadOptions,
) -> Result<Outcome, DownloadError> {
    if file.sha256.is_none() && file.md5.is_none() {
        return Err(DownloadError::NoDigest {
            name: file.name.clone(),
        });
    }
    fs::create_dir_all(dir).map_err(|e| DownloadError::io("create", dir, e))?;
    let path = dir.join(&file.name);
    let part = dir.join(format!("{}.part", file.name));
    if path.is_file() {
        verify_file(&path, file).map_err(|e| {
            annotate(
                e,
                "it was already there and was kept: delete it to download it again".into(),
            )
        })?;
        // A partial file left over from before the file arrived is of no further use.
        remove(&part)?;
        return Ok(Outcome::AlreadyPresent);
    }
    let url = file.url_from(opts.mirror.as_deref());
    let agent = opts.agent(&url);
    // One fresh restart is allowed when a resumed download fails verification.
    let mut may_restart = true;
    loop {
        let resumed_from = fetch(&agent, file, &url, &part, opts)?;
        match verify_as(&part, &path, file) {
            Ok(bytes) => {
                fs::rename(&part, &path).map_err(|e| DownloadError::io("rename", &part, e))?;
                return Ok(Outcome::Downloaded {
                    resumed_from,
                    bytes,
                });
            }
            Err(e) => {
                let _ = fs::remove_file(&part);
                if resumed_from > 0 && may_restart {
                    may_restart = false;
                    continue;
                }
                return Err(annotate(
                    e,
                    format!(
                        "the file downloaded from {url} is damaged or is not the published \
                         file; the partial download {} was deleted: run the download again",
                        part.display()
                    ),
                ));
            }
        }
    }
}

fn annotate(e: DownloadError, text: String) -> DownloadError {
    match e {
        DownloadError::DigestMismatch {
            path,
            algorithm,
            expected,
            actual,
            ..
        } => DownloadError::DigestMismatch {
            path,
            algorithm,
            expected,
            actual,
            note: text,
        },
        DownloadError::SizeMismatch {
            path,
            expected,
            actual,
            ..
        } => DownloadError::SizeMismatch {
            path,
            expected,
            actual,
            note: text,
        },
        other => other,
    }
}

/// Checks `path` against every digest and size `file` lists.
pub fn verify_file(path: &Path, file: &RemoteFile) -> Result<(), DownloadError> {
    verify_as(path, path, file).map(|_| ())
}

/// Checks the bytes of `actual` as the file `named`; returns its size. Mismatch errors
/// carry an empty note, filled in by the caller.
fn verify_as(actual: &Path, named: &Path, file: &RemoteFile) -> Result<u64, DownloadError> {
    let mut f = File::open(actual).map_err(|e| DownloadError::io("open", actual, e))?;
    let mut sha = Sha256::new();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; BUF];
    let mut len = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DownloadError::io("read", actual, e)),
        };
        len += n as u64;
        if file.sha256.is_some() {
            sha.update(&buf[..n]);
        }
        if file.md5.is_some() {
            md5.update(&buf[..n]);
        }
    }
    if let Some(expected) = file.size
        && expected != len
    {
        return Err(DownloadError::SizeMismatch {
            path: named.to_path_buf(),
            expected,
            actual: len,
            note: String::new(),
        });
    }
    let checks = [
        ("SHA-256", file.sha256.as_deref(), hex(&sha.finalize())),
        ("MD5", file.md5.as_deref(), hex(&md5.finalize())),
    ];
    for (algorithm, expected, actual) in checks {
        if let Some(expected) = expected
            && !expected.trim().eq_ignore_ascii_case(&actual)
        {
            return Err(DownloadError::DigestMismatch {
                path: named.to_path_buf(),
                algorithm,
                expected: expected.trim().to_ascii_lowercase(),
                actual,
                note: String::new(),
            });
        }
    }
    Ok(len)
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Brings `part` to the whole file from `url`, resuming from its length when it exists;
/// returns how many bytes were reused. On an interrupted transfer the partial file is kept.
fn fetch(
    agent: &ureq::Agent,
    file: &RemoteFile,
    url: &str,
    part: &Path,
    opts: &DownloadOptions,
) -> Result<u64, DownloadError> {
    let mut offset = match fs::metadata(part) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(DownloadError::io("read", part, e)),
    };
    if let Some(size) = file.size {
        if offset == size {
            return Ok(offset); // complete already; verification decides
        }
        if offset > size {
            remove(part)?;
            offset = 0;
        }
    }
    let hint = || {
        format!(
            "check the network connection, or set {MIRROR_ENV} to a mirror that serves {}",
            file.name
        )
    };
    let transport = |error| DownloadError::Transport {
        url: url.to_string(),
        name: file.name.clone(),
        error: Box::new(error),
        hint: hint(),
    };
    let mut response = request(agent, url, offset).map_err(transport)?;
    let mut status = response.status().as_u16();
    let mut append = false;
    if offset > 0 {
        let start = (status == 206).then(|| content_range(&response)).flatten();
        if status == 206 && start.is_some_and(|(s, _)| s == offset) {
            append = true;
        } else if status == 416 && unsatisfied_total(&response) == Some(offset) {
            // The partial file is already the whole file; verification decides.
            return Ok(offset);
        } else if status == 206 || status == 416 {
            // A range we did not ask for, or the partial file is no prefix of the file
            // (416: longer than it): start again without a range.
            drop(response);
            remove(part)?;
            offset = 0;
            response = request(agent, url, 0).map_err(transport)?;
            status = response.status().as_u16();
        } else {
            // 200: the server ignores ranges and sends the whole file.
            offset = 0;
        }
    }
    if !(200..300).contains(&status) || (status == 206 && !append) {
        return Err(DownloadError::Http {
            url: url.to_string(),
            name: file.name.clone(),
            status,
            hint: hint(),
        });
    }
    let body_len = response.body().content_length();
    let total = if append {
        content_range(&response)
            .and_then(|(_, total)| total)
            .or(body_len.map(|n| n + offset))
    } else {
        body_len
    };
    let path = part.with_file_name(&file.name);
    if let (Some(size), Some(total)) = (file.size, total)
        && size != total
    {
        return Err(DownloadError::SizeMismatch {
            path,
            expected: size,
            actual: total,
            note: format!(
                "{url} serves a file of a different size than the published one: it is not \
                 that file; nothing was downloaded"
            ),
        });
    }

    let mut out = if append {
        OpenOptions::new().append(true).open(part)
    } else {
        File::create(part)
    }
    .map_err(|e| DownloadError::io("create", part, e))?;
    let bar = progress_bar(opts.progress, total, &file.name);
    bar.set_position(offset);
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; BUF];
    let mut received = offset;
    let result = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                out.write_all(&buf[..n])
                    .map_err(|e| DownloadError::io("write", part, e))?;
                received += n as u64;
                bar.set_position(received);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    bar.finish_and_clear();
    // Keep what arrived, complete or not, durable before anything looks at it.
    out.sync_all()
        .map_err(|e| DownloadError::io("write", part, e))?;
    match result {
        Ok(()) if total.is_none_or(|t| received >= t) => Ok(offset),
        Ok(()) => Err(DownloadError::Interrupted {
            url: url.to_string(),
            partial: part.to_path_buf(),
            received,
            total,
            error: io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed early"),
        }),
        Err(error) => Err(DownloadError::Interrupted {
            url: url.to_string(),
            partial: part.to_path_buf(),
            received,
            total,
            error,
        }),
    }
}

fn request(
    agent: &ureq::Agent,
    url: &str,
    offset: u64,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let mut req = agent.get(url);
    if offset > 0 {
        req = req.header("Range", format!("bytes={offset}-"));
    }
    req.call()
}

/// The start and total of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range(response: &ureq::http::Response<ureq::Body>) -> Option<(u64, Option<u64>)> {
    let value = response.headers().get("content-range")?.to_str().ok()?;
    let spec = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = spec.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// The total of a 416 answer's `Content-Range: bytes */TOTAL` header.
fn unsatisfied_total(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let value = response.headers().get("content-range")?.to_str().ok()?;
    let spec = value.trim().strip_prefix("bytes")?.trim_start();
    spec.strip_prefix("*/")?.trim().parse().ok()
}

fn remove(path: &Path) -> Result<(), DownloadError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DownloadError::io("delete", path, e)),
    }
}

fn progress_bar(show: bool, total: Option<u64>, name: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(t) => (
            ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{spinner} {msg} {bytes} {bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_string());
    bar
}

/// Unpacks a verified archive in `dir` into a scratch folder, then renames the folder it
/// creates into place, so that a folder under its final name is always complete.
fn unpack(archive: &Path, dir: &Path, how: &Unpack) -> Result<(), DownloadError> {
    let Some(creates) = how.creates() else {
        return Ok(());
    };
    let target = dir.join(creates);
    if target.is_dir() {
        return Ok(());
    }
    let scratch = dir.join(format!(".{creates}.unpacking"));
    if scratch.exists() {
        fs::remove_dir_all(&scratch).map_err(|e| DownloadError::io("delete", &scratch, e))?;
    }
    fs::create_dir_all(&scratch).map_err(|e| DownloadError::io("create", &scratch, e))?;
    let failed = |reason: String| DownloadError::Unpack {
        archive: archive.to_path_buf(),
        reason,
    };
    let opened = File::open(archive).map_err(|e| DownloadError::io("open", archive, e))?;
    let result = match how {
        Unpack::Keep => Ok(()),
        Unpack::TarGz { .. } => {
            let mut tar =
                tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(opened)));
            tar.set_preserve_permissions(false);
            tar.unpack(&scratch).map_err(|e| failed(e.to_string()))
        }
        Unpack::Zip { .. } => zip::ZipArchive::new(io::BufReader::new(opened))
            .and_then(|mut z| z.extract(&scratch))
            .map_err(|e| failed(e.to_string())),
    };
    let result = result.and_then(|()| {
        let made = scratch.join(creates);
        if !made.is_dir() {
            return Err(failed(format!("it holds no folder `{creates}`")));
        }
        fs::rename(&made, &target).map_err(|e| DownloadError::io("rename", &made, e))
    });
    let _ = fs::remove_dir_all(&scratch);
    result
}
