//! The `snn` binary: the help and argument checks of `snn bench` (no GPU needed: none of
//! these names may contain the GPU runner's filter word), and the `snn data` commands,
//! where datasets live and downloads from a mirror (a local server on 127.0.0.1, shared
//! with `snn-data`'s download tests).

// Fixture helpers are not `#[test]` functions, so clippy.toml's test allowance does not
// reach them; a failed fixture write should just fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../snn-data/tests/server/mod.rs"]
mod server;

use std::path::Path;
use std::process::{Command, Output};

use server::{Mode, Server, fixture};
use tempfile::TempDir;

/// Runs `snn` with `args`, the variables of `env` set and those of `remove` unset.
fn snn_with(args: &[&str], env: &[(&str, &Path)], remove: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_snn"));
    // The runner sets it; backtraces must never reach users' error messages.
    cmd.args(args).env("RUST_BACKTRACE", "1");
    for key in remove {
        cmd.env_remove(key);
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("the snn binary runs")
}

fn snn(args: &[&str]) -> Output {
    snn_with(args, &[], &[])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------
// snn bench

#[test]
fn top_level_help_describes_the_bench_and_shows_an_example() {
    let out = snn(&["--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let needles = [
        "bench",
        "forward+backward ms",
        "GB/s",
        "Example",
        "snn bench neuron",
    ];
    assert_has("`snn --help`", &stdout(&out), &needles);
}

/// Asserts that `text` (what `what` printed) contains every needle.
fn assert_has(what: &str, text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{what} lacks {needle:?}:\n{text}");
    }
}

#[test]
fn bench_neuron_help_explains_every_column_and_option() {
    let out = snn(&["bench", "neuron", "--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let columns =
        "neuron|T |N |fwd ms|fwd+bwd ms|B/el fwd|B/el train|fwd GB/s|train GB/s|% copy".split('|');
    let options = [
        "--neuron",
        "--steps",
        "--elements",
        "--storage",
        "--reduction",
        "--repeats",
        "--device",
    ];
    for needle in columns.chain(options).chain(["Example:", "paper_lif"]) {
        assert!(
            text.contains(needle),
            "`snn bench neuron --help` lacks {needle:?}:\n{text}"
        );
    }
}

#[test]
fn unknown_neuron_is_named_with_the_known_ones_before_any_device_work() {
    let out = snn(&["bench", "neuron", "--neuron", "paper_lif,nope"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown neuron `nope`"), "{err}");
    for known in ["paper_lif", "lif", "izhikevich", "leaky_integrator"] {
        assert!(
            err.contains(known),
            "the error does not list {known}: {err}"
        );
    }
    assert!(
        !err.contains("CUDA"),
        "the name must be checked before the device: {err}"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn bad_numbers_are_rejected_by_the_parser() {
    for args in [
        &["bench", "neuron", "--repeats", "0"][..],
        &["bench", "neuron", "--steps", "8,x"],
        &["bench", "neuron", "--storage", "f16"],
        &["bench", "neuron", "--reduction", "tree"],
        &["bench", "neuron", "--elements", "-5"],
        &["bench", "neuron", "--elements", "0"],
    ] {
        let out = snn(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("error:"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn zero_sizes_fail_with_a_message_and_no_backtrace() {
    let out = snn(&["bench", "neuron", "--steps", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("--steps and --elements must be at least 1"),
        "{err}"
    );
    assert!(!err.contains("backtrace"), "{err}");
}

// ---------------------------------------------------------------------------------------
// snn data

#[test]
fn data_path_honours_snn_data_dir() {
    let dir = TempDir::new().unwrap();
    let out = snn_with(&["data", "path"], &[("SNN_DATA_DIR", dir.path())], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", dir.path().display()));

    let out = snn_with(
        &["data", "path", "mnist"],
        &[("SNN_DATA_DIR", dir.path())],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{}\n", dir.path().join("mnist").display())
    );
}

#[test]
fn data_path_prefers_the_flag_then_falls_back_to_xdg_and_home() {
    let env_dir = TempDir::new().unwrap();
    let flag_dir = TempDir::new().unwrap();
    let flag = flag_dir.path().to_str().unwrap();
    let out = snn_with(
        &["data", "path", "--data-dir", flag],
        &[("SNN_DATA_DIR", env_dir.path())],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{flag}\n"));

    let xdg = TempDir::new().unwrap();
    let out = snn_with(
        &["data", "path"],
        &[("XDG_DATA_HOME", xdg.path())],
        &["SNN_DATA_DIR"],
    );
    assert_eq!(
        stdout(&out),
        format!("{}\n", xdg.path().join("snn").display())
    );

    let home = TempDir::new().unwrap();
    let out = snn_with(
        &["data", "path"],
        &[("HOME", home.path())],
        &["SNN_DATA_DIR", "XDG_DATA_HOME"],
    );
    assert_eq!(
        stdout(&out),
        format!("{}\n", home.path().join(".local/share/snn").display())
    );
}

#[test]
fn data_download_uses_snn_data_mirror_and_reports_a_bad_file() {
    // The mirror serves something that is not MNIST's training images.
    let bytes = fixture(1000, 12);
    let server = Server::start(&[("train-images-idx3-ubyte.gz", &bytes)], Mode::Normal);
    let dir = TempDir::new().unwrap();
    let base = server.base();
    let out = snn_with(
        &["data", "download", "mnist"],
        &[
            ("SNN_DATA_DIR", dir.path()),
            ("SNN_DATA_MIRROR", Path::new(&base)),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    for needle in [
        "train-images-idx3-ubyte.gz",
        "9912422",
        base.as_str(),
        "error:",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert!(!err.contains("stack backtrace"), "{err}");
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/train-images-idx3-ubyte.gz");
    let mnist = dir.path().join("mnist");
    assert!(!mnist.join("train-images-idx3-ubyte.gz").exists());
    assert!(!mnist.join("train-images-idx3-ubyte.gz.part").exists());
}

#[test]
fn data_download_of_dvs_gesture_fails_with_the_manual_instructions() {
    let dir = TempDir::new().unwrap();
    let out = snn_with(
        &["data", "download", "dvs-gesture"],
        &[("SNN_DATA_DIR", dir.path())],
        &[],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("DvsGesture.tar.gz"), "{err}");
    assert!(
        err.contains(&dir.path().join("dvs-gesture").display().to_string()),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// snn neurons, codegen, doctor, cache

/// `snn neurons | head -1`: the reader closing the pipe ends `snn` quietly, no panic.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_snn"))
        .arg("neurons")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before `snn` has started up, so its first line already meets a closed pipe
    // (its output would fit a pipe's buffer: a reader closing later would not be seen).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn neurons_lists_the_zoo_with_parameters_and_equations() {
    let out = snn(&["neurons"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let needles = [
        "neuron paper_lif",
        "neuron izhikevich",
        "params: tau = 2",
        "v <- ",
    ];
    assert_has("`snn neurons`", &stdout(&out), &needles);
    let out = snn(&["neurons", "--neuron", "lif"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("backward, for t = T-1 down to 0"));
}

#[test]
fn codegen_prints_the_kernel_of_the_chosen_storage() {
    let out = snn(&[
        "codegen",
        "--neuron",
        "lif",
        "--kernel",
        "backward",
        "--storage",
        "narrow",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("extern \"C\" __global__"), "{text}");
    assert!(
        text.contains("kernel: backward") && text.contains("bf16"),
        "{text}"
    );
    let out = snn(&["codegen", "--neuron", "nope"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("known neurons"), "{}", stderr(&out));
}

#[test]
fn cache_info_counts_and_clear_deletes_the_compiled_kernels() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("a.cubin"), [0u8; 2048]).unwrap();
    std::fs::write(dir.path().join("conv-0123.txt"), b"choices").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"kept").unwrap();
    let env = [("SNN_CACHE_DIR", dir.path())];
    let out = snn_with(&["cache", "info"], &env, &["SNN_CACHE"]);
    assert!(stdout(&out).contains("(2 entries"), "{}", stdout(&out));
    let out = snn_with(&["cache", "clear"], &env, &["SNN_CACHE"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("deleted 2 entries"),
        "{}",
        stdout(&out)
    );
    assert!(!dir.path().join("a.cubin").exists());
    assert!(!dir.path().join("conv-0123.txt").exists());
    assert!(
        dir.path().join("notes.txt").exists(),
        "only kernels are deleted"
    );
}

#[test]
fn doctor_reports_every_component_and_fails_when_one_is_missing() {
    let out = snn(&["doctor"]);
    let text = stdout(&out);
    let needles = ["CUDA driver", "NVRTC", "cuDNN", "cuBLAS", "kernel cache"];
    assert_has("`snn doctor`", &text, &needles);
    assert_eq!(out.status.success(), !text.contains("missing"), "{text}");
}
