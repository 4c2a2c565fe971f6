//! The three passes' cuDNN calls behind one interface ([`Pass`]), cuDNN's search for their
//! algorithms, and the choice among the results.
//!
//! Every cuDNN call of a pass takes its operands in one order: two inputs `a` and `b`, then
//! the output `c` (forward: x, w -> y; backward-data: w, dy -> dx; backward-filter: x, dy
//! -> dw). So each pass is a table of four entry points ([`Api`]) and everything else is
//! written once.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use cudarc::cudnn::sys;
use cudarc::driver::{CudaSlice, DevicePtr};

use super::ConvMath;
use super::cudnn::State;
use super::remember::MATHS;
use crate::device::Device;
use crate::error::RuntimeError;

type Handle = sys::cudnnHandle_t;
type ConvD = sys::cudnnConvolutionDescriptor_t;
type TensorD = sys::cudnnTensorDescriptor_t;
type FilterD = sys::cudnnFilterDescriptor_t;
type Status = sys::cudnnStatus_t;
type FwdAlgo = sys::cudnnConvolutionFwdAlgo_t;
type DataAlgo = sys::cudnnConvolutionBwdDataAlgo_t;
type FilterAlgo = sys::cudnnConvolutionBwdFilterAlgo_t;

/// An algorithm of one of the three passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Algo {
    Forward(FwdAlgo),
    Data(DataAlgo),
    Filter(FilterAlgo),
}

impl Algo {
    pub fn name(self) -> String {
        match self {
            Algo::Forward(a) => format!("{a:?}"),
            Algo::Data(a) => format!("{a:?}"),
            Algo::Filter(a) => format!("{a:?}"),
        }
    }
}

pub(super) const FORWARD_ALGOS: [FwdAlgo; 8] = {
    use sys::cudnnConvolutionFwdAlgo_t::*;
    [
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
    ]
};

pub(super) const DATA_ALGOS: [DataAlgo; 6] = {
    use sys::cudnnConvolutionBwdDataAlgo_t::*;
    [
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED,
    ]
};

pub(super) const FILTER_ALGOS: [FilterAlgo; 7] = {
    use sys::cudnnConvolutionBwdFilterAlgo_t::*;
    [
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING,
    ]
};

/// One algorithm that ran in cuDNN's search, with what it needed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Candidate {
    pub algo: Algo,
    pub math: sys::cudnnMathType_t,
    pub workspace: usize,
    pub millis: f32,
    pub deterministic: bool,
}

/// The algorithm a pass runs with, as cuDNN's search reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvAlgorithm {
    /// cuDNN's name, e.g. `CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM`.
    pub name: String,
    /// The math type it runs with (`CUDNN_FMA_MATH` never uses tensor cores).
    pub math: String,
    pub workspace_bytes: usize,
    /// Its time in the search.
    pub millis: f32,
    /// Whether cuDNN guarantees the same result on every run.
    pub deterministic: bool,
}

/// A results entry of one pass's search or ranking (`cudnnConvolution*AlgoPerf_t`).
pub(super) trait Perf: Copy {
    /// An entry that no algorithm has filled in (cuDNN overwrites the first `returned`).
    fn unrun() -> Self;
    /// The entry as a candidate, with its status.
    fn candidate(&self) -> (Candidate, Status);
}

/// Ties a pass's algorithm and results types to its [`Algo`] variant and its algorithms.
macro_rules! pass_types {
    ($perf:ty, $algo:ty, $variant:ident, $all:ident) => {
        impl Perf for $perf {
            fn unrun() -> Self {
                Self {
                    algo: $all[0],
                    status: sys::cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED,
                    time: 0.0,
                    memory: 0,
                    determinism: sys::cudnnDeterminism_t::CUDNN_NON_DETERMINISTIC,
                    mathType: sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
                    reserved: [0; 3],
                }
            }

            fn candidate(&self) -> (Candidate, Status) {
                let candidate = Candidate {
                    algo: Algo::$variant(self.algo),
                    math: self.mathType,
                    workspace: self.memory,
                    millis: self.time,
                    deterministic: self.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
                };
                (candidate, self.status)
            }
        }

        impl TryFrom<Algo> for $algo {
            type Error = Algo;

            fn try_from(algo: Algo) -> Result<Self, Algo> {
                match algo {
                    Algo::$variant(a) => Ok(a),
                    other => Err(other),
                }
            }
        }
    };
}

