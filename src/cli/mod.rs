//! The subcommands of the `snn` binary.

pub mod bench;
pub mod bench_train;
pub mod data;
pub mod tools;
pub mod train;
