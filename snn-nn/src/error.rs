//! Errors of the network layer: each names the problem and what to do.

use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq)]
pub enum NnError {
    /// Tensors, buffers or layer settings that do not fit together.
    #[error("{0}")]
    Shape(String),
    /// A network that cannot be built (unknown node, wrong input count, duplicate name...).
    #[error("invalid network: {0}")]
    Graph(String),
    /// Bad optimizer, schedule or loss settings.
    #[error("{0}")]
    Config(String),
    /// A checkpoint that cannot be written, read or used for this network.
    #[error("checkpoint {path}: {problem}")]
    Checkpoint { path: String, problem: String },
    #[error("{0}")]
    Ir(#[from] snn_codegen::IrError),
    #[error("{0}")]
    Run(String),
}

impl NnError {
    /// A shape error from a formatted message.
    pub fn shape(msg: impl Into<String>) -> Self {
        NnError::Shape(msg.into())
    }
}
