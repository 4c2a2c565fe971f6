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
//! A mirror may be a local folder (`file:///dir` or a path), for machines without
//! internet: its files are copied and verified like downloads.
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
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::Md5;
use sha2::{Digest, Sha256};

mod error;
mod fetch;
mod registry;
mod unpack;

pub use error::DownloadError;
pub use registry::{Dataset, MNIST_URL, RemoteFile, Unpack};

use fetch::fetch;
use registry::DVS_PAGE;
use unpack::unpack;

/// The environment variable that sets the data directory when no path is given.
pub const DATA_DIR_ENV: &str = "SNN_DATA_DIR";

/// The environment variable that replaces the canonical URLs by a mirror:
/// `<mirror>/<file name>` for every file.
pub const MIRROR_ENV: &str = "SNN_DATA_MIRROR";

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
    /// Replace a file already present that fails verification (damaged, or another
    /// file under its name) by downloading it again; otherwise it is kept and reported.
    pub replace_damaged: bool,
}

impl Default for DownloadOptions {
    /// The canonical URLs, a progress bar, 60 s timeouts.
    fn default() -> Self {
        Self {
            mirror: None,
            progress: true,
            timeout: Duration::from_secs(60),
            replace_damaged: false,
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
    if file.unpack.is_done_in(dir) {
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
        e.with_note(format!(
            "it is not the archive IBM publishes, or it is damaged: delete it and \
             download it again from {DVS_PAGE}"
        ))
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
    if file.unpack.is_done_in(dir) {
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
        match verify_file(&path, file) {
            Ok(()) => {
                // A partial file left over from before the file arrived is of no further use.
                remove(&part)?;
                return Ok(Outcome::AlreadyPresent);
            }
            Err(
                e @ (DownloadError::DigestMismatch { .. } | DownloadError::SizeMismatch { .. }),
            ) if opts.replace_damaged => {
                drop(e);
                remove(&path)?;
            }
            Err(e) => {
                return Err(e.with_note(
                    "the file already there is damaged, or is another file under its name; it \
                     was kept: run again with --replace-damaged to download it afresh (or \
                     delete it)"
                        .into(),
                ));
            }
        }
    }
    if let Some(folder) = local_mirror(opts.mirror.as_deref())? {
        return copy_from(&folder.join(&file.name), &part, &path, file);
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
                return Err(e.with_note(format!(
                    "the file downloaded from {url} is damaged or is not the published \
                         file; the partial download {} was deleted: run the download again",
                    part.display()
                )));
            }
        }
    }
}

/// The folder of a local mirror (`file:///dir`, or a path to a folder); `None` for an
/// http(s) mirror or none. Anything else is [`DownloadError::BadMirror`].
fn local_mirror(mirror: Option<&str>) -> Result<Option<PathBuf>, DownloadError> {
    let Some(m) = mirror else { return Ok(None) };
    if m.starts_with("http://") || m.starts_with("https://") {
        return Ok(None);
    }
    let folder = PathBuf::from(m.strip_prefix("file://").unwrap_or(m));
    if folder.is_dir() {
        Ok(Some(folder))
    } else {
        Err(DownloadError::BadMirror { mirror: m.into() })
    }
}

/// Copies `source` (a local mirror's file) to `part`, verifies it and renames it to `path`;
/// a copy that fails verification is deleted.
fn copy_from(
    source: &Path,
    part: &Path,
    path: &Path,
    file: &RemoteFile,
) -> Result<Outcome, DownloadError> {
    fs::copy(source, part).map_err(|e| DownloadError::io("copy", source, e))?;
    match verify_as(part, path, file) {
        Ok(bytes) => {
            fs::rename(part, path).map_err(|e| DownloadError::io("rename", part, e))?;
            Ok(Outcome::Downloaded {
                resumed_from: 0,
                bytes,
            })
        }
        Err(e) => {
            let _ = fs::remove_file(part);
            Err(e.with_note(format!(
                "{} (from the local mirror) is damaged or is not the published file; the copy was deleted",
                source.display()
            )))
        }
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

fn remove(path: &Path) -> Result<(), DownloadError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DownloadError::io("delete", path, e)),
    }
}
