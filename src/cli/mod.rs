//! The subcommands of the `snn` binary.

pub mod bench;
pub mod data;
