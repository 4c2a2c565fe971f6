//! Helpers shared by snn-nn's integration tests: a seeded generator, a finite-difference
//! gradient check, and a tiny network with every layer kind.
#![allow(dead_code, clippy::unwrap_used)] // Each test binary uses part of it.

use snn_codegen::NeuronIr;
use snn_nn::{Conv2d, ImageShape, Network, Op};

/// Every layer kind between input and output: conv (with and without bias), batch-norm,
/// neuron, max-pool, a residual add whose shortcut downsamples (a biased conv, then
/// batch-norm outside any neuron), global average pool, flatten, linear.
pub fn tiny_net(neuron: &NeuronIr) -> Network {
    let mut b = Network::builder("tiny", ImageShape::new(2, 6, 6));
    let x = b.input();
    let s = b.conv("conv1", x, 3, 3, 1, 1).unwrap();
    let s = b.batch_norm("bn1", s).unwrap();
    let s = b.neuron("sn1", s, neuron).unwrap();
    let p = b.max_pool("pool", s, 3, 2, 1).unwrap();
    let y = b.conv("block.conv1", p, 4, 3, 1, 1).unwrap();
    let y = b.batch_norm("block.bn1", y).unwrap();
    let y = b.neuron("block.sn1", y, neuron).unwrap();
    let conv = Op::Conv2d(Conv2d::new(3, 4, 1, 1, 0).with_bias());
    let d = b.add_node("block.downsample.0", conv, &[p]).unwrap();
    let d = b.batch_norm("block.downsample.1", d).unwrap();
    let r = b.add("block.add", y, d).unwrap();
    let r = b.neuron("block.sn2", r, neuron).unwrap();
    let g = b.global_avg_pool("avgpool", r).unwrap();
    let f = b.flatten("flatten", g).unwrap();
    let f = b.linear("fc", f, 3).unwrap();
    b.finish(f).unwrap()
}

/// The crate's own seeded generator ([`snn_nn::Rng`], SplitMix64), with the draws the
/// tests need.
#[derive(Clone, Debug)]
pub struct SplitMix64(snn_nn::Rng);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(snn_nn::Rng::new(seed))
    }

    /// `n` values uniform in `[lo, hi)`.
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.0.range(lo, hi)).collect()
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn index(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.index(i + 1));
        }
        p
    }
}

/// How many coordinates of each tensor a gradient check perturbs.
const SAMPLES: usize = 24;

/// Checks `analytic` = dL/dp at `point` against central differences of `loss`, with
/// Richardson extrapolation (error O(h^4)), at up to `SAMPLES` coordinates chosen by `rng`.
/// Fails when `|fd - analytic| > 1e-7 * max(|analytic|, 1)`.
pub fn check_gradient(
    what: &str,
    point: &[f64],
    analytic: &[f64],
    rng: &mut SplitMix64,
    mut loss: impl FnMut(&[f64]) -> f64,
) {
    assert_eq!(point.len(), analytic.len(), "{what}: gradient length");
    let coords: Vec<usize> = if point.len() <= SAMPLES {
        (0..point.len()).collect()
    } else {
        (0..SAMPLES).map(|_| rng.index(point.len())).collect()
    };
    let mut p = point.to_vec();
    let mut central = |i: usize, h: f64| {
        p[i] = point[i] + h;
        let up = loss(&p);
        p[i] = point[i] - h;
        let down = loss(&p);
        p[i] = point[i];
        (up - down) / (2.0 * h)
    };
    let h = 1e-3;
    for i in coords {
        let fd = (4.0 * central(i, h / 2.0) - central(i, h)) / 3.0;
        let an = analytic[i];
        assert!(
            (fd - an).abs() <= 1e-7 * an.abs().max(1.0),
            "{what}[{i}]: analytic {an:e}, finite differences {fd:e}"
        );
    }
}

/// Asserts that two slices agree to `tol` relative to `max(|expected|, 1)`.
pub fn assert_close(what: &str, actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol * e.abs().max(1.0),
            "{what}[{i}]: got {a:e}, expected {e:e}"
        );
    }
}

/// `sum(r * y)`: a random projection that turns an output into a scalar loss with
/// `dL/dy = r`.
pub fn project(r: &[f64], y: &[f64]) -> f64 {
    r.iter().zip(y).map(|(a, b)| a * b).sum()
}
