//! Compile-fail tests for `#[neuron]` and `#[neuron_helper]`: one file per mistake in
//! `tests/ui/`, with the exact diagnostics the macro must give in the `.stderr` next to it.
//!
//! To regenerate after changing a message: `TRYBUILD=overwrite cargo test --test dsl_errors`,
//! then read every changed `.stderr`.

#[test]
fn dsl_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
