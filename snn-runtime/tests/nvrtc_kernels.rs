#![allow(clippy::unwrap_used)]
//! Every generated kernel compiles with NVRTC for sm_80 and sm_90, and ptxas reports no
//! local memory (no stack frame, no spills). Needs NVRTC (no GPU): where the build script
//! finds none, the tests show as ignored (see snn-runtime/build.rs).

use snn_codegen::cuda::{COMPILE_OPTIONS, KernelOptions, KernelSet, Reduction, generate};
use snn_codegen::fuse::batch_norm_input;
use snn_codegen::{Dtype, NeuronIr, Storage, compile, zoo};
use snn_runtime::nvrtc;

fn check(set: &KernelSet, arch: &str) {
    for k in set.all() {
        let name = &k.signatures[0].name;
        let mut opts: Vec<&str> = COMPILE_OPTIONS.to_vec();
        opts.push("--ptxas-options=-v");
        let out = nvrtc::compile(&k.source, name, arch, &opts)
            .unwrap_or_else(|e| panic!("{e}\n{}", k.source));
        let res = nvrtc::resources(&out.log);
        for sig in &k.signatures {
            let r = res
                .iter()
                .find(|r| r.kernel == sig.name)
                .unwrap_or_else(|| panic!("no resource report for {} in:\n{}", sig.name, out.log));
            assert!(
                r.stack_frame_bytes == 0 && r.spill_store_bytes == 0 && r.spill_load_bytes == 0,
                "{} on {arch} uses local memory: {r:?}",
                sig.name
            );
        }
    }
}

/// Compiles every zoo neuron's kernels for `storage` and `opts` on both architectures.
fn check_zoo(storage: Storage, opts: KernelOptions) {
    let irs: Vec<NeuronIr> = zoo::all().iter().map(|n| n.ir().unwrap()).collect();
    check_all(&irs, storage, opts);
}

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

#[test]
#[cfg_attr(
    not(snn_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.* and put its lib on LD_LIBRARY_PATH"
)]
fn nvrtc_compiles_f32_kernels_without_spills() {
    check_zoo(Storage::F32, KernelOptions::default());
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
fn nvrtc_compiles_kernels_unrolled_for_t128_without_spills() {
    check_zoo(
        Storage::F32,
        KernelOptions {
            fixed_steps: Some(128),
            ..Default::default()
        },
    );
}

#[test]
#[cfg_attr(
    not(snn_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.* and put its lib on LD_LIBRARY_PATH"
)]
fn nvrtc_compiles_narrow_deterministic_kernels_without_spills() {
    let narrow = Storage {
        io: Dtype::BF16,
        spikes: Dtype::U8,
        saves: Dtype::BF16,
    };
    check_zoo(
        narrow,
        KernelOptions {
            reduction: Reduction::Deterministic,
            ..Default::default()
        },
    );
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

#[test]
#[cfg_attr(
    not(snn_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.* and put its lib on LD_LIBRARY_PATH"
)]
fn nvrtc_compiles_the_rate_encoder() {
    let mut opts: Vec<&str> = COMPILE_OPTIONS.to_vec();
    opts.push("--ptxas-options=-v");
    for arch in ["sm_80", "sm_90"] {
        let out = nvrtc::compile(
            snn_runtime::encode::RATE_ENCODE_SOURCE,
            "snn_rate_encode",
            arch,
            &opts,
        )
        .unwrap();
        let r = &nvrtc::resources(&out.log)[0];
        assert_eq!((r.stack_frame_bytes, r.spill_store_bytes), (0, 0), "{r:?}");
    }
}
