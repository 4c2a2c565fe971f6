//! The CPU reference: every layer's forward and backward on host slices, in `f32` or `f64`.
//!
//! Each function checks the lengths of the slices it is given against the layer's shapes
//! and returns an error naming the mismatch; outputs are overwritten, never accumulated.
