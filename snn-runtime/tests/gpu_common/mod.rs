//! Helpers shared by the GPU tests: the device, a seeded generator, and the random problems
//! of snn-codegen's own tests (the zoo's, included from snn-codegen/tests/common/), and
//! tensor helpers.
#![allow(dead_code, clippy::unwrap_used)]

#[path = "../../../snn-codegen/tests/common/zoo_support.rs"]
mod zoo_support;

#[allow(unused_imports)] // Each test binary uses part of it.
pub use zoo_support::{all_learnable, band_spike, zoo_with_inputs};

use std::sync::{Arc, OnceLock};

use snn_codegen::Layout;
use snn_codegen::interp::{Params, Real, Seq};
use snn_codegen::ir::NeuronIr;
use snn_codegen::{Dtype, Init};
use snn_runtime::Device;

/// Device 0, opened once per test binary (so that its in-memory kernel cache is shared by
/// the tests). The GPU tests are `#[ignore]`d, so they run only when asked for (`--ignored`):
/// without a usable GPU that is a failure that says why.
pub fn device() -> Arc<Device> {
    static DEVICE: OnceLock<Result<Arc<Device>, String>> = OnceLock::new();
    let dev = DEVICE.get_or_init(|| match Device::count() {
        Ok(c) if c > 0 => Device::open(0).map_err(|e| format!("opening device 0 failed: {e}")),
        Ok(_) => Err("the CUDA driver reports no device".into()),
        Err(e) => Err(e.to_string()),
    });
    match dev {
        Ok(d) => d.clone(),
        Err(why) => panic!("this test needs a CUDA GPU: {why}"),
    }
}

/// Seeded random numbers for tests: snn's generator ([`snn_nn::Rng`]) with the draws they
/// need.
#[derive(Clone, Debug)]
pub struct Rng(snn_nn::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(snn_nn::Rng::new(seed))
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.0.range(lo, hi)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
    /// `[steps, n]` uniform values, as they read back from `dtype`.
    pub fn seq(&mut self, steps: usize, n: usize, lo: f64, hi: f64, dtype: Dtype) -> Seq<f32> {
        let data = (0..steps * n)
            .map(|_| (self.uniform(lo, hi) as f32).stored(dtype))
            .collect();
        Seq::new(steps, n, data).unwrap()
    }
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi) as f32).collect()
    }
}

/// A good 64-bit integer hash: SplitMix64's output mixing, i.e. the first draw of the
/// generator whose state is one step (the golden-ratio increment) before `z`.
pub fn mix(z: u64) -> u64 {
    snn_nn::Rng::new(z.wrapping_sub(0x9E37_79B9_7F4A_7C15)).next_u64()
}

/// Every param's defaults perturbed by up to 5%, one draw per value (so per-channel and
/// per-neuron values differ), as `(name, values)`.
pub fn jittered(ir: &NeuronIr, layout: Layout, rng: &mut Rng) -> Vec<(String, Vec<f32>)> {
    ir.params
        .iter()
        .map(|p| {
            let values = (0..layout.len(p.shape))
                .map(|_| (p.default * rng.uniform(0.95, 1.05)) as f32)
                .collect();
            (p.name.clone(), values)
        })
        .collect()
}

/// Reference params holding `values` (from [`jittered`]).
pub fn params_of(ir: &NeuronIr, layout: Layout, values: &[(String, Vec<f32>)]) -> Params<f32> {
    let mut params = Params::<f32>::defaults(ir, layout);
    for (name, v) in values {
        params.set(name, v.clone()).unwrap();
    }
    params
}

/// Initial states near the declared ones: the declared value plus up to `0.1 * scale`.
pub fn initial_states(
    ir: &NeuronIr,
    values: &[(String, Vec<f32>)],
    n: usize,
    scale: f64,
    rng: &mut Rng,
) -> Vec<Vec<f32>> {
    ir.states
        .iter()
        .map(|s| {
            let base = match s.init {
                Init::Const(c) => c,
                Init::Param(p) => f64::from(values[p as usize].1[0]),
            };
            (0..n)
                .map(|_| (base + scale * rng.uniform(-0.1, 0.1)) as f32)
                .collect()
        })
        .collect()
}

/// A unique, empty temporary directory.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("snn-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
