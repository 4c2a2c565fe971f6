//! The one error type of the dataset readers.
//!
//! Datasets fail in the field, far from the code: a download cut short, the wrong file
//! under the right name, an archive not extracted. Every variant therefore carries the
//! path of the file at fault (except [`DataError::Request`], a mistake of the calling
//! code), and every message says what is wrong with it and what to do about it, so that a
//! user can act on the message alone.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::events::EventError;
use super::frames::FrameError;

/// A dataset file that cannot be read or does not hold what its format promises.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    /// The operating system refused to read a file or list a folder.
    #[error("cannot read {}: {source}; check that it is readable", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// A file or folder the dataset needs is not where it should be.
    #[error("{what} not found at {}; {help}", path.display())]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
        /// What was looked for, in words ("the N-MNIST Train folder").
        what: String,
        /// Where to get it and where to put it.
        help: String,
    },

    /// The file ends before its format says it should: usually an interrupted download.
    #[error(
        "{} is truncated: {detail}; the download or extraction was probably interrupted: \
         delete the file and fetch it again",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// How much was expected and how much was found.
        detail: String,
    },

    /// The file does not start with its format's signature: it is some other file.
    #[error(
        "{} does not start with {expected} but with {found}; it is not the file this name \
         stands for (or it is damaged): fetch it again",
        path.display()
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The signature the format requires, with its meaning.
        expected: String,
        /// What the file starts with instead.
        found: String,
    },

    /// The file has the right signature but inconsistent contents.
    #[error("{} is corrupt: {reason}; delete it and fetch it again", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is inconsistent.
        reason: String,
    },

    /// An image file and its label file disagree on how many samples there are.
    #[error(
        "{} holds {images} images but {} holds {labels} labels; the two files belong to \
         different splits or one is damaged: fetch both again",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        /// The image file.
        images_path: PathBuf,
        /// Its number of images.
        images: usize,
        /// The label file.
        labels_path: PathBuf,
        /// Its number of labels.
        labels: usize,
    },

    /// A recording holds an event the sensor cannot have produced, or holds events out of
    /// time order.
    #[error(
        "{}: {source}; the file is damaged or is not a recording in the {format} format: \
         fetch it again",
        path.display()
    )]
    Events {
        /// The recording.
        path: PathBuf,
        /// The format the file was read as ("N-MNIST", "DVS128 Gesture AEDAT 3.1").
        format: &'static str,
        /// Which event is wrong, and how.
        #[source]
        source: EventError,
    },

    /// Integrating a recording's events into frames, or caching the frames, failed.
    #[error("{}: {source}", path.display())]
    Frames {
        /// The recording (or, for a cache failure, the cache file).
        path: PathBuf,
        /// What failed.
        #[source]
        source: FrameError,
    },

    /// A sample was asked for that does not exist, or into a buffer of the wrong size: a
    /// mistake of the calling code, not of a file, so it carries no path.
    #[error("{0}")]
    Request(String),

    /// A line of a text file (a label CSV, a list of trials) cannot be understood.
    #[error(
        "{}, line {line}: {reason}; correct this line or restore the file from the \
         dataset's archive",
        path.display()
    )]
    BadRow {
        /// The text file.
        path: PathBuf,
        /// The line number, counting from 1.
        line: usize,
        /// What is wrong with the line and what was expected.
        reason: String,
    },
}

impl DataError {
    /// The file at fault (for a count mismatch, the image file), so that callers can, for
    /// example, drop it from a cache or point a progress bar at it; empty for a
    /// [`DataError::Request`], which no file caused.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::Missing { path, .. }
            | Self::Truncated { path, .. }
            | Self::BadMagic { path, .. }
            | Self::Corrupt { path, .. }
            | Self::Events { path, .. }
            | Self::BadRow { path, .. }
            | Self::Frames { path, .. } => path,
            Self::CountMismatch { images_path, .. } => images_path,
            Self::Request(_) => Path::new(""),
        }
    }

    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn truncated(path: &Path, detail: impl Into<String>) -> Self {
        Self::Truncated {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_row(path: &Path, line: usize, reason: impl Into<String>) -> Self {
        Self::BadRow {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(path: &Path, what: impl Into<String>, help: impl Into<String>) -> Self {
        Self::Missing {
            path: path.to_path_buf(),
            what: what.into(),
            help: help.into(),
        }
    }

    pub(crate) fn events(path: &Path, format: &'static str, source: EventError) -> Self {
        Self::Events {
            path: path.to_path_buf(),
            format,
            source,
        }
    }
}
