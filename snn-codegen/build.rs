//! Sets `cfg(snn_gpp)` where `g++` runs (or `CI` is set, where it must), so that the CPU
//! check of the emitted CUDA (tests/cuda_host.rs), which builds the kernels with g++, runs
//! where it can and shows as ignored, with the reason, where it cannot.

use std::process::{Command, Stdio};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(snn_gpp)");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=CI");
    let gpp = Command::new("g++")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if gpp || std::env::var_os("CI").is_some() {
        println!("cargo::rustc-cfg=snn_gpp");
    }
}
