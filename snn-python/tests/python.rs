//! Runs the Python tests (`tests/*.py`, pytest) on a build of the extension: `python/snn`
//! and the library, as `snn/_native.abi3.so`, in a temporary folder on `PYTHONPATH`. Cargo
//! builds no cdylib for a crate's tests, so the test builds it, in a target folder of its
//! own (the running `cargo test` holds the workspace's). Needs a Python with numpy and
//! pytest (`SNN_PYTHON`, else `python3`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the extension library (dev profile) and returns its path.
fn built_library(root: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/python-<hash> -> target
    let target = exe.ancestors().nth(3).unwrap().join("python-extension");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--lib", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the extension failed");
    target.join("debug/lib_native.so")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
#[cfg_attr(
    not(snn_python),
    ignore = "needs Python 3.11+ with numpy and pytest (pip install numpy pytest), or SNN_PYTHON naming one"
)]
fn python_tests_pass_on_the_built_extension() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let library = built_library(root);
    let site = std::env::temp_dir().join(format!("snn-python-test-{}", std::process::id()));
    let package = site.join("snn");
    copy_dir(&root.join("python/snn"), &package);
    std::fs::copy(&library, package.join("_native.abi3.so")).unwrap();
    let python = std::env::var("SNN_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests"))
        .env("PYTHONPATH", &site)
        .output()
        .expect("python runs");
    let _ = std::fs::remove_dir_all(&site);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "pytest failed:\n{text}");
}
