//! Tells the Python test what this machine has, so that it shows as ignored, with the
//! reason, where it cannot run: `cfg(snn_python)` where the Python that runs the tests
//! (`SNN_PYTHON`, else `python3`) imports numpy and pytest, or `SNN_REQUIRE_PYTHON=1`
//! demands it; `cfg(snn_python_torch)` where it also imports torch (the PyTorch tests).

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(snn_python)");
    println!("cargo::rustc-check-cfg=cfg(snn_python_torch)");
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
}
