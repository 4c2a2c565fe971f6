//! The datasets' files: where each comes from, its published digests and size, and what
//! unpacking it creates.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where `snn data download mnist` fetches MNIST's files from (torchvision's mirror).
pub const MNIST_URL: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";
/// Where N-MNIST can be fetched by hand.
pub(super) const NMNIST_PAGE: &str = "https://www.garrickorchard.com/datasets/n-mnist";
/// N-MNIST's files on Mendeley Data, where its authors host them.
pub(super) const NMNIST_MENDELEY: &str = "https://data.mendeley.com/datasets/468j46mzdv/1";
/// IBM's page for DVS128 Gesture.
pub(super) const DVS_PAGE: &str = "https://research.ibm.com/interactive/dvsgesture/";
/// The Box folder the page links to, holding `DvsGesture.tar.gz`.
pub(super) const DVS_BOX: &str =
    "https://ibm.ent.box.com/s/3hiq58ww1pbbjrinh367ykfdf60xsfm8/folder/50167556794";

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

    /// Whether [`download_dataset`](super::download_dataset) can fetch it (every dataset but DVS128 Gesture).
    pub fn is_downloadable(self) -> bool {
        self != Dataset::DvsGesture
    }

    /// The files that make up the dataset, with their canonical URLs and digests. For
    /// DVS128 Gesture, the archive to be put in place by hand (its `url` is IBM's page,
    /// not a file).
    pub fn files(self) -> Vec<RemoteFile> {
        const MNIST: &str = MNIST_URL;
        const NMNIST: &str = "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/";
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
            .map(|(name, size, sha256, md5)| {
                let url = format!("{MNIST}{name}");
                published(name, url, Some(size), Some(sha256), md5, Unpack::Keep)
            })
            .collect(),
            Dataset::Cifar10 => vec![published(
                "cifar-10-binary.tar.gz",
                "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz".into(),
                Some(170_052_171),
                Some("c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
                "c32a1d4ab5d03f1284b67883e8d87530",
                Unpack::TarGz {
                    creates: "cifar-10-batches-bin".into(),
                },
            )],
            Dataset::NMnist => [
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
            .map(|(name, id, md5, creates)| {
                let url = format!("{NMNIST}{id}/file_downloaded");
                let unpack = Unpack::Zip {
                    creates: creates.into(),
                };
                published(name, url, None, None, md5, unpack)
            })
            .collect(),
            Dataset::DvsGesture => vec![published(
                "DvsGesture.tar.gz",
                DVS_PAGE.into(),
                None,
                None,
                "8a5c71fb11e24e5ca5b11866ca6c00a1",
                Unpack::TarGz {
                    creates: "DvsGesture".into(),
                },
            )],
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
    pub(super) fn fetch_hint(self, dir: &Path) -> Option<String> {
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

    /// Whether the folder unpacking creates is already in `dir`.
    pub fn is_done_in(&self, dir: &Path) -> bool {
        self.creates().is_some_and(|c| dir.join(c).is_dir())
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

/// A file of the registry: every one has a published MD5 sum.
fn published(
    name: &str,
    url: String,
    size: Option<u64>,
    sha256: Option<&str>,
    md5: &str,
    unpack: Unpack,
) -> RemoteFile {
    RemoteFile {
        name: name.into(),
        url,
        size,
        sha256: sha256.map(Into::into),
        md5: Some(md5.into()),
        unpack,
    }
}
