//! The `snn` binary's help and argument checks: no GPU needed (none of these names may
//! contain the GPU runner's filter word).

use std::process::{Command, Output};

fn snn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snn"))
        .args(args)
        // The runner sets it; backtraces must never reach users' error messages.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the snn binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn top_level_help_describes_the_bench_and_shows_an_example() {
    let out = snn(&["--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "bench",
        "forward+backward ms",
        "GB/s",
        "Example",
        "snn bench neuron",
    ] {
        assert!(
            text.contains(needle),
            "`snn --help` lacks {needle:?}:\n{text}"
        );
    }
}

#[test]
fn bench_neuron_help_explains_every_column_and_option() {
    let out = snn(&["bench", "neuron", "--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let columns = [
        "neuron",
        "T ",
        "N ",
        "fwd ms",
        "fwd+bwd ms",
        "B/el fwd",
        "B/el train",
        "fwd GB/s",
        "train GB/s",
        "% copy",
    ];
    let options = [
        "--neuron",
        "--steps",
        "--elements",
        "--storage",
        "--reduction",
        "--repeats",
        "--device",
    ];
    for needle in columns
        .iter()
        .chain(&options)
        .chain(&["Example:", "paper_lif"])
    {
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
    let out = snn(&["bench", "neuron", "--elements", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("--steps and --elements must be at least 1"),
        "{err}"
    );
    assert!(!err.contains("backtrace"), "{err}");
}
