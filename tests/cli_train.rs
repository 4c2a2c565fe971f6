//! `snn train` and `snn eval` on the embedded digits, on the CPU reference: the default run
//! reaches its stated accuracy, a resumed run equals an uninterrupted one, and bad input is
//! a clear error with a non-zero exit and nothing written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

/// The `snn` binary: Cargo's build of it, or `SNN_BIN` where the build is not at hand (a
/// staged copy on the GPU machine, `.gpu/snn`).
fn bin() -> PathBuf {
    std::env::var_os("SNN_BIN").map_or_else(|| env!("CARGO_BIN_EXE_snn").into(), PathBuf::from)
}

fn snn(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the snn binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The JSON lines of `dir/metrics.jsonl`.
fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The epoch records (not the configuration lines).
fn epochs(dir: &Path) -> Vec<Value> {
    metrics(dir)
        .into_iter()
        .filter(|v| v.get("epoch").is_some())
        .collect()
}

/// A run of `epochs` epochs with options `quick` that nothing interrupts.
fn uninterrupted(quick: &[&str], epochs: &str) -> TempDir {
    let dir = TempDir::new().unwrap();
    let out = train(dir.path(), &[quick, &["--epochs", epochs]].concat());
    assert!(out.status.success(), "{}", text(&out));
    dir
}

fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--cpu", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    snn(&args)
}

