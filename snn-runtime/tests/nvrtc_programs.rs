//! The hand-written CUDA programs (`snn-runtime/kernels/*.cu`): each kernel's declaration
//! is one the launch layer can bind (no NVRTC needed), and, with NVRTC (no GPU needed),
//! every program compiles for sm_80 and sm_90 without local memory and its passes over
//! whole tensors use 16-byte accesses.
#![allow(clippy::unwrap_used)]

use snn_codegen::cuda::{COMPILE_OPTIONS, parse_kernels};
use snn_runtime::launch::programs::{self, Program};
use snn_runtime::nvrtc;

#[test]
fn every_kernel_declares_arguments_the_launch_layer_binds() {
    let mut names = Vec::new();
    for p in programs::ALL {
        let sigs = parse_kernels(p.source).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        assert!(!sigs.is_empty(), "{} declares no kernel", p.name);
        for s in sigs {
            assert!(s.name.starts_with("snn_"), "{}: {}", p.name, s.name);
            let mut args: Vec<&str> = s.args.iter().map(|a| a.name.as_str()).collect();
            args.sort_unstable();
            args.dedup();
            assert_eq!(args.len(), s.args.len(), "{}: repeated argument", s.name);
            names.push(s.name);
        }
    }
    let all = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all, "kernel names are unique across programs");
}

#[test]
#[cfg_attr(
    not(snn_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.* and put nvidia/cu13/lib on LD_LIBRARY_PATH"
)]
fn nvrtc_compiles_every_program_without_local_memory() {
    let mut opts: Vec<&str> = COMPILE_OPTIONS.to_vec();
    opts.push("--ptxas-options=-v");
    std::thread::scope(|s| {
        for arch in ["sm_80", "sm_90"] {
            let opts = &opts;
            s.spawn(move || {
                for p in programs::ALL {
                    let out = nvrtc::compile(p.source, p.name, arch, opts)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let res = nvrtc::resources(&out.log);
                    let sigs = parse_kernels(p.source).unwrap();
                    assert_eq!(res.len(), sigs.len(), "{}: {res:?}", p.name);
                    for sig in sigs {
                        let r = res
                            .iter()
                            .find(|r| r.kernel == sig.name)
                            .unwrap_or_else(|| {
                                panic!("{} is not in {}:\n{}", sig.name, p.name, out.log)
                            });
                        assert!(
                            r.stack_frame_bytes == 0
                                && r.spill_store_bytes == 0
                                && r.spill_load_bytes == 0,
                            "{} on {arch} uses local memory: {r:?}",
                            sig.name
                        );
                    }
                }
            });
        }
    });
}

/// The PTX of `kernel` (from its `.entry` to the next one).
fn entry<'a>(ptx: &'a str, kernel: &str) -> &'a str {
    let start = ptx
        .find(&format!(".entry {kernel}("))
        .unwrap_or_else(|| panic!("no entry {kernel}"));
    let rest = &ptx[start + 1..];
    &ptx[start..start + 1 + rest.find(".entry").unwrap_or(rest.len())]
}

/// Passes over whole tensors read (and write) 16 bytes per access: the instructions each
/// such kernel's PTX must contain.
const WIDE: &[(Program, &str, &[&str])] = &[
    (
        programs::ELEMENTWISE,
        "snn_add",
        &["ld.global.v4.f32", "st.global.v4.f32"],
    ),
    (programs::BATCHNORM, "snn_bn_stats", &[LDG4]),
    (programs::BATCHNORM, "snn_bn_apply", &[LDG4, ST4]),
    (programs::BATCHNORM, "snn_bn_grad_sums", &[LDG4]),
    (programs::BATCHNORM, "snn_bn_grad_input", &[LDG4, ST4]),
    // `x` through the read-only path, `g` (written in place) through the plain one.
    (
        programs::BATCHNORM,
        "snn_bn_grad_fused",
        &[LDG4, "ld.global.v4.f32", ST4],
    ),
    (programs::POOL, "snn_avgpool_backward", &[ST4]),
    // A strip's 4 outputs and their 4 argmax bytes in one store each.
    (
        programs::POOL,
        "snn_maxpool2d_forward",
        &[ST4, "st.global.u32"],
    ),
    (programs::POOL, "snn_maxpool2d_backward", &[ST4]),
    (programs::OPTIM, "snn_adam_step", UPDATE),
    (programs::OPTIM, "snn_sgd_step", UPDATE),
    (programs::OPTIM, "snn_sum_squares_partial", &[LDG4]),
    (programs::OPTIM, "snn_scale", IN_PLACE),
    (programs::OPTIM, "snn_clip_scale", IN_PLACE),
];

/// A 16-byte load through the read-only cache (`__ldg` of a float4).
const LDG4: &str = "ld.global.nc.v4.f32";
/// A 16-byte store.
const ST4: &str = "st.global.v4.f32";

/// An optimizer step: the weights and state read and written, the gradients read only.
const UPDATE: &[&str] = &[
    "ld.global.v4.f32",
    "ld.global.nc.v4.f32",
    "st.global.v4.f32",
];
/// A tensor scaled in place.
const IN_PLACE: &[&str] = &["ld.global.v4.f32", "st.global.v4.f32"];

#[test]
#[cfg_attr(
    not(snn_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.* and put nvidia/cu13/lib on LD_LIBRARY_PATH"
)]
fn nvrtc_vectorizes_the_whole_tensor_passes() {
    for p in programs::ALL {
        let out = nvrtc::compile(p.source, p.name, "compute_90", &COMPILE_OPTIONS).unwrap();
        let ptx = String::from_utf8_lossy(&out.image);
        for (_, kernel, instructions) in WIDE.iter().filter(|(q, _, _)| q == p) {
            let body = entry(&ptx, kernel);
            for i in *instructions {
                assert!(body.contains(i), "{kernel} has no `{i}`");
            }
        }
    }
}
