//! Runtime errors: each says what failed and what to do.

use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq)]
pub enum RuntimeError {
    #[error("{what} was not found. Searched:\n  {}\n{install}", searched.join("\n  "))]
    MissingLibrary {
        what: &'static str,
        searched: Vec<String>,
        /// How to install it.
        install: &'static str,
    },
    #[error("NVRTC could not compile `{name}` for {arch}:\n{log}")]
    Compile {
        name: String,
        arch: String,
        log: String,
    },
    #[error("NVRTC failed: {0}")]
    Nvrtc(String),
    #[error("CUDA driver error while {doing}: {error}")]
    Driver { doing: String, error: String },
    #[error("no CUDA device {ordinal}: this machine has {count}")]
    NoDevice { ordinal: usize, count: usize },
    #[error(
        "out of GPU memory while {doing}: {error}; use a smaller batch, fewer time steps per chunk, or narrower storage"
    )]
    OutOfMemory { doing: String, error: String },
    #[error("{0}")]
    Ir(#[from] snn_codegen::IrError),
    #[error("{0}")]
    Shape(String),
    #[error("kernel cache at {dir}: {error}")]
    Cache { dir: String, error: String },
}

impl RuntimeError {
    /// Wraps a driver error with what was being done (out-of-memory gets its own error).
    pub fn driver(doing: impl Into<String>, e: cudarc::driver::DriverError) -> Self {
        let error = format!("{e:?}");
        if error.contains("OUT_OF_MEMORY") {
            RuntimeError::OutOfMemory {
                doing: doing.into(),
                error,
            }
        } else {
            RuntimeError::Driver {
                doing: doing.into(),
                error,
            }
        }
    }
}
