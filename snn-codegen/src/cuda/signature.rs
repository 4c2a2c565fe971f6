//! What a generated kernel takes, for the runtime that launches it.

use std::fmt;

use crate::dtype::Dtype;

/// Which kernel of a neuron.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// Outputs, final states, and the memory plan's saves.
    ForwardTrain,
    /// Outputs and final states only.
    ForwardInference,
    /// One reverse pass through time: input gradients, state adjoints, param gradients.
    Backward,
    /// Deterministic param-gradient reduction: sums per-element partials (second phase).
    ReduceParamGrad,
}

impl KernelKind {
    pub fn suffix(self) -> &'static str {
        match self {
            KernelKind::ForwardTrain => "forward_train",
            KernelKind::ForwardInference => "forward_inference",
            KernelKind::Backward => "backward",
            KernelKind::ReduceParamGrad => "reduce_param_grad",
        }
    }
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// The C type of a kernel argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgType {
    /// A pointer to elements stored as this dtype.
    Ptr { dtype: Dtype, mutable: bool },
    /// A `float` passed by value.
    F32,
    /// A `long long` passed by value.
    I64,
    /// An `int` passed by value.
    I32,
}

/// What an argument means. Indices refer to the neuron's inputs, states, params, outputs
/// and the memory plan's saves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArgRole {
    /// `[T, N]` input `k`.
    Input(usize),
    /// `[T, N]` output `m`.
    Output(usize),
    /// `[T, N]` saved tensor `k`.
    Save(usize),
    /// `[N]` f32 initial state `j`; null: the declared initial value.
    InitState(usize),
    /// `[N]` f32 final state `j`; null: not written.
    FinalState(usize),
    /// Param `p`: a `float` if scalar, else a pointer to its values.
    Param(usize),
    /// `[T, N]` gradient of output `m`.
    OutputGrad(usize),
    /// `[N]` f32 adjoint of final state `j` (from a later chunk); null: zero.
    FinalStateGrad(usize),
    /// `[T, N]` gradient of input `k` (written).
    InputGrad(usize),
    /// `[N]` f32 adjoint of initial state `j` (written); null: not written.
    InitStateGrad(usize),
    /// Gradient of learnable param `p`: with atomic reduction, its values (accumulated
    /// into: zero them first); with deterministic reduction, `[N]` per-element partials
    /// (overwritten) that `ReduceParamGrad` sums.
    ParamGrad(usize),
    /// Number of time steps `T`.
    Steps,
    /// Number of elements `N`.
    Elements,
    /// Channels of the layout (`N = batch * channels * inner`).
    Channels,
    /// Inner size of the layout.
    Inner,
    /// `ReduceParamGrad`: the per-element partials.
    Partials,
    /// `ReduceParamGrad`: the param's gradient values (accumulated into).
    Reduced,
    /// `ReduceParamGrad`: the param's shape, 0 scalar, 1 per-channel, 2 per-neuron.
    Shape,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelArg {
    pub name: String,
    pub role: ArgRole,
    pub ty: ArgType,
}

/// How to launch a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Launch {
    /// A 1-D grid-stride loop over groups of `elements_per_thread` consecutive elements
    /// (`ceil(N / elements_per_thread)` groups); any grid size is correct, a block size
    /// that is a multiple of 32 and at most 1024 is required.
    ElementGroups { elements_per_thread: usize },
    /// A `(values, chunks)` grid: one block per gradient value of the param (`1`,
    /// `channels` or `channels * inner`) and chunk of its elements; a power-of-two block
    /// size from 32 to 1024. With more than one chunk, a second launch sums the chunks.
    BlockPerValue,
}

/// A kernel's name, arguments (in order) and launch rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelSignature {
    pub name: String,
    pub kind: KernelKind,
    pub args: Vec<KernelArg>,
    pub launch: Launch,
    /// Block size the kernel is tuned for.
    pub block_size: u32,
}
