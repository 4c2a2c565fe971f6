//! The CPU check of the emitted CUDA: every generated kernel is compiled as C++ with g++
//! (tests/host/shim.h stands in for the CUDA built-ins), run one thread at a time over a
//! small grid, and compared with the reference interpreter: outputs, saves, final states,
//! input gradients, initial-state gradients and param gradients. Both code paths run (the
//! 4-wide vector path with N = 300, the scalar path with N = 301), with and without
//! initial states and final-state gradients, in f32 and in narrow storage, with both
//! param-gradient reductions. Needs g++: where the build script finds none (and `CI` is
//! unset), the test shows as ignored (see snn-codegen/build.rs).
#![allow(unsafe_code, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use common::{Rng, all_learnable, band_spike, jittered_params_for, zoo_with_inputs};
use snn_codegen::cuda::{
    ArgRole, ArgType, KernelOptions, KernelSet, KernelSignature, Reduction, ctype, generate,
};
use snn_codegen::interp::{Params, Real, Reference, Seq};
use snn_codegen::ir::NeuronIr;
use snn_codegen::{Compiled, Dtype, Storage, compile};
use snn_codegen::{Layout, Mode};

const T: usize = 9;
const GRID: u32 = 2;
const BLOCK: u32 = 32;

/// One neuron in one configuration, and its kernels' host build.
struct Case {
    ir: NeuronIr,
    range: (f64, f64),
    storage: Storage,
    opts: KernelOptions,
    compiled: Compiled,
    set: KernelSet,
}

fn cases() -> Vec<Case> {
    let half = Storage {
        io: Dtype::F16,
        spikes: Dtype::F16,
        saves: Dtype::F32,
    };
    let mut out = Vec::new();
    for (ir, range) in zoo_with_inputs().into_iter().chain([band_spike()]) {
        let learnable = all_learnable(&ir);
        for (ir, storage, reduction) in [
            (ir.clone(), Storage::F32, Reduction::Atomic),
            (learnable.clone(), Storage::F32, Reduction::Atomic),
            (learnable.clone(), Storage::F32, Reduction::Deterministic),
            (learnable, Storage::NARROW, Reduction::Atomic),
            (ir, half, Reduction::Deterministic),
        ] {
            let opts = KernelOptions {
                reduction,
                ..Default::default()
            };
            let compiled = compile(&ir, storage).unwrap();
            let set = generate(&compiled, &opts);
            out.push(Case {
                ir,
                range,
                storage,
                opts,
                compiled,
                set,
            });
        }
    }
    out
}

/// A C++ launcher that unpacks `void** a` into the kernel's arguments and runs every
/// thread of the grid in turn.
fn launcher(ns: &str, sig: &KernelSignature, id: &str) -> String {
    let args: Vec<String> = sig
        .args
        .iter()
        .enumerate()
        .map(|(k, a)| match a.ty {
            ArgType::Ptr { dtype, mutable, .. } => {
                format!(
                    "({}{}*)a[{k}]",
                    if mutable { "" } else { "const " },
                    ctype(dtype)
                )
            }
            ArgType::F32 => format!("*(const float*)a[{k}]"),
            ArgType::I64 => format!("*(const long long*)a[{k}]"),
            ArgType::I32 => format!("*(const int*)a[{k}]"),
            ArgType::F64 => format!("*(const double*)a[{k}]"),
            ArgType::U64 => format!("*(const unsigned long long*)a[{k}]"),
        })
        .collect();
    format!(
        "extern \"C\" void launch_{id}(void** a, unsigned grid, unsigned block) {{\n    \
         blockDim.x = block; gridDim.x = grid;\n    \
         for (unsigned b = 0; b < grid; ++b) for (unsigned t = 0; t < block; ++t) {{\n        \
         blockIdx.x = b; threadIdx.x = t;\n        {ns}::{}({});\n    }}\n}}\n",
        sig.name,
        args.join(", ")
    )
}

