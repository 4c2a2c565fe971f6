//! The `snn data` commands: where datasets live, and downloads from a mirror (a local
//! server on 127.0.0.1, shared with `snn-data`'s download tests).

// Fixture helpers are not `#[test]` functions, so clippy.toml's test allowance does not
// reach them; a failed fixture write should just fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../snn-data/tests/server/mod.rs"]
mod server;

use std::path::Path;
use std::process::{Command, Output};

use server::{Mode, Server, fixture};
use tempfile::TempDir;

fn snn(args: &[&str], env: &[(&str, &Path)], remove: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_snn"));
    cmd.args(args).env("RUST_BACKTRACE", "1");
    for key in remove {
        cmd.env_remove(key);
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("the snn binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn data_path_honours_snn_data_dir() {
    let dir = TempDir::new().unwrap();
    let out = snn(&["data", "path"], &[("SNN_DATA_DIR", dir.path())], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", dir.path().display()));

    let out = snn(
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
    let out = snn(
        &["data", "path", "--data-dir", flag],
        &[("SNN_DATA_DIR", env_dir.path())],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{flag}\n"));

    let xdg = TempDir::new().unwrap();
    let out = snn(
        &["data", "path"],
        &[("XDG_DATA_HOME", xdg.path())],
        &["SNN_DATA_DIR"],
    );
    assert_eq!(
        stdout(&out),
        format!("{}\n", xdg.path().join("snn").display())
    );

    let home = TempDir::new().unwrap();
    let out = snn(
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
    let out = snn(
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
    let out = snn(
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
