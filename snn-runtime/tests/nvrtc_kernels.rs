#![allow(clippy::unwrap_used)]
//! Every generated kernel, and the hand-written ones of rate encoding and the convolutions'
//! bias, compiles with NVRTC for sm_80 and sm_90, and ptxas reports no local memory (no
//! stack frame, no spills). Needs NVRTC (no GPU): where the build script
//! finds none, the tests show as ignored (see snn-runtime/build.rs).

use snn_codegen::cuda::{COMPILE_OPTIONS, KernelOptions, KernelSet, Reduction, generate};
use snn_codegen::fuse::batch_norm_input;
use snn_codegen::{Dtype, NeuronIr, Storage, compile, zoo};
use snn_runtime::nvrtc;

/// Compiles `source` for `arch` with ptxas's report, and asserts that each of `kernels` is
/// in it and uses no local memory.
fn assert_no_local_memory(source: &str, name: &str, arch: &str, kernels: &[&str]) {
    let mut opts: Vec<&str> = COMPILE_OPTIONS.to_vec();
    opts.push("--ptxas-options=-v");
    let out = nvrtc::compile(source, name, arch, &opts).unwrap_or_else(|e| panic!("{e}\n{source}"));
    let res = nvrtc::resources(&out.log);
    for kernel in kernels {
        let r = res
            .iter()
            .find(|r| r.kernel == *kernel)
            .unwrap_or_else(|| panic!("no resource report for {kernel} in:\n{}", out.log));
        assert!(
            r.stack_frame_bytes == 0 && r.spill_store_bytes == 0 && r.spill_load_bytes == 0,
            "{kernel} on {arch} uses local memory: {r:?}"
        );
    }
}

fn check(set: &KernelSet, arch: &str) {
    for k in set.all() {
        let names: Vec<&str> = k.signatures.iter().map(|s| s.name.as_str()).collect();
        assert_no_local_memory(&k.source, names[0], arch, &names);
    }
}

/// Compiles the kernels of each of `irs` for `storage` and `opts` on both architectures.
fn check_all(irs: &[NeuronIr], storage: Storage, opts: KernelOptions) {
    // A missing NVRTC fails here, with where it was looked for, not in every compile.
    nvrtc::version().unwrap_or_else(|e| panic!("{e}"));
    let sets: Vec<KernelSet> = irs
        .iter()
        .map(|ir| generate(&compile(ir, storage).unwrap(), &opts))
        .collect();
    // One thread per architecture: NVRTC compiles are independent.
    std::thread::scope(|s| {
        for arch in ["sm_80", "sm_90"] {
            let sets = &sets;
            s.spawn(move || sets.iter().for_each(|set| check(set, arch)));
        }
    });
}

/// Every zoo neuron's kernels in f32, unrolled for T = 128, and in narrow storage with the
/// deterministic reduction.
#[test]
#[cfg_attr(
    not(snn_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.* and put its lib on LD_LIBRARY_PATH"
)]
fn nvrtc_compiles_zoo_kernels_without_spills() {
    let irs: Vec<NeuronIr> = zoo::all().iter().map(|n| n.ir().unwrap()).collect();
    let narrow = Storage {
        io: Dtype::BF16,
        spikes: Dtype::U8,
        saves: Dtype::BF16,
    };
    let unrolled = KernelOptions {
        fixed_steps: Some(128),
        ..Default::default()
    };
    let deterministic = KernelOptions {
        reduction: Reduction::Deterministic,
        ..Default::default()
    };
    for (storage, opts) in [
        (Storage::F32, KernelOptions::default()),
        (Storage::F32, unrolled),
        (narrow, deterministic),
    ] {
        check_all(&irs, storage, opts);
    }
}

/// Every zoo neuron with batch-norm (and a residual add) fused in, as ResNets run them.
#[test]
#[cfg_attr(
    not(snn_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.* and put its lib on LD_LIBRARY_PATH"
)]
fn nvrtc_compiles_batch_norm_fused_kernels_without_spills() {
    let irs: Vec<NeuronIr> = zoo::all()
        .iter()
        .flat_map(|n| {
            let ir = n.ir().unwrap();
            [false, true].map(|residual| batch_norm_input(&ir, residual).unwrap())
        })
        .collect();
    check_all(&irs, Storage::F32, KernelOptions::default());
}

#[test]
#[cfg_attr(
    not(snn_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.* and put its lib on LD_LIBRARY_PATH"
)]
fn nvrtc_reports_compile_errors_with_the_offending_line() {
    let src = "extern \"C\" __global__ void broken(float* x) {\n    x[0] = undeclared;\n}\n";
    let err = nvrtc::compile(src, "broken", "sm_90", &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("undeclared") && msg.contains("line 2: x[0] = undeclared;"),
        "{msg}"
    );
}