/// Builds every case's kernels into one shared library with g++.
fn build(cases: &[Case]) -> libloading::Library {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_host");
    std::fs::create_dir_all(&dir).unwrap();
    let mut src = format!(
        "#include \"{}/tests/host/shim.h\"\n",
        env!("CARGO_MANIFEST_DIR")
    );
    for (c, case) in cases.iter().enumerate() {
        for (k, kernel) in case.set.all().into_iter().enumerate() {
            let ns = format!("case{c}_{k}");
            // Plain C++ functions in a namespace each, so that equal kernel names of
            // different cases do not clash.
            let body = kernel.source.replace("extern \"C\" ", "");
            writeln!(src, "namespace {ns} {{\n{body}\n}}").unwrap();
            src.push_str(&launcher(&ns, &kernel.signatures[0], &ns));
        }
    }
    let cpp = dir.join("kernels.cpp");
    let so = dir.join("libkernels.so");
    std::fs::write(&cpp, src).unwrap();
    let out = Command::new("g++")
        .args(["-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-o"])
        .arg(&so)
        .arg(&cpp)
        .output()
        .unwrap_or_else(|e| panic!("g++ could not be run ({e}): install it (apt install g++)"));
    assert!(
        out.status.success(),
        "g++ failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: the library was just built from the sources above; its initialisers are
    // the C++ runtime's.
    unsafe { libloading::Library::new(&so) }.unwrap()
}

/// A 16-byte-aligned buffer of `len` elements of `dtype`.
struct Buf {
    dtype: Dtype,
    len: usize,
    data: Vec<u128>,
}

impl Buf {
    fn zeros(dtype: Dtype, len: usize) -> Self {
        Self {
            dtype,
            len,
            data: vec![0; (len * dtype.size()).div_ceil(16).max(1)],
        }
    }
    fn bytes(&mut self) -> &mut [u8] {
        let n = self.len * self.dtype.size();
        // SAFETY: `data` holds at least `n` bytes; u8 has no alignment or validity rules.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_mut_ptr().cast::<u8>(), n) }
    }
    fn from_f32(dtype: Dtype, values: &[f32]) -> Self {
        let mut b = Self::zeros(dtype, values.len());
        b.bytes().copy_from_slice(&dtype.encode(values));
        b
    }
    fn values(&self) -> Vec<f32> {
        // SAFETY: `data` holds at least `len * size` bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                self.data.as_ptr().cast::<u8>(),
                self.len * self.dtype.size(),
            )
        };
        self.dtype.decode(bytes)
    }
    fn ptr(&mut self) -> *mut c_void {
        self.data.as_mut_ptr().cast()
    }
}

/// Arguments for one launch: buffers by role, scalars by value.
struct Args {
    bufs: BTreeMap<ArgRole, Buf>,
    /// Boxed so that pointers to them stay valid while more are pushed.
    #[allow(clippy::vec_box)]
    scalars: Vec<Box<[u8; 8]>>,
}

impl Args {
    /// Runs the kernel `id` of `lib` with `sig`'s arguments taken from `self` (null where
    /// a buffer is absent).
    fn launch(
        &mut self,
        lib: &libloading::Library,
        id: &str,
        sig: &KernelSignature,
        params: &Params<f32>,
        ir: &NeuronIr,
        n: usize,
    ) {
        let layout = params.layout;
        let mut ptrs: Vec<*mut c_void> = Vec::new();
        self.scalars.clear();
        for a in &sig.args {
            let scalar = |s: &mut Vec<Box<[u8; 8]>>, bytes: [u8; 8]| {
                s.push(Box::new(bytes));
                s.last_mut().unwrap().as_mut_ptr().cast::<c_void>()
            };
            let p = match (a.role, a.ty) {
                (ArgRole::Param(p), ArgType::F32) => {
                    let v = params.get(&ir.params[p].name).unwrap()[0];
                    let mut b = [0u8; 8];
                    b[..4].copy_from_slice(&v.to_le_bytes());
                    scalar(&mut self.scalars, b)
                }
                (ArgRole::Param(p), _) => {
                    let values = params.get(&ir.params[p].name).unwrap().to_vec();
                    self.bufs
                        .entry(a.role)
                        .or_insert_with(|| Buf::from_f32(Dtype::F32, &values))
                        .ptr()
                }
                (ArgRole::Steps, _) => scalar(&mut self.scalars, (T as i64).to_le_bytes()),
                (ArgRole::Elements, _) => scalar(&mut self.scalars, (n as i64).to_le_bytes()),
                (ArgRole::Channels, _) => {
                    scalar(&mut self.scalars, (layout.channels as i64).to_le_bytes())
                }
                (ArgRole::Inner, _) => {
                    scalar(&mut self.scalars, (layout.inner as i64).to_le_bytes())
                }
                (role, _) => self
                    .bufs
                    .get_mut(&role)
                    .map_or(std::ptr::null_mut(), Buf::ptr),
            };
            ptrs.push(p);
        }
        // SAFETY: the launcher was generated from `sig`; every pointer is null (allowed
        // for the optional state tensors) or a buffer of the size the kernel indexes.
        unsafe {
            let f: libloading::Symbol<unsafe extern "C" fn(*mut *mut c_void, u32, u32)> =
                lib.get(format!("launch_{id}").as_bytes()).unwrap();
            f(ptrs.as_mut_ptr(), GRID, BLOCK);
        }
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = rel * w.abs().max(g.abs()).max(1e-3 * scale);
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: emitted code gives {g}, the interpreter {w}"
        );
    }
}

