//! Fully connected layers, as `torch.nn.Linear`: one `Float::gemm` per product.

use crate::cpu::WeightGrads;
use crate::cpu::conv::{check_bias, check_len};
use crate::error::NnError;
use crate::float::Float;
use crate::layers::Linear;

/// `rows * features`, or an error when it does not fit `usize`.
fn matrix(op: &str, arg: &str, rows: usize, features: usize) -> Result<usize, NnError> {
    rows.checked_mul(features).ok_or_else(|| {
        NnError::shape(format!(
            "{op}: `{arg}` of {rows} rows x {features} features has more values than memory can address"
        ))
    })
}

/// Checks `x` `[rows, in]`, `weight` `[out, in]` and a `[rows, out]` tensor named `out_arg`.
fn check_shapes(
    op: &str,
    linear: &Linear,
    rows: usize,
    x: usize,
    weight: usize,
    out_arg: &str,
    out: usize,
) -> Result<(), NnError> {
    let (fi, fo) = (linear.in_features, linear.out_features);
    let shape = |r, c| format!("[{r}, {c}]");
    check_len(op, "x", x, matrix(op, "x", rows, fi)?, &shape(rows, fi))?;
    check_len(
        op,
        "weight",
        weight,
        matrix(op, "weight", fo, fi)?,
        &shape(fo, fi),
    )?;
    check_len(
        op,
        out_arg,
        out,
        matrix(op, out_arg, rows, fo)?,
        &shape(rows, fo),
    )
}

/// `y = x W^T + b`: `x` `[rows, in]`, `weight` `[out, in]`, `bias` `[out]` (given exactly
/// when `linear.bias`), `y` `[rows, out]` (overwritten).
pub fn linear_forward<T: Float>(
    linear: &Linear,
    rows: usize,
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) -> Result<(), NnError> {
    const OP: &str = "linear_forward";
    check_shapes(OP, linear, rows, x.len(), weight.len(), "y", y.len())?;
    check_bias(
        OP,
        "bias",
        linear.bias,
        bias.map(<[T]>::len),
        linear.out_features,
    )?;
    let (fi, fo) = (linear.in_features, linear.out_features);
    match bias {
        Some(b) => {
            for row in y.chunks_exact_mut(fo.max(1)) {
                row.copy_from_slice(b);
            }
        }
        None => y.fill(T::from_f64(0.0)),
    }
    let one = T::from_f64(1.0);
    T::gemm(
        rows,
        fi,
        fo,
        one,
        (x, fi, 1),
        (weight, 1, fi),
        one,
        (y, fo, 1),
    );
    Ok(())
}

/// The gradients of [`linear_forward`] from `dy` `[rows, out]`: `dx = dy W`,
/// `dW = dy^T x`, `db` = `dy` summed over the rows.
pub fn linear_backward<T: Float>(
    linear: &Linear,
    rows: usize,
    x: &[T],
    weight: &[T],
    dy: &[T],
    grads: WeightGrads<'_, T>,
) -> Result<(), NnError> {
    const OP: &str = "linear_backward";
    check_shapes(OP, linear, rows, x.len(), weight.len(), "dy", dy.len())?;
    grads.check(OP, weight.len(), linear.bias, linear.out_features)?;
    if let Some(dx) = &grads.input {
        check_len(OP, "grads.input", dx.len(), x.len(), "like `x`")?;
    }

    let (fi, fo) = (linear.in_features, linear.out_features);
    let (one, zero) = (T::from_f64(1.0), T::from_f64(0.0));
    // dW [out, in] = dy^T [out, rows] . x [rows, in]; beta = 0 overwrites (rows = 0 too).
    T::gemm(
        fo,
        rows,
        fi,
        one,
        (dy, 1, fo),
        (x, fi, 1),
        zero,
        (grads.weight, fi, 1),
    );
    if let Some(db) = grads.bias {
        db.fill(zero);
        for row in dy.chunks_exact(fo.max(1)) {
            for (d, &v) in db.iter_mut().zip(row) {
                *d += v;
            }
        }
    }
    if let Some(dx) = grads.input {
        // dx [rows, in] = dy [rows, out] . W [out, in]
        T::gemm(
            rows,
            fo,
            fi,
            one,
            (dy, fo, 1),
            (weight, fi, 1),
            zero,
            (dx, fi, 1),
        );
    }
    Ok(())
}