pass_types!(
    sys::cudnnConvolutionFwdAlgoPerf_t,
    FwdAlgo,
    Forward,
    FORWARD_ALGOS
);
pass_types!(
    sys::cudnnConvolutionBwdDataAlgoPerf_t,
    DataAlgo,
    Data,
    DATA_ALGOS
);
pass_types!(
    sys::cudnnConvolutionBwdFilterAlgoPerf_t,
    FilterAlgo,
    Filter,
    FILTER_ALGOS
);

/// `cudnnFind*AlgorithmEx(handle, a, a_ptr, b, b_ptr, conv, c, c_ptr, requested, returned,
/// results, workspace, workspace_bytes)`.
type Find<A, B, C, P> = unsafe fn(
    Handle,
    A,
    *const c_void,
    B,
    *const c_void,
    ConvD,
    C,
    *mut c_void,
    c_int,
    *mut c_int,
    *mut P,
    *mut c_void,
    usize,
) -> Status;

/// `cudnnConvolution*(handle, alpha, a, a_ptr, b, b_ptr, conv, algo, workspace,
/// workspace_bytes, beta, c, c_ptr)`.
type Run<A, B, C, T> = unsafe fn(
    Handle,
    *const c_void,
    A,
    *const c_void,
    B,
    *const c_void,
    ConvD,
    T,
    *mut c_void,
    usize,
    *const c_void,
    C,
    *mut c_void,
) -> Status;

/// One pass's cuDNN entry points, each taking the operands `a`, `b` (inputs) and `c`
/// (output) with their descriptor types `A`, `B`, `C`; `T` is the pass's algorithm type and
/// `P` its results entry.
pub(super) struct Api<A, B, C, T: 'static, P> {
    /// `cudnnFind*AlgorithmEx`: runs and times every algorithm on the operands.
    find: Find<A, B, C, P>,
    /// `cudnnGet*Algorithm_v7`: cuDNN's heuristic ranking, from the problem alone.
    rank: unsafe fn(Handle, A, B, ConvD, C, c_int, *mut c_int, *mut P) -> Status,
    /// `cudnnGet*WorkspaceSize`.
    workspace: unsafe fn(Handle, A, B, ConvD, C, T, *mut usize) -> Status,
    /// The convolution pass: `c = alpha op(a, b) + beta c`.
    run: Run<A, B, C, T>,
    /// The four calls' names, in that order (for errors).
    names: [&'static str; 4],
    /// Every algorithm of the pass.
    algos: &'static [T],
}

/// The [`Api`] of cuDNN's calls `find`, `rank`, `workspace` and `run` (named as in `sys`).
macro_rules! api {
    ($find:ident, $rank:ident, $workspace:ident, $run:ident, $algos:ident) => {
        Api {
            find: sys::$find,
            rank: sys::$rank,
            workspace: sys::$workspace,
            run: sys::$run,
            names: [
                stringify!($find),
                stringify!($rank),
                stringify!($workspace),
                stringify!($run),
            ],
            algos: &$algos,
        }
    };
}

type FwdPerf = sys::cudnnConvolutionFwdAlgoPerf_t;
type DataPerf = sys::cudnnConvolutionBwdDataAlgoPerf_t;
type FilterPerf = sys::cudnnConvolutionBwdFilterAlgoPerf_t;

/// x, w -> y.
pub(super) const FORWARD: Api<TensorD, FilterD, TensorD, FwdAlgo, FwdPerf> = api! {
    cudnnFindConvolutionForwardAlgorithmEx, cudnnGetConvolutionForwardAlgorithm_v7,
    cudnnGetConvolutionForwardWorkspaceSize, cudnnConvolutionForward, FORWARD_ALGOS
};
/// w, dy -> dx.
pub(super) const DATA: Api<FilterD, TensorD, TensorD, DataAlgo, DataPerf> = api! {
    cudnnFindConvolutionBackwardDataAlgorithmEx, cudnnGetConvolutionBackwardDataAlgorithm_v7,
    cudnnGetConvolutionBackwardDataWorkspaceSize, cudnnConvolutionBackwardData, DATA_ALGOS
};
/// x, dy -> dw.
pub(super) const FILTER: Api<TensorD, TensorD, FilterD, FilterAlgo, FilterPerf> = api! {
    cudnnFindConvolutionBackwardFilterAlgorithmEx, cudnnGetConvolutionBackwardFilterAlgorithm_v7,
    cudnnGetConvolutionBackwardFilterWorkspaceSize, cudnnConvolutionBackwardFilter, FILTER_ALGOS
};

/// A device address as the `void*` cuDNN takes.
fn vp(ptr: u64) -> *mut c_void {
    ptr as usize as *mut c_void
}

