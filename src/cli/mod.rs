//! The subcommands of the `snn` binary.

pub mod anchors;
pub mod bench;
pub mod bench_multi;
pub mod bench_train;
pub mod data;
pub mod tools;
pub mod train;

/// An on/off option (`--graph on`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}
