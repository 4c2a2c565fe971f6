//! Tells the tests what this machine has, so that a test that cannot run here shows as
//! ignored, with the reason, instead of passing without checking anything:
//! - `cfg(snn_nvrtc)` where NVRTC can be found (or `SNN_REQUIRE_NVRTC=1` demands it): the
//!   tests that compile kernels with NVRTC run;
//! - `cfg(snn_cuda_driver)` where the CUDA driver can be found: the test of the error
//!   without one cannot run;
//! - `cfg(snn_nccl)` where NCCL can be found: likewise for the error without NCCL.

#[path = "src/libs/search.rs"]
#[allow(dead_code)]
mod search;

use search::{DRIVER, NCCL, NVRTC, Spec};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(snn_nvrtc)");
    println!("cargo::rustc-check-cfg=cfg(snn_cuda_driver)");
    println!("cargo::rustc-check-cfg=cfg(snn_nccl)");
    for var in [
        "SNN_REQUIRE_NVRTC",
        "LD_LIBRARY_PATH",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDA_ROOT",
        "PYTHONPATH",
        "HOME",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=src/libs/search.rs");
    let required = std::env::var("SNN_REQUIRE_NVRTC").as_deref() == Ok("1");
    if required || found(&NVRTC) {
        println!("cargo::rustc-cfg=snn_nvrtc");
    }
    if found(&DRIVER) {
        println!("cargo::rustc-cfg=snn_cuda_driver");
    }
    if found(&NCCL) {
        println!("cargo::rustc-cfg=snn_nccl");
    }
}

/// Whether a directory on the loader's path, or one the runtime searches, holds `spec`.
fn found(spec: &Spec) -> bool {
    let loader: Vec<std::path::PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    loader
        .into_iter()
        .chain(search::search_dirs(spec))
        .any(|dir| spec.files.iter().any(|f| dir.join(f).is_file()))
}