/// A pass bound to its operands' descriptors and addresses: the calls that the search and
/// the run make. The handle and the convolution descriptor are live, and the addresses
/// those of tensors that the pass checked against the descriptors.
pub(super) trait Pass {
    /// The workspace algorithm `index` of the pass needs here, `None` where cuDNN does not
    /// support it.
    fn workspace(&self, h: Handle, conv: ConvD, index: usize) -> Option<usize>;
    /// How many algorithms the pass has.
    fn algorithms(&self) -> usize;
    /// One timed run of every algorithm, with the scratch `ws` (address, bytes).
    fn find(
        &self,
        h: Handle,
        conv: ConvD,
        ws: (u64, usize),
    ) -> Result<Vec<(Candidate, Status)>, RuntimeError>;
    /// cuDNN's heuristic ranking of the algorithms, best first.
    fn rank(&self, h: Handle, conv: ConvD) -> Result<Vec<Algo>, RuntimeError>;
    /// Runs `algo` with the workspace `ws` (address, bytes), overwriting the output or,
    /// where `accumulate`, adding to it.
    fn run(
        &self,
        h: Handle,
        conv: ConvD,
        algo: Algo,
        ws: (u64, usize),
        accumulate: bool,
    ) -> Result<(), RuntimeError>;
}

/// A pass's [`Api`] with its operands: `a`, `b` and `c` as (descriptor, address).
pub(super) struct Bound<A: 'static, B: 'static, C: 'static, T: 'static, P: 'static> {
    pub api: &'static Api<A, B, C, T, P>,
    pub a: (A, u64),
    pub b: (B, u64),
    pub c: (C, u64),
}

impl<A: Copy, B: Copy, C: Copy, T: Copy + TryFrom<Algo>, P: Perf> Pass for Bound<A, B, C, T, P> {
    fn workspace(&self, h: Handle, conv: ConvD, index: usize) -> Option<usize> {
        let algo = *self.api.algos.get(index)?;
        let mut bytes = 0usize;
        // SAFETY: live handle and descriptors (trait docs); `bytes` is an out-value.
        unsafe { (self.api.workspace)(h, self.a.0, self.b.0, conv, self.c.0, algo, &mut bytes) }
            .result()
            .ok()?;
        Some(bytes)
    }

    fn algorithms(&self) -> usize {
        self.api.algos.len()
    }

    fn find(
        &self,
        h: Handle,
        conv: ConvD,
        (ws, ws_bytes): (u64, usize),
    ) -> Result<Vec<(Candidate, Status)>, RuntimeError> {
        let count = self.api.algos.len();
        let mut results = vec![P::unrun(); count];
        let mut returned: c_int = 0;
        // SAFETY: live handle and descriptors describing the tensors behind the addresses
        // (trait docs); the results array holds `count` entries; the scratch `ws_bytes`.
        unsafe {
            (self.api.find)(
                h,
                self.a.0,
                vp(self.a.1),
                self.b.0,
                vp(self.b.1),
                conv,
                self.c.0,
                vp(self.c.1),
                count as c_int,
                &mut returned,
                results.as_mut_ptr(),
                vp(ws),
                ws_bytes,
            )
        }
        .result()
        .map_err(|e| RuntimeError::cudnn(self.api.names[0], e))?;
        let returned = returned.clamp(0, count as c_int) as usize;
        Ok(results[..returned].iter().map(P::candidate).collect())
    }

    fn rank(&self, h: Handle, conv: ConvD) -> Result<Vec<Algo>, RuntimeError> {
        let count = self.api.algos.len();
        let mut results = vec![P::unrun(); count];
        let mut returned: c_int = 0;
        // SAFETY: live handle and descriptors (trait docs); the results array holds `count`
        // entries.
        unsafe {
            (self.api.rank)(
                h,
                self.a.0,
                self.b.0,
                conv,
                self.c.0,
                count as c_int,
                &mut returned,
                results.as_mut_ptr(),
            )
        }
        .result()
        .map_err(|e| RuntimeError::cudnn(self.api.names[1], e))?;
        let returned = returned.clamp(0, count as c_int) as usize;
        Ok(results[..returned]
            .iter()
            .map(|p| p.candidate().0.algo)
            .collect())
    }

