//! The losses against straightforward formulas, finite differences and hand-picked cases.
#![allow(clippy::unwrap_used)]

use snn_nn::loss::{cross_entropy_rate, mse_rate};
use snn_nn::{LossOutput, NnError};

/// `[T = 2, B = 2, K = 3]`: sample 0 favours class 2, sample 1 class 0.
const OUT: [f64; 12] = [
    0.5, -1.0, 2.0, /* t0 b1 */ 1.5, 0.25, -0.5, //
    -0.5, 0.0, 1.0, /* t1 b1 */ 0.5, 0.75, 0.0,
];

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn cross_entropy_matches_the_textbook_formula() {
    let labels = [2usize, 1];
    let out = cross_entropy_rate([2, 2, 3], &OUT, &labels).unwrap();
    // Time averages, then -log(softmax) without any stabilisation.
    let z: [[f64; 3]; 2] = [[0.0, -0.5, 1.5], [1.0, 0.5, -0.25]];
    let mut want_loss = 0.0;
    for (b, zb) in z.iter().enumerate() {
        let total: f64 = zb.iter().map(|v| v.exp()).sum();
        want_loss -= (zb[labels[b]].exp() / total).ln() / 2.0;
        for (k, zk) in zb.iter().enumerate() {
            let p = zk.exp() / total;
            let want = (p - f64::from(u8::from(k == labels[b]))) / 2.0 / 2.0;
            for t in 0..2 {
                assert!(close(out.grad[(t * 2 + b) * 3 + k], want, 1e-14));
            }
        }
    }
    assert!(
        close(out.loss, want_loss, 1e-14),
        "{} vs {want_loss}",
        out.loss
    );
    // Sample 0 predicts 2 (right), sample 1 predicts 0 (wrong).
    assert_eq!(out.correct, 1);
}

/// A loss function over `[T, B, K]` output and labels.
type Loss = fn([usize; 3], &[f64], &[usize]) -> Result<LossOutput<f64>, NnError>;

/// Central differences of the loss in f64 against the returned gradient.
fn check_gradient(f: Loss) {
    let labels = [0usize, 1];
    let grad = f([2, 2, 3], &OUT, &labels).unwrap().grad;
    let h = 1e-6;
    for i in 0..OUT.len() {
        let (mut up, mut down) = (OUT, OUT);
        up[i] += h;
        down[i] -= h;
        let numeric = (f([2, 2, 3], &up, &labels).unwrap().loss
            - f([2, 2, 3], &down, &labels).unwrap().loss)
            / (2.0 * h);
        assert!(
            close(grad[i], numeric, 1e-7),
            "element {i}: analytic {} vs numeric {numeric}",
            grad[i]
        );
    }
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    check_gradient(cross_entropy_rate::<f64>);
}

#[test]
fn mse_gradient_matches_finite_differences() {
    check_gradient(mse_rate::<f64>);
}

#[test]
fn cross_entropy_is_stable_for_huge_logits() {
    // exp(1000) overflows: only a stable log-softmax gets a finite loss.
    let out = [1000.0f32, -1000.0, 0.0, 0.0, 1000.0, 999.0];
    let r = cross_entropy_rate([1, 2, 3], &out, &[1, 2]).unwrap();
    // Sample 0: 2000 nats; sample 1: log(1 + e^-1 + e^-1000) + 1.
    let want = (2000.0 + (1.0 + (-1.0f64).exp()).ln() + 1.0) / 2.0;
    assert!(
        r.loss.is_finite() && close(f64::from(r.loss), want, 1e-6),
        "{}",
        r.loss
    );
    assert!(r.grad.iter().all(|g| g.is_finite()));
    assert_eq!(r.correct, 0);
}

#[test]
fn mse_matches_spikingjelly() {
    // Spikes over T = 4 for B = 2, K = 2: rates [0.75, 0.25] and [0.5, 0.5].
    let spikes = [
        1.0f32, 0.0, 1.0, 1.0, //
        1.0, 1.0, 0.0, 0.0, //
        1.0, 0.0, 0.0, 1.0, //
        0.0, 0.0, 1.0, 0.0,
    ];
    let r = mse_rate([4, 2, 2], &spikes, &[0, 1]).unwrap();
    // ((0.75 - 1)^2 + 0.25^2 + 0.5^2 + (0.5 - 1)^2) / 4.
    assert_eq!(r.loss, (0.0625 + 0.0625 + 0.25 + 0.25) / 4.0);
    // dL/drate = 2 (rate - onehot) / (B K), spread over T = 4 steps.
    let per_step = [-0.25f32 / 8.0, 0.25 / 8.0, 0.5 / 8.0, -0.5 / 8.0];
    for t in 0..4 {
        assert_eq!(&r.grad[t * 4..t * 4 + 4], &per_step);
    }
    // Sample 1 ties 0.5 / 0.5: the first maximum (class 0) wins, so it is wrong.
    assert_eq!(r.correct, 1);
}

#[test]
fn bad_inputs_are_errors_that_say_what_is_wrong() {
    let out = [0.0f32; 12];
    let msg = |r: Result<LossOutput<f32>, NnError>| r.unwrap_err().to_string();
    assert!(msg(cross_entropy_rate([2, 2, 3], &out, &[0, 3])).contains("label 3 of sample 1"));
    assert!(msg(mse_rate([2, 2, 3], &out, &[0])).contains("1 labels for a batch of 2"));
    assert!(msg(mse_rate([2, 2, 3], &out[..11], &[0, 0])).contains("11 values"));
    assert!(msg(cross_entropy_rate([2, 0, 3], &[], &[])).contains("B = 0"));
    assert!(msg(cross_entropy_rate([0, 2, 3], &[], &[0, 0])).contains("T = 0"));
    assert!(msg(cross_entropy_rate([usize::MAX, 2, 3], &out, &[0, 0])).contains("12 values"));
}
