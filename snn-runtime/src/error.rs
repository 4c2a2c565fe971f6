//! Runtime errors: each says what failed and what to do.

use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq)]
pub enum RuntimeError {
    #[error("the CUDA library {what} was not found. Searched:\n  {}\nInstall the CUDA toolkit, or `pip install nvidia-cuda-nvrtc==13.0.*`, and set CUDA_HOME or LD_LIBRARY_PATH to its lib directory.", searched.join("\n  "))]
    MissingLibrary {
        what: &'static str,
        searched: Vec<String>,
    },
    #[error("NVRTC could not compile `{name}` for {arch}:\n{log}")]
    Compile {
        name: String,
        arch: String,
        log: String,
    },
    #[error("NVRTC failed: {0}")]
    Nvrtc(String),
}