    fn run(
        &self,
        h: Handle,
        conv: ConvD,
        algo: Algo,
        (ws, ws_bytes): (u64, usize),
        accumulate: bool,
    ) -> Result<(), RuntimeError> {
        let call = self.api.names[3];
        let Ok(typed) = T::try_from(algo) else {
            return Err(RuntimeError::Internal(format!(
                "{algo:?} chosen for {call}"
            )));
        };
        let (one, zero) = (1.0f32, 0.0f32);
        let alpha = &one as *const f32 as *const c_void;
        let beta = if accumulate {
            alpha
        } else {
            &zero as *const f32 as *const c_void
        };
        // SAFETY: live handle and descriptors describing the tensors behind the addresses,
        // whose dtypes and lengths the pass checked (trait docs); the workspace holds
        // `ws_bytes`, at least what the algorithm needs; the scalars are host f32s, as
        // cuDNN takes for a float compute type (f32 data, and bf16 data accumulated in f32).
        unsafe {
            (self.api.run)(
                h,
                alpha,
                self.a.0,
                vp(self.a.1),
                self.b.0,
                vp(self.b.1),
                conv,
                typed,
                vp(ws),
                ws_bytes,
                beta,
                self.c.0,
                vp(self.c.1),
            )
        }
        .result()
        .map_err(|e| RuntimeError::cudnn(call, e))
    }
}

/// How many times a problem's algorithms are timed before the fastest is chosen.
const SEARCH_ROUNDS: usize = 3;

/// cuDNN's search for `pass`, on the call's own tensors (the output is written, and
/// overwritten again by the real call), with `conv` in `math`'s base math type. Returns
/// every algorithm that ran, with its status, ranked: by median time, or, where `st` takes
/// only deterministic algorithms, by cuDNN's heuristics (timings differ between runs, and
/// so would the choice; the heuristics depend only on the problem and the device).
/// Returns the search's workspace size too (for errors).
pub(super) fn search(
    pass: &dyn Pass,
    st: &State,
    conv: ConvD,
    device: &Arc<Device>,
) -> Result<(Vec<(Candidate, Status)>, usize), RuntimeError> {
    let h = st.handle.0;
    let limit = st.search_limit;
    let want = (0..pass.algorithms())
        .filter_map(|i| pass.workspace(h, conv, i))
        .filter(|&b| b <= limit)
        .max()
        .unwrap_or(0);
    // The search's scratch: the shared workspace when big enough, else a temporary one,
    // halved while memory is short. The temporary one comes from the driver, not the
    // pool, so that it is given back after the search (searches happen once per
    // problem) and the shared workspace only grows to what the chosen algorithm needs.
    let mut scratch: Option<CudaSlice<u8>> = None;
    let (mut ws, mut ws_bytes) = st.workspace();
    let mut size = want;
    while size > ws_bytes {
        // SAFETY: scratch that cuDNN writes before it reads.
        match unsafe { device.stream.alloc::<u8>(size) } {
            Ok(buf) => {
                ws = {
                    let (p, _sync) = buf.device_ptr(&device.stream);
                    p
                };
                ws_bytes = size;
                scratch = Some(buf);
            }
            Err(e) => match RuntimeError::driver("allocating the search workspace", e) {
                RuntimeError::OutOfMemory { .. } => size /= 2,
                other => return Err(other),
            },
        }
    }
    // cuDNN times each algorithm once per search, and close timings swap places from run
    // to run: search a few times and rank by each algorithm's median time.
    let mut rounds = Vec::with_capacity(SEARCH_ROUNDS);
    for _ in 0..SEARCH_ROUNDS {
        rounds.push(pass.find(h, conv, (ws, ws_bytes))?);
    }
    let mut found = rounds.first().cloned().unwrap_or_default();
    for (c, _) in &mut found {
        let mut times: Vec<f32> = rounds
            .iter()
            .flatten()
            .filter(|(o, st)| {
                o.algo == c.algo
                    && o.math == c.math
                    && *st == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
            })
            .map(|(o, _)| o.millis)
            .collect();
        if !times.is_empty() {
            times.sort_by(f32::total_cmp);
            c.millis = times[times.len() / 2];
        }
    }
    if st.deterministic {
        rank_by_heuristics(&mut found, &pass.rank(h, conv)?);
    }
    drop(scratch);
    Ok((found, ws_bytes))
}

/// Ranks `found` (its `millis` become ranks) by the position of each algorithm in cuDNN's
/// heuristic `order`, and an algorithm the search listed with several math types by a
/// fixed order of them: nothing depends on timings, which would make two searches of one
/// problem choose differently.
fn rank_by_heuristics(found: &mut [(Candidate, Status)], order: &[Algo]) {
    let maths = MATHS.len();
    for (c, _) in found {
        let math = MATHS.iter().position(|&m| m == c.math).unwrap_or(maths);
        c.millis = order
            .iter()
            .position(|a| *a == c.algo)
            .map_or(f32::MAX, |i| (i * (maths + 1) + math) as f32);
    }
}

