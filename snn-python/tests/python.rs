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

/// A checkpoint of the small spiking CNN (as `snn train` writes one, with a batch-norm
/// counter of 7 and a config in its metadata) in `dir`, and a JSON file of what it holds:
/// each tensor's shape, sum and whether it is a counter.
fn write_checkpoint(dir: &Path) -> (PathBuf, PathBuf) {
    use snn_codegen::zoo;
    use snn_nn::checkpoint::{self, Checkpoint};
    use snn_nn::models::spiking_cnn;
    use snn_nn::{ImageShape, Role, init_params};

    let net = spiking_cnn(ImageShape::new(1, 8, 8), 16, 10, &zoo::PaperLif::default()).unwrap();
    let mut params = init_params::<f32>(&net, 5).unwrap();
    let mut expected = serde_json::Map::new();
    for t in params.iter_mut() {
        if t.role == Role::Counter {
            t.data = vec![7.0];
        }
        let sum: f64 = t.data.iter().map(|&v| f64::from(v)).sum();
        let entry = serde_json::json!({
            "shape": t.shape,
            "sum": sum,
            "counter": t.role == Role::Counter,
        });
        expected.insert(t.name.clone(), entry);
    }
    let mut ckpt = Checkpoint::fresh(params);
    ckpt.epoch = 3;
    ckpt.metadata
        .insert("train.config".into(), r#"{"arch":"spiking-cnn"}"#.into());
    let (path, json) = (dir.join("cnn.safetensors"), dir.join("cnn.json"));
    checkpoint::save(&path, &ckpt).unwrap();
    std::fs::write(&json, serde_json::Value::Object(expected).to_string()).unwrap();
    (path, json)
}

/// The PyTorch tests: run by their own test, which shows as ignored where torch is missing.
const TORCH_TESTS: &str = "test_torch.py";

#[test]
#[cfg_attr(
    not(snn_python),
    ignore = "needs Python 3.11+ with numpy and pytest (pip install numpy pytest), or SNN_PYTHON naming one"
)]
fn python_tests_pass_on_the_built_extension() {
    run_pytest(&["--ignore", TORCH_TESTS]);
}

#[test]
#[cfg_attr(
    not(snn_python_torch),
    ignore = "needs PyTorch (and SpikingJelly for one test) in the Python that runs the tests"
)]
fn pytorch_tests_pass_on_the_built_extension() {
    run_pytest(&[TORCH_TESTS, "-m", "not cuda"]);
}

/// The same tests on CUDA tensors, through the generated kernels (on the GPU machine, which
/// has no Rust, they run as `python -m pytest tests/test_torch.py -m cuda` on a wheel).
#[test]
#[cfg_attr(
    not(snn_python_torch_cuda),
    ignore = "needs PyTorch with a CUDA GPU in the Python that runs the tests"
)]
fn pytorch_cuda_tests_pass_on_the_built_extension() {
    run_pytest(&[TORCH_TESTS, "-m", "cuda"]);
}

/// Runs pytest over `tests/` with `args` (file names are taken in `tests/`), on a fresh
/// build of the extension.
fn run_pytest(args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let library = built_library(root);
    let site = std::env::temp_dir().join(format!(
        "snn-python-test-{}-{}",
        std::process::id(),
        args.join("-").replace(['/', '.', ' '], "_")
    ));
    let package = site.join("snn");
    copy_dir(&root.join("python/snn"), &package);
    std::fs::copy(&library, package.join("_native.abi3.so")).unwrap();
    let (checkpoint, expected) = write_checkpoint(&site);
    let python = std::env::var("SNN_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(args)
        .current_dir(root.join("tests"))
        .env("PYTHONPATH", &site)
        .env("SNN_TEST_CHECKPOINT", &checkpoint)
        .env("SNN_TEST_CHECKPOINT_EXPECTED", &expected)
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
