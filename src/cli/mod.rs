//! The subcommands of the `snn` binary.

pub mod bench;