fn run_case(
    lib: &libloading::Library,
    c: usize,
    case: &Case,
    layout: Layout,
    batch: usize,
    with_states: bool,
    seed: u64,
) {
    let n = layout.neurons() * batch;
    let ir = &case.compiled.neuron;
    let st = case.storage;
    let label = format!(
        "{} ({} / {:?} / N = {n} / states given: {with_states})",
        ir.name, st, case.opts.reduction
    );
    let mut rng = Rng::new(seed);
    let params = jittered_params_for::<f32>(&case.ir, layout, &mut rng);
    // Stored inputs are what the interpreter reads too.
    let round = |s: Seq<f32>, d: Dtype| Seq {
        data: s.data.iter().map(|v| v.stored(d)).collect(),
        ..s
    };
    let x: Vec<Seq<f32>> = (0..ir.inputs.len())
        .map(|_| round(rng.seq(T, n, case.range.0, case.range.1), st.io))
        .collect();
    let dy: Vec<Seq<f32>> = (0..ir.outputs.len())
        .map(|_| round(rng.seq(T, n, -1.0, 1.0), st.io))
        .collect();
    let init: Option<Vec<Vec<f32>>> = with_states
        .then(|| common::initial_states(ir, &params, n, case.range.1 - case.range.0, &mut rng));
    let dfinal: Option<Vec<Vec<f32>>> = with_states.then(|| {
        (0..ir.states.len())
            .map(|_| rng.vec(n, -1.0, 1.0))
            .collect()
    });

    let r = Reference::new(case.compiled.clone());
    let want = r
        .forward(&params, &x, init.as_deref(), Mode::Train)
        .unwrap();
    let want_inf = r
        .forward(&params, &x, init.as_deref(), Mode::Inference)
        .unwrap();
    let grads = r
        .backward(&params, &x, init.as_deref(), &want, &dy, dfinal.as_deref())
        .unwrap();

    let out_dtype = |m: usize| st.output(ir.output_kind(m));
    // The emitted code does the interpreter's arithmetic in the same order: outputs, saves,
    // states and input gradients agree exactly. Param gradients are sums over elements,
    // in another order (f32 in the kernels, f64 in the interpreter).
    let exact = 0.0;
    let sum_order = 1e-4;
    let mut bufs = BTreeMap::new();
    for (k, s) in x.iter().enumerate() {
        bufs.insert(ArgRole::Input(k), Buf::from_f32(st.io, &s.data));
    }
    for m in 0..ir.outputs.len() {
        bufs.insert(ArgRole::Output(m), Buf::zeros(out_dtype(m), T * n));
    }
    for k in 0..case.compiled.plan.saves.len() {
        bufs.insert(ArgRole::Save(k), Buf::zeros(st.saves, T * n));
    }
    for j in 0..ir.states.len() {
        if let Some(init) = &init {
            bufs.insert(ArgRole::InitState(j), Buf::from_f32(Dtype::F32, &init[j]));
            bufs.insert(ArgRole::FinalState(j), Buf::zeros(Dtype::F32, n));
        }
    }
    let mut args = Args {
        bufs,
        scalars: Vec::new(),
    };

    // Forward, training and inference.
    for (k, kernel) in [
        (0usize, &case.set.forward_train),
        (1, &case.set.forward_inference),
    ] {
        args.launch(
            lib,
            &format!("case{c}_{k}"),
            &kernel.signatures[0],
            &params,
            ir,
            n,
        );
        let reference = if k == 0 { &want } else { &want_inf };
        for m in 0..ir.outputs.len() {
            let got = args.bufs[&ArgRole::Output(m)].values();
            assert_close(
                &format!("{label}: {} output {m}", kernel.kind),
                &got,
                &reference.outputs[m].data,
                exact,
            );
        }
        if with_states {
            for j in 0..ir.states.len() {
                let got = args.bufs[&ArgRole::FinalState(j)].values();
                assert_close(
                    &format!("{label}: {} final state {j}", kernel.kind),
                    &got,
                    &reference.final_states[j],
                    exact,
                );
            }
        }
        if k == 0 {
            for (s, saved) in want.saved.iter().enumerate() {
                let got = args.bufs[&ArgRole::Save(s)].values();
                assert_close(&format!("{label}: save {s}"), &got, &saved.data, exact);
            }
        }
    }
    // The training forward's outputs are still in the buffers: the backward re-reads them.
    args.launch(
        lib,
        &format!("case{c}_0"),
        &case.set.forward_train.signatures[0],
        &params,
        ir,
        n,
    );

    // Backward.
    for (m, s) in dy.iter().enumerate() {
        args.bufs
            .insert(ArgRole::OutputGrad(m), Buf::from_f32(st.io, &s.data));
    }
    for k in 0..ir.inputs.len() {
        args.bufs
            .insert(ArgRole::InputGrad(k), Buf::zeros(st.io, T * n));
    }
    for j in 0..ir.states.len() {
        if let Some(dfinal) = &dfinal {
            args.bufs.insert(
                ArgRole::FinalStateGrad(j),
                Buf::from_f32(Dtype::F32, &dfinal[j]),
            );
            args.bufs
                .insert(ArgRole::InitStateGrad(j), Buf::zeros(Dtype::F32, n));
        }
    }
    let atomic = case.opts.reduction == Reduction::Atomic;
    for (p, spec) in ir.params.iter().enumerate() {
        if spec.learnable {
            let len = if atomic { layout.len(spec.shape) } else { n };
            args.bufs
                .insert(ArgRole::ParamGrad(p), Buf::zeros(Dtype::F32, len));
        }
    }
    args.launch(
        lib,
        &format!("case{c}_2"),
        &case.set.backward.signatures[0],
        &params,
        ir,
        n,
    );
    for k in 0..ir.inputs.len() {
        let got = args.bufs[&ArgRole::InputGrad(k)].values();
        assert_close(
            &format!("{label}: input gradient {k}"),
            &got,
            &grads.inputs[k].data,
            exact,
        );
    }
    if with_states {
        for j in 0..ir.states.len() {
            let got = args
                .bufs
                .get_mut(&ArgRole::InitStateGrad(j))
                .unwrap()
                .values();
            assert_close(
                &format!("{label}: initial-state gradient {j}"),
                &got,
                &grads.init_states[j],
                exact,
            );
        }
    }
    for (p, spec) in ir.params.iter().enumerate() {
        let Some(want) = &grads.params[p] else {
            continue;
        };
        let raw = args.bufs[&ArgRole::ParamGrad(p)].values();
        // Deterministic: per-element partials, which the reduction kernel sums on the GPU.
        let got: Vec<f32> = if atomic {
            raw
        } else {
            let mut sums = vec![0.0f64; layout.len(spec.shape)];
            for (i, v) in raw.iter().enumerate() {
                sums[layout.index(spec.shape, i)] += f64::from(*v);
            }
            sums.into_iter().map(|v| v as f32).collect()
        };
        assert_close(
            &format!("{label}: gradient of {}", spec.name),
            &got,
            want,
            sum_order,
        );
    }
}

#[test]
#[cfg_attr(not(snn_gpp), ignore = "needs g++: apt install g++")]
fn emitted_cuda_matches_the_interpreter_on_the_cpu() {
    let cases = cases();
    let lib = build(&cases);
    for (c, case) in cases.iter().enumerate() {
        // 3 channels of 4: N = 300 takes the vector path; 7 channels of 3: N = 315 is not a
        // multiple of 4 and takes the scalar path.
        let (vector, scalar) = (
            Layout {
                channels: 3,
                inner: 4,
            },
            Layout {
                channels: 7,
                inner: 3,
            },
        );
        for (layout, batch, with_states) in [
            (vector, 25, true),
            (scalar, 15, false),
            (vector, 25, false),
            (scalar, 15, true),
        ] {
            run_case(
                &lib,
                c,
                case,
                layout,
                batch,
                with_states,
                (c * 10 + batch) as u64,
            );
        }
    }
}
