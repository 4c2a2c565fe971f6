//! Initial parameter values, as torchvision's ResNet initialises them, from a seed.
//!
//! Convolutions: Kaiming normal, fan-out, gain `sqrt(2)` (`std = sqrt(2 / (out * k * k))`);
//! batch-norm: weight 1, bias 0, running mean 0, running variance 1; linear layers and
//! convolution biases: PyTorch's default `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`; learnable
//! neuron parameters: their declared defaults.

use rand_xoshiro::SplitMix64;
use rand_xoshiro::rand_core::{Rng as _, SeedableRng};

use crate::error::NnError;
use crate::float::Float;
use crate::graph::{Network, Op};
use crate::params::{ParamSet, Tensor};

/// The seeded generator of snn: SplitMix64 (`rand_xoshiro`), small, fast and the same on
/// every platform, with the draws initialisation and tests need.
#[derive(Clone, Debug)]
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::seed_from_u64(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Every tensor of `net` initialised from `seed` (see the module docs).
pub fn init_params<T: Float>(net: &Network, seed: u64) -> Result<ParamSet<T>, NnError> {
    let mut rng = Rng::new(seed);
    let mut set = ParamSet::new();
    for info in net.params() {
        let node = net.node(info.node);
        let len: usize = info.shape.iter().product();
        let field = &info.name[node.name.len() + 1..];
        let data: Vec<f64> = match (&node.op, field) {
            (Op::Conv2d(c), "weight") => {
                let std = (2.0 / (c.out_channels * c.kernel * c.kernel) as f64).sqrt();
                (0..len).map(|_| std * rng.normal()).collect()
            }
            (Op::Conv2d(c), "bias") => {
                let b = 1.0 / ((c.in_channels * c.kernel * c.kernel) as f64).sqrt();
                (0..len).map(|_| rng.range(-b, b)).collect()
            }
            (Op::Linear(l), _) => {
                let b = 1.0 / (l.in_features as f64).sqrt();
                (0..len).map(|_| rng.range(-b, b)).collect()
            }
            (Op::BatchNorm2d(_), "weight" | "running_var") => vec![1.0; len],
            (Op::BatchNorm2d(_), _) => vec![0.0; len],
            (Op::Neuron(ir), name) => {
                let p =
                    ir.params.iter().find(|p| p.name == name).ok_or_else(|| {
                        NnError::Graph(format!("no neuron param `{}`", info.name))
                    })?;
                vec![p.default; len]
            }
            _ => {
                return Err(NnError::Graph(format!(
                    "no initialiser for `{}`",
                    info.name
                )));
            }
        };
        set.push(Tensor {
            name: info.name,
            shape: info.shape,
            role: info.role,
            data: data.into_iter().map(T::from_f64).collect(),
        })?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn draws_are_pinned() {
        // The values the hand-written SplitMix64 gave before the crate's: initial parameters
        // and every test's data depend on them.
        let mut r = Rng::new(2024);
        let words = [r.next_u64(), r.next_u64(), r.next_u64()];
        assert_eq!(
            words,
            [
                11_487_996_472_437_173_461,
                1_793_612_131_670_815_442,
                5_507_758_030_568_793_471
            ]
        );
        assert_eq!(r.uniform().to_bits(), 0x3fbd_be69_e0ae_9bb8);
        assert_eq!(r.range(-2.0, 3.0).to_bits(), 0x4001_391e_37d7_b27a);
        assert_eq!(r.normal().to_bits(), 0x3fea_7f0a_3cfe_f8f0);
    }
}
