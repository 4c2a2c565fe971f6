#![allow(clippy::unwrap_used)]
//! Every generated kernel compiles with NVRTC for sm_80 and sm_90, and ptxas reports no
//! local memory (no stack frame, no spills). Needs NVRTC (no GPU): skipped with a notice
//! when it is missing, unless `SNN_REQUIRE_NVRTC=1`.

use snn_codegen::cuda::{COMPILE_OPTIONS, KernelOptions, KernelSet, Reduction, generate};
use snn_codegen::fuse::batch_norm_input;
use snn_codegen::{Dtype, NeuronIr, Storage, compile, zoo};
use snn_runtime::nvrtc;

fn nvrtc_available() -> bool {
    match nvrtc::version() {
        Ok(_) => true,
        Err(e) if std::env::var("SNN_REQUIRE_NVRTC").as_deref() == Ok("1") => {
            panic!("SNN_REQUIRE_NVRTC=1 but NVRTC is unavailable: {e}")
        }
        Err(e) => {
            eprintln!("skipping: NVRTC is unavailable ({e})");
            false
        }
    }
}

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
    if !nvrtc_available() {
        return;
    }
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
fn nvrtc_compiles_f32_kernels_without_spills() {
    check_zoo(Storage::F32, KernelOptions::default());
}

/// Every zoo neuron with batch-norm (and a residual add) fused in, as ResNets run them.
#[test]
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
fn nvrtc_reports_compile_errors_with_the_offending_line() {
    if !nvrtc_available() {
        return;
    }
    let src = "extern \"C\" __global__ void broken(float* x) {\n    x[0] = undeclared;\n}\n";
    let err = nvrtc::compile(src, "broken", "sm_90", &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("undeclared") && msg.contains("line 2: x[0] = undeclared;"),
        "{msg}"
    );
}