/// The search results that may run, fastest first: those that succeeded, never with
/// conversion to f16 (`CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION`), without tensor cores for
/// [`ConvMath::F32`], and only the deterministic ones when any is.
pub(super) fn choose(
    math: ConvMath,
    deterministic: bool,
    found: &[(Candidate, Status)],
) -> Vec<Candidate> {
    use sys::cudnnMathType_t::{CUDNN_TENSOR_OP_MATH, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION};
    let mut ok: Vec<Candidate> = found
        .iter()
        .filter(|(_, status)| *status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
        .map(|(c, _)| *c)
        .filter(|c| match math {
            ConvMath::Tf32 | ConvMath::Bf16 => c.math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION,
            ConvMath::F32 => !matches!(
                c.math,
                CUDNN_TENSOR_OP_MATH | CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
            ),
        })
        .collect();
    if deterministic && ok.iter().any(|c| c.deterministic) {
        ok.retain(|c| c.deterministic);
    }
    // cuDNN sorts by time already; a stable sort keeps its order for ties.
    ok.sort_by(|a, b| a.millis.total_cmp(&b.millis));
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(
        algo: usize,
        status: sys::cudnnStatus_t,
        millis: f32,
        deterministic: bool,
        math: sys::cudnnMathType_t,
    ) -> (Candidate, sys::cudnnStatus_t) {
        let candidate = Candidate {
            algo: Algo::Filter(FILTER_ALGOS[algo]),
            math,
            workspace: algo * 100,
            millis,
            deterministic,
        };
        (candidate, status)
    }

    #[test]
    fn heuristic_ranks_break_ties_between_maths_in_a_fixed_order() {
        use sys::cudnnMathType_t::{CUDNN_DEFAULT_MATH, CUDNN_TENSOR_OP_MATH};
        let ok = sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
        // As a search may list them: algorithm 1 with tensor-op math timed first.
        let mut listed = [
            found(1, ok, 0.2, true, CUDNN_TENSOR_OP_MATH),
            found(1, ok, 0.3, true, CUDNN_DEFAULT_MATH),
            found(0, ok, 0.1, true, CUDNN_DEFAULT_MATH),
        ];
        let order = [Algo::Filter(FILTER_ALGOS[1]), Algo::Filter(FILTER_ALGOS[0])];
        rank_by_heuristics(&mut listed, &order);
        let mut swapped = [listed[1], listed[0], listed[2]];
        rank_by_heuristics(&mut swapped, &order);
        let best = |l: &[(Candidate, Status)]| choose(ConvMath::Bf16, true, l)[0];
        assert_eq!(best(&listed), best(&swapped));
        assert_eq!(best(&listed).math, CUDNN_DEFAULT_MATH);
        assert_eq!(best(&listed).algo, Algo::Filter(FILTER_ALGOS[1]));
    }

    #[test]
    fn the_choice_keeps_deterministic_successes_fastest_first() {
        use sys::cudnnMathType_t::*;
        use sys::cudnnStatus_t::*;
        let results = [
            found(0, CUDNN_STATUS_SUCCESS, 0.1, false, CUDNN_FMA_MATH),
            found(3, CUDNN_STATUS_SUCCESS, 0.3, true, CUDNN_TENSOR_OP_MATH),
            found(1, CUDNN_STATUS_SUCCESS, 0.4, true, CUDNN_FMA_MATH),
            found(2, CUDNN_STATUS_NOT_SUPPORTED, 0.0, true, CUDNN_FMA_MATH),
            found(5, CUDNN_STATUS_SUCCESS, 0.2, true, CUDNN_DEFAULT_MATH),
            found(
                6,
                CUDNN_STATUS_SUCCESS,
                0.05,
                true,
                CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION,
            ),
        ];
        let names = |v: Vec<Candidate>| v.iter().map(|c| c.algo).collect::<Vec<_>>();
        use sys::cudnnConvolutionBwdFilterAlgo_t::*;
        assert_eq!(
            names(choose(ConvMath::Tf32, true, &results)),
            [
                Algo::Filter(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED),
                Algo::Filter(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3),
                Algo::Filter(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1),
            ]
        );
        assert_eq!(
            names(choose(ConvMath::F32, true, &results)),
            [
                Algo::Filter(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED),
                Algo::Filter(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1),
            ]
        );
        // With no deterministic success, the non-deterministic ones are still taken.
        assert_eq!(
            names(choose(ConvMath::F32, true, &results[..1])),
            [Algo::Filter(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0)]
        );
        assert!(choose(ConvMath::F32, true, &results[3..4]).is_empty());
    }
}
