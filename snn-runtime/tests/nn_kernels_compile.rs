#![allow(clippy::unwrap_used)]
//! The network kernels (batch-norm, pooling, elementwise) compile with NVRTC for sm_80 and
//! sm_90, every kernel a source lists is in it, none uses local memory (no stack frame, no
//! spills; the register counts are printed), and the passes meant to move 16 bytes per
//! access do. Needs NVRTC (no GPU):
//! skipped with a notice when it is missing, unless `SNN_REQUIRE_NVRTC=1`.

use snn_codegen::cuda::COMPILE_OPTIONS;
use snn_runtime::nn::kernels::SOURCES;
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

#[test]
fn nvrtc_compiles_the_nn_kernels_without_local_memory() {
    if !nvrtc_available() {
        return;
    }
    let mut opts: Vec<&str> = COMPILE_OPTIONS.to_vec();
    opts.push("--ptxas-options=-v");
    std::thread::scope(|s| {
        for arch in ["sm_80", "sm_90"] {
            let opts = &opts;
            s.spawn(move || {
                for src in SOURCES {
                    let out = nvrtc::compile(src.source, src.name, arch, opts)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let res = nvrtc::resources(&out.log);
                    assert_eq!(res.len(), src.kernels.len(), "{}: {:?}", src.name, res);
                    for name in src.kernels {
                        let r = res.iter().find(|r| r.kernel == *name).unwrap_or_else(|| {
                            panic!("{name} is not in {}:\n{}", src.name, out.log)
                        });
                        eprintln!("{name} on {arch}: {} registers", r.registers);
                        assert!(
                            r.stack_frame_bytes == 0
                                && r.spill_store_bytes == 0
                                && r.spill_load_bytes == 0,
                            "{name} on {arch} uses local memory: {r:?}"
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

#[test]
fn nvrtc_vectorizes_the_nn_kernels_passes() {
    if !nvrtc_available() {
        return;
    }
    for src in SOURCES {
        let out = nvrtc::compile(src.source, src.name, "compute_90", &COMPILE_OPTIONS).unwrap();
        let ptx = String::from_utf8_lossy(&out.image);
        // The passes over whole tensors read (and write) 16 bytes per access.
        let wide: &[(&str, &[&str])] = match src.name {
            "snn_batchnorm" => &[
                ("snn_bn_stats", &["ld.global.nc.v4.f32"]),
                ("snn_bn_apply", &["ld.global.nc.v4.f32", "st.global.v4.f32"]),
                ("snn_bn_grad_sums", &["ld.global.nc.v4.f32"]),
                (
                    "snn_bn_grad_input",
                    &["ld.global.nc.v4.f32", "st.global.v4.f32"],
                ),
                // `x` through the read-only path, `g` (written in place) through the plain one.
                (
                    "snn_bn_grad_fused",
                    &[
                        "ld.global.nc.v4.f32",
                        "ld.global.v4.f32",
                        "st.global.v4.f32",
                    ],
                ),
            ],
            "snn_pool" => &[
                ("snn_avgpool_backward", &["st.global.v4.f32"]),
                // A strip's 4 outputs and their 4 argmax bytes in one store each.
                (
                    "snn_maxpool2d_forward",
                    &["st.global.v4.f32", "st.global.u32"],
                ),
                ("snn_maxpool2d_backward", &["st.global.v4.f32"]),
            ],
            "snn_elementwise" => &[("snn_add", &["ld.global.v4.f32", "st.global.v4.f32"])],
            other => panic!("unexpected source {other}"),
        };
        for (kernel, instructions) in wide {
            let body = entry(&ptx, kernel);
            for i in *instructions {
                assert!(body.contains(i), "{kernel} has no `{i}`");
            }
        }
    }
}
