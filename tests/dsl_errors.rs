//! Compile-fail tests for `#[neuron]` and `#[neuron_helper]`: in `tests/ui/`, one file per
//! kind of mistake, each item in it with one mistake and named for it (the macro reports
//! each mistake and still emits the item, so one file checks them all), with the exact
//! diagnostics the macro must give in the `.stderr` next to it.
//!
//! To regenerate after changing a message: `TRYBUILD=overwrite cargo test --test dsl_errors`,
//! then read every changed `.stderr`.

#[test]
fn dsl_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
