//! Sets `cfg(snn_nvrtc)` when NVRTC can be found (or `SNN_REQUIRE_NVRTC=1` demands it), so
//! that the tests which compile kernels with NVRTC run where it is and show as ignored,
//! with the reason, where it is not: `cargo test` reports honestly what it skipped.

#[path = "src/libs/search.rs"]
#[allow(dead_code)]
mod search;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(snn_nvrtc)");
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
    if required || nvrtc_found() {
        println!("cargo::rustc-cfg=snn_nvrtc");
    }
}

/// Whether a directory on the loader's path, or one the runtime searches, holds NVRTC.
fn nvrtc_found() -> bool {
    let spec = &search::NVRTC;
    let loader: Vec<std::path::PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    loader
        .into_iter()
        .chain(search::search_dirs(spec))
        .any(|dir| spec.files.iter().any(|f| dir.join(f).is_file()))
}