/// The README states it: the default run (small spiking CNN on the embedded digits, seed
/// 0) reaches 85% test accuracy within its 5 epochs.
#[test]
fn the_default_run_on_the_embedded_digits_reaches_its_stated_accuracy() {
    let dir = TempDir::new().unwrap();
    let out = train(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let records = metrics(dir.path());
    assert_eq!(records[0]["config"]["dataset"], "digits", "{records:?}");
    assert_eq!(records[0]["config"]["arch"], "spiking-cnn");
    let epochs = epochs(dir.path());
    assert_eq!(epochs.len(), 5);
    let best = epochs
        .iter()
        .map(|e| e["test_accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(best >= 0.85, "best test accuracy {best}: {}", text(&out));
    assert!(text(&out).contains("epoch 5/5"), "{}", text(&out));
    for file in ["last.safetensors", "best.safetensors"] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }

    // `snn eval` on the last checkpoint gives the last epoch's test accuracy.
    let last = dir.path().join("last.safetensors");
    let eval = snn(&["eval", "--cpu", "--checkpoint", last.to_str().unwrap()]);
    assert!(eval.status.success(), "{}", text(&eval));
    let want = 100.0 * epochs[4]["test_accuracy"].as_f64().unwrap();
    assert!(
        text(&eval).contains(&format!("test accuracy {want:.2}%")),
        "want {want:.2}%: {}",
        text(&eval)
    );
}

/// The seed's ternary LIF (spikes of -1, 0 and 1) trains the default network: its signed
/// spikes go through batch-norm, pooling and the rate loss as they are.
#[test]
fn the_ternary_lif_trains_the_default_network() {
    let dir = TempDir::new().unwrap();
    let out = train(dir.path(), &["--neuron", "ternary_lif", "--epochs", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(metrics(dir.path())[0]["config"]["neuron"], "ternary_lif");
    let accuracy = epochs(dir.path())[0]["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.6, "test accuracy {accuracy}: {}", text(&out));
}

/// `--time-chunk` keeps only the spikes and every few steps' neuron states for the
/// backward, which recomputes the rest: the same training to the bit (on the CPU, with a
/// neuron without learnable parameters), so the same weights and optimizer state.
#[test]
fn recomputing_from_kept_spikes_trains_the_same_run() {
    let quick = ["--steps", "5", "--max-batches", "4", "--seed", "2"];
    let whole = uninterrupted(&quick, "1");
    let chunked = TempDir::new().unwrap();
    let out = train(
        chunked.path(),
        &[&quick[..], &["--time-chunk", "2", "--epochs", "1"]].concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("neuron states kept every 2 steps"),
        "{}",
        text(&out)
    );
    let last =
        |dir: &TempDir| snn::nn::checkpoint::load(&dir.path().join("last.safetensors")).unwrap();
    let (a, b) = (last(&whole), last(&chunked));
    assert_eq!(a.params, b.params);
    assert_eq!(a.optimizer, b.optimizer);
    let loss = |dir: &TempDir| epochs(dir.path())[0]["train_loss"].clone();
    assert_eq!(loss(&whole), loss(&chunked));
}

/// Stopped after epoch 1 and resumed, a run's second epoch equals an uninterrupted run's
/// to the bit (same batches, same optimizer state).
#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let quick = ["--steps", "4", "--max-batches", "6", "--seed", "3"];
    let whole = uninterrupted(&quick, "2");

    let parts = TempDir::new().unwrap();
    let out = train(parts.path(), &[&quick[..], &["--epochs", "1"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let last = parts.path().join("last.safetensors");
    let resume = ["--epochs", "2", "--resume", last.to_str().unwrap()];
    let out = train(parts.path(), &[&quick[..], &resume[..]].concat());
    assert!(out.status.success(), "{}", text(&out));

    let (a, b) = (epochs(whole.path()), epochs(parts.path()));
    assert_eq!(b.len(), 2);
    for key in ["steps", "train_loss", "train_accuracy", "test_accuracy"] {
        assert_eq!(a[1][key], b[1][key], "{key}: {a:?} vs {b:?}");
    }

    // Other options are refused, naming them.
    let other = [
        "--epochs",
        "2",
        "--resume",
        last.to_str().unwrap(),
        "--arch",
        "spiking-mlp",
    ];
    let out = train(parts.path(), &[&quick[..], &other[..]].concat());
    assert!(!out.status.success());
    let want = "--arch spiking-mlp (the checkpoint's run had spiking-cnn)";
    assert!(text(&out).contains(want), "{}", text(&out));
}

/// Several processes: `--gpus` without GPUs, `--sync-bn`, `--split time` or `--bucket-mib`
/// without several, a split by time that does not divide T or asks for synchronised
/// batch-norm, and a rank whose launcher's variables do not fit, are clear errors before
/// anything is written.
#[test]
fn a_run_on_several_gpus_that_cannot_start_says_why() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("out");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let o = Command::new(bin())
            .args(["train", "--out", out.to_str().unwrap()])
            .args(args)
            .envs(env.iter().copied())
            .env_remove("SLURM_PROCID")
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?} {env:?} succeeded");
        text(&o)
    };
    let torchrun = |rank: &'static str| {
        [
            ("RANK", rank),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", rank),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29999"),
        ]
    };
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&[&str], Env, &str); 15] = [
        (
            &["--bucket-mib", "4", "--sync-bn", "--gpus", "2"],
            &[],
            "--bucket-mib is for data parallelism without --sync-bn",
        ),
        (
            &["--devices", "1"],
            &[],
            "one GPU trains alone; use --device 1",
        ),
        (&["--devices", "0,2,0"], &[], "--devices names GPU 0 twice"),
        (
            &["--devices", "0,1", "--gpus", "2"],
            &[],
            "cannot be used with",
        ),
        (&["--gpus", "2", "--cpu"], &[], "cannot be used with"),
        (
            &["--split", "time"],
            &[],
            "--split time shares each step's time steps among GPUs: use it with --gpus N",
        ),
        (
            &["--bucket-mib", "4", "--gpus", "1"],
            &[],
            "--bucket-mib sets how gradients travel between GPUs",
        ),
        (
            &["--split", "time", "--gpus", "3", "--steps", "16"],
            &[],
            "T = 16 does not split evenly over 3 GPUs",
        ),
        (
            &["--split", "time", "--sync-bn", "--gpus", "2"],
            &[],
            "--sync-bn is for --split batch",
        ),
        (
            &["--split", "space", "--gpus", "2"],
            &[],
            "[possible values: batch, time]",
        ),
        (
            &["--sync-bn"],
            &[],
            "--sync-bn synchronises batch-norm over the GPUs",
        ),
        (
            &["--sync-bn", "--gpus", "1"],
            &[],
            "use it with --gpus N (2 or more)",
        ),
        (&["--cpu"], &torchrun("1"), "the CPU reference trains alone"),
        (
            &["--gpus", "3"],
            &torchrun("0"),
            "--gpus 3, but torchrun started 2 processes (WORLD_SIZE): leave it out",
        ),
        (&[], &torchrun("x"), "RANK=x is not a whole number"),
    ];
    for (args, env, want) in cases {
        let t = run(args, env);
        assert!(t.contains(want), "{args:?} {env:?}: no {want:?} in {t}");
        assert!(!t.contains("panicked"), "{t}");
    }
    // With fewer than two GPUs (CI has none), --gpus 2 cannot start its ranks.
    if snn::runtime::Device::count().map_or(true, |n| n < 2) {
        let t = run(&["--gpus", "2"], &[]);
        assert!(t.contains("--gpus"), "{t}");
    }
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let out_dir = dir.path().join("out");
    let out = out_dir.to_str().unwrap();
    let cases: [(&[&str], &[&str]); 13] = [
        (
            &["--dataset", "imagenet"],
            &["digits", "mnist", "dvs-gesture"],
        ),
        (&["--arch", "vgg"], &["spiking-resnet18", "spiking-mlp"]),
        (
            &["--neuron", "hodgkin"],
            &["unknown neuron `hodgkin`", "paper_lif"],
        ),
        (
            &["--neuron-param", "nope=1"],
            &["no parameter `nope`", "decay"],
        ),
        (&["--neuron-param", "tau"], &["not name=value"]),
        (&["--lr", "-1"], &["not a positive learning rate"]),
        (&["--batch", "0"], &["0 is not in 1.."]),
        (&["--steps", "0"], &["0 is not in 1.."]),
        (
            &["--storage", "narrow"],
            &["--storage narrow needs a CUDA GPU"],
        ),
        (&["--memory-budget", "0"], &["`0` is no memory budget"]),
        (&["--memory-budget", "24"], &["--memory-budget", "--cpu"]),
        (
            &["--memory-budget", "24", "--time-chunk", "4"],
            &["cannot be used with", "--time-chunk"],
        ),
        (
            &[
                "--dataset",
                "mnist",
                "--data-dir",
                dir.path().to_str().unwrap(),
            ],
            &["snn data download mnist"],
        ),
    ];
    for (args, needles) in cases {
        let o = train(Path::new(out), args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let t = text(&o);
        for needle in needles {
            assert!(t.contains(needle), "{args:?}: no {needle:?} in {t}");
        }
        assert!(
            !t.contains("panicked") && !t.contains("stack backtrace"),
            "{t}"
        );
        assert!(!out_dir.exists(), "{args:?} wrote {}", out_dir.display());
    }

    // A memory budget on a machine without a GPU (CI's): the CPU reference has none.
    let o = snn(&["train", "--memory-budget", "24", "--out", out]);
    let t = text(&o);
    if t.contains("training on the CPU reference") {
        assert!(!o.status.success());
        assert!(
            t.contains("--memory-budget is for training on a GPU"),
            "{t}"
        );
        assert!(!out_dir.exists());
    }

    // An output folder that cannot be created.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let o = train(&file.join("sub"), &["--max-batches", "1", "--epochs", "1"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("creating the output folder"),
        "{}",
        text(&o)
    );

    // Resuming from something that is not a checkpoint.
    let o = train(Path::new(out), &["--resume", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains(file.to_str().unwrap()), "{}", text(&o));
    assert!(!out_dir.exists());
}

/// A run whose loss stops being finite stops with a clear message and a non-zero exit,
/// and writes no checkpoint of the broken parameters (fit's own tests show that a
/// checkpoint of the last sound epoch stays).
#[test]
fn a_diverging_run_stops_and_keeps_no_broken_checkpoint() {
    let dir = TempDir::new().unwrap();
    // SGD at a rate beyond f32's range: the first update makes the parameters infinite.
    let args = [
        "--optimizer",
        "sgd",
        "--lr",
        "3e38",
        "--steps",
        "4",
        "--max-batches",
        "3",
        "--epochs",
        "2",
    ];
    let out = train(dir.path(), &args);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    for needle in [
        "training diverged; lower the learning rate",
        "(epoch 1)",
        "no checkpoint was written",
    ] {
        assert!(t.contains(needle), "no {needle:?} in {t}");
    }
    assert!(!t.contains("panicked"), "{t}");
    assert!(!dir.path().join("last.safetensors").exists());
    assert!(!dir.path().join("best.safetensors").exists());
    assert!(epochs(dir.path()).is_empty());
}

/// Ctrl-C finishes the step, writes `last.safetensors` and exits non-zero; resuming from
/// it gives the epochs an uninterrupted run gives.
#[cfg(unix)]
#[test]
fn ctrl_c_writes_last_and_the_resumed_run_equals_an_uninterrupted_one() {
    let quick = ["--steps", "4", "--max-batches", "6", "--seed", "5"];
    let whole = uninterrupted(&quick, "3");

    let parts = TempDir::new().unwrap();
    let last = interrupted_after_an_epoch(&[&["--cpu"][..], &quick[..]].concat(), parts.path());

    let resume = ["--epochs", "3", "--resume", last.to_str().unwrap()];
    let out = train(parts.path(), &[&quick[..], &resume[..]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let (a, b) = (epochs(whole.path()), epochs(parts.path()));
    let third = |v: &[Value]| v.iter().find(|e| e["epoch"] == 3).cloned().unwrap();
    for key in ["steps", "train_loss", "train_accuracy", "test_accuracy"] {
        assert_eq!(third(&a)[key], third(&b)[key], "{key}: {a:?} vs {b:?}");
    }
}

/// On two GPUs of this machine, split by batch and by time: a run completes; the same run
/// interrupted by Ctrl-C (to the whole process group, as a terminal sends it) writes
/// `last.safetensors` and stops every rank; resumed from it, its last epoch is the
/// uninterrupted run's. With the staged binary: `SNN_BIN=$PWD/.gpu/snn bash .gpu/run.sh
/// multi_device` (after `../shared/gpu/pack.sh 'gpu|cli_train'`).
#[cfg(unix)]
#[test]
#[ignore = "needs 2 CUDA GPUs: SNN_BIN=$PWD/.gpu/snn bash .gpu/run.sh multi_device"]
fn multi_device_snn_train_completes_is_interrupted_and_resumes() {
    for split in ["batch", "time"] {
        let quick = [
            "--gpus",
            "2",
            "--split",
            split,
            "--deterministic",
            "--steps",
            "4",
            "--max-batches",
            "6",
            "--seed",
            "5",
        ];
        let run = |out: &Path, extra: &[&str]| {
            let mut args = vec!["train", "--out", out.to_str().unwrap()];
            args.extend_from_slice(&quick);
            args.extend_from_slice(extra);
            snn(&args)
        };
        let whole = TempDir::new().unwrap();
        let out = run(whole.path(), &["--epochs", "3"]);
        assert!(out.status.success(), "{split}: {}", text(&out));
        assert!(
            text(&out).contains("over 2 GPUs"),
            "{split}: {}",
            text(&out)
        );

        let parts = TempDir::new().unwrap();
        let last = interrupted_after_an_epoch(&quick, parts.path());

        let resume = ["--epochs", "3", "--resume", last.to_str().unwrap()];
        let out = run(parts.path(), &resume);
        assert!(out.status.success(), "{split}: {}", text(&out));
        let (a, b) = (epochs(whole.path()), epochs(parts.path()));
        let third = |v: &[Value]| v.iter().find(|e| e["epoch"] == 3).cloned().unwrap();
        assert_eq!(third(&a)["steps"], third(&b)["steps"], "{split}");
        for key in ["train_loss", "train_accuracy", "test_accuracy"] {
            let (x, y) = (
                third(&a)[key].as_f64().unwrap(),
                third(&b)[key].as_f64().unwrap(),
            );
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "{split}, {key}: {x} (uninterrupted) vs {y} (resumed)"
            );
        }
    }
}

/// `snn train --out dir --epochs 1000 args`, interrupted by Ctrl-C once its first epoch is
/// recorded (so that the stop falls in a later one), sent to its whole process group as a
/// terminal sends it (a launcher and its ranks alike): it exits non-zero, names `--resume`
/// and leaves `last.safetensors`, whose path this returns.
#[cfg(unix)]
fn interrupted_after_an_epoch(args: &[&str], dir: &Path) -> PathBuf {
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    let out_dir = dir.to_str().unwrap();
    let child = Command::new(bin())
        .args([&["train", "--out", out_dir, "--epochs", "1000"][..], args].concat())
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while epochs_written(dir) < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{args:?}: no epoch recorded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let group = format!("-{}", child.id());
    assert!(
        Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "{args:?}: an interrupted run must exit non-zero"
    );
    assert!(text(&out).contains("--resume"), "{args:?}: {}", text(&out));
    let last = dir.join("last.safetensors");
    assert!(last.is_file(), "{args:?}");
    last
}

fn epochs_written(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|t| t.lines().filter(|l| l.contains("\"epoch\"")).count())
        .unwrap_or(0)
}

/// A damaged dataset file is reported as damaged, not as missing data to download.
#[test]
fn a_damaged_dataset_file_is_named_as_damaged() {
    let data = TempDir::new().unwrap();
    let mnist = data.path().join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    for name in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::write(mnist.join(name), b"not an IDX file").unwrap();
    }
    let out_dir = data.path().join("out");
    let dir = data.path().to_str().unwrap();
    let out = train(&out_dir, &["--dataset", "mnist", "--data-dir", dir]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("train-images-idx3-ubyte"), "{t}");
    assert!(!t.contains("snn data download mnist` first"), "{t}");
    assert!(!out_dir.exists());
}
