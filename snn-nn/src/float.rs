//! The number types the CPU reference computes in (`f32` for training, `f64` for gradient
//! checks), and the one matrix product everything else is built on.
#![allow(unsafe_code)]

use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

pub use snn_codegen::Storage;
pub use snn_codegen::interp::Real;

/// A float the CPU layers compute in.
pub trait Float:
    Real + Default + AddAssign + SubAssign + MulAssign + DivAssign + std::iter::Sum
{
    /// How neuron layers store their tensors when computing in this type (f64 keeps f64,
    /// so gradient checks are not limited by f32 rounding).
    const STORAGE: Storage;

    /// `c = alpha * a * b + beta * c` for row-major `a` `[m, k]`, `b` `[k, n]`, `c`
    /// `[m, n]`, each given with its row and column strides (so transposes are free).
    ///
    /// # Panics
    /// If a slice is too short for its shape and strides: callers check their tensors'
    /// lengths first, so this is a bug in the caller.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: (&[Self], usize, usize),
        b: (&[Self], usize, usize),
        beta: Self,
        c: (&mut [Self], usize, usize),
    );

    fn to_f32(self) -> f32 {
        self.value() as f32
    }
    fn max(self, other: Self) -> Self {
        if other > self { other } else { self }
    }
}

/// The number of elements a strided `[rows, cols]` view spans.
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

macro_rules! float {
    ($t:ty, $gemm:ident, $storage:expr) => {
        impl Float for $t {
            const STORAGE: Storage = $storage;

            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                (a, rsa, csa): (&[Self], usize, usize),
                (b, rsb, csb): (&[Self], usize, usize),
                beta: Self,
                (c, rsc, csc): (&mut [Self], usize, usize),
            ) {
                assert!(
                    a.len() >= span(m, k, rsa, csa)
                        && b.len() >= span(k, n, rsb, csb)
                        && c.len() >= span(m, n, rsc, csc),
                    "gemm operands shorter than their shapes"
                );
                if m == 0 || n == 0 {
                    return;
                }
                // SAFETY: the assertion above keeps every strided access of `a`, `b` and
                // `c` inside its slice; `c` is borrowed mutably, so it aliases neither.
                unsafe {
                    matrixmultiply::$gemm(
                        m,
                        k,
                        n,
                        alpha,
                        a.as_ptr(),
                        rsa as isize,
                        csa as isize,
                        b.as_ptr(),
                        rsb as isize,
                        csb as isize,
                        beta,
                        c.as_mut_ptr(),
                        rsc as isize,
                        csc as isize,
                    )
                }
            }
        }
    };
}
float!(f32, sgemm, Storage::F32);
float!(f64, dgemm, Storage::F64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_with_a_transposed_operand() {
        // a = [[1, 2], [3, 4]] read transposed; b = [[1, 0, 2], [0, 1, 3]].
        let a = [1.0f64, 2.0, 3.0, 4.0];
        let b = [1.0f64, 0.0, 2.0, 0.0, 1.0, 3.0];
        let mut c = [1.0f64; 6];
        f64::gemm(2, 2, 3, 1.0, (&a, 1, 2), (&b, 3, 1), 2.0, (&mut c, 3, 1));
        // a^T = [[1, 3], [2, 4]]; a^T b = [[1, 3, 11], [2, 4, 16]]; + 2.
        assert_eq!(c, [3.0, 5.0, 13.0, 4.0, 6.0, 18.0]);
    }
}
