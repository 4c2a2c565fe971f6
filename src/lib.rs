//! # snn
//!
//! Write a spiking neuron's dynamics once, as a step function; get its surrogate-gradient
//! backward pass through time derived automatically, a memory plan that saves the fewest
//! bytes, and (as the project grows) fused CUDA kernels for all time steps of a layer.
//!
//! This crate is the facade: it re-exports the compiler core ([`codegen`]), the
//! [`neuron`] macro (see [`dsl`] for the guide), the networks ([`nn`]), the datasets
//! ([`data`]) and the GPU runtime ([`runtime`]), and holds the `snn` command. Start with
//! the [`prelude`]:
//!
//! ```
//! use snn::prelude::*;
//!
//! let lif = compile(&zoo::PaperLif::default(), Storage::F32)?;
//! println!("{lif}"); // equations, memory plan and backward equations
//! assert_eq!(lif.plan.bytes.train(), 24);
//! # Ok::<(), snn::codegen::IrError>(())
//! ```

pub mod dsl;

pub use snn_codegen as codegen;
pub use snn_data as data;
pub use snn_dsl::{neuron, neuron_helper};
pub use snn_nn as nn;
pub use snn_runtime as runtime;

/// The names most programs need.
pub mod prelude {
    pub use crate::{neuron, neuron_helper};
    pub use snn_codegen::interp::{Gradients, Params, Reference, Seq};
    pub use snn_codegen::{
        Compiled, Dtype, IrError, Layout, Mode, Neuron, NeuronBuilder, NeuronIr, ParamDecl,
        ParamShape, Storage, Surrogate, Value, compile, zoo,
    };
}
