//! Tells the Python test what this machine has, so that it shows as ignored, with the
//! reason, where it cannot run: `cfg(snn_python)` where the Python that runs the tests
//! (`SNN_PYTHON`, else `python3`) imports numpy and pytest, or `SNN_REQUIRE_PYTHON=1`
//! demands it; `cfg(snn_python_torch)` where it also imports torch (the PyTorch tests), and
//! `cfg(snn_python_torch_cuda)` where torch also has a CUDA GPU (their CUDA half).

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(snn_python)");
    println!("cargo::rustc-check-cfg=cfg(snn_python_torch)");
    println!("cargo::rustc-check-cfg=cfg(snn_python_torch_cuda)");
    for var in ["SNN_PYTHON", "SNN_REQUIRE_PYTHON", "PATH", "VIRTUAL_ENV"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let python = std::env::var("SNN_PYTHON").unwrap_or_else(|_| "python3".into());
    let required = std::env::var("SNN_REQUIRE_PYTHON").as_deref() == Ok("1");
    let found = Command::new(&python)
        .args(["-c", "import numpy, pytest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if required || found {
        println!("cargo::rustc-cfg=snn_python");
    }
    // The PyTorch tests run where that Python also imports torch.
    let torch = found
        && Command::new(&python)
            .args(["-c", "import numpy, pytest, torch"])
            .output()
            .is_ok_and(|o| o.status.success());
    if torch {
        println!("cargo::rustc-cfg=snn_python_torch");
    }
    // The CUDA ones where torch also sees a GPU.
    let cuda = torch
        && Command::new(&python)
            .args([
                "-c",
                "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
    if cuda {
        println!("cargo::rustc-cfg=snn_python_torch_cuda");
    }
}
