//! Why a download failed.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::DATA_DIR_ENV;

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

    /// A mirror that is neither an http(s) URL nor a local folder.
    #[error(
        "the mirror `{mirror}` is neither an http(s) URL nor an existing folder: give \
         `https://host/path`, or `file:///path` or a path to a folder that holds the \
         dataset's files under their published names"
    )]
    BadMirror {
        /// The mirror as given.
        mirror: String,
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
    pub(super) fn io(action: &'static str, path: &Path, error: io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            error,
        }
    }

    /// An HTTP or transport error with `extra` appended to its hint.
    pub(super) fn with_hint(mut self, extra: Option<String>) -> Self {
        if let (Self::Http { hint, .. } | Self::Transport { hint, .. }, Some(extra)) =
            (&mut self, extra)
        {
            *hint = format!("{hint}; {extra}");
        }
        self
    }

    /// A digest or size mismatch with its note (what happened, what to do) set to `text`.
    pub(super) fn with_note(mut self, text: String) -> Self {
        if let Self::DigestMismatch { note, .. } | Self::SizeMismatch { note, .. } = &mut self {
            *note = text;
        }
        self
    }
}
